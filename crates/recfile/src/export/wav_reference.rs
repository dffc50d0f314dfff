//! The reference model of the WAV export: the exporter as it was before the streaming rewrite
//! (whole-call sample buffers), for tests only: on ordinary recordings the streaming exporter
//! must produce the same bytes.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use super::ExportError;
use crate::g711;
use crate::{CodecInfo, Component, Event, FileHeader, Record, RtpFields, StreamId, StreamInfo};

/// Sample rate of exported WAV files (G.711 is always 8000 Hz).
const WAV_SAMPLE_RATE: u32 = 8000;

/// Most samples per channel a WAV export ever holds (8 hours at 8000 Hz); audio that would
/// land later is dropped.
const MAX_WAV_SAMPLES: u64 = 8 * 3600 * WAV_SAMPLE_RATE as u64;

/// Microseconds per sample at 8000 Hz.
const US_PER_SAMPLE: u64 = 1_000_000 / WAV_SAMPLE_RATE as u64;

/// Largest distance between timestamp- and arrival-derived positions kept (2 s).
const REANCHOR_SAMPLES: u64 = 2 * WAV_SAMPLE_RATE as u64;

/// Stereo frames written to the output per `write_all`.
const FRAMES_PER_WRITE: usize = 8192;

/// What [`write_wav`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WavSummary {
    /// Samples in each channel (the longer channel's length; the other is padded).
    pub(crate) samples_per_channel: u64,
    /// Sample rate of the file (always [`WAV_SAMPLE_RATE`]).
    pub(crate) sample_rate: u32,
    /// Packets whose audio was decoded into the file.
    pub(crate) packets_used: u64,
    /// Packet records not used: telephone-event and CN packets, RTCP, packets of streams
    /// that are not exported (other media lines, other parties, unknown streams) and
    /// packets beyond [`MAX_WAV_SAMPLES`]. `packets_used + packets_skipped` is the number of
    /// packet records.
    pub(crate) packets_skipped: u64,
}

/// The 44-byte header of a PCM 16-bit little-endian RIFF/WAVE file.
///
/// Sizes that would not fit the format's 32-bit fields are saturated.
#[must_use]
pub(crate) fn wav_header(sample_rate: u32, channels: u16, samples_per_channel: u32) -> [u8; 44] {
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
pub(crate) fn write_wav(
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
