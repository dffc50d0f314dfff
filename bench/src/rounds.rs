//! Interleaved rounds: a run measures every target once per round (A B C, A B C, …), so a
//! noisy minute of a shared machine lands on one round of every target instead of on one
//! target, and a ratio taken *within* a round compares targets measured minutes apart, not
//! a quarter of an hour apart.
//!
//! Pure parts only: the figures read from a target's results ([`Figure`]), their median and
//! range over rounds ([`Spread`]), the ratios within each round ([`summarize`]), and the
//! estimate of the time a run has left ([`Eta`]). The binary and `scripts/bench.sh` do the
//! I/O.

use serde::{Deserialize, Serialize};

use crate::measure::ZERO_LOSS_RATIO;
use crate::report::{Round, TargetKind, TargetReport, PPS_PER_CALL};

/// Median and range (min–max) of one figure over the rounds that gave it. With three rounds
/// an interquartile range says nothing the range does not, so the range it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Rounds that gave the figure.
    pub n: usize,
    /// Median (the mean of the middle two when `n` is even).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// The spread of the finite values among `values`, or `None` when there are none.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        n,
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// One figure of a target, read from its results of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Figure {
    /// Zero-loss throughput, packets/s (a ceiling target: the most that arrived).
    ZeroLossPps,
    /// Relay CPU per packet at the realistic load (every stream at 50 packets/s), ns.
    RelayCpuNsPerPacket,
    /// Calls one core carries at that cost: 1 s / (CPU per packet × 100 packets/s per call).
    CallsPerCore,
    /// Whole-machine CPU per packet at the realistic load, ns.
    MachineCpuNsPerPacket,
    /// Median one-way latency at the realistic load, µs.
    P50Us,
    /// 99th percentile one-way latency at the realistic load, µs.
    P99Us,
    /// p99 over the generator's own path (`generator` of the same round), µs.
    AddedP99Us,
    /// Loss at the realistic load, percent.
    LossPct,
    /// Relay memory per call, KiB.
    KibPerCall,
    /// Finished recordings per second when every call of the realistic load ends at once.
    FinishedPerSecond,
}

impl Figure {
    /// Every figure, in the order of the summary.
    pub const ALL: [Figure; 10] = [
        Figure::ZeroLossPps,
        Figure::RelayCpuNsPerPacket,
        Figure::CallsPerCore,
        Figure::MachineCpuNsPerPacket,
        Figure::P50Us,
        Figure::P99Us,
        Figure::AddedP99Us,
        Figure::LossPct,
        Figure::KibPerCall,
        Figure::FinishedPerSecond,
    ];

    /// Short label with its unit.
    pub fn label(self) -> &'static str {
        match self {
            Figure::ZeroLossPps => "zero-loss throughput (kpps)",
            Figure::RelayCpuNsPerPacket => "relay CPU ns/pkt at 50 pps/stream",
            Figure::CallsPerCore => "≈ calls/core at that cost",
            Figure::MachineCpuNsPerPacket => "machine CPU ns/pkt",
            Figure::P50Us => "latency p50 (µs)",
            Figure::P99Us => "latency p99 (µs)",
            Figure::AddedP99Us => "p99 added over the generator (µs)",
            Figure::LossPct => "loss at 50 pps/stream (%)",
            Figure::KibPerCall => "KiB/call",
            Figure::FinishedPerSecond => "finished recordings/s",
        }
    }

    /// The value shown for `v` (kpps for rates, whole ns/µs, one decimal for KiB).
    pub fn show(self, v: f64) -> String {
        match self {
            Figure::ZeroLossPps => format!("{:.1}", v / 1e3),
            Figure::LossPct => format!("{v:.4}"),
            Figure::KibPerCall => format!("{v:.1}"),
            _ => format!("{v:.0}"),
        }
    }

    /// The figure of target `t` in `round` (the round gives the generator's path for
    /// [`Figure::AddedP99Us`]), or `None` when it was not measured.
    pub fn of(self, t: &TargetReport, round: &Round) -> Option<f64> {
        let st = t.standard.as_ref();
        let with_latency = st.filter(|s| s.trial.latency.samples > 0);
        match self {
            Figure::ZeroLossPps => match t.kind {
                TargetKind::Relay => t.zero_loss_pps,
                TargetKind::Direct | TargetKind::Sink => {
                    (t.max_received_pps > 0.0).then_some(t.max_received_pps)
                }
            },
            Figure::RelayCpuNsPerPacket => st.and_then(|s| s.trial.relay_cpu_ns_per_packet),
            Figure::CallsPerCore => st
                .and_then(|s| s.trial.relay_cpu_ns_per_packet)
                .filter(|c| *c > 0.0)
                .map(|c| 1e9 / (c * PPS_PER_CALL)),
            Figure::MachineCpuNsPerPacket => st.and_then(|s| s.trial.machine_cpu_ns_per_packet),
            Figure::P50Us => with_latency.map(|s| s.trial.latency.p50_us),
            Figure::P99Us => with_latency.map(|s| s.trial.latency.p99_us),
            Figure::AddedP99Us => {
                if t.kind != TargetKind::Relay {
                    return None;
                }
                let own = with_latency?.trial.latency.p99_us;
                let base = round
                    .targets
                    .iter()
                    .find(|g| g.kind == TargetKind::Direct)?
                    .standard
                    .as_ref()
                    .filter(|s| s.trial.latency.samples > 0)?
                    .trial
                    .latency
                    .p99_us;
                Some((own - base).max(0.0))
            }
            Figure::LossPct => st
                .filter(|s| s.trial.sent > 0)
                .map(|s| s.trial.loss * 100.0),
            Figure::KibPerCall => st.and_then(|s| s.kib_per_call),
            Figure::FinishedPerSecond => st.and_then(|s| s.finish).and_then(|f| f.per_second()),
        }
    }
}

