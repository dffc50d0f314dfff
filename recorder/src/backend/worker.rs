//! The worker core every packet backend (`udp`, `xdp`, `xdp-sink`) runs: one pinned thread
//! with its [`MediaCore`], its command channel, its counters, the recording flush and tick,
//! and the event loop. A backend supplies only its I/O steps, as an [`Io`]: what to do with
//! an endpoint's socket, which readiness events matter, and one bounded receive-decide-send
//! step ([`Io::step`]).
//!
//! The loop is [`WorkerCore::run`]: wait in epoll (mio) until a socket is readable, a command
//! arrives (the [`WorkerHandle`] wakes the poll) or [`IDLE_POLL`] passes, then one
//! [`WorkerCore::turn`]. `turn` takes `now` from the caller, so tests drive it with a virtual
//! clock and an in-memory `Io`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Poll, Registry, Token, Waker};

use linecord_recfile::{StopReason, StreamId};

use super::neigh::Neighbours;
use crate::media::record::{BufferPool, RecordingShared, RecordingTable};
use crate::media::{CoreCounters, CoreEvent, EndpointConfig, MediaCore};
use crate::recording::writer::WriterMsg;

/// Poll timeout when idle: bounds how late a shutdown or a counter publication is.
pub const IDLE_POLL: Duration = Duration::from_millis(50);
/// How often a worker seals recording blocks that passed the flush interval.
pub const RECORD_TICK_NS: u64 = 20_000_000;
/// The poll token of the command waker; backends use any other token for their sockets.
pub const WAKER: Token = Token(usize::MAX);
/// Readiness events taken from one `epoll_wait`.
const EVENTS: usize = 1024;

/// A command from the control thread to a worker.
pub enum WorkerCmd {
    /// Add or change an endpoint; a new port comes with its bound socket.
    Upsert(EndpointConfig, Option<UdpSocket>),
    /// Remove the endpoint and close its socket.
    Remove(u16),
    /// Start a recording (its time base in monotonic ns).
    StartRecording(Arc<RecordingShared>, u64),
    /// Pause (`true`) or resume the recording with this key.
    PauseRecording(u64, bool),
    /// Write a control-plane event into the recording with this key.
    RecordingEvent(u64, Box<linecord_recfile::Event>),
    /// Stop the recording with this key: flush its last block and tell the writer.
    StopRecording(u64, StopReason, Vec<(StreamId, i64, u32)>),
    /// Another worker learned the peer address of this port (multi-queue backends).
    Latched(u16, SocketAddr),
    /// A new snapshot of the interface's neighbour table (`xdp` backend).
    Neighbours(Neighbours),
}

/// Counters a worker publishes after each turn (relaxed atomics, one writer).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Datagrams the media core was given.
    pub received: AtomicU64,
    /// Datagrams forwarded.
    pub forwarded: AtomicU64,
    /// Dropped: unknown port.
    pub unknown_port: AtomicU64,
    /// Dropped: malformed or oversized.
    pub malformed: AtomicU64,
    /// Dropped: strict-source mismatch.
    pub source_mismatch: AtomicU64,
    /// Dropped: no destination.
    pub no_destination: AtomicU64,
    /// Datagrams the kernel refused to send (socket buffer full, unreachable, TX ring full).
    pub send_failed: AtomicU64,
    /// `xdp` backend: packets sent through the kernel because the next hop was unresolved.
    pub kernel_path: AtomicU64,
    /// Datagrams or frames the backend read from the network, before the media core looked
    /// at them (the only counter of `xdp-sink`).
    pub io_received: AtomicU64,
}

impl WorkerCounters {
    /// Publishes a worker's counters (one writer per worker).
    fn publish(&self, c: &CoreCounters, io: &IoTotals) {
        self.received.store(c.received, Relaxed);
        self.forwarded.store(c.forwarded, Relaxed);
        self.unknown_port.store(c.unknown_port, Relaxed);
        self.malformed.store(c.malformed, Relaxed);
        self.source_mismatch.store(c.source_mismatch, Relaxed);
        self.no_destination.store(c.no_destination, Relaxed);
        self.send_failed.store(io.send_failed, Relaxed);
        self.kernel_path.store(io.kernel_path, Relaxed);
        self.io_received.store(io.received, Relaxed);
    }

