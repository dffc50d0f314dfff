//! Results of a run: the JSON model, the markdown summary and the SVG plot.
//!
//! A run is a list of [`Round`]s, each measuring every target once ([`RoundsReport`]); the
//! summary gives each figure's median and range over the rounds and the ratios taken within
//! each round (`crate::rounds`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::budget::BudgetFigure;
use crate::measure::LatencySummary;
use crate::recorded::Recorded;
use crate::rounds::{self, Figure, Summary};

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A media relay driven over NG (calls through it).
    Relay,
    /// The generator straight into its own receivers (no relay): the generator's ceiling.
    Direct,
    /// Packets sent to an AF_XDP socket that drops them: the interface's ceiling.
    Sink,
}

/// One trial at one offered rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Offered rate, packets/s (both directions together); infinite is written as 0.
    pub offered_pps: f64,
    /// Achieved send rate.
    pub sent_pps: f64,
    /// Rate that arrived (at the parties, or at the sink).
    pub received_pps: f64,
    /// Packets sent.
    pub sent: u64,
    /// Packets received.
    pub received: u64,
    /// Packets the generator failed to send (its own limit).
    pub send_failed: u64,
    /// Loss ratio.
    pub loss: f64,
    /// One-way latency of the received packets.
    pub latency: LatencySummary,
    /// Relay process CPU per packet sent through it, ns.
    pub relay_cpu_ns_per_packet: Option<f64>,
    /// Whole-machine busy CPU per packet, ns (generator, relay, softirq: everything).
    pub machine_cpu_ns_per_packet: Option<f64>,
}

/// The realistic load: every call at 50 packets/s per direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardLoad {
    /// The trial.
    pub trial: Trial,
    /// Relay RSS before the calls were set up, KiB.
    pub rss_idle_kib: Option<u64>,
    /// Relay RSS with every call up and media flowing, KiB.
    pub rss_loaded_kib: Option<u64>,
    /// Relay memory per call, KiB.
    pub kib_per_call: Option<f64>,
    /// What the relay recorded of these calls (after `delete`).
    pub recorded: Option<Recorded>,
    /// Packets sent over the whole life of these calls (what a recording must hold, less
    /// what was lost on the way in).
    pub sent_total: u64,
    /// Packets that came out of the relay over the whole life of these calls (each of them
    /// went through the relay, so each must be in a recording).
    pub received_total: u64,
    /// How fast the recordings of these calls were finished when all of them ended at once
    /// (linecord's spool jobs; `None` where not measured).
    #[serde(default)]
    pub finish: Option<Finish>,
}

/// Every call of the realistic load ends at once (`delete` for all of them): the time from
/// the first `delete` to the last of their recording jobs entering the spool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// Recordings finished (jobs found).
    pub recordings: u64,
    /// Seconds from the first `delete` to the last job.
    pub seconds: f64,
}

impl Finish {
    /// Finished recordings per second, or `None` when nothing was timed.
    pub fn per_second(&self) -> Option<f64> {
        (self.recordings > 0 && self.seconds > 0.0).then(|| self.recordings as f64 / self.seconds)
    }
}

/// Everything measured on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReport {
    /// Short name (`linecord-xdp`, `linecord-udp`, `rtpengine`, `generator`, `af_xdp-drop`).
    pub name: String,
    /// What it is.
    pub kind: TargetKind,
    /// Free text: version, flags.
    pub description: String,
    /// Concurrent calls (streams = 2 × calls).
    pub calls: usize,
    /// Whether the calls were recorded.
    pub record: bool,
    /// Generator threads per party.
    pub threads_per_party: usize,
    /// The realistic-load phase.
    pub standard: Option<StandardLoad>,
    /// The trials of the zero-loss search (or the ceiling runs), in the order run.
    pub trials: Vec<Trial>,
    /// Highest offered rate with loss ≤ 0.001 %, packets/s.
    pub zero_loss_pps: Option<f64>,
    /// Highest rate that arrived in any trial, packets/s.
    pub max_received_pps: f64,
    /// Some search trial could not be offered at its rate (the generator's ceiling, not the
    /// target's): the zero-loss figure is then a lower bound.
    #[serde(default)]
    pub generator_bound: bool,
    /// Seconds the bench spent on this target (for the time-left estimate of later rounds).
    #[serde(default)]
    pub elapsed_s: Option<f64>,
    /// Seconds it was expected to take from its timing options.
    #[serde(default)]
    pub nominal_s: Option<f64>,
}

