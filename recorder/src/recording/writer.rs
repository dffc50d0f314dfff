//! The writer thread: compresses sealed blocks and writes them with io_uring, then finishes
//! files (footer, fsync, final name, spool job: [`Store::finish`]).
//!
//! Workers and the control thread send [`WriterMsg`]s over one channel, so a recording's
//! `Open`, `Block`s and `Finish` arrive in order. Blocks are compressed into buffers that stay
//! alive in an in-flight table until their write completes (the io_uring `user_data` is the
//! table slot). Each file has at most one write in flight and a queue of the next ones, in
//! file order; writes of many recordings go out in one submission. So a file on disk is
//! always its header and complete blocks up to `durable`, plus at most the one write in
//! flight: when a write fails, the file is exactly the blocks written before it.
//!
//! Files are created with io_uring `OpenAt` too: creating a file can take a millisecond on
//! a busy filesystem, and a burst of recording starts must not hold up the blocks of every
//! other recording. Before that, the recording filesystem's free space is checked against
//! `--min-free-disk` ([`Store::check_space`]); a recording refused there, or whose file
//! cannot be created or written, is *failed*: [`RecordingShared::failed`] and its `error`
//! tell the control thread (NG `query`) and the workers, which then only count its packets
//! as dropped. Media never depends on the disk.
//!
//! # A failing disk
//!
//! - A write error (or a write that makes no progress) fails the file: the write and the
//!   queued ones are dropped, and so is every later block of the recording. Each lost block
//!   is decoded (only on this path) to count its packets, per stream, into the recording's
//!   `dropped`; its buffer goes back. The file is finished as `partial` (the blocks before the
//!   failure) or, with no packet on disk, `failed` and removed.
//! - Nothing retries a write, so a failing disk costs one error per recording, not a loop.
//! - The sealed blocks the writer holds are bounded by [`MAX_HELD_BYTES`]: past it the
//!   writer stops taking messages until writes complete, the workers run out of pool
//!   buffers, and packets are dropped and counted there. A slow disk costs completeness,
//!   never unbounded memory, and never blocks a worker.
//! - Finishing uses plain blocking calls (footer, fsync, link, JSON), which is fine on this
//!   thread: no packet worker ever waits for it. What the disk refuses then is retried by the
//!   store, about once a second here ([`Store::retry_pending`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use io_uring::{opcode, squeue, types, IoUring};
use linecord_jobs::RecordingStatus;
use linecord_recfile::block::{decode_records, open_block, seal, BlockBuilder};
use linecord_recfile::{
    format, BlockIndexEntry, FileHeader, Record, StopReason, StreamId, StreamStats,
};

use super::store::{FinishedRecording, Store};
use crate::media::record::{BufferPool, RecordOutput, RecordingShared};

/// When to fsync recording files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Never (the OS writes back; a power loss can lose more than the flush interval).
    None,
    /// After every block (each block is durable when its write completes).
    Block,
    /// Once, when the file is finished (default).
    Close,
}

/// A message to the writer.
#[derive(Debug)]
pub enum WriterMsg {
    /// Create the file of a new recording and write its header.
    Open {
        /// The recording.
        recording: Arc<RecordingShared>,
        /// Its header.
        header: Box<FileHeader>,
        /// Workers that will each send a `Finished` for it (the file is finished after the
        /// last one): 1 for the `udp` backend, the number of queues for `xdp`.
        producers: usize,
    },
    /// A worker's output (a block, or the end of a recording).
    Output(RecordOutput),
}

/// Writer counters (for `statistics` and logs).
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Blocks written.
    pub blocks: AtomicU64,
    /// Bytes written (compressed, framed).
    pub bytes: AtomicU64,
    /// Recordings finished (their job spooled, or being retried).
    pub finished: AtomicU64,
    /// Recordings whose file failed (not started, write error, full or read-only
    /// filesystem): `partial` or `failed`.
    pub failed: AtomicU64,
    /// Blocks that could not be written (their file had failed, or their write did).
    pub discarded_blocks: AtomicU64,
    /// Packets in those blocks.
    pub dropped_packets: AtomicU64,
    /// Recording files created.
    pub opened: AtomicU64,
}

/// `user_data` bit marking an `OpenAt` completion (the low bits index `Writer::opens`).
const OPEN_TAG: u64 = 1 << 62;
/// `user_data` bit marking a linked fsync (`--fsync block`); the low bits are the recording
/// key.
const FSYNC_TAG: u64 = 1 << 61;

/// Submission queue depth: enough for every block of a busy flush interval in one submit.
const RING_ENTRIES: u32 = 512;
/// Most channel messages handled per loop turn before submitting.
const MAX_MSGS_PER_TURN: usize = 1024;
/// Most footer index entries kept per recording. Past it the index is thinned to every
/// second entry and the stride doubles, so a long call's index stays ≤ 2 KiB in memory
/// (readers scan blocks anyway; the index only helps seeking).
const MAX_INDEX_ENTRIES: usize = 64;
/// Longest wait for new blocks while writes are in flight (completion reaping latency).
const BUSY_POLL: Duration = Duration::from_millis(1);
/// Longest wait for a message when nothing is in flight.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Most bytes of sealed blocks held (queued behind a file's write, or in flight): 64 MiB,
/// a quarter of the default `--recording-memory`, about 5 000 blocks. Past it no message
/// is taken until writes complete (see the module documentation).
const MAX_HELD_BYTES: usize = 64 << 20;
/// Tries to find room in a full submission queue (each submits and empties the completion
/// queue) before the operation is failed.
const MAX_PUSH_TRIES: usize = 64;
/// Rounds of completion handling per loop turn (handling may submit more).
const MAX_REAP_ROUNDS: usize = 8;
/// How often publishing steps the disk refused are retried (each has its own back-off).
const RETRY_TICK: Duration = Duration::from_secs(1);
/// Longest wait at shutdown for operations in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// Repeated io_uring errors are logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

