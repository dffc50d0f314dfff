//! Stereo WAV export of G.711 audio (see [`write_wav`]), streaming.
//!
//! One engine places the packets (see [`write_wav`] for the rules) into a reorder window of
//! [`WINDOW_SAMPLES`] per channel and hands what leaves the window to a [`StereoSink`]:
//! audio as sample slices, and everything after the last written sample as a count of
//! silent frames. [`write_wav_from`] runs it twice: once without decoding to learn the
//! length the WAV header needs ([`measure_wav`]), then to write the samples (silence from a
//! small zero buffer). [`render_stereo`] runs it once into any sink (the processor's
//! voice-activity analysis counts silence arithmetically that way).

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::ops::ControlFlow;

use super::{ExportError, RecordSource, StreamTable};
use crate::g711;
use crate::reader::Recording;
use crate::{CodecInfo, Component, FileHeader, Record, RtpFields, StreamId, StreamInfo};

/// Sample rate of exported WAV files (G.711 is always 8000 Hz).
pub const WAV_SAMPLE_RATE: u32 = 8000;

/// Default most samples per channel of a WAV export (8 hours at 8000 Hz,
/// [`WavOptions::default`]); audio that would land later is dropped.
pub const MAX_WAV_SAMPLES: u64 = 8 * 3600 * WAV_SAMPLE_RATE as u64;

/// Length of the WAV header [`wav_header`] writes; the data follows (4 bytes per frame).
pub const WAV_HEADER_LEN: u64 = 44;

/// Samples per channel of the reorder window (2^17: 16.4 s at 8000 Hz). A packet is placed
/// at most 2 s from its arrival time, so audio leaves the window only once nothing can
/// land on it any more unless it arrived more than ~14 s out of order (such a packet's
/// samples before the window are dropped and counted in [`WavSummary::packets_late`]).
pub const WINDOW_SAMPLES: u64 = 1 << 17;

/// Tolerance after the recording's span within which packets are still placed (clock
/// granularity, the footer's millisecond end time).
pub const SPAN_SLACK_US: u64 = 2_000_000;

/// Microseconds per sample at 8000 Hz.
const US_PER_SAMPLE: u64 = 1_000_000 / WAV_SAMPLE_RATE as u64;

/// Largest distance between timestamp- and arrival-derived positions kept (2 s).
const REANCHOR_SAMPLES: u64 = 2 * WAV_SAMPLE_RATE as u64;

/// Stereo frames handed to the sink (and written) at a time.
const FRAMES_PER_WRITE: usize = 8192;

/// What limits an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavOptions {
    /// Most samples per channel; audio beyond is dropped and [`WavSummary::truncated`] set.
    pub max_samples: u64,
    /// The recording's span, µs from its start ([`Recording::span_us`]). Packets arriving
    /// more than [`SPAN_SLACK_US`] after it are outliers (skipped, counted in
    /// [`WavSummary::packets_outside_span`]) and no sample is placed beyond that point.
    /// `None`: no limit but `max_samples`.
    pub span_us: Option<u64>,
}

impl Default for WavOptions {
    /// [`MAX_WAV_SAMPLES`], no span.
    fn default() -> Self {
        WavOptions {
            max_samples: MAX_WAV_SAMPLES,
            span_us: None,
        }
    }
}

impl WavOptions {
    /// The defaults with the recording's span ([`Recording::span_us`]).
    pub fn for_recording(rec: &Recording) -> Self {
        WavOptions {
            span_us: rec.span_us(),
            ..WavOptions::default()
        }
    }
}

/// What an export produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavSummary {
    /// Samples in each channel (the longer channel's length; the other is padded).
    pub samples_per_channel: u64,
    /// Sample rate of the file (always [`WAV_SAMPLE_RATE`]).
    pub sample_rate: u32,
    /// Packets whose audio was decoded into the file.
    pub packets_used: u64,
    /// Packet records not used: telephone-event and CN packets, RTCP, packets of streams
    /// that are not exported (other media lines, other parties, unknown streams), packets
    /// beyond [`WavOptions::max_samples`] or the span, and late packets.
    /// `packets_used + packets_skipped` is the number of packet records.
    pub packets_skipped: u64,
    /// Of the skipped: exported packets that arrived after the span (outliers).
    pub packets_outside_span: u64,
    /// Of the skipped: exported packets that landed entirely behind the reorder window.
    pub packets_late: u64,
    /// Whether audio beyond [`WavOptions::max_samples`] was dropped.
    pub truncated: bool,
}

/// Where [`render_stereo`] delivers the audio, in order: runs of frames (a sample of each
/// channel) and runs of silent frames.
pub trait StereoSink {
    /// `left.len()` frames (`right` has the same length).
    fn audio(&mut self, left: &[i16], right: &[i16]) -> io::Result<()>;
    /// `frames` frames of digital silence (both channels 0).
    fn silence(&mut self, frames: u64) -> io::Result<()>;
}

/// A sink that keeps nothing (measuring).
struct NullSink;

