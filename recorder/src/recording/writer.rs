//! The writer thread: compresses sealed blocks and writes them with io_uring, then finishes
//! files (footer, fsync, move into storage, spool job).
//!
//! Workers and the control thread send [`WriterMsg`]s over one channel, so a recording's
//! `Open`, `Block`s and `Finish` arrive in order. Blocks are compressed into buffers that stay
//! alive in an in-flight table until their write completes (the io_uring `user_data` is the
//! table slot); writes of many recordings go out in one submission. Each file's next offset is
//! tracked here, so writes never depend on a file position. Finishing is done once a
//! recording has no write in flight; it uses plain blocking calls (footer, fsync, rename,
//! JSON), which is fine on this thread: no packet worker ever waits for it.
//!
//! Files are created with io_uring `OpenAt` too: creating a file can take a millisecond on
//! a busy filesystem, and a burst of recording starts must not hold up the blocks of every
//! other recording. Writes queued before a file's open completes wait in its `pending` list
//! (their offsets are already reserved) and are submitted when the descriptor arrives.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use io_uring::{opcode, types, IoUring};
use linecord_recfile::block::{seal, BlockBuilder};
use linecord_recfile::{format, BlockIndexEntry, FileHeader, StopReason, StreamStats};

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
    /// Recordings finished and spooled.
    pub finished: AtomicU64,
    /// Recordings whose file failed (write error, full or read-only filesystem).
    pub failed: AtomicU64,
    /// Blocks discarded because their file had failed.
    pub discarded_blocks: AtomicU64,
    /// Recording files created.
    pub opened: AtomicU64,
}

/// `user_data` bit marking an `OpenAt` completion (the low bits index `Writer::opens`).
const OPEN_TAG: u64 = 1 << 62;
/// `user_data` of the linked fsyncs (their completions are only checked for errors).
const FSYNC_TAG: u64 = u64::MAX;

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

struct OpenFile {
    recording: Arc<RecordingShared>,
    header: FileHeader,
    /// `None` while the `OpenAt` is in flight (or after it failed).
    file: Option<File>,
    /// The open is still in flight.
    opening: bool,
    /// In-flight slots waiting for the descriptor.
    pending: Vec<usize>,
    offset: u64,
    index: Vec<BlockIndexEntry>,
    /// Blocks written so far, and every how many blocks one is indexed.
    blocks: u64,
    index_stride: u64,
    inflight: usize,
    error: Option<String>,
    finish: Option<(Vec<StreamStats>, StopReason)>,
    /// `Finished` messages still expected.
    producers: usize,
}

