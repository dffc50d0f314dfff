//! `bench`: measures NG media relays (docs/benchmarks.md). `scripts/bench.sh` runs the
//! standard comparison in interleaved rounds; each subcommand measures one target and
//! writes its JSON, `bench report` combines the rounds.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bench::calls::{self, CallPlan, CallSet, NgLink};
use bench::measure::{self, RateSearch};
use bench::procfs;
use bench::recorded::{self, Recorded};
use bench::report::{
    Finish, Round, RoundsReport, StandardLoad, TargetKind, TargetReport, Trial, PPS_PER_CALL,
};
use bench::rounds::{self, Eta, Measured, Timing};
use bench::traffic::{self, PartyThread, StreamOut, TrialTotals};
use clap::{Args, Parser, Subcommand};

/// Load generator and measurement harness for NG media relays.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Calls through a relay over NG: the realistic load (latency, CPU, memory, recording
    /// check), then the zero-loss throughput search.
    Relay {
        #[command(flatten)]
        common: Common,
        /// The relay's NG address.
        #[arg(long)]
        ng: SocketAddr,
        /// Network namespace the NG address is reached from (the relay's).
        #[arg(long)]
        ng_netns: Option<String>,
        /// The relay's media address (used when a reply SDP has no `c=` line).
        #[arg(long)]
        relay_ip: IpAddr,
        /// PID of the relay process (CPU and memory are read from /proc).
        #[arg(long)]
        relay_pid: Option<u32>,
        /// Ask the relay to record every call (`record call: yes`).
        #[arg(long)]
        record: bool,
        /// Where to count what was recorded: `spool:DIR` (linecord's spool jobs) or
        /// `pcap:DIR` (rtpengine's pcap recordings).
        #[arg(long)]
        recorded: Option<String>,
    },
    /// The generator straight into its own receivers (A and B send to each other, no
    /// relay): the generator's own ceiling and the latency of the path without a relay.
    Direct {
        #[command(flatten)]
        common: Common,
    },
    /// Packets as fast as the generator can to an AF_XDP sink (`recorder xdp-sink`): the
    /// interface's receive-and-drop ceiling.
    Sink {
        #[command(flatten)]
        common: Common,
        /// The sink's address.
        #[arg(long)]
        sink_ip: IpAddr,
        /// First port the sink steers.
        #[arg(long, default_value_t = 30000)]
        port_min: u16,
        /// The sink's stats file (`recorder xdp-sink --stats-file`).
        #[arg(long)]
        sink_stats: PathBuf,
    },
    /// Combines the rounds of a results folder (`DIR/round-N/*.json`, or the JSON files of
    /// `DIR` itself as one round) into `run.json`, `summary.md` and `plot.svg`.
    Report {
        /// The results folder.
        dir: PathBuf,
        /// Criterion's output folder, for the per-packet budget (`target/criterion`);
        /// without it, or without estimates there, the budget is "not measured".
        #[arg(long)]
        criterion: Option<PathBuf>,
        /// The command that made the run, for the report.
        #[arg(long, default_value = "")]
        command: String,
        /// Machine description for the report.
        #[arg(long, default_value = "")]
        machine: String,
        /// When the run was made (RFC 3339), for the report.
        #[arg(long, default_value = "")]
        date: String,
        /// Network description for the report.
        #[arg(
            long,
            default_value = "veth pairs through a Linux bridge, network namespaces"
        )]
        network: String,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Name of the target in the report.
    #[arg(long)]
    name: String,
    /// Free text describing the target (version, flags).
    #[arg(long, default_value = "")]
    description: String,
    /// Where to write this target's JSON.
    #[arg(long)]
    out: PathBuf,
    /// Concurrent calls (two RTP streams each).
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Sender threads (each with its own socket) per party.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Party A's network namespace and address.
    #[arg(long)]
    a_netns: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    a_ip: IpAddr,
    /// Party B's network namespace and address.
    #[arg(long)]
    b_netns: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    b_ip: IpAddr,
    /// Seconds of the realistic load (50 packets/s per stream).
    #[arg(long, default_value_t = 5.0)]
    standard_seconds: f64,
    /// Seconds per search trial.
    #[arg(long, default_value_t = 2.0)]
    trial_seconds: f64,
    /// Milliseconds of receiving after each trial's sending stops.
    #[arg(long, default_value_t = 300)]
    drain_ms: u64,
    /// Milliseconds of silence before each search trial, so a relay still working off the
    /// backlog of an overloaded trial does not fail the next one (RFC 2544 §23).
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Upper bound of the search, packets/s (e.g. the generator's ceiling).
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// Trials of the search, at most.
    #[arg(long, default_value_t = 8)]
    max_trials: u32,
    /// The search stops when its bracket is narrower than this fraction.
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Pin the generator threads to these cores (comma-separated, used in turn), e.g. the
    /// cores the relay is kept off with `taskset`.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Skip the zero-loss search (realistic load only).
    #[arg(long)]
    no_search: bool,
    /// The round this measurement is part of, `R/N`, for the progress lines.
    #[arg(long)]
    round: Option<String>,
    /// The targets the run measures after this one, in order (all later rounds included),
    /// for the time-left estimate.
    #[arg(long, value_delimiter = ',')]
    then: Vec<String>,
    /// The run's results folder: targets measured earlier (`round-N/*.json`) give the
    /// time-left estimate its measured step times.
    #[arg(long)]
    history: Option<PathBuf>,
}

