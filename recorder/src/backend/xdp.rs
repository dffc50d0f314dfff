//! The `xdp` backend: one pinned worker per NIC RX queue, each with its AF_XDP socket
//! ([`XskQueue`]) and its own [`MediaCore`] holding every endpoint (RSS sends a flow to any
//! queue). A worker receives frames the XDP program redirected, runs the media core on the
//! UDP payload in place in UMEM, rewrites the Ethernet/IP/UDP headers for the other party
//! and transmits the same frame on its TX ring. When the next hop's MAC is not known yet, the
//! payload goes out through the kernel (the media port's UDP socket) instead, which resolves
//! it. Recording uses the same taps as the `udp` backend, and the loop is the shared worker
//! core ([`super::worker`]): this module is only the [`Io`] steps.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::neigh::Neighbours;
use super::worker::{self, Io, IoStep, WorkerHandle, WorkerSpec};
use super::xsk::{StepCounts, Verdict, XskQueue, DEFAULT_FRAMES, RX_BATCH};
use crate::media::frame::{self, Rewrite};
use crate::media::{Action, MediaCore};

const XSK: Token = Token(0);

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

/// A ring of whole frames: the AF_XDP socket ([`XskQueue`]), or an in-memory one in tests.
pub trait FrameRing {
    /// Receives a batch, calls `decide` on each frame (it may rewrite the frame in place),
    /// transmits the kept ones and recycles the rest. Never blocks.
    fn step(&mut self, decide: impl FnMut(&mut [u8]) -> Verdict) -> StepCounts;
}

impl FrameRing for XskQueue {
    fn step(&mut self, mut decide: impl FnMut(&mut [u8]) -> Verdict) -> StepCounts {
        XskQueue::step(self, |p| decide(&mut p[..]))
    }
}

/// Opens the AF_XDP socket of `q` on a new worker thread and starts it. Returns the handle
/// and, once the socket is open, its fd for the XDP program's `xsks` map.
pub fn spawn_worker(spec: WorkerSpec, q: XdpQueueSpec) -> io::Result<(WorkerHandle, i32)> {
    let name = format!("xdp-q{}", q.queue);
    worker::spawn(spec, name, move |registry| {
        let xsk = XskQueue::open(q.ifindex, q.queue, DEFAULT_FRAMES).map_err(|e| e.to_string())?;
        tracing::info!(
            queue = q.queue,
            mode = match xsk.zero_copy() {
                Ok(true) => "zero-copy",
                Ok(false) => "copy",
                Err(_) => "unknown",
            },
            "AF_XDP socket bound"
        );
        let fd = xsk.as_raw_fd();
        registry
            .register(&mut SourceFd(&fd), XSK, Interest::READABLE)
            .map_err(|e| format!("cannot watch the AF_XDP socket: {e}"))?;
        Ok((XdpIo::new(xsk, q), fd))
    })
}

/// The `xdp` backend's I/O: frames from a [`FrameRing`], decided on and rewritten in place;
/// the media ports' kernel sockets for next hops whose MAC is not known yet.
pub struct XdpIo<R> {
    ring: R,
    /// Media ports' kernel sockets: the path for packets whose next hop is unresolved.
    sockets: HashMap<u16, UdpSocket>,
    neighbours: Neighbours,
    q: XdpQueueSpec,
}

impl<R: FrameRing> XdpIo<R> {
    /// The I/O of queue `q` on `ring`, with no neighbours known yet.
    pub fn new(ring: R, q: XdpQueueSpec) -> Self {
        XdpIo {
            ring,
            sockets: HashMap::new(),
            neighbours: Neighbours::default(),
            q,
        }
    }

    /// The frame ring.
    pub fn ring_mut(&mut self) -> &mut R {
        &mut self.ring
    }
}

/// What the decision on one frame did besides its verdict.
#[derive(Default)]
struct FrameCounts {
    kernel_path: u64,
    send_failed: u64,
}

/// The decision for one frame (the media core on its UDP payload, then the rewrite).
fn decide(
    core: &mut MediaCore,
    q: &XdpQueueSpec,
    neighbours: &Neighbours,
    sockets: &HashMap<u16, UdpSocket>,
    counts: &mut FrameCounts,
    frame: &mut [u8],
    now: u64,
) -> Verdict {
    let Ok(f) = frame::parse(frame) else {
        return Verdict::Drop;
    };
    if f.destination.ip() != q.local_ip {
        return Verdict::Drop;
    }
    let payload = f.payload..f.payload + f.payload_len;
    let action = core.handle_packet(&frame[payload.clone()], f.destination.port(), f.source, now);
    let Action::Forward { from_port, to } = action else {
        return Verdict::Drop;
    };
    let source = SocketAddr::new(q.local_ip, from_port);
    match neighbours.mac_for(to.ip()) {
        Some(mac) => {
            let r = Rewrite {
                src_mac: q.local_mac,
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
            counts.kernel_path += 1;
            let sent = sockets
                .get(&from_port)
                .map(|s| s.send_to(&frame[payload], to));
            if !matches!(sent, Some(Ok(_))) {
                counts.send_failed += 1;
            }
            Verdict::Drop
        }
    }
}

impl<R: FrameRing> Io for XdpIo<R> {
    fn attach(&mut self, port: u16, socket: Option<UdpSocket>, _registry: &Registry) {
        if let Some(s) = socket {
            self.sockets.insert(port, s);
        }
    }

    fn detach(&mut self, port: u16, _registry: &Registry) {
        self.sockets.remove(&port);
    }

    fn neighbours(&mut self, neighbours: Neighbours) {
        self.neighbours = neighbours;
    }

    fn step(&mut self, core: &mut MediaCore, now: &mut dyn FnMut() -> u64) -> IoStep {
        let t = now();
        let mut fc = FrameCounts::default();
        let (q, neighbours, sockets) = (&self.q, &self.neighbours, &self.sockets);
        let counts = self
            .ring
            .step(|frame| decide(core, q, neighbours, sockets, &mut fc, frame, t));
        IoStep {
            received: counts.received as u64,
            send_failed: counts.tx_full as u64 + fc.send_failed,
            kernel_path: fc.kernel_path,
            busy: counts.received == RX_BATCH || counts.transmitted > 0,
        }
    }
}
