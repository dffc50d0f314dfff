//! Where recordings go when they end: the footer, the file's final name
//! `<recording-dir>/YYYY/MM/DD/<id>.lcr`, the metadata JSON beside it, and the job in the
//! spool directory for the processor (schema in `docs/processor-queue.md`). Also the recovery
//! of files left in progress by a recorder that died, and the retry of whatever a full or
//! failing disk did not let through.
//!
//! # Publishing, step by step
//!
//! A recording's file is written as `.inprogress/<id>.lcr`. When it ends:
//!
//! 1. **footer**: written after the last complete block (a failed recording is first cut
//!    back to it); if it does not fit, the file is cut back again and kept without one (the
//!    reader recovers every complete block), then fsynced;
//! 2. **link**: the file gets its final name as a hard link, so the in-progress name stays
//!    until the job is out (a rename is the fallback where links are not supported);
//! 3. **metadata**: `<id>.json` beside it, best effort: its failure is logged and retried,
//!    and does not hold up the job (the spool may be on another disk);
//! 4. **job**: into `<spool-dir>/new/`; if that fails, the job is also saved as
//!    `.inprogress/<id>.job` when the recording disk takes it, kept in memory and retried
//!    with back-off ([`Store::retry_pending`]), and start-up recovery spools it;
//! 5. **clean-up**: the in-progress names are removed.
//!
//! A crash anywhere leaves `.inprogress/<id>.lcr` (and maybe `<id>.job`), and start-up
//! recovery ([`Store::recover`]) runs the same steps again: a job can be spooled twice (the
//! queue is at least once), never zero times. Every file that must survive a crash is
//! written to a temporary name, fsynced, renamed and its directory fsynced; a temporary file
//! whose write or rename failed is removed at once (and any left by a crash at the next
//! start). No file-system error is ignored: each is handled, or logged with its path.
//!
//! A recording of which nothing reached the disk (no file, or no packet in it) gets a
//! `failed` job with `file: null`, and its file, if any, is removed.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use linecord_jobs::{
    Codec, Component as JobComponent, RecorderInfo, RecordingJob, RecordingParty, RecordingSchema,
    RecordingStatus, RecordingStream, RecordingType,
};
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    format, BlockIndexEntry, Completeness, Component, FileHeader, Footer, StopReason, StreamStats,
};

use super::disk::{Disk, OsDisk};

/// Job schema name and version written in every job.
pub const JOB_SCHEMA: &str = linecord_jobs::RECORDING_SCHEMA;

/// Default of `--min-free-disk`: the space a new recording needs on the recording
/// filesystem before it is opened, in MiB.
pub const DEFAULT_MIN_FREE_DISK_MIB: u64 = 64;

/// Most jobs kept for retrying. Past it the oldest is given up (logged): a recording with a
/// file is then published by the next start-up's recovery; a `failed` job survives only if it
/// was saved as `.inprogress/<id>.job`.
const MAX_PENDING: usize = 4096;
/// First retry of a step that failed, doubled per attempt up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Files in `<spool-dir>/tmp/` older than this are removed at start-up whoever left them
/// (docs/processor-queue.md); newer ones only when they are the recorder's own.
const STALE_SPOOL_TMP: Duration = Duration::from_secs(3600);

/// A file-system operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct StoreError {
    /// What was done (`writing`, `linking`, …).
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl StoreError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        StoreError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// What the writer knows about a recording when it ends.
#[derive(Debug)]
pub struct FinishedRecording {
    /// The file's header.
    pub header: FileHeader,
    /// Index of blocks in the file (only blocks that were written).
    pub index: Vec<BlockIndexEntry>,
    /// Per-stream counts of what is in the file.
    pub streams: Vec<StreamStats>,
    /// Why it ended.
    pub reason: StopReason,
    /// Packets not recorded (memory budget, or lost to a write failure).
    pub dropped: u64,
    /// Why writing failed, if it did.
    pub error: Option<String>,
    /// File offset after the last block written completely: the file holds the header and
    /// complete blocks up to here (anything after is a torn write, cut off).
    pub data_end: u64,
}

/// What became of a recording handed to [`Store::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The job's status.
    pub status: RecordingStatus,
    /// The file the job names (`None` for `failed`).
    pub file: Option<PathBuf>,
    /// The file has that name already (`false`: it is still only in `.inprogress/`, and
    /// giving it its name is retried).
    pub in_place: bool,
    /// The job is in the spool; `false`: it is being retried ([`Store::retry_pending`]).
    pub spooled: bool,
    /// The job's `error`.
    pub error: Option<String>,
}

/// What start-up recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Recordings whose job was spooled.
    pub recovered: Vec<String>,
    /// Recordings whose publishing is being retried (their job is not spooled yet).
    pub pending: Vec<String>,
    /// Unreadable files moved to `.failed/`.
    pub quarantined: Vec<PathBuf>,
    /// Files left where they are for the next start (could not be read or moved).
    pub left: Vec<PathBuf>,
    /// Temporary files removed (left by a crash).
    pub removed_tmp: usize,
}

/// The steps of publishing still to do for one recording (see the module documentation).
#[derive(Debug)]
struct Pending {
    id: String,
    /// The job JSON (also the metadata file's content).
    job: Vec<u8>,
    /// Give the file its final name: (in-progress path, final path).
    link: Option<(PathBuf, PathBuf)>,
    /// Write the metadata file here.
    sidecar: Option<PathBuf>,
    /// Put the job into the spool.
    spool: bool,
    /// In-progress names to remove once the job is spooled, in order.
    cleanup: Vec<PathBuf>,
    /// The job is saved as `.inprogress/<id>.job`.
    saved: bool,
    attempts: u32,
    next_try: Instant,
}

impl Pending {
    fn done(&self) -> bool {
        self.link.is_none() && self.sidecar.is_none() && !self.spool && self.cleanup.is_empty()
    }

    /// What is left, for logs.
    fn remaining(&self) -> String {
        let mut v = Vec::new();
        if self.link.is_some() {
            v.push("final name");
        }
        if self.sidecar.is_some() {
            v.push("metadata file");
        }
        if self.spool {
            v.push("spool job");
        }
        if !self.cleanup.is_empty() {
            v.push("in-progress clean-up");
        }
        v.join(", ")
    }
}

/// The recording directory and the spool directory, and the publishing still to retry.
#[derive(Debug)]
pub struct Store {
    recording_dir: PathBuf,
    spool_dir: PathBuf,
    /// Free bytes a new recording needs (0: no check).
    min_free: u64,
    disk: Box<dyn Disk>,
    pending: VecDeque<Pending>,
    /// The last day directory known to exist.
    day_ready: Option<PathBuf>,
}

/// Civil dates and RFC 3339 text, shared with the other producers of the queue.
pub use linecord_jobs::{civil_from_days, rfc3339};

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn status_of(c: Completeness) -> RecordingStatus {
    match c {
        Completeness::Complete => RecordingStatus::Complete,
        Completeness::Incomplete => RecordingStatus::Incomplete,
        Completeness::Recovered => RecordingStatus::Recovered,
    }
}

/// Whether `link(2)` failed because the filesystem has no hard links (not a disk problem).
fn links_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::EMLINK | libc::ENOSYS)
    )
}

