//! Helpers of the processor's integration tests: temporary directories, fixture recordings
//! (`.lcr` files written with `linecord_recfile`'s encoders) and jobs, the real `processor`
//! binary under test, and a small HTTP client. Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use linecord_jobs::{
    CallContext, EventJob, EventKind, EventParties, EventRecording, Job, Party, RecordingInitiator,
    Spool,
};
use linecord_recfile::block::{seal, BlockBuilder};
use linecord_recfile::format::{encode_footer, encode_header};
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    g711, CodecInfo, Completeness, Component, Event, EventRecord, FileHeader, PartyInfo, RtpFields,
    StreamInfo,
};
use serde_json::{json, Value};

/// A fresh directory, removed on drop unless the test failed.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "linecord-processor-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Waits until `f` is true, polling every 50 ms, at most `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// What one fixture recording holds.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Recording id (file stem).
    pub recording_id: String,
    /// NG call-id.
    pub call_id: String,
    /// Start, Unix ms.
    pub start_ms: u64,
    /// Seconds of audio.
    pub secs: u64,
    /// NG metadata.
    pub metadata: Option<String>,
    /// Every n-th packet of the caller is lost in transit (0: none).
    pub lose_every: u64,
}

/// 20 ms of PCMU: a 440 Hz tone when `talk`, else digital silence.
fn pcmu_frame(talk: bool, packet: u64) -> Vec<u8> {
    (0..160u64)
        .map(|i| {
            let s = if talk {
                let t = (packet * 160 + i) as f64 / 8000.0;
                (8000.0 * (t * 440.0 * 2.0 * std::f64::consts::PI).sin()) as i16
            } else {
                0
            };
            g711::linear_to_ulaw(s)
        })
        .collect()
}

fn stream(id: u16, party: u8) -> StreamInfo {
    StreamInfo {
        id,
        party,
        media_index: 0,
        component: Component::Rtp,
        source: format!("192.0.2.{}:4000", 10 + party),
        destination: format!("198.18.0.1:{}", 30000 + u32::from(id)),
        codecs: vec![CodecInfo {
            payload_type: 0,
            name: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
        }],
    }
}

/// Builds the `.lcr` bytes of a finished recording: the caller talks during the first
/// half, the callee during the second half and both during the middle fifth (overtalk).
pub fn build_lcr(f: &Fixture) -> Vec<u8> {
    let header = FileHeader {
        recording_id: f.recording_id.clone(),
        call_id: f.call_id.clone(),
        start_unix_ms: f.start_ms,
        metadata: f.metadata.clone(),
        parties: vec![
            PartyInfo {
                tag: "caller-tag".into(),
                label: Some("caller".into()),
                sdp: b"v=0\r\n".to_vec(),
            },
            PartyInfo {
                tag: "callee-tag".into(),
                label: None,
                sdp: b"v=0\r\n".to_vec(),
            },
        ],
        streams: vec![stream(0, 0), stream(2, 1)],
    };
    let mut file = Vec::new();
    encode_header(&header, &mut file);
    let mut b = BlockBuilder::with_capacity(16 * 1024);
    b.push_event(&EventRecord {
        at_us: 0,
        event: Event::Started,
    });
    let packets = f.secs * 50;
    for i in 0..packets {
        let half = packets / 2;
        let mid = (packets * 2 / 5)..(packets * 3 / 5);
        for (sid, talk) in [
            (0u16, i < half || mid.contains(&i)),
            (2u16, i >= half || mid.contains(&i)),
        ] {
            if sid == 0 && f.lose_every > 0 && i % f.lose_every == f.lose_every - 1 {
                continue;
            }
            let rtp = RtpFields {
                marker: i == 0,
                payload_type: 0,
                sequence: i as u16,
                timestamp: (i * 160) as u32,
                ssrc: 1000 + u32::from(sid),
            };
            b.push_packet(sid, i * 20_000, Some(&rtp), &pcmu_frame(talk, i));
            if b.len() > 8 * 1024 {
                seal(&b, &mut file);
                b.clear();
            }
        }
    }
    if !b.is_empty() {
        seal(&b, &mut file);
    }
    let rec = Recording::from_bytes(file.clone()).expect("fixture opens");
    let mut footer = recovery_footer(&rec, f.start_ms + f.secs * 1000);
    footer.completeness = Completeness::Complete;
    encode_footer(&footer, &mut file);
    file
}

