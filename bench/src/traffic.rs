//! The generator: party threads that send paced RTP with `sendmmsg` and receive the other
//! party's packets with `recvmmsg`, measuring loss and one-way latency per trial.
//!
//! Each party (A, B) has one or more sender threads, each with its own UDP socket created
//! in the party's network namespace (the socket keeps its namespace; the thread needs
//! none). A thread owns a share of the streams and sends them round-robin at its share of
//! the offered rate; between batches it drains its socket, so the packets the relay sends
//! to this party are timed as soon as they arrive (it sleeps in `ppoll` on the socket, not
//! on a timer). Nothing is allocated per packet: packets are written into the slots of an
//! [`OutBatch`] and only the RTP sequence, timestamp and the stamp change.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use linecord_mmsg::{OutBatch, RecvBatch, BATCH};
use socket2::SockAddr;

use crate::measure::latency_histogram;
use crate::netns;
use crate::packet::{self, Stamp, PACKET};

/// Socket buffer size asked for (with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` as root): enough for
/// ~30 ms of a few hundred thousand packets per second, so a descheduled thread on a shared
/// 2-core machine does not turn into loss that is not the relay's.
const SOCKET_BUFFER: usize = 32 << 20;
/// Most packets sent per wake-up before the thread drains its receive queue again.
const MAX_SEND_PER_WAKE: u64 = 1024;
/// Most receive batches per wake-up before the thread sends again.
const MAX_RECV_BATCHES_PER_WAKE: usize = 64;
/// Longest sleep between checks when nothing is due.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// One RTP stream sent by a party thread.
#[derive(Debug, Clone)]
pub struct StreamOut {
    /// Stream index: `call * 2 + direction` (0 = A to B, 1 = B to A).
    pub index: u32,
    /// Where the packets go (the relay's port for this party, or the other party).
    pub dest: SocketAddr,
}

