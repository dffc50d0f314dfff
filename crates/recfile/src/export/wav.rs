//! Stereo WAV export of G.711 audio (see [`write_wav`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use super::{ExportError, StreamTable};
use crate::g711;
use crate::{CodecInfo, Component, FileHeader, Record, RtpFields, StreamId, StreamInfo};

/// Sample rate of exported WAV files (G.711 is always 8000 Hz).
pub const WAV_SAMPLE_RATE: u32 = 8000;

/// Most samples per channel a WAV export ever holds (8 hours at 8000 Hz); audio that would
/// land later is dropped.
pub const MAX_WAV_SAMPLES: u64 = 8 * 3600 * WAV_SAMPLE_RATE as u64;

/// Microseconds per sample at 8000 Hz.
const US_PER_SAMPLE: u64 = 1_000_000 / WAV_SAMPLE_RATE as u64;

/// Largest distance between timestamp- and arrival-derived positions kept (2 s).
const REANCHOR_SAMPLES: u64 = 2 * WAV_SAMPLE_RATE as u64;

/// Stereo frames written to the output per `write_all`.
const FRAMES_PER_WRITE: usize = 8192;

/// What [`write_wav`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSummary {
    /// Samples in each channel (the longer channel's length; the other is padded).
    pub samples_per_channel: u64,
    /// Sample rate of the file (always [`WAV_SAMPLE_RATE`]).
    pub sample_rate: u32,
    /// Packets whose audio was decoded into the file.
    pub packets_used: u64,
    /// Packet records not used: telephone-event and CN packets, RTCP, packets of streams
    /// that are not exported (other media lines, other parties, unknown streams) and
    /// packets beyond [`MAX_WAV_SAMPLES`]. `packets_used + packets_skipped` is the number of
    /// packet records.
    pub packets_skipped: u64,
}

/// The 44-byte header of a PCM 16-bit little-endian RIFF/WAVE file.
///
/// Sizes that would not fit the format's 32-bit fields are saturated.
#[must_use]
pub fn wav_header(sample_rate: u32, channels: u16, samples_per_channel: u32) -> [u8; 44] {
    let block_align = u64::from(channels) * 2;
    let data_size = saturate_u32(u64::from(samples_per_channel) * block_align);
    let byte_rate = saturate_u32(u64::from(sample_rate) * block_align);
    let riff_size = data_size.saturating_add(36);
    let block_align = u16::try_from(block_align).unwrap_or(u16::MAX);

    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_size.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_size.to_le_bytes());
    h
}

/// `v` as `u32`, or `u32::MAX` if it does not fit.
fn saturate_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Writes the recording's audio as a stereo 16-bit PCM WAV at 8000 Hz: party 0 (the
/// caller) on channel 0, party 1 (the callee) on channel 1.
///
/// Which packets: for each of the two parties (party 0 on the left channel, party 1 on the
/// right), the RTP streams of the party's first audio media line (lowest `media_index`
/// among its RTP streams that carry RTP packets and whose codecs are not all 90 kHz video
/// or 1 kHz text). Packets are classified by payload type through the stream's codecs
/// (names matched case-insensitively; static payload types from RFC 3551 when a type is not
/// listed): PCMU and PCMA are decoded, `telephone-event` and `CN` are skipped, anything else
/// fails with [`ExportError::UnsupportedCodec`].
///
/// Where the samples go, per stream: the first packet is anchored at its arrival time
/// (`arrival_us / 125`, i.e. 8000 Hz since the recording's start); later packets of the
/// same SSRC go at `anchor + (extended timestamp − anchor timestamp)`. A packet is
/// re-anchored at its arrival time when its SSRC differs from the previous packet's, when
/// the timestamp-derived position is more than 2 s away from the arrival-derived one, or
/// when it lies more than one packet behind the stream's written audio *and* would
/// overwrite samples already written (a late, reordered packet that fills a hole is placed
/// by its timestamp). Overlaps of up to a packet are overwritten (later packet wins).
/// Whatever was not written is silence.
///
/// The audio is assembled in memory (at most [`MAX_WAV_SAMPLES`] per channel), then the
/// header and the interleaved samples are written to `out`, which is flushed. Nothing is
/// written when an error is found in the recording.
///
/// # Errors
///
/// [`ExportError::UnsupportedCodec`] for a packet of an exported stream in a codec other
/// than G.711, telephone-event or CN; [`ExportError::NoAudio`] if no packet could be used;
/// [`ExportError::Io`] if writing fails or the memory for the audio cannot be reserved.
pub fn write_wav(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &[Record],
    out: &mut impl Write,
) -> Result<WavSummary, ExportError> {
    let mut table = StreamTable::new(header, streams, records);
    let selected = select_streams(&table, records);
    let mut channels = [Channel::default(), Channel::default()];
    let mut timelines: HashMap<StreamId, Timeline> = HashMap::new();
    let mut packets_used = 0u64;
    let mut packets_skipped = 0u64;

    for record in records {
        table.apply(record);
        let Record::Packet(p) = record else {
            continue;
        };
        let (Some(&ch), Some(rtp)) = (selected.get(&p.stream), p.rtp.as_ref()) else {
            packets_skipped += 1;
            continue;
        };
        let codecs = table.get(p.stream).map_or(&[][..], |s| s.codecs.as_slice());
        let law = match classify(codecs, rtp.payload_type) {
            Payload::Audio(law) => law,
            Payload::Skip => {
                packets_skipped += 1;
                continue;
            }
            Payload::Unsupported(name) => {
                return Err(ExportError::UnsupportedCodec {
                    stream: p.stream,
                    payload_type: rtp.payload_type,
                    name,
                })
            }
        };
        let Some(channel) = channels.get_mut(ch) else {
            packets_skipped += 1;
            continue;
        };
        let n = u64::try_from(p.payload.len()).unwrap_or(u64::MAX);
        let previous = timelines.get(&p.stream);
        match place(previous, channel, p.arrival_us, rtp, n) {
            Some((pos, timeline)) => {
                timelines.insert(p.stream, timeline);
                channel.write(pos, &p.payload, law)?;
                packets_used += 1;
            }
            None => packets_skipped += 1,
        }
    }

    if packets_used == 0 {
        return Err(ExportError::NoAudio);
    }
    let [left, right] = &channels;
    let frames = left.samples.len().max(right.samples.len());
    let samples_per_channel = u64::try_from(frames).unwrap_or(u64::MAX);
    out.write_all(&wav_header(
        WAV_SAMPLE_RATE,
        2,
        saturate_u32(samples_per_channel),
    ))?;
    let mut buf = Vec::with_capacity(FRAMES_PER_WRITE.min(frames) * 4);
    let mut start = 0;
    while start < frames {
        let end = frames.min(start.saturating_add(FRAMES_PER_WRITE));
        buf.clear();
        for i in start..end {
            let l = left.samples.get(i).copied().unwrap_or(0);
            let r = right.samples.get(i).copied().unwrap_or(0);
            buf.extend_from_slice(&l.to_le_bytes());
            buf.extend_from_slice(&r.to_le_bytes());
        }
        out.write_all(&buf)?;
        start = end;
    }
    out.flush()?;
    Ok(WavSummary {
        samples_per_channel,
        sample_rate: WAV_SAMPLE_RATE,
        packets_used,
        packets_skipped,
    })
}

