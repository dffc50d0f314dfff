//! The packet-worker side of recording: per-call block buffers filled by the media core.
//!
//! A recording is known to a [`RecordingTable`] (one per worker, inside its
//! [`super::MediaCore`]) from `start` to `stop`. Each accepted packet of an endpoint with a
//! record tap is appended to the recording's current [`BlockBuilder`]. A builder that is full,
//! or older than the flush interval, is *sealed*: handed out through
//! [`RecordingTable::poll_output`] for a writer thread to compress and write, and replaced by
//! one from the shared [`BufferPool`]. When the pool is empty (writers behind past the memory
//! budget) the packet is not recorded: it is counted, the recording is marked incomplete, and
//! forwarding is not affected. Once the writer has marked a recording failed (its disk is
//! full or broken, or it could not be started), its packets are only counted as dropped: the
//! worker hands its buffer back and takes no new one. Nothing here blocks, and nothing
//! allocates per packet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;

use linecord_recfile::block::BlockBuilder;
use linecord_recfile::{Event, EventRecord, RtpFields, StopReason, StreamId, StreamStats};

use super::rtp::RtpHeader;

/// Recording state shared between the control thread, the worker and the writer.
#[derive(Debug)]
pub struct RecordingShared {
    /// Numeric id (unique in this process), used to address the recording in commands.
    pub key: u64,
    /// The recording id (UUID text; the file name stem).
    pub id: String,
    /// Packets recorded: put into blocks, less those the writer could not write.
    pub packets: AtomicU64,
    /// Packets that could not be recorded (no buffer, or the file failed: dropped by the
    /// worker, or in a block the writer could not write).
    pub dropped: AtomicU64,
    /// Set by the writer when the file cannot be written (or was not started).
    pub failed: AtomicBool,
    /// The writer's view: 0 = writing, 1 = finished, 2 = failed.
    pub file_state: AtomicU8,
    /// Why the writer failed the recording (set once, with `failed`).
    pub error: OnceLock<String>,
}

impl RecordingShared {
    /// A new shared state for recording `id`.
    pub fn new(key: u64, id: String) -> Self {
        RecordingShared {
            key,
            id,
            packets: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            file_state: AtomicU8::new(0),
            error: OnceLock::new(),
        }
    }

    /// The writer could not write this recording: nothing more is recorded.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Relaxed)
    }
}

/// A pool of block buffers with a fixed memory budget, shared by all workers and writers.
///
/// Buffers are created on first use until the budget is reached, then recycled: workers
/// [`take`](Self::take) them, writers [`give`](Self::give) them back after compression. The
/// free list is a lock-free bounded queue touched once per block (every ~50 packets), never
/// per packet.
#[derive(Debug)]
pub struct BufferPool {
    free: ArrayQueue<BlockBuilder>,
    created: AtomicU64,
    max: u64,
    capacity: usize,
    /// Times a buffer was wanted and none could be had.
    pub exhausted: AtomicU64,
}

impl BufferPool {
    /// A pool of at most `budget_bytes / block_capacity` buffers of `block_capacity` bytes.
    pub fn new(budget_bytes: u64, block_capacity: usize) -> Self {
        let max = (budget_bytes / block_capacity.max(1) as u64).max(2);
        BufferPool {
            free: ArrayQueue::new(max as usize),
            created: AtomicU64::new(0),
            max,
            capacity: block_capacity,
            exhausted: AtomicU64::new(0),
        }
    }

    /// Capacity of each buffer.
    pub fn block_capacity(&self) -> usize {
        self.capacity
    }

    /// Buffers created so far.
    pub fn created(&self) -> u64 {
        self.created.load(Relaxed)
    }

