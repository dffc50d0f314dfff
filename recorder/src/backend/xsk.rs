//! One AF_XDP socket per NIC RX queue: its UMEM, its four rings, and the batched loop step
//! that receives frames, lets the caller decide on each, transmits the kept ones from the same
//! UMEM frame (no copy) and recycles the rest.
//!
//! Built on the `xdp` crate (pure Rust, MIT/Apache-2.0, no C build; see
//! docs/architecture.md for the choice): this module only owns the ring bookkeeping. Frame
//! ownership: a frame is either in the fill ring (the kernel may write it), in the RX slab
//! (ours, being looked at), in the TX ring (the kernel is sending it) or free in the UMEM; the
//! completion ring returns sent frames to the UMEM, and every step refills the fill ring.

use std::os::fd::{AsRawFd, RawFd};

use xdp::nic::NicIndex;
use xdp::slab::{HeapSlab, Slab};
use xdp::socket::{XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{Packet, RingConfigBuilder, Umem, WakableRings};

/// Frames per queue: 4096 × 2 KiB = 8 MiB of UMEM per queue (the memlock budget counts it).
pub const DEFAULT_FRAMES: u32 = 4096;
/// Frames taken from the RX ring per step (the same order as the UDP backend's batches).
pub const RX_BATCH: usize = 64;
/// Ring sizes (descriptors); a power of two, at most the number of frames.
const RING_SIZE: u32 = 2048;

/// Why a queue socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The UMEM mapping failed (memlock limit, memory).
    #[error("UMEM: {0}")]
    Umem(String),
    /// Creating, configuring or binding the socket failed.
    #[error("AF_XDP socket on queue {queue}: {reason}")]
    Socket {
        /// RX queue.
        queue: u32,
        /// What failed.
        reason: String,
    },
}

/// What the caller wants done with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) frame out of this queue's TX ring.
    Transmit,
    /// Give the frame back.
    Drop,
}

/// Counters of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// Frames received.
    pub received: usize,
    /// Frames queued for transmission.
    pub transmitted: usize,
    /// Frames that could not be queued (TX ring full) and were dropped.
    pub tx_full: usize,
}

/// An AF_XDP socket bound to one queue, with its UMEM and rings.
pub struct XskQueue {
    // Drop order: socket and rings before the UMEM they point into.
    socket: XdpSocket,
    rings: WakableRings,
    rx: HeapSlab,
    tx: HeapSlab,
    umem: Umem,
    queue: u32,
    /// Frames handed to the TX ring and not yet back on the completion ring.
    tx_in_flight: usize,
}

