//! The daemon's I/O shell: the control thread (NG socket, timers, latch events) and the
//! packet workers of the chosen backend. All decisions are made by the sans-IO
//! [`NgController`] and [`crate::media::MediaCore`]; this file only moves bytes and messages.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use std::sync::Mutex;

use crate::backend::neigh;
use crate::backend::udp::{spawn_worker, PortWatcher, UdpPortPool};
use crate::backend::worker::{WorkerCmd, WorkerHandle, WorkerSpec};
use crate::backend::xdp::{self, XdpQueueSpec};
use crate::backend::xdp_prog::{RawFdRef, XdpProgram};
use crate::config::{Backend, Config, BLOCK_CAPACITY};
use crate::control::cache::CacheLimits;
use crate::control::ng::{
    CounterSource, NgController, NgSettings, RecordingCounters, XdpStats, COOKIE_TTL_NS,
    MAX_CACHED_REPLIES, REFUSAL_LOGS_PER_SEC,
};
use crate::control::session::{FlowChange, Now, SessionTable, TableSettings};
use crate::media::record::BufferPool;
use crate::media::CoreCounters;
use crate::recording::store::Store;
use crate::recording::writer::{Writer, WriterCounters, WriterMsg};
use linecord_ratelimit::RateLimiter;

/// How often timers (media timeout, cookie cache expiry) run.
const TICK: Duration = Duration::from_secs(1);
/// Longest the control thread waits for a request before checking timers and signals.
const CONTROL_POLL: Duration = Duration::from_millis(50);
/// Latch events buffered between workers and the control thread.
const EVENT_QUEUE: usize = 65_536;

struct Workers {
    handles: Vec<WorkerHandle>,
    /// Every endpoint goes to every worker (`xdp`: RSS spreads a call's flows over queues);
    /// otherwise a call belongs to one worker (`udp`).
    broadcast: bool,
    writer: Arc<WriterCounters>,
    pool: Arc<BufferPool>,
    program: Option<Arc<Mutex<XdpProgram>>>,
}

impl CounterSource for Workers {
    fn per_worker(&self) -> Vec<CoreCounters> {
        self.handles.iter().map(|w| w.counters.snapshot()).collect()
    }

    fn xdp(&self) -> Option<XdpStats> {
        let prog = self.program.as_ref()?;
        let c = match prog.lock() {
            Ok(p) => p.counters(),
            Err(poisoned) => poisoned.into_inner().counters(),
        };
        Some(XdpStats {
            redirected: c.redirected,
            passed: c.passed,
            parse_errors: c.parse_errors,
            kernel_path: self
                .handles
                .iter()
                .map(|w| w.counters.kernel_path.load(Ordering::Relaxed))
                .sum(),
        })
    }

    fn recording(&self) -> RecordingCounters {
        let w = &self.writer;
        RecordingCounters {
            finished: w.finished.load(Ordering::Relaxed),
            failed: w.failed.load(Ordering::Relaxed),
            blocks: w.blocks.load(Ordering::Relaxed),
            bytes: w.bytes.load(Ordering::Relaxed),
            buffer_exhausted: self.pool.exhausted.load(Ordering::Relaxed),
        }
    }

    fn counters(&self) -> CoreCounters {
        self.handles.iter().map(|w| w.counters.snapshot()).fold(
            CoreCounters::default(),
            |mut a, c| {
                a.received += c.received;
                a.forwarded += c.forwarded;
                a.unknown_port += c.unknown_port;
                a.malformed += c.malformed;
                a.source_mismatch += c.source_mismatch;
                a.no_destination += c.no_destination;
                a
            },
        )
    }
}