    /// A cleared buffer, or `None` when the budget is used up (or the free list is busy).
    pub fn take(&self) -> Option<BlockBuilder> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        let n = self.created.fetch_add(1, Relaxed);
        if n < self.max {
            return Some(BlockBuilder::with_capacity(self.capacity));
        }
        self.created.fetch_sub(1, Relaxed);
        self.exhausted.fetch_add(1, Relaxed);
        None
    }

    /// Returns a buffer (cleared here).
    pub fn give(&self, mut b: BlockBuilder) {
        b.clear();
        // Never more buffers than `max` exist, so the queue cannot be full; if it were, the
        // buffer is simply freed.
        if self.free.push(b).is_err() {
            self.created.fetch_sub(1, Relaxed);
        }
    }
}

/// Where an endpoint's packets are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTap {
    /// [`RecordingShared::key`] of the recording.
    pub recording: u64,
    /// Stream id in the recording.
    pub stream: StreamId,
}

/// What the worker must pass to a writer.
#[derive(Debug)]
pub enum RecordOutput {
    /// A sealed block of `recording`.
    Block {
        /// The recording.
        recording: Arc<RecordingShared>,
        /// The records; the writer compresses them and gives the buffer back to the pool.
        block: BlockBuilder,
    },
    /// The last block of `recording` was output; the writer can write the footer.
    Finished {
        /// The recording.
        recording: Arc<RecordingShared>,
        /// Per-stream counts of what was written.
        streams: Vec<StreamStats>,
        /// Why it ended.
        reason: StopReason,
    },
}

struct Active {
    shared: Arc<RecordingShared>,
    /// Monotonic ns of the recording's start (record times are relative to it).
    start_ns: u64,
    block: Option<BlockBuilder>,
    /// When the current block got its first record.
    block_opened_ns: u64,
    paused: bool,
    /// Packets lost since the last `DataLost` event was written.
    unreported_loss: u64,
    streams: Vec<StreamStats>,
}

/// The recordings one worker is writing, and their pending output.
pub struct RecordingTable {
    pool: Arc<BufferPool>,
    flush_ns: u64,
    active: Vec<Option<Active>>,
    by_key: HashMap<u64, usize>,
    free_slots: Vec<usize>,
    output: VecDeque<RecordOutput>,
    /// Worst record header plus slack: a packet needs this much room besides its payload.
    headroom: usize,
}

fn us_since(start_ns: u64, now_ns: u64) -> u64 {
    now_ns.saturating_sub(start_ns) / 1000
}

impl RecordingTable {
    /// A table taking buffers from `pool`, sealing blocks older than `flush_ns`.
    pub fn new(pool: Arc<BufferPool>, flush_ns: u64) -> Self {
        RecordingTable {
            pool,
            flush_ns,
            active: Vec::new(),
            by_key: HashMap::new(),
            free_slots: Vec::new(),
            output: VecDeque::new(),
            headroom: 64,
        }
    }

    /// The slot of recording `key`, if it is active here.
    pub fn slot(&self, key: u64) -> Option<usize> {
        self.by_key.get(&key).copied()
    }