struct OpenFile {
    recording: Arc<RecordingShared>,
    header: FileHeader,
    /// The in-progress path (for messages).
    path: PathBuf,
    /// `None` while the `OpenAt` is in flight (or after it failed).
    file: Option<File>,
    /// The open is in flight.
    opening: bool,
    /// Writes waiting for the one in flight (or for the open), in file order.
    queue: VecDeque<usize>,
    /// The write in flight.
    writing: Option<usize>,
    /// Next free offset (writes reserve their range when queued).
    offset: u64,
    /// Bytes `0..durable` are written.
    durable: u64,
    index: Vec<BlockIndexEntry>,
    /// Blocks queued so far, and every how many blocks one is indexed.
    blocks: u64,
    index_stride: u64,
    error: Option<String>,
    /// Per stream: packets and payload bytes in blocks that could not be written.
    lost: Vec<(StreamId, u64, u64)>,
    finish: Option<(Vec<StreamStats>, StopReason)>,
    /// `Finished` messages still expected.
    producers: usize,
    /// In `Writer::ready`.
    ready_queued: bool,
}

struct Inflight {
    key: u64,
    buf: Vec<u8>,
    done: usize,
    file_offset: u64,
    /// The file header (not a block).
    header: bool,
}

/// Logs a repeated error at most every [`ERROR_LOG_EVERY`], with the count in between.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    fn log(&mut self, what: &str, e: &io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < ERROR_LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::error!(error = %e, repeated = self.suppressed, "{what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Where a test fault applies (see `Writer::with_faults`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultPoint {
    /// An `OpenAt` completed.
    Open,
    /// A write completed: where, how long, and whether it was the header.
    Write {
        offset: u64,
        len: usize,
        header: bool,
    },
    /// A linked fsync completed.
    Fsync,
}

/// Replaces a completion's result (`Some`) or keeps it (`None`).
#[cfg(test)]
pub(crate) type Faults = Box<dyn FnMut(FaultPoint) -> Option<i32> + Send>;

/// The writer thread's state.
pub struct Writer {
    ring: IoUring,
    store: Store,
    pool: Arc<BufferPool>,
    fsync: FsyncPolicy,
    files: HashMap<u64, OpenFile>,
    inflight: Vec<Option<Inflight>>,
    free_slots: Vec<usize>,
    spare_bufs: Vec<Vec<u8>>,
    counters: Arc<WriterCounters>,
    /// Opens in flight: recording key and the path (kept alive until the completion).
    opens: Vec<Option<(u64, CString)>>,
    free_opens: Vec<usize>,
    /// Submission entries pushed whose completion has not been taken yet.
    in_kernel: usize,
    /// Completions taken from the ring, not handled yet (handling never nests).
    completions: Vec<(u64, i32)>,
    reap_buf: Vec<(u64, i32)>,
    /// Bytes of the buffers in `inflight`.
    held_bytes: usize,
    max_held_bytes: usize,
    /// Recordings ready to be finished.
    ready: Vec<u64>,
    last_retry: Instant,
    submit_errors: ErrorLog,
    #[cfg(test)]
    faults: Option<Faults>,
    /// Most `held_bytes` seen.
    #[cfg(test)]
    peak_held: usize,
}

impl Writer {
    /// A writer storing through `store`.
    pub fn new(
        store: Store,
        pool: Arc<BufferPool>,
        fsync: FsyncPolicy,
        counters: Arc<WriterCounters>,
    ) -> io::Result<Self> {
        Ok(Writer {
            ring: IoUring::new(RING_ENTRIES)?,
            store,
            pool,
            fsync,
            files: HashMap::new(),
            inflight: Vec::new(),
            free_slots: Vec::new(),
            spare_bufs: Vec::new(),
            counters,
            opens: Vec::new(),
            free_opens: Vec::new(),
            in_kernel: 0,
            completions: Vec::new(),
            reap_buf: Vec::new(),
            held_bytes: 0,
            max_held_bytes: MAX_HELD_BYTES,
            ready: Vec::new(),
            last_retry: Instant::now(),
            submit_errors: ErrorLog::default(),
            #[cfg(test)]
            faults: None,
            #[cfg(test)]
            peak_held: 0,
        })
    }

    /// Replaces completion results as `faults` says (tests of the error paths).
    #[cfg(test)]
    pub(crate) fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Changes [`MAX_HELD_BYTES`].
    #[cfg(test)]
    pub(crate) fn with_max_held_bytes(mut self, bytes: usize) -> Self {
        self.max_held_bytes = bytes;
        self
    }

    /// Runs until every sender of `rx` is gone and all files are finished.
    ///
    /// The loop never sleeps in the kernel waiting for a write: it waits on the channel (at
    /// most [`BUSY_POLL`] while operations are in flight), submits everything queued, and
    /// reaps whatever completed, so new blocks are taken in while earlier writes complete.
    pub fn run(mut self, rx: Receiver<WriterMsg>) {
        self.run_until_done(&rx);
    }

