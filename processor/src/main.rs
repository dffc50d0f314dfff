//! `processor`: consumes the processor queue, indexes recordings and serves the web API
//! and UI. See `docs/processor.md`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;

use clap::Subcommand;
use processor::api::{router, AppState};
use processor::config::{
    Config, FileConfig, IndexBackend, QueueBackend, StorageBackend, DEFAULT_TOKEN,
};
use processor::ingest::{Counters, Processor};
use processor::queue::{Queue, SpoolQueue};
use processor::queue_nats::{forward, NatsOptions, NatsPublisher, NatsQueue};
use processor::repo::{Repository, SqliteRepository};
use processor::repo_pg::PostgresRepository;
use processor::retention::run_retention;
use processor::storage::{LocalStorage, Storage};
use processor::storage_object::ObjectStorage;

/// linecord recording processor: consumes the processor queue, consolidates and analyses
/// recordings, stores and indexes them, serves the web API and UI.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options of the processor itself.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file (keys: spool-dir, storage-dir, storage, db, listen, nats-url,
    /// retention-days, … see docs/processor.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Spool directory of the processor queue [default: /var/spool/linecord].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Root of the recording storage [default: /var/lib/linecord/store].
    #[arg(long, value_name = "DIR")]
    storage_dir: Option<PathBuf>,
    /// Object storage instead of --storage-dir: s3://bucket/prefix or file:///dir.
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// SQLite index file, or a PostgreSQL URL postgres://user@host/dbname
    /// [default: /var/lib/linecord/index.sqlite].
    #[arg(long, value_name = "FILE|URL")]
    db: Option<PathBuf>,
    /// Consume jobs from NATS JetStream at this URL instead of the spool directory.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// HTTP listen address, ip:port (port 0: any free port; the log says which)
    /// [default: 127.0.0.1:8090].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Moves jobs from a local spool directory (written by recorder and sipctl) into NATS
    /// JetStream: publish, wait for the stream's ack, then complete the spool job.
    Forward(ForwardArgs),
}

/// Options of `processor forward`.
#[derive(Debug, clap::Args)]
struct ForwardArgs {
    /// TOML configuration file (spool-dir, nats-url, nats-stream, poll-interval-ms).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The spool directory to drain [default: /var/spool/linecord].
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// NATS server URL, e.g. nats://127.0.0.1:4222 (or nats-url in the file).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Stop when the spool is empty instead of waiting for more jobs.
    #[arg(long)]
    once: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn load_config(args: &RunArgs) -> anyhow::Result<Config> {
    let mut file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if let Some(v) = &args.spool_dir {
        file.spool_dir = Some(v.clone());
    }
    if let Some(v) = &args.storage_dir {
        file.storage_dir = Some(v.clone());
        file.storage = None;
    }
    if let Some(v) = &args.storage {
        file.storage = Some(v.clone());
        file.storage_dir = None;
    }
    if let Some(v) = &args.db {
        file.db = Some(v.clone());
    }
    if let Some(v) = &args.nats {
        file.nats_url = Some(v.clone());
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
    if let Some(Command::Forward(f)) = &args.command {
        return run_forward(f);
    }
    let config = load_config(&args.run)?;
    if config.default_token {
        tracing::warn!(
            "no [[token]] configured: the admin token {DEFAULT_TOKEN:?} is accepted \
             (loopback only)"
        );
    }
    let repo: Arc<dyn Repository> = match &config.index {
        IndexBackend::Sqlite(db) => {
            if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Arc::new(
                SqliteRepository::open(db)
                    .with_context(|| format!("opening the index {}", db.display()))?,
            )
        }
        IndexBackend::Postgres(url) => {
            let repo = PostgresRepository::open(url)
                .context("opening the PostgreSQL index (db = postgres://…)")?;
            tracing::info!(?repo, "index: postgresql");
            Arc::new(repo)
        }
    };
    let storage: Arc<dyn Storage> = match &config.store {
        StorageBackend::Local(dir) => Arc::new(LocalStorage::open(dir)?),
        StorageBackend::Object { url, s3 } => {
            let s = ObjectStorage::open(url, s3)
                .with_context(|| format!("opening the object storage {url}"))?;
            tracing::info!(url = %url, "storage: object store");
            Arc::new(s)
        }
    };
    match &config.queue {
        QueueBackend::Spool(dir) => {
            let queue = SpoolQueue::open(dir)
                .with_context(|| format!("opening the spool {}", dir.display()))?;
            serve(&config, queue, repo, storage)
        }
        QueueBackend::Nats(opts) => {
            let queue = NatsQueue::connect(opts)
                .with_context(|| format!("connecting to NATS JetStream at {}", opts.url))?;
            tracing::info!(stream = %opts.stream, consumer = %opts.consumer, "queue: nats jetstream");
            serve(&config, queue, repo, storage)
        }
    }
}

/// `processor forward`: spool → JetStream until SIGTERM/SIGINT (or, with `--once`, until
/// the spool is empty).
fn run_forward(args: &ForwardArgs) -> anyhow::Result<()> {
    let mut file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if let Some(v) = &args.spool_dir {
        file.spool_dir = Some(v.clone());
    }
    if let Some(v) = &args.nats {
        file.nats_url = Some(v.clone());
    }
    let config = Config::resolve(file)?;
    let opts: NatsOptions = config
        .nats
        .clone()
        .context("processor forward needs --nats URL (or nats-url in the config file)")?;
    let spool = linecord_jobs::Spool::open(&config.spool_dir)
        .with_context(|| format!("opening the spool {}", config.spool_dir.display()))?;
    let publisher = NatsPublisher::connect(&opts)
        .with_context(|| format!("connecting to NATS JetStream at {}", opts.url))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .with_context(|| format!("watching signal {sig}"))?;
    }
    tracing::info!(
        spool = %config.spool_dir.display(),
        nats = %opts.url,
        stream = %opts.stream,
        "forwarding the spool to JetStream"
    );
    let done = forward(&spool, &publisher, &stop, config.poll_interval, args.once)?;
    tracing::info!(
        published = done.published,
        duplicates = done.duplicates,
        "forwarder stopped"
    );
    Ok(())
}

/// Runs the consumer on `queue` and the HTTP API until SIGTERM/SIGINT.
fn serve<Q>(
    config: &Config,
    queue: Q,
    repo: Arc<dyn Repository>,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<()>
where
    Q: Queue + Clone + 'static,
{
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
        max_audio_samples: config.max_audio_samples,
        wav_slots: Arc::new(tokio::sync::Semaphore::new(processor::api::WAV_GENERATORS)),
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
