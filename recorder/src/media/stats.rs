//! Per-stream reception statistics: RFC 3550 Appendix A.1 sequence tracking (extended highest
//! sequence, probation, loss) and A.8 interarrival jitter, plus the counters an operator reads
//! through NG `query`.
//!
//! [`SequenceTracker`] is plain state owned by the packet worker that receives the stream;
//! [`StreamStats`] is the published view: lock-free atomics written by that worker and read by
//! the control thread.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// RFC 3550 A.1: a jump of more than this many sequence numbers is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets this far behind the highest are late duplicates/reorders.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 A.1: sequential packets needed before a new source is valid.
const MIN_SEQUENTIAL: u8 = 2;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Receiver-side state for one RTP source on one port (RFC 3550 A.1 and A.8).
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    ssrc: Option<u32>,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u8,
    received: u64,
    /// Previous relative transit time (arrival − RTP timestamp), in RTP clock units.
    transit: Option<u32>,
    /// Jitter estimate scaled by 16 (RFC 3550 A.8).
    jitter_q4: u32,
}

/// What a new packet meant for the sequence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqUpdate {
    /// In sequence or a tolerable gap/reorder: counted.
    Valid,
    /// The source is still on probation or made a large jump: not counted yet.
    Probation,
    /// A new SSRC appeared; state restarted.
    NewSource,
}

impl SequenceTracker {
    fn init(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.transit = None;
    }

    /// Feeds one RTP packet: sequence number, RTP timestamp, SSRC, and its arrival time
    /// converted to the stream's RTP clock (`arrival_rtp`, wrapping).
    pub fn update(&mut self, seq: u16, rtp_ts: u32, ssrc: u32, arrival_rtp: u32) -> SeqUpdate {
        if self.ssrc != Some(ssrc) {
            self.ssrc = Some(ssrc);
            self.init(seq);
            self.max_seq = seq.wrapping_sub(1);
            self.probation = MIN_SEQUENTIAL;
            self.jitter_q4 = 0;
            let _ = self.update_seq(seq);
            self.update_jitter(rtp_ts, arrival_rtp);
            return SeqUpdate::NewSource;
        }
        let r = self.update_seq(seq);
        if r == SeqUpdate::Valid {
            self.update_jitter(rtp_ts, arrival_rtp);
        }
        r
    }

