//! `recorder`: the linecord media server. See the library crate for the architecture.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use recorder::config::RawOptions;
use recorder::tools::{self, ExportTo};

/// linecord media server: relays and records RTP between call parties, driven by
/// rtpengine's NG control protocol. Without a subcommand it runs the daemon.
#[derive(Debug, Parser)]
#[command(name = "recorder", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
    #[command(flatten)]
    options: RawOptions,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Show a recording's header, streams, events, statistics and integrity.
    Inspect {
        /// The `.lcr` file.
        file: PathBuf,
    },
    /// Export a recording as a stereo WAV (one channel per party) or a pcap.
    Export {
        /// The `.lcr` file.
        file: PathBuf,
        /// Write a 16-bit stereo WAV (PCMU/PCMA decoded).
        #[arg(
            long,
            value_name = "OUT",
            conflicts_with = "pcap",
            required_unless_present = "pcap"
        )]
        wav: Option<PathBuf>,
        /// Write a classic pcap of the RTP/RTCP streams.
        #[arg(long, value_name = "OUT")]
        pcap: Option<PathBuf>,
    },
    /// Measure the AF_XDP receive-and-drop ceiling of an interface (for the bench): steer
    /// UDP to ADDRESS on the port range to AF_XDP sockets that drop every frame.
    XdpSink {
        /// Interface to attach to.
        #[arg(long)]
        interface_name: String,
        /// Only UDP to this address is steered.
        #[arg(long)]
        address: std::net::IpAddr,
        /// First steered port.
        #[arg(long, default_value_t = 30000)]
        port_min: u16,
        /// Last steered port.
        #[arg(long, default_value_t = 39999)]
        port_max: u16,
        /// RX queues to serve.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// Stop after this many seconds (or on SIGINT/SIGTERM).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Write running totals here (JSON, every 100 ms).
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Tool::Inspect { file }) => {
            return match tools::inspect(&file, &mut std::io::stdout().lock()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("recorder inspect: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Tool::Export { file, wav, pcap }) => {
            let to = match (wav, pcap) {
                (Some(w), _) => ExportTo::Wav(w),
                (None, Some(p)) => ExportTo::Pcap(p),
                (None, None) => unreachable!("clap requires one of --wav/--pcap"),
            };
            return match tools::export(&file, &to) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("recorder export: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Tool::XdpSink {
            interface_name,
            address,
            port_min,
            port_max,
            queues,
            seconds,
            stats_file,
        }) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let opts = recorder::backend::xdp_sink::SinkOptions {
                interface: interface_name,
                address,
                port_min,
                port_max,
                queues,
                duration: std::time::Duration::from_secs(seconds),
                stats_file,
            };
            return match recorder::backend::xdp_sink::run(&opts) {
                Ok(t) => {
                    println!("{}", serde_json::to_string(&t).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("recorder xdp-sink: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        None => {}
    }
    let cfg = match cli.options.merge_file().and_then(RawOptions::resolve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("recorder: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match recorder::daemon::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("recorder: {e:#}");
            ExitCode::FAILURE
        }
    }
}