fn now(epoch: Instant) -> Now {
    Now {
        mono_ns: epoch.elapsed().as_nanos() as u64,
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

/// Runs the recorder until SIGINT or SIGTERM.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handler")?;
    }
    let ng = UdpSocket::bind(cfg.listen_ng)
        .with_context(|| format!("cannot bind the NG control socket on {}", cfg.listen_ng))?;
    ng.set_read_timeout(Some(CONTROL_POLL))?;

    let mut store = Store::new(cfg.recording_dir.clone(), cfg.spool_dir.clone())
        .context("preparing the recording and spool directories")?
        .with_min_free_disk(cfg.min_free_disk);
    let recovered = store.recover();
    if !recovered.is_empty() {
        tracing::info!(
            count = recovered.len(),
            "recovered recordings of a previous run"
        );
    }
    let pool = Arc::new(BufferPool::new(cfg.recording_memory, BLOCK_CAPACITY));
    let (writer_tx, writer_rx) = crossbeam_channel::unbounded::<WriterMsg>();
    let writer_counters = Arc::new(WriterCounters::default());
    let writer = Writer::new(
        store,
        Arc::clone(&pool),
        cfg.fsync,
        Arc::clone(&writer_counters),
    )
    .context("setting up io_uring for the recording writer")?;
    let writer_thread = std::thread::Builder::new()
        .name("rec-writer".into())
        .spawn(move || writer.run(writer_rx))
        .context("starting the writer thread")?;

    let (event_tx, event_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let xdp_plan = match cfg.backend {
        Backend::Udp => None,
        Backend::Xdp => Some(plan_xdp(&cfg).context("--backend xdp")?),
        Backend::Auto => match plan_xdp(&cfg) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(reason = %format!("{e:#}"), "xdp backend unavailable; using udp");
                None
            }
        },
    };
    let mut workers = Workers {
        handles: Vec::new(),
        broadcast: xdp_plan.is_some(),
        writer: Arc::clone(&writer_counters),
        pool: Arc::clone(&pool),
        program: None,
    };
    let spec = |i: usize| WorkerSpec {
        index: i,
        core: cfg
            .cpus
            .get(i % cfg.cpus.len().max(1))
            .and_then(|c| cores.iter().find(|id| id.id == *c).copied()),
        port_min: cfg.port_min,
        port_max: cfg.port_max,
        epoch,
        stop: Arc::clone(&stop),
        events: event_tx.clone(),
        pool: Arc::clone(&pool),
        flush_ns: cfg.flush_interval.as_nanos() as u64,
        writer: writer_tx.clone(),
    };
    let mut program = None;
    match xdp_plan {
        None => {
            for i in 0..cfg.workers {
                workers
                    .handles
                    .push(spawn_worker(spec(i)).context("starting a packet worker")?);
            }
        }
        Some(plan) => {
            let mut prog = plan.program;
            for (i, queue) in plan.queues.iter().enumerate() {
                let (handle, fd) = xdp::spawn_worker(
                    spec(i),
                    XdpQueueSpec {
                        ifindex: plan.ifindex,
                        queue: *queue,
                        local_ip: cfg.bind_address,
                        local_mac: plan.mac,
                    },
                )
                .with_context(|| format!("starting the AF_XDP worker of queue {queue}"))?;
                prog.set_socket(*queue, &RawFdRef(fd))
                    .context("registering an AF_XDP socket")?;
                workers.handles.push(handle);
            }
            tracing::info!(
                interface = %plan.interface,
                queues = ?plan.queues,
                mode = ?prog.mode(),
                "xdp backend running"
            );
            let prog = Arc::new(Mutex::new(prog));
            workers.program = Some(Arc::clone(&prog));
            program = Some((prog, plan.ifindex));
        }
    }

    let mut ports = UdpPortPool::new(cfg.bind_address, cfg.port_min, cfg.port_max);
    if let Some((prog, _)) = &program {
        ports = ports.with_watcher(Box::new(MediaPortMap(Arc::clone(prog))));
    }
    let mut neighbours = neigh::Neighbours::default();
    let mut last_neigh = Instant::now() - NEIGH_REFRESH;
    let table = SessionTable::new(
        TableSettings {
            advertised: cfg.advertised_address,
            media_timeout_ns: cfg.media_timeout.as_nanos() as u64,
            workers: cfg.workers,
            max_media_per_call: cfg.max_media_per_call,
            max_sdp_size: cfg.max_sdp_size,
        },
        ports,
    );
    let ng_settings = NgSettings {
        cache: CacheLimits {
            max_bytes: cfg.ng_reply_cache_bytes,
            max_entries: MAX_CACHED_REPLIES,
            ttl_ns: COOKIE_TTL_NS,
        },
        refusal_logs_per_sec: REFUSAL_LOGS_PER_SEC,
    };
    let mut ctl = NgController::new(table, ng_settings, now(epoch));
    // Socket errors a peer can provoke (e.g. replies to unroutable spoofed sources) are
    // logged at most REFUSAL_LOGS_PER_SEC times a second.
    let mut socket_log: RateLimiter<u64> =
        RateLimiter::new(REFUSAL_LOGS_PER_SEC, std::time::Duration::from_secs(1));
    tracing::info!(
        ng = %cfg.listen_ng,
        interface = %cfg.interface_name,
        media = %cfg.bind_address,
        advertised = %cfg.advertised_address,
        ports = %format!("{}-{}", cfg.port_min, cfg.port_max),
        workers = cfg.workers,
        backend = ?cfg.backend,
        max_media_per_call = cfg.max_media_per_call,
        max_sdp_size = cfg.max_sdp_size,
        ng_reply_cache_mib = cfg.ng_reply_cache_bytes >> 20,
        "recorder running"
    );

    let mut buf = vec![0u8; 65_536];
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let received = match ng.recv_from(&mut buf) {
            Ok((n, src)) => Some((n, src)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                if let Some(k) = socket_log.check(now(epoch).mono_ns) {
                    tracing::warn!(error = %e, suppressed = k, "NG socket receive error");
                }
                None
            }
        };
        // Latch events first, so a `query` shows what the workers have learned so far.
        while let Ok(ev) = event_rx.try_recv() {
            let crate::media::CoreEvent::Latched { port, addr } = ev;
            ctl.table_mut().handle_latched(port, addr);
            if workers.broadcast {
                for w in &workers.handles {
                    w.send(WorkerCmd::Latched(port, addr));
                }
            }
        }
        if let Some((_, ifindex)) = &program {
            if last_neigh.elapsed() >= NEIGH_REFRESH {
                last_neigh = Instant::now();
                let now = match neigh::read(*ifindex) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read routes and neighbours; keeping the last ones");
                        (*neighbours).clone()
                    }
                };
                if *neighbours != now {
                    neighbours = Arc::new(now);
                    for w in &workers.handles {
                        w.send(WorkerCmd::Neighbours(Arc::clone(&neighbours)));
                    }
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let t = now(epoch);
            ctl.handle_timeout(t);
            if let Some(k) = socket_log.flush(t.mono_ns) {
                tracing::warn!(suppressed = k, "suppressed {k} NG socket error log lines");
            }
        }
        let reply = received.and_then(|(n, src)| {
            Some((
                ctl.handle_datagram(&buf[..n], src, now(epoch), &workers)?,
                src,
            ))
        });
        // Workers get the new endpoints before the SIP proxy gets the SDP that points at them.
        dispatch(&mut ctl, &workers, &writer_tx);
        if let Some((reply, src)) = reply {
            if let Err(e) = ng.send_to(&reply, src) {
                if let Some(k) = socket_log.check(now(epoch).mono_ns) {
                    tracing::warn!(
                        %src,
                        error = %e,
                        len = reply.len(),
                        suppressed = k,
                        "cannot send NG reply"
                    );
                }
            }
        }
    }

    let recordings = ctl.table_mut().stop_all_recordings();
    tracing::info!(calls = ctl.table().len(), recordings, "shutting down");
    dispatch(&mut ctl, &workers, &writer_tx);
    for w in &mut workers.handles {
        w.join();
    }
    drop(workers);
    drop(writer_tx);
    let _ = writer_thread.join();
    tracing::info!(
        finished = writer_counters.finished.load(Ordering::Relaxed),
        failed = writer_counters.failed.load(Ordering::Relaxed),
        "recorder stopped"
    );
    Ok(())
}