impl Store {
    /// A store over these directories (created if missing), with the default free-space
    /// reserve ([`DEFAULT_MIN_FREE_DISK_MIB`]).
    pub fn new(recording_dir: PathBuf, spool_dir: PathBuf) -> anyhow::Result<Self> {
        let s = Store {
            recording_dir,
            spool_dir,
            min_free: DEFAULT_MIN_FREE_DISK_MIB << 20,
            disk: Box::new(OsDisk),
            pending: VecDeque::new(),
            day_ready: None,
        };
        for d in [
            s.in_progress_dir(),
            s.spool_dir.join("new"),
            s.spool_dir.join("tmp"),
        ] {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(s)
    }

    /// Sets the free space a new recording needs on the recording filesystem (0: no check).
    pub fn with_min_free_disk(mut self, bytes: u64) -> Self {
        self.min_free = bytes;
        self
    }

    /// Uses `disk` for every file-system call (tests inject failures this way).
    pub fn with_disk(mut self, disk: Box<dyn Disk>) -> Self {
        self.disk = disk;
        self
    }

    /// Directory of files being written.
    pub fn in_progress_dir(&self) -> PathBuf {
        self.recording_dir.join(".inprogress")
    }

    /// Path of a recording while it is written.
    pub fn in_progress_path(&self, id: &str) -> PathBuf {
        self.in_progress_dir().join(format!("{id}.lcr"))
    }

    fn saved_job_path(&self, id: &str) -> PathBuf {
        self.in_progress_dir().join(format!("{id}.job"))
    }

    /// Temporary files of the recording directory live in `.inprogress/` (same filesystem,
    /// so they can be renamed into place; removed at start-up if a crash left them).
    fn tmp_path(&self, name: &str) -> PathBuf {
        self.in_progress_dir().join(format!("{name}.tmp"))
    }

    /// Final directory of a recording that started at `unix_ms`.
    pub fn day_dir(&self, unix_ms: u64) -> PathBuf {
        let (y, m, d) = civil_from_days((unix_ms / 86_400_000) as i64);
        self.recording_dir
            .join(format!("{y:04}"))
            .join(format!("{m:02}"))
            .join(format!("{d:02}"))
    }

    /// Whether a new recording may be opened: `Err` (the reason, starting with
    /// `not started:`) when the recording filesystem has less free space than the reserve.
    /// When the space cannot be read, the recording is opened (and fails on its own if the
    /// disk cannot take it).
    pub fn check_space(&self) -> Result<(), String> {
        if self.min_free == 0 {
            return Ok(());
        }
        let dir = self.in_progress_dir();
        match self.disk.free_bytes(&dir) {
            Ok(free) if free < self.min_free => Err(format!(
                "not started: {} free on the filesystem of {}, below the reserve of {} \
                 (--min-free-disk)",
                mib(free),
                self.recording_dir.display(),
                mib(self.min_free)
            )),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the free space; opening the recording anyway");
                Ok(())
            }
        }
    }

