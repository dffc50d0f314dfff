//! `recorder xdp-sink`: the AF_XDP receive-and-drop ceiling of an interface.
//!
//! The same XDP program and AF_XDP sockets as the `xdp` backend, with workers that give
//! every frame straight back: what this measures is the most packets per second the
//! interface can hand to user space on this machine, the physical limit the relay's
//! forwarding is compared with (docs/benchmarks.md).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::xdp_prog::{RawFdRef, XdpProgram};
use super::xsk::{Verdict, XskQueue, DEFAULT_FRAMES};

/// What to steer and for how long.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Interface to attach to.
    pub interface: String,
    /// Only UDP to this address is steered.
    pub address: IpAddr,
    /// First UDP port steered.
    pub port_min: u16,
    /// Last UDP port steered.
    pub port_max: u16,
    /// RX queues served (0..queues).
    pub queues: u32,
    /// Stop after this long (also on SIGINT/SIGTERM).
    pub duration: Duration,
    /// Where the running totals are written (JSON, replaced atomically every 100 ms).
    pub stats_file: Option<PathBuf>,
}

/// Totals of a sink run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkTotals {
    /// Frames received and dropped, all queues.
    pub received: u64,
    /// Per queue.
    pub per_queue: Vec<u64>,
    /// Milliseconds since the sockets were ready.
    pub elapsed_ms: u64,
    /// `native` or `generic` XDP.
    pub xdp_mode: String,
    /// Whether every socket is in zero-copy mode.
    pub zero_copy: bool,
}

/// Runs the sink until `duration` passes or a signal arrives; returns the totals.
pub fn run(opts: &SinkOptions) -> anyhow::Result<SinkTotals> {
    anyhow::ensure!(
        opts.port_min <= opts.port_max,
        "--port-min is above --port-max"
    );
    anyhow::ensure!(opts.queues >= 1, "--queues must be at least 1");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let cname = std::ffi::CString::new(opts.interface.clone()).context("interface name")?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface named {}", opts.interface);
    let mut prog = XdpProgram::attach(&opts.interface, Some(opts.address))
        .with_context(|| format!("attaching the XDP program to {}", opts.interface))?;
    for port in opts.port_min..=opts.port_max {
        prog.set_media_port(port, true)?;
    }
    let counters: Arc<Vec<AtomicU64>> =
        Arc::new((0..opts.queues).map(|_| AtomicU64::new(0)).collect());
    let all_zero_copy = Arc::new(AtomicBool::new(true));
    let mut threads = Vec::new();
    for queue in 0..opts.queues {
        let (fd_tx, fd_rx) = crossbeam_channel::bounded::<Result<i32, String>>(1);
        let (stop, counters, zc) = (
            Arc::clone(&stop),
            Arc::clone(&counters),
            Arc::clone(&all_zero_copy),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("sink-q{queue}"))
                .spawn(move || {
                    // The socket is not Send: it is opened and used on this thread only.
                    let mut xsk = match XskQueue::open(ifindex, queue, DEFAULT_FRAMES) {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = fd_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    if !xsk.zero_copy().unwrap_or(false) {
                        zc.store(false, Relaxed);
                    }
                    let _ = fd_tx.send(Ok(std::os::fd::AsRawFd::as_raw_fd(&xsk)));
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&xsk);
                    while !stop.load(Relaxed) {
                        let got = xsk.step(|_| Verdict::Drop).received;
                        if got == 0 {
                            let mut pfd = libc::pollfd {
                                fd,
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: one pollfd we own.
                            unsafe { libc::poll(&mut pfd, 1, 50) };
                        } else {
                            counters[queue as usize].fetch_add(got as u64, Relaxed);
                        }
                    }
                })?,
        );
        let fd = fd_rx
            .recv()
            .context("sink thread ended")?
            .map_err(|e| anyhow::anyhow!("AF_XDP socket on queue {queue}: {e}"))?;
        prog.set_socket(queue, &RawFdRef(fd))?;
    }
    let mode = format!("{:?}", prog.mode()).to_lowercase();
    let start = Instant::now();
    let totals = |elapsed: Duration| SinkTotals {
        per_queue: counters.iter().map(|c| c.load(Relaxed)).collect(),
        received: counters.iter().map(|c| c.load(Relaxed)).sum(),
        elapsed_ms: elapsed.as_millis() as u64,
        xdp_mode: mode.clone(),
        zero_copy: all_zero_copy.load(Relaxed),
    };
    eprintln!(
        "xdp-sink: dropping UDP to {}:{}-{} on {} ({} queues, {} XDP)",
        opts.address, opts.port_min, opts.port_max, opts.interface, opts.queues, mode
    );
    while !stop.load(Relaxed) && start.elapsed() < opts.duration {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(path) = &opts.stats_file {
            write_stats(path, &totals(start.elapsed()))?;
        }
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let t = totals(start.elapsed());
    if let Some(path) = &opts.stats_file {
        write_stats(path, &t)?;
    }
    Ok(t)
}

fn write_stats(path: &PathBuf, t: &SinkTotals) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
    serde_json::to_writer(&mut f, t)?;
    f.write_all(b"\n")?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}
