//! The `xdp` backend: one pinned worker per NIC RX queue, each with its AF_XDP socket
//! ([`XskQueue`]) and its own [`MediaCore`] holding every endpoint (RSS sends a flow to any
//! queue). A worker receives frames the XDP program redirected, runs the media core on the
//! UDP payload in place in UMEM, rewrites the Ethernet/IP/UDP headers for the other party
//! and transmits the same frame on its TX ring. When the next hop's MAC is not known yet, the
//! payload goes out through the kernel (the media port's UDP socket) instead, which resolves
//! it. Recording uses the same taps as the `udp` backend.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TrySendError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::neigh::Neighbours;
use super::udp::{WorkerCmd, WorkerCounters, WorkerHandle, WorkerSpec};
use super::xsk::{Verdict, XskQueue, DEFAULT_FRAMES, RX_BATCH};
use crate::media::frame::{self, Rewrite};
use crate::media::record::RecordingTable;
use crate::media::{Action, MediaCore};
use crate::recording::writer::WriterMsg;

const XSK: Token = Token(0);
const WAKER: Token = Token(1);
/// Idle wait; also bounds how late a shutdown is seen.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How often recording blocks past the flush interval are sealed.
const RECORD_TICK_NS: u64 = 20_000_000;

/// Where an `xdp` worker runs.
pub struct XdpQueueSpec {
    /// Interface index (in the process's network namespace).
    pub ifindex: u32,
    /// RX queue served.
    pub queue: u32,
    /// The recorder's address on the interface (source of forwarded packets).
    pub local_ip: IpAddr,
    /// The interface's MAC address.
    pub local_mac: [u8; 6],
}

/// Opens the AF_XDP socket of `q` on a new worker thread and starts it. Returns the handle
/// and, once the socket is open, its fd for the XDP program's `xsks` map.
pub fn spawn_worker(spec: WorkerSpec, q: XdpQueueSpec) -> io::Result<(WorkerHandle, i32)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let counters = Arc::new(WorkerCounters::default());
    let c = Arc::clone(&counters);
    let (fd_tx, fd_rx) = crossbeam_channel::bounded::<Result<i32, String>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("xdp-q{}", q.queue))
        .spawn(move || {
            if let Some(core) = spec.core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(queue = q.queue, core = core.id, "could not pin worker");
                }
            }
            let xsk = match XskQueue::open(q.ifindex, q.queue, DEFAULT_FRAMES) {
                Ok(x) => x,
                Err(e) => {
                    let _ = fd_tx.send(Err(e.to_string()));
                    return;
                }
            };
            tracing::info!(
                queue = q.queue,
                mode = match xsk.zero_copy() {
                    Ok(true) => "zero-copy",
                    Ok(false) => "copy",
                    Err(_) => "unknown",
                },
                "AF_XDP socket bound"
            );
            let xsk_fd = xsk.as_raw_fd();
            if let Err(e) =
                poll.registry()
                    .register(&mut SourceFd(&xsk_fd), XSK, Interest::READABLE)
            {
                let _ = fd_tx.send(Err(format!("cannot watch the AF_XDP socket: {e}")));
                return;
            }
            let _ = fd_tx.send(Ok(xsk_fd));
            let mut w = XdpWorker {
                core: MediaCore::new(spec.port_min, spec.port_max)
                    .with_recordings(RecordingTable::new(Arc::clone(&spec.pool), spec.flush_ns)),
                commands: rx,
                counters: c,
                sockets: HashMap::new(),
                neighbours: Arc::default(),
                q,
                kernel_path: 0,
                send_failed: 0,
            };
            w.run(poll, xsk, &spec);
        })?;
    let fd = fd_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| io::Error::other("AF_XDP worker did not start"))?
        .map_err(io::Error::other)?;
    Ok((WorkerHandle::new(tx, waker, counters, thread), fd))
}