/// A goal of the bench issue, checked against a median.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
}

impl Goal {
    /// Whether `v` meets the goal.
    pub fn met(self, v: f64) -> bool {
        match self {
            Goal::AtLeast(g) => v >= g,
            Goal::AtMost(g) => v <= g,
        }
    }

    /// `≥ 2` / `≤ 0.5`.
    pub fn show(self) -> String {
        match self {
            Goal::AtLeast(g) => format!("≥ {g}"),
            Goal::AtMost(g) => format!("≤ {g}"),
        }
    }
}

/// One figure of one target over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureRow {
    /// Target name.
    pub target: String,
    /// Which figure.
    pub figure: Figure,
    /// The value in each round (`None`: not measured in that round).
    pub per_round: Vec<Option<f64>>,
    /// Median and range of the measured values.
    pub spread: Option<Spread>,
}

/// A ratio of one figure between two targets, taken within each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioRow {
    /// What it compares.
    pub label: String,
    /// The figure compared.
    pub figure: Figure,
    /// Target over…
    pub numerator: String,
    /// …target.
    pub denominator: String,
    /// `numerator / denominator` in each round where both were measured.
    pub per_round: Vec<Option<f64>>,
    /// Median and range of the per-round ratios.
    pub spread: Option<Spread>,
    /// The goal for the median, if it sets one.
    pub goal: Option<Goal>,
}

impl RatioRow {
    /// Rounds whose ratio met the goal, of those that gave one.
    pub fn rounds_met(&self) -> Option<(usize, usize)> {
        let goal = self.goal?;
        let given: Vec<f64> = self.per_round.iter().flatten().copied().collect();
        Some((given.iter().filter(|v| goal.met(**v)).count(), given.len()))
    }
}

/// Everything the summary shows about the rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Targets in the order of the first round they appear in.
    pub targets: Vec<String>,
    /// Every figure of every target that measured it at least once.
    pub figures: Vec<FigureRow>,
    /// The ratios of the bench issue.
    pub ratios: Vec<RatioRow>,
}

impl Summary {
    /// The row of `figure` for `target`.
    pub fn figure(&self, target: &str, figure: Figure) -> Option<&FigureRow> {
        self.figures
            .iter()
            .find(|r| r.target == target && r.figure == figure)
    }
}