    fn run_until_done(&mut self, rx: &Receiver<WriterMsg>) {
        let mut disconnected = false;
        let mut shutdown_by = None;
        loop {
            // Over the memory budget, take nothing until writes in flight complete.
            let over = self.held_bytes >= self.max_held_bytes && self.in_kernel > 0;
            if disconnected || over {
                std::thread::sleep(BUSY_POLL);
            } else {
                let wait = if self.in_kernel > 0 || !self.ready.is_empty() {
                    BUSY_POLL
                } else {
                    IDLE_WAIT
                };
                match rx.recv_timeout(wait) {
                    Ok(m) => {
                        self.handle(m);
                        for _ in 0..MAX_MSGS_PER_TURN {
                            if self.held_bytes >= self.max_held_bytes {
                                break;
                            }
                            match rx.try_recv() {
                                Ok(m) => self.handle(m),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => disconnected = true,
                }
            }
            self.submit();
            self.reap();
            self.finish_ready();
            if self.store.pending() > 0 && self.last_retry.elapsed() >= RETRY_TICK {
                self.last_retry = Instant::now();
                self.store.retry_pending(self.last_retry);
            }
            if disconnected {
                let by = *shutdown_by.get_or_insert_with(|| Instant::now() + SHUTDOWN_WAIT);
                if self.in_kernel > 0 && Instant::now() < by {
                    continue;
                }
                if self.in_kernel > 0 {
                    tracing::error!(
                        operations = self.in_kernel,
                        "writes still in flight at shutdown; their recordings are recovered at the next start"
                    );
                }
                if !self.files.is_empty() {
                    tracing::warn!(
                        open = self.files.len(),
                        "writer stopping with unfinished recordings; they will be recovered at the next start"
                    );
                }
                self.store.shutdown();
                return;
            }
        }
    }

    fn handle(&mut self, msg: WriterMsg) {
        match msg {
            WriterMsg::Open {
                recording,
                header,
                producers,
            } => self.open(recording, *header, producers),
            WriterMsg::Output(RecordOutput::Block { recording, block }) => {
                self.block(&recording, &block);
                self.pool.give(block);
            }
            WriterMsg::Output(RecordOutput::Finished {
                recording,
                streams,
                reason,
            }) => {
                let key = recording.key;
                if let Some(f) = self.files.get_mut(&key) {
                    f.producers = f.producers.saturating_sub(1);
                    let (all, _) = f.finish.get_or_insert_with(|| (Vec::new(), reason));
                    merge_stream_stats(all, &streams);
                    self.maybe_ready(key);
                } else {
                    tracing::warn!(recording = %recording.id, "end of a recording the writer does not know; ignored");
                }
            }
        }
    }

    fn open(&mut self, recording: Arc<RecordingShared>, header: FileHeader, producers: usize) {
        let key = recording.key;
        let path = self.store.in_progress_path(&recording.id);
        let start = header.start_unix_ms;
        let mut head = self.spare_bufs.pop().unwrap_or_default();
        head.clear();
        format::encode_header(&header, &mut head);
        self.files.insert(
            key,
            OpenFile {
                recording,
                header,
                path: path.clone(),
                file: None,
                opening: false,
                queue: VecDeque::new(),
                writing: None,
                offset: 0,
                durable: 0,
                index: Vec::with_capacity(MAX_INDEX_ENTRIES),
                blocks: 0,
                index_stride: 1,
                error: None,
                lost: Vec::new(),
                finish: None,
                producers: producers.max(1),
                ready_queued: false,
            },
        );
        if let Err(reason) = self.store.check_space() {
            self.recycle(head);
            self.fail_file(key, reason);
            return;
        }
        self.store.prepare_day_dir(start);
        let Ok(cpath) = CString::new(path.as_os_str().as_encoded_bytes()) else {
            self.recycle(head);
            self.fail_file(key, format!("invalid path {}", path.display()));
            return;
        };
        let slot = self.free_opens.pop().unwrap_or_else(|| {
            self.opens.push(None);
            self.opens.len() - 1
        });
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
            .flags(libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY | libc::O_CLOEXEC)
            .mode(0o640)
            .build()
            .user_data(OPEN_TAG | slot as u64);
        // The path lives in `self.opens[slot]` until the completion is reaped (moving the
        // CString does not move its bytes).
        self.opens[slot] = Some((key, cpath));
        if let Err(e) = self.push_entries(&[entry]) {
            self.opens[slot] = None;
            self.free_opens.push(slot);
            self.recycle(head);
            self.fail_file(
                key,
                format!("cannot submit the creation of {}: {e}", path.display()),
            );
            return;
        }
        if let Some(f) = self.files.get_mut(&key) {
            f.opening = true;
        }
        self.queue_write(key, head, None);
    }

    fn block(&mut self, recording: &Arc<RecordingShared>, block: &BlockBuilder) {
        let key = recording.key;
        let failed = match self.files.get(&key) {
            None => true,
            Some(f) => f.error.is_some(),
        };
        if failed {
            if !block.is_empty() {
                self.lose_records(recording, decode_records(block.raw()));
            }
            return;
        }
        if block.is_empty() {
            return;
        }
        let mut buf = self.spare_bufs.pop().unwrap_or_default();
        buf.clear();
        seal(block, &mut buf);
        let entry = BlockIndexEntry {
            offset: 0,
            first_us: block.first_us().unwrap_or(0),
            last_us: block.last_us().unwrap_or(0),
            records: block.records(),
        };
        self.queue_write(key, buf, Some(entry));
    }

    /// Reserves the file range for `buf` and queues its write (`entry`: a block to index;
    /// `None`: the header).
    fn queue_write(&mut self, key: u64, buf: Vec<u8>, entry: Option<BlockIndexEntry>) {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.inflight.push(None);
            self.inflight.len() - 1
        });
        let Some(f) = self.files.get_mut(&key) else {
            self.free_slots.push(slot);
            self.recycle(buf);
            return;
        };
        let file_offset = f.offset;
        f.offset += buf.len() as u64;
        if let Some(mut e) = entry {
            e.offset = file_offset;
            index_block(&mut f.index, &mut f.index_stride, f.blocks, e);
            f.blocks += 1;
        }
        f.queue.push_back(slot);
        self.held_bytes += buf.capacity();
        #[cfg(test)]
        {
            self.peak_held = self.peak_held.max(self.held_bytes);
        }
        self.inflight[slot] = Some(Inflight {
            key,
            buf,
            done: 0,
            file_offset,
            header: entry.is_none(),
        });
        self.kick(key);
    }

    /// Starts the next queued write of `key` if none is in flight; else checks whether the
    /// recording can be finished.
    fn kick(&mut self, key: u64) {
        let next = match self.files.get_mut(&key) {
            Some(f) if f.writing.is_none() && !f.opening && f.error.is_none() => {
                match (f.file.as_ref().map(AsRawFd::as_raw_fd), f.queue.front()) {
                    (Some(fd), Some(&slot)) => {
                        f.queue.pop_front();
                        f.writing = Some(slot);
                        Some((slot, fd, f.path.clone()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some((slot, fd, path)) = next {
            if let Err(e) = self.submit_write(slot, fd) {
                self.write_failed(
                    key,
                    slot,
                    format!("cannot submit a write of {}: {e}", path.display()),
                );
            }
        }
        self.maybe_ready(key);
    }

    /// Submits (the rest of) the write in `slot` to `fd`, with a linked fsync under
    /// `--fsync block`.
    fn submit_write(&mut self, slot: usize, fd: i32) -> io::Result<()> {
        let Some(w) = self.inflight.get(slot).and_then(Option::as_ref) else {
            return Ok(());
        };
        let rest = &w.buf[w.done..];
        let write = opcode::Write::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .offset(w.file_offset + w.done as u64)
            .build()
            .user_data(slot as u64);
        let fsync_data = FSYNC_TAG | w.key;
        // The buffer lives in `self.inflight[slot]` until this write's completion is
        // reaped; the fd stays open while the file has a write in flight.
        if self.fsync == FsyncPolicy::Block {
            // The fsync runs after the write (linked); it is cancelled if the write is short
            // or fails.
            self.push_entries(&[
                write.flags(squeue::Flags::IO_LINK),
                opcode::Fsync::new(types::Fd(fd))
                    .build()
                    .user_data(fsync_data),
            ])
        } else {
            self.push_entries(&[write])
        }
    }

    /// Pushes submission entries, submitting (and moving completions aside, to be handled
    /// by the next `reap`) to make room when the queue is full; gives up after
    /// [`MAX_PUSH_TRIES`]. Callers keep every buffer the entries point to alive until their
    /// completions.
    fn push_entries(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        for _ in 0..MAX_PUSH_TRIES {
            // SAFETY: see the callers: buffers and paths outlive the operations.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                self.in_kernel += entries.len();
                return Ok(());
            }
            self.submit();
            self.drain_cq();
        }
        Err(io::Error::other("the io_uring submission queue stays full"))
    }

    fn submit(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Completions are waiting to be reaped; the entries are submitted next turn.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => self.submit_errors.log("io_uring submit failed", &e),
        }
    }

    /// Moves completions out of the ring (bounded by its size).
    fn drain_cq(&mut self) {
        let before = self.completions.len();
        for c in self.ring.completion() {
            self.completions.push((c.user_data(), c.result()));
        }
        let n = self.completions.len() - before;
        self.in_kernel = self.in_kernel.saturating_sub(n);
    }

    fn reap(&mut self) {
        self.drain_cq();
        for _ in 0..MAX_REAP_ROUNDS {
            if self.completions.is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.reap_buf);
            std::mem::swap(&mut batch, &mut self.completions);
            for (data, res) in batch.drain(..) {
                #[cfg(test)]
                let res = self.inject(data, res);
                if data & OPEN_TAG != 0 {
                    self.opened((data & !OPEN_TAG) as usize, res);
                } else if data & FSYNC_TAG != 0 {
                    self.synced(data & !FSYNC_TAG, res);
                } else {
                    self.written(data as usize, res);
                }
            }
            self.reap_buf = batch;
            self.drain_cq();
        }
    }

    #[cfg(test)]
    fn inject(&mut self, data: u64, res: i32) -> i32 {
        let point = if data & OPEN_TAG != 0 {
            FaultPoint::Open
        } else if data & FSYNC_TAG != 0 {
            FaultPoint::Fsync
        } else {
            match self.inflight.get(data as usize).and_then(Option::as_ref) {
                Some(w) => FaultPoint::Write {
                    offset: w.file_offset + w.done as u64,
                    len: w.buf.len() - w.done,
                    header: w.header,
                },
                None => return res,
            }
        };
        let Some(f) = self.faults.as_mut() else {
            return res;
        };
        match f(point) {
            Some(injected) => {
                if point == FaultPoint::Open && res >= 0 && injected < 0 {
                    // SAFETY: the kernel's new descriptor, owned by nobody else.
                    drop(unsafe { File::from_raw_fd(res) });
                }
                injected
            }
            None => res,
        }
    }

    /// An `OpenAt` completed: start the writes that waited for it, or fail the recording.
    fn opened(&mut self, slot: usize, res: i32) {
        let Some((key, _path)) = self.opens.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_opens.push(slot);
        let Some(f) = self.files.get_mut(&key) else {
            if res >= 0 {
                // SAFETY: the kernel gave us this descriptor; nobody else owns it.
                drop(unsafe { File::from_raw_fd(res) });
            }
            return;
        };
        f.opening = false;
        if res < 0 {
            let path = f.path.clone();
            let id = f.recording.id.clone();
            // A create that failed part-way may still have made the file: no empty `.lcr`
            // is left behind.
            self.store.discard_in_progress(&id);
            self.fail_file(
                key,
                format!(
                    "cannot create {}: {}",
                    path.display(),
                    io::Error::from_raw_os_error(-res)
                ),
            );
            return;
        }
        // SAFETY: the kernel gave us this descriptor; nobody else owns it.
        f.file = Some(unsafe { File::from_raw_fd(res) });
        self.counters.opened.fetch_add(1, Relaxed);
        self.kick(key);
    }

    /// A write completed.
    fn written(&mut self, slot: usize, res: i32) {
        let Some(mut w) = self.inflight.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let key = w.key;
        let Some(f) = self.files.get_mut(&key) else {
            self.held_bytes -= w.buf.capacity();
            self.free_slots.push(slot);
            self.recycle(w.buf);
            return;
        };
        let fd = f.file.as_ref().map(AsRawFd::as_raw_fd);
        let path = f.path.clone();
        let offset = w.file_offset + w.done as u64;
        let len = w.buf.len();
        let error = if res < 0 {
            Some(io::Error::from_raw_os_error(-res).to_string())
        } else if res == 0 && w.done < len {
            Some("the write made no progress (0 bytes written)".to_string())
        } else {
            None
        };
        if error.is_none() && w.done + (res as usize) < len {
            // Short write (the disk took part of it): send the rest, which either fits or
            // fails.
            w.done += res as usize;
            self.inflight[slot] = Some(w);
            let sent = match fd {
                Some(fd) => self.submit_write(slot, fd),
                None => Err(io::Error::other("the file is not open")),
            };
            if let Err(e) = sent {
                self.write_failed(
                    key,
                    slot,
                    format!("cannot submit a write of {}: {e}", path.display()),
                );
            }
            return;
        }
        if let Some(e) = error {
            self.inflight[slot] = Some(w);
            self.write_failed(
                key,
                slot,
                format!("write failed at offset {offset} of {}: {e}", path.display()),
            );
            return;
        }
        f.durable = f.durable.max(w.file_offset + len as u64);
        f.writing = None;
        if !w.header {
            self.counters.blocks.fetch_add(1, Relaxed);
        }
        self.counters.bytes.fetch_add(len as u64, Relaxed);
        self.held_bytes -= w.buf.capacity();
        self.free_slots.push(slot);
        self.recycle(w.buf);
        self.kick(key);
    }

    /// A linked fsync completed (`--fsync block`): a failure fails the recording (its blocks
    /// may not be durable); a cancelled one follows a short or failed write.
    fn synced(&mut self, key: u64, res: i32) {
        if res >= 0 || res == -libc::ECANCELED {
            return;
        }
        let Some(path) = self
            .files
            .get(&key)
            .filter(|f| f.error.is_none())
            .map(|f| f.path.clone())
        else {
            return;
        };
        self.fail_file(
            key,
            format!(
                "fsync of {} failed: {}",
                path.display(),
                io::Error::from_raw_os_error(-res)
            ),
        );
    }

    /// The write in `slot` (in flight for `key`) failed: drop it and fail the file.
    fn write_failed(&mut self, key: u64, slot: usize, msg: String) {
        if let Some(f) = self.files.get_mut(&key) {
            if f.writing == Some(slot) {
                f.writing = None;
            }
        }
        self.lose_slot(slot);
        self.fail_file(key, msg);
    }

    /// Frees `slot`, counting the packets of the block in it as lost.
    fn lose_slot(&mut self, slot: usize) {
        let Some(w) = self.inflight.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.held_bytes -= w.buf.capacity();
        self.free_slots.push(slot);
        if !w.header {
            if let Some(rec) = self.files.get(&w.key).map(|f| Arc::clone(&f.recording)) {
                self.lose_records(&rec, open_block(&w.buf).map(|(_, r)| r));
            }
        }
        self.recycle(w.buf);
    }

    /// Counts the packets of a block that will not be written (per stream for the footer
    /// and job; in the recording's `dropped` for NG `query`).
    fn lose_records(
        &mut self,
        recording: &RecordingShared,
        records: Result<Vec<Record>, linecord_recfile::block::BlockError>,
    ) {
        self.counters.discarded_blocks.fetch_add(1, Relaxed);
        let records = match records {
            Ok(r) => r,
            Err(e) => {
                // Cannot happen for a block this process built; say so if it does.
                tracing::error!(recording = %recording.id, error = %e, "cannot count the packets of a lost block");
                return;
            }
        };
        let lost = self.files.get_mut(&recording.key).map(|f| &mut f.lost);
        let mut packets = 0u64;
        let mut per_stream: Vec<(StreamId, u64, u64)> = Vec::new();
        for r in &records {
            if let Record::Packet(p) = r {
                packets += 1;
                let bytes = p.payload.len() as u64;
                match per_stream.iter_mut().find(|(s, _, _)| *s == p.stream) {
                    Some(x) => {
                        x.1 += 1;
                        x.2 += bytes;
                    }
                    None => per_stream.push((p.stream, 1, bytes)),
                }
            }
        }
        if let Some(lost) = lost {
            for (s, n, b) in per_stream {
                match lost.iter_mut().find(|(x, _, _)| *x == s) {
                    Some(x) => {
                        x.1 += n;
                        x.2 += b;
                    }
                    None => lost.push((s, n, b)),
                }
            }
        }
        recording.dropped.fetch_add(packets, Relaxed);
        let _ = recording
            .packets
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(packets)));
        self.counters.dropped_packets.fetch_add(packets, Relaxed);
    }

    /// Fails the file of `key` (first error wins): the queued writes are dropped (their
    /// packets counted) and nothing more is written; workers see the recording failed.
    fn fail_file(&mut self, key: u64, msg: String) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let first = f.error.is_none();
        if first {
            f.error = Some(msg.clone());
        }
        let queued: Vec<usize> = f.queue.drain(..).collect();
        let rec = Arc::clone(&f.recording);
        for slot in queued {
            self.lose_slot(slot);
        }
        if first {
            self.fail(&rec, msg);
        }
        self.maybe_ready(key);
    }

    fn fail(&self, recording: &RecordingShared, reason: String) {
        let _ = recording.error.set(reason.clone());
        if !recording.failed.swap(true, Relaxed) {
            self.counters.failed.fetch_add(1, Relaxed);
            recording.file_state.store(2, Relaxed);
            tracing::error!(recording = %recording.id, %reason, "recording failed; media keeps flowing");
        }
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.spare_bufs.len() < 64 {
            self.spare_bufs.push(buf);
        }
    }

    /// Queues `key` for finishing once its end is known and nothing of it is in flight.
    fn maybe_ready(&mut self, key: u64) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        if !f.ready_queued
            && f.finish.is_some()
            && f.producers == 0
            && f.writing.is_none()
            && f.queue.is_empty()
            && !f.opening
        {
            f.ready_queued = true;
            self.ready.push(key);
        }
    }