/// Opens a generator socket bound to `ip` (port chosen by the kernel) inside network
/// namespace `ns` (`None`: the caller's), with large buffers, non-blocking.
pub fn open_socket(ns: Option<&str>, ip: IpAddr) -> io::Result<UdpSocket> {
    let ns = ns.map(str::to_owned);
    let sock = std::thread::spawn(move || -> io::Result<UdpSocket> {
        if let Some(ns) = &ns {
            netns::enter(ns)?;
        }
        let s = socket2::Socket::new(
            socket2::Domain::for_address(SocketAddr::new(ip, 0)),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // The FORCE variants pass the sysctl caps (root); else take what the caps allow.
        if force_buffers(&s).is_err() {
            let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        }
        s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    })
    .join()
    .map_err(|_| io::Error::other("socket thread panicked"))??;
    Ok(sock)
}

fn force_buffers(s: &socket2::Socket) -> io::Result<()> {
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with a c_int option value we own, on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One trial, as a party thread runs it.
#[derive(Debug, Clone, Copy)]
pub struct TrialSpec {
    /// Trial number, stamped into every packet.
    pub trial: u32,
    /// Packets per second for this thread; `f64::INFINITY` sends as fast as it can.
    pub rate_pps: f64,
    /// How long to send.
    pub send_for: Duration,
    /// How long to keep receiving after sending stopped (packets still in flight).
    pub drain: Duration,
}

/// What one party thread counted in one trial.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    /// Packets the kernel accepted.
    pub sent: u64,
    /// Packets `sendmmsg` refused (socket buffer full): the generator's own limit.
    pub send_failed: u64,
    /// Packets of this trial received.
    pub received: u64,
    /// Packets of earlier trials received (late).
    pub stale: u64,
    /// Datagrams that were not bench packets.
    pub foreign: u64,
    /// One-way latency of every packet of this trial received, ns.
    pub latency: Histogram<u64>,
    /// How long the thread actually sent (for the achieved rate).
    pub send_elapsed: Duration,
}

/// A running party thread.
pub struct PartyThread {
    commands: Sender<TrialSpec>,
    results: Receiver<io::Result<ThreadResult>>,
    join: Option<JoinHandle<()>>,
}

impl PartyThread {
    /// Starts a thread that sends `streams` from `sock` and receives on it, pinned to core
    /// `cpu` when given.
    pub fn spawn(
        name: &str,
        sock: UdpSocket,
        streams: Vec<StreamOut>,
        cpu: Option<usize>,
    ) -> io::Result<PartyThread> {
        let (commands, command_rx) = crossbeam_channel::bounded::<TrialSpec>(1);
        let (result_tx, results) = crossbeam_channel::bounded(1);
        let join = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if let Some(id) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let mut worker = Worker::new(sock, &streams);
                for spec in command_rx {
                    if result_tx.send(worker.run(spec)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(PartyThread {
            commands,
            results,
            join: Some(join),
        })
    }

    /// Starts a trial (returns at once).
    pub fn start(&self, spec: TrialSpec) -> io::Result<()> {
        self.commands
            .send(spec)
            .map_err(|_| io::Error::other("party thread ended"))
    }

    /// Waits for the result of the trial started last.
    pub fn finish(&self) -> io::Result<ThreadResult> {
        self.results
            .recv()
            .map_err(|_| io::Error::other("party thread ended"))?
    }
}

impl Drop for PartyThread {
    fn drop(&mut self) {
        // Closing the command channel ends the thread's loop.
        let (dead, _) = crossbeam_channel::bounded(1);
        self.commands = dead;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

struct Stream {
    index: u32,
    dest: SockAddr,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

struct Worker {
    sock: UdpSocket,
    streams: Vec<Stream>,
    next: usize,
    out: OutBatch,
    rx: RecvBatch,
}

impl Worker {
    fn new(sock: UdpSocket, streams: &[StreamOut]) -> Worker {
        Worker {
            sock,
            streams: streams
                .iter()
                .map(|s| Stream {
                    index: s.index,
                    dest: SockAddr::from(s.dest),
                    ssrc: 0x1c0d_0000 ^ s.index,
                    seq: (s.index as u16).wrapping_mul(7919),
                    timestamp: s.index.wrapping_mul(104_729),
                })
                .collect(),
            next: 0,
            out: OutBatch::new(),
            rx: RecvBatch::new(),
        }
    }

    fn run(&mut self, spec: TrialSpec) -> io::Result<ThreadResult> {
        let mut r = ThreadResult {
            sent: 0,
            send_failed: 0,
            received: 0,
            stale: 0,
            foreign: 0,
            latency: latency_histogram(),
            send_elapsed: Duration::ZERO,
        };
        let fd = self.sock.as_raw_fd();
        let start = Instant::now();
        let send_end = start + spec.send_for;
        let end = send_end + spec.drain;
        let sending = !self.streams.is_empty() && spec.rate_pps > 0.0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if sending && now < send_end {
                let due = if spec.rate_pps.is_infinite() {
                    r.sent + r.send_failed + MAX_SEND_PER_WAKE
                } else {
                    (spec.rate_pps * (now - start).as_secs_f64()) as u64
                };
                let mut budget = due
                    .saturating_sub(r.sent + r.send_failed)
                    .min(MAX_SEND_PER_WAKE);
                while budget > 0 {
                    let n = budget.min(BATCH as u64);
                    self.fill(spec.trial, n as usize);
                    let outcome = self.out.flush(fd);
                    r.sent += outcome.sent as u64;
                    r.send_failed += outcome.failed as u64;
                    budget -= n;
                }
                r.send_elapsed = now - start;
            }
            self.receive(fd, spec.trial, &mut r);
            let now = Instant::now();
            let wake = if sending && now < send_end {
                if spec.rate_pps.is_infinite() {
                    now
                } else {
                    let next = (r.sent + r.send_failed + 1) as f64 / spec.rate_pps;
                    start + Duration::from_secs_f64(next)
                }
            } else {
                end
            };
            let sleep = wake.saturating_duration_since(now).min(MAX_SLEEP);
            if !sleep.is_zero() {
                wait_readable(fd, sleep);
            }
        }
        if sending {
            r.send_elapsed = r.send_elapsed.max(Duration::from_micros(1));
        }
        Ok(r)
    }

    /// Writes the next `n` packets (round-robin over the streams) into the batch.
    fn fill(&mut self, trial: u32, n: usize) {
        let now_ns = packet::monotonic_ns();
        let count = self.streams.len();
        for _ in 0..n {
            let s = &mut self.streams[self.next];
            self.next = (self.next + 1) % count;
            let stamp = Stamp {
                trial,
                stream: s.index,
                sent_ns: now_ns,
            };
            if let Some(buf) = self.out.push(&s.dest, PACKET) {
                packet::write(buf, s.ssrc, s.seq, s.timestamp, stamp);
            }
            s.seq = s.seq.wrapping_add(1);
            s.timestamp = s.timestamp.wrapping_add(160);
        }
    }

    fn receive(&mut self, fd: i32, trial: u32, r: &mut ThreadResult) {
        for _ in 0..MAX_RECV_BATCHES_PER_WAKE {
            let n = match self.rx.recv(fd) {
                Ok(n) => n,
                Err(_) => return, // WouldBlock, or an ICMP error queued on the socket
            };
            let now_ns = packet::monotonic_ns();
            for i in 0..n {
                match packet::read(self.rx.get(i).data) {
                    Some(stamp) if stamp.trial == trial => {
                        r.received += 1;
                        r.latency
                            .saturating_record(now_ns.saturating_sub(stamp.sent_ns));
                    }
                    Some(_) => r.stale += 1,
                    None => r.foreign += 1,
                }
            }
        }
    }
}

/// Sleeps until `fd` is readable or `timeout` passed (`ppoll`: nanosecond timeout).
fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one pollfd we own, a valid timespec, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// Sums the per-thread results of one trial.
#[derive(Debug, Clone)]
pub struct TrialTotals {
    /// Packets sent by every thread.
    pub sent: u64,
    /// Packets the generator could not send.
    pub send_failed: u64,
    /// Packets of the trial received.
    pub received: u64,
    /// Late packets of earlier trials.
    pub stale: u64,
    /// Achieved send rate, packets/s (sum over threads of sent / their send time).
    pub sent_pps: f64,
    /// Merged latency histogram, ns.
    pub latency: Histogram<u64>,
}

/// Adds up thread results.
pub fn total(results: &[ThreadResult]) -> TrialTotals {
    let mut t = TrialTotals {
        sent: 0,
        send_failed: 0,
        received: 0,
        stale: 0,
        sent_pps: 0.0,
        latency: latency_histogram(),
    };
    for r in results {
        t.sent += r.sent;
        t.send_failed += r.send_failed;
        t.received += r.received;
        t.stale += r.stale;
        if r.sent > 0 {
            t.sent_pps += r.sent as f64 / r.send_elapsed.as_secs_f64();
        }
        crate::measure::merge(&mut t.latency, &r.latency);
    }
    t
}

/// Runs one trial on every thread at `total_rate_pps` shared in proportion to each thread's
/// stream count, and adds up the results.
pub fn run_trial(
    threads: &[(PartyThread, usize)],
    trial: u32,
    total_rate_pps: f64,
    send_for: Duration,
    drain: Duration,
) -> io::Result<TrialTotals> {
    let streams: usize = threads.iter().map(|(_, n)| n).sum();
    for (t, n) in threads {
        let share = if streams == 0 {
            0.0
        } else {
            total_rate_pps * *n as f64 / streams as f64
        };
        t.start(TrialSpec {
            trial,
            rate_pps: share,
            send_for,
            drain,
        })?;
    }
    let mut results = Vec::with_capacity(threads.len());
    for (t, _) in threads {
        results.push(t.finish()?);
    }
    Ok(total(&results))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads on loopback sending to each other: every packet arrives, latencies are
    /// recorded, the rate is held.
    #[test]
    fn loopback_trial_counts_every_packet() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = open_socket(None, ip).unwrap();
        let b = open_socket(None, ip).unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let streams = |dir: u32, dest| {
            (0..10)
                .map(|call| StreamOut {
                    index: call * 2 + dir,
                    dest,
                })
                .collect::<Vec<_>>()
        };
        let threads = vec![
            (
                PartyThread::spawn("a", a, streams(0, ba), None).unwrap(),
                10,
            ),
            (
                PartyThread::spawn("b", b, streams(1, aa), None).unwrap(),
                10,
            ),
        ];
        let t = run_trial(
            &threads,
            1,
            2000.0,
            Duration::from_millis(500),
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(t.sent >= 900 && t.sent <= 1000, "{}", t.sent);
        assert_eq!(t.received, t.sent);
        assert_eq!(t.latency.len(), t.received);
        assert!(t.sent_pps > 1500.0 && t.sent_pps < 2500.0, "{}", t.sent_pps);
        // The next trial does not count the previous one's packets.
        let t2 = run_trial(
            &threads,
            2,
            1000.0,
            Duration::from_millis(200),
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(t2.received, t2.sent);
        assert_eq!(t2.stale, 0);
    }
}
