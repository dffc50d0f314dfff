//! The job consumer: takes jobs from a [`Queue`], applies each one to [`Storage`] and the
//! [`Repository`], and completes or fails it.
//!
//! Exactly once in effect: delivery is at least once (a crash before `complete` repeats the
//! job), and applying a job is idempotent — the file is stored under a key derived from the
//! recording id (storing again replaces it with the same file), rows are upserted by
//! `recording_id` / `event_id`, and the database commit happens before the job is
//! completed. Bad input (unparseable job, unknown schema, missing or unreadable file) fails
//! the job with the reason; a recording file readable only in part is indexed with what
//! could be read and its status says so (`damaged`, or `partial` when the recorder said
//! writing failed part-way: such a file is expected to end without a footer). The file is
//! read block by block ([`Recording::open`]) and analysed in a stream, so what ingest holds
//! in memory does not grow with the recording. Errors of the storage or the index are retried
//! ([`TRANSIENT_RETRIES`]) before the job is failed, so nothing blocks the queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use linecord_jobs::{EventJob, Job, JobError, RecordingJob, RecordingStatus};
use linecord_recfile::reader::{ReadError, Recording};

use crate::analysis::analyse;
use crate::consolidate::parse_metadata;
use crate::model::{EventRow, RecordingRow};
use crate::queue::{Delivery, Queue, QueueError};
use crate::repo::{RepoError, Repository};
use crate::storage::{is_safe_id, recording_key, Storage, StorageError};