impl StereoSink for NullSink {
    fn audio(&mut self, _: &[i16], _: &[i16]) -> io::Result<()> {
        Ok(())
    }
    fn silence(&mut self, _: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Interleaves frames into a WAV data chunk.
struct WavWriter<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
}

/// Zero bytes silence is written from (1024 frames).
static ZEROS: [u8; 4096] = [0; 4096];

impl<W: Write> StereoSink for WavWriter<'_, W> {
    fn audio(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        self.buf.clear();
        for (l, r) in left.iter().zip(right) {
            self.buf.extend_from_slice(&l.to_le_bytes());
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.out.write_all(&self.buf)
    }

    fn silence(&mut self, frames: u64) -> io::Result<()> {
        let mut bytes = frames.saturating_mul(4);
        // Each iteration writes up to 4 KiB of zeros.
        while bytes > 0 {
            let n = bytes.min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n])?;
            bytes -= n as u64;
        }
        Ok(())
    }
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
/// caller) on channel 0, party 1 (the callee) on channel 1, with [`WavOptions::default`]
/// (see [`write_wav_from`]).
///
/// # Errors
///
/// As [`write_wav_from`].
pub fn write_wav(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &[Record],
    out: &mut impl Write,
) -> Result<WavSummary, ExportError> {
    write_wav_from(header, streams, records, &WavOptions::default(), out)
}

/// Writes the audio of `rec` as a WAV into `out` (the fuzzing entry point for WAV export):
/// [`write_wav_from`] with `rec`'s header, the streams its events announce (as
/// [`Recording::streams`] gives them) and its records decoded block by block, and with the
/// recording's span ([`Recording::span_us`]) unless `opts` names one.
///
/// # Errors
///
/// As [`write_wav_from`].
pub fn write_recording_wav(
    rec: &Recording,
    opts: &WavOptions,
    out: &mut impl Write,
) -> Result<WavSummary, ExportError> {
    write_input(&recording_input(rec), &recording_options(rec, opts), out)
}

/// The export input of a recording: its header, the streams its events announce, its records
/// decoded block by block.
fn recording_input(rec: &Recording) -> Input<'_, Recording> {
    Input {
        header: &rec.header,
        streams: &[],
        records: rec,
        streams_from_events: true,
    }
}

/// [`render_stereo`] for a recording, as [`write_recording_wav`] would write it.
///
/// # Errors
///
/// As [`render_stereo`].
pub fn render_recording(
    rec: &Recording,
    opts: &WavOptions,
    sink: &mut dyn StereoSink,
) -> Result<WavSummary, ExportError> {
    run(
        &recording_input(rec),
        &recording_options(rec, opts),
        true,
        sink,
    )
}

/// What [`write_recording_wav`] would write, without writing it (no decoding; the WAV is
/// [`WAV_HEADER_LEN`] + 4 × `samples_per_channel` bytes long).
///
/// # Errors
///
/// As [`measure_wav`].
pub fn measure_recording(rec: &Recording, opts: &WavOptions) -> Result<WavSummary, ExportError> {
    let opts = recording_options(rec, opts);
    let input = Input {
        header: &rec.header,
        streams: &[],
        records: rec,
        streams_from_events: true,
    };
    run(&input, &opts, false, &mut NullSink)
}

fn recording_options(rec: &Recording, opts: &WavOptions) -> WavOptions {
    WavOptions {
        span_us: opts.span_us.or_else(|| rec.span_us()),
        ..*opts
    }
}

/// Writes the audio as a stereo 16-bit PCM WAV at 8000 Hz: party 0 (the caller) on channel
/// 0, party 1 (the callee) on channel 1. Memory stays bounded (see the module
/// documentation): the records are read twice, first to learn the length, then to write.
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
/// by its timestamp). So RTP timestamps move audio by at most 2 s from where it arrived:
/// they cannot stretch the timeline. Overlaps of up to a packet are overwritten (later
/// packet wins). Whatever was not written is silence.
///
/// Limits: packets arriving after the span ([`WavOptions::span_us`] + [`SPAN_SLACK_US`])
/// are skipped, and nothing is placed beyond that point or beyond
/// [`WavOptions::max_samples`]. Audio leaves the reorder window ([`WINDOW_SAMPLES`]) once a
/// later packet needs the room; a packet placed entirely before the window's start (more
/// than ~14 s out of arrival order) is skipped, and the part of one that starts before it
/// is dropped (samples already handed out count as written when deciding whether a
/// packet overwrites audio).
///
/// Nothing is written when an error is found in the recording: the first pass finds it;
/// `out` is flushed at the end.
///
/// # Errors
///
/// [`ExportError::UnsupportedCodec`] for a packet of an exported stream in a codec other
/// than G.711, telephone-event or CN; [`ExportError::NoAudio`] if no packet could be used;
/// [`ExportError::Io`] if writing fails; [`ExportError::Read`] if the records cannot be
/// read again.
pub fn write_wav_from(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &(impl RecordSource + ?Sized),
    opts: &WavOptions,
    out: &mut impl Write,
) -> Result<WavSummary, ExportError> {
    let input = Input {
        header,
        streams,
        records,
        streams_from_events: false,
    };
    write_input(&input, opts, out)
}