/// How often the `xdp` backend re-reads the neighbour table.
const NEIGH_REFRESH: Duration = Duration::from_millis(200);

/// Keeps the XDP program's `media_ports` map in step with the port pool.
struct MediaPortMap(Arc<Mutex<XdpProgram>>);

impl PortWatcher for MediaPortMap {
    fn set_active(&mut self, port: u16, active: bool) {
        let mut prog = match self.0.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = prog.set_media_port(port, active) {
            tracing::error!(port, error = %e, "cannot update the XDP media port map");
        }
    }
}

/// What the `xdp` backend needs, found and attached before the workers start.
struct XdpPlan {
    program: XdpProgram,
    interface: String,
    ifindex: u32,
    queues: Vec<u32>,
    mac: [u8; 6],
}

/// The interface holding `ip`.
fn interface_of(ip: std::net::IpAddr) -> Option<String> {
    if_addrs::get_if_addrs()
        .ok()?
        .into_iter()
        .find(|i| i.ip() == ip)
        .map(|i| i.name)
}

/// Finds the interface and queues and attaches the XDP program.
fn plan_xdp(cfg: &Config) -> anyhow::Result<XdpPlan> {
    let interface = match &cfg.interface_device {
        Some(i) => i.clone(),
        None => interface_of(cfg.bind_address).with_context(|| {
            format!(
                "no interface holds {}; give --interface-name",
                cfg.bind_address
            )
        })?,
    };
    let cname = std::ffi::CString::new(interface.clone()).context("interface name")?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface named {interface}");
    let queues = match &cfg.queues {
        Some(q) => q.clone(),
        None => {
            let n = std::fs::read_dir(format!("/sys/class/net/{interface}/queues"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                        .count()
                })
                .unwrap_or(1)
                .max(1);
            (0..n as u32).collect()
        }
    };
    let mac = neigh::interface_mac(&interface)
        .with_context(|| format!("cannot read the MAC address of {interface}"))?;
    let program = XdpProgram::attach(&interface, Some(cfg.bind_address))?;
    Ok(XdpPlan {
        program,
        interface,
        ifindex,
        queues,
        mac,
    })
}