/// The ratios the summary reports: label, figure, numerator, denominator, goal (the
/// design's performance targets for this machine's veth topology).
pub const RATIOS: [(&str, Figure, &str, &str, Option<Goal>); 4] = [
    (
        "linecord-xdp / rtpengine zero-loss throughput",
        Figure::ZeroLossPps,
        "linecord-xdp",
        "rtpengine",
        Some(Goal::AtLeast(2.0)),
    ),
    (
        "linecord-xdp / linecord-udp relay CPU per packet at 50 pps/stream",
        Figure::RelayCpuNsPerPacket,
        "linecord-xdp",
        "linecord-udp",
        Some(Goal::AtMost(0.5)),
    ),
    (
        "linecord-xdp / linecord-udp zero-loss throughput",
        Figure::ZeroLossPps,
        "linecord-xdp",
        "linecord-udp",
        None,
    ),
    (
        "linecord-xdp / AF_XDP drop ceiling",
        Figure::ZeroLossPps,
        "linecord-xdp",
        "af_xdp-drop",
        None,
    ),
];

/// Figures per target and the ratios of [`RATIOS`] within each round.
pub fn summarize(rounds: &[Round]) -> Summary {
    let mut targets: Vec<String> = Vec::new();
    for r in rounds {
        for t in &r.targets {
            if !targets.contains(&t.name) {
                targets.push(t.name.clone());
            }
        }
    }
    let value = |r: &Round, name: &str, f: Figure| {
        r.targets
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| f.of(t, r))
    };
    let mut figures = Vec::new();
    for name in &targets {
        for f in Figure::ALL {
            let per_round: Vec<Option<f64>> = rounds.iter().map(|r| value(r, name, f)).collect();
            if per_round.iter().all(Option::is_none) {
                continue;
            }
            figures.push(FigureRow {
                target: name.clone(),
                figure: f,
                spread: spread(per_round.iter().flatten().copied()),
                per_round,
            });
        }
    }
    let ratios = RATIOS
        .iter()
        .map(|(label, f, num, den, goal)| {
            let per_round: Vec<Option<f64>> = rounds
                .iter()
                .map(|r| {
                    let n = value(r, num, *f)?;
                    let d = value(r, den, *f)?;
                    (d > 0.0).then(|| n / d)
                })
                .collect();
            RatioRow {
                label: (*label).to_owned(),
                figure: *f,
                numerator: (*num).to_owned(),
                denominator: (*den).to_owned(),
                spread: spread(per_round.iter().flatten().copied()),
                per_round,
                goal: *goal,
            }
        })
        .collect();
    Summary {
        targets,
        figures,
        ratios,
    }
}

/// Whether every round of `target` that measured the realistic load lost at most
/// [`ZERO_LOSS_RATIO`] there: `(rounds at zero loss, rounds measured)`.
pub fn zero_loss_rounds(rounds: &[Round], target: &str) -> (usize, usize) {
    let losses: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.targets.iter().find(|t| t.name == target))
        .filter_map(|t| t.standard.as_ref())
        .filter(|s| s.trial.sent > 0)
        .map(|s| s.trial.loss)
        .collect();
    (
        losses.iter().filter(|l| **l <= ZERO_LOSS_RATIO).count(),
        losses.len(),
    )
}

/// The timing options a target runs with, for its nominal duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Concurrent calls.
    pub calls: usize,
    /// Seconds of the realistic load.
    pub standard_s: f64,
    /// Seconds per search trial.
    pub trial_s: f64,
    /// Seconds of receiving after each trial.
    pub drain_s: f64,
    /// Seconds of silence before each search trial.
    pub settle_s: f64,
    /// Search trials, at most.
    pub max_trials: u32,
    /// Whether the zero-loss search runs.
    pub search: bool,
}

/// Nominal NG set-up (or teardown and recording count) time per call, seconds: a guess
/// used only until a round has measured the real time.
const SETUP_S_PER_CALL: f64 = 0.002;
/// Seconds per target outside the bench binary: `scripts/bench.sh` starts the relay (1.5 s
/// wait) and stops it.
pub const SCRIPT_OVERHEAD_S: f64 = 2.0;
/// The sink's file is read 250 ms after each flat-out trial.
const SINK_READ_S: f64 = 0.25;

/// The steps of one target and their nominal seconds, in order.
pub fn steps(kind: TargetKind, t: &Timing) -> Vec<(&'static str, f64)> {
    let calls = t.calls as f64 * SETUP_S_PER_CALL;
    match kind {
        TargetKind::Sink => vec![("flat out", t.trial_s + t.drain_s + SINK_READ_S); 2],
        TargetKind::Relay | TargetKind::Direct => {
            let mut v = vec![
                ("set-up", calls),
                ("warm-up", 1.0 + t.drain_s),
                ("realistic load", t.standard_s + t.drain_s),
                ("teardown", calls),
            ];
            if t.search {
                v.push(("search set-up", calls + 0.5 + t.drain_s));
                for _ in 0..t.max_trials {
                    v.push(("search", t.settle_s + t.trial_s + t.drain_s));
                }
                v.push(("flat out", t.settle_s + t.trial_s + t.drain_s));
            }
            v
        }
    }
}