impl XskQueue {
    /// Creates the UMEM and rings and binds a socket to queue `queue` of interface
    /// `ifindex` (in the calling thread's network namespace). The kernel uses zero-copy when
    /// the driver supports it and copy mode otherwise.
    pub fn open(ifindex: u32, queue: u32, frames: u32) -> Result<XskQueue, XskError> {
        let sock_err = |reason: String| XskError::Socket { queue, reason };
        let cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            frame_count: frames,
            ..Default::default()
        }
        .build()
        .map_err(|e| XskError::Umem(e.to_string()))?;
        let mut umem = Umem::map(cfg).map_err(|e| XskError::Umem(e.to_string()))?;
        let mut builder = XdpSocketBuilder::new().map_err(|e| sock_err(e.to_string()))?;
        let ring_size = RING_SIZE.min(frames.next_power_of_two() / 2).max(64);
        let ring_cfg = RingConfigBuilder {
            rx_count: ring_size,
            tx_count: ring_size,
            fill_count: ring_size,
            completion_count: ring_size,
        }
        .build()
        .map_err(|e| sock_err(e.to_string()))?;
        let (mut rings, flags) = builder
            .build_wakable_rings(&umem, ring_cfg)
            .map_err(|e| sock_err(e.to_string()))?;
        let socket = builder
            .bind(NicIndex(ifindex), queue, flags)
            .map_err(|e| sock_err(e.to_string()))?;
        // Give the kernel frames to receive into.
        // SAFETY: the UMEM outlives the rings (field order), frames come from this UMEM.
        unsafe { rings.fill_ring.enqueue(&mut umem, ring_size as usize, true) }
            .map_err(|e| sock_err(format!("fill ring: {e}")))?;
        Ok(XskQueue {
            socket,
            rings,
            rx: HeapSlab::with_capacity(RX_BATCH),
            tx: HeapSlab::with_capacity(RX_BATCH),
            umem,
            queue,
            tx_in_flight: 0,
        })
    }

    /// Whether the kernel runs this socket in zero-copy mode (the driver supports it) rather
    /// than copy mode (XDP_OPTIONS, linux/if_xdp.h).
    pub fn zero_copy(&self) -> std::io::Result<bool> {
        const SOL_XDP: libc::c_int = 283;
        const XDP_OPTIONS: libc::c_int = 8;
        const XDP_OPTIONS_ZEROCOPY: u32 = 1;
        let mut flags: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `flags`.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.raw_fd(),
                SOL_XDP,
                XDP_OPTIONS,
                (&mut flags as *mut u32).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// The RX queue this socket serves.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// One batch: reap sent frames, receive up to [`RX_BATCH`] frames, call `decide` on each
    /// (it may rewrite the frame in place), transmit the kept ones, recycle the others, refill
    /// the fill ring. Never blocks.
    pub fn step(&mut self, mut decide: impl FnMut(&mut Packet) -> Verdict) -> StepCounts {
        let mut counts = StepCounts::default();
        let done = self
            .rings
            .completion_ring
            .dequeue(&mut self.umem, RING_SIZE as usize);
        self.tx_in_flight = self.tx_in_flight.saturating_sub(done);
        if self.tx_in_flight > 0 && self.tx.is_empty() {
            // Copy mode sends from the wakeup syscall; one that returned EAGAIN left frames
            // in the ring, so kick again while any are outstanding (one syscall per step).
            self.kick_tx();
        }
        let Some(rx_ring) = self.rings.rx_ring.as_mut() else {
            return counts;
        };
        // SAFETY: the packets come from this UMEM, which outlives them (they go back to the
        // UMEM or to the TX ring before this function returns).
        counts.received = unsafe { rx_ring.recv(&self.umem, &mut self.rx) };
        while let Some(mut packet) = self.rx.pop_back() {
            match decide(&mut packet) {
                Verdict::Transmit => {
                    if let Some(p) = self.tx.push_front(packet) {
                        counts.tx_full += 1;
                        self.umem.free_packet(p);
                    }
                }
                Verdict::Drop => self.umem.free_packet(packet),
            }
        }
        if !self.tx.is_empty() {
            if let Some(tx_ring) = self.rings.tx_ring.as_mut() {
                // SAFETY: frames of this UMEM; the kernel returns them on the completion ring.
                let queued = self.tx.len();
                match unsafe { tx_ring.send(&mut self.tx, true) } {
                    Ok(n) => counts.transmitted = n,
                    // The frames are in the ring; the kernel sends them at the next wakeup.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        counts.transmitted = queued - self.tx.len();
                    }
                    Err(e) => {
                        counts.transmitted = queued - self.tx.len();
                        tracing::debug!(queue = self.queue, error = %e, "AF_XDP TX wakeup failed");
                    }
                }
            }
            self.tx_in_flight += counts.transmitted;
            // Whatever the TX ring could not take goes back to the UMEM.
            while let Some(p) = self.tx.pop_back() {
                counts.tx_full += 1;
                self.umem.free_packet(p);
            }
        }
        // SAFETY: frames of this UMEM.
        let _ = unsafe {
            self.rings
                .fill_ring
                .enqueue(&mut self.umem, RX_BATCH * 2, true)
        };
        counts
    }
}

impl XskQueue {
    fn kick_tx(&self) {
        // SAFETY: a zero-length, non-blocking send on our own socket: the AF_XDP TX wakeup.
        let _ = unsafe {
            libc::sendto(
                self.socket.raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }
}

impl AsRawFd for XskQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.raw_fd()
    }
}