    /// Number of active recordings.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no recording is active.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Starts recording `shared` (its time base is `start_ns`); writes a `Started` event.
    pub fn start(&mut self, shared: Arc<RecordingShared>, start_ns: u64, now_ns: u64) {
        if self.by_key.contains_key(&shared.key) {
            return;
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.active.push(None);
            self.active.len() - 1
        });
        self.by_key.insert(shared.key, slot);
        self.active[slot] = Some(Active {
            shared,
            start_ns,
            block: None,
            block_opened_ns: now_ns,
            paused: false,
            unreported_loss: 0,
            streams: Vec::new(),
        });
        self.event(slot, Event::Started, now_ns);
    }

    /// Pauses or resumes; writes the event. Packets are not written while paused.
    pub fn set_paused(&mut self, key: u64, paused: bool, now_ns: u64) {
        let Some(slot) = self.slot(key) else { return };
        let Some(a) = self.active[slot].as_mut() else {
            return;
        };
        if a.paused == paused {
            return;
        }
        a.paused = paused;
        let ev = if paused {
            Event::Paused
        } else {
            Event::Resumed
        };
        self.event(slot, ev, now_ns);
    }

    /// Ends recording `key`: writes `Stopped`, seals the last block and queues
    /// [`RecordOutput::Finished`]. `net` gives per-stream loss/jitter as the receiver saw them.
    pub fn stop(
        &mut self,
        key: u64,
        reason: StopReason,
        net: &[(StreamId, i64, u32)],
        now_ns: u64,
    ) {
        let Some(slot) = self.slot(key) else { return };
        self.event(slot, Event::Stopped(reason), now_ns);
        self.by_key.remove(&key);
        self.free_slots.push(slot);
        let Some(mut a) = self.active[slot].take() else {
            return;
        };
        self.flush_loss(&mut a, now_ns);
        if let Some(b) = a.block.take() {
            self.output.push_back(RecordOutput::Block {
                recording: Arc::clone(&a.shared),
                block: b,
            });
        }
        for s in &mut a.streams {
            if let Some((_, lost, jitter)) = net.iter().find(|(id, _, _)| *id == s.stream) {
                s.lost = *lost;
                s.jitter = *jitter;
            }
        }
        self.output.push_back(RecordOutput::Finished {
            recording: a.shared,
            streams: a.streams,
            reason,
        });
    }

    /// Seals blocks older than the flush interval. Call every few tens of ms.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        for a in self.active.iter_mut().flatten() {
            if a.block.as_ref().is_some_and(|b| !b.is_empty())
                && now_ns.saturating_sub(a.block_opened_ns) >= self.flush_ns
            {
                if let Some(b) = a.block.take() {
                    self.output.push_back(RecordOutput::Block {
                        recording: Arc::clone(&a.shared),
                        block: b,
                    });
                }
            }
        }
    }

    /// Prefetches the state of recording slot `slot` (see [`super::MediaCore::prefetch`]).
    #[inline]
    pub fn prefetch_slot(&self, slot: usize) {
        if let Some(a) = self.active.get(slot) {
            super::core::prefetch_object(a);
        }
    }

    /// Prefetches what appending to recording slot `slot` reads through its state (after
    /// [`Self::prefetch_slot`]): the shared state, the block's next bytes, the stream counts.
    #[inline]
    pub fn prefetch_block(&self, slot: usize) {
        let Some(Some(a)) = self.active.get(slot) else {
            return;
        };
        super::core::prefetch_line(Arc::as_ptr(&a.shared).cast());
        if let Some(b) = a.block.as_ref() {
            for (p, len) in b.hot_memory() {
                let mut off = 0;
                while off < len {
                    super::core::prefetch_line(p.wrapping_add(off));
                    off += 64;
                }
            }
        }
        super::core::prefetch_line(a.streams.as_ptr().cast());
    }

    /// Next output for the writers.
    pub fn poll_output(&mut self) -> Option<RecordOutput> {
        self.output.pop_front()
    }

    /// Writes a `DataLost` event for loss not yet reported (needs a buffer; kept for later
    /// if none).
    fn flush_loss(&mut self, a: &mut Active, now_ns: u64) {
        if a.unreported_loss == 0 || a.shared.is_failed() {
            return;
        }
        let ev = EventRecord {
            at_us: us_since(a.start_ns, now_ns),
            event: Event::DataLost {
                packets: a.unreported_loss,
            },
        };
        if Self::ensure_room(&self.pool, &mut self.output, a, 256, now_ns, self.flush_ns) {
            if let Some(b) = a.block.as_mut() {
                b.push_event(&ev);
                a.unreported_loss = 0;
            }
        }
    }

    /// Hands the block of a failed recording to the writer (which counts what is in it and
    /// returns the buffer to the pool), so it holds no buffer any more.
    fn release(output: &mut VecDeque<RecordOutput>, a: &mut Active) {
        if let Some(b) = a.block.take() {
            output.push_back(RecordOutput::Block {
                recording: Arc::clone(&a.shared),
                block: b,
            });
        }
    }

    /// Makes sure `a` has a block with `need` bytes free, sealing the current one if needed.
    /// False when no buffer can be had.
    fn ensure_room(
        pool: &BufferPool,
        output: &mut VecDeque<RecordOutput>,
        a: &mut Active,
        need: usize,
        now_ns: u64,
        flush_ns: u64,
    ) -> bool {
        let full = a.block.as_ref().is_some_and(|b| {
            b.len() + need > b.capacity()
                || (!b.is_empty() && now_ns.saturating_sub(a.block_opened_ns) >= flush_ns)
        });
        if full {
            if let Some(b) = a.block.take() {
                output.push_back(RecordOutput::Block {
                    recording: Arc::clone(&a.shared),
                    block: b,
                });
            }
        }
        if a.block.is_none() {
            match pool.take() {
                Some(b) => {
                    a.block = Some(b);
                    a.block_opened_ns = now_ns;
                }
                None => return false,
            }
        }
        a.block
            .as_ref()
            .is_some_and(|b| b.len() + need <= b.capacity())
    }

    fn event(&mut self, slot: usize, event: Event, now_ns: u64) {
        let Some(mut a) = self.active.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if a.shared.is_failed() {
            // Nothing more reaches the file: the event is not written.
            Self::release(&mut self.output, &mut a);
            self.active[slot] = Some(a);
            return;
        }
        let ev = EventRecord {
            at_us: us_since(a.start_ns, now_ns),
            event,
        };
        if Self::ensure_room(
            &self.pool,
            &mut self.output,
            &mut a,
            512,
            now_ns,
            self.flush_ns,
        ) {
            if let Some(b) = a.block.as_mut() {
                b.push_event(&ev);
            }
        } else {
            a.unreported_loss += 1;
            a.shared.dropped.fetch_add(1, Relaxed);
        }
        self.active[slot] = Some(a);
    }

    /// Writes `event` into recording `key` (in order with its packets) unless paused.
    pub fn record_event(&mut self, slot: usize, key: u64, event: Event, now_ns: u64) {
        let live = self
            .active
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|a| a.shared.key == key && !a.paused);
        if live {
            self.event(slot, event, now_ns);
        }
    }

    /// Writes `event` into recording `key` whatever its slot (control-plane events).
    pub fn record_event_by_key(&mut self, key: u64, event: Event, now_ns: u64) {
        if let Some(slot) = self.slot(key) {
            self.event(slot, event, now_ns);
        }
    }

    /// Appends a packet received on a tapped endpoint. `rtp` is `None` for RTCP.
    pub fn record_packet(
        &mut self,
        slot: usize,
        key: u64,
        stream: StreamId,
        packet: &[u8],
        rtp: Option<&RtpHeader>,
        now_ns: u64,
    ) {
        let Some(a) = self.active.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        // A slot is reused after a stop: only the recording the tap names may write.
        if a.paused || a.shared.key != key {
            return;
        }
        if a.shared.is_failed() {
            Self::release(&mut self.output, a);
            a.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        let (fields, payload) = match rtp {
            Some(h) => (
                Some(RtpFields {
                    marker: h.marker,
                    payload_type: h.payload_type,
                    sequence: h.sequence,
                    timestamp: h.timestamp,
                    ssrc: h.ssrc,
                }),
                packet
                    .get(h.payload_offset..h.payload_offset + h.payload_len)
                    .unwrap_or_default(),
            ),
            None => (None, packet),
        };
        let need = payload.len() + self.headroom;
        if !Self::ensure_room(&self.pool, &mut self.output, a, need, now_ns, self.flush_ns) {
            a.unreported_loss += 1;
            a.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        let at = us_since(a.start_ns, now_ns);
        if a.unreported_loss > 0 {
            let ev = EventRecord {
                at_us: at,
                event: Event::DataLost {
                    packets: a.unreported_loss,
                },
            };
            if let Some(b) = a.block.as_mut() {
                b.push_event(&ev);
            }
            a.unreported_loss = 0;
        }
        let Some(b) = a.block.as_mut() else { return };
        b.push_packet(stream, at, fields.as_ref(), payload);
        a.shared.packets.fetch_add(1, Relaxed);
        let s = match a.streams.iter_mut().position(|s| s.stream == stream) {
            Some(i) => &mut a.streams[i],
            None => {
                // Once per stream per recording (a handful per call), not per packet.
                a.streams.push(StreamStats {
                    stream,
                    first_us: at,
                    ..Default::default()
                });
                let last = a.streams.len() - 1;
                &mut a.streams[last]
            }
        };
        s.packets += 1;
        s.payload_bytes += payload.len() as u64;
        s.last_us = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linecord_recfile::block::{open_block, seal};
    use linecord_recfile::Record;

    fn header(seq: u16) -> (Vec<u8>, RtpHeader) {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[seq as u8; 160]);
        let h = crate::media::rtp::parse_rtp(&p).unwrap();
        (p, h)
    }

    fn drain(t: &mut RecordingTable) -> Vec<RecordOutput> {
        std::iter::from_fn(|| t.poll_output()).collect()
    }

    fn records(out: &[RecordOutput]) -> Vec<Record> {
        let mut all = Vec::new();
        for o in out {
            if let RecordOutput::Block { block, .. } = o {
                let mut framed = Vec::new();
                seal(block, &mut framed);
                all.extend(open_block(&framed).unwrap().1);
            }
        }
        all
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn packets_events_and_flush_interval() {
        let pool = Arc::new(BufferPool::new(1 << 20, 16 * 1024));
        let mut t = RecordingTable::new(Arc::clone(&pool), 500 * MS);
        let shared = Arc::new(RecordingShared::new(1, "r1".into()));
        t.start(Arc::clone(&shared), 0, 0);
        let slot = t.slot(1).unwrap();
        for seq in 0..10u16 {
            let (p, h) = header(seq);
            t.record_packet(slot, 1, 0, &p, Some(&h), u64::from(seq) * 20 * MS);
        }
        assert!(
            drain(&mut t).is_empty(),
            "nothing sealed before the interval"
        );
        t.handle_timeout(600 * MS);
        let out = drain(&mut t);
        let recs = records(&out);
        assert_eq!(recs.len(), 11);
        assert!(matches!(&recs[0], Record::Event(e) if e.event == Event::Started));
        match &recs[3] {
            Record::Packet(p) => {
                assert_eq!(p.arrival_us, 40_000);
                assert_eq!(p.rtp.unwrap().sequence, 2);
                assert_eq!(p.payload, vec![2u8; 160]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(shared.packets.load(Relaxed), 10);
    }

    #[test]
    fn pause_writes_events_and_no_payload() {
        let pool = Arc::new(BufferPool::new(1 << 20, 16 * 1024));
        let mut t = RecordingTable::new(pool, 500 * MS);
        t.start(Arc::new(RecordingShared::new(1, "r".into())), 0, 0);
        let slot = t.slot(1).unwrap();
        let (p, h) = header(1);
        t.record_packet(slot, 1, 0, &p, Some(&h), MS);
        t.set_paused(1, true, 2 * MS);
        t.record_packet(slot, 1, 0, &p, Some(&h), 3 * MS);
        t.set_paused(1, false, 4 * MS);
        t.record_packet(slot, 1, 0, &p, Some(&h), 5 * MS);
        t.stop(1, StopReason::Deleted, &[(0, 3, 9)], 6 * MS);
        let out = drain(&mut t);
        let kinds: Vec<String> = records(&out)
            .iter()
            .map(|r| match r {
                Record::Packet(_) => "pkt".to_string(),
                Record::Event(e) => format!("{:?}", e.event),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Started",
                "pkt",
                "Paused",
                "Resumed",
                "pkt",
                "Stopped(Deleted)"
            ]
        );
        match out.last() {
            Some(RecordOutput::Finished {
                streams, reason, ..
            }) => {
                assert_eq!(*reason, StopReason::Deleted);
                assert_eq!(
                    (streams[0].packets, streams[0].lost, streams[0].jitter),
                    (2, 3, 9)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(t.is_empty());
    }

    #[test]
    fn full_blocks_are_sealed_and_exhaustion_drops_and_reports() {
        // Budget of exactly 2 buffers of 4 KiB: ~20 packets each.
        let pool = Arc::new(BufferPool::new(8 * 1024, 4 * 1024));
        let mut t = RecordingTable::new(Arc::clone(&pool), 10_000 * MS);
        let shared = Arc::new(RecordingShared::new(9, "r".into()));
        t.start(Arc::clone(&shared), 0, 0);
        let slot = t.slot(9).unwrap();
        for seq in 0..100u16 {
            let (p, h) = header(seq);
            t.record_packet(slot, 9, 0, &p, Some(&h), u64::from(seq) * MS);
        }
        let dropped = shared.dropped.load(Relaxed);
        let written = shared.packets.load(Relaxed);
        assert!(dropped > 0 && written > 0);
        assert_eq!(dropped + written, 100);
        assert!(pool.exhausted.load(Relaxed) > 0);
        // The writer catches up: buffers come back, recording continues and the loss is
        // written as an event.
        for o in drain(&mut t) {
            if let RecordOutput::Block { block, .. } = o {
                pool.give(block);
            }
        }
        let (p, h) = header(500);
        t.record_packet(slot, 9, 0, &p, Some(&h), 200 * MS);
        t.stop(9, StopReason::Stopped, &[], 300 * MS);
        let recs = records(&drain(&mut t));
        assert!(recs.iter().any(|r| matches!(r, Record::Event(EventRecord { event: Event::DataLost { packets }, .. }) if *packets == dropped)));
    }

    #[test]
    fn a_failed_recording_hands_its_buffer_back_and_only_counts_packets() {
        let pool = Arc::new(BufferPool::new(1 << 20, 16 * 1024));
        let mut t = RecordingTable::new(Arc::clone(&pool), 10_000 * MS);
        let shared = Arc::new(RecordingShared::new(3, "r".into()));
        t.start(Arc::clone(&shared), 0, 0);
        let slot = t.slot(3).unwrap();
        for seq in 0..5u16 {
            let (p, h) = header(seq);
            t.record_packet(slot, 3, 0, &p, Some(&h), u64::from(seq) * MS);
        }
        assert!(drain(&mut t).is_empty(), "the block is still being filled");
        // The writer fails the recording (disk full).
        shared.failed.store(true, Relaxed);
        let created = pool.created();
        for seq in 5..105u16 {
            let (p, h) = header(seq);
            t.record_packet(slot, 3, 0, &p, Some(&h), u64::from(seq) * MS);
        }
        t.set_paused(3, true, 200 * MS);
        t.stop(3, StopReason::Deleted, &[], 300 * MS);
        let out = drain(&mut t);
        // The partly filled block goes to the writer (which counts it and frees the buffer);
        // nothing more is written, and no new buffer is taken.
        let recs = records(&out);
        assert_eq!(
            recs.iter()
                .filter(|r| matches!(r, Record::Packet(_)))
                .count(),
            5
        );
        assert!(!recs
            .iter()
            .any(|r| matches!(r, Record::Event(e) if matches!(e.event, Event::Paused | Event::Stopped(_)))));
        assert!(
            matches!(out.last(), Some(RecordOutput::Finished { streams, .. }) if streams[0].packets == 5)
        );
        assert_eq!(pool.created(), created, "no buffer taken after the failure");
        assert_eq!(shared.dropped.load(Relaxed), 100);
        assert_eq!(shared.packets.load(Relaxed), 5);
    }
}
