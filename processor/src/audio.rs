//! WAV playback generated on the fly, with byte ranges, within bounds.
//!
//! `GET /v1/recordings/{id}/audio.wav` does not store a WAV: the exporter is deterministic,
//! so the same `.lcr` always gives the same bytes, and any byte range can be produced by
//! running it and keeping only that range (`RangeSink`). [`plan`] opens the stored file
//! (in place when the storage is a local directory, block by block) and measures the WAV
//! without decoding; the handler refuses audio longer than the configured limit
//! ([`TooLong`]), answers the `Range`, and streams what [`generate`] writes. Silence before
//! the range is skipped arithmetically, and generation stops at the range's end.
//!
//! Bounds per request: the reader's block buffers and the exporter's reorder window
//! (about 1 MiB together; the whole `.lcr` for object storage, which is read in one GET),
//! and at most [`crate::api::WAV_GENERATORS`] requests generate at once. No file is written.

use std::io;
use std::path::Path;

use linecord_recfile::export::{
    measure_recording, render_recording, wav_header, ExportError, StereoSink, WavOptions,
    WavSummary, WAV_HEADER_LEN, WAV_SAMPLE_RATE,
};
use linecord_recfile::reader::{ReadError, Recording};

use crate::storage::{Storage, StorageError};

/// Why no WAV can be served.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The stored file is gone.
    #[error("the recording's file is missing")]
    Missing,
    /// There is nothing to play (no G.711 audio, an unsupported codec).
    #[error("no playable audio: {0}")]
    NoAudio(ExportError),
    /// The audio is longer than the limit.
    #[error("{0}")]
    TooLong(TooLong),
    /// Reading the file failed.
    #[error("reading the recording: {0}")]
    Read(#[from] ReadError),
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The export failed otherwise.
    #[error("export: {0}")]
    Export(ExportError),
}

/// The audio would be longer than `max-audio-duration-secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the recording's audio is longer than the WAV playback limit of {} s \
     (max-audio-duration-secs); download the original .lcr instead",
    .max_samples / WAV_SAMPLE_RATE as u64
)]
pub struct TooLong {
    /// The limit, samples per channel.
    pub max_samples: u64,
}

/// An opened recording and the WAV it gives.
#[derive(Debug)]
pub struct Plan {
    /// The recording (read in place where possible).
    pub recording: Recording,
    /// What the export will produce.
    pub summary: WavSummary,
    /// Its options.
    pub options: WavOptions,
}

impl Plan {
    /// Bytes of the whole WAV.
    pub fn size(&self) -> u64 {
        WAV_HEADER_LEN + 4 * self.summary.samples_per_channel
    }
}

/// Opens the recording stored under `key` and measures its WAV (at most `max_samples` per
/// channel, nothing outside the recording's span).
pub fn plan(storage: &dyn Storage, key: &str, max_samples: u64) -> Result<Plan, AudioError> {
    let recording = match storage.local_path(key) {
        Some(path) => open_local(&path)?,
        None => {
            if storage.size(key)?.is_none() {
                return Err(AudioError::Missing);
            }
            Recording::from_bytes(storage.read_all(key)?)?
        }
    };
    let options = WavOptions {
        max_samples,
        span_us: None,
    };
    let summary = match measure_recording(&recording, &options) {
        Ok(s) => s,
        Err(e @ (ExportError::NoAudio | ExportError::UnsupportedCodec { .. })) => {
            return Err(AudioError::NoAudio(e))
        }
        Err(e) => return Err(AudioError::Export(e)),
    };
    if summary.truncated {
        return Err(AudioError::TooLong(TooLong { max_samples }));
    }
    Ok(Plan {
        recording,
        summary,
        options,
    })
}

fn open_local(path: &Path) -> Result<Recording, AudioError> {
    match Recording::open(path) {
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Err(AudioError::Missing),
        other => Ok(other?),
    }
}

/// Writes bytes `start..end` (end exclusive) of the plan's WAV to `out`.
///
/// # Errors
///
/// What `out` returns, or an export error if the file changed since it was planned.
pub fn generate(
    plan: &Plan,
    start: u64,
    end: u64,
    out: &mut dyn io::Write,
) -> Result<(), AudioError> {
    let end = end.min(plan.size());
    if start >= end {
        return Ok(());
    }
    let header = wav_header(
        WAV_SAMPLE_RATE,
        2,
        u32::try_from(plan.summary.samples_per_channel).unwrap_or(u32::MAX),
    );
    let mut sink = RangeSink {
        out,
        pos: 0,
        start,
        end,
        buf: Vec::new(),
    };
    match sink.emit(&header) {
        Ok(()) => {}
        Err(e) if is_done(&e) => return Ok(()),
        Err(e) => return Err(AudioError::Export(e.into())),
    }
    match render_recording(&plan.recording, &plan.options, &mut sink) {
        // The export ended before the range did (the file changed since it was planned): the
        // body would be shorter than the Content-Length already sent.
        Ok(_) if sink.pos < end => Err(AudioError::Export(ExportError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the recording changed while it was played",
        )))),
        Ok(_) => Ok(()),
        Err(ExportError::Io(e)) if is_done(&e) => Ok(()),
        Err(e) => Err(AudioError::Export(e)),
    }
}

/// Whether `e` is the sink's end-of-range marker.
fn is_done(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<RangeDone>())
}

/// Marks the end of the range (stops the export early).
#[derive(Debug)]
struct RangeDone;

impl std::fmt::Display for RangeDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("range written")
    }
}

impl std::error::Error for RangeDone {}

