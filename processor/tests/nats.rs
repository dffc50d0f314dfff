//! The NATS JetStream queue against a real `nats-server -js` started by the test (Debian
//! package `nats-server`; `scripts/setup.sh` installs it) on 127.0.0.1 and a free port,
//! with its store in a temporary directory. The server is killed and its directory
//! removed by a guard, also when the test fails.
//!
//! Producers write to a spool as `recorder` and `sipctl` do; `processor forward` moves the
//! jobs into the stream; the processor consumes them from JetStream (`--nats`). The
//! processor is killed with SIGKILL in the middle and restarted; jobs are delivered a
//! second time: every row exists exactly once, nothing is lost, and a bad job ends in the
//! failed-jobs stream with its reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use linecord_jobs::Spool;
use serde_json::json;

/// 2026-11-25T09:00:00Z.
const T_A: u64 = 1_795_597_200_000;

/// A running `nats-server -js`; killed and its directory removed on drop.
struct NatsServer {
    child: Child,
    dir: TempDir,
    url: String,
}

impl NatsServer {
    fn start() -> NatsServer {
        let Some(bin) = find_program(
            "nats-server",
            &["/usr/sbin/nats-server", "/usr/bin/nats-server"],
        ) else {
            panic!(
                "nats-server not found: install the Debian package `nats-server` \
                 (scripts/setup.sh does)"
            );
        };
        let dir = TempDir::new("nats-server");
        let port = free_port();
        let log = dir.join("nats.log");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("js"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        wait_until(30, "nats-server ready", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"))
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("nats-server log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir.0);
    }
}

/// `processor forward`, running; killed on drop.
struct Forwarder(Child);

impl Forwarder {
    fn start(spool: &Path, url: &str) -> Forwarder {
        let child = Command::new(env!("CARGO_BIN_EXE_processor"))
            .arg("forward")
            .arg("--spool-dir")
            .arg(spool)
            .arg("--nats")
            .arg(url)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start processor forward");
        Forwarder(child)
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(mut self) -> bool {
        let pid = i32::try_from(self.0.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_processor(dir: &TempDir, config: &Path, url: &str) -> Server {
    Server::start_args(
        config,
        &[
            "--nats".as_ref(),
            url.as_ref(),
            "--storage-dir".as_ref(),
            dir.join("store").as_os_str(),
            "--db".as_ref(),
            dir.join("index.sqlite").as_os_str(),
        ],
    )
}

fn index_counts(s: &Server) -> (u64, u64, u64) {
    let st = s.status();
    (
        st["events"].as_u64().unwrap_or(0),
        st["recordings"].as_u64().unwrap_or(0),
        st["interactions"].as_u64().unwrap_or(0),
    )
}

#[test]
fn spool_forward_jetstream_processor_kill_9_no_loss_no_duplicates() {
    let nats = NatsServer::start();
    let dir = TempDir::new("nats");
    let spool_dir: PathBuf = dir.join("spool");
    let spool = Spool::open(&spool_dir).expect("spool");
    let rec_dir = dir.join("recordings");
    let calls = 80u64;
    let mut n = 0u64;
    let mut recorded = Vec::new();
    let mut all_events = Vec::new();
    for c in 0..calls {
        let t0 = T_A + c * 60_000;
        let global = linecord_jobs::uuid_v7(t0, [c as u8, 5, 5, 5, 5, 5, 5, 5, 5, 5]);
        let dn = format!("{}", 1000 + c % 4);
        let events = switch_events(&global, "sw1", &dn, "+4930555", t0, 1000, c as u8);
        for e in &events {
            n += 1;
            push_event(&spool, e, n);
        }
        all_events.extend(events);
        if c % 5 == 0 {
            let f = Fixture {
                recording_id: rid(t0 + 2000, c as u8),
                call_id: global.clone(),
                start_ms: t0 + 2000,
                secs: 1,
                metadata: Some(format!("caller=+4930555;callee={dn};dn={dn}")),
                lose_every: 0,
            };
            let path = write_lcr(&rec_dir, &f);
            n += 1;
            let job = serde_json::to_vec(&recording_job(&f, &path)).expect("json");
            push_raw(&spool_dir, n, &f.recording_id, &job);
            recorded.push(global);
        }
    }
    // One job that can never be applied: it must end in the failed-jobs stream.
    n += 1;
    push_raw(&spool_dir, n, "bad-job", b"{ not json");
    let config = write_config(&dir.0, "nats-ack-wait-secs = 2");

    // The forwarder drains the spool into JetStream.
    let fwd = Forwarder::start(&spool_dir, &nats.url);
    wait_until(60, "the spool forwarded", || {
        json_files(&spool_dir.join("new")).is_empty()
            && json_files(&spool_dir.join("work")).is_empty()
    });
    assert_eq!(json_files(&spool_dir.join("done")).len(), n as usize);

    let s = start_processor(&dir, &config, &nats.url);
    wait_until(120, "some jobs applied", || {
        s.status()["jobs_processed"].as_u64().unwrap_or(0) >= 60
    });
    let at_kill = s.status()["jobs_processed"].as_u64().unwrap_or(0);
    s.kill9();
    eprintln!("killed with {at_kill} of {n} jobs applied");
    // Delivered again (at-least-once, new names so the stream does not deduplicate them).
    for (i, e) in all_events.iter().take(10).enumerate() {
        push_event(&spool, e, 1_000_000 + i as u64);
    }
    let s = start_processor(&dir, &config, &nats.url);
    let want = (calls * 4, recorded.len() as u64, calls);
    wait_until(180, "every job applied after the restart", || {
        let st = s.status();
        index_counts(&s) == want
            && st["queue"]["pending"] == json!(0)
            && st["queue"]["failed"] == json!(1)
            && json_files(&spool_dir.join("new")).is_empty()
    });
    assert!(fwd.terminate(), "forwarder stops cleanly on SIGTERM");
    let list = s.json("/v1/interactions?limit=500", ADMIN);
    assert_eq!(list["total"], json!(calls));
    let with_segments = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["segments"] == json!(1))
        .count();
    assert_eq!(with_segments, recorded.len());
    assert_eq!(
        s.json("/v1/interactions?dn=1001", ADMIN)["total"],
        json!(calls / 4)
    );
    let d = s.json(&format!("/v1/interactions/{}", recorded[2]), ADMIN);
    assert_eq!(d["segments"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["events"].as_array().map(Vec::len), Some(4));
    // The spool's jobs all went to done/ (the forwarder completed them after the ack).
    assert_eq!(json_files(&spool_dir.join("done")).len(), n as usize + 10);
    assert!(json_files(&spool_dir.join("failed")).is_empty());
    assert!(s.terminate(30), "SIGTERM");
}