impl Common {
    fn timing(&self) -> Timing {
        Timing {
            calls: self.calls,
            standard_s: self.standard_seconds,
            trial_s: self.trial_seconds,
            drain_s: self.drain_ms as f64 / 1e3,
            settle_s: self.settle_ms as f64 / 1e3,
            max_trials: self.max_trials,
            search: !self.no_search,
        }
    }
}

/// Progress lines with the time left: `round 2/3, target linecord-udp, step search 3/8,
/// ~6 min left`.
struct Progress {
    label: String,
    kind: TargetKind,
    steps: Vec<(&'static str, f64)>,
    eta: Eta,
    then: Vec<(String, f64)>,
    started: Instant,
}

impl Progress {
    fn new(c: &Common, kind: TargetKind) -> Progress {
        let timing = c.timing();
        let nominal = |name: &str| -> f64 {
            rounds::steps(rounds::kind_of(name), &timing)
                .iter()
                .map(|s| s.1)
                .sum()
        };
        let label = match &c.round {
            Some(r) => format!("round {r}, target {}", c.name),
            None => format!("target {}", c.name),
        };
        Progress {
            label,
            kind,
            steps: rounds::steps(kind, &timing),
            eta: Eta::new(c.history.as_deref().map(history).unwrap_or_default()),
            then: c.then.iter().map(|n| (n.clone(), nominal(n))).collect(),
            started: Instant::now(),
        }
    }

    /// Prints the line for step `i` of [`rounds::steps`].
    fn at(&self, i: usize, detail: &str) {
        let own: f64 = self.steps.iter().skip(i).map(|s| s.1).sum();
        eprintln!(
            "{}, step {detail}, {}",
            self.label,
            rounds::show_left(self.eta.left_s(self.kind, own, &self.then))
        );
    }

