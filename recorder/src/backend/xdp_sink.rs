//! `recorder xdp-sink`: the AF_XDP receive-and-drop ceiling of an interface.
//!
//! The same XDP program and AF_XDP sockets as the `xdp` backend, with workers that give
//! every frame straight back: what this measures is the most packets per second the
//! interface can hand to user space on this machine, the physical limit the relay's
//! forwarding is compared with (docs/benchmarks.md). The workers are the shared worker core
//! ([`super::worker`]) around a [`SinkIo`], with no endpoints: the core counts the frames.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::worker::{self, Io, IoStep, WorkerHandle, WorkerSpec};
use super::xdp_prog::{RawFdRef, XdpProgram};
use super::xsk::{Verdict, XskQueue, DEFAULT_FRAMES};
use crate::media::record::BufferPool;
use crate::media::MediaCore;

/// The sink's I/O: every received frame is given straight back.
pub struct SinkIo {
    xsk: XskQueue,
}

impl Io for SinkIo {
    fn attach(&mut self, _port: u16, _socket: Option<std::net::UdpSocket>, _r: &Registry) {}

    fn detach(&mut self, _port: u16, _registry: &Registry) {}

    fn step(&mut self, _core: &mut MediaCore, _now: &mut dyn FnMut() -> u64) -> IoStep {
        let received = self.xsk.step(|_| Verdict::Drop).received as u64;
        IoStep {
            received,
            // Spin while frames come: the ceiling is measured without sleeping in epoll.
            busy: received > 0,
            ..IoStep::default()
        }
    }
}

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
    let all_zero_copy = Arc::new(AtomicBool::new(true));
    let epoch = Instant::now();
    // No endpoints, so no recordings and no latch events: channels nobody reads.
    let (events, _) = crossbeam_channel::unbounded();
    let (writer, _) = crossbeam_channel::unbounded();
    let pool = Arc::new(BufferPool::new(0, 1));
    let mut workers: Vec<WorkerHandle> = Vec::new();
    for queue in 0..opts.queues {
        let spec = WorkerSpec {
            index: queue as usize,
            core: None,
            port_min: opts.port_min,
            port_max: opts.port_max,
            epoch,
            stop: Arc::clone(&stop),
            events: events.clone(),
            pool: Arc::clone(&pool),
            flush_ns: u64::MAX,
            writer: writer.clone(),
        };
        let zc = Arc::clone(&all_zero_copy);
        let (handle, fd) = worker::spawn(spec, format!("sink-q{queue}"), move |registry| {
            // The socket is not Send: it is opened and used on the worker thread only.
            let xsk = XskQueue::open(ifindex, queue, DEFAULT_FRAMES).map_err(|e| e.to_string())?;
            if !xsk.zero_copy().unwrap_or(false) {
                zc.store(false, Relaxed);
            }
            let fd = std::os::fd::AsRawFd::as_raw_fd(&xsk);
            registry
                .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
                .map_err(|e| format!("cannot watch the AF_XDP socket: {e}"))?;
            Ok((SinkIo { xsk }, fd))
        })
        .map_err(|e| anyhow::anyhow!("AF_XDP socket on queue {queue}: {e}"))?;
        prog.set_socket(queue, &RawFdRef(fd))?;
        workers.push(handle);
    }
    let mode = format!("{:?}", prog.mode()).to_lowercase();
    let start = Instant::now();
    let counters: Vec<_> = workers.iter().map(|w| Arc::clone(&w.counters)).collect();
    let totals = |elapsed: Duration| SinkTotals {
        per_queue: counters
            .iter()
            .map(|c| c.io_received.load(Relaxed))
            .collect(),
        received: counters.iter().map(|c| c.io_received.load(Relaxed)).sum(),
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
    for w in &mut workers {
        w.join();
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