/// The exported streams and their channel (0 or 1): for each party, every RTP stream of
/// its lowest audio media line that has RTP packets.
fn select_streams(table: &StreamTable<'_>, records: &[Record]) -> HashMap<StreamId, usize> {
    let with_rtp: HashSet<StreamId> = records
        .iter()
        .filter_map(|r| match r {
            Record::Packet(p) if p.rtp.is_some() => Some(p.stream),
            _ => None,
        })
        .collect();
    let audio_like: HashSet<StreamId> = table
        .all_versions(records)
        .filter(|s| is_audio_line(&s.codecs))
        .map(|s| s.id)
        .collect();
    let candidates = || {
        table
            .fallback
            .values()
            .filter(|s| s.component == Component::Rtp && s.party <= 1)
            .filter(|s| with_rtp.contains(&s.id))
    };
    let mut line: [Option<u16>; 2] = [None, None];
    for s in candidates().filter(|s| audio_like.contains(&s.id)) {
        let slot = &mut line[usize::from(s.party)];
        *slot = Some(slot.map_or(s.media_index, |m| m.min(s.media_index)));
    }
    candidates()
        .filter(|s| line[usize::from(s.party)] == Some(s.media_index))
        .map(|s| (s.id, usize::from(s.party)))
        .collect()
}

/// Whether a media line with these codecs may carry audio: not when every codec is clocked
/// at 90 kHz (video) or 1 kHz (text).
fn is_audio_line(codecs: &[CodecInfo]) -> bool {
    codecs.is_empty()
        || codecs
            .iter()
            .any(|c| c.clock_rate != 90_000 && c.clock_rate != 1_000)
}

/// G.711 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Law {
    /// PCMU.
    Ulaw,
    /// PCMA.
    Alaw,
}

/// What to do with a packet of an exported stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    /// Decode it.
    Audio(Law),
    /// Not audio to decode (telephone-event, comfort noise).
    Skip,
    /// A codec the export cannot decode (its name).
    Unsupported(String),
}

/// Classifies a payload type through the stream's codecs, then RFC 3551's static types.
fn classify(codecs: &[CodecInfo], payload_type: u8) -> Payload {
    let name = codecs
        .iter()
        .find(|c| c.payload_type == payload_type)
        .map(|c| c.name.as_str())
        .or_else(|| static_payload_name(payload_type));
    match name {
        Some(n) if n.eq_ignore_ascii_case("PCMU") => Payload::Audio(Law::Ulaw),
        Some(n) if n.eq_ignore_ascii_case("PCMA") => Payload::Audio(Law::Alaw),
        Some(n) if n.eq_ignore_ascii_case("telephone-event") || n.eq_ignore_ascii_case("CN") => {
            Payload::Skip
        }
        Some(n) => Payload::Unsupported(n.to_owned()),
        None => Payload::Unsupported("unknown".to_owned()),
    }
}