struct XdpWorker {
    core: MediaCore,
    commands: Receiver<WorkerCmd>,
    counters: Arc<WorkerCounters>,
    /// Media ports' kernel sockets: the path for packets whose next hop is unresolved.
    sockets: HashMap<u16, UdpSocket>,
    neighbours: Neighbours,
    q: XdpQueueSpec,
    kernel_path: u64,
    send_failed: u64,
}

impl XdpWorker {
    fn apply(&mut self, cmd: WorkerCmd, spec: &WorkerSpec) {
        let now = spec.epoch.elapsed().as_nanos() as u64;
        let Some(cmd) = cmd.apply_common(&mut self.core, now) else {
            return;
        };
        match cmd {
            WorkerCmd::Upsert(config, socket) => {
                if let Some(s) = socket {
                    self.sockets.insert(config.port, s);
                }
                self.core.upsert(config);
            }
            WorkerCmd::Remove(port) => {
                self.core.remove(port);
                self.sockets.remove(&port);
            }
            WorkerCmd::Neighbours(n) => self.neighbours = n,
            // Handled by `apply_common`.
            _ => {}
        }
    }

    fn flush_recordings(&mut self, spec: &WorkerSpec) {
        while let Some(out) = self.core.poll_record_output() {
            if spec.writer.send(WriterMsg::Output(out)).is_err() {
                tracing::error!("recording writer is gone; block dropped");
            }
        }
    }

    /// The decision for one frame (the media core on its UDP payload, then the rewrite).
    fn frame(&mut self, frame: &mut [u8], now: u64) -> Verdict {
        let Ok(f) = frame::parse(frame) else {
            return Verdict::Drop;
        };
        if f.destination.ip() != self.q.local_ip {
            return Verdict::Drop;
        }
        let payload = f.payload..f.payload + f.payload_len;
        let action =
            self.core
                .handle_packet(&frame[payload.clone()], f.destination.port(), f.source, now);
        let Action::Forward { from_port, to } = action else {
            return Verdict::Drop;
        };
        let source = SocketAddr::new(self.q.local_ip, from_port);
        match self.neighbours.mac_for(to.ip()) {
            Some(mac) => {
                let r = Rewrite {
                    src_mac: self.q.local_mac,
                    dst_mac: mac,
                    source,
                    destination: to,
                };
                match frame::rewrite(frame, &f, &r) {
                    Ok(()) => Verdict::Transmit,
                    Err(_) => Verdict::Drop,
                }
            }
            None => {
                // Unresolved next hop: the kernel sends it (and resolves the neighbour).
                self.kernel_path += 1;
                let sent = self
                    .sockets
                    .get(&from_port)
                    .map(|s| s.send_to(&frame[payload], to));
                if !matches!(sent, Some(Ok(_))) {
                    self.send_failed += 1;
                }
                Verdict::Drop
            }
        }
    }

    fn run(&mut self, mut poll: Poll, mut xsk: XskQueue, spec: &WorkerSpec) {
        let mut events = Events::with_capacity(16);
        let mut busy = false;
        let mut last_tick = 0u64;
        while !spec.stop.load(Relaxed) {
            let timeout = if busy { Duration::ZERO } else { IDLE_POLL };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(queue = self.q.queue, error = %e, "poll failed");
                    break;
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, spec);
            }
            let now = spec.epoch.elapsed().as_nanos() as u64;
            let counts = xsk.step(|pkt| self.frame(pkt, now));
            self.send_failed += counts.tx_full as u64;
            busy = counts.received == RX_BATCH || counts.transmitted > 0;
            if now.saturating_sub(last_tick) >= RECORD_TICK_NS {
                last_tick = now;
                self.core.handle_timeout(now);
            }
            self.flush_recordings(spec);
            while let Some(ev) = self.core.poll_event() {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    spec.events.try_send(ev)
                {
                    break;
                }
            }
            self.counters
                .publish(&self.core.counters(), self.send_failed);
            self.counters.kernel_path.store(self.kernel_path, Relaxed);
        }
        while let Ok(cmd) = self.commands.try_recv() {
            self.apply(cmd, spec);
        }
        self.flush_recordings(spec);
    }
}