    /// Reads the media core's counters back as a [`CoreCounters`].
    pub fn snapshot(&self) -> CoreCounters {
        CoreCounters {
            received: self.received.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            unknown_port: self.unknown_port.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            source_mismatch: self.source_mismatch.load(Relaxed),
            no_destination: self.no_destination.load(Relaxed),
        }
    }
}

/// The control thread's handle on one worker.
pub struct WorkerHandle {
    /// Commands to the worker.
    pub commands: Sender<WorkerCmd>,
    /// Wakes the worker after commands were queued.
    pub waker: Arc<Waker>,
    /// Its published counters.
    pub counters: Arc<WorkerCounters>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Sends a command and wakes the worker. Never blocks.
    pub fn send(&self, cmd: WorkerCmd) {
        if self.commands.send(cmd).is_err() {
            tracing::error!("packet worker is gone; command dropped");
        }
        let _ = self.waker.wake();
    }

    /// Waits for the worker thread to end (after the stop flag was set).
    pub fn join(&mut self) {
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a worker needs to start.
pub struct WorkerSpec {
    /// Worker number (logs).
    pub index: usize,
    /// Core to pin to, if any.
    pub core: Option<core_affinity::CoreId>,
    /// Local port range.
    pub port_min: u16,
    /// Local port range.
    pub port_max: u16,
    /// Monotonic epoch shared with the control thread.
    pub epoch: Instant,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Where latch events go.
    pub events: Sender<CoreEvent>,
    /// Recording buffers.
    pub pool: Arc<BufferPool>,
    /// Blocks older than this are sealed (ns).
    pub flush_ns: u64,
    /// Where sealed blocks go.
    pub writer: Sender<WriterMsg>,
}

/// What one [`Io::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStep {
    /// Datagrams or frames read from the network.
    pub received: u64,
    /// Datagrams that could not be sent.
    pub send_failed: u64,
    /// Datagrams sent through the kernel instead of the fast path (`xdp`).
    pub kernel_path: u64,
    /// More input may be waiting: the next wait must not sleep.
    pub busy: bool,
}

/// Running totals of the [`IoStep`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct IoTotals {
    received: u64,
    send_failed: u64,
    kernel_path: u64,
}

/// A backend's I/O: everything that differs between `udp`, `xdp` and `xdp-sink`.
pub trait Io {
    /// A new or changed endpoint on `port`; `socket` is its kernel socket when the port is
    /// new. Called before the media core learns the endpoint.
    fn attach(&mut self, port: u16, socket: Option<UdpSocket>, registry: &Registry);
    /// The endpoint on `port` is gone (the media core already forgot it).
    fn detach(&mut self, port: u16, registry: &Registry);
    /// A new neighbour table (only the `xdp` backend uses it).
    fn neighbours(&mut self, _neighbours: Neighbours) {}
    /// A readiness event for `token` (never [`WAKER`]).
    fn readable(&mut self, _token: Token) {}
    /// One bounded step: receive what is waiting, let `core` decide on each datagram (with
    /// `now()` as its arrival time, in ns of the worker's epoch), send what it forwards.
    /// Never blocks.
    fn step(&mut self, core: &mut MediaCore, now: &mut dyn FnMut() -> u64) -> IoStep;
}

/// A worker: its media core, commands and counters, around a backend's [`Io`].
pub struct WorkerCore<I> {
    core: MediaCore,
    io: I,
    commands: Receiver<WorkerCmd>,
    counters: Arc<WorkerCounters>,
    events: Sender<CoreEvent>,
    writer: Sender<WriterMsg>,
    totals: IoTotals,
    busy: bool,
    last_tick: u64,
}

impl<I: Io> WorkerCore<I> {
    /// A worker around `io` for the ports and recording settings of `spec`.
    pub fn new(
        io: I,
        spec: &WorkerSpec,
        commands: Receiver<WorkerCmd>,
        counters: Arc<WorkerCounters>,
    ) -> Self {
        WorkerCore {
            core: MediaCore::new(spec.port_min, spec.port_max)
                .with_recordings(RecordingTable::new(Arc::clone(&spec.pool), spec.flush_ns)),
            io,
            commands,
            counters,
            events: spec.events.clone(),
            writer: spec.writer.clone(),
            totals: IoTotals::default(),
            busy: false,
            last_tick: 0,
        }
    }

    /// The backend's I/O state.
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The media core (for inspection).
    pub fn media(&self) -> &MediaCore {
        &self.core
    }

