//! The daemon's I/O shell: the control thread (NG socket, timers, latch events) and the
//! packet workers of the chosen backend. All decisions are made by the sans-IO
//! [`NgController`] and [`crate::media::MediaCore`]; this file only moves bytes and messages.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::backend::udp::{spawn_worker, UdpPortPool, WorkerCmd, WorkerHandle, WorkerSpec};
use crate::config::{Config, BLOCK_CAPACITY};
use crate::control::ng::{CounterSource, NgController, RecordingCounters};
use crate::control::session::{FlowChange, Now, SessionTable, TableSettings};
use crate::media::record::BufferPool;
use crate::media::CoreCounters;
use crate::recording::store::Store;
use crate::recording::writer::{Writer, WriterCounters, WriterMsg};

/// How often timers (media timeout, cookie cache expiry) run.
const TICK: Duration = Duration::from_secs(1);
/// Longest the control thread waits for a request before checking timers and signals.
const CONTROL_POLL: Duration = Duration::from_millis(50);
/// Latch events buffered between workers and the control thread.
const EVENT_QUEUE: usize = 65_536;

struct Workers {
    handles: Vec<WorkerHandle>,
    writer: Arc<WriterCounters>,
    pool: Arc<BufferPool>,
}

impl CounterSource for Workers {
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

    let store = Store::new(cfg.recording_dir.clone(), cfg.spool_dir.clone())
        .context("preparing the recording and spool directories")?;
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
    let mut workers = Workers {
        handles: Vec::with_capacity(cfg.workers),
        writer: Arc::clone(&writer_counters),
        pool: Arc::clone(&pool),
    };
    for i in 0..cfg.workers {
        let core = cfg
            .cpus
            .get(i)
            .and_then(|c| cores.iter().find(|id| id.id == *c).copied());
        workers.handles.push(
            spawn_worker(WorkerSpec {
                index: i,
                core,
                port_min: cfg.port_min,
                port_max: cfg.port_max,
                epoch,
                stop: Arc::clone(&stop),
                events: event_tx.clone(),
                pool: Arc::clone(&pool),
                flush_ns: cfg.flush_interval.as_nanos() as u64,
                writer: writer_tx.clone(),
            })
            .context("starting a packet worker")?,
        );
    }

    let ports = UdpPortPool::new(cfg.bind_address, cfg.port_min, cfg.port_max);
    let table = SessionTable::new(
        TableSettings {
            advertised: cfg.advertised_address,
            media_timeout_ns: cfg.media_timeout.as_nanos() as u64,
            workers: cfg.workers,
        },
        ports,
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
        dispatch(&mut ctl, &workers, &writer_tx);
        if let Some((reply, src)) = reply {
            if let Err(e) = ng.send_to(&reply, src) {
                tracing::warn!(%src, error = %e, len = reply.len(), "cannot send NG reply");
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

/// Moves endpoint changes from the call table to the workers, with the sockets of new ports.
fn dispatch(
    ctl: &mut NgController<UdpPortPool>,
    workers: &Workers,
    writer: &crossbeam_channel::Sender<WriterMsg>,
) {
    while let Some(change) = ctl.poll_flow_change() {
        match change {
            FlowChange::RecordingStart {
                worker,
                recording,
                header,
                start_ns,
            } => {
                // The writer opens the file before the worker can produce a block for it.
                let _ = writer.send(WriterMsg::Open {
                    recording: Arc::clone(&recording),
                    header,
                });
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::StartRecording(recording, start_ns));
                }
            }
            FlowChange::RecordingPause {
                worker,
                key,
                paused,
            } => {
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::PauseRecording(key, paused));
                }
            }
            FlowChange::RecordingEvent { worker, key, event } => {
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::RecordingEvent(key, event));
                }
            }
            FlowChange::RecordingStop {
                worker,
                key,
                reason,
                net,
            } => {
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::StopRecording(key, reason, net));
                }
            }
            FlowChange::Upsert { worker, config } => {
                let socket = ctl.table_mut().pool_mut().take_socket(config.port);
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::Upsert(config, socket));
                }
            }
            FlowChange::Remove { worker, port } => {
                if let Some(w) = workers.handles.get(worker) {
                    w.send(WorkerCmd::Remove(port));
                }
            }
        }
    }
}