/// One round: every target measured once, in the run's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// 1-based round number.
    pub round: u32,
    /// The targets of this round, in the standard order.
    pub targets: Vec<TargetReport>,
}

/// A whole run of interleaved rounds: the raw results of every round, the summary over
/// them and the per-packet budget read from criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundsReport {
    /// When it ran (RFC 3339).
    pub date: String,
    /// The machine: CPU model, cores, kernel.
    pub machine: String,
    /// The network.
    pub network: String,
    /// How it was run (the command line), for the record.
    pub command: String,
    /// Every round, in order.
    pub rounds: Vec<Round>,
    /// Medians, ranges and ratios over the rounds (derived from `rounds`).
    pub summary: Summary,
    /// The per-packet budget stages found (empty: not measured).
    pub budget: Vec<BudgetFigure>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// When it ran (RFC 3339).
    pub date: String,
    /// The machine: CPU model, cores, kernel.
    pub machine: String,
    /// The network: e.g. "veth pairs through a bridge, network namespaces".
    pub network: String,
    /// Every target, in the order measured.
    pub targets: Vec<TargetReport>,
}

fn fmt_rate(pps: Option<f64>) -> String {
    match pps {
        Some(p) if p >= 1e6 => format!("{:.2} Mpps", p / 1e6),
        Some(p) => format!("{:.0} kpps", p / 1e3),
        None => "—".into(),
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// Packets per second that one bridged G.711 call puts through a relay (2 × 50).
pub const PPS_PER_CALL: f64 = 100.0;

impl RunReport {
    /// The results of this round as a markdown table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| target | zero-loss throughput | ≈ calls | latency p50 / p99 / p99.9 / max (µs) | \
             relay CPU ns/pkt | machine CPU ns/pkt | KiB/call | recorded / through relay | \
             finished/s |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for t in &self.targets {
            let throughput = match t.kind {
                TargetKind::Relay => t.zero_loss_pps,
                _ => Some(t.max_received_pps),
            };
            let calls = throughput.map(|p| format!("{:.0}", p / PPS_PER_CALL));
            let (lat, relay_cpu, machine_cpu, kib, rec, fin) = match &t.standard {
                Some(st) => {
                    let l = st.trial.latency;
                    (
                        format!(
                            "{:.0} / {:.0} / {:.0} / {:.0}",
                            l.p50_us, l.p99_us, l.p999_us, l.max_us
                        ),
                        fmt_opt(st.trial.relay_cpu_ns_per_packet, 0),
                        fmt_opt(st.trial.machine_cpu_ns_per_packet, 0),
                        fmt_opt(st.kib_per_call, 1),
                        match st.recorded {
                            Some(r) => format!("{} / {}", r.packets, st.received_total),
                            None if t.record => "not counted".into(),
                            None => "not recording".into(),
                        },
                        fmt_opt(st.finish.and_then(|f| f.per_second()), 0),
                    )
                }
                None => (
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                ),
            };
            let name = match t.kind {
                TargetKind::Relay => t.name.clone(),
                TargetKind::Direct => format!("{} (no relay: generator ceiling)", t.name),
                TargetKind::Sink => format!("{} (receive and drop: interface ceiling)", t.name),
            };
            let bound = if t.generator_bound && t.kind == TargetKind::Relay && throughput.is_some()
            {
                "≥ "
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {name} | {bound}{} | {} | {lat} | {relay_cpu} | {machine_cpu} | {kib} | {rec} | {fin} |",
                fmt_rate(throughput),
                calls.unwrap_or_else(|| "—".into()),
            );
        }
        s
    }

    /// The plot of this round ([`plot`]).
    pub fn svg(&self) -> String {
        plot(&self.targets.iter().collect::<Vec<_>>())
    }
}

fn fmt_spread(f: Figure, s: Option<rounds::Spread>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ({}–{})", f.show(s.median), f.show(s.min), f.show(s.max)),
        Some(s) => f.show(s.median),
        None => "—".into(),
    }
}