/// The kind of a target of `scripts/bench.sh` from its name.
pub fn kind_of(name: &str) -> TargetKind {
    match name {
        "generator" => TargetKind::Direct,
        "af_xdp-drop" => TargetKind::Sink,
        _ => TargetKind::Relay,
    }
}

/// A target measured earlier in the run: its name, seconds it took, seconds it was
/// expected to take.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Target name.
    pub name: String,
    /// What it is.
    pub kind: TargetKind,
    /// Seconds the bench binary spent on it.
    pub elapsed_s: f64,
    /// Its nominal seconds.
    pub nominal_s: f64,
}

/// Estimates the time a run has left from the targets measured so far: a target measured
/// in an earlier round is expected to take what it took last; one not measured yet takes
/// its nominal time scaled by how far the measured ones of its kind were off theirs (kinds
/// apart: the generator's search usually ends at its first trial, a relay's runs on).
#[derive(Debug, Clone, Default)]
pub struct Eta {
    history: Vec<Measured>,
}

impl Eta {
    /// An estimator over `history`, oldest first.
    pub fn new(history: Vec<Measured>) -> Eta {
        Eta { history }
    }

    /// Measured seconds over nominal seconds of the targets of `kind`, 1 before one was
    /// measured.
    pub fn scale(&self, kind: TargetKind) -> f64 {
        let of_kind = || self.history.iter().filter(|m| m.kind == kind);
        let e: f64 = of_kind().map(|m| m.elapsed_s).sum();
        let n: f64 = of_kind().map(|m| m.nominal_s).sum();
        if n > 0.0 && e > 0.0 {
            e / n
        } else {
            1.0
        }
    }

    /// Expected seconds of one later target named `name` (nominal `nominal_s`), the
    /// script's overhead included.
    pub fn target_s(&self, name: &str, nominal_s: f64) -> f64 {
        let last = self.history.iter().rev().find(|m| m.name == name);
        last.map(|m| m.elapsed_s)
            .unwrap_or_else(|| nominal_s * self.scale(kind_of(name)))
            + SCRIPT_OVERHEAD_S
    }

    /// Seconds left: what remains of the current target (of `kind`, `own_nominal_left_s`,
    /// scaled) and every later target (`then`: names and nominal seconds, in order).
    pub fn left_s(&self, kind: TargetKind, own_nominal_left_s: f64, then: &[(String, f64)]) -> f64 {
        own_nominal_left_s * self.scale(kind)
            + then
                .iter()
                .map(|(name, nominal)| self.target_s(name, *nominal))
                .sum::<f64>()
    }
}

