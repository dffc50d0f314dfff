//! The portable `udp` backend: kernel UDP sockets, one per media port, served by pinned
//! worker threads around the sans-IO [`MediaCore`].
//!
//! The control thread binds the sockets when it allocates a pair ([`UdpPortPool`]) and gives
//! them, with the endpoint configuration, to the worker that owns the call. A worker waits in
//! epoll (mio), drains each readable socket with `recvmmsg` in batches, asks the core where
//! each datagram goes and sends the batch from the other party's socket with `sendmmsg`,
//! straight from the receive buffers. Work per wake-up is bounded ([`MAX_BATCHES_PER_SOCKET`])
//! so one flooded port cannot starve the others.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Events, Interest, Poll, Token, Waker};

use linecord_recfile::{StopReason, StreamId};

use crate::media::record::{BufferPool, RecordingShared, RecordingTable};
use crate::media::{Action, CoreCounters, CoreEvent, EndpointConfig, MediaCore};
use crate::ports::{PortError, PortPool, PortRange};
use crate::recording::writer::WriterMsg;
use linecord_mmsg::{RecvBatch, SendBatch, BATCH};

/// Batches read from one socket before moving to the next ready socket (fairness bound:
/// 8 × 32 datagrams ≈ 5 ms of a 50 kpps port).
pub const MAX_BATCHES_PER_SOCKET: usize = 8;
/// Poll timeout when idle: bounds how late a shutdown or a counter publication is.
const IDLE_POLL: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);

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
    Neighbours(super::neigh::Neighbours),
}

impl WorkerCmd {
    /// Carries out the commands every backend handles the same way on its media core
    /// (recording control, shared latching); returns the others for the backend.
    pub(crate) fn apply_common(self, core: &mut MediaCore, now: u64) -> Option<WorkerCmd> {
        match self {
            WorkerCmd::StartRecording(shared, start_ns) => {
                core.start_recording(shared, start_ns, now)
            }
            WorkerCmd::PauseRecording(key, paused) => core.pause_recording(key, paused, now),
            WorkerCmd::RecordingEvent(key, event) => core.record_event(key, *event, now),
            WorkerCmd::StopRecording(key, reason, net) => {
                core.stop_recording(key, reason, &net, now)
            }
            WorkerCmd::Latched(port, addr) => core.set_latched(port, addr),
            other => return Some(other),
        }
        None
    }
}

/// How often a worker seals recording blocks that passed the flush interval.
const RECORD_TICK_NS: u64 = 20_000_000;

/// Counters a worker publishes after each wake-up (relaxed atomics, one writer).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Datagrams received.
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
    /// Datagrams the kernel refused to send (socket buffer full, unreachable).
    pub send_failed: AtomicU64,
    /// `xdp` backend: packets sent through the kernel because the next hop was unresolved.
    pub kernel_path: AtomicU64,
}

impl WorkerCounters {
    /// Publishes a worker's counters (one writer per worker).
    pub(crate) fn publish(&self, c: &CoreCounters, send_failed: u64) {
        self.received.store(c.received, Relaxed);
        self.forwarded.store(c.forwarded, Relaxed);
        self.unknown_port.store(c.unknown_port, Relaxed);
        self.malformed.store(c.malformed, Relaxed);
        self.source_mismatch.store(c.source_mismatch, Relaxed);
        self.no_destination.store(c.no_destination, Relaxed);
        self.send_failed.store(send_failed, Relaxed);
    }

    /// Reads the counters back as a [`CoreCounters`].
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
    /// A handle on a started worker thread.
    pub(crate) fn new(
        commands: Sender<WorkerCmd>,
        waker: Arc<Waker>,
        counters: Arc<WorkerCounters>,
        thread: JoinHandle<()>,
    ) -> Self {
        WorkerHandle {
            commands,
            waker,
            counters,
            thread: Some(thread),
        }
    }

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
    /// Worker number (thread name, logs).
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

/// Starts a worker thread.
pub fn spawn_worker(spec: WorkerSpec) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(WorkerCounters::default());
    let c = Arc::clone(&counters);
    let thread = std::thread::Builder::new()
        .name(format!("media-{}", spec.index))
        .spawn(move || {
            if let Some(core) = spec.core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(worker = spec.index, core = core.id, "could not pin worker");
                }
            }
            let mut w = Worker::new(poll, rx, c, &spec);
            if let Err(e) = w.run(&spec) {
                tracing::error!(worker = spec.index, error = %e, "packet worker failed");
            }
            // Commands queued before the stop (e.g. the shutdown's recording stops).
            while let Ok(cmd) = w.commands.try_recv() {
                w.apply(cmd, &spec);
            }
            w.flush_recordings(&spec);
        })?;
    Ok(WorkerHandle {
        commands: tx,
        waker,
        counters,
        thread: Some(thread),
    })
}