/// Keeps the bytes of a WAV stream that fall in `start..end`.
struct RangeSink<'w> {
    out: &'w mut dyn io::Write,
    /// Bytes of the WAV stream seen so far (written or skipped).
    pos: u64,
    start: u64,
    end: u64,
    buf: Vec<u8>,
}

/// Zero bytes silence is written from.
static ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];

impl RangeSink<'_> {
    /// The part of `bytes` (at `pos`) inside the range.
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        let (from, to) = (self.pos.max(self.start), (self.pos + len).min(self.end));
        if from < to {
            let a = (from - self.pos) as usize;
            let b = (to - self.pos) as usize;
            self.out.write_all(&bytes[a..b])?;
        }
        self.pos += len;
        self.done()
    }

    fn done(&self) -> io::Result<()> {
        if self.pos >= self.end {
            return Err(io::Error::other(RangeDone));
        }
        Ok(())
    }
}

impl StereoSink for RangeSink<'_> {
    fn audio(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        let len = 4 * left.len() as u64;
        if self.pos + len <= self.start {
            self.pos += len;
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for (l, r) in left.iter().zip(right) {
            buf.extend_from_slice(&l.to_le_bytes());
            buf.extend_from_slice(&r.to_le_bytes());
        }
        let r = self.emit(&buf);
        self.buf = buf;
        r
    }

    fn silence(&mut self, frames: u64) -> io::Result<()> {
        let len = frames.saturating_mul(4);
        let (from, to) = (
            self.pos.max(self.start),
            self.pos.saturating_add(len).min(self.end),
        );
        let mut left = to.saturating_sub(from);
        // Each iteration writes up to 16 KiB of the range's zeros.
        while left > 0 {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.out.write_all(&ZEROS[..n])?;
            left -= n as u64;
        }
        self.pos = self.pos.saturating_add(len);
        self.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;
    use linecord_recfile::block::{seal, BlockBuilder};
    use linecord_recfile::export::write_recording_wav;
    use linecord_recfile::format::encode_header;
    use linecord_recfile::{CodecInfo, Component, FileHeader, RtpFields, StreamInfo};

    fn lcr(packets: &[(u16, u64)]) -> Vec<u8> {
        let stream = |id: u16, party: u8| StreamInfo {
            id,
            party,
            media_index: 0,
            component: Component::Rtp,
            source: String::new(),
            destination: String::new(),
            codecs: vec![CodecInfo {
                payload_type: 0,
                name: "PCMU".into(),
                clock_rate: 8000,
                channels: 1,
            }],
        };
        let h = FileHeader {
            recording_id: "r".into(),
            call_id: "c".into(),
            start_unix_ms: 1_700_000_000_000,
            metadata: None,
            parties: Vec::new(),
            streams: vec![stream(0, 0), stream(2, 1)],
        };
        let mut file = Vec::new();
        encode_header(&h, &mut file);
        let mut b = BlockBuilder::with_capacity(64 * 1024);
        for (i, &(sid, at)) in packets.iter().enumerate() {
            let rtp = RtpFields {
                marker: false,
                payload_type: 0,
                sequence: i as u16,
                timestamp: (i * 160) as u32,
                ssrc: u32::from(sid) + 1,
            };
            let payload: Vec<u8> = (0..160).map(|k| (k * 7 + i) as u8).collect();
            b.push_packet(sid, at, Some(&rtp), &payload);
        }
        seal(&b, &mut file);
        file
    }

    #[test]
    fn every_range_is_the_slice_of_the_whole_export() {
        let dir = std::env::temp_dir().join(format!("linecord-audio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = LocalStorage::open(&dir).expect("storage");
        let packets: Vec<(u16, u64)> = (0..300u64)
            .map(|i| {
                (
                    (i % 2 * 2) as u16,
                    i * 10_000 + if i > 200 { 30_000_000 } else { 0 },
                )
            })
            .collect();
        let bytes = lcr(&packets);
        std::fs::write(dir.join("r.lcr"), &bytes).expect("write");
        let plan = plan(&storage, "r.lcr", 3600 * 8000).expect("plan");
        let mut whole = Vec::new();
        let rec = Recording::from_bytes(bytes).expect("rec");
        write_recording_wav(&rec, &plan.options, &mut whole).expect("export");
        assert_eq!(plan.size(), whole.len() as u64);
        let n = whole.len() as u64;
        for (a, b) in [
            (0, n),
            (0, 1),
            (0, 44),
            (10, 50),
            (44, 48),
            (1000, 300_000),
            (n - 7, n),
            (n / 2, n + 99),
            (400_000, 400_001),
        ] {
            let mut out = Vec::new();
            generate(&plan, a, b, &mut out).expect("range");
            assert_eq!(out, whole[a as usize..b.min(n) as usize], "{a}..{b}");
        }
        let mut out = Vec::new();
        generate(&plan, n, n + 5, &mut out).expect("empty");
        assert!(out.is_empty());
        // Too long for the limit, a missing file, nothing playable.
        assert!(matches!(
            plan_err(&storage, "r.lcr", 8000),
            AudioError::TooLong(_)
        ));
        assert!(matches!(
            plan_err(&storage, "gone.lcr", 8000),
            AudioError::Missing
        ));
        std::fs::write(dir.join("empty.lcr"), lcr(&[])).expect("write");
        assert!(matches!(
            plan_err(&storage, "empty.lcr", 8000),
            AudioError::NoAudio(_)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn plan_err(storage: &dyn Storage, key: &str, max: u64) -> AudioError {
        match plan(storage, key, max) {
            Ok(_) => panic!("{key}: planned"),
            Err(e) => e,
        }
    }
}