/// `~12 min left`, `~40 s left`.
pub fn show_left(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s >= 90.0 {
        format!("~{:.0} min left", s / 60.0)
    } else {
        format!("~{:.0} s left", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::LatencySummary;
    use crate::report::{Finish, StandardLoad, Trial};

    #[test]
    fn spread_of_values() {
        assert_eq!(spread([]), None);
        assert_eq!(spread([f64::NAN]), None);
        let s = spread([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        let s = spread([4.0, 1.0, 2.0, 10.0, f64::INFINITY]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (4, 3.0, 1.0, 10.0));
        assert_eq!(spread([5.0]).unwrap().median, 5.0);
    }

    fn trial(loss: f64, p99: f64, cpu: f64) -> Trial {
        Trial {
            offered_pps: 50_000.0,
            sent_pps: 50_000.0,
            received_pps: 50_000.0 * (1.0 - loss),
            sent: 250_000,
            received: (250_000.0 * (1.0 - loss)) as u64,
            send_failed: 0,
            loss,
            latency: LatencySummary {
                samples: 1000,
                p50_us: p99 / 4.0,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
            },
            relay_cpu_ns_per_packet: (cpu > 0.0).then_some(cpu),
            machine_cpu_ns_per_packet: Some(cpu * 2.0),
        }
    }

    fn target(name: &str, zero_loss: f64, cpu: f64, p99: f64) -> TargetReport {
        TargetReport {
            name: name.into(),
            kind: kind_of(name),
            description: String::new(),
            calls: 500,
            record: true,
            threads_per_party: 1,
            standard: Some(StandardLoad {
                trial: trial(0.0, p99, cpu),
                rss_idle_kib: Some(1000),
                rss_loaded_kib: Some(11_000),
                kib_per_call: Some(20.0),
                recorded: None,
                sent_total: 0,
                received_total: 0,
                finish: Some(Finish {
                    recordings: 500,
                    seconds: 0.5,
                }),
            }),
            trials: Vec::new(),
            zero_loss_pps: Some(zero_loss),
            max_received_pps: zero_loss,
            generator_bound: false,
            elapsed_s: None,
            nominal_s: None,
        }
    }

    fn rounds() -> Vec<Round> {
        // xdp/rtpengine zero-loss: 2.0, 3.0, 1.5; xdp/udp CPU: 0.5, 0.4, 0.8.
        let r = |i: u32, xdp: f64, rtp: f64, xcpu: f64, ucpu: f64| Round {
            round: i,
            targets: vec![
                target("generator", 150_000.0, 0.0, 100.0),
                target("linecord-xdp", xdp, xcpu, 300.0 + i as f64),
                target("linecord-udp", 90_000.0, ucpu, 400.0),
                target("rtpengine", rtp, 20_000.0, 900.0),
            ],
        };
        vec![
            r(1, 100_000.0, 50_000.0, 5000.0, 10_000.0),
            r(2, 120_000.0, 40_000.0, 4000.0, 10_000.0),
            r(3, 90_000.0, 60_000.0, 8000.0, 10_000.0),
        ]
    }

    #[test]
    fn figures_and_ratios_within_rounds() {
        let s = summarize(&rounds());
        assert_eq!(
            s.targets,
            ["generator", "linecord-xdp", "linecord-udp", "rtpengine"]
        );
        let zl = s.figure("linecord-xdp", Figure::ZeroLossPps).unwrap();
        assert_eq!(
            zl.per_round,
            [Some(100_000.0), Some(120_000.0), Some(90_000.0)]
        );
        let sp = zl.spread.unwrap();
        assert_eq!(
            (sp.median, sp.min, sp.max),
            (100_000.0, 90_000.0, 120_000.0)
        );
        // The generator's path is subtracted within each round.
        let added = s.figure("linecord-xdp", Figure::AddedP99Us).unwrap();
        assert_eq!(added.per_round, [Some(201.0), Some(202.0), Some(203.0)]);
        assert!(s.figure("generator", Figure::AddedP99Us).is_none());
        // No relay CPU for the generator: the row is left out, not zero.
        assert!(s.figure("generator", Figure::RelayCpuNsPerPacket).is_none());
        let cpc = s.figure("linecord-udp", Figure::CallsPerCore).unwrap();
        assert_eq!(cpc.spread.unwrap().median, 1000.0);
        let fin = s.figure("rtpengine", Figure::FinishedPerSecond).unwrap();
        assert_eq!(fin.spread.unwrap().median, 1000.0);

        let zl_ratio = &s.ratios[0];
        assert_eq!(zl_ratio.per_round, [Some(2.0), Some(3.0), Some(1.5)]);
        assert_eq!(zl_ratio.spread.unwrap().median, 2.0);
        assert_eq!(zl_ratio.rounds_met(), Some((2, 3)));
        let cpu_ratio = &s.ratios[1];
        assert_eq!(cpu_ratio.per_round, [Some(0.5), Some(0.4), Some(0.8)]);
        assert_eq!(cpu_ratio.rounds_met(), Some((2, 3)));
        // The median of the ratios is not the ratio of the medians: 100k/50k = 2 here too,
        // but the range is that of the rounds' own ratios.
        assert_eq!(
            (zl_ratio.spread.unwrap().min, zl_ratio.spread.unwrap().max),
            (1.5, 3.0)
        );
        // No af_xdp-drop target: the ratio is there, unmeasured.
        assert_eq!(s.ratios[3].per_round, [None, None, None]);
        assert_eq!(s.ratios[3].spread, None);
    }

    #[test]
    fn a_target_missing_from_a_round_leaves_a_gap() {
        let mut r = rounds();
        r[1].targets.retain(|t| t.name != "rtpengine");
        let s = summarize(&r);
        assert_eq!(s.ratios[0].per_round, [Some(2.0), None, Some(1.5)]);
        assert_eq!(s.ratios[0].spread.unwrap().median, 1.75);
        let rtp = s.figure("rtpengine", Figure::ZeroLossPps).unwrap();
        assert_eq!(rtp.per_round[1], None);
        assert_eq!(rtp.spread.unwrap().n, 2);
    }

    #[test]
    fn zero_loss_in_every_round() {
        let mut r = rounds();
        assert_eq!(zero_loss_rounds(&r, "linecord-udp"), (3, 3));
        r[2].targets[2].standard.as_mut().unwrap().trial.loss = 0.001;
        assert_eq!(zero_loss_rounds(&r, "linecord-udp"), (2, 3));
        assert_eq!(zero_loss_rounds(&r, "nothing"), (0, 0));
    }

    #[test]
    fn goals() {
        assert!(Goal::AtLeast(2.0).met(2.0) && !Goal::AtLeast(2.0).met(1.99));
        assert!(Goal::AtMost(0.5).met(0.5) && !Goal::AtMost(0.5).met(0.51));
        assert_eq!(Goal::AtMost(0.5).show(), "≤ 0.5");
    }

    fn timing() -> Timing {
        Timing {
            calls: 500,
            standard_s: 5.0,
            trial_s: 2.0,
            drain_s: 0.3,
            settle_s: 1.0,
            max_trials: 8,
            search: true,
        }
    }

    #[test]
    fn nominal_steps() {
        let t = timing();
        let relay: f64 = steps(TargetKind::Relay, &t).iter().map(|s| s.1).sum();
        // Set-up and teardown 1 each, 1.3 + 5.3, search set-up 1.8, 8 + 1 trials of 3.3.
        assert!(
            (relay - (2.0 + 1.3 + 5.3 + 1.8 + 9.0 * 3.3)).abs() < 1e-9,
            "{relay}"
        );
        let sink: f64 = steps(TargetKind::Sink, &t).iter().map(|s| s.1).sum();
        assert!((sink - 5.1).abs() < 1e-9, "{sink}");
        let no_search = Timing { search: false, ..t };
        assert_eq!(steps(TargetKind::Relay, &no_search).len(), 4);
    }

    #[test]
    fn eta_from_measured_targets() {
        let none = Eta::default();
        assert_eq!(none.scale(TargetKind::Relay), 1.0);
        assert_eq!(
            none.left_s(TargetKind::Relay, 10.0, &[("a".into(), 20.0)]),
            10.0 + 20.0 + SCRIPT_OVERHEAD_S
        );
        // The relay measured took twice its nominal time: relays not measured yet are
        // expected to take twice their own; a target measured before takes what it took.
        // The generator's quick search says nothing about the relays' time.
        let eta = Eta::new(vec![
            Measured {
                name: "generator".into(),
                kind: TargetKind::Direct,
                elapsed_s: 5.0,
                nominal_s: 20.0,
            },
            Measured {
                name: "linecord-udp".into(),
                kind: TargetKind::Relay,
                elapsed_s: 30.0,
                nominal_s: 15.0,
            },
        ]);
        assert_eq!(eta.scale(TargetKind::Relay), 2.0);
        assert_eq!(eta.scale(TargetKind::Direct), 0.25);
        assert_eq!(eta.scale(TargetKind::Sink), 1.0);
        assert_eq!(eta.target_s("linecord-udp", 99.0), 30.0 + SCRIPT_OVERHEAD_S);
        assert_eq!(eta.target_s("rtpengine", 10.0), 20.0 + SCRIPT_OVERHEAD_S);
        assert_eq!(eta.target_s("af_xdp-drop", 5.0), 5.0 + SCRIPT_OVERHEAD_S);
        let left = eta.left_s(
            TargetKind::Relay,
            5.0,
            &[("rtpengine".into(), 10.0), ("generator".into(), 20.0)],
        );
        assert_eq!(left, 10.0 + 20.0 + 5.0 + 2.0 * SCRIPT_OVERHEAD_S);
        assert_eq!(show_left(left), "~39 s left");
        assert_eq!(show_left(600.0), "~10 min left");
        assert_eq!(show_left(-3.0), "~0 s left");
    }
}