/// Encoding name of a static RTP payload type (RFC 3551 tables 4 and 5).
fn static_payload_name(payload_type: u8) -> Option<&'static str> {
    Some(match payload_type {
        0 => "PCMU",
        3 => "GSM",
        4 => "G723",
        5 | 6 | 16 | 17 => "DVI4",
        7 => "LPC",
        8 => "PCMA",
        9 => "G722",
        10 | 11 => "L16",
        12 => "QCELP",
        13 => "CN",
        14 => "MPA",
        15 => "G728",
        18 => "G729",
        25 => "CelB",
        26 => "JPEG",
        28 => "nv",
        31 => "H261",
        32 => "MPV",
        33 => "MP2T",
        34 => "H263",
        _ => return None,
    })
}

/// Placement state of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeline {
    /// SSRC of the last placed packet.
    ssrc: u32,
    /// RTP timestamp of the last placed packet.
    last_ts: u32,
    /// That timestamp extended over wraps, relative to the anchor's timestamp.
    last_ext: i64,
    /// Sample position of the anchor packet.
    anchor_pos: i64,
    /// End (exclusive) of the audio written since the anchor.
    end: i64,
}

/// Where a packet of `n` samples goes, and the stream's placement state after it; `None`
/// if it would start at or beyond [`MAX_WAV_SAMPLES`].
fn place(
    previous: Option<&Timeline>,
    channel: &Channel,
    arrival_us: u64,
    rtp: &RtpFields,
    n: u64,
) -> Option<(u64, Timeline)> {
    let arrival_pos = arrival_us / US_PER_SAMPLE;
    if arrival_pos >= MAX_WAV_SAMPLES {
        return None;
    }
    // Both bounded by MAX_WAV_SAMPLES / the payload length: the conversions cannot fail.
    let arrival_pos = i64::try_from(arrival_pos).ok()?;
    let n = i64::try_from(n).unwrap_or(i64::MAX);

    let from_timestamp = previous.filter(|t| t.ssrc == rtp.ssrc).and_then(|t| {
        let delta = i64::from(rtp.timestamp.wrapping_sub(t.last_ts) as i32);
        let ext = t.last_ext.saturating_add(delta);
        let pos = t.anchor_pos.saturating_add(ext);
        let jumped = pos < 0 || pos.abs_diff(arrival_pos) > REANCHOR_SAMPLES;
        let backwards =
            pos < t.end.saturating_sub(n) && channel.overlaps_written(pos, pos.saturating_add(n));
        (!jumped && !backwards).then_some(Timeline {
            ssrc: rtp.ssrc,
            last_ts: rtp.timestamp,
            last_ext: ext,
            anchor_pos: t.anchor_pos,
            end: t.end.max(pos.saturating_add(n)),
        })
    });
    let timeline = from_timestamp.unwrap_or(Timeline {
        ssrc: rtp.ssrc,
        last_ts: rtp.timestamp,
        last_ext: 0,
        anchor_pos: arrival_pos,
        end: arrival_pos.saturating_add(n),
    });
    let pos = u64::try_from(timeline.anchor_pos.saturating_add(timeline.last_ext)).ok()?;
    Some((pos, timeline))
}

/// One channel's samples and which of them were written.
#[derive(Debug, Default)]
struct Channel {
    /// Samples so far (silence where nothing was written).
    samples: Vec<i16>,
    /// One bit per sample: set where a packet wrote it.
    written: Vec<u64>,
}

impl Channel {
    /// Whether any sample in `start..end` was written.
    fn overlaps_written(&self, start: i64, end: i64) -> bool {
        let len = self.samples.len();
        let clamp = |v: i64| usize::try_from(v.max(0)).unwrap_or(usize::MAX).min(len);
        (clamp(start)..clamp(end)).any(|i| self.is_written(i))
    }

