//! Results of a run: the JSON model, the markdown table and the SVG plot.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::measure::LatencySummary;
use crate::recorded::Recorded;

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
    fn get(&self, name: &str) -> Option<&TargetReport> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The results as a markdown table, followed by the targets of the bench issue.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Run of {} on {}; {}.\n",
            self.date, self.machine, self.network
        );
        s.push_str(
            "| target | zero-loss throughput | ≈ calls | latency p50 / p99 / p99.9 / max (µs) | \
             relay CPU ns/pkt | machine CPU ns/pkt | KiB/call | recorded / through relay |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for t in &self.targets {
            let throughput = match t.kind {
                TargetKind::Relay => t.zero_loss_pps,
                _ => Some(t.max_received_pps),
            };
            let calls = throughput.map(|p| format!("{:.0}", p / PPS_PER_CALL));
            let (lat, relay_cpu, machine_cpu, kib, rec) = match &t.standard {
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
                    )
                }
                None => ("—".into(), "—".into(), "—".into(), "—".into(), "—".into()),
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
                "| {name} | {bound}{} | {} | {lat} | {relay_cpu} | {machine_cpu} | {kib} | {rec} |",
                fmt_rate(throughput),
                calls.unwrap_or_else(|| "—".into()),
            );
        }
        s.push_str("\nTargets (reported, not asserted):\n\n");
        for line in self.target_checks() {
            let _ = writeln!(s, "- {line}");
        }
        s
    }

    /// One line per target of the bench issue: the figure, the goal, met or missed.
    pub fn target_checks(&self) -> Vec<String> {
        let xdp = self.get("linecord-xdp");
        let zl = |name: &str| self.get(name).and_then(|t| t.zero_loss_pps);
        let mut out = Vec::new();
        let ratio = |label: &str, num: Option<f64>, den: Option<f64>, goal: f64| match (num, den) {
            (Some(n), Some(d)) if d > 0.0 => {
                let r = n / d;
                let verdict = if r >= goal { "met" } else { "missed" };
                format!("{label}: {r:.2}x (goal ≥ {goal}x): {verdict}")
            }
            _ => format!("{label}: not measured in this run"),
        };
        out.push(ratio(
            "linecord-xdp vs rtpengine zero-loss throughput",
            zl("linecord-xdp"),
            zl("rtpengine"),
            5.0,
        ));
        out.push(ratio(
            "linecord-xdp vs linecord-udp",
            zl("linecord-xdp"),
            zl("linecord-udp"),
            3.0,
        ));
        out.push(ratio(
            "linecord-xdp vs the AF_XDP drop ceiling",
            zl("linecord-xdp"),
            self.get("af_xdp-drop").map(|t| t.max_received_pps),
            0.8,
        ));
        match xdp.and_then(|t| t.standard.as_ref()) {
            Some(st) => {
                let p99 = st.trial.latency.p99_us;
                let base = self
                    .get("generator")
                    .and_then(|g| g.standard.as_ref())
                    .map(|g| g.trial.latency.p99_us);
                let added = base.map(|b| (p99 - b).max(0.0));
                let verdict = if added.unwrap_or(p99) <= 50.0 {
                    "met"
                } else {
                    "missed"
                };
                out.push(format!(
                    "linecord-xdp p99 latency at the standard load: {p99:.0} µs \
                     ({} µs over the generator's own path; goal ≤ 50 µs added): {verdict}",
                    fmt_opt(added, 0)
                ));
                match st.kib_per_call {
                    Some(k) => out.push(format!(
                        "linecord-xdp memory per recorded call: {k:.1} KiB (goal ≤ 16): {}",
                        if k <= 16.0 { "met" } else { "missed" }
                    )),
                    None => out.push("linecord-xdp memory per call: not measured".into()),
                }
            }
            None => out.push("linecord-xdp: not measured in this run".into()),
        }
        out
    }

    /// The plot: arrived rate vs offered rate (left) and p99 latency vs offered rate
    /// (right), one line per target.
    ///
    /// Written by hand: two line charts of a few dozen points need only polylines and
    /// labels, where a plotting crate would bring a font stack for its text layout.
    pub fn svg(&self) -> String {
        const W: f64 = 960.0;
        const H: f64 = 400.0;
        const COLORS: [&str; 6] = [
            "#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e",
        ];
        let series: Vec<(&TargetReport, Vec<&Trial>)> = self
            .targets
            .iter()
            .map(|t| {
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
        for (i, (t, trials)) in series.iter().enumerate() {
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
            let ly = 375.0;
            let lx = 60.0 + 150.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{ly}">{}</text>"#,
                ly - 10.0,
                lx + 16.0,
                t.name
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
            }),
            trials: vec![
                trial(200_000.0, 150_000.0, p99 * 10.0),
                trial(100_000.0, 100_000.0, p99),
            ],
            zero_loss_pps: zero_loss,
            max_received_pps: 150_000.0,
            generator_bound: false,
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
    fn markdown_table_and_checks() {
        let md = run().markdown();
        assert!(md.contains("| linecord-xdp | 600 kpps | 6000 | 30 / 60 / 120 / 180 | 800 | 2000 | 10.0 | 500000 / 500000 |"), "{md}");
        assert!(
            md.contains("generator (no relay: generator ceiling) | 150 kpps"),
            "{md}"
        );
        let checks = run().target_checks();
        assert_eq!(
            checks[0],
            "linecord-xdp vs rtpengine zero-loss throughput: 6.00x (goal ≥ 5x): met"
        );
        assert_eq!(
            checks[1],
            "linecord-xdp vs linecord-udp: 4.00x (goal ≥ 3x): met"
        );
        assert_eq!(
            checks[2],
            "linecord-xdp vs the AF_XDP drop ceiling: 4.00x (goal ≥ 0.8x): met"
        );
        assert!(
            checks[3].contains("60 µs (40 µs over") && checks[3].ends_with("met"),
            "{}",
            checks[3]
        );
        assert!(checks[4].ends_with("met"));
        let mut partial = run();
        partial.targets.retain(|t| t.name != "rtpengine");
        assert!(partial.target_checks()[0].ends_with("not measured in this run"));
    }

    #[test]
    fn svg_has_a_line_per_target() {
        let svg = run().svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Two panels × five targets.
        assert_eq!(svg.matches("<polyline").count(), 10);
        assert!(svg.contains(">rtpengine</text>"));
    }

    #[test]
    fn json_round_trip() {
        let r = run();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RunReport>(&text).unwrap(), r);
    }
}