    fn nominal_s(&self) -> f64 {
        self.steps.iter().map(|s| s.1).sum()
    }
}

/// Targets measured earlier in this run, oldest round first.
fn history(dir: &Path) -> Vec<Measured> {
    let mut out: Vec<(u32, Measured)> = Vec::new();
    for (round, path) in round_dirs(dir).unwrap_or_default() {
        for file in target_files(&path).unwrap_or_default() {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            let Ok(t) = serde_json::from_slice::<TargetReport>(&bytes) else {
                continue;
            };
            if let (Some(e), Some(n)) = (t.elapsed_s, t.nominal_s) {
                out.push((
                    round,
                    Measured {
                        name: t.name,
                        kind: t.kind,
                        elapsed_s: e,
                        nominal_s: n,
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(r, _)| *r);
    out.into_iter().map(|(_, m)| m).collect()
}

/// The `round-N` folders of a results folder, by round number.
fn round_dirs(dir: &Path) -> std::io::Result<Vec<(u32, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("round-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if e.file_type()?.is_dir() {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// The target JSON files of a folder (everything `*.json` but `run.json`), sorted.
fn target_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("run.json"))
        .collect();
    names.sort();
    Ok(names)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Relay {
            common,
            ng,
            ng_netns,
            relay_ip,
            relay_pid,
            record,
            recorded,
        } => {
            let relay = RelayTarget {
                ng,
                ng_netns,
                relay_ip,
                pid: relay_pid,
                record,
                recorded,
            };
            measure_target(&common, Some(&relay)).and_then(|r| write_json(&common.out, &r))
        }
        Command::Direct { common } => {
            measure_target(&common, None).and_then(|r| write_json(&common.out, &r))
        }
        Command::Sink {
            common,
            sink_ip,
            port_min,
            sink_stats,
        } => measure_sink(&common, sink_ip, port_min, &sink_stats)
            .and_then(|r| write_json(&common.out, &r)),
        Command::Report {
            dir,
            criterion,
            command,
            machine,
            date,
            network,
        } => report(&dir, criterion.as_deref(), command, date, machine, network),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A trial whose achieved send rate is below this fraction of the offered rate was limited
/// by the generator, not by the target.
const GENERATOR_SHORTFALL: f64 = 0.97;

struct RelayTarget {
    ng: SocketAddr,
    ng_netns: Option<String>,
    relay_ip: IpAddr,
    pid: Option<u32>,
    record: bool,
    recorded: Option<String>,
}

/// Sockets of both parties and the threads that drive them.
struct Parties {
    threads: Vec<(PartyThread, usize)>,
}

fn open_parties(
    c: &Common,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, Vec<std::net::UdpSocket>)> {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..c.threads.max(1) {
        a.push(traffic::open_socket(c.a_netns.as_deref(), c.a_ip).context("party A socket")?);
        b.push(traffic::open_socket(c.b_netns.as_deref(), c.b_ip).context("party B socket")?);
    }
    Ok((a, b))
}

/// Starts the party threads: call `i` is on thread `i % threads` of each party; A sends
/// to `a_dest[i]`, B to `b_dest[i]`.
fn start_parties(
    cpus: &[usize],
    a_socks: Vec<std::net::UdpSocket>,
    b_socks: Vec<std::net::UdpSocket>,
    a_dest: &[SocketAddr],
    b_dest: &[SocketAddr],
) -> anyhow::Result<Parties> {
    let n = a_socks.len();
    let mut threads = Vec::new();
    for (dir, socks, dests) in [(0u32, a_socks, a_dest), (1, b_socks, b_dest)] {
        for (t, sock) in socks.into_iter().enumerate() {
            let streams: Vec<StreamOut> = dests
                .iter()
                .enumerate()
                .filter(|(i, _)| i % n == t)
                .map(|(i, d)| StreamOut {
                    index: i as u32 * 2 + dir,
                    dest: *d,
                })
                .collect();
            let count = streams.len();
            let name = format!("party-{}{t}", if dir == 0 { 'a' } else { 'b' });
            let cpu = (!cpus.is_empty()).then(|| cpus[threads.len() % cpus.len()]);
            threads.push((PartyThread::spawn(&name, sock, streams, cpu)?, count));
        }
    }
    Ok(Parties { threads })
}

/// CPU counters around a trial.
struct CpuMark {
    relay: Option<u64>,
    machine: Option<u64>,
}

fn cpu_mark(pid: Option<u32>) -> CpuMark {
    CpuMark {
        relay: pid.and_then(|p| procfs::process_cpu_ns(p).ok()),
        machine: procfs::machine_busy_ns().ok(),
    }
}

struct TrialRunner<'a> {
    name: &'a str,
    parties: &'a Parties,
    pid: Option<u32>,
    trial: u32,
    drain: Duration,
}

impl TrialRunner<'_> {
    fn run(
        &mut self,
        phase: &str,
        rate: f64,
        seconds: f64,
    ) -> anyhow::Result<(Trial, TrialTotals)> {
        self.trial += 1;
        let before = cpu_mark(self.pid);
        let t = traffic::run_trial(
            &self.parties.threads,
            self.trial,
            rate,
            Duration::from_secs_f64(seconds),
            self.drain,
        )?;
        let after = cpu_mark(self.pid);
        let per_packet = |a: Option<u64>, b: Option<u64>| {
            a.zip(b)
                .and_then(|(b, a)| measure::ns_per_packet(a.saturating_sub(b), t.received))
        };
        let loss = measure::loss_ratio(t.sent, t.received);
        let trial = Trial {
            offered_pps: if rate.is_finite() { rate } else { 0.0 },
            sent_pps: t.sent_pps,
            received_pps: t.sent_pps * (1.0 - loss),
            sent: t.sent,
            received: t.received,
            send_failed: t.send_failed,
            loss,
            latency: measure::summarize(&t.latency),
            relay_cpu_ns_per_packet: per_packet(before.relay, after.relay),
            machine_cpu_ns_per_packet: per_packet(before.machine, after.machine),
        };
        eprintln!(
            "[{}] {phase}: offered {} → sent {:.1} kpps, arrived {:.1} kpps, loss {:.4}%{}, \
             p50/p99 {:.0}/{:.0} µs{}",
            self.name,
            if rate.is_finite() {
                format!("{:.1} kpps", rate / 1e3)
            } else {
                "max".into()
            },
            trial.sent_pps / 1e3,
            trial.received_pps / 1e3,
            loss * 100.0,
            if t.send_failed > 0 {
                format!(" ({} not sent: generator limit)", t.send_failed)
            } else {
                String::new()
            },
            trial.latency.p50_us,
            trial.latency.p99_us,
            trial
                .relay_cpu_ns_per_packet
                .map(|c| format!(", relay {c:.0} ns/pkt"))
                .unwrap_or_default(),
        );
        Ok((trial, t))
    }
}

fn call_plan(
    prefix: &str,
    c: &Common,
    record: bool,
    a: &[std::net::UdpSocket],
    b: &[std::net::UdpSocket],
) -> anyhow::Result<CallPlan> {
    Ok(CallPlan {
        prefix: prefix.to_owned(),
        calls: c.calls,
        record,
        a: a.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?,
        b: b.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?,
    })
}

/// Sets calls up through the relay (or, without one, points the parties at each other).
fn connect(
    c: &Common,
    relay: Option<(&RelayTarget, &mut NgLink)>,
    prefix: &str,
) -> anyhow::Result<(Parties, Option<CallSet>)> {
    let (a_socks, b_socks) = open_parties(c)?;
    match relay {
        Some((r, ng)) => {
            let plan = call_plan(prefix, c, r.record, &a_socks, &b_socks)?;
            let set = calls::setup(ng, &plan, r.relay_ip).context("setting calls up")?;
            let parties = start_parties(&c.cpus, a_socks, b_socks, &set.a_dest, &set.b_dest)?;
            Ok((parties, Some(set)))
        }
        None => {
            let a: Vec<SocketAddr> = a_socks
                .iter()
                .map(|s| s.local_addr())
                .collect::<Result<_, _>>()?;
            let b: Vec<SocketAddr> = b_socks
                .iter()
                .map(|s| s.local_addr())
                .collect::<Result<_, _>>()?;
            let a_dest: Vec<SocketAddr> = (0..c.calls).map(|i| b[i % b.len()]).collect();
            let b_dest: Vec<SocketAddr> = (0..c.calls).map(|i| a[i % a.len()]).collect();
            Ok((
                start_parties(&c.cpus, a_socks, b_socks, &a_dest, &b_dest)?,
                None,
            ))
        }
    }
}

fn measure_target(c: &Common, relay: Option<&RelayTarget>) -> anyhow::Result<TargetReport> {
    anyhow::ensure!(c.calls > 0, "--calls must be at least 1");
    let standard_rate = c.calls as f64 * PPS_PER_CALL;
    let pid = relay.and_then(|r| r.pid);
    let mut ng = match relay {
        Some(r) => Some(NgLink::open(r.ng_netns.as_deref(), r.ng).context("NG socket")?),
        None => None,
    };
    let run_id = format!("bench{}", std::process::id());
    let drain = Duration::from_millis(c.drain_ms);
    let kind = if relay.is_some() {
        TargetKind::Relay
    } else {
        TargetKind::Direct
    };
    let progress = Progress::new(c, kind);
    let mut report = TargetReport {
        name: c.name.clone(),
        kind,
        description: c.description.clone(),
        calls: c.calls,
        record: relay.is_some_and(|r| r.record),
        threads_per_party: c.threads.max(1),
        standard: None,
        trials: Vec::new(),
        zero_loss_pps: None,
        max_received_pps: 0.0,
        generator_bound: false,
        elapsed_s: None,
        nominal_s: Some(progress.nominal_s()),
    };

    // Phase 1: the realistic load on fresh calls.
    let rss_idle = pid.and_then(|p| procfs::rss_kib(p).ok());
    progress.at(0, "set-up");
    eprintln!("[{}] setting up {} calls", c.name, c.calls);
    let prefix = format!("{run_id}-std");
    let (parties, set) = connect(c, relay.zip(ng.as_mut()), &prefix)?;
    let mut runner = TrialRunner {
        name: &c.name,
        parties: &parties,
        pid,
        trial: 0,
        drain,
    };
    // A first second lets every stream latch and every recording open.
    progress.at(1, "warm-up");
    let (_, warm) = runner.run("warm-up", standard_rate, 1.0)?;
    progress.at(2, "realistic load");
    let (std_trial, std_totals) =
        runner.run("realistic load", standard_rate, c.standard_seconds)?;
    let rss_loaded = pid.and_then(|p| procfs::rss_kib(p).ok());
    drop(parties);
    let mut recorded: Option<Recorded> = None;
    let mut finish: Option<Finish> = None;
    if let (Some(set), Some(r), Some(ng)) = (&set, relay, ng.as_mut()) {
        progress.at(3, "teardown");
        // Every call ends at once: the finish rate is timed from the first delete.
        let deleted_at = SystemTime::now();
        calls::teardown(ng, set).context("deleting calls")?;
        (recorded, finish) = count_recorded(r, set, &prefix, deleted_at)?;
        if let Some(f) = finish {
            eprintln!(
                "[{}] {} recordings finished in {:.2} s: {:.0}/s",
                c.name,
                f.recordings,
                f.seconds,
                f.per_second().unwrap_or(0.0)
            );
        }
    }
    report.standard = Some(StandardLoad {
        trial: std_trial,
        rss_idle_kib: rss_idle,
        rss_loaded_kib: rss_loaded,
        kib_per_call: rss_idle
            .zip(rss_loaded)
            .and_then(|(a, b)| measure::kib_per_call(a, b, c.calls as u64)),
        recorded,
        sent_total: warm.sent + std_totals.sent,
        received_total: warm.received + std_totals.received,
        finish,
    });

    // Phase 2: the zero-loss search on fresh calls.
    if !c.no_search {
        let prefix = format!("{run_id}-search");
        progress.at(4, "search set-up");
        eprintln!(
            "[{}] zero-loss search up to {:.0} kpps",
            c.name,
            c.max_rate / 1e3
        );
        let (parties, set) = connect(c, relay.zip(ng.as_mut()), &prefix)?;
        let mut runner = TrialRunner {
            name: &c.name,
            parties: &parties,
            pid,
            trial: 100,
            drain,
        };
        runner.run("warm-up", standard_rate, 0.5)?;
        let mut search = RateSearch::new(
            standard_rate,
            c.max_rate.max(standard_rate),
            c.resolution,
            c.max_trials,
        );
        let mut n = 0;
        while let Some(rate) = search.next_rate() {
            progress.at(5 + n, &format!("search {}/{}", n + 1, c.max_trials));
            n += 1;
            std::thread::sleep(Duration::from_millis(c.settle_ms));
            let (trial, _) = runner.run("search", rate, c.trial_seconds)?;
            // A trial counts at the rate it achieved: when the generator could not offer
            // `rate`, passing it says nothing about `rate` itself.
            let achieved = trial.sent_pps.min(rate);
            if achieved < rate * GENERATOR_SHORTFALL && trial.loss <= measure::ZERO_LOSS_RATIO {
                // Passed at less than offered: the figure is the generator's, a lower bound.
                report.generator_bound = true;
            }
            search.record(achieved, trial.loss);
            report.max_received_pps = report.max_received_pps.max(trial.received_pps);
            report.trials.push(trial);
        }
        // The generator flat out: what arrives when offered more than anything can take.
        progress.at(5 + c.max_trials as usize, "flat out");
        std::thread::sleep(Duration::from_millis(c.settle_ms));
        let (trial, _) = runner.run("flat out", f64::INFINITY, c.trial_seconds)?;
        report.max_received_pps = report.max_received_pps.max(trial.received_pps);
        report.trials.push(trial);
        report.zero_loss_pps = search.result();
        drop(parties);
        if let (Some(set), Some(r), Some(ng)) = (&set, relay, ng.as_mut()) {
            calls::teardown(ng, set).context("deleting calls")?;
            // Wait for these recordings to be finished too (not reported): the relay's
            // finishing work must not spill into the next target's measurement.
            count_recorded(r, set, &prefix, SystemTime::now())?;
        }
        eprintln!(
            "[{}] zero-loss throughput: {}",
            c.name,
            report
                .zero_loss_pps
                .map(|p| format!("{:.1} kpps (≈ {:.0} calls)", p / 1e3, p / PPS_PER_CALL))
                .unwrap_or_else(|| "below the realistic load".into())
        );
    }
    report.elapsed_s = Some(progress.started.elapsed().as_secs_f64());
    Ok(report)
}

/// Counts what the relay recorded of `set`; with linecord's spool also how fast the
/// recordings were finished after the calls were deleted at `deleted_at` (rtpengine's pcap
/// files are written as packets come, so they have no finishing to time).
fn count_recorded(
    r: &RelayTarget,
    set: &CallSet,
    prefix: &str,
    deleted_at: SystemTime,
) -> anyhow::Result<(Option<Recorded>, Option<Finish>)> {
    if !r.record {
        return Ok((None, None));
    }
    // Finishing is fsync-bound: 500 recordings took 12 s on this machine under load.
    let wait = Duration::from_secs(60);
    let Some(spec) = &r.recorded else {
        return Ok((None, None));
    };
    match spec.split_once(':') {
        Some(("spool", dir)) => {
            let ids: HashSet<String> = set.call_ids.iter().cloned().collect();
            let (counted, last) = recorded::from_spool_timed(Path::new(dir), &ids, wait)?;
            // Timed only when every call's job arrived: a partial count over the wait
            // would be a made-up rate.
            let finish = last
                .filter(|_| counted.recordings >= ids.len() as u64)
                .and_then(|last| last.duration_since(deleted_at).ok())
                .map(|d| Finish {
                    recordings: counted.recordings,
                    seconds: d.as_secs_f64(),
                });
            Ok((Some(counted), finish))
        }
        Some(("pcap", dir)) => Ok((
            Some(recorded::from_pcaps(
                Path::new(dir),
                prefix,
                set.call_ids.len() as u64,
                wait,
            )?),
            None,
        )),
        _ => anyhow::bail!("--recorded must be spool:DIR or pcap:DIR, not {spec:?}"),
    }
}

fn read_sink(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    v.get("received")
        .and_then(|r| r.as_u64())
        .with_context(|| format!("no `received` in {}", path.display()))
}

fn measure_sink(
    c: &Common,
    sink_ip: IpAddr,
    port_min: u16,
    stats: &Path,
) -> anyhow::Result<TargetReport> {
    let (a_socks, b_socks) = open_parties(c)?;
    let dests: Vec<SocketAddr> = (0..c.calls)
        .map(|i| SocketAddr::new(sink_ip, port_min.saturating_add((i * 2) as u16)))
        .collect();
    let parties = start_parties(&c.cpus, a_socks, b_socks, &dests, &dests)?;
    let progress = Progress::new(c, TargetKind::Sink);
    let mut report = TargetReport {
        name: c.name.clone(),
        kind: TargetKind::Sink,
        description: c.description.clone(),
        calls: c.calls,
        record: false,
        threads_per_party: c.threads.max(1),
        standard: None,
        trials: Vec::new(),
        zero_loss_pps: None,
        max_received_pps: 0.0,
        generator_bound: false,
        elapsed_s: None,
        nominal_s: Some(progress.nominal_s()),
    };
    for n in 1..=2u32 {
        progress.at(n as usize - 1, &format!("flat out {n}/2"));
        let before = read_sink(stats)?;
        let t = traffic::run_trial(
            &parties.threads,
            n,
            f64::INFINITY,
            Duration::from_secs_f64(c.trial_seconds),
            Duration::from_millis(c.drain_ms),
        )?;
        // The sink's file is refreshed every 100 ms: wait for the last packets to show.
        std::thread::sleep(Duration::from_millis(250));
        let dropped = read_sink(stats)?.saturating_sub(before);
        let received_pps = dropped as f64 / c.trial_seconds;
        eprintln!(
            "[{}] flat out: sent {:.1} kpps, the AF_XDP sink received {:.1} kpps",
            c.name,
            t.sent_pps / 1e3,
            received_pps / 1e3
        );
        report.max_received_pps = report.max_received_pps.max(received_pps);
        report.trials.push(Trial {
            offered_pps: 0.0,
            sent_pps: t.sent_pps,
            received_pps,
            sent: t.sent,
            received: dropped,
            send_failed: t.send_failed,
            loss: measure::loss_ratio(t.sent, dropped),
            latency: measure::LatencySummary::default(),
            relay_cpu_ns_per_packet: None,
            machine_cpu_ns_per_packet: None,
        });
    }
    report.elapsed_s = Some(progress.started.elapsed().as_secs_f64());
    Ok(report)
}

fn write_json(path: &Path, r: &TargetReport) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("{}", path.display()))?;
    eprintln!("[{}] wrote {}", r.name, path.display());
    Ok(())
}

fn read_round(dir: &Path) -> anyhow::Result<Vec<TargetReport>> {
    let mut targets = Vec::new();
    for p in target_files(dir).with_context(|| format!("{}", dir.display()))? {
        let text = std::fs::read(&p)?;
        match serde_json::from_slice::<TargetReport>(&text) {
            Ok(t) => targets.push(t),
            Err(e) => eprintln!("bench report: skipping {}: {e}", p.display()),
        }
    }
    // The standard order: ceilings first, then the relays.
    let rank = |n: &str| {
        [
            "generator",
            "af_xdp-drop",
            "linecord-xdp",
            "linecord-udp",
            "rtpengine",
        ]
        .iter()
        .position(|x| *x == n)
        .unwrap_or(9)
    };
    targets.sort_by_key(|t| rank(&t.name));
    Ok(targets)
}

fn report(
    dir: &Path,
    criterion: Option<&Path>,
    command: String,
    date: String,
    machine: String,
    network: String,
) -> anyhow::Result<()> {
    let dirs = round_dirs(dir).with_context(|| format!("{}", dir.display()))?;
    let mut rounds = Vec::new();
    if dirs.is_empty() {
        // A folder of one measurement per target: one round.
        rounds.push(Round {
            round: 1,
            targets: read_round(dir)?,
        });
    } else {
        for (n, d) in dirs {
            rounds.push(Round {
                round: n,
                targets: read_round(&d)?,
            });
        }
    }
    rounds.retain(|r| !r.targets.is_empty());
    anyhow::ensure!(!rounds.is_empty(), "no target results in {}", dir.display());
    let budget = match criterion {
        Some(c) => bench::budget::read(c).context("reading the per-packet budget")?,
        None => Vec::new(),
    };
    let run = RoundsReport::new(date, machine, network, command, rounds, budget);
    std::fs::write(dir.join("run.json"), serde_json::to_vec_pretty(&run)?)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let md = run.markdown(now);
    std::fs::write(dir.join("summary.md"), &md)?;
    std::fs::write(dir.join("plot.svg"), run.svg())?;
    println!("{md}");
    println!(
        "written: {0}/run.json {0}/summary.md {0}/plot.svg",
        dir.display()
    );
    Ok(())
}