/// Moves endpoint changes from the call table to the workers, with the sockets of new ports.
fn dispatch(
    ctl: &mut NgController<UdpPortPool>,
    workers: &Workers,
    writer: &crossbeam_channel::Sender<WriterMsg>,
) {
    // The workers a call's changes go to.
    let targets = |worker: usize| -> &[WorkerHandle] {
        if workers.broadcast {
            &workers.handles
        } else {
            workers.handles.get(worker..=worker).unwrap_or_default()
        }
    };
    while let Some(change) = ctl.poll_flow_change() {
        match change {
            FlowChange::RecordingStart {
                worker,
                recording,
                header,
                start_ns,
            } => {
                let to = targets(worker);
                // The writer opens the file before a worker can produce a block for it.
                let _ = writer.send(WriterMsg::Open {
                    recording: Arc::clone(&recording),
                    header,
                    producers: to.len(),
                });
                for w in to {
                    w.send(WorkerCmd::StartRecording(Arc::clone(&recording), start_ns));
                }
            }
            FlowChange::RecordingPause {
                worker,
                key,
                paused,
            } => {
                for w in targets(worker) {
                    w.send(WorkerCmd::PauseRecording(key, paused));
                }
            }
            FlowChange::RecordingEvent { worker, key, event } => {
                for w in targets(worker) {
                    w.send(WorkerCmd::RecordingEvent(key, event.clone()));
                }
            }
            FlowChange::RecordingStop {
                worker,
                key,
                reason,
                net,
            } => {
                for w in targets(worker) {
                    w.send(WorkerCmd::StopRecording(key, reason, net.clone()));
                }
            }
            FlowChange::Upsert { worker, config } => {
                let socket = ctl.table_mut().pool_mut().take_socket(config.port);
                for w in targets(worker) {
                    // Each worker gets its own handle on the port's socket (xdp: the kernel
                    // path for unresolved next hops).
                    let s = socket.as_ref().and_then(|s| s.try_clone().ok());
                    w.send(WorkerCmd::Upsert(config.clone(), s));
                }
            }
            FlowChange::Remove { worker, port } => {
                for w in targets(worker) {
                    w.send(WorkerCmd::Remove(port));
                }
            }
        }
    }
}
