//! Turns a recording into something ordinary tools play or dissect.
//!
//! * [`write_wav`] / [`write_recording_wav`]: a stereo 16-bit PCM WAV at 8000 Hz, the caller
//!   (party 0) on the left channel and the callee (party 1) on the right, G.711 decoded with
//!   [`crate::g711`] and placed on the recording's timeline by arrival time, refined by RTP
//!   timestamps within a tolerance (see [`write_wav_from`] for the rules). [`render_stereo`]
//!   delivers the same audio to any [`StereoSink`] (silence as run lengths), which is how
//!   analysis reads it without a WAV.
//! * [`write_pcap`] / [`write_recording_pcap`]: a classic libpcap file with one synthetic
//!   Ethernet/IP/UDP frame per recorded RTP or RTCP packet.
//!
//! Both work from the data model of the crate root only: a [`FileHeader`], the streams
//! known for the recording and its records in file order, from any [`RecordSource`] (a
//! slice, or a [`Recording`] decoded block by block). Streams are looked up in the header
//! first, then in `streams`, and are updated in record order by [`Event::StreamAdded`] and
//! [`Event::StreamChanged`] (so a re-INVITE's new codecs or addresses apply to the packets
//! after it).
//!
//! **Bounds.** Neither function panics on any input. Both stream: the pcap writer holds one
//! frame; the WAV writer holds a reorder window of [`WINDOW_SAMPLES`] per channel (16 s,
//! about 0.5 MiB for both) and writes silence from a small zero buffer, so its memory does
//! not depend on the call's length or on the timestamps and arrival times it reads. The WAV
//! holds at most [`WavOptions::max_samples`] samples per channel and nothing beyond the
//! recording's span ([`WavOptions::span_us`], from the footer for a [`Recording`]).

use std::collections::HashMap;
use std::ops::ControlFlow;

use crate::reader::{ReadError, Recording};
use crate::{Event, FileHeader, Record, StreamId, StreamInfo};

mod pcap;
mod wav;
/// The whole-call-buffer exporter that the streaming one replaced, kept as the reference
/// model its tests compare against (simple and slow; never built outside tests).
#[cfg(test)]
mod wav_reference;

pub use pcap::{write_pcap, write_pcap_from, write_recording_pcap, PcapSummary};
pub use wav::{
    measure_recording, measure_wav, render_recording, render_stereo, wav_header,
    write_recording_wav, write_wav, write_wav_from, StereoSink, WavOptions, WavSummary,
    MAX_WAV_SAMPLES, SPAN_SLACK_US, WAV_HEADER_LEN, WAV_SAMPLE_RATE, WINDOW_SAMPLES,
};

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
    /// Writing the output failed.
    #[error("export I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The records could not be read again (the file changed since it was opened).
    #[error("reading the recording: {0}")]
    Read(#[from] ReadError),
}

/// Records that can be walked in order, more than once (exports take two or three passes).
pub trait RecordSource {
    /// Calls `f` with every record in order until it returns `ControlFlow::Break`.
    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&Record) -> ControlFlow<()>,
    ) -> Result<(), ExportError>;
}

impl RecordSource for [Record] {
    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&Record) -> ControlFlow<()>,
    ) -> Result<(), ExportError> {
        for r in self {
            if f(r).is_break() {
                break;
            }
        }
        Ok(())
    }
}

impl RecordSource for Recording {
    fn for_each_record(
        &self,
        f: &mut dyn FnMut(&Record) -> ControlFlow<()>,
    ) -> Result<(), ExportError> {
        let _flow = self.visit_records(f)?;
        Ok(())
    }
}

/// The streams of a recording as known at a point of the record sequence.
///
/// `current` holds the latest version seen so far (header, then `streams`, updated by
/// stream events in record order); `fallback` holds the first version found anywhere,
/// events included, for packets that precede their stream's announcement.
#[derive(Debug, Clone, Default)]
struct StreamTable {
    /// Latest version of each stream at the current record.
    current: HashMap<StreamId, StreamInfo>,
    /// First known version of each stream (header, `streams`, then events).
    fallback: HashMap<StreamId, StreamInfo>,
}