    fn finish_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.ready) {
            if let Some(f) = self.files.remove(&key) {
                self.finish(f);
            }
        }
    }

    fn finish(&mut self, f: OpenFile) {
        let OpenFile {
            recording,
            header,
            file,
            mut index,
            durable,
            error,
            lost,
            finish,
            ..
        } = f;
        let (mut streams, reason) = finish.unwrap_or((Vec::new(), StopReason::Shutdown));
        // What is in the file: what the workers recorded less what could not be written.
        for (stream, packets, bytes) in &lost {
            if let Some(s) = streams.iter_mut().find(|s| s.stream == *stream) {
                s.packets = s.packets.saturating_sub(*packets);
                s.payload_bytes = s.payload_bytes.saturating_sub(*bytes);
                if s.packets == 0 {
                    s.first_us = 0;
                    s.last_us = 0;
                }
            }
        }
        // Blocks starting before `durable` are complete (it only moves by whole writes).
        index.retain(|e| e.offset < durable);
        let done = FinishedRecording {
            header,
            index,
            streams,
            reason,
            dropped: recording.dropped.load(Relaxed),
            error,
            data_end: durable,
        };
        let out = self
            .store
            .finish(file.as_ref(), &done, self.fsync != FsyncPolicy::None);
        self.counters.finished.fetch_add(1, Relaxed);
        // Where the file is now (the store logged and retries what it could not do).
        let file = match (&out.file, out.in_place) {
            (Some(f), true) => f.display().to_string(),
            (Some(_), false) => self
                .store
                .in_progress_path(&recording.id)
                .display()
                .to_string(),
            (None, _) => String::new(),
        };
        match out.status {
            RecordingStatus::Complete | RecordingStatus::Incomplete => {
                recording.file_state.store(1, Relaxed);
                tracing::info!(recording = %recording.id, %file, status = ?out.status, spooled = out.spooled, "recording finished");
            }
            RecordingStatus::Partial => {
                if let Some(e) = &out.error {
                    // A footer or fsync failure at the very end fails it here.
                    self.fail(&recording, e.clone());
                }
                tracing::warn!(recording = %recording.id, %file, packets_lost = done.dropped, error = ?out.error, spooled = out.spooled, "recording kept in part: the file holds what was written before the failure");
            }
            RecordingStatus::Failed | RecordingStatus::Recovered => {
                tracing::error!(recording = %recording.id, packets_lost = done.dropped, error = ?out.error, spooled = out.spooled, "recording failed: nothing of it is on disk");
            }
        }
    }
}