/// The audio [`write_wav_from`] would write, delivered to `sink` in one pass instead:
/// frames of samples, and silence as run lengths.
///
/// # Errors
///
/// As [`write_wav_from`] (`Io` from the sink).
pub fn render_stereo(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &(impl RecordSource + ?Sized),
    opts: &WavOptions,
    sink: &mut dyn StereoSink,
) -> Result<WavSummary, ExportError> {
    let input = Input {
        header,
        streams,
        records,
        streams_from_events: false,
    };
    run(&input, opts, true, sink)
}

/// What [`write_wav_from`] would produce, without producing it (no decoding).
///
/// # Errors
///
/// As [`write_wav_from`], without `Io`.
pub fn measure_wav(
    header: &FileHeader,
    streams: &[StreamInfo],
    records: &(impl RecordSource + ?Sized),
    opts: &WavOptions,
) -> Result<WavSummary, ExportError> {
    let input = Input {
        header,
        streams,
        records,
        streams_from_events: false,
    };
    run(&input, opts, false, &mut NullSink)
}

/// What to export.
struct Input<'a, R: RecordSource + ?Sized> {
    header: &'a FileHeader,
    streams: &'a [StreamInfo],
    records: &'a R,
    streams_from_events: bool,
}

fn write_input<R: RecordSource + ?Sized>(
    input: &Input<'_, R>,
    opts: &WavOptions,
    out: &mut impl Write,
) -> Result<WavSummary, ExportError> {
    let measured = run(input, opts, false, &mut NullSink)?;
    out.write_all(&wav_header(
        WAV_SAMPLE_RATE,
        2,
        saturate_u32(measured.samples_per_channel),
    ))?;
    let mut sink = WavWriter {
        out,
        buf: Vec::with_capacity(FRAMES_PER_WRITE * 4),
    };
    let written = run(input, opts, true, &mut sink)?;
    if written != measured {
        return Err(ExportError::Io(io::Error::other(
            "the recording changed while it was exported",
        )));
    }
    sink.out.flush()?;
    Ok(written)
}

