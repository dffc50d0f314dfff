//! Turns a recording into something ordinary tools play or dissect.
//!
//! * [`write_wav`]: a stereo 16-bit PCM WAV at 8000 Hz, the caller (party 0) on the left
//!   channel and the callee (party 1) on the right, G.711 decoded with [`crate::g711`] and
//!   placed on the recording's timeline from RTP timestamps (see [`write_wav`] for the
//!   rules).
//! * [`write_pcap`]: a classic libpcap file with one synthetic Ethernet/IP/UDP frame per
//!   recorded RTP or RTCP packet.
//!
//! Both work from the data model of the crate root only: a [`FileHeader`], the streams
//! known for the recording and its records in file order, however they were obtained.
//! Streams are looked up in the header first, then in `streams`, and are updated in record
//! order by [`Event::StreamAdded`] and [`Event::StreamChanged`] (so a re-INVITE's new codecs
//! or addresses apply to the packets after it). Neither function panics on any input, and
//! the WAV export never allocates more than [`MAX_WAV_SAMPLES`] samples per channel,
//! whatever the timestamps or arrival times say.

use std::collections::HashMap;

use crate::{Event, FileHeader, Record, StreamId, StreamInfo};

mod pcap;
mod wav;

pub use pcap::{write_pcap, PcapSummary};
pub use wav::{wav_header, write_wav, WavSummary, MAX_WAV_SAMPLES, WAV_SAMPLE_RATE};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A packet of an exported audio stream uses a codec that cannot be decoded to WAV.
    #[error(
        "stream {stream} uses codec {name} (payload type {payload_type}): only PCMU and PCMA \
         can be exported to WAV"
    )]
    UnsupportedCodec {
        /// The stream the packet belongs to.
        stream: StreamId,
        /// The packet's RTP payload type.
        payload_type: u8,
        /// The codec's encoding name (from the stream's codecs, the static payload type
        /// table, or `unknown`).
        name: String,
    },
    /// The recording holds no RTP audio packet that could be exported.
    #[error("the recording holds no RTP audio to export")]
    NoAudio,
    /// Writing the output failed (or memory for the audio could not be reserved).
    #[error("export I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The streams of a recording as known at a point of the record sequence.
///
/// `current` holds the latest version seen so far (header, then `streams`, updated by
/// stream events in record order); `fallback` holds the first version found anywhere,
/// events included, for packets that precede their stream's announcement.
struct StreamTable<'a> {
    /// Latest version of each stream at the current record.
    current: HashMap<StreamId, &'a StreamInfo>,
    /// First known version of each stream (header, `streams`, then events).
    fallback: HashMap<StreamId, &'a StreamInfo>,
}

impl<'a> StreamTable<'a> {
    /// Builds the table as it stands before the first record.
    fn new(header: &'a FileHeader, streams: &'a [StreamInfo], records: &'a [Record]) -> Self {
        let mut current = HashMap::new();
        for s in header.streams.iter().chain(streams) {
            current.entry(s.id).or_insert(s);
        }
        let mut fallback = current.clone();
        for s in records.iter().filter_map(stream_event) {
            fallback.entry(s.id).or_insert(s);
        }
        StreamTable { current, fallback }
    }

    /// Applies a record (stream events update the table; everything else is ignored).
    fn apply(&mut self, record: &'a Record) {
        if let Some(s) = stream_event(record) {
            self.current.insert(s.id, s);
        }
    }

    /// The stream's info as known now, if the stream is known at all.
    fn get(&self, id: StreamId) -> Option<&'a StreamInfo> {
        self.current
            .get(&id)
            .or_else(|| self.fallback.get(&id))
            .copied()
    }

    /// Every version of every stream: the first known ones, then all events' versions.
    fn all_versions(&self, records: &'a [Record]) -> impl Iterator<Item = &'a StreamInfo> + '_ {
        self.fallback
            .values()
            .copied()
            .chain(records.iter().filter_map(stream_event))
    }
}