    /// Whether the last turn left input waiting (the next wait must not sleep).
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Carries out one command at `now`.
    pub fn apply(&mut self, cmd: WorkerCmd, registry: &Registry, now: u64) {
        let core = &mut self.core;
        match cmd {
            WorkerCmd::Upsert(config, socket) => {
                self.io.attach(config.port, socket, registry);
                core.upsert(config);
            }
            WorkerCmd::Remove(port) => {
                core.remove(port);
                self.io.detach(port, registry);
            }
            WorkerCmd::Neighbours(n) => self.io.neighbours(n),
            WorkerCmd::StartRecording(shared, start_ns) => {
                core.start_recording(shared, start_ns, now)
            }
            WorkerCmd::PauseRecording(key, paused) => core.pause_recording(key, paused, now),
            WorkerCmd::RecordingEvent(key, event) => core.record_event(key, *event, now),
            WorkerCmd::StopRecording(key, reason, net) => {
                core.stop_recording(key, reason, &net, now)
            }
            WorkerCmd::Latched(port, addr) => core.set_latched(port, addr),
        }
    }

    /// One turn after a wake-up: commands, one I/O step, the recording tick (every
    /// [`RECORD_TICK_NS`]), sealed blocks to the writer, latch events to the control thread,
    /// counters published. `now` reads the worker's clock (ns).
    pub fn turn(&mut self, registry: &Registry, now: &mut dyn FnMut() -> u64) {
        while let Ok(cmd) = self.commands.try_recv() {
            let t = now();
            self.apply(cmd, registry, t);
        }
        let step = self.io.step(&mut self.core, now);
        self.totals.received += step.received;
        self.totals.send_failed += step.send_failed;
        self.totals.kernel_path += step.kernel_path;
        self.busy = step.busy;
        let t = now();
        if t.saturating_sub(self.last_tick) >= RECORD_TICK_NS {
            self.last_tick = t;
            self.core.handle_timeout(t);
        }
        self.flush_recordings();
        while let Some(ev) = self.core.poll_event() {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                self.events.try_send(ev)
            {
                break;
            }
        }
        self.counters.publish(&self.core.counters(), &self.totals);
    }

    /// Hands sealed blocks and finished recordings to the writer (never blocks: the channel
    /// is unbounded and its size is bounded by the buffer pool).
    fn flush_recordings(&mut self) {
        while let Some(out) = self.core.poll_record_output() {
            if self.writer.send(WriterMsg::Output(out)).is_err() {
                tracing::error!("recording writer is gone; block dropped");
            }
        }
    }

    /// Waits until a socket is readable, a command arrives or `idle` passes (not at all when
    /// the last turn was busy), hands the readiness events to the [`Io`], then takes one
    /// [`turn`](Self::turn).
    pub fn wait_and_turn(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        idle: Duration,
        now: &mut dyn FnMut() -> u64,
    ) -> io::Result<()> {
        let timeout = if self.busy { Duration::ZERO } else { idle };
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            if ev.token() != WAKER {
                self.io.readable(ev.token());
            }
        }
        self.turn(poll.registry(), now);
        Ok(())
    }

    /// The event loop, until `stop` is set or the poll fails; then the commands queued
    /// before the stop (the shutdown's recording stops) are carried out and the last blocks
    /// handed to the writer.
    pub fn run(&mut self, mut poll: Poll, stop: &AtomicBool, epoch: Instant) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut clock = || epoch.elapsed().as_nanos() as u64;
        let mut result = Ok(());
        while !stop.load(Relaxed) {
            if let Err(e) = self.wait_and_turn(&mut poll, &mut events, IDLE_POLL, &mut clock) {
                result = Err(e);
                break;
            }
        }
        while let Ok(cmd) = self.commands.try_recv() {
            let t = clock();
            self.apply(cmd, poll.registry(), t);
        }
        self.flush_recordings();
        self.counters.publish(&self.core.counters(), &self.totals);
        result
    }
}

