//! Batched datagram I/O with `recvmmsg(2)` and `sendmmsg(2)` over preallocated buffers.
//!
//! [`RecvBatch`] receives; [`SendBatch`] sends datagrams straight out of a `RecvBatch` (a
//! relay forwarding without a copy); [`OutBatch`] owns its buffers for a sender that builds
//! its own packets (a load generator).
//!
//! Written by hand because the crates that wrap these calls either allocate per call (nix's
//! `recvmmsg` builds its header vectors each time) or are tied to their own socket types
//! (quinn-udp). Here the message headers, iovecs, addresses and packet buffers are allocated
//! once per worker; a batch costs one syscall and no allocation. Forwarded packets are sent
//! straight from the receive buffers (no copy).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Datagrams per `recvmmsg`/`sendmmsg` call. 32 amortises the syscall well (quinn uses the
/// same order, `BATCH_SIZE`) while keeping a batch of 20 ms voice packets well inside L1/L2.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: larger than any RTP packet on an Ethernet path (1500 MTU);
/// bigger datagrams arrive truncated (`MSG_TRUNC`) and are counted as oversized.
pub const BUF_SIZE: usize = 2048;

/// One received datagram of a batch.
pub struct Received<'a> {
    /// The datagram (up to [`BUF_SIZE`] bytes).
    pub data: &'a [u8],
    /// Its source.
    pub source: Option<SocketAddr>,
    /// It was larger than the buffer and got cut.
    pub truncated: bool,
}

/// Receive side: `BATCH` buffers and the `mmsghdr`s pointing at them.
pub struct RecvBatch {
    bufs: Box<[[u8; BUF_SIZE]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    len: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Allocates the buffers (once per worker).
    pub fn new() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        RecvBatch {
            bufs: vec![[0u8; BUF_SIZE]; BATCH].into_boxed_slice(),
            addrs: vec![zero_addr; BATCH].into_boxed_slice(),
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            hdrs: vec![zero_hdr; BATCH].into_boxed_slice(),
            len: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams from the non-blocking socket `fd`. Returns how many
    /// (0 never: `WouldBlock` when nothing is queued).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF_SIZE,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `self` that outlive the call, with
        // lengths matching their allocations.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.len = 0;
            return Err(io::Error::last_os_error());
        }
        self.len = n as usize;
        Ok(self.len)
    }

    /// Datagram `i` of the last batch.
    pub fn get(&self, i: usize) -> Received<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(BUF_SIZE);
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into the storage.
        let source = unsafe { SockAddr::new(self.addrs[i], h.msg_hdr.msg_namelen).as_socket() };
        Received {
            data: &self.bufs[i][..len],
            source,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// Pointer and length of datagram `i`'s bytes, for sending it without a copy.
    fn slice(&self, i: usize) -> (*const u8, usize) {
        let len = (self.hdrs[i].msg_len as usize).min(BUF_SIZE);
        (self.bufs[i].as_ptr(), len)
    }
}

/// Send side: destinations and headers for up to [`BATCH`] datagrams taken from a
/// [`RecvBatch`].
pub struct SendBatch {
    addrs: Box<[SockAddr]>,
    iovecs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened to a send batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped (socket buffer full or a send error).
    pub failed: usize,
}

impl SendBatch {
    /// Allocates the headers (once per worker).
    pub fn new() -> Self {
        let unspecified = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        // SAFETY: all-zero is a valid mmsghdr.
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        SendBatch {
            addrs: vec![unspecified; BATCH].into_boxed_slice(),
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            hdrs: vec![zero_hdr; BATCH].into_boxed_slice(),
            len: 0,
        }
    }

    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues datagram `i` of `rx` to `to`. The batch must be flushed before `rx` receives
    /// again. Returns false when full.
    pub fn push(&mut self, rx: &RecvBatch, i: usize, to: SocketAddr) -> bool {
        if self.len == BATCH {
            return false;
        }
        let (ptr, len) = rx.slice(i);
        self.addrs[self.len] = SockAddr::from(to);
        self.iovecs[self.len] = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        self.len += 1;
        true
    }