impl StreamTable {
    /// Builds the table as it stands before the first record (one pass over the records
    /// for the stream events); `visit` also sees every record of that pass. With
    /// `streams_from_events`, the latest version each stream event gives a stream that is
    /// not in the header or `streams` counts as given in `streams` (what passing
    /// [`Recording::streams`] as `streams` does).
    fn new(
        header: &FileHeader,
        streams: &[StreamInfo],
        records: &(impl RecordSource + ?Sized),
        streams_from_events: bool,
        mut visit: impl FnMut(&Record),
    ) -> Result<Self, ExportError> {
        let mut current = HashMap::new();
        for s in header.streams.iter().chain(streams) {
            current.entry(s.id).or_insert_with(|| s.clone());
        }
        let mut first: HashMap<StreamId, StreamInfo> = HashMap::new();
        let mut latest: HashMap<StreamId, StreamInfo> = HashMap::new();
        records.for_each_record(&mut |r| {
            if let Some(s) = stream_event(r) {
                first.entry(s.id).or_insert_with(|| s.clone());
                if streams_from_events {
                    latest.insert(s.id, s.clone());
                }
            }
            visit(r);
            ControlFlow::Continue(())
        })?;
        for (id, s) in latest {
            current.entry(id).or_insert(s);
        }
        let mut fallback = current.clone();
        for (id, s) in first {
            fallback.entry(id).or_insert(s);
        }
        Ok(StreamTable { current, fallback })
    }

    /// Applies a record (stream events update the table; everything else is ignored).
    fn apply(&mut self, record: &Record) {
        if let Some(s) = stream_event(record) {
            self.current.insert(s.id, s.clone());
        }
    }

    /// The stream's info as known now, if the stream is known at all.
    fn get(&self, id: StreamId) -> Option<&StreamInfo> {
        self.current.get(&id).or_else(|| self.fallback.get(&id))
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

    #[test]
    fn recording_exports_equal_slice_exports() {
        use crate::block::{seal, BlockBuilder};
        use crate::format::encode_header;
        let codecs = vec![CodecInfo {
            payload_type: 0,
            name: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
        }];
        let stream = |id: u16, party: u8| StreamInfo {
            id,
            party,
            media_index: 0,
            component: Component::Rtp,
            source: "192.0.2.1:4000".into(),
            destination: "192.0.2.2:5000".into(),
            codecs: codecs.clone(),
        };
        let header = header_with(vec![stream(0, 0)], 1_700_000_000_000);
        let mut records = vec![Record::Event(EventRecord {
            at_us: 5,
            event: Event::StreamAdded(stream(2, 1)),
        })];
        for i in 0..400u64 {
            for s in [0u16, 2] {
                records.push(Record::Packet(PacketRecord {
                    stream: s,
                    arrival_us: i * 20_000 + u64::from(s),
                    rtp: Some(RtpFields {
                        marker: false,
                        payload_type: 0,
                        sequence: i as u16,
                        timestamp: (i * 160) as u32,
                        ssrc: 9 + u32::from(s),
                    }),
                    payload: vec![(i % 251) as u8; 160],
                }));
            }
        }
        let mut file = Vec::new();
        encode_header(&header, &mut file);
        for chunk in records.chunks(50) {
            let mut b = BlockBuilder::with_capacity(16 * 1024);
            for r in chunk {
                match r {
                    Record::Packet(p) => {
                        b.push_packet(p.stream, p.arrival_us, p.rtp.as_ref(), &p.payload)
                    }
                    Record::Event(e) => b.push_event(e),
                }
            }
            seal(&b, &mut file);
        }
        let rec = Recording::from_bytes(file).unwrap();
        let (streams, all) = (rec.streams(), rec.records().unwrap());
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_pcap(&rec.header, &streams, &all, &mut a).unwrap();
        write_recording_pcap(&rec, &mut b).unwrap();
        assert!(a == b);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_wav(&rec.header, &streams, &all, &mut a).unwrap();
        write_recording_wav(&rec, &WavOptions::default(), &mut b).unwrap();
        assert!(a == b);
        assert_eq!(a.len(), 44 + 4 * 400 * 160);
    }
}