    /// Creates the day directory of a recording starting at `start_unix_ms` while there is
    /// space, so that giving the file its final name later needs none. Logged, not fatal:
    /// publishing creates it again if needed.
    pub fn prepare_day_dir(&mut self, start_unix_ms: u64) {
        let dir = self.day_dir(start_unix_ms);
        if self.day_ready.as_ref() == Some(&dir) {
            return;
        }
        match self.disk.create_dir_all(&dir) {
            Ok(()) => self.day_ready = Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the day directory yet; tried again when the recording ends");
            }
        }
    }

    /// Removes the in-progress file of recording `id` (its creation or header failed, or
    /// nothing of it is worth keeping). A missing file is fine; any other error is logged
    /// (the next start-up's recovery deals with the file).
    pub fn discard_in_progress(&self, id: &str) {
        let path = self.in_progress_path(id);
        match self.disk.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot remove the file of a failed recording; the next start-up recovers it");
            }
        }
    }

    /// Removes a temporary file whose write or rename failed.
    fn discard_tmp(&self, tmp: &Path) {
        match self.disk.remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(file = %tmp.display(), error = %e, "cannot remove a temporary file; the next start-up removes it");
            }
        }
    }

    /// Writes `bytes` to `tmp`, fsyncs, renames it to `dst` and fsyncs `dst`'s directory.
    /// On failure the temporary file is removed. A failed directory fsync is logged: the
    /// file is in place by then (reporting it as not written would duplicate it).
    fn write_atomic(&self, tmp: &Path, dst: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        if let Err(e) = self.disk.write_file(tmp, bytes) {
            self.discard_tmp(tmp);
            return Err(StoreError::new("writing", tmp, e));
        }
        if let Err(e) = self.disk.rename(tmp, dst) {
            self.discard_tmp(tmp);
            return Err(StoreError::new("renaming into place", dst, e));
        }
        if let Some(dir) = dst.parent() {
            if let Err(e) = self.disk.sync_dir(dir) {
                tracing::error!(dir = %dir.display(), file = %dst.display(), error = %e, "file written, but syncing its directory failed: it may not survive a power loss");
            }
        }
        Ok(())
    }

    /// Puts a job into `<spool-dir>/new/` atomically (through `<spool-dir>/tmp/`).
    fn spool(&self, id: &str, job: &[u8]) -> Result<PathBuf, StoreError> {
        let new = self.spool_dir.join("new");
        let name = linecord_jobs::job_file_name(now_unix_ms(), id).map_err(|e| {
            StoreError::new(
                "naming the job in",
                &new,
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            )
        })?;
        let tmp = self.spool_dir.join("tmp").join(format!("{name}.tmp"));
        let dst = new.join(name);
        self.write_atomic(&tmp, &dst, job)?;
        Ok(dst)
    }

    /// Gives the in-progress file `from` its final name `dst` (a hard link; a rename where
    /// the filesystem has no links). Done already (same file) counts as done.
    fn link_final(&self, from: &Path, dst: &Path, p: &mut Pending) -> Result<(), StoreError> {
        let dir = dst.parent().unwrap_or(&self.recording_dir);
        self.disk
            .create_dir_all(dir)
            .map_err(|e| StoreError::new("creating", dir, e))?;
        match self.disk.hard_link(from, dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match self.disk.same_file(from, dst) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(StoreError::new(
                            "linking (another file has the name)",
                            dst,
                            e,
                        ))
                    }
                    Err(e) => return Err(StoreError::new("comparing with", dst, e)),
                }
            }
            Err(e) if links_unsupported(&e) => {
                // A move leaves nothing in .inprogress/ to recover the job from if the
                // recorder dies before spooling it: save the job there first, or wait.
                self.save_job(p);
                if p.spool && !p.saved {
                    return Err(StoreError::new(
                        "saving the job before moving the recording (no hard links here)",
                        &self.saved_job_path(&p.id),
                        io::Error::other("the job could not be saved"),
                    ));
                }
                self.disk
                    .rename(from, dst)
                    .map_err(|e| StoreError::new("moving the recording to", dst, e))?;
            }
            Err(e) => return Err(StoreError::new("linking the recording to", dst, e)),
        }
        if let Err(e) = self.disk.sync_dir(dir) {
            tracing::error!(dir = %dir.display(), file = %dst.display(), error = %e, "recording in place, but syncing its directory failed: the name may not survive a power loss");
        }
        Ok(())
    }

    /// Runs the steps of `p` still to do, in order; stops at a link or spool failure (the
    /// steps after depend on it). Returns whether everything is done. Each failure is
    /// logged with its path.
    fn advance(&self, p: &mut Pending) -> bool {
        if let Some((from, dst)) = p.link.clone() {
            match self.link_final(&from, &dst, p) {
                Ok(()) => p.link = None,
                Err(e) => {
                    tracing::error!(recording = %p.id, error = %e, attempt = p.attempts + 1, "cannot give the recording its final name; it stays in .inprogress/ and is retried");
                    return false;
                }
            }
        }
        if let Some(side) = &p.sidecar {
            let tmp = self.tmp_path(&format!("{}.json", p.id));
            match self.write_atomic(&tmp, side, &p.job) {
                Ok(()) => p.sidecar = None,
                Err(e) => {
                    tracing::error!(recording = %p.id, error = %e, attempt = p.attempts + 1, "cannot write the metadata file beside the recording; the job is spooled anyway and the file retried");
                }
            }
        }
        if p.spool {
            match self.spool(&p.id, &p.job) {
                Ok(path) => {
                    p.spool = false;
                    if p.attempts > 0 {
                        tracing::info!(recording = %p.id, job = %path.display(), attempts = p.attempts + 1, "recording job spooled after retrying");
                    }
                }
                Err(e) => {
                    tracing::error!(recording = %p.id, error = %e, attempt = p.attempts + 1, "cannot spool the recording job; retried until it is");
                    return false;
                }
            }
        }
        let before = p.cleanup.len();
        p.cleanup.retain(|path| match self.disk.remove_file(path) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(recording = %p.id, file = %path.display(), error = %e, "job spooled, but the in-progress name cannot be removed; retried (a restart before then spools the job again)");
                true
            }
        });
        if p.cleanup.len() < before {
            let dir = self.in_progress_dir();
            if let Err(e) = self.disk.sync_dir(&dir) {
                tracing::error!(dir = %dir.display(), error = %e, "syncing the in-progress directory failed");
            }
        }
        p.done()
    }

    /// Saves the job of `p` as `.inprogress/<id>.job` so that it survives a restart while it
    /// cannot be spooled (best effort: the recording disk may be full too).
    fn save_job(&self, p: &mut Pending) {
        if p.saved || !p.spool {
            return;
        }
        let path = self.saved_job_path(&p.id);
        let tmp = self.tmp_path(&format!("{}.job", p.id));
        match self.write_atomic(&tmp, &path, &p.job) {
            Ok(()) => {
                p.saved = true;
                if !p.cleanup.contains(&path) {
                    p.cleanup.push(path);
                }
            }
            Err(e) => {
                let has_file = p
                    .cleanup
                    .iter()
                    .any(|c| c.extension().is_some_and(|x| x == "lcr"));
                let note = if has_file {
                    "kept in memory; a restart before it is spooled rebuilds it from the file"
                } else {
                    "kept in memory only: it is lost if the recorder stops before it can be spooled"
                };
                tracing::error!(recording = %p.id, error = %e, "cannot save the unspooled job; {note}");
            }
        }
    }

    /// Runs `p` now; what cannot be done yet is saved and queued for retrying. Returns
    /// whether the job is spooled and whether the file (if any) has its final name.
    fn publish(&mut self, mut p: Pending) -> (bool, bool) {
        if self.advance(&mut p) {
            return (true, true);
        }
        let done = (!p.spool, p.link.is_none());
        self.save_job(&mut p);
        p.attempts = 1;
        p.next_try = Instant::now() + RETRY_FIRST;
        self.enqueue(p);
        done
    }

    fn enqueue(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            if let Some(old) = self.pending.pop_front() {
                self.give_up(&old, "too many jobs waiting to be retried");
            }
        }
        self.pending.push_back(p);
    }

    fn give_up(&self, p: &Pending, why: &str) {
        let lcr = self.in_progress_path(&p.id);
        if p.spool && !(p.saved || p.link.is_some() || lcr.exists()) {
            // Nothing on disk to recover it from: the log is all that is left of it.
            tracing::error!(
                recording = %p.id,
                job = %String::from_utf8_lossy(&p.job),
                "giving up retrying ({why}): the job is LOST"
            );
            return;
        }
        let fate = if p.spool {
            "left in .inprogress/ for the next start-up's recovery"
        } else {
            "the job is spooled; only these steps are left undone"
        };
        tracing::error!(
            recording = %p.id,
            remaining = %p.remaining(),
            "giving up retrying ({why}): {fate}"
        );
    }

    /// Retries the publishing steps that failed and are due at `now` (each with its own
    /// back-off). Returns how many recordings are still waiting. Call it every second or so.
    pub fn retry_pending(&mut self, now: Instant) -> usize {
        for _ in 0..self.pending.len() {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if p.next_try > now {
                self.pending.push_back(p);
                continue;
            }
            if self.advance(&mut p) {
                continue;
            }
            self.save_job(&mut p);
            p.attempts = p.attempts.saturating_add(1);
            let backoff = RETRY_FIRST
                .saturating_mul(1u32 << p.attempts.min(16))
                .min(RETRY_MAX);
            p.next_try = now + backoff;
            self.pending.push_back(p);
        }
        self.pending.len()
    }

    /// Recordings whose publishing is waiting for a retry.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// At shutdown: tries every waiting step once more, then logs what is left (and where it
    /// will be recovered from).
    pub fn shutdown(&mut self) {
        for p in self.pending.iter_mut() {
            p.next_try = Instant::now();
        }
        self.retry_pending(Instant::now());
        for p in std::mem::take(&mut self.pending) {
            self.give_up(&p, "the recorder is stopping");
        }
    }

    /// Finishes a recording written through `file`: footer, fsync, final name, metadata,
    /// job (see the module documentation). Never fails: whatever cannot be done now is
    /// logged and retried, and the result says how it went.
    pub fn finish(&mut self, file: Option<&File>, r: &FinishedRecording, fsync: bool) -> Published {
        let id = r.header.recording_id.clone();
        let path = self.in_progress_path(&id);
        let end = now_unix_ms();
        let written: u64 = r.streams.iter().map(|s| s.packets).sum();
        let file = match (file, &r.error) {
            (Some(f), None) => f,
            (Some(f), Some(_)) if written > 0 => f,
            (file, error) => {
                let error = error
                    .clone()
                    .unwrap_or_else(|| "the recording file was never opened".into());
                if file.is_some() {
                    // Only the header (and maybe events) got written: nothing to keep.
                    self.discard_in_progress(&id);
                }
                let job = recording_job(
                    &r.header,
                    None,
                    RecordingStatus::Failed,
                    &r.streams,
                    r.dropped,
                    end,
                    Some(error.clone()),
                );
                let (spooled, _) = self.publish(Pending {
                    id: id.clone(),
                    job: encode_job(&job),
                    link: None,
                    sidecar: None,
                    spool: true,
                    cleanup: Vec::new(),
                    saved: false,
                    attempts: 0,
                    next_try: Instant::now(),
                });
                return Published {
                    status: RecordingStatus::Failed,
                    file: None,
                    in_place: false,
                    spooled,
                    error: Some(error),
                };
            }
        };
        let mut error = r.error.clone();
        if error.is_some() {
            // A failed write may have left part of a block after the last complete one.
            if let Err(e) = self.disk.set_len(file, &path, r.data_end) {
                tracing::error!(file = %path.display(), error = %e, "cannot cut the torn write off the failed recording; readers skip it");
            }
        }
        let footer = Footer {
            completeness: if r.dropped > 0 || error.is_some() {
                Completeness::Incomplete
            } else {
                Completeness::Complete
            },
            end_unix_ms: end,
            packets_lost: r.dropped,
            index: r.index.clone(),
            streams: r.streams.clone(),
        };
        let mut bytes = Vec::new();
        format::encode_footer(&footer, &mut bytes);
        if let Err(e) = self.disk.write_at(file, &path, &bytes, r.data_end) {
            tracing::error!(file = %path.display(), error = %e, "the footer does not fit: the file is kept without one (readers recover its complete blocks)");
            if let Err(e) = self.disk.set_len(file, &path, r.data_end) {
                tracing::error!(file = %path.display(), error = %e, "cannot cut the partial footer off; readers skip it");
            }
            error.get_or_insert_with(|| format!("writing the footer of {}: {e}", path.display()));
        }
        if fsync {
            if let Err(e) = self.disk.sync_file(file, &path) {
                tracing::error!(file = %path.display(), error = %e, "fsync of the finished recording failed");
                error.get_or_insert_with(|| format!("fsync of {}: {e}", path.display()));
            }
        }
        let status = if error.is_some() {
            RecordingStatus::Partial
        } else {
            status_of(footer.completeness)
        };
        let dst = self
            .day_dir(r.header.start_unix_ms)
            .join(format!("{id}.lcr"));
        let job = recording_job(
            &r.header,
            Some(&dst),
            status,
            &r.streams,
            r.dropped,
            end,
            error.clone(),
        );
        let (spooled, in_place) =
            self.publish(self.file_steps(&id, encode_job(&job), &path, &dst, None));
        Published {
            status,
            file: Some(dst),
            in_place,
            spooled,
            error,
        }
    }

    /// The publishing steps of a recording with a file.
    fn file_steps(
        &self,
        id: &str,
        job: Vec<u8>,
        in_progress: &Path,
        dst: &Path,
        saved: Option<PathBuf>,
    ) -> Pending {
        let mut cleanup = vec![in_progress.to_owned()];
        let is_saved = saved.is_some();
        cleanup.extend(saved);
        Pending {
            id: id.to_owned(),
            job,
            link: Some((in_progress.to_owned(), dst.to_owned())),
            sidecar: Some(dst.with_extension("json")),
            spool: true,
            cleanup,
            saved: is_saved,
            attempts: 0,
            next_try: Instant::now(),
        }
    }

    /// Start-up recovery (call before any recording starts): finishes every file a previous
    /// run left in progress and spools every job it left unspooled. Returns the ids whose job
    /// was spooled; see [`Store::recover_report`].
    pub fn recover(&mut self) -> Vec<String> {
        let report = self.recover_report();
        if !report.pending.is_empty() || !report.left.is_empty() {
            tracing::error!(
                pending = report.pending.len(),
                left = report.left.len(),
                "start-up recovery could not finish everything; pending jobs are retried, files left are tried at the next start"
            );
        }
        report.recovered
    }

    /// [`Store::recover`] with the details: removes temporary files left by a crash,
    /// recovers each `.inprogress/<id>.lcr` (every complete block kept; a footer marked
    /// `recovered` when the disk takes it, the file kept without one otherwise), and spools
    /// each saved `.inprogress/<id>.job`. What cannot be spooled now is retried.
    pub fn recover_report(&mut self) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        let dir = self.in_progress_dir();
        let entries = match self.disk.list(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot list the in-progress directory; nothing recovered");
                return report;
            }
        };
        let ext = |p: &Path| p.extension().and_then(|x| x.to_str()).map(str::to_owned);
        let stem = |p: &Path| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned()
        };
        let mut lcrs = Vec::new();
        let mut jobs = Vec::new();
        for path in entries {
            match ext(&path).as_deref() {
                Some("tmp") => match self.disk.remove_file(&path) {
                    Ok(()) => report.removed_tmp += 1,
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot remove a temporary file left by a crash");
                    }
                },
                Some("lcr") => lcrs.push(path),
                Some("job") => jobs.push(path),
                _ => {}
            }
        }
        let ids: Vec<String> = lcrs.iter().chain(&jobs).map(|p| stem(p)).collect();
        report.removed_tmp += self.remove_spool_tmp(&ids);
        lcrs.sort();
        jobs.sort();
        for path in &lcrs {
            let saved = jobs.iter().find(|j| stem(j) == stem(path));
            self.recover_file(path, saved.map(PathBuf::as_path), &mut report);
        }
        for path in &jobs {
            let id = stem(path);
            if lcrs.iter().any(|l| stem(l) == id) {
                continue;
            }
            self.recover_saved_job(path, &id, &mut report);
        }
        report
    }

    /// Removes the recorder's temporary files in `<spool-dir>/tmp/` (`*-<id>.json.tmp` of a
    /// recording in progress) and anything there older than [`STALE_SPOOL_TMP`].
    fn remove_spool_tmp(&self, ids: &[String]) -> usize {
        let dir = self.spool_dir.join("tmp");
        let entries = match self.disk.list(&dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the spool's tmp directory");
                return 0;
            }
        };
        let stale_before = SystemTime::now()
            .checked_sub(STALE_SPOOL_TMP)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut n = 0;
        for path in entries {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let ours = ids
                .iter()
                .any(|id| name.ends_with(&format!("-{id}.json.tmp")));
            let stale = self.disk.modified(&path).is_ok_and(|t| t < stale_before);
            if !(ours || stale) {
                continue;
            }
            match self.disk.remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot remove a temporary spool file");
                }
            }
        }
        n
    }

    /// Moves an unrecoverable file into `.failed/`, saying what actually happened.
    fn quarantine(&self, path: &Path, why: &str, report: &mut RecoveryReport) {
        let failed = self.recording_dir.join(".failed");
        let dst = failed.join(path.file_name().unwrap_or_default());
        let moved = self
            .disk
            .create_dir_all(&failed)
            .map_err(|e| StoreError::new("creating", &failed, e))
            .and_then(|()| {
                self.disk
                    .rename(path, &dst)
                    .map_err(|e| StoreError::new("moving to", &dst, e))
            });
        match moved {
            Ok(()) => {
                tracing::error!(file = %path.display(), reason = %why, moved_to = %dst.display(), "cannot recover recording; moved aside");
                report.quarantined.push(dst);
            }
            Err(e) => {
                tracing::error!(file = %path.display(), reason = %why, error = %e, "cannot recover recording, and cannot move it aside: left in place");
                report.left.push(path.to_owned());
            }
        }
    }

    /// A saved job (`.inprogress/<id>.job`) and its validity.
    fn read_saved_job(&self, path: &Path, id: &str) -> Option<Vec<u8>> {
        let bytes = match self.disk.read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read a saved job");
                return None;
            }
        };
        match linecord_jobs::parse(&bytes) {
            Ok(linecord_jobs::Job::Recording(j)) if j.recording_id == id => Some(bytes),
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "not this recording's job".into(),
                };
                tracing::error!(file = %path.display(), reason = %why, "ignoring an invalid saved job");
                None
            }
        }
    }

    fn recover_saved_job(&mut self, path: &Path, id: &str, report: &mut RecoveryReport) {
        let Some(job) = self.read_saved_job(path, id) else {
            // Nothing valid to spool; keep the file for inspection.
            self.quarantine(path, "invalid saved job", report);
            return;
        };
        let (spooled, _) = self.publish(Pending {
            id: id.to_owned(),
            job,
            link: None,
            sidecar: None,
            spool: true,
            cleanup: vec![path.to_owned()],
            saved: true,
            attempts: 0,
            next_try: Instant::now(),
        });
        if spooled {
            tracing::info!(recording = %id, "spooled a job saved by a previous run");
            report.recovered.push(id.to_owned());
        } else {
            report.pending.push(id.to_owned());
        }
    }

    /// Recovers `.inprogress/<id>.lcr`; `saved` is its `.inprogress/<id>.job`, if any.
    fn recover_file(&mut self, path: &Path, saved: Option<&Path>, report: &mut RecoveryReport) {
        let name_id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let bytes = match self.disk.read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read an interrupted recording; left for the next start");
                report.left.push(path.to_owned());
                return;
            }
        };
        if bytes.is_empty() {
            // Created, then the recorder died (or the disk refused the header): nothing to
            // keep.
            match self.disk.remove_file(path) {
                Ok(()) => {
                    tracing::warn!(file = %path.display(), "removed an empty recording file (nothing was written before the interruption)");
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot remove an empty recording file");
                    report.left.push(path.to_owned());
                }
            }
            return;
        }
        let rec = match Recording::from_bytes(bytes) {
            Ok(r) => r,
            Err(e) => return self.quarantine(path, &format!("unreadable: {e}"), report),
        };
        let id = rec.header.recording_id.clone();
        if id != name_id {
            return self.quarantine(
                path,
                &format!("file name does not match its recording id {id}"),
                report,
            );
        }
        let saved_job = saved.and_then(|s| self.read_saved_job(s, &id));
        let footer = match (&rec.footer, rec.is_intact()) {
            // The footer made it but publishing did not: publish as it is.
            (Some(f), true) => f.clone(),
            _ => self.write_recovery_footer(path, &rec),
        };
        let dst = self
            .day_dir(rec.header.start_unix_ms)
            .join(format!("{id}.lcr"));
        let job = match saved_job {
            // The job the run before decided on (e.g. `partial`, with its error).
            Some(job) => job,
            None => encode_job(&recording_job(
                &rec.header,
                Some(&dst),
                status_of(footer.completeness),
                &footer.streams,
                footer.packets_lost,
                footer.end_unix_ms,
                None,
            )),
        };
        let p = self.file_steps(&id, job, path, &dst, saved.map(Path::to_owned));
        if self.publish(p).0 {
            tracing::info!(file = %path.display(), recording = %id, to = %dst.display(), "recovered an interrupted recording");
            report.recovered.push(id);
        } else {
            report.pending.push(id);
        }
    }

    /// Cuts an interrupted file after its last complete block and appends a `recovered`
    /// footer. If the footer does not fit, the file is cut back and kept without one (its
    /// blocks are all readers need). Returns the footer (written or not) for the job.
    fn write_recovery_footer(&self, path: &Path, rec: &Recording) -> Footer {
        // The end is the last record's time, not the time of this restart.
        let last_us = rec.blocks.iter().map(|b| b.last_us).max().unwrap_or(0);
        let end = rec.header.start_unix_ms.saturating_add(last_us / 1000);
        let footer = recovery_footer(rec, end);
        let file = match self.disk.open_rw(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot open the interrupted recording to add its footer; published without one");
                return footer;
            }
        };
        let mut bytes = Vec::new();
        format::encode_footer(&footer, &mut bytes);
        let written = self
            .disk
            .write_at(&file, path, &bytes, rec.data_end)
            .and_then(|()| {
                self.disk
                    .set_len(&file, path, rec.data_end + bytes.len() as u64)
            });
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "the recovery footer does not fit: the file is kept without one (readers recover its complete blocks)");
            if let Err(e) = self.disk.set_len(&file, path, rec.data_end) {
                tracing::error!(file = %path.display(), error = %e, "cannot cut the interrupted recording back to its last complete block; readers skip the rest");
            }
        }
        if let Err(e) = self.disk.sync_file(&file, path) {
            tracing::error!(file = %path.display(), error = %e, "fsync of the recovered recording failed");
        }
        footer
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode_job(job: &RecordingJob) -> Vec<u8> {
    match serde_json::to_vec_pretty(job) {
        Ok(b) => b,
        // Plain structs with string keys always serialize; keep something valid anyway.
        Err(e) => {
            tracing::error!(recording = %job.recording_id, error = %e, "cannot encode the job");
            Vec::new()
        }
    }
}

