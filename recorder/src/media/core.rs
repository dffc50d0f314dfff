//! The per-worker media core: a table of local media ports and the decision for each packet.
//!
//! A packet worker (any backend) owns one [`MediaCore`]. It applies the endpoint changes the
//! control thread sends ([`MediaCore::upsert`], [`MediaCore::remove`]), and for every received
//! datagram calls [`MediaCore::handle_packet`] with the bytes, the local port it arrived on,
//! its source and the current time; the returned [`Action`] says where to send it. Learned
//! peer addresses are reported through [`MediaCore::poll_event`] so the control thread can
//! show them and share them with other workers. Nothing here does I/O, reads a clock or
//! allocates per packet.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use linecord_recfile::{Event, StopReason, StreamId};

use super::record::{RecordOutput, RecordTap, RecordingShared, RecordingTable};
use super::rtp::{self, PacketKind};
use super::stats::{nanos_to_rtp, SequenceTracker, StreamStats};

/// Which half of an RTP/RTCP port pair an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The RTP port (even); also carries RTCP when the parties multiplex (RFC 5761).
    Rtp,
    /// The RTCP port (RTP port + 1).
    Rtcp,
}

/// How the source address of a party's packets is learned and enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latching {
    /// rtpengine's default (symmetric RTP): latch onto the source of the first packet and send
    /// to it from then on; packets from other sources are still forwarded.
    Symmetric,
    /// NG flag `strict source`: only packets from the signalled address are accepted (when the
    /// signalling carried none, the first source is learned and then enforced).
    Strict,
    /// NG flag `media handover`: re-latch to every new source.
    Handover,
    /// NG flag `asymmetric`: never latch; always send to the signalled address.
    Off,
}

/// One local media port as the control thread configures it.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The local port (on the media interface) that this party sends to.
    pub port: u16,
    /// RTP or RTCP half of the pair.
    pub component: Component,
    /// The party's address from signalling (SDP, `received from`, `media address`); `None`
    /// while unknown or on hold (0.0.0.0).
    pub peer: Option<SocketAddr>,
    /// Latching rule for this party.
    pub latching: Latching,
    /// The local port of the other party's matching component: packets arriving here are
    /// sent out from that port to that endpoint's peer. `None` until the other side exists.
    pub forward_port: Option<u16>,
    /// RTP clock rate of the stream (for jitter), from the SDP codec.
    pub clock_rate: u32,
    /// Published counters, shared with the control thread.
    pub stats: Arc<StreamStats>,
    /// Record what this party sends here into this recording stream, if recording.
    pub record: Option<RecordTap>,
    /// RTP payload type of RFC 4733 telephone-events on this stream, if negotiated.
    pub dtmf_payload_type: Option<u8>,
}

/// What to do with one received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the datagram, unchanged, from local port `from_port` to `to`.
    Forward {
        /// Local port to send from (the other party's port).
        from_port: u16,
        /// Destination: the other party's latched or signalled address.
        to: SocketAddr,
    },
    /// Do not forward it.
    Drop(DropReason),
}

/// Why a datagram was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No endpoint on that local port (stray or late packet).
    UnknownPort,
    /// Not a valid RTP/RTCP packet (truncated header, wrong version, oversized).
    Malformed,
    /// Source is not the party's address and `strict source` is set.
    SourceMismatch,
    /// The other party's address is not known yet (before the answer, or on hold).
    NoDestination,
}

/// Something the control thread should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreEvent {
    /// The endpoint on `port` latched onto (or moved to) `addr`.
    Latched {
        /// Local port of the endpoint.
        port: u16,
        /// The learned peer address.
        addr: SocketAddr,
    },
}

/// Per-core packet counters (plain integers: one writer; the shell publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreCounters {
    /// Datagrams handed to the core.
    pub received: u64,
    /// Datagrams with a forward action.
    pub forwarded: u64,
    /// Dropped: unknown local port.
    pub unknown_port: u64,
    /// Dropped: malformed RTP/RTCP.
    pub malformed: u64,
    /// Dropped: wrong source under `strict source`.
    pub source_mismatch: u64,
    /// Dropped: destination unknown.
    pub no_destination: u64,
}

