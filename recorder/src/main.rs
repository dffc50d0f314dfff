//! `recorder`: the linecord media server. See the library crate for the architecture.

use clap::Parser;
use recorder::config::RawOptions;

/// linecord media server: relays RTP between call parties, driven by rtpengine's NG
/// control protocol.
#[derive(Debug, Parser)]
#[command(name = "recorder", version, about)]
struct Cli {
    #[command(flatten)]
    options: RawOptions,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cfg = match cli.options.merge_file().and_then(RawOptions::resolve) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("recorder: {e:#}");
            return std::process::ExitCode::from(2);
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
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("recorder: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