/// Starts a worker thread named `name`. `open` runs on that thread (AF_XDP sockets are not
/// `Send`) and builds the backend's [`Io`], registering its sockets with the registry; what
/// else it returns (e.g. the AF_XDP socket's fd) is handed back with the handle once the
/// worker runs. An `open` failure is returned as the error.
pub fn spawn<I, R, F>(spec: WorkerSpec, name: String, open: F) -> io::Result<(WorkerHandle, R)>
where
    I: Io,
    R: Send + 'static,
    F: FnOnce(&Registry) -> Result<(I, R), String> + Send + 'static,
{
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(WorkerCounters::default());
    let c = Arc::clone(&counters);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<R, String>>(1);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        if let Some(core) = spec.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(worker = spec.index, core = core.id, "could not pin worker");
            }
        }
        let io = match open(poll.registry()) {
            Ok((io, r)) => {
                let _ = ready_tx.send(Ok(r));
                io
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut w = WorkerCore::new(io, &spec, rx, c);
        if let Err(e) = w.run(poll, &spec.stop, spec.epoch) {
            tracing::error!(worker = spec.index, error = %e, "packet worker failed");
        }
    })?;
    let r = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| io::Error::other("packet worker did not start"))?
        .map_err(io::Error::other)?;
    Ok((
        WorkerHandle {
            commands: tx,
            waker,
            counters,
            thread: Some(thread),
        },
        r,
    ))
}