struct Worker {
    poll: Poll,
    commands: Receiver<WorkerCmd>,
    counters: Arc<WorkerCounters>,
    core: MediaCore,
    port_min: u16,
    sockets: Vec<Option<mio::net::UdpSocket>>,
    /// Ports with datagrams possibly still queued (edge-triggered epoll).
    ready: Vec<u16>,
    is_ready: Vec<bool>,
    rx: RecvBatch,
    tx: SendBatch,
    send_failed: u64,
}

impl Worker {
    fn new(
        poll: Poll,
        commands: Receiver<WorkerCmd>,
        counters: Arc<WorkerCounters>,
        spec: &WorkerSpec,
    ) -> Self {
        let len = usize::from(spec.port_max - spec.port_min) + 1;
        Worker {
            poll,
            commands,
            counters,
            core: MediaCore::new(spec.port_min, spec.port_max)
                .with_recordings(RecordingTable::new(Arc::clone(&spec.pool), spec.flush_ns)),
            port_min: spec.port_min,
            sockets: (0..len).map(|_| None).collect(),
            ready: Vec::with_capacity(1024),
            is_ready: vec![false; len],
            rx: RecvBatch::new(),
            tx: SendBatch::new(),
            send_failed: 0,
        }
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.port_min)?);
        (i < self.sockets.len()).then_some(i)
    }

    fn apply(&mut self, cmd: WorkerCmd, spec: &WorkerSpec) {
        let now = spec.epoch.elapsed().as_nanos() as u64;
        let Some(cmd) = cmd.apply_common(&mut self.core, now) else {
            return;
        };
        match cmd {
            WorkerCmd::Upsert(config, socket) => {
                let port = config.port;
                if let (Some(sock), Some(i)) = (socket, self.index(port)) {
                    let mut sock = mio::net::UdpSocket::from_std(sock);
                    match self.poll.registry().register(
                        &mut sock,
                        Token(usize::from(port)),
                        Interest::READABLE,
                    ) {
                        Ok(()) => {
                            self.sockets[i] = Some(sock);
                            // Packets may have arrived before registration.
                            self.mark_ready(port);
                        }
                        Err(e) => tracing::error!(port, error = %e, "cannot watch media socket"),
                    }
                }
                self.core.upsert(config);
            }
            WorkerCmd::Remove(port) => {
                self.core.remove(port);
                if let Some(i) = self.index(port) {
                    if let Some(mut s) = self.sockets[i].take() {
                        let _ = self.poll.registry().deregister(&mut s);
                    }
                }
            }
            // Neighbours are for the xdp backend; the rest is handled by `apply_common`.
            _ => {}
        }
    }

    fn mark_ready(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            if !self.is_ready[i] {
                self.is_ready[i] = true;
                self.ready.push(port);
            }
        }
    }

    fn run(&mut self, spec: &WorkerSpec) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_record_tick = 0u64;
        while !spec.stop.load(Relaxed) {
            let timeout = if self.ready.is_empty() {
                IDLE_POLL
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, spec);
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.mark_ready(ev.token().0 as u16);
                }
            }
            let ready = std::mem::take(&mut self.ready);
            let mut still = Vec::new();
            for port in ready {
                if let Some(i) = self.index(port) {
                    self.is_ready[i] = false;
                }
                if !self.service(port, spec.epoch) {
                    still.push(port);
                }
            }
            for port in still {
                self.mark_ready(port);
            }
            while let Some(ev) = self.core.poll_event() {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    spec.events.try_send(ev)
                {
                    break;
                }
            }
            let now = spec.epoch.elapsed().as_nanos() as u64;
            if now.saturating_sub(last_record_tick) >= RECORD_TICK_NS {
                last_record_tick = now;
                self.core.handle_timeout(now);
            }
            self.flush_recordings(spec);
            self.counters
                .publish(&self.core.counters(), self.send_failed);
        }
        Ok(())
    }

    /// Hands sealed blocks and finished recordings to the writer (never blocks: the channel
    /// is unbounded and its size is bounded by the buffer pool).
    fn flush_recordings(&mut self, spec: &WorkerSpec) {
        while let Some(out) = self.core.poll_record_output() {
            if spec.writer.send(WriterMsg::Output(out)).is_err() {
                tracing::error!("recording writer is gone; block dropped");
            }
        }
    }

    /// Reads and forwards up to [`MAX_BATCHES_PER_SOCKET`] batches from `port`. Returns true
    /// when the socket is drained.
    fn service(&mut self, port: u16, epoch: Instant) -> bool {
        let Some(fd) = self
            .index(port)
            .and_then(|i| self.sockets[i].as_ref())
            .map(|s| s.as_raw_fd())
        else {
            return true;
        };
        for _ in 0..MAX_BATCHES_PER_SOCKET {
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (ECONNREFUSED from an earlier send): not fatal.
                    tracing::trace!(port, error = %e, "recvmmsg");
                    continue;
                }
            };
            let now = epoch.elapsed().as_nanos() as u64;
            let mut out_port = None;
            for i in 0..n {
                let r = self.rx.get(i);
                let Some(source) = r.source else { continue };
                if r.truncated {
                    self.core.count_oversized(port);
                    continue;
                }
                if let Action::Forward { from_port, to } =
                    self.core.handle_packet(r.data, port, source, now)
                {
                    if out_port.is_some_and(|p| p != from_port) {
                        self.flush(out_port);
                    }
                    out_port = Some(from_port);
                    self.tx.push(&self.rx, i, to);
                }
            }
            self.flush(out_port);
            if n < BATCH {
                return true;
            }
        }
        false
    }

    fn flush(&mut self, from_port: Option<u16>) {
        if self.tx.is_empty() {
            return;
        }
        let fd = from_port
            .and_then(|p| self.index(p))
            .and_then(|i| self.sockets[i].as_ref())
            .map(|s| s.as_raw_fd());
        match fd {
            Some(fd) => self.send_failed += self.tx.flush(fd).failed as u64,
            None => {
                // The core knows the endpoint but this worker has no socket for it.
                self.send_failed += self.tx.len() as u64;
                self.tx = SendBatch::new();
            }
        }
    }
}

