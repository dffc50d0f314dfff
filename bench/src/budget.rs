//! The per-packet budget: criterion's estimates of `recorder/benches/packet_budget.rs`
//! (`target/criterion/packet_budget/**/new/{benchmark,estimates}.json`), read for the
//! summary. Nothing is made up: without the files the summary says "not measured".

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The criterion group of the per-packet budget bench.
pub const GROUP: &str = "packet_budget";
/// The design's budget per recorded packet on one core (10 GbE of G.711), ns.
pub const RECORDED_GOAL_NS: f64 = 190.0;
/// The budget per packet without recording, ns.
pub const UNRECORDED_GOAL_NS: f64 = 100.0;
/// Directory levels searched below the group (group/function/parameter/new is 3).
const MAX_DEPTH: usize = 6;
/// Directory entries looked at, at most: a stray huge tree does not stall the report.
const MAX_ENTRIES: usize = 10_000;

/// Errors reading one benchmark's files.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A file is not the JSON criterion writes.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One stage of the budget bench.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetFigure {
    /// Criterion's id, e.g. `packet_budget/recorded/full`.
    pub id: String,
    /// Time per packet (criterion's slope estimate, or its mean without one, over the
    /// elements of one iteration), ns.
    pub ns_per_packet: f64,
    /// Lower bound of its 95 % confidence interval, ns.
    pub lower_ns: f64,
    /// Upper bound, ns.
    pub upper_ns: f64,
    /// When criterion wrote the estimates (Unix seconds), so a stale file shows.
    pub written_unix_s: Option<u64>,
}

impl BudgetFigure {
    /// The design's budget for this stage: the `full` stages of `recorded` and
    /// `unrecorded` packets have one, the partial stages none.
    pub fn goal_ns(&self) -> Option<f64> {
        let parts: Vec<&str> = self.id.split('/').collect();
        if !parts.contains(&"full") {
            return None;
        }
        if parts.contains(&"unrecorded") {
            Some(UNRECORDED_GOAL_NS)
        } else if parts.contains(&"recorded") {
            Some(RECORDED_GOAL_NS)
        } else {
            None
        }
    }
}

#[derive(Deserialize)]
struct Benchmark {
    full_id: String,
    /// `{"Elements": n}`, `{"Bytes": n}`, … or null.
    #[serde(default)]
    throughput: serde_json::Value,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    #[serde(default)]
    slope: Option<Estimate>,
}

/// One benchmark from criterion's `benchmark.json` and `estimates.json` contents. A
/// benchmark without an element count per iteration has no per-packet figure (`None`).
pub fn parse(
    benchmark: &[u8],
    estimates: &[u8],
    path: &str,
) -> Result<Option<BudgetFigure>, BudgetError> {
    let format = |e: serde_json::Error| BudgetError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let b: Benchmark = serde_json::from_slice(benchmark).map_err(format)?;
    let e: Estimates = serde_json::from_slice(estimates).map_err(format)?;
    let Some(n) = b
        .throughput
        .get("Elements")
        .and_then(|n| n.as_u64())
        .filter(|n| *n > 0)
    else {
        return Ok(None);
    };
    let est = e.slope.unwrap_or(e.mean);
    let per = |v: f64| v / n as f64;
    if !(est.point_estimate.is_finite() && est.point_estimate > 0.0) {
        return Err(BudgetError::Format {
            path: path.to_owned(),
            reason: format!("estimate {} is not a time", est.point_estimate),
        });
    }
    Ok(Some(BudgetFigure {
        id: b.full_id,
        ns_per_packet: per(est.point_estimate),
        lower_ns: per(est.confidence_interval.lower_bound),
        upper_ns: per(est.confidence_interval.upper_bound),
        written_unix_s: None,
    }))
}

