//! The daemon's I/O shell: the control thread (NG socket, timers, latch events) and the
//! packet workers of the chosen backend. All decisions are made by the sans-IO
//! [`NgController`] and [`crate::media::MediaCore`]; this file only moves bytes and messages.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::backend::udp::{spawn_worker, UdpPortPool, WorkerCmd, WorkerHandle, WorkerSpec};
use crate::config::Config;
use crate::control::ng::{CounterSource, NgController};
use crate::control::session::{FlowChange, Now, SessionTable, TableSettings};
use crate::media::CoreCounters;

/// How often timers (media timeout, cookie cache expiry) run.
const TICK: Duration = Duration::from_secs(1);
/// Longest the control thread waits for a request before checking timers and signals.
const CONTROL_POLL: Duration = Duration::from_millis(50);
/// Latch events buffered between workers and the control thread.
const EVENT_QUEUE: usize = 65_536;

struct Workers(Vec<WorkerHandle>);

impl CounterSource for Workers {
    fn counters(&self) -> CoreCounters {
        self.0
            .iter()
            .map(|w| w.counters.snapshot())
            .fold(CoreCounters::default(), |mut a, c| {
                a.received += c.received;
                a.forwarded += c.forwarded;
                a.unknown_port += c.unknown_port;
                a.malformed += c.malformed;
                a.source_mismatch += c.source_mismatch;
                a.no_destination += c.no_destination;
                a
            })
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

    let (event_tx, event_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = Workers(Vec::with_capacity(cfg.workers));
    for i in 0..cfg.workers {
        let core = cfg
            .cpus
            .get(i)
            .and_then(|c| cores.iter().find(|id| id.id == *c).copied());
        workers.0.push(
            spawn_worker(WorkerSpec {
                index: i,
                core,
                port_min: cfg.port_min,
                port_max: cfg.port_max,
                epoch,
                stop: Arc::clone(&stop),
                events: event_tx.clone(),
            })
            .context("starting a packet worker")?,
        );
    }

    let pool = UdpPortPool::new(cfg.bind_address, cfg.port_min, cfg.port_max);
    let table = SessionTable::new(
        TableSettings {
            advertised: cfg.advertised_address,
            media_timeout_ns: cfg.media_timeout.as_nanos() as u64,
            workers: cfg.workers,
        },
        pool,
    );
    let mut ctl = NgController::new(table, now(epoch));
    tracing::info!(
        ng = %cfg.listen_ng,
        interface = %cfg.interface_name,
        media = %cfg.bind_address,
        advertised = %cfg.advertised_address,
        ports = %format!("{}-{}", cfg.port_min, cfg.port_max),
        workers = cfg.workers,
        backend = ?cfg.backend,
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
                tracing::warn!(error = %e, "NG socket receive error");
                None
            }
        };
        // Latch events first, so a `query` shows what the workers have learned so far.
        while let Ok(ev) = event_rx.try_recv() {
            let crate::media::CoreEvent::Latched { port, addr } = ev;
            ctl.table_mut().handle_latched(port, addr);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            ctl.handle_timeout(now(epoch));
        }
        let reply = received.and_then(|(n, src)| {
            Some((
                ctl.handle_datagram(&buf[..n], src, now(epoch), &workers)?,
                src,
            ))
        });
        // Workers get the new endpoints before the SIP proxy gets the SDP that points at them.
        dispatch(&mut ctl, &workers);
        if let Some((reply, src)) = reply {
            if let Err(e) = ng.send_to(&reply, src) {
                tracing::warn!(%src, error = %e, len = reply.len(), "cannot send NG reply");
            }
        }
    }

    tracing::info!(calls = ctl.table().len(), "shutting down");
    for w in &mut workers.0 {
        w.join();
    }
    Ok(())
}

/// Moves endpoint changes from the call table to the workers, with the sockets of new ports.
fn dispatch(ctl: &mut NgController<UdpPortPool>, workers: &Workers) {
    while let Some(change) = ctl.poll_flow_change() {
        match change {
            FlowChange::Upsert { worker, config } => {
                let socket = ctl.table_mut().pool_mut().take_socket(config.port);
                if let Some(w) = workers.0.get(worker) {
                    w.send(WorkerCmd::Upsert(config, socket));
                }
            }
            FlowChange::Remove { worker, port } => {
                if let Some(w) = workers.0.get(worker) {
                    w.send(WorkerCmd::Remove(port));
                }
            }
        }
    }
}