impl RoundsReport {
    /// A report of `rounds`, with its summary computed from them.
    pub fn new(
        date: String,
        machine: String,
        network: String,
        command: String,
        rounds: Vec<Round>,
        budget: Vec<BudgetFigure>,
    ) -> RoundsReport {
        RoundsReport {
            summary: rounds::summarize(&rounds),
            date,
            machine,
            network,
            command,
            rounds,
            budget,
        }
    }

    /// The summary as markdown: every figure's median (min–max) per target, the ratios
    /// within each round, the per-packet budget, the goals, then each round's own table.
    /// `now_unix_s` dates the budget's estimates ("written N min before this report").
    pub fn markdown(&self, now_unix_s: u64) -> String {
        let mut s = String::new();
        let n = self.rounds.len();
        let sum = &self.summary;
        let _ = writeln!(
            s,
            "Run of {} on {}; {}.\n\n{n} interleaved round{} (each round runs every target \
             once, in this order: {}). Command: `{}`.\n",
            self.date,
            self.machine,
            self.network,
            if n == 1 { "" } else { "s" },
            sum.targets.join(", "),
            self.command,
        );
        s.push_str(
            "Each cell: median (min–max) over the rounds; — not measured. Realistic load: \
             every stream at 50 packets/s. The throughput of `generator` and `af_xdp-drop` \
             is their ceiling (the most that arrived). `≥`: the generator's ceiling, not \
             the target's, in some round.\n\n",
        );
        let _ = write!(s, "| figure |");
        for t in &sum.targets {
            let _ = write!(s, " {t} |");
        }
        let _ = write!(s, "\n| --- |");
        for _ in &sum.targets {
            s.push_str(" --- |");
        }
        s.push('\n');
        for f in Figure::ALL {
            if !sum.targets.iter().any(|t| sum.figure(t, f).is_some()) {
                continue;
            }
            let _ = write!(s, "| {} |", f.label());
            for t in &sum.targets {
                let bound = f == Figure::ZeroLossPps
                    && self.rounds.iter().any(|r| {
                        r.targets.iter().any(|x| {
                            x.name == *t && x.kind == TargetKind::Relay && x.generator_bound
                        })
                    });
                let cell = fmt_spread(f, sum.figure(t, f).and_then(|r| r.spread));
                let _ = write!(s, " {}{cell} |", if bound { "≥ " } else { "" });
            }
            s.push('\n');
        }

        s.push_str("\nRatios, taken within each round:\n\n| ratio |");
        for i in 1..=n {
            let _ = write!(s, " round {i} |");
        }
        s.push_str(" median (min–max) | goal | verdict |\n| --- |");
        for _ in 0..n {
            s.push_str(" --- |");
        }
        s.push_str(" --- | --- | --- |\n");
        for r in &sum.ratios {
            let _ = write!(s, "| {} |", r.label);
            for v in &r.per_round {
                let _ = write!(s, " {} |", fmt_opt(*v, 2));
            }
            let spread = match r.spread {
                Some(sp) if sp.n > 1 => {
                    format!("{:.2} ({:.2}–{:.2})", sp.median, sp.min, sp.max)
                }
                Some(sp) => format!("{:.2}", sp.median),
                None => "not measured".into(),
            };
            let goal = r.goal.map(|g| g.show()).unwrap_or_else(|| "—".into());
            let verdict = match (r.goal, r.spread, r.rounds_met()) {
                (Some(g), Some(sp), Some((k, of))) => format!(
                    "{} ({k} of {of} rounds)",
                    if g.met(sp.median) { "met" } else { "missed" }
                ),
                (Some(_), _, _) => "not measured".into(),
                _ => "—".into(),
            };
            let _ = writeln!(s, " {spread} | {goal} | {verdict} |");
        }

        s.push('\n');
        if self.budget.is_empty() {
            s.push_str(
                "Per-packet budget (`cargo bench -p recorder --bench packet_budget`): not \
                 measured (no criterion estimates under target/criterion/packet_budget).\n",
            );
        } else {
            s.push_str(
                "Per-packet budget (criterion, `recorder/benches/packet_budget.rs`, one core, \
                 in memory):\n\n| stage | ns/packet (95 % interval) | budget | verdict | \
                 estimates written |\n| --- | --- | --- | --- | --- |\n",
            );
            for b in &self.budget {
                let (goal, verdict) = match b.goal_ns() {
                    Some(g) => (
                        format!("≤ {g:.0}"),
                        if b.ns_per_packet <= g {
                            "met"
                        } else {
                            "missed"
                        }
                        .to_owned(),
                    ),
                    None => ("—".into(), "—".into()),
                };
                let written = match b.written_unix_s {
                    Some(w) => format!(
                        "{} min before this report",
                        now_unix_s.saturating_sub(w) / 60
                    ),
                    None => "—".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.1} ({:.1}–{:.1}) | {goal} | {verdict} | {written} |",
                    b.id, b.ns_per_packet, b.lower_ns, b.upper_ns
                );
            }
        }