    /// Whether sample `i` was written.
    fn is_written(&self, i: usize) -> bool {
        self.written
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Decodes `payload` into the samples from `pos` on (dropping what lies beyond
    /// [`MAX_WAV_SAMPLES`]).
    fn write(&mut self, pos: u64, payload: &[u8], law: Law) -> Result<(), ExportError> {
        let n = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        let end = pos.saturating_add(n).min(MAX_WAV_SAMPLES);
        if pos >= end {
            return Ok(());
        }
        let (Ok(pos), Ok(end)) = (usize::try_from(pos), usize::try_from(end)) else {
            return Ok(());
        };
        self.grow(end)?;
        let decode = match law {
            Law::Ulaw => g711::ulaw_to_linear,
            Law::Alaw => g711::alaw_to_linear,
        };
        let Some(slots) = self.samples.get_mut(pos..end) else {
            return Ok(());
        };
        for (slot, &code) in slots.iter_mut().zip(payload) {
            *slot = decode(code);
        }
        for i in pos..end {
            if let Some(w) = self.written.get_mut(i / 64) {
                *w |= 1u64 << (i % 64);
            }
        }
        Ok(())
    }

    /// Extends the channel with silence to `len` samples (`len` ≤ [`MAX_WAV_SAMPLES`]),
    /// growing the allocation geometrically but never beyond that bound.
    fn grow(&mut self, len: usize) -> Result<(), ExportError> {
        let max = usize::try_from(MAX_WAV_SAMPLES).unwrap_or(usize::MAX);
        grow_bounded(&mut self.samples, len, max)?;
        grow_bounded(&mut self.written, len.div_ceil(64), max.div_ceil(64))
    }
}

/// Resizes `v` to at least `len` zeroed items, reserving geometrically up to `max` items.
fn grow_bounded<T: Copy + Default>(
    v: &mut Vec<T>,
    len: usize,
    max: usize,
) -> Result<(), ExportError> {
    if len <= v.len() {
        return Ok(());
    }
    if len > v.capacity() {
        let target = v.capacity().saturating_mul(2).max(len).min(max).max(len);
        v.try_reserve_exact(target - v.len())
            .map_err(|_| ExportError::Io(io::Error::from(io::ErrorKind::OutOfMemory)))?;
    }
    v.resize(len, T::default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::{linear_to_alaw, linear_to_ulaw};
    use crate::{Event, EventRecord, PacketRecord};
    use std::time::Instant;

    pub(crate) fn codec(payload_type: u8, name: &str, clock_rate: u32) -> CodecInfo {
        CodecInfo {
            payload_type,
            name: name.to_owned(),
            clock_rate,
            channels: 1,
        }
    }

    fn stream(
        id: StreamId,
        party: u8,
        media_index: u16,
        component: Component,
        codecs: Vec<CodecInfo>,
    ) -> StreamInfo {
        StreamInfo {
            id,
            party,
            media_index,
            component,
            source: String::new(),
            destination: String::new(),
            codecs,
        }
    }

    fn header(streams: Vec<StreamInfo>) -> FileHeader {
        FileHeader {
            recording_id: "rec".into(),
            call_id: "call".into(),
            start_unix_ms: 1_700_000_000_000,
            metadata: None,
            parties: Vec::new(),
            streams,
        }
    }

    /// The usual two-party setup: stream 0/1 = party 0 RTP/RTCP (PCMU + DTMF + CN), stream
    /// 2/3 = party 1 RTP/RTCP (PCMA + DTMF).
    fn two_party_header() -> FileHeader {
        let p0 = vec![
            codec(0, "PCMU", 8000),
            codec(101, "telephone-event", 8000),
            codec(13, "CN", 8000),
        ];
        let p1 = vec![codec(8, "pcma", 8000), codec(101, "TELEPHONE-EVENT", 8000)];
        header(vec![
            stream(0, 0, 0, Component::Rtp, p0.clone()),
            stream(1, 0, 0, Component::Rtcp, p0),
            stream(2, 1, 0, Component::Rtp, p1.clone()),
            stream(3, 1, 0, Component::Rtcp, p1),
        ])
    }

    fn rtp(stream: StreamId, arrival_us: u64, pt: u8, seq: u16, ts: u32, ssrc: u32) -> Record {
        Record::Packet(PacketRecord {
            stream,
            arrival_us,
            rtp: Some(RtpFields {
                marker: false,
                payload_type: pt,
                sequence: seq,
                timestamp: ts,
                ssrc,
            }),
            payload: Vec::new(),
        })
    }

    fn with_payload(mut r: Record, payload: Vec<u8>) -> Record {
        if let Record::Packet(p) = &mut r {
            p.payload = payload;
        }
        r
    }

    fn event(at_us: u64, event: Event) -> Record {
        Record::Event(EventRecord { at_us, event })
    }

    fn rtcp(stream: StreamId, arrival_us: u64) -> Record {
        Record::Packet(PacketRecord {
            stream,
            arrival_us,
            rtp: None,
            payload: vec![0x80, 200, 0, 6, 1, 2, 3, 4],
        })
    }

    fn tone(freq: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (12000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// One party's 20 ms packets of `samples`, from `start_us`, timestamps from `ts0`.
    struct Talk {
        stream: StreamId,
        start_us: u64,
        ts0: u32,
        ssrc: u32,
        pt: u8,
        law: Law,
    }

    impl Talk {
        fn packets(&self, samples: &[i16]) -> Vec<Record> {
            samples
                .chunks(160)
                .enumerate()
                .map(|(k, chunk)| {
                    let payload = chunk
                        .iter()
                        .map(|&x| match self.law {
                            Law::Ulaw => linear_to_ulaw(x),
                            Law::Alaw => linear_to_alaw(x),
                        })
                        .collect();
                    with_payload(
                        rtp(
                            self.stream,
                            self.start_us + k as u64 * 20_000,
                            self.pt,
                            k as u16,
                            self.ts0.wrapping_add(k as u32 * 160),
                            self.ssrc,
                        ),
                        payload,
                    )
                })
                .collect()
        }
    }

    fn round_trip(samples: &[i16], law: Law) -> Vec<i16> {
        samples
            .iter()
            .map(|&x| match law {
                Law::Ulaw => g711::ulaw_to_linear(linear_to_ulaw(x)),
                Law::Alaw => g711::alaw_to_linear(linear_to_alaw(x)),
            })
            .collect()
    }

    /// Merges record lists by time (stable: ties keep list order).
    fn merge(lists: Vec<Vec<Record>>) -> Vec<Record> {
        let mut all: Vec<Record> = lists.into_iter().flatten().collect();
        all.sort_by_key(Record::time_us);
        all
    }

    pub(crate) struct Wav {
        pub(crate) sample_rate: u32,
        pub(crate) channels: u16,
        pub(crate) left: Vec<i16>,
        pub(crate) right: Vec<i16>,
    }

    /// Parses a canonical 44-byte-header PCM WAV, checking every header field.
    pub(crate) fn parse_wav(bytes: &[u8]) -> Wav {
        assert!(bytes.len() >= 44);
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(bytes[i..i + 2].try_into().unwrap());
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(u32_at(4) as usize, bytes.len() - 8);
        assert_eq!(&bytes[8..12], b"WAVE");
        assert_eq!(&bytes[12..16], b"fmt ");
        assert_eq!(u32_at(16), 16);
        assert_eq!(u16_at(20), 1);
        let channels = u16_at(22);
        let sample_rate = u32_at(24);
        assert_eq!(u32_at(28), sample_rate * u32::from(channels) * 2);
        assert_eq!(u16_at(32), channels * 2);
        assert_eq!(u16_at(34), 16);
        assert_eq!(&bytes[36..40], b"data");
        assert_eq!(u32_at(40) as usize, bytes.len() - 44);
        assert_eq!(channels, 2);
        let samples: Vec<i16> = bytes[44..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Wav {
            sample_rate,
            channels,
            left: samples.iter().step_by(2).copied().collect(),
            right: samples.iter().skip(1).step_by(2).copied().collect(),
        }
    }

    fn export(header: &FileHeader, records: &[Record]) -> (WavSummary, Wav) {
        let mut out = Vec::new();
        let summary = write_wav(header, &[], records, &mut out).expect("export");
        let wav = parse_wav(&out);
        assert_eq!(wav.left.len() as u64, summary.samples_per_channel);
        (summary, wav)
    }

    const SECONDS: usize = 3;
    const N: usize = SECONDS * 8000;
    /// Party 1 starts 0.5 s after party 0.
    const OFFSET: usize = 4000;

    fn party0() -> Talk {
        Talk {
            stream: 0,
            start_us: 0,
            ts0: 1000,
            ssrc: 0x1111,
            pt: 0,
            law: Law::Ulaw,
        }
    }

    fn party1() -> Talk {
        Talk {
            stream: 2,
            start_us: 500_000,
            ts0: 0x8000_0000,
            ssrc: 0x2222,
            pt: 8,
            law: Law::Alaw,
        }
    }

    /// Expected channels of the basic two-party call.
    fn expected() -> (Vec<i16>, Vec<i16>) {
        let mut left = round_trip(&tone(400.0, N), Law::Ulaw);
        left.resize(N + OFFSET, 0);
        let mut right = vec![0; OFFSET];
        right.extend(round_trip(&tone(1000.0, N), Law::Alaw));
        (left, right)
    }

    fn basic_records() -> Vec<Record> {
        let rtcp_records = (0..SECONDS as u64)
            .flat_map(|s| [rtcp(1, s * 1_000_000 + 7), rtcp(3, s * 1_000_000 + 9)])
            .collect();
        merge(vec![
            vec![event(0, Event::Started)],
            party0().packets(&tone(400.0, N)),
            party1().packets(&tone(1000.0, N)),
            rtcp_records,
        ])
    }

    #[test]
    fn wav_header_known_bytes() {
        let expected: [u8; 44] = [
            b'R', b'I', b'F', b'F', 52, 0, 0, 0, b'W', b'A', b'V', b'E', b'f', b'm', b't', b' ',
            16, 0, 0, 0, 1, 0, 2, 0, 0x40, 0x1F, 0, 0, 0x00, 0x7D, 0, 0, 4, 0, 16, 0, b'd', b'a',
            b't', b'a', 16, 0, 0, 0,
        ];
        assert_eq!(wav_header(8000, 2, 4), expected);
        // Mono, 16 kHz, 1 s.
        let h = wav_header(16000, 1, 16000);
        assert_eq!(&h[4..8], &(36u32 + 32000).to_le_bytes());
        assert_eq!(&h[28..32], &32000u32.to_le_bytes());
        assert_eq!(&h[40..44], &32000u32.to_le_bytes());
        // Saturates instead of overflowing.
        let h = wav_header(u32::MAX, u16::MAX, u32::MAX);
        assert_eq!(&h[4..8], &u32::MAX.to_le_bytes());
        assert_eq!(&h[40..44], &u32::MAX.to_le_bytes());
    }

    #[test]
    fn two_party_tones_round_trip() {
        let (summary, wav) = export(&two_party_header(), &basic_records());
        let (left, right) = expected();
        assert_eq!(wav.sample_rate, 8000);
        assert_eq!(wav.channels, 2);
        assert_eq!(summary.sample_rate, 8000);
        assert_eq!(summary.samples_per_channel, (N + OFFSET) as u64);
        assert_eq!(summary.packets_used, 2 * N as u64 / 160);
        assert_eq!(summary.packets_skipped, 2 * SECONDS as u64); // RTCP
        assert!(wav.left == left, "left channel differs");
        assert!(wav.right == right, "right channel differs");
        // Sanity: the tone is really there, and party 1 is silent for its first 0.5 s.
        assert!(wav.left[..N].iter().any(|&s| s > 10000));
        assert!(wav.right[..OFFSET].iter().all(|&s| s == 0));
        assert!(wav.right[OFFSET..].iter().any(|&s| s > 10000));
    }

    #[test]
    fn streams_argument_and_stream_events_define_streams() {
        let h = two_party_header();
        let (left, right) = expected();
        // Streams given through the `streams` argument only.
        let mut out = Vec::new();
        write_wav(&header(Vec::new()), &h.streams, &basic_records(), &mut out).unwrap();
        let wav = parse_wav(&out);
        assert!(wav.left == left && wav.right == right);
        // Streams announced by events only.
        let mut records: Vec<Record> = h
            .streams
            .iter()
            .map(|s| event(0, Event::StreamAdded(s.clone())))
            .collect();
        records.extend(basic_records());
        let (_, wav) = export(&header(Vec::new()), &records);
        assert!(wav.left == left && wav.right == right);
    }

    #[test]
    fn lost_packet_is_160_zero_samples() {
        let lost = 10;
        let mut records = basic_records();
        records.retain(
            |r| !matches!(r, Record::Packet(p) if p.stream == 0 && p.rtp.unwrap().sequence == lost),
        );
        let (summary, wav) = export(&two_party_header(), &records);
        let (mut left, right) = expected();
        let hole = usize::from(lost) * 160..usize::from(lost + 1) * 160;
        assert!(left[hole.clone()].iter().any(|&s| s != 0));
        left[hole.clone()].fill(0);
        assert_eq!(wav.left[hole].iter().filter(|&&s| s == 0).count(), 160);
        assert!(wav.left == left);
        assert!(wav.right == right);
        assert_eq!(summary.packets_used, 2 * N as u64 / 160 - 1);
    }

    #[test]
    fn pause_is_silence() {
        // Packets 50..100 of party 0 (1 s) were not recorded; timestamps continue.
        let mut records = basic_records();
        records.retain(|r| {
            !matches!(r, Record::Packet(p)
                if p.stream == 0 && (50..100).contains(&p.rtp.unwrap().sequence))
        });
        records.push(event(999_999, Event::Paused));
        records.push(event(1_999_999, Event::Resumed));
        records.sort_by_key(Record::time_us);
        let (_, wav) = export(&two_party_header(), &records);
        let (mut left, right) = expected();
        left[8000..16000].fill(0);
        assert!(wav.left[8000..16000].iter().all(|&s| s == 0));
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn dtmf_and_comfort_noise_are_skipped() {
        // Packets 50..60 of party 0 are telephone-events (same SSRC and timestamps), and a
        // CN packet (static PT 13) follows.
        let mut records = basic_records();
        for r in &mut records {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp.as_mut() {
                    if p.stream == 0 && (50..60).contains(&rtp.sequence) {
                        rtp.payload_type = 101;
                        p.payload = vec![1, 0x0A, 0x01, 0x40];
                    }
                }
            }
        }
        records.push(with_payload(
            rtp(2, 1_210_000, 13, 999, 0x8000_0000 + 5680, 0x2222),
            vec![0x40],
        ));
        records.sort_by_key(Record::time_us);
        let (summary, wav) = export(&two_party_header(), &records);
        let (mut left, right) = expected();
        left[8000..9600].fill(0);
        assert!(wav.left == left);
        assert!(wav.right == right);
        assert_eq!(summary.packets_skipped, 2 * SECONDS as u64 + 10 + 1);
        assert_eq!(summary.packets_used, 2 * N as u64 / 160 - 10);
    }

    #[test]
    fn unsupported_codec_is_named() {
        let mut h = two_party_header();
        h.streams[0].codecs.push(codec(18, "G729", 8000));
        let mut records = basic_records();
        records.push(with_payload(
            rtp(0, 1_000_001, 18, 7, 9000, 0x1111),
            vec![0; 20],
        ));
        records.sort_by_key(Record::time_us);
        let mut out = Vec::new();
        let err = write_wav(&h, &[], &records, &mut out).unwrap_err();
        assert!(out.is_empty(), "nothing written on error");
        match &err {
            ExportError::UnsupportedCodec {
                stream,
                payload_type,
                name,
            } => assert_eq!((*stream, *payload_type, name.as_str()), (0, 18, "G729")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "stream 0 uses codec G729 (payload type 18): only PCMU and PCMA can be exported \
             to WAV"
        );
        // The static payload type table names it when the codecs do not.
        let err = write_wav(&two_party_header(), &[], &records, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("codec G729 (payload type 18)"),
            "{err}"
        );
        // An unknown dynamic payload type.
        let records = vec![with_payload(rtp(2, 0, 97, 0, 0, 1), vec![0; 160])];
        let err = write_wav(&two_party_header(), &[], &records, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stream 2 uses codec unknown (payload type 97)"),
            "{err}"
        );
    }

    #[test]
    fn ssrc_change_reanchors_on_arrival() {
        // Party 0 talks 1 s with one SSRC, then from 1.5 s with another SSRC whose
        // timestamps are unrelated to the first one's.
        let first = tone(400.0, 8000);
        let second = tone(600.0, 8000);
        let records = merge(vec![
            party0().packets(&first),
            Talk {
                start_us: 1_500_000,
                // Placed by the old SSRC's timestamps this would land at 1.25 s.
                ts0: 1000 + 10_000,
                ssrc: 0x9999,
                ..party0()
            }
            .packets(&second),
            party1().packets(&tone(1000.0, N)),
        ]);
        let (_, wav) = export(&two_party_header(), &records);
        let mut left = round_trip(&first, Law::Ulaw);
        left.resize(12000, 0);
        left.extend(round_trip(&second, Law::Ulaw));
        left.resize(N + OFFSET, 0);
        assert!(wav.left == left);
        assert!(wav.right == expected().1);
    }

    #[test]
    fn timestamp_wrap_is_continuous() {
        let records = merge(vec![
            Talk {
                ts0: u32::MAX - 799,
                ..party0()
            }
            .packets(&tone(400.0, N)),
            Talk {
                ts0: u32::MAX - 159,
                ..party1()
            }
            .packets(&tone(1000.0, N)),
        ]);
        let (summary, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert_eq!(summary.samples_per_channel, (N + OFFSET) as u64);
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn arrival_jitter_does_not_move_audio() {
        // Packets arrive up to 15 ms late (but in order): timestamps decide.
        let mut records = basic_records();
        for r in &mut records {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp {
                    if rtp.sequence > 0 {
                        p.arrival_us += u64::from(rtp.sequence % 4) * 5_000;
                    }
                }
            }
        }
        records.sort_by_key(Record::time_us);
        let (_, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn reordered_packet_fills_its_hole() {
        let mut records = basic_records();
        let i20 = records
            .iter()
            .position(|r| matches!(r, Record::Packet(p) if p.stream == 0 && p.rtp.unwrap().sequence == 20))
            .unwrap();
        let i21 = records
            .iter()
            .position(|r| matches!(r, Record::Packet(p) if p.stream == 0 && p.rtp.unwrap().sequence == 21))
            .unwrap();
        // Packet 20 arrives 5 ms after packet 21 (its arrival alone would misplace it).
        if let Record::Packet(p) = &mut records[i20] {
            p.arrival_us = 425_000;
        }
        records.swap(i20, i21);
        let (_, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn backwards_timestamp_reanchors() {
        // From packet 100 on, party 0's timestamps are 0.5 s behind (same SSRC): placed by
        // timestamp they would overwrite 0.5 s of audio; they are re-anchored on arrival.
        let mut records = basic_records();
        for r in &mut records {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp.as_mut() {
                    if p.stream == 0 && rtp.sequence >= 100 {
                        rtp.timestamp -= 4000;
                    }
                }
            }
        }
        let (_, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn forward_timestamp_jump_over_two_seconds_reanchors() {
        // From packet 75 on, timestamps jump 3 s ahead; arrival keeps the audio in place.
        let mut records = basic_records();
        for r in &mut records {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp.as_mut() {
                    if p.stream == 2 && rtp.sequence >= 75 {
                        rtp.timestamp = rtp.timestamp.wrapping_add(24000);
                    }
                }
            }
        }
        let (summary, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert_eq!(summary.samples_per_channel, (N + OFFSET) as u64);
        assert!(wav.left == left);
        assert!(wav.right == right);
    }

    #[test]
    fn hostile_timestamps_and_arrivals_stay_bounded() {
        let started = Instant::now();
        let mut records = basic_records();
        for r in &mut records {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp.as_mut() {
                    match rtp.sequence {
                        30 => rtp.timestamp = rtp.timestamp.wrapping_add(2_000_000_000),
                        31 => rtp.timestamp = rtp.timestamp.wrapping_sub(1_999_999_999),
                        _ => {}
                    }
                }
            }
        }
        // Arrivals far beyond what is exported are dropped, not allocated for.
        for arrival in [u64::MAX, u64::MAX / 125, 1 << 50, MAX_WAV_SAMPLES * 125] {
            records.push(with_payload(rtp(0, arrival, 0, 1, 2, 0x1111), vec![0; 160]));
            records.push(with_payload(rtp(2, arrival, 8, 1, 2, 0x5555), vec![0; 160]));
        }
        let (summary, wav) = export(&two_party_header(), &records);
        let (left, right) = expected();
        assert_eq!(summary.samples_per_channel, (N + OFFSET) as u64);
        assert_eq!(summary.packets_skipped, 2 * SECONDS as u64 + 8);
        assert!(wav.left == left);
        assert!(wav.right == right);
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn positions_and_allocations_are_capped() {
        let fields = RtpFields {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc: 1,
        };
        let mut channel = Channel::default();
        let near_end = (MAX_WAV_SAMPLES - 100) * US_PER_SAMPLE;
        let (pos, _) = place(None, &channel, near_end, &fields, 1000).unwrap();
        assert_eq!(pos, MAX_WAV_SAMPLES - 100);
        assert!(place(None, &channel, MAX_WAV_SAMPLES * US_PER_SAMPLE, &fields, 1).is_none());
        assert!(place(None, &channel, u64::MAX, &fields, 1).is_none());

        channel.write(10, &[0x80; 5], Law::Ulaw).unwrap();
        assert_eq!(channel.samples[..10], [0; 10]);
        assert_eq!(channel.samples[10..], [32124; 5]);
        assert!(channel.overlaps_written(12, 13));
        assert!(!channel.overlaps_written(0, 10));
        assert!(!channel.overlaps_written(-5, 10));
        // Writes at or past the cap allocate nothing.
        channel
            .write(MAX_WAV_SAMPLES, &[0x80; 5], Law::Ulaw)
            .unwrap();
        channel.write(u64::MAX - 2, &[0x80; 5], Law::Ulaw).unwrap();
        assert_eq!(channel.samples.len(), 15);

        // Geometric growth never reserves beyond the bound.
        let mut v: Vec<i16> = Vec::new();
        grow_bounded(&mut v, 10, 12).unwrap();
        grow_bounded(&mut v, 11, 12).unwrap();
        grow_bounded(&mut v, 12, 12).unwrap();
        assert_eq!(v.len(), 12);
        assert_eq!(v.capacity(), 12);
    }

    #[test]
    fn no_audio() {
        let h = two_party_header();
        let err = |records: &[Record]| write_wav(&h, &[], records, &mut Vec::new()).unwrap_err();
        assert!(matches!(err(&[]), ExportError::NoAudio));
        assert!(matches!(
            err(&[rtcp(1, 0), rtcp(3, 5)]),
            ExportError::NoAudio
        ));
        let dtmf = with_payload(rtp(0, 0, 101, 0, 0, 1), vec![1, 2, 3, 4]);
        assert!(matches!(err(&[dtmf]), ExportError::NoAudio));
        let unknown_stream = with_payload(rtp(42, 0, 0, 0, 0, 1), vec![0; 160]);
        assert!(matches!(err(&[unknown_stream]), ExportError::NoAudio));
        assert_eq!(
            err(&[]).to_string(),
            "the recording holds no RTP audio to export"
        );
    }

    #[test]
    fn first_audio_media_line_is_used() {
        // Party 0: line 0 is video (H264 at 90 kHz), line 1 is audio PCMU, line 2 is another
        // audio line (PCMA). Party 1: line 0 audio.
        let mut h = two_party_header();
        h.streams.push(stream(
            10,
            0,
            0,
            Component::Rtp,
            vec![codec(96, "H264", 90_000)],
        ));
        for s in &mut h.streams[..2] {
            s.media_index = 1;
        }
        h.streams.push(stream(
            11,
            0,
            2,
            Component::Rtp,
            vec![codec(8, "PCMA", 8000)],
        ));
        let video: Vec<Record> = (0..50u16)
            .map(|k| with_payload(rtp(10, u64::from(k) * 33_000, 96, k, 0, 7), vec![0x55; 900]))
            .collect();
        let other_audio = Talk {
            stream: 11,
            pt: 8,
            law: Law::Alaw,
            ssrc: 0x3333,
            ..party0()
        }
        .packets(&tone(2000.0, N));
        let records = merge(vec![basic_records(), video, other_audio]);
        let (summary, wav) = export(&h, &records);
        let (left, right) = expected();
        assert!(wav.left == left);
        assert!(wav.right == right);
        assert_eq!(
            summary.packets_skipped,
            2 * SECONDS as u64 + 50 + N as u64 / 160
        );
    }

    #[test]
    fn stream_changed_codecs_apply_in_order() {
        // Dynamic PT 96 is PCMU at first, PCMA after a re-INVITE at 1 s.
        let mut h = two_party_header();
        h.streams[0].codecs = vec![codec(96, "PCMU", 8000)];
        let mut changed = h.streams[0].clone();
        changed.codecs = vec![codec(96, "PCMA", 8000)];
        let samples = tone(400.0, N);
        let mut records = merge(vec![
            Talk { pt: 96, ..party0() }.packets(&samples[..8000]),
            Talk {
                pt: 96,
                law: Law::Alaw,
                start_us: 1_000_000,
                ts0: 1000 + 8000,
                ..party0()
            }
            .packets(&samples[8000..]),
        ]);
        records.insert(50, event(1_000_000, Event::StreamChanged(changed)));
        let (_, wav) = export(&h, &records);
        let mut left = round_trip(&samples[..8000], Law::Ulaw);
        left.extend(round_trip(&samples[8000..], Law::Alaw));
        assert!(wav.left == left);
        assert!(wav.right.iter().all(|&s| s == 0));
    }

    #[test]
    fn io_errors_are_reported() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_wav(&two_party_header(), &[], &basic_records(), &mut Failing).unwrap_err();
        assert!(matches!(err, ExportError::Io(_)));
        assert!(err.to_string().contains("disk full"));
    }
}
