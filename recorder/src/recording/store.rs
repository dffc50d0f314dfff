//! Where recordings go when they end: the footer, the move into
//! `<recording-dir>/YYYY/MM/DD/<id>.lcr`, the metadata JSON beside it, and the job in the
//! spool directory for the processor (schema in `docs/processor-queue.md`). Also the recovery
//! of files left in progress by a recorder that died.
//!
//! Every file that must survive a crash is written to a temporary name, fsynced, then
//! renamed, and the directory is fsynced: a reader sees either nothing or the whole file.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    format, BlockIndexEntry, Completeness, Component, FileHeader, Footer, StopReason, StreamStats,
};
use serde_json::{json, Value};

/// Job schema name and version written in every job.
pub const JOB_SCHEMA: &str = "linecord.recording.v1";

/// What the writer knows about a recording when it ends.
#[derive(Debug)]
pub struct FinishedRecording {
    /// The file's header.
    pub header: FileHeader,
    /// Blocks written.
    pub index: Vec<BlockIndexEntry>,
    /// Per-stream counts.
    pub streams: Vec<StreamStats>,
    /// Why it ended.
    pub reason: StopReason,
    /// Packets not recorded.
    pub dropped: u64,
    /// Why the file failed, if it did.
    pub error: Option<String>,
    /// File offset after the last block.
    pub data_end: u64,
}

/// The recording directory and the spool directory.
#[derive(Debug, Clone)]
pub struct Store {
    recording_dir: PathBuf,
    spool_dir: PathBuf,
}