/// Port pairs with their sockets bound on the media address: a pair is only handed out when
/// both ports could be bound, so an allocation never fails later.
pub struct UdpPortPool {
    range: PortRange,
    address: IpAddr,
    bound: HashMap<u16, UdpSocket>,
    watcher: Option<Box<dyn PortWatcher>>,
}

/// Bind attempts per allocation before giving up (ports taken by other programs are skipped).
const MAX_BIND_ATTEMPTS: usize = 64;

impl UdpPortPool {
    /// A pool over `min..=max` binding on `address`.
    pub fn new(address: IpAddr, min: u16, max: u16) -> Self {
        UdpPortPool {
            range: PortRange::new(min, max),
            address,
            bound: HashMap::new(),
            watcher: None,
        }
    }

    fn bind(&self, port: u16) -> io::Result<UdpSocket> {
        let s = UdpSocket::bind(SocketAddr::new(self.address, port))?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// Takes the bound socket of `port` (RTP or RTCP) to hand it to a worker; `None` once
    /// taken.
    pub fn take_socket(&mut self, port: u16) -> Option<UdpSocket> {
        self.bound.remove(&port)
    }
}

/// A hook told when media ports become active or free (the `xdp` backend updates the XDP
/// program's `media_ports` map with it).
pub trait PortWatcher: Send {
    /// `port` (RTP or RTCP) is in use (`true`) or free.
    fn set_active(&mut self, port: u16, active: bool);
}

impl UdpPortPool {
    /// Calls `watcher` for every port pair allocated and released from now on.
    pub fn with_watcher(mut self, watcher: Box<dyn PortWatcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }
}

impl PortPool for UdpPortPool {
    fn allocate(&mut self) -> Result<u16, PortError> {
        for _ in 0..MAX_BIND_ATTEMPTS {
            let port = self.range.allocate()?;
            match (self.bind(port), self.bind(port + 1)) {
                (Ok(a), Ok(b)) => {
                    self.bound.insert(port, a);
                    self.bound.insert(port + 1, b);
                    if let Some(w) = self.watcher.as_mut() {
                        w.set_active(port, true);
                        w.set_active(port + 1, true);
                    }
                    return Ok(port);
                }
                (a, b) => {
                    let e = a.err().or(b.err());
                    tracing::warn!(port, error = ?e, "media port pair busy; skipping it");
                    self.range.skip(port);
                }
            }
        }
        Err(PortError::Exhausted)
    }

    fn release(&mut self, rtp_port: u16) {
        self.bound.remove(&rtp_port);
        self.bound.remove(&(rtp_port + 1));
        if let Some(w) = self.watcher.as_mut() {
            w.set_active(rtp_port, false);
            w.set_active(rtp_port + 1, false);
        }
        self.range.release(rtp_port);
    }

    fn free_pairs(&self) -> usize {
        self.range.free_pairs()
    }
}
