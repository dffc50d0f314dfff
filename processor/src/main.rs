//! `processor`: consumes the processor queue, indexes recordings and serves the web API
//! and UI. See `docs/processor.md`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;

use processor::api::{router, AppState};
use processor::config::{Config, FileConfig, DEFAULT_TOKEN};
use processor::ingest::{Counters, Processor};
use processor::queue::{Queue, SpoolQueue};
use processor::repo::{Repository, SqliteRepository};
use processor::retention::run_retention;
use processor::storage::{LocalStorage, Storage};

/// linecord recording processor: consumes the processor queue, consolidates and analyses
/// recordings, stores and indexes them, serves the web API and UI.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (keys: spool-dir, storage-dir, db, listen, retention-days,
    /// retention-interval-secs, poll-interval-ms, [[token]]).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Spool directory of the processor queue [default: /var/spool/linecord].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Root of the recording storage [default: /var/lib/linecord/store].
    #[arg(long, value_name = "DIR")]
    storage_dir: Option<PathBuf>,
    /// SQLite index file [default: /var/lib/linecord/index.sqlite].
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// HTTP listen address, ip:port (port 0: any free port; the log says which)
    /// [default: 127.0.0.1:8090].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if let Some(v) = &args.spool_dir {
        file.spool_dir = Some(v.clone());
    }
    if let Some(v) = &args.storage_dir {
        file.storage_dir = Some(v.clone());
    }
    if let Some(v) = &args.db {
        file.db = Some(v.clone());
    }
    if let Some(v) = &args.listen {
        file.listen = Some(v.clone());
    }
    Ok(Config::resolve(file)?)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: stopping"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() {
                tracing::info!("SIGINT: stopping");
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = load_config(&args)?;
    if config.default_token {
        tracing::warn!(
            "no [[token]] configured: the admin token {DEFAULT_TOKEN:?} is accepted \
             (loopback only)"
        );
    }
    if let Some(dir) = config.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let repo: Arc<dyn Repository> = Arc::new(
        SqliteRepository::open(&config.db)
            .with_context(|| format!("opening the index {}", config.db.display()))?,
    );
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(&config.storage_dir)?);
    let queue = SpoolQueue::open(&config.spool_dir)
        .with_context(|| format!("opening the spool {}", config.spool_dir.display()))?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));

    let processor = Processor::new(
        queue.clone(),
        storage.clone(),
        repo.clone(),
        counters.clone(),
    );
    processor.recover()?;
    let worker = {
        let stop = stop.clone();
        let poll = config.poll_interval;
        std::thread::Builder::new()
            .name("consumer".into())
            .spawn(move || processor.run(&stop, poll))?
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stats_queue = queue.clone();
    let state = AppState {
        repo: repo.clone(),
        storage: storage.clone(),
        tokens: Arc::new(config.tokens.clone()),
        counters: counters.clone(),
        queue_stats: Arc::new(move || stats_queue.stats().ok()),
        now_ms,
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!("listening on {addr}");
        if let Some(days) = config.retention_days {
            let (repo, storage, counters) = (repo.clone(), storage.clone(), counters.clone());
            let every = config.retention_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let (repo, storage) = (repo.clone(), storage.clone());
                    let run = tokio::task::spawn_blocking(move || {
                        run_retention(&repo, &storage, days, now_ms())
                    })
                    .await;
                    match run {
                        Ok(Ok(n)) => {
                            counters.retention_deleted.fetch_add(n, Ordering::Relaxed);
                            if n > 0 {
                                tracing::info!(removed = n, days, "retention run");
                            }
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                        Err(e) => tracing::error!(error = %e, "retention task failed"),
                    }
                }
            });
        }
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    });
    stop.store(true, Ordering::Relaxed);
    // The consumer finishes the job in hand (a job takes well under this).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !worker.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if worker.is_finished() {
        let _ = worker.join();
    } else {
        tracing::warn!("the consumer did not stop in time; its job will be retried");
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    served?;
    tracing::info!("stopped");
    Ok(())
}