/// The stream carried by a [`Event::StreamAdded`] or [`Event::StreamChanged`] record.
fn stream_event(record: &Record) -> Option<&StreamInfo> {
    match record {
        Record::Event(e) => match &e.event {
            Event::StreamAdded(s) | Event::StreamChanged(s) => Some(s),
            _ => None,
        },
        Record::Packet(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CodecInfo, Component, EventRecord, PacketRecord, RtpFields};
    use proptest::prelude::*;

    fn codec_strategy() -> impl Strategy<Value = CodecInfo> {
        (
            prop::sample::select(vec![0u8, 8, 13, 18, 96, 101, 127]),
            prop::sample::select(vec![
                "PCMU",
                "pcma",
                "telephone-event",
                "CN",
                "G729",
                "H264",
                "",
            ]),
            prop::sample::select(vec![8000u32, 90_000, 1000, 0, 48_000]),
        )
            .prop_map(|(payload_type, name, clock_rate)| CodecInfo {
                payload_type,
                name: name.to_owned(),
                clock_rate,
                channels: 1,
            })
    }

    fn address_strategy() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "",
            "192.0.2.1:5004",
            "203.0.113.9:0",
            "[2001:db8::1]:6000",
            "[::ffff:192.0.2.3]:7",
            "garbage",
            "1.2.3.4",
            "[::1]:65535",
        ])
        .prop_map(str::to_owned)
    }

    fn stream_strategy() -> impl Strategy<Value = StreamInfo> {
        (
            0u16..8,
            prop_oneof![0u8..3, any::<u8>()],
            0u16..3,
            any::<bool>(),
            address_strategy(),
            address_strategy(),
            prop::collection::vec(codec_strategy(), 0..4),
        )
            .prop_map(
                |(id, party, media_index, rtcp, source, destination, codecs)| StreamInfo {
                    id,
                    party,
                    media_index,
                    component: if rtcp {
                        Component::Rtcp
                    } else {
                        Component::Rtp
                    },
                    source,
                    destination,
                    codecs,
                },
            )
    }

    fn record_strategy() -> impl Strategy<Value = Record> {
        let rtp = (
            any::<bool>(),
            prop_oneof![prop::sample::select(vec![0u8, 8, 13, 101]), any::<u8>()],
            any::<u16>(),
            prop_oneof![0u32..100_000, any::<u32>()],
            prop::sample::select(vec![1u32, 2, 0xFFFF_FFFF]),
        )
            .prop_map(
                |(marker, payload_type, sequence, timestamp, ssrc)| RtpFields {
                    marker,
                    payload_type,
                    sequence,
                    timestamp,
                    ssrc,
                },
            );
        let packet = (
            0u16..10,
            prop_oneof![4 => 0u64..20_000_000, 1 => any::<u64>()],
            prop::option::weighted(0.9, rtp),
            prop::collection::vec(any::<u8>(), 0..400),
        )
            .prop_map(|(stream, arrival_us, rtp, payload)| {
                Record::Packet(PacketRecord {
                    stream,
                    arrival_us,
                    rtp,
                    payload,
                })
            });
        let event = (
            any::<u64>(),
            prop_oneof![
                stream_strategy().prop_map(Event::StreamAdded),
                stream_strategy().prop_map(Event::StreamChanged),
                Just(Event::Paused),
                Just(Event::Resumed),
                (any::<u16>(), any::<u32>(), any::<u32>())
                    .prop_map(|(stream, old, new)| Event::SsrcChanged { stream, old, new }),
            ],
        )
            .prop_map(|(at_us, event)| Record::Event(EventRecord { at_us, event }));
        prop_oneof![8 => packet, 1 => event]
    }

    fn header_with(streams: Vec<StreamInfo>, start_unix_ms: u64) -> FileHeader {
        FileHeader {
            recording_id: String::new(),
            call_id: String::new(),
            start_unix_ms,
            metadata: None,
            parties: Vec::new(),
            streams,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn exports_never_panic(
            header_streams in prop::collection::vec(stream_strategy(), 0..6),
            extra_streams in prop::collection::vec(stream_strategy(), 0..3),
            records in prop::collection::vec(record_strategy(), 0..150),
            start_unix_ms in prop_oneof![Just(1_700_000_000_000u64), any::<u64>()],
        ) {
            let header = header_with(header_streams, start_unix_ms);
            let packet_records = records
                .iter()
                .filter(|r| matches!(r, Record::Packet(_)))
                .count() as u64;

            let mut wav = Vec::new();
            match write_wav(&header, &extra_streams, &records, &mut wav) {
                Ok(summary) => {
                    prop_assert_eq!(wav.len() as u64, 44 + 4 * summary.samples_per_channel);
                    prop_assert_eq!(summary.packets_used + summary.packets_skipped, packet_records);
                    prop_assert!(summary.packets_used > 0);
                    prop_assert!(summary.samples_per_channel <= MAX_WAV_SAMPLES);
                }
                Err(ExportError::Io(e)) => prop_assert!(false, "unexpected I/O error {e}"),
                Err(_) => prop_assert!(wav.is_empty()),
            }

            let mut pcap = Vec::new();
            let summary = write_pcap(&header, &extra_streams, &records, &mut pcap).unwrap();
            prop_assert!(summary.packets <= packet_records);
            prop_assert!(pcap.len() as u64 >= 24 + summary.packets * (16 + 14 + 20 + 8));
        }

        #[test]
        fn g711_exports_are_bounded(
            records in prop::collection::vec(
                (
                    0u16..5,
                    0u64..5_000_000,
                    prop::sample::select(vec![0u8, 8, 13, 101]),
                    prop_oneof![0u32..40_000, any::<u32>()],
                    prop::sample::select(vec![1u32, 2]),
                    prop::collection::vec(any::<u8>(), 0..320),
                ),
                0..120,
            ),
        ) {
            let codecs = vec![
                CodecInfo { payload_type: 0, name: "PCMU".into(), clock_rate: 8000, channels: 1 },
                CodecInfo { payload_type: 8, name: "PCMA".into(), clock_rate: 8000, channels: 1 },
                CodecInfo {
                    payload_type: 101,
                    name: "telephone-event".into(),
                    clock_rate: 8000,
                    channels: 1,
                },
            ];
            let streams: Vec<StreamInfo> = (0..4u16)
                .map(|id| StreamInfo {
                    id,
                    party: (id / 2) as u8,
                    media_index: 0,
                    component: if id % 2 == 0 { Component::Rtp } else { Component::Rtcp },
                    source: "192.0.2.1:4000".into(),
                    destination: "192.0.2.2:5000".into(),
                    codecs: codecs.clone(),
                })
                .collect();
            let header = header_with(streams, 1_700_000_000_000);
            let records: Vec<Record> = records
                .into_iter()
                .map(|(stream, arrival_us, payload_type, timestamp, ssrc, payload)| {
                    Record::Packet(PacketRecord {
                        stream,
                        arrival_us,
                        rtp: Some(RtpFields {
                            marker: false,
                            payload_type,
                            sequence: 0,
                            timestamp,
                            ssrc,
                        }),
                        payload,
                    })
                })
                .collect();
            let latest = records.iter().map(|r| r.time_us() / 125).max().unwrap_or(0);
            let mut wav = Vec::new();
            match write_wav(&header, &[], &records, &mut wav) {
                Ok(summary) => {
                    prop_assert_eq!(summary.packets_used + summary.packets_skipped, records.len() as u64);
                    prop_assert_eq!(wav.len() as u64, 44 + 4 * summary.samples_per_channel);
                    // Never beyond the latest arrival + the 2 s tolerance + one payload.
                    prop_assert!(summary.samples_per_channel <= latest + 16_000 + 320);
                }
                Err(e) => prop_assert!(matches!(e, ExportError::NoAudio), "{}", e),
            }
            let mut pcap = Vec::new();
            let summary = write_pcap(&header, &[], &records, &mut pcap).unwrap();
            prop_assert_eq!(
                summary.packets,
                records.iter().filter(|r| matches!(r, Record::Packet(p) if p.stream < 4)).count() as u64
            );
        }
    }
}