/// Every benchmark of [`GROUP`] under criterion's output folder `criterion_dir`
/// (`target/criterion`), sorted by id; empty when the bench never ran.
pub fn read(criterion_dir: &Path) -> Result<Vec<BudgetFigure>, BudgetError> {
    let mut out = Vec::new();
    let mut seen = 0;
    walk(&criterion_dir.join(GROUP), 0, &mut seen, &mut out)?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut usize,
    out: &mut Vec<BudgetFigure>,
) -> Result<(), BudgetError> {
    let io = |source: io::Error| BudgetError::Io {
        path: dir.display().to_string(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        *seen += 1;
        if *seen > MAX_ENTRIES {
            return Ok(());
        }
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == "new" {
            let est_path = path.join("estimates.json");
            let read = |p: &Path| {
                fs::read(p).map_err(|source| BudgetError::Io {
                    path: p.display().to_string(),
                    source,
                })
            };
            let (Ok(b), Ok(e)) = (read(&path.join("benchmark.json")), read(&est_path)) else {
                continue; // an interrupted run: no estimates yet
            };
            if let Some(mut f) = parse(&b, &e, &est_path.display().to_string())? {
                f.written_unix_s = fs::metadata(&est_path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                out.push(f);
            }
        } else if depth < MAX_DEPTH {
            walk(&path, depth + 1, seen, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn benchmark(id: &str, elements: u64) -> String {
        format!(
            r#"{{"group_id":"packet_budget","function_id":"x","value_str":null,
                "throughput":{{"Elements":{elements}}},"full_id":"{id}",
                "directory_name":"packet_budget/x","title":"{id}"}}"#
        )
    }

    fn estimates(mean: f64, slope: Option<f64>) -> String {
        let est = |v: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{},
                    "upper_bound":{}}},"point_estimate":{v},"standard_error":1.0}}"#,
                v * 0.9,
                v * 1.1
            )
        };
        format!(
            r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":{},"std_dev":{}}}"#,
            est(mean),
            est(mean),
            est(1.0),
            slope.map(est).unwrap_or_else(|| "null".into()),
            est(1.0)
        )
    }

    #[test]
    fn per_packet_from_an_iteration_of_a_batch() {
        // A batch of 64 packets in 9 600 ns: 150 ns per packet; the slope wins over the mean.
        let f = parse(
            benchmark("packet_budget/recorded/full", 64).as_bytes(),
            estimates(10_000.0, Some(9_600.0)).as_bytes(),
            "p",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.id, "packet_budget/recorded/full");
        assert!((f.ns_per_packet - 150.0).abs() < 1e-9);
        assert!((f.lower_ns - 135.0).abs() < 1e-9 && (f.upper_ns - 165.0).abs() < 1e-9);
        assert_eq!(f.goal_ns(), Some(RECORDED_GOAL_NS));
        let f = parse(
            benchmark("packet_budget/unrecorded/full/10000", 64).as_bytes(),
            estimates(6_400.0, None).as_bytes(),
            "p",
        )
        .unwrap()
        .unwrap();
        assert!((f.ns_per_packet - 100.0).abs() < 1e-9);
        assert_eq!(f.goal_ns(), Some(UNRECORDED_GOAL_NS));
        let stage = BudgetFigure {
            id: "packet_budget/recorded/parse".into(),
            ..f
        };
        assert_eq!(stage.goal_ns(), None);
    }

    #[test]
    fn bad_files_are_errors_or_skipped() {
        let no_elements = r#"{"full_id":"packet_budget/x","throughput":{"Bytes":10}}"#;
        assert_eq!(
            parse(no_elements.as_bytes(), estimates(1.0, None).as_bytes(), "p").unwrap(),
            None
        );
        assert!(parse(b"{", estimates(1.0, None).as_bytes(), "p").is_err());
        let b = benchmark("packet_budget/recorded/full", 64);
        assert!(parse(b.as_bytes(), b"[]", "p").is_err());
        assert!(parse(b.as_bytes(), estimates(-1.0, None).as_bytes(), "p").is_err());
    }

    #[test]
    fn reads_a_criterion_tree() {
        let dir = std::env::temp_dir().join(format!("bench-budget-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(read(&dir).unwrap(), Vec::new(), "never ran: nothing");
        for (sub, id, ns) in [
            ("recorded/full", "packet_budget/recorded/full", 12_800.0),
            ("unrecorded/full", "packet_budget/unrecorded/full", 5_120.0),
        ] {
            let new = dir.join(GROUP).join(sub).join("new");
            fs::create_dir_all(&new).unwrap();
            fs::write(new.join("benchmark.json"), benchmark(id, 64)).unwrap();
            fs::write(new.join("estimates.json"), estimates(ns, None)).unwrap();
        }
        // An interrupted run: a `new` without estimates.
        fs::create_dir_all(dir.join(GROUP).join("recorded/parse/new")).unwrap();
        let got = read(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "packet_budget/recorded/full");
        assert!((got[0].ns_per_packet - 200.0).abs() < 1e-9);
        assert!((got[1].ns_per_packet - 80.0).abs() < 1e-9);
        assert!(got[0].written_unix_s.is_some());
        let _ = fs::remove_dir_all(&dir);
    }
}