/// The processor job (and metadata file) of a recording; see `docs/processor-queue.md`.
pub fn recording_job(
    h: &FileHeader,
    file: Option<&Path>,
    status: RecordingStatus,
    stats: &[StreamStats],
    packets_lost: u64,
    end_unix_ms: u64,
    error: Option<String>,
) -> RecordingJob {
    let streams = h
        .streams
        .iter()
        .map(|s| {
            let st = stats
                .iter()
                .find(|x| x.stream == s.id)
                .copied()
                .unwrap_or_default();
            RecordingStream {
                id: s.id,
                party: s.party,
                media_index: s.media_index,
                component: match s.component {
                    Component::Rtp => JobComponent::Rtp,
                    Component::Rtcp => JobComponent::Rtcp,
                },
                source: s.source.clone(),
                destination: s.destination.clone(),
                codecs: s
                    .codecs
                    .iter()
                    .map(|c| Codec {
                        payload_type: c.payload_type,
                        name: c.name.clone(),
                        clock_rate: c.clock_rate,
                        channels: c.channels,
                    })
                    .collect(),
                packets: st.packets,
                payload_bytes: st.payload_bytes,
                lost: st.lost,
                jitter: st.jitter,
                first_us: st.first_us,
                last_us: st.last_us,
            }
        })
        .collect();
    RecordingJob {
        schema: RecordingSchema,
        job_type: RecordingType,
        recording_id: h.recording_id.clone(),
        file: file.map(|p| p.display().to_string()),
        call_id: h.call_id.clone(),
        parties: h
            .parties
            .iter()
            .enumerate()
            .map(|(i, p)| RecordingParty {
                index: i as u8,
                tag: p.tag.clone(),
                label: p.label.clone(),
            })
            .collect(),
        metadata: h.metadata.clone(),
        start: rfc3339(h.start_unix_ms),
        start_unix_ms: h.start_unix_ms,
        end: rfc3339(end_unix_ms),
        end_unix_ms,
        duration_ms: end_unix_ms.saturating_sub(h.start_unix_ms),
        status,
        complete: status == RecordingStatus::Complete,
        packets_lost,
        streams,
        error,
        recorder: RecorderInfo {
            version: env!("CARGO_PKG_VERSION").into(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::recording::disk::faulty::{FaultyDisk, Op};
    use linecord_recfile::block::{seal, BlockBuilder};
    use linecord_recfile::{CodecInfo, PartyInfo, RtpFields, StreamInfo};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory, removed on drop.
    pub(crate) struct Dir(pub(crate) PathBuf);

    impl Dir {
        pub(crate) fn new(tag: &str) -> Dir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "lc-store-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) const START_MS: u64 = 1_795_564_800_000;

    pub(crate) fn header(id: &str) -> FileHeader {
        FileHeader {
            recording_id: id.into(),
            call_id: format!("call-{id}"),
            start_unix_ms: START_MS,
            metadata: None,
            parties: vec![PartyInfo::default(), PartyInfo::default()],
            streams: vec![StreamInfo {
                id: 0,
                party: 0,
                media_index: 0,
                component: Component::Rtp,
                source: "192.0.2.1:4000".into(),
                destination: "198.18.0.1:30000".into(),
                codecs: vec![CodecInfo {
                    payload_type: 0,
                    name: "PCMU".into(),
                    clock_rate: 8000,
                    channels: 1,
                }],
            }],
        }
    }

    /// A block of `n` packets of stream 0 (160-byte payloads), numbered from `first`.
    pub(crate) fn block(first: u16, n: u16) -> BlockBuilder {
        let mut b = BlockBuilder::with_capacity(12 * 1024);
        fill(&mut b, first, n);
        b
    }

    /// Appends `n` packets of stream 0 (160-byte payloads), numbered from `first`.
    pub(crate) fn fill(b: &mut BlockBuilder, first: u16, n: u16) {
        for seq in first..first + n {
            let f = RtpFields {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: u32::from(seq) * 160,
                ssrc: 7,
            };
            let payload: Vec<u8> = (0..160u32).map(|i| (i as u8) ^ (seq as u8)).collect();
            b.push_packet(0, u64::from(seq) * 20_000, Some(&f), &payload);
        }
    }

    fn store(dir: &Dir, disk: &FaultyDisk) -> Store {
        Store::new(dir.0.join("rec"), dir.0.join("spool"))
            .expect("store")
            .with_min_free_disk(0)
            .with_disk(Box::new(disk.clone()))
    }

    /// Writes `.inprogress/<id>.lcr`: the header, `blocks` blocks of 10 packets, then
    /// `tail` garbage bytes (a torn write). Returns the open file and what the writer would
    /// know.
    fn in_progress(s: &Store, id: &str, blocks: u16, tail: usize) -> (File, FinishedRecording) {
        let h = header(id);
        let mut bytes = Vec::new();
        format::encode_header(&h, &mut bytes);
        let mut index = Vec::new();
        for i in 0..blocks {
            let b = block(i * 10, 10);
            index.push(BlockIndexEntry {
                offset: bytes.len() as u64,
                first_us: b.first_us().unwrap_or(0),
                last_us: b.last_us().unwrap_or(0),
                records: b.records(),
            });
            seal(&b, &mut bytes);
        }
        let data_end = bytes.len() as u64;
        bytes.extend(std::iter::repeat_n(0xa5u8, tail));
        let path = s.in_progress_path(id);
        std::fs::write(&path, &bytes).expect("write");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        let streams = vec![StreamStats {
            stream: 0,
            packets: u64::from(blocks) * 10,
            payload_bytes: u64::from(blocks) * 1600,
            first_us: 0,
            last_us: u64::from(blocks) * 200_000,
            ..Default::default()
        }];
        let done = FinishedRecording {
            header: h,
            index,
            streams,
            reason: StopReason::Deleted,
            dropped: 0,
            error: None,
            data_end,
        };
        (file, done)
    }

    pub(crate) fn jobs(spool: &Path) -> Vec<RecordingJob> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(spool.join("new"))
            .expect("spool/new")
            .flatten()
        {
            let bytes = std::fs::read(e.path()).expect("job");
            match linecord_jobs::parse(&bytes).expect("a valid job") {
                linecord_jobs::Job::Recording(j) => out.push(j),
                other => panic!("not a recording job: {other:?}"),
            }
        }
        out
    }

    /// Every `*.tmp` file under `root`.
    pub(crate) fn tmp_files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "tmp") {
                    out.push(p);
                }
            }
        }
        out
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn later() -> Instant {
        Instant::now() + RETRY_MAX + Duration::from_secs(1)
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_782), (2026, 11, 25));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(rfc3339(1_795_564_800_123), "2026-11-25T00:00:00.123Z");
    }

    #[test]
    fn a_finished_recording_gets_its_name_metadata_and_job_and_leaves_nothing_behind() {
        let d = Dir::new("ok");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, r) = in_progress(&s, "r1", 3, 0);
        let out = s.finish(Some(&f), &r, true);
        assert_eq!(out.status, RecordingStatus::Complete);
        assert!(out.spooled && out.in_place);
        let file = out.file.expect("named");
        assert_eq!(file, s.day_dir(START_MS).join("r1.lcr"));
        let rec = Recording::open(&file).expect("readable");
        assert!(rec.is_intact());
        assert!(file.with_extension("json").is_file(), "metadata beside it");
        let jobs = jobs(&d.0.join("spool"));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].file.as_deref(), Some(file.to_str().unwrap()));
        assert_eq!(jobs[0].streams[0].packets, 30);
        assert!(names(&s.in_progress_dir()).is_empty());
        assert!(tmp_files(&d.0).is_empty());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn without_hard_links_the_job_is_saved_before_the_move_or_the_move_waits() {
        let d = Dir::new("nolinks");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        // No hard links on this filesystem; the spool refuses the first job, so only the
        // saved .job could bring it back after a crash.
        disk.fail(Op::HardLink, "r9.lcr", libc::EPERM);
        disk.fail_times(Op::Rename, "new/", libc::ENOSPC, 1);
        let (f, r) = in_progress(&s, "r9", 2, 0);
        let out = s.finish(Some(&f), &r, true);
        assert!(!out.spooled);
        let file = s.day_dir(START_MS).join("r9.lcr");
        assert!(file.is_file(), "moved to its final name");
        assert!(
            s.saved_job_path("r9").is_file(),
            "the job waits in .inprogress/ for a restart"
        );
        assert!(disk.calls(Op::Rename, "r9.lcr") >= 1, "moved, not linked");
        assert_eq!(s.retry_pending(later()), 0);
        assert_eq!(jobs(&d.0.join("spool")).len(), 1);
        assert!(!s.saved_job_path("r9").exists(), "cleaned once spooled");

        // If even the .job cannot be saved, the recording is not moved: it stays where the
        // next start-up's recovery finds it.
        let disk = FaultyDisk::default();
        let d2 = Dir::new("nolinks-full");
        let mut s = store(&d2, &disk);
        disk.fail(Op::HardLink, "r10.lcr", libc::EPERM);
        disk.fail(Op::WriteFile, "r10.job", libc::ENOSPC);
        let (f, r) = in_progress(&s, "r10", 2, 0);
        let out = s.finish(Some(&f), &r, true);
        assert!(!out.spooled);
        assert!(
            s.in_progress_path("r10").is_file(),
            "kept in .inprogress/ while its job cannot be kept anywhere"
        );
    }

    #[test]
    fn a_metadata_file_the_disk_refuses_does_not_hold_up_the_job_and_is_retried() {
        let d = Dir::new("sidecar");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, r) = in_progress(&s, "r2", 2, 0);
        disk.fail(Op::WriteFile, ".inprogress/r2.json.tmp", libc::ENOSPC);
        let out = s.finish(Some(&f), &r, true);
        assert!(out.spooled, "the spool is another disk: the job goes out");
        assert_eq!(out.status, RecordingStatus::Complete);
        let file = out.file.expect("named");
        assert!(file.is_file());
        assert!(!file.with_extension("json").exists());
        assert_eq!(jobs(&d.0.join("spool")).len(), 1);
        assert!(tmp_files(&d.0).is_empty(), "{:?}", tmp_files(&d.0));
        assert!(names(&s.in_progress_dir()).is_empty());
        assert_eq!(s.pending(), 1, "the metadata file is retried");
        disk.heal();
        assert_eq!(s.retry_pending(later()), 0);
        assert!(file.with_extension("json").is_file());
        assert_eq!(jobs(&d.0.join("spool")).len(), 1, "the job is not repeated");
    }

    #[test]
    fn a_job_the_spool_refuses_is_saved_kept_in_progress_and_retried_until_spooled() {
        let d = Dir::new("spool");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, r) = in_progress(&s, "r3", 2, 0);
        disk.fail(Op::WriteFile, "spool/tmp", libc::ENOSPC);
        let out = s.finish(Some(&f), &r, true);
        assert!(!out.spooled);
        let file = out.file.expect("named");
        assert!(file.is_file(), "the file has its final name already");
        assert!(jobs(&d.0.join("spool")).is_empty());
        assert_eq!(
            names(&s.in_progress_dir()),
            ["r3.job", "r3.lcr"],
            "kept for a restart"
        );
        assert!(tmp_files(&d.0).is_empty(), "{:?}", tmp_files(&d.0));
        assert_eq!(s.retry_pending(Instant::now()), 1, "not due yet");
        let tries = disk.calls(Op::WriteFile, "spool/tmp");
        assert_eq!(s.retry_pending(later()), 1, "still failing");
        assert_eq!(disk.calls(Op::WriteFile, "spool/tmp"), tries + 1);
        disk.heal();
        // After the back-off of the last failed attempt.
        assert_eq!(s.retry_pending(later() + RETRY_MAX * 2), 0);
        let jobs = jobs(&d.0.join("spool"));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, RecordingStatus::Complete);
        assert!(names(&s.in_progress_dir()).is_empty());
        assert!(file.is_file());
    }

    #[test]
    fn an_unspooled_partial_job_survives_a_restart_as_partial() {
        let d = Dir::new("restart");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, mut r) = in_progress(&s, "r4", 2, 100);
        r.error = Some("write failed at offset 9999: No space left on device".into());
        r.dropped = 17;
        disk.fail(Op::WriteFile, "spool/tmp", libc::ENOSPC);
        let out = s.finish(Some(&f), &r, true);
        assert_eq!(out.status, RecordingStatus::Partial);
        assert!(!out.spooled);
        drop(s); // the recorder dies before the spool takes the job
        let mut s2 = store(&d, &FaultyDisk::default());
        let report = s2.recover_report();
        assert_eq!(report.recovered, ["r4"]);
        let jobs = jobs(&d.0.join("spool"));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, RecordingStatus::Partial);
        assert_eq!(jobs[0].packets_lost, 17);
        assert!(jobs[0].error.as_deref().unwrap_or("").contains("No space"));
        assert!(names(&s2.in_progress_dir()).is_empty());
        assert!(tmp_files(&d.0).is_empty());
    }

    #[test]
    fn a_link_the_disk_refuses_keeps_the_file_in_progress_and_is_retried() {
        let d = Dir::new("link");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, r) = in_progress(&s, "r5", 1, 0);
        disk.fail(Op::HardLink, "r5.lcr", libc::ENOSPC);
        let out = s.finish(Some(&f), &r, true);
        assert!(!out.spooled && !out.in_place);
        assert!(
            jobs(&d.0.join("spool")).is_empty(),
            "no job for a file not in place"
        );
        assert!(s.in_progress_path("r5").is_file());
        disk.heal();
        assert_eq!(s.retry_pending(later()), 0);
        assert_eq!(jobs(&d.0.join("spool")).len(), 1);
        assert!(s.day_dir(START_MS).join("r5.lcr").is_file());
        assert!(names(&s.in_progress_dir()).is_empty());
    }

    #[test]
    fn without_hard_links_the_file_is_renamed() {
        let d = Dir::new("nolink");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, r) = in_progress(&s, "r6", 1, 0);
        disk.fail(Op::HardLink, "r6.lcr", libc::EPERM);
        let out = s.finish(Some(&f), &r, true);
        assert!(out.spooled);
        assert!(out.file.expect("named").is_file());
        assert!(names(&s.in_progress_dir()).is_empty());
    }

    #[test]
    fn a_partial_recording_is_cut_to_its_complete_blocks_and_keeps_its_footer_if_it_fits() {
        let d = Dir::new("partial");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, mut r) = in_progress(&s, "r7", 3, 5000);
        r.error = Some("write failed: No space left on device".into());
        r.dropped = 12;
        let out = s.finish(Some(&f), &r, true);
        assert_eq!(out.status, RecordingStatus::Partial);
        let rec = Recording::open(&out.file.expect("named")).expect("readable");
        assert!(rec.is_intact(), "torn tail cut, footer appended");
        assert_eq!(rec.blocks.len(), 3);
        assert_eq!(rec.completeness(), Some(Completeness::Incomplete));
        let j = &jobs(&d.0.join("spool"))[0];
        assert_eq!(
            (j.status, j.packets_lost, j.complete),
            (RecordingStatus::Partial, 12, false)
        );
        assert_eq!(j.error, r.error);
    }

    #[test]
    fn a_partial_recording_without_room_for_a_footer_is_kept_without_one() {
        let d = Dir::new("nofooter");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, mut r) = in_progress(&s, "r8", 3, 700);
        r.error = Some("write failed: No space left on device".into());
        disk.fail(Op::WriteAt, "r8.lcr", libc::ENOSPC);
        let out = s.finish(Some(&f), &r, true);
        assert_eq!(out.status, RecordingStatus::Partial);
        assert_eq!(out.error, r.error, "the first error is the one reported");
        assert!(out.spooled);
        let file = out.file.expect("named");
        assert_eq!(std::fs::metadata(&file).expect("file").len(), r.data_end);
        let rec = Recording::open(&file).expect("readable");
        assert!(rec.footer.is_none());
        assert_eq!((rec.blocks.len(), rec.tail_bytes), (3, 0));
        assert_eq!(rec.records().expect("records").len(), 30);
    }

    #[test]
    fn a_footer_or_fsync_failure_at_the_end_makes_a_healthy_recording_partial() {
        for (op, what) in [(Op::WriteAt, "footer"), (Op::SyncFile, "fsync")] {
            let d = Dir::new("end");
            let disk = FaultyDisk::default();
            let mut s = store(&d, &disk);
            let (f, r) = in_progress(&s, "r9", 2, 0);
            disk.fail(op, "r9.lcr", libc::EIO);
            let out = s.finish(Some(&f), &r, true);
            assert_eq!(out.status, RecordingStatus::Partial, "{what}");
            assert!(out.error.as_deref().unwrap_or("").contains(what), "{out:?}");
            assert!(out.spooled);
            let rec = Recording::open(&out.file.expect("named")).expect("readable");
            assert_eq!(rec.blocks.len(), 2, "{what}");
        }
    }

    #[test]
    fn nothing_on_disk_is_a_failed_job_without_a_file_and_no_empty_file_is_left() {
        let d = Dir::new("failed");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (f, mut r) = in_progress(&s, "ra", 0, 0);
        r.error = Some("write failed at offset 0: No space left on device".into());
        r.dropped = 50;
        let out = s.finish(Some(&f), &r, true);
        assert_eq!(
            (out.status, out.file.clone()),
            (RecordingStatus::Failed, None)
        );
        assert!(!s.in_progress_path("ra").exists());
        let j = &jobs(&d.0.join("spool"))[0];
        assert_eq!(
            (j.status, j.file.clone(), j.packets_lost),
            (RecordingStatus::Failed, None, 50)
        );
        assert_eq!(j.error, r.error);
        // Never opened: the same.
        let (_, mut r) = in_progress(&s, "rb", 0, 0);
        r.error = Some("not started: 0.0 MiB free".into());
        std::fs::remove_file(s.in_progress_path("rb")).expect("rm");
        assert_eq!(s.finish(None, &r, true).status, RecordingStatus::Failed);
    }

    #[test]
    fn a_failed_rename_removes_its_temporary_file_and_names_the_path() {
        let d = Dir::new("rename");
        let disk = FaultyDisk::default();
        let s = store(&d, &disk);
        disk.fail(Op::Rename, "spool/new", libc::EIO);
        let e = s.spool("rc", b"{}").expect_err("injected");
        assert_eq!(e.op, "renaming into place");
        assert!(e.to_string().contains("spool/new"), "{e}");
        assert!(tmp_files(&d.0).is_empty());
        disk.heal();
        disk.fail(Op::WriteFile, "spool/tmp", libc::ENOSPC);
        let e = s.spool("rc", b"{}").expect_err("injected");
        assert_eq!(e.op, "writing");
        assert!(tmp_files(&d.0).is_empty(), "the empty tmp file is removed");
    }

    #[test]
    fn free_space_below_the_reserve_refuses_new_recordings() {
        let d = Dir::new("space");
        let disk = FaultyDisk::default();
        let s = store(&d, &disk).with_min_free_disk(4 << 20);
        disk.set_free(Some(3 << 20));
        let e = s.check_space().expect_err("below");
        assert!(e.starts_with("not started: 3.0 MiB free"), "{e}");
        assert!(e.contains("4.0 MiB"), "{e}");
        disk.set_free(Some(4 << 20));
        assert!(s.check_space().is_ok());
        let s = s.with_min_free_disk(0);
        disk.set_free(Some(0));
        assert!(s.check_space().is_ok(), "0 turns the check off");
    }

    #[test]
    fn recovery_cuts_the_torn_tail_adds_a_footer_spools_and_removes_temporary_files() {
        let d = Dir::new("recover");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let (_, r) = in_progress(&s, "rd", 4, 333);
        std::fs::write(s.in_progress_dir().join("rd.json.tmp"), b"").expect("tmp");
        let spool_tmp = d.0.join("spool/tmp/1795564800000-rd.json.tmp");
        std::fs::write(&spool_tmp, b"{").expect("tmp");
        let other_tmp = d.0.join("spool/tmp/1795564800000-someone-else.json.tmp");
        std::fs::write(&other_tmp, b"{").expect("tmp");
        let report = s.recover_report();
        assert_eq!(report.recovered, ["rd"]);
        assert_eq!(report.removed_tmp, 2);
        assert!(
            other_tmp.exists(),
            "a fresh tmp file of another producer is left alone"
        );
        std::fs::remove_file(&other_tmp).expect("rm");
        let j = &jobs(&d.0.join("spool"))[0];
        assert_eq!(j.status, RecordingStatus::Recovered);
        // The end is the last record's time, not the time of the restart.
        // Last packet: number 39, at 39 x 20 ms.
        assert_eq!(j.end_unix_ms, START_MS + 780);
        let rec = Recording::open(Path::new(j.file.as_deref().expect("file"))).expect("read");
        assert!(rec.is_intact());
        assert_eq!(rec.blocks.len(), 4);
        assert_eq!(rec.data_end, r.data_end);
        assert!(names(&s.in_progress_dir()).is_empty());
        assert!(tmp_files(&d.0).is_empty());
    }

    #[test]
    fn recovery_on_a_still_full_disk_spools_the_job_even_without_footer_or_metadata() {
        let d = Dir::new("fullrecover");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        in_progress(&s, "re", 2, 50);
        disk.fail(Op::WriteAt, "re.lcr", libc::ENOSPC);
        disk.fail(Op::WriteFile, ".inprogress/", libc::ENOSPC);
        let report = s.recover_report();
        assert_eq!(report.recovered, ["re"]);
        let j = &jobs(&d.0.join("spool"))[0];
        let file = PathBuf::from(j.file.clone().expect("file"));
        let rec = Recording::open(&file).expect("read");
        assert!(rec.footer.is_none());
        assert_eq!(
            (rec.blocks.len(), rec.tail_bytes),
            (2, 0),
            "cut back to its blocks"
        );
        assert!(!file.with_extension("json").exists());
        assert!(names(&s.in_progress_dir()).is_empty());
        assert!(tmp_files(&d.0).is_empty(), "{:?}", tmp_files(&d.0));
        assert_eq!(s.pending(), 1, "the metadata file is retried");
    }

    #[test]
    fn recovery_that_cannot_spool_leaves_no_half_state_and_retries() {
        let d = Dir::new("recoverspool");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        in_progress(&s, "rf", 2, 0);
        disk.fail(Op::WriteFile, "spool/tmp", libc::ENOSPC);
        let report = s.recover_report();
        assert_eq!(report.pending, ["rf"]);
        assert!(report.recovered.is_empty());
        assert!(tmp_files(&d.0).is_empty());
        assert!(
            s.in_progress_path("rf").is_file(),
            "kept until the job is out"
        );
        disk.heal();
        assert_eq!(s.retry_pending(later()), 0);
        assert_eq!(jobs(&d.0.join("spool")).len(), 1);
        assert!(names(&s.in_progress_dir()).is_empty());
    }

    #[test]
    fn recovery_quarantines_unreadable_files_and_says_when_it_cannot() {
        let d = Dir::new("quarantine");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        std::fs::write(s.in_progress_path("rg"), b"not a recording").expect("write");
        std::fs::write(s.in_progress_path("rh"), b"").expect("write");
        std::fs::write(s.in_progress_path("ri"), b"garbage too").expect("write");
        disk.fail(Op::Rename, ".failed/ri.lcr", libc::EIO);
        std::fs::write(s.in_progress_path("rj"), b"unreadable").expect("write");
        disk.fail(Op::Read, "rj.lcr", libc::EIO);
        let report = s.recover_report();
        assert_eq!(report.quarantined, [d.0.join("rec/.failed/rg.lcr")]);
        assert!(d.0.join("rec/.failed/rg.lcr").is_file());
        assert_eq!(
            report.left,
            [s.in_progress_path("ri"), s.in_progress_path("rj")],
            "a failed move is reported as such"
        );
        assert!(s.in_progress_path("ri").is_file());
        assert!(
            !s.in_progress_path("rh").exists(),
            "an empty file is removed"
        );
        assert!(jobs(&d.0.join("spool")).is_empty());
    }

    #[test]
    fn recovery_spools_a_saved_failed_job() {
        let d = Dir::new("savedjob");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        let job = recording_job(
            &header("rk"),
            None,
            RecordingStatus::Failed,
            &[],
            9,
            START_MS,
            Some("not started".into()),
        );
        std::fs::write(s.in_progress_dir().join("rk.job"), encode_job(&job)).expect("write");
        assert_eq!(s.recover_report().recovered, ["rk"]);
        assert_eq!(jobs(&d.0.join("spool")), [job]);
        assert!(names(&s.in_progress_dir()).is_empty());
    }

    #[test]
    fn the_retry_list_is_bounded() {
        let d = Dir::new("bounded");
        let disk = FaultyDisk::default();
        let mut s = store(&d, &disk);
        disk.fail(Op::WriteFile, "", libc::ENOSPC);
        let h = header("x");
        for i in 0..MAX_PENDING + 3 {
            let mut r = FinishedRecording {
                header: h.clone(),
                index: Vec::new(),
                streams: Vec::new(),
                reason: StopReason::Deleted,
                dropped: 0,
                error: Some("not started".into()),
                data_end: 0,
            };
            r.header.recording_id = format!("id{i}");
            assert!(!s.finish(None, &r, false).spooled);
        }
        assert_eq!(s.pending(), MAX_PENDING);
        assert!(tmp_files(&d.0).is_empty());
    }
}