/// Adds one worker's per-stream counts to the recording's (a stream recorded by several
/// workers sums; loss and jitter come from the control thread, identical in each).
fn merge_stream_stats(all: &mut Vec<StreamStats>, more: &[StreamStats]) {
    for s in more {
        match all.iter_mut().find(|x| x.stream == s.stream) {
            Some(x) => {
                x.packets += s.packets;
                x.payload_bytes += s.payload_bytes;
                x.first_us = x.first_us.min(s.first_us);
                x.last_us = x.last_us.max(s.last_us);
            }
            None => all.push(*s),
        }
    }
}

/// Adds block number `n` to a sparse index holding every `stride`-th block, thinning it to
/// every second entry (and doubling the stride) when it reaches [`MAX_INDEX_ENTRIES`].
fn index_block(index: &mut Vec<BlockIndexEntry>, stride: &mut u64, n: u64, e: BlockIndexEntry) {
    if !n.is_multiple_of(*stride) {
        return;
    }
    if index.len() >= MAX_INDEX_ENTRIES {
        let mut keep = false;
        index.retain(|_| {
            keep = !keep;
            keep
        });
        *stride *= 2;
        if !n.is_multiple_of(*stride) {
            return;
        }
    }
    index.push(e);
}

/// Where the writer keeps a recording while it is being written.
pub fn in_progress_dir(recording_dir: &std::path::Path) -> PathBuf {
    recording_dir.join(".inprogress")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_recordings_keep_a_bounded_evenly_spaced_index() {
        let (mut index, mut stride) = (Vec::new(), 1);
        for n in 0..10_000u64 {
            let e = BlockIndexEntry {
                offset: n,
                first_us: n,
                last_us: n,
                records: 1,
            };
            index_block(&mut index, &mut stride, n, e);
            assert!(index.len() <= MAX_INDEX_ENTRIES);
        }
        assert_eq!(stride, 256);
        assert!(index.len() > MAX_INDEX_ENTRIES / 2);
        assert!(index
            .iter()
            .enumerate()
            .all(|(i, e)| e.offset == i as u64 * stride));
        let (mut short, mut s) = (Vec::new(), 1);
        for n in 0..10u64 {
            index_block(
                &mut short,
                &mut s,
                n,
                BlockIndexEntry {
                    offset: n,
                    first_us: 0,
                    last_us: 0,
                    records: 0,
                },
            );
        }
        assert_eq!(short.len(), 10, "short recordings index every block");
    }

    use crate::recording::disk::faulty::FaultyDisk;
    use crate::recording::store::tests::{fill, header, jobs, tmp_files, Dir};
    use linecord_jobs::RecordingJob;
    use linecord_recfile::reader::Recording;
    use std::collections::HashSet;
    use std::path::Path;

    const BLOCKS: u16 = 5;

    struct Outcome {
        dir: Dir,
        shared: Arc<RecordingShared>,
        pool: Arc<BufferPool>,
        counters: Arc<WriterCounters>,
        peak_held: usize,
    }

    impl Outcome {
        fn job(&self) -> RecordingJob {
            let mut j = jobs(&self.dir.0.join("spool"));
            assert_eq!(j.len(), 1, "one job");
            j.remove(0)
        }

        /// Every `.lcr` under the recording directory.
        fn lcr_files(&self) -> Vec<PathBuf> {
            let mut out = Vec::new();
            let mut dirs = vec![self.dir.0.join("rec")];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        dirs.push(p);
                    } else if p.extension().is_some_and(|x| x == "lcr") {
                        out.push(p);
                    }
                }
            }
            out
        }

        /// Every buffer the pool made is back in it.
        fn pool_is_whole(&self) -> bool {
            let n = self.pool.created();
            let back: Vec<_> = (0..n).map_while(|_| self.pool.take()).collect();
            back.len() as u64 == n && self.pool.created() == n
        }

        /// The file's packets, plus what the job says was lost, is what was recorded.
        fn check_accounting(&self, j: &RecordingJob) -> u64 {
            let in_file = match &j.file {
                Some(f) => Recording::open(Path::new(f))
                    .expect("readable")
                    .records()
                    .expect("records")
                    .iter()
                    .filter(|r| matches!(r, Record::Packet(_)))
                    .count() as u64,
                None => 0,
            };
            assert_eq!(
                j.streams[0].packets, in_file,
                "the job counts what the file holds"
            );
            assert_eq!(in_file + j.packets_lost, u64::from(BLOCKS) * 10);
            assert_eq!(
                self.shared.dropped.load(Relaxed),
                j.packets_lost,
                "NG query agrees"
            );
            in_file
        }
    }

    /// Runs a writer over one recording of [`BLOCKS`] blocks of 10 packets, on its own
    /// thread, with at most 30 s to finish (a spinning writer fails the test).
    fn run(
        tag: &str,
        fsync: FsyncPolicy,
        free: Option<u64>,
        faults: Option<Faults>,
        max_held: Option<usize>,
        blocks: u16,
    ) -> Outcome {
        let dir = Dir::new(tag);
        let disk = FaultyDisk::default();
        disk.set_free(free);
        let store = Store::new(dir.0.join("rec"), dir.0.join("spool"))
            .expect("store")
            .with_min_free_disk(1 << 20)
            .with_disk(Box::new(disk));
        let pool = Arc::new(BufferPool::new(4 << 20, 12 * 1024));
        let counters = Arc::new(WriterCounters::default());
        let mut w =
            Writer::new(store, Arc::clone(&pool), fsync, Arc::clone(&counters)).expect("io_uring");
        if let Some(f) = faults {
            w = w.with_faults(f);
        }
        if let Some(m) = max_held {
            w = w.with_max_held_bytes(m);
        }
        let shared = Arc::new(RecordingShared::new(1, "w1".into()));
        let (tx, rx) = crossbeam_channel::unbounded();
        let send = |m| tx.send(m).expect("send");
        send(WriterMsg::Open {
            recording: Arc::clone(&shared),
            header: Box::new(header("w1")),
            producers: 1,
        });
        for i in 0..blocks {
            let mut b = pool.take().expect("a buffer");
            fill(&mut b, i * 10, 10);
            shared.packets.fetch_add(10, Relaxed);
            send(WriterMsg::Output(RecordOutput::Block {
                recording: Arc::clone(&shared),
                block: b,
            }));
        }
        send(WriterMsg::Output(RecordOutput::Finished {
            recording: Arc::clone(&shared),
            streams: vec![StreamStats {
                stream: 0,
                packets: u64::from(blocks) * 10,
                payload_bytes: u64::from(blocks) * 1600,
                first_us: 0,
                last_us: u64::from(blocks) * 200_000,
                ..Default::default()
            }],
            reason: StopReason::Deleted,
        }));
        drop(tx);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            w.run_until_done(&rx);
            let _ = done_tx.send(w.peak_held);
        });
        let peak_held = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the writer finishes (it must not spin or hang)");
        Outcome {
            dir,
            shared,
            pool,
            counters,
            peak_held,
        }
    }

    fn plain(tag: &str, faults: Faults) -> Outcome {
        run(tag, FsyncPolicy::Close, None, Some(faults), None, BLOCKS)
    }

    /// Fails the `n`-th block write (1-based) and every block write after it with `errno`.
    fn fail_block_from(n: usize, errno: i32) -> Faults {
        let mut seen = 0;
        Box::new(move |p| match p {
            FaultPoint::Write { header: false, .. } => {
                seen += 1;
                (seen >= n).then_some(-errno)
            }
            _ => None,
        })
    }

    #[test]
    fn blocks_are_written_in_order_and_the_recording_finishes_complete() {
        let o = run("wok", FsyncPolicy::Block, None, None, None, BLOCKS);
        let j = o.job();
        assert_eq!(j.status, RecordingStatus::Complete);
        assert_eq!(o.check_accounting(&j), 50);
        assert!(Recording::open(Path::new(j.file.as_deref().expect("file")))
            .expect("read")
            .is_intact());
        assert_eq!(o.counters.blocks.load(Relaxed), u64::from(BLOCKS));
        assert_eq!(o.shared.file_state.load(Relaxed), 1);
        assert!(o.pool_is_whole());
        assert!(tmp_files(&o.dir.0).is_empty());
    }

    #[test]
    fn below_the_free_space_reserve_the_recording_is_not_started() {
        let o = run("wfull", FsyncPolicy::Close, Some(1000), None, None, BLOCKS);
        let j = o.job();
        assert_eq!((j.status, j.file.clone()), (RecordingStatus::Failed, None));
        let reason = o.shared.error.get().expect("a reason for NG query");
        assert!(reason.starts_with("not started: 0.0 MiB free"), "{reason}");
        assert_eq!(j.error.as_deref(), Some(reason.as_str()));
        assert!(o.shared.failed.load(Relaxed));
        assert_eq!(o.check_accounting(&j), 0);
        assert!(o.lcr_files().is_empty(), "no file at all");
        assert_eq!(o.counters.opened.load(Relaxed), 0);
        assert_eq!(o.counters.discarded_blocks.load(Relaxed), u64::from(BLOCKS));
        assert!(o.pool_is_whole(), "the discarded blocks' buffers are back");
    }

    #[test]
    fn a_file_that_cannot_be_created_fails_and_leaves_no_empty_file() {
        let o = plain(
            "wopen",
            Box::new(|p| (p == FaultPoint::Open).then_some(-libc::ENOSPC)),
        );
        let j = o.job();
        assert_eq!((j.status, j.file.clone()), (RecordingStatus::Failed, None));
        assert!(
            j.error.as_deref().unwrap_or("").contains("cannot create"),
            "{j:?}"
        );
        assert_eq!(o.check_accounting(&j), 0);
        assert!(o.lcr_files().is_empty(), "{:?}", o.lcr_files());
        assert!(o.pool_is_whole());
    }

    #[test]
    fn a_header_the_disk_refuses_fails_the_recording_and_removes_the_file() {
        let o = plain(
            "whead",
            Box::new(|p| {
                matches!(p, FaultPoint::Write { header: true, .. }).then_some(-libc::ENOSPC)
            }),
        );
        let j = o.job();
        assert_eq!((j.status, j.file.clone()), (RecordingStatus::Failed, None));
        assert_eq!(o.check_accounting(&j), 0);
        assert!(o.lcr_files().is_empty());
    }

    #[test]
    fn a_failed_block_write_keeps_every_block_before_it() {
        let o = plain("wfail", fail_block_from(4, libc::ENOSPC));
        let j = o.job();
        assert_eq!(j.status, RecordingStatus::Partial);
        let err = j.error.clone().unwrap_or_default();
        assert!(
            err.contains("No space left") && err.contains("offset"),
            "{err}"
        );
        assert_eq!(o.check_accounting(&j), 30, "blocks 1-3 are in the file");
        assert_eq!(j.packets_lost, 20);
        let rec = Recording::open(Path::new(j.file.as_deref().expect("file"))).expect("read");
        assert!(rec.is_intact());
        assert_eq!(rec.blocks.len(), 3);
        assert_eq!(rec.footer.expect("footer").packets_lost, 20);
        assert_eq!(o.shared.error.get(), Some(&err));
        assert_eq!(o.shared.file_state.load(Relaxed), 2);
        assert_eq!(o.counters.failed.load(Relaxed), 1);
        assert_eq!(o.counters.dropped_packets.load(Relaxed), 20);
        assert!(o.pool_is_whole());
        assert!(names_in_progress(&o).is_empty());
    }

    fn names_in_progress(o: &Outcome) -> Vec<String> {
        std::fs::read_dir(o.dir.0.join("rec/.inprogress"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn short_writes_are_completed() {
        let mut first = HashSet::new();
        let o = plain(
            "wshort",
            Box::new(move |p| match p {
                FaultPoint::Write { offset, len, .. } if len > 1 && first.insert(offset) => {
                    Some((len / 2) as i32)
                }
                _ => None,
            }),
        );
        let j = o.job();
        assert_eq!(j.status, RecordingStatus::Complete);
        assert_eq!(o.check_accounting(&j), 50);
    }

    #[test]
    fn a_short_write_then_a_full_disk_cuts_the_torn_block_off() {
        let mut blocks = 0;
        let o = plain(
            "wtorn",
            Box::new(move |p| match p {
                FaultPoint::Write {
                    header: false, len, ..
                } => {
                    blocks += 1;
                    match blocks {
                        2 => Some((len / 2) as i32),
                        3.. => Some(-libc::ENOSPC),
                        _ => None,
                    }
                }
                _ => None,
            }),
        );
        let j = o.job();
        assert_eq!(j.status, RecordingStatus::Partial);
        assert_eq!(o.check_accounting(&j), 10, "only block 1 is whole");
        let rec = Recording::open(Path::new(j.file.as_deref().expect("file"))).expect("read");
        assert!(
            rec.is_intact(),
            "the half block is cut off before the footer"
        );
    }

    #[test]
    fn a_write_that_makes_no_progress_fails_instead_of_spinning() {
        let o = plain(
            "wzero",
            Box::new(|p| matches!(p, FaultPoint::Write { header: false, .. }).then_some(0)),
        );
        let j = o.job();
        assert_eq!((j.status, j.file.clone()), (RecordingStatus::Failed, None));
        assert!(
            j.error.as_deref().unwrap_or("").contains("no progress"),
            "{j:?}"
        );
        assert_eq!(o.check_accounting(&j), 0);
        assert!(o.lcr_files().is_empty());
    }

    #[test]
    fn a_failed_fsync_under_fsync_block_makes_the_recording_partial() {
        let mut syncs = 0;
        let o = run(
            "wsync",
            FsyncPolicy::Block,
            None,
            Some(Box::new(move |p| {
                if p == FaultPoint::Fsync {
                    syncs += 1;
                    return (syncs == 3).then_some(-libc::EIO);
                }
                None
            })),
            None,
            BLOCKS,
        );
        let j = o.job();
        assert_eq!(j.status, RecordingStatus::Partial);
        assert!(j.error.as_deref().unwrap_or("").contains("fsync"), "{j:?}");
        let kept = o.check_accounting(&j);
        assert!((20..50).contains(&kept), "{kept}");
    }

    #[test]
    fn the_blocks_the_writer_holds_are_bounded() {
        let blocks = 40;
        let unbounded = run("wmem1", FsyncPolicy::Close, None, None, None, blocks);
        let bounded = run("wmem2", FsyncPolicy::Close, None, None, Some(1), blocks);
        for o in [&unbounded, &bounded] {
            let j = jobs(&o.dir.0.join("spool")).remove(0);
            assert_eq!(j.status, RecordingStatus::Complete);
            assert_eq!(j.streams[0].packets, u64::from(blocks) * 10);
        }
        // One sealed block is ~1.7 KB of records in a buffer of ~2 KB capacity or more.
        assert!(
            bounded.peak_held * 4 < unbounded.peak_held,
            "bounded {} vs unbounded {}",
            bounded.peak_held,
            unbounded.peak_held
        );
    }
}
