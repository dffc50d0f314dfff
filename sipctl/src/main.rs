//! `sipctl`: linecord's SIP server. Without a subcommand it runs the daemon; `calls` and
//! `record` talk to a running daemon's agent-desktop API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sipctl::config::Config;

/// linecord SIP server: a B2BUA that decides what to record (routing rules, DN
/// configuration, agent requests) and moves the media through the recorder over NG.
#[derive(Debug, Parser)]
#[command(name = "sipctl", version, about)]
struct Cli {
    /// Configuration file (TOML; docs/sipctl.md). Without it the embedded defaults apply.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log filter (error, warn, info, debug, or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Spool directory for call events (overrides `[events] spool-dir`).
    #[arg(long, global = true)]
    spool_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Tool>,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// List the active calls of a running sipctl (GET /v1/calls).
    Calls,
    /// Start, stop, pause or resume the recording of a call (POST /v1/calls/ID/recording).
    Record {
        /// The call's id (from `sipctl calls`).
        id: String,
        /// start, stop, pause or resume.
        action: String,
    },
    /// Print the configuration sipctl would run with, resolved, and exit.
    CheckConfig,
    /// Write the demo's audio for sipp: caller.pcap and callee.pcap (two voices taking turns, PCMU).
    DemoAudio {
        /// Folder to write them to.
        dir: PathBuf,
        /// Seconds of audio.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
}

fn load(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Config::from_toml(&text).with_context(|| format!("in {}", p.display()))
        }
        None => Config::embedded().context("the embedded configuration"),
    }
}

/// One HTTP request to the API; prints the JSON answer.
fn api_call(
    cfg: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<bool> {
    let url = format!("http://{}{path}", cfg.api.listen);
    let mut req = ureq::request(method, &url).timeout(std::time::Duration::from_secs(45));
    if let Some(t) = &cfg.api.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let (ok, text) = match result {
        Ok(r) => (true, r.into_string()?),
        Err(ureq::Error::Status(_, r)) => (false, r.into_string()?),
        Err(e) => anyhow::bail!("cannot reach sipctl's API at {url}: {e}"),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{text}"),
    }
    Ok(ok)
}

fn demo_audio(dir: &std::path::Path, seconds: f64) -> anyhow::Result<bool> {
    use sipctl::audio::{conversation, write_pcap};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The caller and the callee take turns of 3 s, as people do.
    for (name, f0, first) in [("caller.pcap", 115.0, true), ("callee.pcap", 205.0, false)] {
        let path = dir.join(name);
        write_pcap(&path, &conversation(f0, seconds, 3.0, first))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli.config) {
        Ok(mut c) => {
            if let Some(dir) = &cli.spool_dir {
                c.events.spool_dir = Some(dir.clone());
            }
            c
        }
        Err(e) => {
            eprintln!("sipctl: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Tool::Calls) => api_call(&cfg, "GET", "/v1/calls", None),
        Some(Tool::Record { id, action }) => api_call(
            &cfg,
            "POST",
            &format!("/v1/calls/{id}/recording"),
            Some(serde_json::json!({ "action": action })),
        ),
        Some(Tool::DemoAudio { dir, seconds }) => demo_audio(&dir, seconds),
        Some(Tool::CheckConfig) => {
            println!("{cfg:#?}");
            Ok(true)
        }
        None => {
            let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sipctl: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(sipctl::daemon::run(cfg)).map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sipctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