        s.push_str("\nGoals (reported, not asserted):\n\n");
        for line in self.goal_lines() {
            let _ = writeln!(s, "- {line}");
        }

        for r in &self.rounds {
            let _ = writeln!(s, "\n<details><summary>Round {}</summary>\n", r.round);
            let one = RunReport {
                date: String::new(),
                machine: String::new(),
                network: String::new(),
                targets: r.targets.clone(),
            };
            s.push_str(&one.table());
            s.push_str("\n</details>\n");
        }
        s
    }

    /// One line per goal of the bench issue that is not a ratio (those are in the ratio
    /// table): the median, the goal, met or missed.
    pub fn goal_lines(&self) -> Vec<String> {
        let sum = &self.summary;
        let mut out = Vec::new();
        let median = |t: &str, f: Figure| sum.figure(t, f).and_then(|r| r.spread);
        let line = |what: &str, t: &str, f: Figure, goal: rounds::Goal| match median(t, f) {
            Some(sp) => format!(
                "{t} {what}: {} median, {} in the worst round (goal {}): {}",
                f.show(sp.median),
                f.show(match goal {
                    rounds::Goal::AtLeast(_) => sp.min,
                    rounds::Goal::AtMost(_) => sp.max,
                }),
                goal.show(),
                if goal.met(sp.median) { "met" } else { "missed" }
            ),
            None => format!("{t} {what}: not measured"),
        };
        for t in &sum.targets {
            let relay = self
                .rounds
                .iter()
                .flat_map(|r| &r.targets)
                .any(|x| x.name == *t && x.kind == TargetKind::Relay);
            if !relay {
                continue;
            }
            let (zero, of) = rounds::zero_loss_rounds(&self.rounds, t);
            out.push(format!(
                "{t} zero loss at the realistic load in every round: {zero} of {of} rounds: {}",
                if of > 0 && zero == of {
                    "met"
                } else {
                    "missed"
                }
            ));
        }
        out.push(line(
            "p99 added latency (µs)",
            "linecord-xdp",
            Figure::AddedP99Us,
            rounds::Goal::AtMost(200.0),
        ));
        out.push(line(
            "memory per recorded call (KiB)",
            "linecord-xdp",
            Figure::KibPerCall,
            rounds::Goal::AtMost(16.0),
        ));
        for t in sum.targets.iter().filter(|t| t.starts_with("linecord-")) {
            out.push(line(
                "finished recordings/s",
                t,
                Figure::FinishedPerSecond,
                rounds::Goal::AtLeast(2000.0),
            ));
        }
        out
    }

    /// The plot of every round ([`plot`]): one line per target and round.
    pub fn svg(&self) -> String {
        let all: Vec<&TargetReport> = self.rounds.iter().flat_map(|r| &r.targets).collect();
        plot(&all)
    }
}