/// Attempts at a job whose storage or index operation fails before it is failed.
pub const TRANSIENT_RETRIES: u32 = 3;
/// Pause between those attempts.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Counters of the consumer (since start), shown by `GET /v1/status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs applied and completed.
    pub jobs_processed: AtomicU64,
    /// Jobs failed (moved aside with a reason).
    pub jobs_failed: AtomicU64,
    /// Recording jobs applied.
    pub recordings: AtomicU64,
    /// Event jobs applied (duplicates included).
    pub events: AtomicU64,
    /// Recordings indexed although their file was damaged.
    pub damaged: AtomicU64,
    /// Recordings removed by retention.
    pub retention_deleted: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a job could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum JobFailure {
    /// The job is not a job this processor knows (bad JSON, unknown schema, bad field).
    #[error("{0}")]
    Job(#[from] JobError),
    /// The recording id cannot name a file.
    #[error("recording id {0:?} cannot be used as a file name")]
    BadId(String),
    /// The job's file is missing or unreadable.
    #[error("cannot read the recording file {path}: {source}")]
    File {
        /// The job's `file`.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a recording (bad header: not `.lcr`, other version, truncated).
    #[error("the recording file {path} is unreadable: {source}")]
    Unreadable {
        /// The job's `file`.
        path: String,
        /// What is wrong.
        #[source]
        source: ReadError,
    },
    /// The file holds another recording than the job names.
    #[error("the file holds recording {found:?}, the job names {expected:?}")]
    WrongFile {
        /// The job's recording id.
        expected: String,
        /// The file header's.
        found: String,
    },
    /// Storing the file failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The index failed.
    #[error("index: {0}")]
    Repo(#[from] RepoError),
}

impl JobFailure {
    /// Whether trying again may help (storage and index errors).
    pub fn is_transient(&self) -> bool {
        matches!(self, JobFailure::Storage(_) | JobFailure::Repo(_))
    }
}

/// What applying a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A recording, now in this interaction.
    Recording {
        /// Recording id.
        recording_id: String,
        /// Its interaction.
        interaction_id: String,
        /// `complete`, `damaged`, …
        status: String,
    },
    /// An event (`new` is false for a duplicate).
    Event {
        /// Event id.
        event_id: String,
        /// Whether it was new.
        new: bool,
    },
}

/// The consumer: a queue, the storage and the index.
pub struct Processor<Q: Queue> {
    queue: Q,
    storage: Arc<dyn Storage>,
    repo: Arc<dyn Repository>,
    counters: Arc<Counters>,
}

impl<Q: Queue> Processor<Q> {
    /// A consumer of `queue` storing into `storage` and indexing into `repo`.
    pub fn new(
        queue: Q,
        storage: Arc<dyn Storage>,
        repo: Arc<dyn Repository>,
        counters: Arc<Counters>,
    ) -> Self {
        Processor {
            queue,
            storage,
            repo,
            counters,
        }
    }

    /// The queue.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Puts back jobs left claimed by a consumer that died (call once, at start-up).
    pub fn recover(&self) -> Result<Vec<String>, QueueError> {
        let names = self.queue.recover()?;
        if !names.is_empty() {
            tracing::warn!(jobs = names.len(), "recovered jobs claimed before a crash");
        }
        Ok(names)
    }

    /// Takes and handles one job. `Ok(false)` when the queue is empty.
    pub fn run_once(&self) -> Result<bool, QueueError> {
        let Some(d) = self.queue.take()? else {
            return Ok(false);
        };
        let mut attempt = 1;
        let result = loop {
            match self.apply(d.bytes()) {
                Err(e) if e.is_transient() && attempt < TRANSIENT_RETRIES => {
                    tracing::warn!(job = d.name(), attempt, error = %e, "retrying job");
                    attempt += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
                other => break other,
            }
        };
        match result {
            Ok(applied) => {
                tracing::info!(job = d.name(), ?applied, "job done");
                self.queue.complete(d)?;
                Counters::bump(&self.counters.jobs_processed);
            }
            Err(e) => {
                tracing::warn!(job = d.name(), reason = %e, "job failed");
                self.queue.fail(d, &e.to_string())?;
                Counters::bump(&self.counters.jobs_failed);
            }
        }
        Ok(true)
    }

    /// Handles jobs until `stop` is set, sleeping `poll` whenever the queue is empty. Queue
    /// errors are logged and retried after `poll`.
    pub fn run(&self, stop: &AtomicBool, poll: Duration) {
        while !stop.load(Ordering::Relaxed) {
            match self.run_once() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(poll),
                Err(e) => {
                    tracing::error!(error = %e, "queue error");
                    std::thread::sleep(poll);
                }
            }
        }
    }

    /// Applies the job in `bytes` (idempotently).
    pub fn apply(&self, bytes: &[u8]) -> Result<Applied, JobFailure> {
        match linecord_jobs::parse(bytes)? {
            Job::Recording(r) => self.apply_recording(&r),
            Job::Event(e) => self.apply_event(&e),
        }
    }

    fn apply_event(&self, e: &EventJob) -> Result<Applied, JobFailure> {
        let new = self.repo.ingest_event(&event_row(e))?;
        Counters::bump(&self.counters.events);
        Ok(Applied::Event {
            event_id: e.event_id.clone(),
            new,
        })
    }

    fn apply_recording(&self, job: &RecordingJob) -> Result<Applied, JobFailure> {
        if !is_safe_id(&job.recording_id) {
            return Err(JobFailure::BadId(job.recording_id.clone()));
        }
        let meta_text = job.metadata.clone();
        let mut row = RecordingRow {
            recording_id: job.recording_id.clone(),
            call_id: job.call_id.clone(),
            start_ms: job.start_unix_ms,
            end_ms: job.end_unix_ms.max(job.start_unix_ms),
            duration_ms: job.end_unix_ms.saturating_sub(job.start_unix_ms),
            status: status_text(job.status).to_owned(),
            ..RecordingRow::default()
        };
        let file = match (&job.file, job.status) {
            (Some(f), _) => Some(f.clone()),
            (None, RecordingStatus::Failed) => None,
            (None, _) => {
                return Err(JobFailure::File {
                    path: String::new(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the job has no file but its status is not failed",
                    ),
                })
            }
        };
        let mut notes: Vec<String> = job.error.iter().cloned().collect();
        let mut metadata = meta_text;
        if let Some(path) = file {
            let rec = Recording::open(std::path::Path::new(&path)).map_err(|e| match e {
                ReadError::Io(source) => JobFailure::File {
                    path: path.clone(),
                    source,
                },
                source => JobFailure::Unreadable {
                    path: path.clone(),
                    source,
                },
            })?;
            if rec.header.recording_id != job.recording_id {
                return Err(JobFailure::WrongFile {
                    expected: job.recording_id.clone(),
                    found: rec.header.recording_id.clone(),
                });
            }
            if !rec.is_intact() {
                if job.status == RecordingStatus::Partial {
                    // The recorder stopped writing part-way: the missing footer and a torn
                    // last block are what such a file looks like; the status stays.
                    notes.push(partial_note(&rec));
                } else {
                    notes.push(damage_note(&rec));
                    row.status = "damaged".into();
                    Counters::bump(&self.counters.damaged);
                }
            }
            let (analysis, an_notes) = analyse(&rec);
            if let Some(n) = an_notes.audio {
                notes.push(format!("no audio analysis: {n}"));
            }
            row.analysis = analysis;
            if metadata.is_none() {
                metadata = rec.header.metadata.clone();
            }
            let key = recording_key(&job.recording_id, job.start_unix_ms)?;
            row.size_bytes = self.storage.store_file(&key, std::path::Path::new(&path))?;
            row.storage_key = Some(key);
        }
        if let Some(m) = &metadata {
            let meta = parse_metadata(m);
            row.caller = meta.caller;
            row.callee = meta.callee;
            row.dn = meta.dn;
            row.switch = meta.switch;
        }
        row.metadata = metadata;
        row.status_note = (!notes.is_empty()).then(|| notes.join("; "));
        let interaction_id = self.repo.ingest_recording(&row)?;
        Counters::bump(&self.counters.recordings);
        Ok(Applied::Recording {
            recording_id: row.recording_id,
            interaction_id,
            status: row.status,
        })
    }
}

/// The job's status as text.
fn status_text(s: RecordingStatus) -> &'static str {
    match s {
        RecordingStatus::Complete => "complete",
        RecordingStatus::Incomplete => "incomplete",
        RecordingStatus::Recovered => "recovered",
        RecordingStatus::Partial => "partial",
        RecordingStatus::Failed => "failed",
    }
}

/// What is wrong with a file that is not intact.
fn damage_note(rec: &Recording) -> String {
    let mut parts = Vec::new();
    if rec.footer.is_none() {
        parts.push("no footer (cut short)".to_owned());
    }
    if !rec.bad_blocks.is_empty() {
        parts.push(format!("{} damaged block(s)", rec.bad_blocks.len()));
    }
    if rec.tail_bytes > 0 {
        parts.push(format!("{} trailing byte(s) unreadable", rec.tail_bytes));
    }
    format!(
        "file damaged: {}; indexed the {} readable block(s)",
        parts.join(", "),
        rec.blocks.len()
    )
}

/// What could be read of a `partial` recording (writing failed part-way).
fn partial_note(rec: &Recording) -> String {
    let mut parts = vec![format!(
        "writing stopped part-way; indexed the {} complete block(s)",
        rec.blocks.len()
    )];
    if rec.footer.is_none() {
        parts.push("no footer".to_owned());
    }
    if rec.tail_bytes > 0 {
        parts.push(format!("{} byte(s) of a torn last block", rec.tail_bytes));
    }
    if !rec.bad_blocks.is_empty() {
        parts.push(format!(
            "{} damaged block(s) before the end",
            rec.bad_blocks.len()
        ));
    }
    parts.join(", ")
}

/// The index row of an event job.
pub fn event_row(e: &EventJob) -> EventRow {
    let p = &e.parties;
    let mut text: Vec<&str> = Vec::new();
    for party in [Some(&p.caller), Some(&p.callee), e.transfer_target.as_ref()]
        .into_iter()
        .flatten()
    {
        text.extend(party.number.as_deref());
        text.push(&party.uri);
        text.extend(party.display_name.as_deref());
    }
    text.extend(p.agent_dn.as_deref());
    text.extend(e.reason.as_deref());
    EventRow {
        event_id: e.event_id.clone(),
        global_call_id: e.global_call_id.clone(),
        switch: e.switch.clone(),
        switch_call_id: e.switch_call_id.clone(),
        kind: e.kind.as_str().to_owned(),
        time_ms: e.time_unix_ms,
        seq: e.seq,
        ng_call_id: e.recording.as_ref().map(|r| r.ng_call_id.clone()),
        recording_id: e.recording.as_ref().and_then(|r| r.recording_id.clone()),
        caller: p.caller.number.clone(),
        callee: p.callee.number.clone(),
        agent_dn: p.agent_dn.clone(),
        status_code: e.status_code,
        reason: e.reason.clone(),
        party_text: text.join(" ").to_lowercase(),
    }
}