/// Most pending events kept; beyond this they are counted as lost (the control thread drains
/// them every loop, so this only fills if it stalls).
const MAX_PENDING_EVENTS: usize = 4096;

struct Endpoint {
    config: EndpointConfig,
    /// Slot of `config.record` in the recording table, resolved when configured.
    record_slot: Option<usize>,
    latched: Option<SocketAddr>,
    tracker: SequenceTracker,
    /// RTP timestamp of the last DTMF event recorded (its end packet is sent three times).
    last_dtmf_ts: Option<u32>,
}

impl Endpoint {
    /// Where packets for this party go: the learned address, else the signalled one.
    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.config.peer)
    }
}

/// Asks the CPU to bring the cache line at `p` into L1 (a hint: never faults, any address).
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it does not fault on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `*v`.
#[inline(always)]
pub(crate) fn prefetch_object<T>(v: &T) {
    let p = (v as *const T).cast::<u8>();
    let mut off = 0;
    while off < std::mem::size_of::<T>() {
        prefetch_line(p.wrapping_add(off));
        off += 64;
    }
}

/// The endpoint table of one packet worker and its forwarding logic.
pub struct MediaCore {
    port_min: u16,
    endpoints: Vec<Option<Box<Endpoint>>>,
    events: VecDeque<CoreEvent>,
    counters: CoreCounters,
    recordings: Option<RecordingTable>,
    /// Events dropped because the queue was full.
    pub events_lost: u64,
}

impl MediaCore {
    /// A core for local ports `port_min..=port_max` (the table is indexed by port, so a
    /// lookup is one bounds check).
    pub fn new(port_min: u16, port_max: u16) -> Self {
        let len = usize::from(port_max.saturating_sub(port_min)) + 1;
        MediaCore {
            port_min,
            endpoints: (0..len).map(|_| None).collect(),
            events: VecDeque::with_capacity(64),
            counters: CoreCounters::default(),
            recordings: None,
            events_lost: 0,
        }
    }

    /// Enables recording: tapped endpoints append their packets to `table`.
    pub fn with_recordings(mut self, table: RecordingTable) -> Self {
        self.recordings = Some(table);
        self
    }

    fn resolve_record_slot(&self, tap: Option<RecordTap>) -> Option<usize> {
        self.recordings.as_ref()?.slot(tap?.recording)
    }

    /// Starts recording `shared`; record times count from `start_ns`. Endpoints join it when
    /// they are (re)configured with its tap.
    pub fn start_recording(&mut self, shared: Arc<RecordingShared>, start_ns: u64, now_ns: u64) {
        if let Some(t) = self.recordings.as_mut() {
            t.start(shared, start_ns, now_ns);
        }
    }

    /// Pauses (`true`) or resumes recording `key`.
    pub fn pause_recording(&mut self, key: u64, paused: bool, now_ns: u64) {
        if let Some(t) = self.recordings.as_mut() {
            t.set_paused(key, paused, now_ns);
        }
    }

    /// Stops recording `key` (its last block and the finish marker become output).
    /// `net` carries per-stream (stream, lost, jitter) for the footer.
    pub fn stop_recording(
        &mut self,
        key: u64,
        reason: StopReason,
        net: &[(StreamId, i64, u32)],
        now_ns: u64,
    ) {
        if let Some(t) = self.recordings.as_mut() {
            t.stop(key, reason, net, now_ns);
        }
        for ep in self.endpoints.iter_mut().flatten() {
            if ep.config.record.is_some_and(|r| r.recording == key) {
                ep.record_slot = None;
            }
        }
    }

    /// Writes a control-plane event (e.g. a stream added by a re-INVITE) into recording `key`.
    pub fn record_event(&mut self, key: u64, event: Event, now_ns: u64) {
        if let Some(t) = self.recordings.as_mut() {
            t.record_event_by_key(key, event, now_ns);
        }
    }