/// The plot: arrived rate vs offered rate (left) and p99 latency vs offered rate (right),
/// one line per target and round, one colour per target name.
///
/// Written by hand: two line charts of a few dozen points need only polylines and labels,
/// where a plotting crate would bring a font stack for its text layout.
pub fn plot(targets: &[&TargetReport]) -> String {
    {
        const W: f64 = 960.0;
        const H: f64 = 400.0;
        const COLORS: [&str; 6] = [
            "#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e",
        ];
        let mut names: Vec<&str> = Vec::new();
        for t in targets {
            if !names.contains(&t.name.as_str()) {
                names.push(&t.name);
            }
        }
        let series: Vec<(&TargetReport, Vec<&Trial>)> = targets
            .iter()
            .map(|&t| {
                let mut v: Vec<&Trial> = t.trials.iter().filter(|x| x.sent > 0).collect();
                v.sort_by(|a, b| a.sent_pps.total_cmp(&b.sent_pps));
                (t, v)
            })
            .collect();
        let max_x = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|t| t.sent_pps))
            .fold(1.0, f64::max);
        let max_y = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|t| t.received_pps))
            .fold(max_x, f64::max);
        let max_lat = series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|t| t.latency.p99_us))
            .fold(10.0, f64::max);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        // Panel geometry: left panel x 60..440, right panel x 540..920, y 40..330.
        let panels = [
            (60.0, "arrived (kpps) vs sent (kpps)"),
            (540.0, "p99 one-way latency (µs, log) vs sent (kpps)"),
        ];
        for (x0, title) in panels {
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="40" width="380" height="290" fill="none" stroke="#333"/><text x="{}" y="28" text-anchor="middle">{title}</text>"##,
                x0 + 190.0
            );
            for i in 0..=4 {
                let f = i as f64 / 4.0;
                let x = x0 + 380.0 * f;
                let _ = writeln!(
                    s,
                    r##"<text x="{x}" y="348" text-anchor="middle">{:.0}</text>"##,
                    max_x * f / 1e3
                );
            }
        }
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let y = 330.0 - 290.0 * f;
            let _ = writeln!(
                s,
                r#"<text x="54" y="{y}" text-anchor="end">{:.0}</text>"#,
                max_y * f / 1e3
            );
            let lat = 10f64.powf(max_lat.log10() * f);
            let _ = writeln!(
                s,
                r#"<text x="534" y="{y}" text-anchor="end">{lat:.0}</text>"#
            );
        }
        // The ideal: everything sent arrives.
        let _ = writeln!(
            s,
            r##"<line x1="60" y1="330" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4"/>"##,
            60.0 + 380.0,
            330.0 - 290.0 * (max_x / max_y)
        );
        for (t, trials) in &series {
            let i = names.iter().position(|n| *n == t.name).unwrap_or(0);
            let color = COLORS[i % COLORS.len()];
            let px = |x: f64, x0: f64| x0 + 380.0 * x / max_x;
            let mut left = String::new();
            let mut right = String::new();
            for tr in trials {
                let _ = write!(
                    left,
                    "{:.1},{:.1} ",
                    px(tr.sent_pps, 60.0),
                    330.0 - 290.0 * tr.received_pps / max_y
                );
                if tr.latency.samples > 0 {
                    let ly = tr.latency.p99_us.max(1.0).log10() / max_lat.log10();
                    let _ = write!(
                        right,
                        "{:.1},{:.1} ",
                        px(tr.sent_pps, 540.0),
                        330.0 - 290.0 * ly
                    );
                }
            }
            for (pts, _) in [(left, 0), (right, 1)] {
                if pts.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    s,
                    r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#
                );
                for p in pts.split_whitespace() {
                    if let Some((x, y)) = p.split_once(',') {
                        let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
                    }
                }
            }
        }
        for (i, name) in names.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let ly = 375.0;
            let lx = 60.0 + 150.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly}">{name}</text>"#,
                ly - 10.0,
                lx + 16.0,
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(sent_pps: f64, received_pps: f64, p99: f64) -> Trial {
        Trial {
            offered_pps: sent_pps,
            sent_pps,
            received_pps,
            sent: (sent_pps * 2.0) as u64,
            received: (received_pps * 2.0) as u64,
            send_failed: 0,
            loss: 1.0 - received_pps / sent_pps,
            latency: LatencySummary {
                samples: 10,
                p50_us: p99 / 2.0,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
            },
            relay_cpu_ns_per_packet: Some(800.0),
            machine_cpu_ns_per_packet: Some(2000.0),
        }
    }

    fn target(name: &str, kind: TargetKind, zero_loss: Option<f64>, p99: f64) -> TargetReport {
        TargetReport {
            name: name.into(),
            kind,
            description: String::new(),
            calls: 1000,
            record: kind == TargetKind::Relay,
            threads_per_party: 1,
            standard: Some(StandardLoad {
                trial: trial(100_000.0, 100_000.0, p99),
                rss_idle_kib: Some(10_000),
                rss_loaded_kib: Some(20_000),
                kib_per_call: Some(10.0),
                recorded: Some(Recorded {
                    recordings: 1000,
                    packets: 500_000,
                    incomplete: 0,
                }),
                sent_total: 500_000,
                received_total: 500_000,
                finish: Some(Finish {
                    recordings: 1000,
                    seconds: 0.5,
                }),
            }),
            trials: vec![
                trial(200_000.0, 150_000.0, p99 * 10.0),
                trial(100_000.0, 100_000.0, p99),
            ],
            zero_loss_pps: zero_loss,
            max_received_pps: 150_000.0,
            generator_bound: false,
            elapsed_s: None,
            nominal_s: None,
        }
    }

    fn run() -> RunReport {
        RunReport {
            date: "2026-11-25T10:00:00Z".into(),
            machine: "2 cores".into(),
            network: "veth".into(),
            targets: vec![
                target("generator", TargetKind::Direct, None, 20.0),
                target("af_xdp-drop", TargetKind::Sink, None, 0.0),
                target("linecord-xdp", TargetKind::Relay, Some(600_000.0), 60.0),
                target("linecord-udp", TargetKind::Relay, Some(150_000.0), 80.0),
                target("rtpengine", TargetKind::Relay, Some(100_000.0), 90.0),
            ],
        }
    }

    #[test]
    fn round_table() {
        let md = run().table();
        assert!(md.contains("| linecord-xdp | 600 kpps | 6000 | 30 / 60 / 120 / 180 | 800 | 2000 | 10.0 | 500000 / 500000 | 2000 |"), "{md}");
        assert!(
            md.contains("generator (no relay: generator ceiling) | 150 kpps"),
            "{md}"
        );
    }

    /// Two rounds: xdp 600k then 400k zero-loss, rtpengine 100k then 200k (ratios 6 and 2).
    fn rounds_report(budget: Vec<BudgetFigure>) -> RoundsReport {
        let first = run().targets;
        let mut second = run().targets;
        second[2].zero_loss_pps = Some(400_000.0);
        second[4].zero_loss_pps = Some(200_000.0);
        second[4].generator_bound = true;
        second[2]
            .standard
            .as_mut()
            .unwrap()
            .trial
            .relay_cpu_ns_per_packet = Some(200.0);
        RoundsReport::new(
            "2026-12-03T18:00:00Z".into(),
            "2 cores".into(),
            "veth".into(),
            "bash scripts/bench.sh --rounds 2".into(),
            vec![
                Round {
                    round: 1,
                    targets: first,
                },
                Round {
                    round: 2,
                    targets: second,
                },
            ],
            budget,
        )
    }

    #[test]
    fn rounds_markdown() {
        let r = rounds_report(Vec::new());
        let md = r.markdown(0);
        assert!(md.contains("2 interleaved rounds"), "{md}");
        assert!(
            md.contains(
                "| figure | generator | af_xdp-drop | linecord-xdp | linecord-udp | rtpengine |"
            ),
            "{md}"
        );
        // Zero-loss kpps: median (min–max); rtpengine was generator-bound in round 2.
        assert!(
            md.contains("| zero-loss throughput (kpps) | 150.0 (150.0–150.0) | 150.0 (150.0–150.0) | 500.0 (400.0–600.0) | 150.0 (150.0–150.0) | ≥ 150.0 (100.0–200.0) |"),
            "{md}"
        );
        // Relay CPU: 800 in round 1, 200 in round 2 for xdp; 800 both for udp: 0.25 and 1.
        assert!(
            md.contains("| linecord-xdp / rtpengine zero-loss throughput | 6.00 | 2.00 | 4.00 (2.00–6.00) | ≥ 2 | met (2 of 2 rounds) |"),
            "{md}"
        );
        assert!(
            md.contains("| linecord-xdp / linecord-udp relay CPU per packet at 50 pps/stream | 1.00 | 0.25 | 0.62 (0.25–1.00) | ≤ 0.5 | missed (1 of 2 rounds) |"),
            "{md}"
        );
        assert!(
            md.contains("| linecord-xdp / AF_XDP drop ceiling | 4.00 | 2.67 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "Per-packet budget (`cargo bench -p recorder --bench packet_budget`): not measured"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- linecord-udp zero loss at the realistic load in every round: 2 of 2 rounds: met"
            ),
            "{md}"
        );
        assert!(md.contains("- linecord-xdp finished recordings/s: 2000 median, 2000 in the worst round (goal ≥ 2000): met"), "{md}");
        assert!(md.contains("<summary>Round 2</summary>"), "{md}");
    }

    #[test]
    fn rounds_markdown_with_a_budget() {
        let b = |id: &str, ns: f64| BudgetFigure {
            id: id.into(),
            ns_per_packet: ns,
            lower_ns: ns - 1.0,
            upper_ns: ns + 1.0,
            written_unix_s: Some(1000),
        };
        let md = rounds_report(vec![
            b("packet_budget/recorded/full", 210.0),
            b("packet_budget/recorded/parse", 20.0),
            b("packet_budget/unrecorded/full", 90.0),
        ])
        .markdown(1000 + 600);
        assert!(md.contains("| packet_budget/recorded/full | 210.0 (209.0–211.0) | ≤ 190 | missed | 10 min before this report |"), "{md}");
        assert!(
            md.contains("| packet_budget/recorded/parse | 20.0 (19.0–21.0) | — | — |"),
            "{md}"
        );
        assert!(
            md.contains("| packet_budget/unrecorded/full | 90.0 (89.0–91.0) | ≤ 100 | met |"),
            "{md}"
        );
    }

    #[test]
    fn svg_has_a_line_per_target() {
        let svg = run().svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Two panels × five targets.
        assert_eq!(svg.matches("<polyline").count(), 10);
        assert!(svg.contains(">rtpengine</text>"));
        // Every round's lines, one legend entry per target.
        let svg = rounds_report(Vec::new()).svg();
        assert_eq!(svg.matches("<polyline").count(), 20);
        assert_eq!(svg.matches(">rtpengine</text>").count(), 1);
    }

    #[test]
    fn json_round_trip() {
        let r = run();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RunReport>(&text).unwrap(), r);
        let r = rounds_report(Vec::new());
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RoundsReport>(&text).unwrap(), r);
    }

    #[test]
    fn results_kept_before_rounds_still_read() {
        let old = include_str!("../../docs/bench/relays-2026-11-25.json");
        let r: RunReport = serde_json::from_str(old).unwrap();
        assert_eq!(r.targets.len(), 5);
        assert!(r.targets.iter().all(|t| t.elapsed_s.is_none()));
    }
}