    // RFC 3550 A.1 update_seq(), with probation for new sources.
    fn update_seq(&mut self, seq: u16) -> SeqUpdate {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init(seq);
                    self.received += 1;
                    return SeqUpdate::Valid;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqUpdate::Probation;
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A very large jump: accept it as a restart only if the next packet follows it.
            if u32::from(seq) == self.bad_seq {
                self.init(seq);
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return SeqUpdate::Probation;
            }
        }
        // else: duplicate or reordered packet, counted as received.
        self.received += 1;
        SeqUpdate::Valid
    }

    // RFC 3550 A.8: J(i) = J(i-1) + (|D(i-1,i)| - J(i-1))/16, kept scaled by 16.
    fn update_jitter(&mut self, rtp_ts: u32, arrival_rtp: u32) {
        let transit = arrival_rtp.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Extended highest sequence number received (RFC 3550 A.1 `cycles + max_seq`).
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected minus packets received, since the source became valid (RFC 3550
    /// A.3 cumulative loss; negative with duplicates).
    pub fn lost(&self) -> i64 {
        if self.probation > 0 || self.ssrc.is_none() {
            return 0;
        }
        let expected = i64::from(self.extended_max()) - i64::from(self.base_seq) + 1;
        expected - self.received as i64
    }

    /// Interarrival jitter in RTP clock units (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The SSRC currently tracked, if any.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }
}

/// Converts a monotonic arrival time in nanoseconds to RTP clock units (wrapping, as RTP
/// timestamps do).
pub fn nanos_to_rtp(now_ns: u64, clock_rate: u32) -> u32 {
    (u128::from(now_ns) * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// Published counters of one stream (one local port), shared between the worker that
/// receives it and the control thread that reports it. Written with relaxed atomics: no
/// locks on the packet path.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Packets received on this port and accepted.
    pub packets: AtomicU64,
    /// Bytes (UDP payload) received and accepted.
    pub bytes: AtomicU64,
    /// Packets received but not forwarded (malformed, wrong source, no destination).
    pub errors: AtomicU64,
    /// Cumulative RTP packets lost (RFC 3550 A.3), stored as two's complement.
    pub lost: AtomicU64,
    /// Interarrival jitter in RTP clock units.
    pub jitter: AtomicU32,
    /// Last SSRC seen.
    pub ssrc: AtomicU32,
    /// Arrival time of the last accepted packet (monotonic ns since the process epoch; 0 =
    /// never).
    pub last_packet_ns: AtomicU64,
}

/// A plain copy of [`StreamStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`StreamStats::packets`].
    pub packets: u64,
    /// See [`StreamStats::bytes`].
    pub bytes: u64,
    /// See [`StreamStats::errors`].
    pub errors: u64,
    /// See [`StreamStats::lost`].
    pub lost: i64,
    /// See [`StreamStats::jitter`].
    pub jitter: u32,
    /// See [`StreamStats::ssrc`].
    pub ssrc: u32,
    /// See [`StreamStats::last_packet_ns`].
    pub last_packet_ns: u64,
}

impl StreamStats {
    /// Reads every counter (each individually consistent).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            lost: self.lost.load(Relaxed) as i64,
            jitter: self.jitter.load(Relaxed),
            ssrc: self.ssrc.load(Relaxed),
            last_packet_ns: self.last_packet_ns.load(Relaxed),
        }
    }

    /// Counts one accepted packet of `len` bytes at `now_ns`.
    #[inline]
    pub fn count_packet(&self, len: usize, now_ns: u64) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len as u64, Relaxed);
        self.last_packet_ns.store(now_ns, Relaxed);
    }

    /// Counts one rejected packet.
    #[inline]
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Publishes the RTP reception state of `tracker`.
    #[inline]
    pub fn publish_rtp(&self, tracker: &SequenceTracker) {
        self.lost.store(tracker.lost() as u64, Relaxed);
        self.jitter.store(tracker.jitter(), Relaxed);
        self.ssrc.store(tracker.ssrc().unwrap_or(0), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets `seqs` 20 ms apart at 8 kHz with perfect timestamps.
    fn feed(t: &mut SequenceTracker, seqs: impl IntoIterator<Item = u16>) {
        for seq in seqs {
            let ts = u32::from(seq).wrapping_mul(160);
            t.update(seq, ts, 7, ts.wrapping_add(1000));
        }
    }

    #[test]
    fn no_loss_in_sequence_and_across_wrap() {
        let mut t = SequenceTracker::default();
        feed(&mut t, (65_000u32..66_000).map(|s| s as u16));
        assert_eq!(t.lost(), 0);
        assert_eq!(t.extended_max(), 65_535 + 1 + (66_000 - 65_536 - 1));
        assert_eq!(t.jitter(), 0);
    }

    #[test]
    fn gaps_count_as_loss_and_reorder_does_not() {
        let mut t = SequenceTracker::default();
        feed(&mut t, [1, 2, 3, 4, 6, 5, 9, 10]);
        // Expected 1..=10 (10 packets), received 8: 7 and 8 missing.
        assert_eq!(t.lost(), 2);
        // A duplicate makes loss go down (RFC 3550 A.3 semantics).
        feed(&mut t, [10]);
        assert_eq!(t.lost(), 1);
    }

    #[test]
    fn new_ssrc_restarts() {
        let mut t = SequenceTracker::default();
        feed(&mut t, [1, 2, 3, 10]);
        assert_eq!(t.lost(), 6);
        assert_eq!(t.update(500, 0, 8, 0), SeqUpdate::NewSource);
        assert_eq!(t.update(501, 160, 8, 160), SeqUpdate::Valid);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn large_jump_needs_confirmation() {
        let mut t = SequenceTracker::default();
        feed(&mut t, [1, 2, 3]);
        assert_eq!(t.update(20_000, 0, 7, 0), SeqUpdate::Probation);
        assert_eq!(t.update(20_001, 160, 7, 160), SeqUpdate::Valid);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn jitter_converges_to_mean_deviation() {
        // Packets alternate arriving 0 and 80 timestamp units late: |D| = 80 each time, so J
        // converges to 80 (RFC 3550 A.8 is an exponential average of |D|).
        let mut t = SequenceTracker::default();
        for i in 0u32..2000 {
            let ts = i * 160;
            let late = if i % 2 == 0 { 0 } else { 80 };
            t.update(i as u16, ts, 1, ts + late);
        }
        assert!((78..=80).contains(&t.jitter()), "jitter {}", t.jitter());
    }

    #[test]
    fn rtp_clock_conversion() {
        assert_eq!(nanos_to_rtp(1_000_000_000, 8000), 8000);
        assert_eq!(nanos_to_rtp(20_000_000, 8000), 160);
        assert_eq!(nanos_to_rtp(20_000_000, 48_000), 960);
    }

    #[test]
    fn published_snapshot() {
        let s = StreamStats::default();
        s.count_packet(172, 5);
        s.count_packet(172, 9);
        s.count_error();
        let mut t = SequenceTracker::default();
        feed(&mut t, [1, 2, 4]);
        s.publish_rtp(&t);
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.packets,
                snap.bytes,
                snap.errors,
                snap.lost,
                snap.last_packet_ns
            ),
            (2, 344, 1, 1, 9)
        );
        assert_eq!(snap.ssrc, 7);
    }
}