    /// Sends everything queued from socket `fd` and empties the batch. Never blocks: what
    /// the socket cannot take right now is dropped and counted.
    pub fn flush(&mut self, fd: RawFd) -> SendOutcome {
        let mut out = SendOutcome::default();
        for i in 0..self.len {
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = self.addrs[i].as_ptr() as *mut libc::c_void;
            h.msg_namelen = self.addrs[i].len();
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut start = 0;
        while start < self.len {
            // SAFETY: headers point at addresses and iovecs owned by `self` and at receive
            // buffers the caller keeps untouched until this returns.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[start..].as_mut_ptr(),
                    (self.len - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // The first datagram failed (buffer full, unreachable, ...): drop it, go on.
                out.failed += 1;
                start += 1;
            } else {
                out.sent += n as usize;
                start += n as usize;
            }
        }
        self.len = 0;
        out
    }
}

/// Send side with its own buffers: up to [`BATCH`] datagrams of at most [`BUF_SIZE`] bytes,
/// written in place by the caller and sent with one `sendmmsg`.
pub struct OutBatch {
    bufs: Box<[[u8; BUF_SIZE]]>,
    lens: Box<[usize]>,
    tx: SendBatch,
}

impl Default for OutBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl OutBatch {
    /// Allocates the buffers (once per sender).
    pub fn new() -> Self {
        OutBatch {
            bufs: vec![[0u8; BUF_SIZE]; BATCH].into_boxed_slice(),
            lens: vec![0; BATCH].into_boxed_slice(),
            tx: SendBatch::new(),
        }
    }

    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.tx.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.tx.len == 0
    }

    /// Queues a datagram of `len` bytes to `to` and returns its buffer for the caller to
    /// fill (it holds what the slot held last time: callers that rewrite only a few fields
    /// of a fixed packet can rely on that). `None` when the batch is full; `len` is capped
    /// at [`BUF_SIZE`].
    pub fn push(&mut self, to: &SockAddr, len: usize) -> Option<&mut [u8]> {
        let i = self.tx.len;
        if i == BATCH {
            return None;
        }
        let len = len.min(BUF_SIZE);
        self.lens[i] = len;
        self.tx.addrs[i] = to.clone();
        self.tx.iovecs[i] = libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: len,
        };
        self.tx.len += 1;
        Some(&mut self.bufs[i][..len])
    }

    /// Sends everything queued from socket `fd` and empties the batch (never blocks; what
    /// the socket cannot take is dropped and counted).
    pub fn flush(&mut self, fd: RawFd) -> SendOutcome {
        // The iovecs point into `self.bufs`, which stay in place until this returns.
        self.tx.flush(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        for i in 0..40u8 {
            a.send_to(&[i; 100], b.local_addr().unwrap()).unwrap();
        }
        let mut rx = RecvBatch::new();
        let mut got = Vec::new();
        while let Ok(n) = rx.recv(b.as_raw_fd()) {
            for i in 0..n {
                let r = rx.get(i);
                assert_eq!(r.source, Some(a.local_addr().unwrap()));
                assert!(!r.truncated);
                got.push(r.data[0]);
            }
        }
        assert_eq!(got, (0..40).collect::<Vec<u8>>());

        // Echo a batch back through sendmmsg.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        a.send_to(b"yz", b.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = rx.recv(b.as_raw_fd()).unwrap();
        assert_eq!(n, 2);
        let mut tx = SendBatch::new();
        for i in 0..n {
            assert!(tx.push(&rx, i, c.local_addr().unwrap()));
        }
        assert_eq!(tx.flush(b.as_raw_fd()), SendOutcome { sent: 2, failed: 0 });
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf).unwrap(), 1);
        assert_eq!(c.recv(&mut buf).unwrap(), 2);
        assert!(matches!(rx.recv(b.as_raw_fd()), Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }

    #[test]
    fn out_batch_sends_what_was_written() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let to = SockAddr::from(b.local_addr().unwrap());
        let mut out = OutBatch::new();
        for i in 0..BATCH {
            out.push(&to, 3 + i % 2).unwrap().fill(i as u8);
        }
        assert!(out.push(&to, 3).is_none(), "full");
        assert_eq!(out.flush(a.as_raw_fd()).sent, BATCH);
        assert!(out.is_empty());
        let mut buf = [0u8; 16];
        for i in 0..BATCH {
            let n = b.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &vec![i as u8; 3 + i % 2][..]);
        }
    }

    #[test]
    fn oversized_datagrams_are_flagged() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&vec![7u8; 9000], b.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = RecvBatch::new();
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 1);
        let r = rx.get(0);
        assert!(r.truncated);
        assert_eq!(r.data.len(), BUF_SIZE);
    }
}