/// The worker tests, run once per backend through the same [`WorkerCore`]: `udp` with real
/// loopback sockets, `xdp` with an in-memory frame ring (the AF_XDP socket itself is tested
/// in `tests/xdp_program.rs`, the whole daemon on both backends in `tests/netns_relay.rs`).
#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::backend::neigh::NextHops;
    use crate::backend::udp::UdpIo;
    use crate::backend::xdp::{FrameRing, XdpIo, XdpQueueSpec};
    use crate::backend::xsk::{StepCounts, Verdict, RX_BATCH};
    use crate::media::frame;
    use crate::media::record::{RecordOutput, RecordTap};
    use crate::media::{Component, Latching};

    /// The two parties of a call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Party {
        A,
        B,
    }

    /// What a backend under test provides to the shared scenarios.
    trait Bench {
        type Io: Io;
        /// The backend's I/O, once.
        fn io(&mut self) -> Self::Io;
        /// The local media port that `p` talks to.
        fn port(&self, p: Party) -> u16;
        /// The address of party `p`.
        fn addr(&self, p: Party) -> SocketAddr;
        /// The kernel socket the control thread hands over with a new endpoint.
        fn socket(&mut self, port: u16) -> Option<UdpSocket>;
        /// `p` sends `payload` to its local port.
        fn send(&mut self, io: &mut Self::Io, p: Party, payload: &[u8]);
        /// What reached `p` since the last call: (local source port, payload).
        fn received(&mut self, io: &mut Self::Io, p: Party) -> Vec<(u16, Vec<u8>)>;
        /// Commands the backend needs before media flows (the `xdp` neighbours).
        fn setup(&self) -> Vec<WorkerCmd> {
            Vec::new()
        }
    }

    /// `udp`: every socket on 127.0.0.1, ports chosen by the kernel.
    struct UdpBench {
        parties: [UdpSocket; 2],
        media: HashMap<u16, UdpSocket>,
        ports: [u16; 2],
    }

    impl UdpBench {
        fn new() -> Self {
            let bind = || {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind on loopback");
                s.set_nonblocking(true).unwrap();
                s
            };
            let parties = [bind(), bind()];
            let media_sockets = [bind(), bind()];
            let ports = media_sockets
                .each_ref()
                .map(|s| s.local_addr().unwrap().port());
            let media = ports.into_iter().zip(media_sockets).collect();
            UdpBench {
                parties,
                media,
                ports,
            }
        }

        fn party(&self, p: Party) -> &UdpSocket {
            &self.parties[p as usize]
        }
    }

    impl Bench for UdpBench {
        type Io = UdpIo;
        fn io(&mut self) -> UdpIo {
            UdpIo::new(PORT_MIN, PORT_MAX)
        }
        fn port(&self, p: Party) -> u16 {
            self.ports[p as usize]
        }
        fn addr(&self, p: Party) -> SocketAddr {
            self.party(p).local_addr().unwrap()
        }
        fn socket(&mut self, port: u16) -> Option<UdpSocket> {
            self.media.remove(&port)
        }
        fn send(&mut self, _io: &mut UdpIo, p: Party, payload: &[u8]) {
            let to = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port(p)));
            self.party(p).send_to(payload, to).unwrap();
        }
        fn received(&mut self, _io: &mut UdpIo, p: Party) -> Vec<(u16, Vec<u8>)> {
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: a test sends at most a few dozen datagrams.
            for _ in 0..1000 {
                match self.party(p).recv_from(&mut buf) {
                    Ok((n, from)) => out.push((from.port(), buf[..n].to_vec())),
                    Err(_) => break,
                }
            }
            out
        }
    }

    /// An in-memory frame ring: frames to receive, frames transmitted.
    #[derive(Default)]
    struct MemRing {
        rx: VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
    }

    impl FrameRing for MemRing {
        fn step(&mut self, mut decide: impl FnMut(&mut [u8]) -> Verdict) -> StepCounts {
            let mut c = StepCounts::default();
            while c.received < RX_BATCH {
                let Some(mut f) = self.rx.pop_front() else {
                    break;
                };
                c.received += 1;
                if decide(&mut f) == Verdict::Transmit {
                    c.transmitted += 1;
                    self.tx.push(f);
                }
            }
            c
        }
    }

    /// `xdp`: the recorder at 198.18.0.1, the parties' MACs known.
    struct XdpBench;

    const LOCAL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn party_mac(p: Party) -> [u8; 6] {
        [2, 0, 0, 0, 0, 10 + p as u8]
    }

    /// An Ethernet/IPv4/UDP frame (UDP checksum 0: none).
    fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            panic!("IPv4 only");
        };
        let mut f = LOCAL_MAC.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 99, 0x08, 0x00]);
        let udp_len = 8 + payload.len() as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&(20 + udp_len).to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        f.extend_from_slice(&src.port().to_be_bytes());
        f.extend_from_slice(&dst.port().to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    impl Bench for XdpBench {
        type Io = XdpIo<MemRing>;
        fn io(&mut self) -> Self::Io {
            XdpIo::new(
                MemRing::default(),
                XdpQueueSpec {
                    ifindex: 0,
                    queue: 0,
                    local_ip: LOCAL_IP.into(),
                    local_mac: LOCAL_MAC,
                },
            )
        }
        fn port(&self, p: Party) -> u16 {
            30_000 + 2 * p as u16
        }
        fn addr(&self, p: Party) -> SocketAddr {
            SocketAddr::from(([198, 18, 0, 10 + p as u8], 4000 + p as u16))
        }
        fn socket(&mut self, _port: u16) -> Option<UdpSocket> {
            // The kernel path is not taken: every neighbour is known (see `setup`).
            None
        }
        fn send(&mut self, io: &mut Self::Io, p: Party, payload: &[u8]) {
            let dst = SocketAddr::from((LOCAL_IP, self.port(p)));
            let f = udp_frame(self.addr(p), dst, payload);
            io.ring_mut().rx.push_back(f);
        }
        fn received(&mut self, io: &mut Self::Io, p: Party) -> Vec<(u16, Vec<u8>)> {
            let to = self.addr(p);
            let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut io.ring_mut().tx)
                .into_iter()
                .partition(|f| frame::parse(f).is_ok_and(|u| u.destination == to));
            io.ring_mut().tx = others;
            mine.into_iter()
                .map(|f| {
                    let u = frame::parse(&f).unwrap();
                    assert_eq!(&f[..6], &party_mac(p), "destination MAC of {p:?}");
                    assert_eq!(&f[6..12], &LOCAL_MAC, "source MAC");
                    assert_eq!(u.source.ip(), IpAddr::from(LOCAL_IP));
                    (
                        u.source.port(),
                        f[u.payload..u.payload + u.payload_len].to_vec(),
                    )
                })
                .collect()
        }
        fn setup(&self) -> Vec<WorkerCmd> {
            let macs = [Party::A, Party::B]
                .into_iter()
                .map(|p| (self.addr(p).ip(), party_mac(p)))
                .collect();
            vec![WorkerCmd::Neighbours(Arc::new(NextHops {
                routes: Vec::new(),
                macs,
            }))]
        }
    }

    const PORT_MIN: u16 = 1024;
    const PORT_MAX: u16 = 65_534;
    /// Blocks older than this are sealed.
    const FLUSH_NS: u64 = 1_000_000;

    /// A worker on `B`'s I/O with a virtual clock, its channels and its poll.
    struct Harness<B: Bench> {
        bench: B,
        worker: WorkerCore<B::Io>,
        poll: Poll,
        events: Events,
        commands: Sender<WorkerCmd>,
        latched: Receiver<CoreEvent>,
        written: Receiver<WriterMsg>,
        counters: Arc<WorkerCounters>,
        now: u64,
    }

    impl<B: Bench> Harness<B> {
        fn new(mut bench: B) -> Self {
            let (commands, rx) = crossbeam_channel::unbounded();
            let (events, latched) = crossbeam_channel::unbounded();
            let (writer, written) = crossbeam_channel::unbounded();
            let spec = WorkerSpec {
                index: 0,
                core: None,
                port_min: PORT_MIN,
                port_max: PORT_MAX,
                epoch: Instant::now(),
                stop: Arc::default(),
                events,
                pool: Arc::new(BufferPool::new(1 << 20, 12 * 1024)),
                flush_ns: FLUSH_NS,
                writer,
            };
            let counters = Arc::new(WorkerCounters::default());
            let io = bench.io();
            let worker = WorkerCore::new(io, &spec, rx, Arc::clone(&counters));
            let h = Harness {
                bench,
                worker,
                poll: Poll::new().unwrap(),
                events: Events::with_capacity(64),
                commands,
                latched,
                written,
                counters,
                now: 0,
            };
            for cmd in h.bench.setup() {
                h.commands.send(cmd).unwrap();
            }
            h
        }

        /// Sends a command as the control thread does; the next turn applies it.
        fn command(&mut self, cmd: WorkerCmd) {
            self.commands.send(cmd).unwrap();
        }

        /// A call between A and B; `peers` puts their addresses into the endpoints (else
        /// they are learned by latching).
        fn call(&mut self, peers: bool, record: Option<u64>) {
            for (p, other) in [(Party::A, Party::B), (Party::B, Party::A)] {
                let port = self.bench.port(p);
                let config = EndpointConfig {
                    port,
                    component: Component::Rtp,
                    peer: peers.then(|| self.bench.addr(p)),
                    latching: Latching::Symmetric,
                    forward_port: Some(self.bench.port(other)),
                    clock_rate: 8000,
                    stats: Arc::default(),
                    record: record.map(|recording| RecordTap {
                        recording,
                        stream: p as u16,
                    }),
                    dtmf_payload_type: None,
                };
                let socket = self.bench.socket(port);
                self.command(WorkerCmd::Upsert(config, socket));
            }
        }

        /// One wait-and-turn at the virtual time `self.now`.
        fn turn(&mut self) {
            let now = self.now;
            self.worker
                .wait_and_turn(
                    &mut self.poll,
                    &mut self.events,
                    Duration::from_millis(5),
                    &mut || now,
                )
                .unwrap();
        }

        fn send(&mut self, p: Party, payload: &[u8]) {
            self.bench.send(&mut self.worker.io, p, payload);
        }

        /// Turns until `p` got `n` datagrams (at most 50 turns) and returns them.
        fn expect(&mut self, p: Party, n: usize) -> Vec<(u16, Vec<u8>)> {
            let mut got = Vec::new();
            for _ in 0..50 {
                self.turn();
                got.extend(self.bench.received(&mut self.worker.io, p));
                if got.len() >= n {
                    break;
                }
            }
            assert_eq!(got.len(), n, "datagrams that reached {p:?}: {got:?}");
            got
        }
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[seq as u8; 160]);
        p
    }

    /// Runs a scenario once per backend.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[test]
                fn udp() {
                    super::$name(super::Harness::new(super::UdpBench::new()));
                }
                #[test]
                fn xdp() {
                    super::$name(super::Harness::new(super::XdpBench));
                }
            }
        )*};
    }

    on_both_backends!(
        relays_both_ways_and_publishes_counters,
        latches_and_reports_the_learned_address,
        removed_endpoint_is_no_destination,
        recording_blocks_are_sealed_on_the_tick_and_finished_on_stop,
        commands_queued_before_the_stop_are_carried_out,
    );

    fn relays_both_ways_and_publishes_counters<B: Bench>(mut h: Harness<B>) {
        h.call(true, None);
        h.turn();
        for seq in 0..5 {
            h.send(Party::A, &rtp(seq));
        }
        let got = h.expect(Party::B, 5);
        let from = h.bench.port(Party::B);
        for (seq, (port, payload)) in got.into_iter().enumerate() {
            assert_eq!(port, from, "B hears the call from its own port");
            assert_eq!(payload, rtp(seq as u16));
        }
        for seq in 0..3 {
            h.send(Party::B, &rtp(100 + seq));
        }
        let got = h.expect(Party::A, 3);
        assert!(got.iter().all(|(p, _)| *p == h.bench.port(Party::A)));
        let c = h.counters.snapshot();
        assert_eq!((c.received, c.forwarded), (8, 8), "{c:?}");
        assert_eq!(h.counters.io_received.load(Relaxed), 8);
        assert_eq!(h.counters.send_failed.load(Relaxed), 0);
        assert!(h.latched.try_recv().is_ok(), "symmetric latching reported");
    }

    fn latches_and_reports_the_learned_address<B: Bench>(mut h: Harness<B>) {
        h.call(false, None);
        h.turn();
        // Before A spoke, B's packets have nowhere to go.
        h.send(Party::B, &rtp(1));
        for _ in 0..5 {
            h.turn();
        }
        assert_eq!(h.counters.snapshot().no_destination, 1);
        h.send(Party::A, &rtp(2));
        for _ in 0..5 {
            h.turn();
        }
        let events: Vec<CoreEvent> = h.latched.try_iter().collect();
        let latched = |p: Party| CoreEvent::Latched {
            port: h.bench.port(p),
            addr: h.bench.addr(p),
        };
        assert_eq!(events, vec![latched(Party::B), latched(Party::A)]);
        // Now B reaches A at the learned address.
        h.send(Party::B, &rtp(3));
        let got = h.expect(Party::A, 1);
        assert_eq!(got[0].1, rtp(3));
    }

    fn removed_endpoint_is_no_destination<B: Bench>(mut h: Harness<B>) {
        h.call(true, None);
        h.turn();
        h.send(Party::A, &rtp(1));
        h.expect(Party::B, 1);
        h.command(WorkerCmd::Remove(h.bench.port(Party::B)));
        h.turn();
        h.send(Party::A, &rtp(2));
        h.expect(Party::B, 0);
        let c = h.counters.snapshot();
        assert_eq!((c.forwarded, c.no_destination), (1, 1), "{c:?}");
    }

    fn recording_blocks_are_sealed_on_the_tick_and_finished_on_stop<B: Bench>(mut h: Harness<B>) {
        let shared = Arc::new(RecordingShared::new(7, "r".into()));
        h.command(WorkerCmd::StartRecording(Arc::clone(&shared), 0));
        h.call(true, Some(7));
        h.turn();
        for seq in 0..3 {
            h.send(Party::A, &rtp(seq));
        }
        h.expect(Party::B, 3);
        // The first turn ran the tick at t=0; nothing is old enough to seal until the next.
        assert!(h.written.try_recv().is_err(), "no block before the tick");
        h.now = RECORD_TICK_NS - 1;
        h.turn();
        assert!(
            h.written.try_recv().is_err(),
            "the tick runs every RECORD_TICK_NS"
        );
        h.now = RECORD_TICK_NS + FLUSH_NS;
        h.turn();
        let msg = h.written.try_recv().expect("a block sealed on the tick");
        assert!(matches!(msg, WriterMsg::Output(RecordOutput::Block { .. })));
        h.command(WorkerCmd::StopRecording(7, StopReason::Deleted, Vec::new()));
        h.turn();
        let finished = h
            .written
            .try_iter()
            .any(|m| matches!(m, WriterMsg::Output(RecordOutput::Finished { .. })));
        assert!(finished, "the stop finishes the recording");
    }

    fn commands_queued_before_the_stop_are_carried_out<B: Bench>(h: Harness<B>) {
        let Harness {
            mut worker,
            poll,
            commands,
            written,
            ..
        } = h;
        commands
            .send(WorkerCmd::StartRecording(
                Arc::new(RecordingShared::new(9, "s".into())),
                0,
            ))
            .unwrap();
        commands
            .send(WorkerCmd::StopRecording(
                9,
                StopReason::Shutdown,
                Vec::new(),
            ))
            .unwrap();
        let stop = AtomicBool::new(true);
        worker.run(poll, &stop, Instant::now()).unwrap();
        let finished = written
            .try_iter()
            .any(|m| matches!(m, WriterMsg::Output(RecordOutput::Finished { .. })));
        assert!(finished, "the shutdown's stop was carried out");
    }
}