/// One pass of the engine over the records (after one pass to learn the streams).
fn run<R: RecordSource + ?Sized>(
    input: &Input<'_, R>,
    opts: &WavOptions,
    decode: bool,
    sink: &mut dyn StereoSink,
) -> Result<WavSummary, ExportError> {
    let mut with_rtp: HashSet<StreamId> = HashSet::new();
    let mut audio_like: HashSet<StreamId> = HashSet::new();
    let mut table = StreamTable::new(
        input.header,
        input.streams,
        input.records,
        input.streams_from_events,
        |r| match r {
            Record::Packet(p) if p.rtp.is_some() => {
                with_rtp.insert(p.stream);
            }
            r => {
                if let Some(s) = super::stream_event(r) {
                    if is_audio_line(&s.codecs) {
                        audio_like.insert(s.id);
                    }
                }
            }
        },
    )?;
    audio_like.extend(
        table
            .fallback
            .values()
            .filter(|s| is_audio_line(&s.codecs))
            .map(|s| s.id),
    );
    let selected = select_streams(&table.fallback, &with_rtp, &audio_like);
    let span_end_us = opts.span_us.map(|s| s.saturating_add(SPAN_SLACK_US));
    let mut engine = Engine {
        selected,
        timelines: HashMap::new(),
        mixer: Mixer::new(),
        max_samples: opts.max_samples,
        limit: span_end_us.map_or(opts.max_samples, |us| {
            opts.max_samples.min(us / US_PER_SAMPLE + 1)
        }),
        span_end_us,
        decode,
        summary: WavSummary {
            samples_per_channel: 0,
            sample_rate: WAV_SAMPLE_RATE,
            packets_used: 0,
            packets_skipped: 0,
            packets_outside_span: 0,
            packets_late: 0,
            truncated: false,
        },
    };
    let mut failure: Option<ExportError> = None;
    input.records.for_each_record(&mut |record| {
        table.apply(record);
        match engine.packet(&table, record, sink) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if engine.summary.packets_used == 0 {
        return Err(ExportError::NoAudio);
    }
    let end = engine.mixer.end;
    engine.mixer.advance(end, sink)?;
    engine.summary.samples_per_channel = engine.mixer.frontier;
    Ok(engine.summary)
}

/// The exported streams and their channel (0 or 1): for each party, every RTP stream of
/// its lowest audio media line that has RTP packets.
fn select_streams(
    known: &HashMap<StreamId, StreamInfo>,
    with_rtp: &HashSet<StreamId>,
    audio_like: &HashSet<StreamId>,
) -> HashMap<StreamId, usize> {
    let candidates = || {
        known
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

/// The placement engine of one pass.
struct Engine {
    selected: HashMap<StreamId, usize>,
    timelines: HashMap<StreamId, Timeline>,
    mixer: Mixer,
    /// [`WavOptions::max_samples`].
    max_samples: u64,
    /// No sample at or beyond this position (the max, or the end of the span).
    limit: u64,
    /// Packets arriving after this are outliers.
    span_end_us: Option<u64>,
    /// Whether to decode samples (not when measuring).
    decode: bool,
    summary: WavSummary,
}

impl Engine {
    /// Places one record (packets of exported streams; everything else is counted).
    fn packet(
        &mut self,
        table: &StreamTable,
        record: &Record,
        sink: &mut dyn StereoSink,
    ) -> Result<(), ExportError> {
        let Record::Packet(p) = record else {
            return Ok(());
        };
        let (Some(&ch), Some(rtp)) = (self.selected.get(&p.stream), p.rtp.as_ref()) else {
            self.summary.packets_skipped += 1;
            return Ok(());
        };
        let codecs = table.get(p.stream).map_or(&[][..], |s| s.codecs.as_slice());
        let law = match classify(codecs, rtp.payload_type) {
            Payload::Audio(law) => law,
            Payload::Skip => {
                self.summary.packets_skipped += 1;
                return Ok(());
            }
            Payload::Unsupported(name) => {
                return Err(ExportError::UnsupportedCodec {
                    stream: p.stream,
                    payload_type: rtp.payload_type,
                    name,
                })
            }
        };
        if ch > 1 {
            self.summary.packets_skipped += 1;
            return Ok(());
        }
        if self.span_end_us.is_some_and(|end| p.arrival_us > end) {
            self.summary.packets_skipped += 1;
            self.summary.packets_outside_span += 1;
            return Ok(());
        }
        let n = u64::try_from(p.payload.len()).unwrap_or(u64::MAX);
        let previous = self.timelines.get(&p.stream);
        let Some((pos, timeline)) =
            place(previous, &self.mixer, ch, p.arrival_us, rtp, n, self.limit)
        else {
            self.summary.packets_skipped += 1;
            if p.arrival_us / US_PER_SAMPLE >= self.max_samples {
                self.summary.truncated = true;
            }
            return Ok(());
        };
        self.timelines.insert(p.stream, timeline);
        if pos.saturating_add(n) > self.max_samples {
            self.summary.truncated = true;
        }
        let law = self.decode.then_some(law);
        if self
            .mixer
            .write(ch, pos, &p.payload, law, self.limit, sink)?
        {
            self.summary.packets_used += 1;
        } else {
            self.summary.packets_skipped += 1;
            self.summary.packets_late += 1;
        }
        Ok(())
    }
}

/// Where a packet of `n` samples goes on channel `ch`, and the stream's placement state
/// after it; `None` if it arrived at or beyond `limit`.
fn place(
    previous: Option<&Timeline>,
    mixer: &Mixer,
    ch: usize,
    arrival_us: u64,
    rtp: &RtpFields,
    n: u64,
    limit: u64,
) -> Option<(u64, Timeline)> {
    let arrival_pos = arrival_us / US_PER_SAMPLE;
    if arrival_pos >= limit {
        return None;
    }
    // At most u64::MAX / 125 and the payload length: the conversions cannot fail.
    let arrival_pos = i64::try_from(arrival_pos).ok()?;
    let n = i64::try_from(n).unwrap_or(i64::MAX);

    let from_timestamp = previous.filter(|t| t.ssrc == rtp.ssrc).and_then(|t| {
        let delta = i64::from(rtp.timestamp.wrapping_sub(t.last_ts) as i32);
        let ext = t.last_ext.saturating_add(delta);
        let pos = t.anchor_pos.saturating_add(ext);
        let jumped = pos < 0 || pos.abs_diff(arrival_pos) > REANCHOR_SAMPLES;
        let backwards =
            pos < t.end.saturating_sub(n) && mixer.overlaps_written(ch, pos, pos.saturating_add(n));
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

/// One channel's samples in the window and which of them were written (index = position
/// modulo [`WINDOW_SAMPLES`]). Slots outside written audio are 0 and unmarked.
struct Ring {
    samples: Vec<i16>,
    written: Vec<u64>,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            samples: vec![0; WINDOW_SAMPLES as usize],
            written: vec![0; WINDOW_SAMPLES as usize / 64],
        }
    }

    fn is_written(&self, pos: u64) -> bool {
        let i = slot(pos);
        self.written
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Stores `value` at `pos` (or only marks it, without a value).
    fn put(&mut self, pos: u64, value: Option<i16>) {
        let i = slot(pos);
        if let (Some(v), Some(s)) = (value, self.samples.get_mut(i)) {
            *s = v;
        }
        if let Some(w) = self.written.get_mut(i / 64) {
            *w |= 1u64 << (i % 64);
        }
    }

    /// Resets the slots of `from..to` (at most one window) to silence.
    fn clear(&mut self, from: u64, to: u64) {
        for pos in from..to {
            let i = slot(pos);
            if let Some(s) = self.samples.get_mut(i) {
                *s = 0;
            }
            if let Some(w) = self.written.get_mut(i / 64) {
                *w &= !(1u64 << (i % 64));
            }
        }
    }
}

/// The ring slot of a position.
fn slot(pos: u64) -> usize {
    (pos & (WINDOW_SAMPLES - 1)) as usize
}

/// The two channels' window `[frontier, frontier + WINDOW_SAMPLES)`; everything before
/// `frontier` has been handed to the sink.
struct Mixer {
    rings: [Ring; 2],
    /// Frames handed out so far.
    frontier: u64,
    /// End (exclusive) of the audio written so far, on either channel.
    end: u64,
    /// No sample before this position in the window was written (`u64::MAX`: none is),
    /// so what precedes it is handed out as silence.
    lo: u64,
}

impl Mixer {
    fn new() -> Mixer {
        Mixer {
            rings: [Ring::new(), Ring::new()],
            frontier: 0,
            end: 0,
            lo: u64::MAX,
        }
    }

    /// Whether any sample of channel `ch` in `start..end` was written. Samples already
    /// handed out count as written (their state is gone).
    fn overlaps_written(&self, ch: usize, start: i64, end: i64) -> bool {
        let start = u64::try_from(start.max(0)).unwrap_or(0);
        let end = u64::try_from(end.max(0)).unwrap_or(0);
        if start >= end {
            return false;
        }
        if start < self.frontier {
            return true;
        }
        let stop = end.min(self.frontier.saturating_add(WINDOW_SAMPLES));
        let Some(ring) = self.rings.get(ch) else {
            return false;
        };
        (start..stop).any(|p| ring.is_written(p))
    }

    /// Decodes `payload` (with `law`; `None` only marks the samples) into channel `ch` from
    /// `pos` on, dropping what lies at or beyond `limit` and what lies before the window.
    /// Returns whether any sample was placed or would have been (false: entirely late).
    fn write(
        &mut self,
        ch: usize,
        pos: u64,
        payload: &[u8],
        law: Option<Law>,
        limit: u64,
        sink: &mut dyn StereoSink,
    ) -> io::Result<bool> {
        let n = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        let end = pos.saturating_add(n).min(limit);
        if pos >= end {
            // Beyond the limit (or empty): nothing to place, not late.
            return Ok(true);
        }
        if end > self.frontier.saturating_add(WINDOW_SAMPLES) {
            self.advance(end - WINDOW_SAMPLES, sink)?;
        }
        let start = pos.max(self.frontier);
        if start >= end {
            return Ok(false);
        }
        let decode = law.map(|l| match l {
            Law::Ulaw => g711::ulaw_to_linear as fn(u8) -> i16,
            Law::Alaw => g711::alaw_to_linear,
        });
        let skip = usize::try_from(start - pos).unwrap_or(usize::MAX);
        let Some(ring) = self.rings.get_mut(ch) else {
            return Ok(false);
        };
        for (p, &code) in (start..end).zip(payload.iter().skip(skip)) {
            ring.put(p, decode.map(|d| d(code)));
        }
        self.end = self.end.max(end);
        self.lo = self.lo.min(start);
        Ok(true)
    }

    /// Hands frames `frontier..to` to the sink: the part that may hold written samples as
    /// audio, the rest (before the first written sample, and after `end`) as silence.
    fn advance(&mut self, to: u64, sink: &mut dyn StereoSink) -> io::Result<()> {
        if to <= self.frontier {
            return Ok(());
        }
        let audio_end = to.min(self.end).max(self.frontier);
        let audio_start = self.lo.clamp(self.frontier, audio_end);
        if audio_start > self.frontier {
            sink.silence(audio_start - self.frontier)?;
        }
        let mut p = audio_start;
        // Each iteration hands out at least one frame (audio_end - frontier ≤ a window).
        while p < audio_end {
            let i = slot(p);
            let len = (audio_end - p)
                .min(FRAMES_PER_WRITE as u64)
                .min(WINDOW_SAMPLES - i as u64) as usize;
            let [left, right] = &self.rings;
            let (Some(l), Some(r)) = (left.samples.get(i..i + len), right.samples.get(i..i + len))
            else {
                break;
            };
            sink.audio(l, r)?;
            let q = p + len as u64;
            for ring in &mut self.rings {
                ring.clear(p, q);
            }
            p = q;
        }
        if self.lo < to {
            // Written samples may remain after `to`; where the first is is not tracked.
            self.lo = if self.end > to { to } else { u64::MAX };
        }
        if to > audio_end {
            sink.silence(to - audio_end)?;
        }
        self.frontier = to;
        Ok(())
    }
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
    fn positions_are_capped_and_the_window_is_bounded() {
        let fields = RtpFields {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc: 1,
        };
        let mut mixer = Mixer::new();
        let near_end = (MAX_WAV_SAMPLES - 100) * US_PER_SAMPLE;
        let (pos, _) = place(None, &mixer, 0, near_end, &fields, 1000, MAX_WAV_SAMPLES).unwrap();
        assert_eq!(pos, MAX_WAV_SAMPLES - 100);
        let at_cap = MAX_WAV_SAMPLES * US_PER_SAMPLE;
        assert!(place(None, &mixer, 0, at_cap, &fields, 1, MAX_WAV_SAMPLES).is_none());
        assert!(place(None, &mixer, 0, u64::MAX, &fields, 1, MAX_WAV_SAMPLES).is_none());

        struct Collect(Vec<(Vec<i16>, Vec<i16>)>, u64);
        impl StereoSink for Collect {
            fn audio(&mut self, l: &[i16], r: &[i16]) -> io::Result<()> {
                self.0.push((l.to_vec(), r.to_vec()));
                Ok(())
            }
            fn silence(&mut self, n: u64) -> io::Result<()> {
                self.1 += n;
                Ok(())
            }
        }
        let mut sink = Collect(Vec::new(), 0);
        assert!(mixer
            .write(
                0,
                10,
                &[0x80; 5],
                Some(Law::Ulaw),
                MAX_WAV_SAMPLES,
                &mut sink
            )
            .unwrap());
        assert!(mixer.overlaps_written(0, 12, 13));
        assert!(!mixer.overlaps_written(0, 0, 10));
        assert!(!mixer.overlaps_written(0, -5, 10));
        assert!(!mixer.overlaps_written(1, 0, 20));
        // Writes at or past the cap place nothing and hand nothing out.
        mixer
            .write(
                0,
                MAX_WAV_SAMPLES,
                &[0x80; 5],
                Some(Law::Ulaw),
                MAX_WAV_SAMPLES,
                &mut sink,
            )
            .unwrap();
        mixer
            .write(
                0,
                u64::MAX - 2,
                &[0x80; 5],
                Some(Law::Ulaw),
                MAX_WAV_SAMPLES,
                &mut sink,
            )
            .unwrap();
        assert_eq!((mixer.end, mixer.frontier), (15, 0));
        assert!(sink.0.is_empty());
        // A write far ahead hands the window out: the written frames as audio, then silence.
        let far = 5 * WINDOW_SAMPLES;
        assert!(mixer
            .write(
                1,
                far,
                &[0x80; 2],
                Some(Law::Ulaw),
                MAX_WAV_SAMPLES,
                &mut sink
            )
            .unwrap());
        assert_eq!(mixer.frontier, far + 2 - WINDOW_SAMPLES);
        let audio: usize = sink.0.iter().map(|(l, _)| l.len()).sum();
        assert_eq!(
            audio, 5,
            "the 10 frames before the first written one are silence"
        );
        assert_eq!(sink.0[0].0, [32124; 5]);
        assert!(sink.0[0].1.iter().all(|&s| s == 0));
        assert_eq!(audio as u64 + sink.1, mixer.frontier);
        // Samples behind the window count as written; a packet entirely behind is late.
        assert!(mixer.overlaps_written(0, 100, 101));
        assert!(!mixer
            .write(
                0,
                100,
                &[0x80; 5],
                Some(Law::Ulaw),
                MAX_WAV_SAMPLES,
                &mut sink
            )
            .unwrap());
        // The ring slots handed out were reset.
        assert!(mixer
            .rings
            .iter()
            .all(|r| r.samples.iter().all(|&s| s == 0) || r.written.iter().any(|&w| w != 0)));
        mixer.advance(mixer.end, &mut sink).unwrap();
        assert!(mixer
            .rings
            .iter()
            .all(|r| r.samples.iter().all(|&s| s == 0) && r.written.iter().all(|&w| w == 0)));
        assert_eq!(mixer.frontier, far + 2);
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

    // ---- the streaming exporter against the old whole-buffer one ----------------------

    /// The old exporter's bytes (whole-call buffers, `wav_reference`).
    fn reference_bytes(
        header: &FileHeader,
        streams: &[StreamInfo],
        records: &[Record],
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        super::super::wav_reference::write_wav(header, streams, records, &mut out).ok()?;
        Some(out)
    }

    fn new_bytes(
        header: &FileHeader,
        streams: &[StreamInfo],
        records: &[Record],
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write_wav(header, streams, records, &mut out).ok()?;
        Some(out)
    }

    fn assert_same_as_reference(header: &FileHeader, records: &[Record]) {
        let old = reference_bytes(header, &[], records).expect("reference export");
        let new = new_bytes(header, &[], records).expect("streaming export");
        assert_eq!(old.len(), new.len());
        assert!(old == new, "the streaming export differs from the old one");
    }

    /// A long call (longer than several windows) with jitter, reordering, loss, an SSRC
    /// change, DTMF and a timestamp jump: the same bytes as the old exporter.
    fn long_call(seconds: u64) -> Vec<Record> {
        let n = (seconds * 8000) as usize;
        let mut records = merge(vec![
            party0().packets(&tone(400.0, n)),
            party1().packets(&tone(1000.0, n)),
        ]);
        for (i, r) in records.iter_mut().enumerate() {
            if let Record::Packet(p) = r {
                let seq = p.rtp.map_or(0, |f| f.sequence);
                p.arrival_us += u64::from(seq % 7) * 1_300 + (i as u64 % 3) * 200;
                if let Some(f) = p.rtp.as_mut() {
                    if p.stream == 0 && seq >= 2000 {
                        f.ssrc = 0x4444;
                    }
                    if p.stream == 2 && seq >= 3000 {
                        f.timestamp = f.timestamp.wrapping_add(50_000);
                    }
                    if p.stream == 0 && (1500..1510).contains(&seq) {
                        f.payload_type = 101;
                        p.payload = vec![1, 0x0A, 0x01, 0x40];
                    }
                }
            }
        }
        records.retain(
            |r| !matches!(r, Record::Packet(p) if p.rtp.is_some_and(|f| f.sequence % 97 == 5)),
        );
        records.sort_by_key(Record::time_us);
        // Neighbouring packets swapped (arrival order kept as recorded).
        for i in (100..records.len() - 1).step_by(211) {
            records.swap(i, i + 1);
        }
        records
    }

    #[test]
    fn streaming_export_is_byte_identical_on_ordinary_calls() {
        let h = two_party_header();
        assert_same_as_reference(&h, &basic_records());
        assert_same_as_reference(&h, &long_call(90));
        // Every scenario of the tests above.
        let mut lost = basic_records();
        lost.retain(
            |r| !matches!(r, Record::Packet(p) if p.stream == 0 && p.rtp.unwrap().sequence == 10),
        );
        assert_same_as_reference(&h, &lost);
        let mut jitter = basic_records();
        for r in &mut jitter {
            if let Record::Packet(p) = r {
                if let Some(rtp) = p.rtp {
                    p.arrival_us += u64::from(rtp.sequence % 4) * 5_000;
                }
            }
        }
        jitter.sort_by_key(Record::time_us);
        assert_same_as_reference(&h, &jitter);
    }

    #[test]
    fn recording_export_matches_the_slice_export_and_the_old_one() {
        use crate::block::{seal, BlockBuilder};
        use crate::format::{encode_footer, encode_header};
        let h = two_party_header();
        let records = long_call(40);
        let mut file = Vec::new();
        encode_header(&h, &mut file);
        let mut b = BlockBuilder::with_capacity(16 * 1024);
        for r in &records {
            match r {
                Record::Packet(p) => {
                    b.push_packet(p.stream, p.arrival_us, p.rtp.as_ref(), &p.payload)
                }
                Record::Event(e) => b.push_event(e),
            }
            if b.len() > 8 * 1024 {
                seal(&b, &mut file);
                b.clear();
            }
        }
        seal(&b, &mut file);
        let rec = Recording::from_bytes(file.clone()).unwrap();
        let mut footer = crate::reader::recovery_footer(&rec, h.start_unix_ms + 41_000);
        footer.completeness = crate::Completeness::Complete;
        encode_footer(&footer, &mut file);
        let rec = Recording::from_bytes(file).unwrap();
        assert!(rec.is_intact());
        let mut new = Vec::new();
        let s = write_recording_wav(&rec, &WavOptions::default(), &mut new).unwrap();
        assert_eq!(s.packets_outside_span, 0);
        let old = reference_bytes(&rec.header, &rec.streams(), &rec.records().unwrap()).unwrap();
        assert!(new == old, "recording export differs from the old exporter");
        assert_eq!(measure_recording(&rec, &WavOptions::default()).unwrap(), s);
    }

    #[test]
    fn packets_after_the_span_are_outliers() {
        // A 3 s call whose last packet claims to arrive 8 hours in: with the span (the
        // footer says 3 s) it is skipped and counted; without, it stretches the file.
        let mut records = basic_records();
        records.push(with_payload(
            rtp(0, 8 * 3600 * 1_000_000, 0, 999, 5, 0x1111),
            vec![0x80; 160],
        ));
        let h = two_party_header();
        let opts = WavOptions {
            span_us: Some(3_500_000),
            ..WavOptions::default()
        };
        let mut out = Vec::new();
        let s = write_wav_from(&h, &[], &records[..], &opts, &mut out).unwrap();
        assert_eq!(s.packets_outside_span, 1);
        assert_eq!(s.samples_per_channel, (N + OFFSET) as u64);
        let (left, right) = expected();
        let wav = parse_wav(&out);
        assert!(wav.left == left && wav.right == right);
        let unbounded = WavOptions {
            max_samples: u64::MAX,
            span_us: None,
        };
        let unbounded = measure_wav(&h, &[], &records[..], &unbounded).unwrap();
        assert_eq!(unbounded.samples_per_channel, 8 * 3600 * 8000 + 160);
        // Nothing is placed past the span even when a timestamp points there.
        let opts = WavOptions {
            span_us: Some(1_000_000),
            ..WavOptions::default()
        };
        let s = measure_wav(&h, &[], &basic_records()[..], &opts).unwrap();
        assert_eq!(s.samples_per_channel, (1_000_000 + SPAN_SLACK_US) / 125 + 1);
        assert!(s.packets_outside_span > 0);
    }

    #[test]
    fn max_samples_truncates_and_says_so() {
        let opts = WavOptions {
            max_samples: 8000,
            span_us: None,
        };
        let s = measure_wav(&two_party_header(), &[], &basic_records()[..], &opts).unwrap();
        assert!(s.truncated);
        assert_eq!(s.samples_per_channel, 8000);
        let s = measure_wav(
            &two_party_header(),
            &[],
            &basic_records()[..],
            &WavOptions::default(),
        )
        .unwrap();
        assert!(!s.truncated);
    }

    #[test]
    fn a_packet_later_than_the_window_is_dropped_and_counted() {
        // Party 0's packet 10 (arrival 0.2 s) is recorded after 30 s of party 1's audio, far
        // behind the window: the old exporter filled its hole at 0.2 s, the streaming one
        // drops and counts it (the one placement difference besides the span; a recorder
        // writes packets in arrival order, so it takes a file reordered by more than ~14 s).
        let mut records = merge(vec![
            party0().packets(&tone(400.0, 8000)),
            party1().packets(&tone(1000.0, 40 * 8000)),
        ]);
        let i = records
            .iter()
            .position(|r| matches!(r, Record::Packet(p) if p.stream == 0 && p.rtp.unwrap().sequence == 10))
            .unwrap();
        let late = records.remove(i);
        let at = records
            .iter()
            .position(|r| r.time_us() > 30_000_000)
            .unwrap();
        records.insert(at, late);
        let mut out = Vec::new();
        let s = write_wav(&two_party_header(), &[], &records, &mut out).unwrap();
        assert_eq!(s.packets_late, 1);
        let wav = parse_wav(&out);
        assert!(wav.left[1600..1760].iter().all(|&x| x == 0));
        let old = parse_wav(&reference_bytes(&two_party_header(), &[], &records).unwrap());
        assert!(old.left[1600..1760].iter().any(|&x| x != 0));
        assert_eq!(old.left.len(), wav.left.len());
        assert!(old.left[1760..] == wav.left[1760..] && old.right == wav.right);
    }

    #[test]
    fn silence_reaches_the_sink_as_run_lengths() {
        // Two packets 8 hours apart: the sink sees 160 frames, ~8 h of silence, 160 frames.
        struct Tally {
            audio: u64,
            silence: u64,
            calls: u64,
        }
        impl StereoSink for Tally {
            fn audio(&mut self, l: &[i16], _: &[i16]) -> io::Result<()> {
                self.audio += l.len() as u64;
                self.calls += 1;
                Ok(())
            }
            fn silence(&mut self, n: u64) -> io::Result<()> {
                self.silence += n;
                self.calls += 1;
                Ok(())
            }
        }
        let eight_h = 8 * 3600 * 1_000_000u64;
        let records = [
            with_payload(rtp(0, 0, 0, 0, 0, 1), vec![0x80; 160]),
            with_payload(rtp(2, eight_h - 20_000, 8, 0, 0, 2), vec![0x80; 160]),
        ];
        let mut t = Tally {
            audio: 0,
            silence: 0,
            calls: 0,
        };
        let opts = WavOptions {
            max_samples: u64::MAX,
            span_us: Some(eight_h),
        };
        let s = render_stereo(&two_party_header(), &[], &records[..], &opts, &mut t).unwrap();
        assert_eq!(s.samples_per_channel, 8 * 3600 * 8000);
        assert_eq!(t.audio + t.silence, s.samples_per_channel);
        assert!(
            t.audio <= 2 * 160 + 2 * FRAMES_PER_WRITE as u64,
            "{}",
            t.audio
        );
        assert!(t.calls < 10, "{} sink calls", t.calls);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Arbitrary G.711 packets within 10 s (any order, any timestamps): the streaming
        /// export writes exactly the old exporter's bytes (or fails the same way).
        #[test]
        fn streaming_equals_the_reference_within_a_window(
            packets in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0u16, 1, 2, 3]),
                    0u64..10_000_000,
                    proptest::sample::select(vec![0u8, 8, 101, 13]),
                    proptest::prop_oneof![0u32..100_000, proptest::prelude::any::<u32>()],
                    proptest::sample::select(vec![1u32, 2]),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..330),
                ),
                0..80,
            ),
            sorted: bool,
        ) {
            let mut records: Vec<Record> = packets
                .into_iter()
                .map(|(stream, arrival, pt, ts, ssrc, payload)| {
                    with_payload(rtp(stream, arrival, pt, 0, ts, ssrc), payload)
                })
                .collect();
            if sorted {
                records.sort_by_key(Record::time_us);
            }
            let h = two_party_header();
            proptest::prop_assert_eq!(reference_bytes(&h, &[], &records), new_bytes(&h, &[], &records));
        }
    }
}