/// Writes the fixture's `.lcr` under `dir` and returns its path.
pub fn write_lcr(dir: &Path, f: &Fixture) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let p = dir.join(format!("{}.lcr", f.recording_id));
    std::fs::write(&p, build_lcr(f)).expect("write lcr");
    p
}

/// The recording job for a fixture stored at `file`, as JSON.
pub fn recording_job(f: &Fixture, file: &Path) -> Value {
    let end = f.start_ms + f.secs * 1000;
    json!({
        "schema": "linecord.recording.v1",
        "type": "recording",
        "recording_id": f.recording_id,
        "file": file.to_string_lossy(),
        "call_id": f.call_id,
        "parties": [ {"index": 0, "tag": "caller-tag", "label": "caller"},
                     {"index": 1, "tag": "callee-tag", "label": null} ],
        "metadata": f.metadata,
        "start": linecord_jobs::rfc3339(f.start_ms), "start_unix_ms": f.start_ms,
        "end": linecord_jobs::rfc3339(end), "end_unix_ms": end,
        "duration_ms": end - f.start_ms,
        "status": "complete",
        "complete": true,
        "packets_lost": 0,
        "streams": [],
        "error": null,
        "recorder": { "version": "test" }
    })
}

/// A recording id (UUIDv7 text) from a number.
pub fn rid(ms: u64, n: u8) -> String {
    linecord_jobs::uuid_v7(ms, [n; 10])
}

/// The events one switch reports for a call: created, answered, recording_started,
/// released, `step_ms` apart from `t0`.
pub fn switch_events(
    global: &str,
    switch: &str,
    dn: &str,
    caller: &str,
    t0: u64,
    step_ms: u64,
    id_seed: u8,
) -> Vec<EventJob> {
    let mut ctx = CallContext {
        global_call_id: global.into(),
        switch: switch.into(),
        switch_call_id: format!("{switch}-{id_seed}"),
        a_leg_call_id: format!("a-{id_seed}@{switch}"),
        b_leg_call_id: None,
        parties: EventParties {
            caller: Party {
                number: Some(caller.into()),
                uri: format!("sip:{caller}@gw.example.com"),
                display_name: None,
            },
            callee: Party {
                number: Some(dn.into()),
                uri: format!("sip:{dn}@pbx.example.com"),
                display_name: Some("Agent Smith".into()),
            },
            agent_dn: Some(dn.into()),
            agent_side: None,
        },
        recording: None,
        version: "test".into(),
        next_seq: 0,
    };
    let kinds = [
        EventKind::Created,
        EventKind::Answered,
        EventKind::RecordingStarted,
        EventKind::Released,
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if *k == EventKind::RecordingStarted {
                ctx.recording = Some(EventRecording {
                    ng_call_id: global.into(),
                    recording_id: None,
                    recorder: Some("127.0.0.1:2223".into()),
                    initiator: Some(RecordingInitiator::Dn),
                });
            }
            let t = t0 + i as u64 * step_ms;
            let mut e = ctx.event(
                *k,
                linecord_jobs::uuid_v7(t, [id_seed, i as u8, 1, 2, 3, 4, 5, 6, 7, 8]),
                t,
            );
            if *k == EventKind::Released {
                e.status_code = Some(200);
                e.reason = Some("BYE from callee".into());
            }
            e
        })
        .collect()
}

/// Pushes a job (any JSON) into the spool's `new/` as `<n>-<name>.json`.
pub fn push_raw(spool: &Path, n: u64, name: &str, bytes: &[u8]) {
    let new = spool.join("new");
    std::fs::create_dir_all(&new).expect("new/");
    let tmp = spool.join(format!("{n}-{name}.json.tmp"));
    std::fs::write(&tmp, bytes).expect("write job");
    std::fs::rename(&tmp, new.join(format!("{n}-{name}.json"))).expect("rename job");
}

/// Pushes an event job.
pub fn push_event(spool: &Spool, e: &EventJob, n: u64) {
    spool.push(&Job::Event(e.clone()), n).expect("push event");
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for a test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The first of `candidates` that exists, else the program found on `PATH` as `name`.
pub fn find_program(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file())
}

