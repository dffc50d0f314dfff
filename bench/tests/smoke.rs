//! The bench at small scale against the real `recorder` (udp backend) in the netns topology:
//! 50 recorded calls for a few seconds, then the report. Checks that every output is
//! produced and that the figures are sane. Needs root (network namespaces), as CI runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::report::{RunReport, TargetKind};

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_bench"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

fn netns(action: &str, prefix: &str) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/netns.sh");
    Command::new("bash")
        .args([script, action, "2"])
        .env("LC_NETNS_PREFIX", prefix)
        .output()
        .expect("run netns.sh")
}

/// The topology and the relay; both removed on drop, also when the test fails.
struct Fixture {
    prefix: String,
    relay: Option<Child>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut c) = self.relay.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        netns("down", &self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run bench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn small_run_against_the_udp_backend_produces_sane_outputs() {
    let prefix = format!("ls{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("linecord-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fx = Fixture {
        prefix: prefix.clone(),
        relay: None,
        dir: dir.clone(),
    };
    let up = netns("up", &prefix);
    assert!(
        up.status.success(),
        "netns.sh up failed (this test needs root, as CI runs): {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let recorder = bin_dir().join("recorder");
    assert!(
        recorder.exists(),
        "{} missing: build the workspace first (cargo build --workspace)",
        recorder.display()
    );
    let spool = dir.join("spool");
    let ng = "127.0.0.1:22299";
    let relay = Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-rec")])
        .arg(&recorder)
        .args(["--interface", "198.18.0.1", "--listen-ng", ng])
        .args([
            "--port-min",
            "30000",
            "--port-max",
            "30999",
            "--backend",
            "udp",
        ])
        .args(["--log-level", "warn", "--recording-dir"])
        .arg(dir.join("recordings"))
        .arg("--spool-dir")
        .arg(&spool)
        .stdin(Stdio::null())
        .spawn()
        .expect("start recorder");
    let pid = relay.id();
    fx.relay = Some(relay);
    std::thread::sleep(Duration::from_millis(500));

    let results = dir.join("results");
    let common = |name: &str| -> Vec<String> {
        [
            "--name",
            name,
            "--calls",
            "50",
            "--a-netns",
            &format!("{prefix}-a"),
            "--a-ip",
            "198.18.0.10",
            "--b-netns",
            &format!("{prefix}-b"),
            "--b-ip",
            "198.18.0.20",
            "--standard-seconds",
            "2",
            "--trial-seconds",
            "1",
            "--settle-ms",
            "200",
            "--max-trials",
            "3",
            "--max-rate",
            "20000",
            "--out",
            &results.join(format!("{name}.json")).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let bench = env!("CARGO_BIN_EXE_bench");
    let started = Instant::now();
    let log = run(Command::new(bench).arg("direct").args(common("generator")));
    assert!(log.contains("[generator] realistic load"), "{log}");
    let log = run(Command::new(bench)
        .arg("relay")
        .args(common("linecord-udp"))
        .args(["--ng", ng, "--ng-netns", &format!("{prefix}-rec")])
        .args(["--relay-ip", "198.18.0.1", "--relay-pid", &pid.to_string()])
        .arg("--record")
        .arg(format!("--recorded=spool:{}", spool.display())));
    assert!(log.contains("zero-loss throughput"), "{log}");
    let summary = run(Command::new(bench).arg("report").arg(&results));
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the smoke run is bounded"
    );

    // The files.
    for f in [
        "generator.json",
        "linecord-udp.json",
        "run.json",
        "summary.md",
        "plot.svg",
    ] {
        assert!(
            results.join(f).exists(),
            "{f} missing; report said:\n{summary}"
        );
    }
    let md = std::fs::read_to_string(results.join("summary.md")).unwrap();
    assert!(md.contains("| linecord-udp |"), "{md}");
    let svg = std::fs::read_to_string(results.join("plot.svg")).unwrap();
    assert!(svg.contains("<polyline"), "{svg}");
    let run: RunReport =
        serde_json::from_slice(&std::fs::read(results.join("run.json")).unwrap()).unwrap();

    // The figures.
    let relay = run
        .targets
        .iter()
        .find(|t| t.name == "linecord-udp")
        .unwrap();
    assert_eq!(relay.kind, TargetKind::Relay);
    let st = relay.standard.as_ref().expect("realistic-load phase");
    // 50 calls × 100 packets/s × 2 s.
    assert!(
        (9_000..=10_500).contains(&st.trial.sent),
        "sent {}",
        st.trial.sent
    );
    assert!(st.trial.loss < 0.01, "loss {}", st.trial.loss);
    let lat = st.trial.latency;
    assert!(
        lat.samples > 0 && lat.p50_us > 0.0 && lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us,
        "{lat:?}"
    );
    assert!(lat.p50_us < 1_000_000.0, "{lat:?}");
    assert!(
        st.trial.relay_cpu_ns_per_packet.is_some_and(|c| c > 0.0),
        "relay CPU measured"
    );
    let kib = st.kib_per_call.expect("RSS measured");
    assert!(kib < 1024.0, "{kib} KiB per call");
    // Every packet that came through the relay is in a recording, and nothing more than
    // was sent.
    let rec = st.recorded.expect("recordings counted");
    assert_eq!(rec.recordings, 50);
    assert_eq!(rec.incomplete, 0);
    assert!(
        rec.packets >= st.received_total && rec.packets <= st.sent_total,
        "recorded {} / through {} / sent {}",
        rec.packets,
        st.received_total,
        st.sent_total
    );
    // The search ran and found at least the realistic load.
    assert!(!relay.trials.is_empty());
    assert!(
        relay.zero_loss_pps.is_some_and(|p| p >= 5_000.0),
        "{:?}",
        relay.zero_loss_pps
    );
    let generator = run.targets.iter().find(|t| t.name == "generator").unwrap();
    assert_eq!(generator.kind, TargetKind::Direct);
    assert!(generator.max_received_pps >= 5_000.0);
}

#[test]
fn an_unreachable_relay_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("linecord-bench-nong-{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["relay", "--name", "x", "--calls", "1", "--no-search"])
        .args(["--ng", "127.0.0.1:9", "--relay-ip", "127.0.0.1", "--out"])
        .arg(dir.join("x.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("did not answer offer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!dir.join("x.json").exists());
}