    /// Seals recording blocks older than the flush interval. Call every few tens of ms.
    pub fn handle_timeout(&mut self, now_ns: u64) {
        if let Some(t) = self.recordings.as_mut() {
            t.handle_timeout(now_ns);
        }
    }

    /// Next sealed block or finished recording for the writers. Call after each batch.
    pub fn poll_record_output(&mut self) -> Option<RecordOutput> {
        self.recordings.as_mut()?.poll_output()
    }

    fn slot(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.port_min)?);
        (i < self.endpoints.len()).then_some(i)
    }

    /// Adds an endpoint or changes its configuration. Latching state survives a change unless
    /// the signalled peer address changed (a re-INVITE moved the party: learn it again).
    /// Ports outside the core's range are ignored.
    pub fn upsert(&mut self, config: EndpointConfig) {
        let Some(i) = self.slot(config.port) else {
            return;
        };
        let record_slot = self.resolve_record_slot(config.record);
        match &mut self.endpoints[i] {
            Some(ep) => {
                if ep.config.peer != config.peer || ep.config.latching != config.latching {
                    ep.latched = None;
                }
                ep.config = config;
                ep.record_slot = record_slot;
            }
            slot @ None => {
                *slot = Some(Box::new(Endpoint {
                    config,
                    record_slot,
                    latched: None,
                    tracker: SequenceTracker::default(),
                    last_dtmf_ts: None,
                }))
            }
        }
    }

    /// Records an address another worker learned for `port` (multi-queue backends).
    pub fn set_latched(&mut self, port: u16, addr: SocketAddr) {
        if let Some(ep) = self.slot(port).and_then(|i| self.endpoints[i].as_mut()) {
            ep.latched = Some(addr);
        }
    }

    /// Removes an endpoint; later packets to its port are [`DropReason::UnknownPort`].
    pub fn remove(&mut self, port: u16) {
        if let Some(i) = self.slot(port) {
            self.endpoints[i] = None;
        }
    }

    /// Whether `port` has an endpoint.
    pub fn contains(&self, port: u16) -> bool {
        self.slot(port).is_some_and(|i| self.endpoints[i].is_some())
    }

    /// The next event for the control thread, if any. Call after each batch.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.pop_front()
    }

    /// The counters so far.
    pub fn counters(&self) -> CoreCounters {
        self.counters
    }

    fn push_event(&mut self, e: CoreEvent) {
        if self.events.len() < MAX_PENDING_EVENTS {
            self.events.push_back(e);
        } else {
            self.events_lost += 1;
        }
    }

    /// Hints the CPU to fetch what [`Self::handle_packet`] will read for packets to the
    /// local ports `ports` (the destinations of the next frames of a batch), so the cache
    /// misses of a batch overlap instead of each packet waiting for its own. Call it once
    /// per batch (or per part of one) before handling those packets; it changes nothing.
    ///
    /// The table is walked level by level over all of `ports` (endpoint; its statistics,
    /// the other party's endpoint and the recording; the recording's block), each level
    /// reading only what the previous one prefetched.
    pub fn prefetch(&self, ports: &[u16]) {
        let ep = |port: u16| {
            self.slot(port)
                .and_then(|i| self.endpoints.get(i))
                .and_then(|e| e.as_deref())
        };
        for &port in ports {
            if let Some(e) = ep(port) {
                prefetch_object(e);
            }
        }
        for &port in ports {
            let Some(e) = ep(port) else { continue };
            prefetch_object(&*e.config.stats);
            if let Some(f) = e.config.forward_port.and_then(ep) {
                prefetch_object(f);
            }
            if let (Some(slot), Some(rec)) = (e.record_slot, self.recordings.as_ref()) {
                rec.prefetch_slot(slot);
            }
        }
        if let Some(rec) = self.recordings.as_ref() {
            for &port in ports {
                if let Some(slot) = ep(port).and_then(|e| e.record_slot) {
                    rec.prefetch_block(slot);
                }
            }
        }
    }

    /// Decides what to do with `packet`, received on `local_port` from `source` at `now_ns`
    /// (monotonic nanoseconds, any fixed epoch). Updates latching and statistics.
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        local_port: u16,
        source: SocketAddr,
        now_ns: u64,
    ) -> Action {
        self.counters.received += 1;
        let action = self.decide(packet, local_port, source, now_ns);
        match action {
            Action::Forward { .. } => self.counters.forwarded += 1,
            Action::Drop(DropReason::UnknownPort) => self.counters.unknown_port += 1,
            Action::Drop(DropReason::Malformed) => self.counters.malformed += 1,
            Action::Drop(DropReason::SourceMismatch) => self.counters.source_mismatch += 1,
            Action::Drop(DropReason::NoDestination) => self.counters.no_destination += 1,
        }
        action
    }

    /// Counts a datagram the shell had to drop before the core saw it (e.g. larger than the
    /// receive buffer), against the endpoint of `local_port`.
    pub fn count_oversized(&mut self, local_port: u16) {
        self.counters.received += 1;
        self.counters.malformed += 1;
        if let Some(ep) = self
            .slot(local_port)
            .and_then(|i| self.endpoints[i].as_ref())
        {
            ep.config.stats.count_error();
        }
    }

    fn decide(&mut self, packet: &[u8], local_port: u16, source: SocketAddr, now: u64) -> Action {
        let Some(i) = self.slot(local_port) else {
            return Action::Drop(DropReason::UnknownPort);
        };
        let Some(ep) = self.endpoints[i].as_deref_mut() else {
            return Action::Drop(DropReason::UnknownPort);
        };
        let kind = match rtp::classify(packet) {
            Ok(kind) => kind,
            Err(_) => {
                ep.config.stats.count_error();
                return Action::Drop(DropReason::Malformed);
            }
        };
        if ep.config.component == Component::Rtcp && matches!(kind, PacketKind::Rtp(_)) {
            // RTP on the RTCP port is not ours to relay.
            ep.config.stats.count_error();
            return Action::Drop(DropReason::Malformed);
        }

        // Latching (rtpengine semantics, see `Latching`).
        let mut learned = None;
        match ep.config.latching {
            Latching::Off => {}
            Latching::Symmetric => {
                if ep.latched.is_none() {
                    learned = Some(source);
                }
            }
            Latching::Handover => {
                if ep.latched != Some(source) {
                    learned = Some(source);
                }
            }
            Latching::Strict => match ep.latched.or(ep.config.peer) {
                Some(expected) if expected != source => {
                    ep.config.stats.count_error();
                    return Action::Drop(DropReason::SourceMismatch);
                }
                Some(_) => {}
                None => learned = Some(source),
            },
        }
        if let Some(addr) = learned {
            ep.latched = Some(addr);
        }

        ep.config.stats.count_packet(packet.len(), now);
        let mut ssrc_change = None;
        let rtp_header = match kind {
            PacketKind::Rtp(h) => {
                let arrival = nanos_to_rtp(now, ep.config.clock_rate);
                let old = ep.tracker.ssrc();
                ep.tracker.update(h.sequence, h.timestamp, h.ssrc, arrival);
                ep.config.stats.publish_rtp(&ep.tracker);
                if let Some(old) = old.filter(|o| *o != h.ssrc) {
                    ssrc_change = Some((old, h.ssrc));
                }
                Some(h)
            }
            PacketKind::Rtcp => None,
        };
        if let (Some(slot), Some(tap), Some(rec)) =
            (ep.record_slot, ep.config.record, self.recordings.as_mut())
        {
            if let Some((old, new)) = ssrc_change {
                let ev = Event::SsrcChanged {
                    stream: tap.stream,
                    old,
                    new,
                };
                rec.record_event(slot, tap.recording, ev, now);
            }
            rec.record_packet(
                slot,
                tap.recording,
                tap.stream,
                packet,
                rtp_header.as_ref(),
                now,
            );
            let dtmf_pt = ep.config.dtmf_payload_type;
            if let Some(h) = rtp_header.filter(|h| Some(h.payload_type) == dtmf_pt) {
                // RFC 4733 §2.3: event, E|R|volume, duration. The end packet (E set) is
                // repeated with the same timestamp: record the event once, at its end.
                let p = packet.get(h.payload_offset..h.payload_offset + h.payload_len);
                if let Some(&[event, flags, d0, d1, ..]) = p {
                    if flags & 0x80 != 0 && ep.last_dtmf_ts != Some(h.timestamp) {
                        ep.last_dtmf_ts = Some(h.timestamp);
                        let ev = Event::Dtmf {
                            stream: tap.stream,
                            event,
                            duration: u16::from_be_bytes([d0, d1]),
                            volume: flags & 0x3f,
                        };
                        rec.record_event(slot, tap.recording, ev, now);
                    }
                }
            }
        }
        let forward_port = ep.config.forward_port;
        if let Some(addr) = learned {
            self.push_event(CoreEvent::Latched {
                port: local_port,
                addr,
            });
        }

        let out = forward_port
            .and_then(|p| self.slot(p))
            .and_then(|j| self.endpoints[j].as_deref());
        match out.and_then(|o| Some((o.config.port, o.destination()?))) {
            Some((from_port, to)) if to.is_ipv4() == source.is_ipv4() => {
                Action::Forward { from_port, to }
            }
            _ => Action::Drop(DropReason::NoDestination),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "192.0.2.10:4000";
    const B: &str = "198.51.100.20:5000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp_packet(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    fn endpoint(port: u16, peer: Option<&str>, fwd: u16, latching: Latching) -> EndpointConfig {
        EndpointConfig {
            port,
            component: Component::Rtp,
            peer: peer.map(addr),
            latching,
            forward_port: Some(fwd),
            clock_rate: 8000,
            stats: Arc::default(),
            record: None,
            dtmf_payload_type: None,
        }
    }

    /// A call: A talks to port 30000, B to port 30002.
    fn call(latching: Latching) -> MediaCore {
        let mut core = MediaCore::new(30_000, 30_099);
        core.upsert(endpoint(30_000, Some(A), 30_002, latching));
        core.upsert(endpoint(30_002, Some(B), 30_000, latching));
        core
    }

    #[test]
    fn forwards_both_ways_from_the_other_port() {
        let mut core = call(Latching::Symmetric);
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_000, addr(A), 0),
            Action::Forward {
                from_port: 30_002,
                to: addr(B)
            }
        );
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_002, addr(B), 0),
            Action::Forward {
                from_port: 30_000,
                to: addr(A)
            }
        );
        assert_eq!(core.counters().forwarded, 2);
    }

    #[test]
    fn symmetric_latching_learns_first_source_and_sends_there() {
        let mut core = call(Latching::Symmetric);
        let nat = addr("203.0.113.5:7777");
        core.handle_packet(&rtp_packet(1), 30_000, nat, 0);
        assert_eq!(
            core.poll_event(),
            Some(CoreEvent::Latched {
                port: 30_000,
                addr: nat
            })
        );
        // B's packets now go to the latched NAT address, not the SDP address.
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_002, addr(B), 1),
            Action::Forward {
                from_port: 30_000,
                to: nat
            }
        );
        // A later, different source is still forwarded but does not move the latch.
        let other = addr("203.0.113.6:1");
        assert!(matches!(
            core.handle_packet(&rtp_packet(2), 30_000, other, 2),
            Action::Forward { .. }
        ));
        assert_eq!(
            core.handle_packet(&rtp_packet(2), 30_002, addr(B), 3),
            Action::Forward {
                from_port: 30_000,
                to: nat
            }
        );
    }

    #[test]
    fn strict_source_drops_other_sources() {
        let mut core = call(Latching::Strict);
        let other = addr("203.0.113.5:7777");
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_000, other, 0),
            Action::Drop(DropReason::SourceMismatch)
        );
        assert!(matches!(
            core.handle_packet(&rtp_packet(1), 30_000, addr(A), 0),
            Action::Forward { .. }
        ));
        assert_eq!(core.counters().source_mismatch, 1);
    }

    #[test]
    fn strict_source_without_signalled_address_learns_then_enforces() {
        let mut core = MediaCore::new(30_000, 30_099);
        core.upsert(endpoint(30_000, None, 30_002, Latching::Strict));
        core.upsert(endpoint(30_002, Some(B), 30_000, Latching::Strict));
        assert!(matches!(
            core.handle_packet(&rtp_packet(1), 30_000, addr(A), 0),
            Action::Forward { .. }
        ));
        assert_eq!(
            core.handle_packet(&rtp_packet(2), 30_000, addr("192.0.2.99:1"), 0),
            Action::Drop(DropReason::SourceMismatch)
        );
    }

    #[test]
    fn handover_follows_every_new_source() {
        let mut core = call(Latching::Handover);
        let moved = addr("203.0.113.9:9");
        core.handle_packet(&rtp_packet(1), 30_000, addr(A), 0);
        core.handle_packet(&rtp_packet(2), 30_000, moved, 0);
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_002, addr(B), 0),
            Action::Forward {
                from_port: 30_000,
                to: moved
            }
        );
    }

    #[test]
    fn asymmetric_never_latches() {
        let mut core = call(Latching::Off);
        core.handle_packet(&rtp_packet(1), 30_000, addr("203.0.113.5:7777"), 0);
        assert_eq!(core.poll_event(), None);
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_002, addr(B), 0),
            Action::Forward {
                from_port: 30_000,
                to: addr(A)
            }
        );
    }

    #[test]
    fn changed_signalled_address_resets_latch() {
        let mut core = call(Latching::Symmetric);
        core.handle_packet(&rtp_packet(1), 30_000, addr("203.0.113.5:7777"), 0);
        let moved = "192.0.2.77:4000";
        core.upsert(endpoint(30_000, Some(moved), 30_002, Latching::Symmetric));
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_002, addr(B), 0),
            Action::Forward {
                from_port: 30_000,
                to: addr(moved)
            }
        );
    }

    #[test]
    fn bad_packets_are_counted_not_forwarded() {
        let mut core = call(Latching::Symmetric);
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 31_000, addr(A), 0),
            Action::Drop(DropReason::UnknownPort)
        );
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 29_999, addr(A), 0),
            Action::Drop(DropReason::UnknownPort)
        );
        assert_eq!(
            core.handle_packet(&[0x80, 0, 1], 30_000, addr(A), 0),
            Action::Drop(DropReason::Malformed)
        );
        assert_eq!(
            core.handle_packet(b"hello world!", 30_000, addr(A), 0),
            Action::Drop(DropReason::Malformed)
        );
        core.count_oversized(30_000);
        let c = core.counters();
        assert_eq!((c.unknown_port, c.malformed, c.received), (2, 3, 5));
        let ep_stats = &core.endpoints[0].as_ref().unwrap().config.stats;
        assert_eq!(ep_stats.snapshot().errors, 3);
        assert_eq!(ep_stats.snapshot().packets, 0);
    }

    #[test]
    fn no_destination_before_answer_and_after_removal() {
        let mut core = MediaCore::new(30_000, 30_099);
        core.upsert(endpoint(30_000, Some(A), 30_002, Latching::Symmetric));
        core.upsert(endpoint(30_002, None, 30_000, Latching::Symmetric));
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_000, addr(A), 0),
            Action::Drop(DropReason::NoDestination)
        );
        core.remove(30_002);
        assert!(!core.contains(30_002));
        assert_eq!(
            core.handle_packet(&rtp_packet(2), 30_000, addr(A), 0),
            Action::Drop(DropReason::NoDestination)
        );
    }

    #[test]
    fn rtcp_port_relays_rtcp_only_and_stats_track_loss() {
        let mut core = call(Latching::Symmetric);
        let mut a_rtcp = endpoint(30_001, Some("192.0.2.10:4001"), 30_003, Latching::Symmetric);
        a_rtcp.component = Component::Rtcp;
        let mut b_rtcp = endpoint(
            30_003,
            Some("198.51.100.20:5001"),
            30_001,
            Latching::Symmetric,
        );
        b_rtcp.component = Component::Rtcp;
        core.upsert(a_rtcp);
        core.upsert(b_rtcp);
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            core.handle_packet(&rr, 30_001, addr("192.0.2.10:4001"), 0),
            Action::Forward {
                from_port: 30_003,
                to: addr("198.51.100.20:5001")
            }
        );
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_001, addr("192.0.2.10:4001"), 0),
            Action::Drop(DropReason::Malformed)
        );
        for seq in [1, 2, 3, 5, 6] {
            core.handle_packet(
                &rtp_packet(seq),
                30_000,
                addr(A),
                u64::from(seq) * 20_000_000,
            );
        }
        let s = core.endpoints[0].as_ref().unwrap().config.stats.snapshot();
        assert_eq!((s.packets, s.lost, s.ssrc), (5, 1, 1));
        assert_eq!(s.last_packet_ns, 120_000_000);
    }

    #[test]
    fn address_family_mismatch_is_not_forwarded() {
        let mut core = call(Latching::Symmetric);
        assert_eq!(
            core.handle_packet(&rtp_packet(1), 30_000, addr("[2001:db8::1]:4000"), 0),
            Action::Drop(DropReason::NoDestination)
        );
    }

    #[test]
    fn recording_gets_packets_ssrc_changes_and_one_event_per_dtmf_digit() {
        use crate::media::record::{BufferPool, RecordOutput, RecordingShared};
        use linecord_recfile::block::{open_block, seal};
        use linecord_recfile::Record;

        let pool = Arc::new(BufferPool::new(1 << 20, 12 * 1024));
        let mut core =
            call(Latching::Symmetric).with_recordings(RecordingTable::new(pool, 500_000_000));
        core.start_recording(Arc::new(RecordingShared::new(7, "r".into())), 0, 0);
        let mut ep = endpoint(30_000, Some(A), 30_002, Latching::Symmetric);
        ep.record = Some(RecordTap {
            recording: 7,
            stream: 0,
        });
        ep.dtmf_payload_type = Some(101);
        core.upsert(ep);
        core.handle_packet(&rtp_packet(1), 30_000, addr(A), 1_000);
        core.handle_packet(&rtp_packet(2), 30_000, addr(A), 2_000);
        let mut other = rtp_packet(3);
        other[8..12].copy_from_slice(&9u32.to_be_bytes());
        core.handle_packet(&other, 30_000, addr(A), 3_000);
        // Digit 5: two progress packets, then the end packet three times (same timestamp).
        for (seq, end) in [
            (10u16, false),
            (11, false),
            (12, true),
            (13, true),
            (14, true),
        ] {
            let mut p = vec![0x80, 101, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 9];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[5, if end { 0x80 | 10 } else { 10 }, 0x03, 0x20]);
            core.handle_packet(&p, 30_000, addr(A), 4_000 + u64::from(seq));
        }
        // Packets arriving on B's (untapped) port are not recorded.
        core.handle_packet(&rtp_packet(1), 30_002, addr(B), 5_000);
        core.stop_recording(7, StopReason::Deleted, &[], 6_000);
        let mut records = Vec::new();
        while let Some(o) = core.poll_record_output() {
            if let RecordOutput::Block { block, .. } = o {
                let mut framed = Vec::new();
                seal(&block, &mut framed);
                records.extend(open_block(&framed).unwrap().1);
            }
        }
        let events: Vec<Event> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(e) => Some(e.event.clone()),
                Record::Packet(_) => None,
            })
            .collect();
        assert_eq!(
            events,
            vec![
                Event::Started,
                Event::SsrcChanged {
                    stream: 0,
                    old: 1,
                    new: 9
                },
                Event::Dtmf {
                    stream: 0,
                    event: 5,
                    duration: 800,
                    volume: 10
                },
                Event::Stopped(StopReason::Deleted),
            ]
        );
        let packets = records
            .iter()
            .filter(|r| matches!(r, Record::Packet(_)))
            .count();
        assert_eq!(packets, 3 + 5);
    }
}