/// Names of the files in `dir` ending with `.json`.
pub fn json_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `processor` binary, running.
pub struct Server {
    child: Child,
    /// Its HTTP base URL.
    pub base: String,
    /// Its log lines so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The tokens every test config has.
pub const ADMIN: &str = "test-admin";
/// Supervisor token.
pub const SUPERVISOR: &str = "test-supervisor";
/// Agent token for DN 1001.
pub const AGENT_1001: &str = "test-agent-1001";
/// Agent token for DN 3003.
pub const AGENT_3003: &str = "test-agent-3003";

/// Writes a config file with the test tokens and `extra` TOML lines.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("processor.toml");
    let text = format!(
        "poll-interval-ms = 20\n{extra}\n\
         [[token]]\nname = \"root\"\ntoken = \"{ADMIN}\"\nrole = \"admin\"\n\
         [[token]]\nname = \"boss\"\ntoken = \"{SUPERVISOR}\"\nrole = \"supervisor\"\n\
         [[token]]\nname = \"alice\"\ntoken = \"{AGENT_1001}\"\nrole = \"agent\"\ndns = [\"1001\"]\n\
         [[token]]\nname = \"carol\"\ntoken = \"{AGENT_3003}\"\nrole = \"agent\"\ndns = [\"3003\"]\n"
    );
    std::fs::write(&p, text).expect("config");
    p
}

impl Server {
    /// Starts the binary on `dir`'s `spool/`, `store/` and `index.sqlite` with `config`,
    /// and waits (at most 60 s) for its "listening on ADDR" line.
    pub fn start(dir: &Path, config: &Path) -> Server {
        Server::start_args(
            config,
            &[
                "--spool-dir".as_ref(),
                dir.join("spool").as_os_str(),
                "--storage-dir".as_ref(),
                dir.join("store").as_os_str(),
                "--db".as_ref(),
                dir.join("index.sqlite").as_os_str(),
            ],
        )
    }

    /// Starts the binary with `config`, `--listen 127.0.0.1:0` and `args` (the backends),
    /// and waits (at most 60 s) for its "listening on ADDR" line.
    pub fn start_args(config: &Path, args: &[&std::ffi::OsStr]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_processor"))
            .arg("--config")
            .arg(config)
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start processor");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = log2.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "processor did not report its address; log:\n{}",
                    log.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far, KiB (`VmHWM` in `/proc/PID/status`).
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status (Linux)");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// GET `path` and count the body's bytes without keeping them (for large bodies):
    /// status, headers, body length.
    pub fn get_len(
        &self,
        path: &str,
        token: &str,
        range: Option<&str>,
    ) -> (u16, Vec<(String, String)>, u64) {
        let mut req = ureq::get(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(600))
            .set("Authorization", &format!("Bearer {token}"));
        if let Some(r) = range {
            req = req.set("Range", r);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("HTTP request failed: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| Some((n.to_ascii_lowercase(), resp.header(&n)?.to_owned())))
            .collect();
        let n = std::io::copy(&mut resp.into_reader(), &mut std::io::sink()).expect("body");
        (status, headers, n)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Kills it with SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most `secs`) for it to exit; returns whether it exited
    /// successfully.
    pub fn terminate(mut self, secs: u64) -> bool {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// GET `path` with `token` (and a `Range` header if given): status, headers, body.
    pub fn get(&self, path: &str, token: Option<&str>, range: Option<&str>) -> Reply {
        let mut req = ureq::get(&format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(r) = range {
            req = req.set("Range", r);
        }
        Reply::from(req.call())
    }

    /// GET and parse JSON, expecting 200.
    pub fn json(&self, path: &str, token: &str) -> Value {
        let r = self.get(path, Some(token), None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        serde_json::from_slice(&r.body).expect("json")
    }

    /// A request with another method and an optional JSON body.
    pub fn send(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
        let req = ureq::request(method, &format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .set("Authorization", &format!("Bearer {token}"));
        Reply::from(match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        })
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Value {
        self.json("/v1/status", ADMIN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("processor log:\n{}", self.log_text());
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    fn from(r: Result<ureq::Response, ureq::Error>) -> Reply {
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("HTTP request failed: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| {
                let v = resp.header(&n)?.to_owned();
                Some((n.to_ascii_lowercase(), v))
            })
            .collect();
        let mut body = Vec::new();
        resp.into_reader()
            .take(1 << 30)
            .read_to_end(&mut body)
            .expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}
