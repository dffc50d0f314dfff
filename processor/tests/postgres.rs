//! The PostgreSQL index against a real server started by the test: Debian's PostgreSQL
//! (`/usr/lib/postgresql/<version>/bin`, package `postgresql`; `scripts/setup.sh` installs
//! it) in a throwaway cluster under `/tmp`, listening on 127.0.0.1 and a free port. The
//! cluster is stopped and removed by a guard, also when the test fails.
//!
//! 1. The real `processor` binary with `--db postgres://…`: jobs in a spool, SIGKILL in the
//!    middle, restart, jobs delivered twice — every row exactly once, search filters work.
//! 2. [`PostgresRepository`] directly: filters, sorts, agent limits, legal hold, retention,
//!    audit, delete and migrations on a second database.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use linecord_jobs::Spool;
use processor::model::{AuditEntry, RecordingRow, SearchQuery, Sort};
use processor::repo::{Repository, MIGRATIONS};
use processor::repo_pg::PostgresRepository;
use serde_json::json;

/// 2026-11-25T09:00:00Z.
const T_A: u64 = 1_795_597_200_000;

/// The directory holding `initdb` and `pg_ctl`, newest version first.
fn pg_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((v, bin))
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/<version>/bin/initdb): \
             install the Debian package `postgresql` (scripts/setup.sh does)"
        ),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the `postgres` user when we are root (initdb refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run_bounded(mut c: Command, what: &str, secs: u64) {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: did not finish within {secs} s");
            }
        }
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway PostgreSQL cluster; stopped and removed on drop.
struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PgServer {
    fn start() -> PgServer {
        let bin = pg_bin_dir();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/linecord-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        let port = free_port();
        // The guard exists from here on: whatever fails below, the cluster is cleaned up.
        let pg = PgServer { bin, dir, port };
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(&pg.dir);
            run_bounded(c, "chown", 30);
        }
        let mut c = pg_command(&pg.bin, "initdb");
        c.arg("-D").arg(pg.dir.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_bounded(c, "initdb", 120);
        let mut c = pg_command(&pg.bin, "pg_ctl");
        c.arg("-D")
            .arg(pg.dir.join("data"))
            .arg("-l")
            .arg(pg.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg.dir.display(),
                pg.port
            ))
            .args(["-w", "-t", "60", "start"]);
        run_bounded(c, "pg_ctl start", 90);
        pg
    }

    fn createdb(&self, name: &str) -> String {
        let mut c = Command::new(self.bin.join("createdb"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]);
        run_bounded(c, "createdb", 60);
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("postgresql log:\n{}", self.log());
        }
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = c.spawn() {
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_processor(dir: &TempDir, config: &Path, url: &str) -> Server {
    Server::start_args(
        config,
        &[
            "--spool-dir".as_ref(),
            dir.join("spool").as_os_str(),
            "--storage-dir".as_ref(),
            dir.join("store").as_os_str(),
            "--db".as_ref(),
            url.as_ref(),
        ],
    )
}

fn processor_on_postgres_survives_kill_9(pg: &PgServer) {
    let url = pg.createdb("linecord");
    let dir = TempDir::new("pg");
    let spool_dir = dir.join("spool");
    let spool = Spool::open(&spool_dir).expect("spool");
    let rec_dir = dir.join("recordings");
    let calls = 60u64;
    let mut n = 0u64;
    let mut recorded = Vec::new();
    let mut all_events = Vec::new();
    for c in 0..calls {
        let t0 = T_A + c * 60_000;
        let global = linecord_jobs::uuid_v7(t0, [c as u8, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
        let dn = format!("{}", 1000 + c % 5);
        let caller = if c % 2 == 0 { "+4930555" } else { "+4969777" };
        let events = switch_events(&global, "sw1", &dn, caller, t0, 1000, c as u8);
        for e in &events {
            n += 1;
            push_event(&spool, e, n);
        }
        all_events.extend(events);
        if c % 4 == 0 {
            let f = Fixture {
                recording_id: rid(t0 + 2000, c as u8),
                call_id: global.clone(),
                start_ms: t0 + 2000,
                secs: 1,
                metadata: Some(format!("caller={caller};callee={dn};dn={dn}")),
                lose_every: 0,
            };
            let path = write_lcr(&rec_dir, &f);
            n += 1;
            let job = serde_json::to_vec(&recording_job(&f, &path)).expect("json");
            push_raw(&spool_dir, n, &f.recording_id, &job);
            recorded.push((global, f));
        }
    }
    let total = n as usize;
    let config = write_config(&dir.0, "");
    let done_dir = spool_dir.join("done");

    let s = start_processor(&dir, &config, &url);
    wait_until(120, "some jobs done", || json_files(&done_dir).len() >= 30);
    s.kill9();
    eprintln!(
        "killed with {} of {total} jobs done",
        json_files(&done_dir).len()
    );
    // Delivered again (at-least-once): must not duplicate anything.
    for (i, e) in all_events.iter().take(10).enumerate() {
        push_event(&spool, e, 1_000_000 + i as u64);
    }
    let s = start_processor(&dir, &config, &url);
    wait_until(180, "every job done after the restart", || {
        json_files(&done_dir).len() == total + 10
            && json_files(&spool_dir.join("new")).is_empty()
            && json_files(&spool_dir.join("work")).is_empty()
    });
    assert!(
        json_files(&spool_dir.join("failed")).is_empty(),
        "{}",
        s.log_text()
    );
    let st = s.status();
    assert_eq!(st["events"], json!(calls * 4), "{st}");
    assert_eq!(st["recordings"], json!(recorded.len()));
    assert_eq!(st["interactions"], json!(calls));
    let list = s.json("/v1/interactions?limit=500", ADMIN);
    assert_eq!(list["total"], json!(calls));
    // Filters go through PostgreSQL's SQL.
    let count =
        |q: &str, token: &str| s.json(&format!("/v1/interactions?{q}"), token)["total"].clone();
    assert_eq!(count("dn=1001", ADMIN), json!(calls / 5));
    assert_eq!(count("caller=4969", ADMIN), json!(calls / 2));
    assert_eq!(count("dn=1001&caller=4969", ADMIN), json!(6));
    assert_eq!(count("q=SMITH&limit=1", ADMIN), json!(calls));
    assert_eq!(count("q=100%25", ADMIN), json!(0));
    assert_eq!(
        count(
            &format!(
                "from={}&to={}",
                linecord_jobs::rfc3339(T_A + 10 * 60_000),
                linecord_jobs::rfc3339(T_A + 19 * 60_000)
            ),
            ADMIN
        ),
        json!(10)
    );
    assert_eq!(
        count("limit=5", AGENT_1001),
        json!(calls / 5),
        "agent limit"
    );
    let sorted = s.json("/v1/interactions?sort=start&limit=2", ADMIN);
    assert_eq!(
        sorted["items"][0]["id"],
        json!(linecord_jobs::uuid_v7(T_A, [0, 7, 7, 7, 7, 7, 7, 7, 7, 7]))
    );
    let (global, f) = &recorded[1];
    let d = s.json(&format!("/v1/interactions/{global}"), ADMIN);
    assert_eq!(d["segments"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["events"].as_array().map(Vec::len), Some(4));
    // Audio with Range (the audit row is written to PostgreSQL first).
    let r = s.get(
        &format!("/v1/recordings/{}/original.lcr", f.recording_id),
        Some(ADMIN),
        Some("bytes=0-3"),
    );
    assert_eq!(r.status, 206, "{}", r.text());
    let file = std::fs::read(rec_dir.join(format!("{}.lcr", f.recording_id))).expect("lcr");
    assert_eq!(r.body, file[..4]);
    let audit = s.json("/v1/audit", ADMIN);
    assert_eq!(audit["total"], json!(1), "{audit}");
    let hold = s.send(
        "POST",
        &format!("/v1/recordings/{}/legal-hold", f.recording_id),
        ADMIN,
        Some(json!({"hold": true})),
    );
    assert_eq!(hold.status, 200, "{}", hold.text());
    let del = s.send(
        "DELETE",
        &format!("/v1/recordings/{}", f.recording_id),
        ADMIN,
        None,
    );
    assert_eq!(del.status, 409, "held: {}", del.text());
    assert!(s.terminate(30), "SIGTERM");
}

fn rec(id: &str, call: &str, start: u64, end: u64, mos: f64) -> RecordingRow {
    let mut r = RecordingRow {
        recording_id: id.into(),
        call_id: call.into(),
        start_ms: start,
        end_ms: end,
        duration_ms: end - start,
        status: "complete".into(),
        caller: Some("+4930111".into()),
        callee: Some("1001".into()),
        dn: Some("1001".into()),
        metadata: Some("caller=+4930111;callee=1001;dn=1001".into()),
        storage_key: Some(format!("2026/01/01/{id}.lcr")),
        size_bytes: 10,
        ..RecordingRow::default()
    };
    r.analysis.mos = Some(mos);
    r.analysis.packet_loss = [Some(0.0), Some(0.01)];
    r
}

fn repository_directly(pg: &PgServer) {
    let url = pg.createdb("linecord_repo");
    let r = PostgresRepository::open(&url).expect("open");
    assert_eq!(r.migrate().expect("again"), MIGRATIONS.len() as i64);
    // A second instance on the same database (another processor) sees the same schema.
    let r2 = PostgresRepository::open(&url).expect("second");
    r.ingest_recording(&rec("r1", "c1", 1000, 2000, 4.0))
        .expect("ingest");
    let mut other = rec("r2", "c2", 100_000, 160_000, 2.5);
    other.dn = Some("3003".into());
    other.callee = Some("3003".into());
    other.caller = Some("+4969000".into());
    other.metadata = Some("caller=+4969000;callee=3003;dn=3003;queue=support".into());
    r2.ingest_recording(&other).expect("ingest");
    r2.ingest_recording(&other).expect("twice");
    let ids = |q: &dyn Fn(&mut SearchQuery), limit: Option<&[String]>| {
        let mut s = SearchQuery {
            limit: 50,
            ..SearchQuery::default()
        };
        q(&mut s);
        r.search(&s, limit)
            .expect("search")
            .items
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&|_| {}, None), ["c2", "c1"]);
    assert_eq!(ids(&|s| s.sort = Sort::StartAsc, None), ["c1", "c2"]);
    assert_eq!(ids(&|s| s.sort = Sort::MosAsc, None), ["c2", "c1"]);
    assert_eq!(ids(&|s| s.sort = Sort::DurationDesc, None), ["c2", "c1"]);
    assert_eq!(ids(&|s| s.dn = Some("3003".into()), None), ["c2"]);
    assert_eq!(ids(&|s| s.caller = Some("4969".into()), None), ["c2"]);
    assert_eq!(ids(&|s| s.q = Some("SUPPORT".into()), None), ["c2"]);
    assert_eq!(
        ids(&|s| s.q = Some("100%".into()), None),
        Vec::<String>::new()
    );
    assert_eq!(ids(&|s| s.min_mos = Some(3.0), None), ["c1"]);
    assert_eq!(ids(&|s| s.max_duration_ms = Some(5000), None), ["c1"]);
    assert_eq!(ids(&|_| {}, Some(&["3003".to_string()])), ["c2"]);
    assert_eq!(ids(&|_| {}, Some(&[])), Vec::<String>::new());
    let (row, dns) = r.recording("r2").expect("q").expect("row");
    assert_eq!(row, {
        let mut o = other.clone();
        o.interaction_id = "c2".into();
        o
    });
    assert_eq!(dns, ["3003"]);
    assert!(
        r.set_legal_hold("r1", true)
            .expect("hold")
            .expect("row")
            .legal_hold
    );
    assert!(
        r.interaction("c1")
            .expect("q")
            .expect("i")
            .interaction
            .legal_hold
    );
    let expired: Vec<String> = r
        .expired(1_000_000, 10)
        .expect("expired")
        .into_iter()
        .map(|x| x.recording_id)
        .collect();
    assert_eq!(expired, ["r2"]);
    assert!(r.delete_recording("r2").expect("delete").is_some());
    assert!(r.delete_recording("r2").expect("delete").is_none());
    assert!(r.interaction("c2").expect("q").is_none());
    for i in 0..3 {
        r2.append_audit(&AuditEntry {
            time_ms: i,
            token_name: "t".into(),
            role: "admin".into(),
            action: "delete".into(),
            recording_id: format!("r{i}"),
            interaction_id: None,
        })
        .expect("audit");
    }
    let (total, items) = r.audit(2, 0).expect("audit");
    assert_eq!(total, 3);
    assert_eq!(items[0].recording_id, "r2");
    let counts = r.counts().expect("counts");
    assert_eq!((counts.recordings, counts.interactions), (1, 1));
    assert_eq!(counts.audit_entries, 3);
}

#[test]
fn postgres_index_end_to_end_and_repository() {
    let pg = PgServer::start();
    repository_directly(&pg);
    processor_on_postgres_survives_kill_9(&pg);
}