struct Inflight {
    key: u64,
    buf: Vec<u8>,
    done: usize,
    file_offset: u64,
}

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
    /// Recordings with a `Finish` received and not yet finished.
    finishing: usize,
    /// Opens in flight: recording key and the path (kept alive until the completion).
    opens: Vec<Option<(u64, std::ffi::CString)>>,
    free_opens: Vec<usize>,
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
            finishing: 0,
            opens: Vec::new(),
            free_opens: Vec::new(),
        })
    }

    /// Runs until every sender of `rx` is gone and all files are finished.
    ///
    /// The loop never sleeps in the kernel waiting for a write: it waits on the channel (at
    /// most [`BUSY_POLL`] while writes are in flight), submits everything queued, and reaps
    /// whatever completed, so new blocks are taken in while earlier writes complete.
    pub fn run(mut self, rx: Receiver<WriterMsg>) {
        let mut disconnected = false;
        loop {
            let wait = if self.inflight_count() > 0 || self.finishing > 0 {
                BUSY_POLL
            } else {
                Duration::from_millis(100)
            };
            match rx.recv_timeout(wait) {
                Ok(m) => {
                    self.handle(m);
                    for m in rx.try_iter().take(MAX_MSGS_PER_TURN) {
                        self.handle(m);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
            if let Err(e) = self.ring.submit() {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "io_uring submit failed");
                }
            }
            self.reap();
            if self.finishing > 0 {
                self.finish_ready();
            }
            if disconnected {
                if self.inflight_count() > 0 {
                    // Nothing else to do: wait for the remaining writes.
                    let _ = self.ring.submit_and_wait(1);
                    continue;
                }
                if !self.files.is_empty() {
                    tracing::warn!(
                        open = self.files.len(),
                        "writer stopping with unfinished recordings; they will be recovered at the next start"
                    );
                }
                return;
            }
        }
    }

    fn inflight_count(&self) -> usize {
        self.inflight.len() - self.free_slots.len()
    }

    fn handle(&mut self, msg: WriterMsg) {
        match msg {
            WriterMsg::Open {
                recording,
                header,
                producers,
            } => self.open(recording, *header, producers),
            WriterMsg::Output(RecordOutput::Block { recording, block }) => {
                self.block(recording.key, &block);
                self.pool.give(block);
            }
            WriterMsg::Output(RecordOutput::Finished {
                recording,
                streams,
                reason,
            }) => {
                if let Some(f) = self.files.get_mut(&recording.key) {
                    f.producers = f.producers.saturating_sub(1);
                    let (all, _) = f.finish.get_or_insert_with(|| (Vec::new(), reason));
                    merge_stream_stats(all, &streams);
                    if f.producers == 0 {
                        self.finishing += 1;
                    }
                }
            }
        }
    }

    fn open(&mut self, recording: Arc<RecordingShared>, header: FileHeader, producers: usize) {
        let key = recording.key;
        let path = self.store.in_progress_path(&recording.id);
        let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            self.fail(&recording, format!("invalid path {}", path.display()));
            return;
        };
        let mut buf = self.spare_bufs.pop().unwrap_or_default();
        buf.clear();
        format::encode_header(&header, &mut buf);
        self.files.insert(
            key,
            OpenFile {
                recording,
                header,
                file: None,
                opening: true,
                pending: Vec::new(),
                offset: 0,
                index: Vec::with_capacity(MAX_INDEX_ENTRIES),
                blocks: 0,
                index_stride: 1,
                inflight: 0,
                error: None,
                finish: None,
                producers: producers.max(1),
            },
        );
        let slot = self.free_opens.pop().unwrap_or_else(|| {
            self.opens.push(None);
            self.opens.len() - 1
        });
        let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
            .flags(libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY | libc::O_CLOEXEC)
            .mode(0o640)
            .build()
            .user_data(OPEN_TAG | slot as u64);
        self.opens[slot] = Some((key, cpath));
        // The path lives in `self.opens[slot]` until the completion is reaped.
        self.push_entries(&[entry]);
        self.queue_write(key, buf, None);
    }

    /// An `OpenAt` completed: start the writes that waited for it, or fail the recording.
    fn opened(&mut self, slot: usize, res: i32) {
        let Some((key, cpath)) = self.opens.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free_opens.push(slot);
        let Some(f) = self.files.get_mut(&key) else {
            if res >= 0 {
                // SAFETY: the kernel gave us this descriptor; nobody else owns it.
                drop(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(res) });
            }
            return;
        };
        f.opening = false;
        let pending = std::mem::take(&mut f.pending);
        if res < 0 {
            let rec = Arc::clone(&f.recording);
            let msg = format!(
                "cannot create {}: {}",
                cpath.to_string_lossy(),
                io::Error::from_raw_os_error(-res)
            );
            f.error = Some(msg.clone());
            f.inflight -= pending.len();
            for s in pending {
                self.inflight[s] = None;
                self.free_slots.push(s);
                self.counters.discarded_blocks.fetch_add(1, Relaxed);
            }
            self.fail(&rec, msg);
            return;
        }
        // SAFETY: the kernel gave us this descriptor; nobody else owns it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(res) };
        let fd = file.as_raw_fd();
        f.file = Some(file);
        self.counters.opened.fetch_add(1, Relaxed);
        for s in pending {
            self.push_sqe(s, fd);
        }
    }

    fn block(&mut self, key: u64, block: &BlockBuilder) {
        let Some(f) = self.files.get(&key) else {
            self.counters.discarded_blocks.fetch_add(1, Relaxed);
            return;
        };
        if f.error.is_some() || block.is_empty() {
            if f.error.is_some() {
                self.counters.discarded_blocks.fetch_add(1, Relaxed);
            }
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

    /// Reserves the file range for `buf` and queues its write.
    fn queue_write(&mut self, key: u64, buf: Vec<u8>, entry: Option<BlockIndexEntry>) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let file_offset = f.offset;
        f.offset += buf.len() as u64;
        f.inflight += 1;
        if let Some(mut e) = entry {
            e.offset = file_offset;
            index_block(&mut f.index, &mut f.index_stride, f.blocks, e);
            f.blocks += 1;
        }
        let fd = f.file.as_ref().map(|file| file.as_raw_fd());
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.inflight.push(None);
            self.inflight.len() - 1
        });
        self.inflight[slot] = Some(Inflight {
            key,
            buf,
            done: 0,
            file_offset,
        });
        match fd {
            Some(fd) => self.push_sqe(slot, fd),
            None => {
                if let Some(f) = self.files.get_mut(&key) {
                    f.pending.push(slot);
                }
            }
        }
    }

    fn push_sqe(&mut self, slot: usize, fd: i32) {
        let Some(w) = self.inflight[slot].as_ref() else {
            return;
        };
        let rest = &w.buf[w.done..];
        let write = opcode::Write::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
            .offset(w.file_offset + w.done as u64)
            .build()
            .user_data(slot as u64);
        let entries: &[io_uring::squeue::Entry] = if self.fsync == FsyncPolicy::Block {
            // The fsync completes after the write (linked); its completion is ignored.
            &[
                write.flags(io_uring::squeue::Flags::IO_LINK),
                opcode::Fsync::new(types::Fd(fd))
                    .build()
                    .user_data(FSYNC_TAG),
            ]
        } else {
            &[write]
        };
        // The buffer lives in `self.inflight[slot]` until this write's completion is reaped;
        // the fd stays open while the file has writes in flight.
        self.push_entries(entries);
    }

    /// Pushes submission entries, submitting and reaping to make room when the queue is full.
    /// Callers keep every buffer the entries point to alive until their completions.
    fn push_entries(&mut self, entries: &[io_uring::squeue::Entry]) {
        loop {
            // SAFETY: see the callers: buffers and paths outlive the operations.
            let pushed = unsafe { self.ring.submission().push_multiple(entries) };
            if pushed.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::error!(error = %e, "io_uring submit failed");
            }
            self.reap();
        }
    }

    fn reap(&mut self) {
        let done: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, res) in done {
            if data == FSYNC_TAG {
                if res < 0 {
                    tracing::warn!(error = %io::Error::from_raw_os_error(-res), "fsync failed");
                }
            } else if data & OPEN_TAG != 0 {
                self.opened((data & !OPEN_TAG) as usize, res);
            } else {
                self.complete(data as usize, res);
            }
        }
    }

    fn complete(&mut self, slot: usize, res: i32) {
        let Some(mut w) = self.inflight.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let key = w.key;
        if res > 0 && w.done + (res as usize) < w.buf.len() {
            // Short write: send the rest.
            w.done += res as usize;
            let fd = self
                .files
                .get(&key)
                .and_then(|f| f.file.as_ref())
                .map(|file| file.as_raw_fd());
            self.inflight[slot] = Some(w);
            if let Some(fd) = fd {
                self.push_sqe(slot, fd);
                return;
            }
            self.inflight[slot] = None;
            self.free_slots.push(slot);
            return;
        }
        self.free_slots.push(slot);
        let err = if res < 0 {
            Some(io::Error::from_raw_os_error(-res).to_string())
        } else if res == 0 && !w.buf.is_empty() {
            Some("write returned 0".to_string())
        } else {
            None
        };
        if err.is_none() {
            self.counters.blocks.fetch_add(1, Relaxed);
            self.counters.bytes.fetch_add(w.buf.len() as u64, Relaxed);
        }
        w.buf.clear();
        if self.spare_bufs.len() < 64 {
            self.spare_bufs.push(w.buf);
        }
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        f.inflight -= 1;
        if let Some(e) = err {
            if f.error.is_none() {
                let rec = Arc::clone(&f.recording);
                let msg = format!("write failed: {e}");
                f.error = Some(msg.clone());
                self.fail(&rec, msg);
            }
        }
    }

    fn fail(&self, recording: &RecordingShared, reason: String) {
        if !recording.failed.swap(true, Relaxed) {
            self.counters.failed.fetch_add(1, Relaxed);
            recording.file_state.store(2, Relaxed);
            tracing::error!(recording = %recording.id, %reason, "recording failed; media keeps flowing");
        }
    }

    fn finish_ready(&mut self) {
        let ready: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.finish.is_some() && f.producers == 0 && f.inflight == 0 && !f.opening
            })
            .map(|(k, _)| *k)
            .collect();
        for key in ready {
            let Some(f) = self.files.remove(&key) else {
                continue;
            };
            self.finishing -= 1;
            self.finish(f);
        }
    }

    fn finish(&mut self, f: OpenFile) {
        let (streams, reason) = f.finish.unwrap_or((Vec::new(), StopReason::Shutdown));
        let done = FinishedRecording {
            header: f.header,
            index: f.index,
            streams,
            reason,
            dropped: f.recording.dropped.load(Relaxed),
            error: f.error,
            data_end: f.offset,
        };
        match self
            .store
            .finish(f.file.as_ref(), &done, self.fsync != FsyncPolicy::None)
        {
            Ok(path) => {
                self.counters.finished.fetch_add(1, Relaxed);
                if done.error.is_none() {
                    f.recording.file_state.store(1, Relaxed);
                }
                tracing::info!(recording = %f.recording.id, file = %path.display(), "recording finished");
            }
            Err(e) => self.fail(&f.recording, format!("cannot finish: {e:#}")),
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
}
