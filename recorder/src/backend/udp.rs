//! The portable `udp` backend: kernel UDP sockets, one per media port, served by pinned
//! worker threads around the sans-IO [`MediaCore`].
//!
//! The control thread binds the sockets when it allocates a pair ([`UdpPortPool`]) and gives
//! them, with the endpoint configuration, to the worker that owns the call. The loop is the
//! shared one ([`super::worker`]); this backend's [`UdpIo`] drains each readable socket with
//! `recvmmsg` in batches, asks the core where each datagram goes and sends the batch from the
//! other party's socket with `sendmmsg`, straight from the receive buffers. Work per wake-up
//! is bounded ([`MAX_BATCHES_PER_SOCKET`]) so one flooded port cannot starve the others.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use mio::{Interest, Registry, Token};

use super::worker::{self, Io, IoStep, WorkerHandle, WorkerSpec};
use crate::media::{Action, MediaCore};
use crate::ports::{PortError, PortPool, PortRange};
use linecord_mmsg::{RecvBatch, SendBatch, BATCH};

/// Batches read from one socket before moving to the next ready socket (fairness bound:
/// 8 × 32 datagrams ≈ 5 ms of a 50 kpps port).
pub const MAX_BATCHES_PER_SOCKET: usize = 8;

/// Starts a `udp` worker thread.
pub fn spawn_worker(spec: WorkerSpec) -> io::Result<WorkerHandle> {
    let (min, max) = (spec.port_min, spec.port_max);
    let name = format!("media-{}", spec.index);
    // Built on the worker thread: the batches hold raw pointers into themselves.
    Ok(worker::spawn(spec, name, move |_| Ok((UdpIo::new(min, max), ())))?.0)
}

/// The `udp` backend's I/O: one non-blocking kernel socket per media port, watched by the
/// worker's epoll (token = port), drained with `recvmmsg`, answered with `sendmmsg`.
pub struct UdpIo {
    port_min: u16,
    sockets: Vec<Option<mio::net::UdpSocket>>,
    /// Ports with datagrams possibly still queued (edge-triggered epoll).
    ready: Vec<u16>,
    /// The ports to service this step (swapped with `ready`, no allocation per step).
    serving: Vec<u16>,
    is_ready: Vec<bool>,
    rx: RecvBatch,
    tx: SendBatch,
    send_failed: u64,
}

impl UdpIo {
    /// No sockets yet, for ports `port_min..=port_max`.
    pub fn new(port_min: u16, port_max: u16) -> Self {
        let len = usize::from(port_max.saturating_sub(port_min)) + 1;
        UdpIo {
            port_min,
            sockets: (0..len).map(|_| None).collect(),
            ready: Vec::with_capacity(1024),
            serving: Vec::with_capacity(1024),
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

    fn mark_ready(&mut self, port: u16) {
        if let Some(i) = self.index(port) {
            if !self.is_ready[i] {
                self.is_ready[i] = true;
                self.ready.push(port);
            }
        }
    }

    /// Reads and forwards up to [`MAX_BATCHES_PER_SOCKET`] batches from `port`. Returns
    /// (datagrams read, whether the socket is drained).
    fn service(
        &mut self,
        core: &mut MediaCore,
        port: u16,
        now: &mut dyn FnMut() -> u64,
    ) -> (u64, bool) {
        let Some(fd) = self
            .index(port)
            .and_then(|i| self.sockets[i].as_ref())
            .map(|s| s.as_raw_fd())
        else {
            return (0, true);
        };
        let mut received = 0u64;
        for _ in 0..MAX_BATCHES_PER_SOCKET {
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (received, true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here (ECONNREFUSED from an earlier send): not fatal.
                    tracing::trace!(port, error = %e, "recvmmsg");
                    continue;
                }
            };
            received += n as u64;
            let t = now();
            let mut out_port = None;
            for i in 0..n {
                let r = self.rx.get(i);
                let Some(source) = r.source else { continue };
                if r.truncated {
                    core.count_oversized(port);
                    continue;
                }
                if let Action::Forward { from_port, to } =
                    core.handle_packet(r.data, port, source, t)
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
                return (received, true);
            }
        }
        (received, false)
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

impl Io for UdpIo {
    fn attach(&mut self, port: u16, socket: Option<UdpSocket>, registry: &Registry) {
        let (Some(sock), Some(i)) = (socket, self.index(port)) else {
            return;
        };
        let mut sock = mio::net::UdpSocket::from_std(sock);
        match registry.register(&mut sock, Token(usize::from(port)), Interest::READABLE) {
            Ok(()) => {
                self.sockets[i] = Some(sock);
                // Packets may have arrived before registration.
                self.mark_ready(port);
            }
            Err(e) => tracing::error!(port, error = %e, "cannot watch media socket"),
        }
    }

    fn detach(&mut self, port: u16, registry: &Registry) {
        if let Some(i) = self.index(port) {
            if let Some(mut s) = self.sockets[i].take() {
                let _ = registry.deregister(&mut s);
            }
        }
    }

    fn readable(&mut self, token: Token) {
        if let Ok(port) = u16::try_from(token.0) {
            self.mark_ready(port);
        }
    }

    fn step(&mut self, core: &mut MediaCore, now: &mut dyn FnMut() -> u64) -> IoStep {
        std::mem::swap(&mut self.ready, &mut self.serving);
        let mut serving = std::mem::take(&mut self.serving);
        let mut received = 0;
        for &port in &serving {
            if let Some(i) = self.index(port) {
                self.is_ready[i] = false;
            }
            let (n, drained) = self.service(core, port, now);
            received += n;
            if !drained {
                self.mark_ready(port);
            }
        }
        serving.clear();
        self.serving = serving;
        let send_failed = std::mem::take(&mut self.send_failed);
        IoStep {
            received,
            send_failed,
            kernel_path: 0,
            busy: !self.ready.is_empty(),
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