/// Civil dates and RFC 3339 text, shared with the other producers of the queue.
pub use linecord_jobs::{civil_from_days, rfc3339};

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically (temporary name, fsync, rename, fsync dir).
fn write_atomic(dir: &Path, tmp_dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(tmp_dir).with_context(|| format!("creating {}", tmp_dir.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tmp_dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    let dst = dir.join(name);
    fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    fsync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(dst)
}

impl Store {
    /// A store over these directories (created if missing).
    pub fn new(recording_dir: PathBuf, spool_dir: PathBuf) -> anyhow::Result<Self> {
        let s = Store {
            recording_dir,
            spool_dir,
        };
        for d in [
            s.in_progress_dir(),
            s.spool_dir.join("new"),
            s.spool_dir.join("tmp"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(s)
    }

    /// Directory of files being written.
    pub fn in_progress_dir(&self) -> PathBuf {
        self.recording_dir.join(".inprogress")
    }

    /// Path of a recording while it is written.
    pub fn in_progress_path(&self, id: &str) -> PathBuf {
        self.in_progress_dir().join(format!("{id}.lcr"))
    }

    /// Final directory of a recording that started at `unix_ms`.
    pub fn day_dir(&self, unix_ms: u64) -> PathBuf {
        let (y, m, d) = civil_from_days((unix_ms / 86_400_000) as i64);
        self.recording_dir
            .join(format!("{y:04}"))
            .join(format!("{m:02}"))
            .join(format!("{d:02}"))
    }

    /// Finishes a recording written through `file`: footer, fsync, move, metadata, job.
    /// A failed recording gets a `failed` job and its partial file stays in progress (it is
    /// recovered at the next start if the filesystem allows). Returns the final path.
    pub fn finish(
        &self,
        file: Option<&File>,
        r: &FinishedRecording,
        fsync: bool,
    ) -> anyhow::Result<PathBuf> {
        let id = &r.header.recording_id;
        let end_unix_ms = now_unix_ms();
        if let Some(err) = &r.error {
            let job = job_json(
                &r.header,
                None,
                "failed",
                &r.streams,
                r.dropped,
                end_unix_ms,
                Some(err),
            );
            self.spool(id, &job)?;
            return Ok(self.in_progress_path(id));
        }
        let file = file.context("the recording file was never opened")?;
        let completeness = if r.dropped > 0 {
            Completeness::Incomplete
        } else {
            Completeness::Complete
        };
        let footer = Footer {
            completeness,
            end_unix_ms,
            packets_lost: r.dropped,
            index: r.index.clone(),
            streams: r.streams.clone(),
        };
        let mut bytes = Vec::new();
        format::encode_footer(&footer, &mut bytes);
        file.write_all_at(&bytes, r.data_end)
            .context("writing the footer")?;
        if fsync {
            file.sync_all().context("fsync")?;
        }
        let status = match completeness {
            Completeness::Complete => "complete",
            Completeness::Incomplete => "incomplete",
            Completeness::Recovered => "recovered",
        };
        self.publish(&r.header, &footer, status, end_unix_ms)
    }

    /// Moves the in-progress file into the day directory, writes metadata and the job.
    fn publish(
        &self,
        header: &FileHeader,
        footer: &Footer,
        status: &str,
        end_unix_ms: u64,
    ) -> anyhow::Result<PathBuf> {
        let id = &header.recording_id;
        let dir = self.day_dir(header.start_unix_ms);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dst = dir.join(format!("{id}.lcr"));
        fs::rename(self.in_progress_path(id), &dst)
            .with_context(|| format!("moving the recording to {}", dst.display()))?;
        fsync_dir(&dir).context("syncing the day directory")?;
        let job = job_json(
            header,
            Some(&dst),
            status,
            &footer.streams,
            footer.packets_lost,
            end_unix_ms,
            None,
        );
        let meta = serde_json::to_vec_pretty(&job).context("encoding metadata")?;
        write_atomic(&dir, &dir, &format!("{id}.json"), &meta)?;
        self.spool(id, &job)?;
        Ok(dst)
    }

    /// Puts a job into `<spool-dir>/new/` atomically.
    fn spool(&self, id: &str, job: &Value) -> anyhow::Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(job).context("encoding the job")?;
        write_atomic(
            &self.spool_dir.join("new"),
            &self.spool_dir.join("tmp"),
            &format!("{}-{id}.json", now_unix_ms()),
            &bytes,
        )
    }

    /// Finishes every file a previous run left in progress: keeps each complete block, writes
    /// a footer marked `recovered`, moves and spools it. Returns the recovered ids.
    pub fn recover(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.in_progress_dir()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("lcr") {
                continue;
            }
            match self.recover_one(&path) {
                Ok(id) => {
                    tracing::info!(file = %path.display(), recording = %id, "recovered an interrupted recording");
                    out.push(id);
                }
                Err(e) => {
                    let failed = self.recording_dir.join(".failed");
                    let _ = fs::create_dir_all(&failed);
                    let dst = failed.join(path.file_name().unwrap_or_default());
                    let _ = fs::rename(&path, &dst);
                    tracing::error!(file = %path.display(), moved_to = %dst.display(), error = %format!("{e:#}"), "cannot recover recording");
                }
            }
        }
        out
    }

    fn recover_one(&self, path: &Path) -> anyhow::Result<String> {
        let rec = Recording::open(path).context("reading")?;
        let end = now_unix_ms();
        let footer = match (&rec.footer, rec.is_intact()) {
            // The footer made it but the move did not: publish as it is.
            (Some(f), true) => f.clone(),
            _ => {
                let footer = recovery_footer(&rec, end);
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .context("opening")?;
                f.set_len(rec.data_end)
                    .context("truncating the incomplete tail")?;
                let mut bytes = Vec::new();
                format::encode_footer(&footer, &mut bytes);
                f.write_all_at(&bytes, rec.data_end)
                    .context("writing the footer")?;
                f.sync_all().context("fsync")?;
                footer
            }
        };
        let status = match footer.completeness {
            Completeness::Complete => "complete",
            Completeness::Incomplete => "incomplete",
            Completeness::Recovered => "recovered",
        };
        let id = rec.header.recording_id.clone();
        if self.in_progress_path(&id) != path {
            anyhow::bail!("file name does not match its recording id {id}");
        }
        self.publish(&rec.header, &footer, status, end)?;
        Ok(id)
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The processor job (and metadata file) of a recording; see `docs/processor-queue.md`.
pub fn job_json(
    h: &FileHeader,
    file: Option<&Path>,
    status: &str,
    stats: &[StreamStats],
    packets_lost: u64,
    end_unix_ms: u64,
    error: Option<&str>,
) -> Value {
    let streams: Vec<Value> = h
        .streams
        .iter()
        .map(|s| {
            let st = stats.iter().find(|x| x.stream == s.id).copied().unwrap_or_default();
            json!({
                "id": s.id,
                "party": s.party,
                "media_index": s.media_index,
                "component": match s.component { Component::Rtp => "rtp", Component::Rtcp => "rtcp" },
                "source": s.source,
                "destination": s.destination,
                "codecs": s.codecs.iter().map(|c| json!({
                    "payload_type": c.payload_type, "name": c.name, "clock_rate": c.clock_rate, "channels": c.channels,
                })).collect::<Vec<_>>(),
                "packets": st.packets,
                "payload_bytes": st.payload_bytes,
                "lost": st.lost,
                "jitter": st.jitter,
                "first_us": st.first_us,
                "last_us": st.last_us,
            })
        })
        .collect();
    json!({
        "schema": JOB_SCHEMA,
        "type": "recording",
        "recording_id": h.recording_id,
        "file": file.map(|p| p.display().to_string()),
        "call_id": h.call_id,
        "parties": h.parties.iter().enumerate().map(|(i, p)| json!({
            "index": i, "tag": p.tag, "label": p.label,
        })).collect::<Vec<_>>(),
        "metadata": h.metadata,
        "start": rfc3339(h.start_unix_ms),
        "start_unix_ms": h.start_unix_ms,
        "end": rfc3339(end_unix_ms),
        "end_unix_ms": end_unix_ms,
        "duration_ms": end_unix_ms.saturating_sub(h.start_unix_ms),
        "status": status,
        "complete": status == "complete",
        "packets_lost": packets_lost,
        "streams": streams,
        "error": error,
        "recorder": { "version": env!("CARGO_PKG_VERSION") },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(rfc3339(1_795_564_800_123), "2026-11-25T00:00:00.123Z");
    }
}
