//! End-to-end harness: the netns topology of `scripts/netns.sh`, the real `recorder` and
//! `sipctl` binaries in the recorder's namespace, and `sipp` as caller (party A) and callee
//! (party B), playing known audio from pcap files. Everything started is stopped on drop,
//! also when a test fails; every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use linecord_ng::{message, Value};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Caller's tone (party A), Hz.
pub const TONE_A: f64 = 440.0;
/// Callee's tone (party B), Hz.
pub const TONE_B: f64 = 1000.0;
/// A third party's tone (transfer and no-answer targets), Hz.
pub const TONE_C: f64 = 1500.0;
/// The API token of the test configuration.
pub const TOKEN: &str = "test-token";

pub const ADDR_A: &str = "198.18.0.10";
pub const ADDR_B: &str = "198.18.0.20";
pub const ADDR_REC: &str = "198.18.0.1";

fn bin(name: &str) -> PathBuf {
    // Integration tests live in target/debug/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} missing: build the workspace first",
        p.display()
    );
    p
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with an open namespace file.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .expect("netns thread")
}

/// The topology, the recorder and sipctl of one test.
/// The recorder's kernel-UDP backend.
pub const UDP: &[&str] = &["--backend", "udp"];
/// The recorder's AF_XDP backend on the recorder's veth (`rec0`, see scripts/netns.sh).
pub const XDP: &[&str] = &["--backend", "xdp", "--interface-name", "rec0"];

pub struct Lab {
    pub prefix: String,
    /// The recorder's backend flags (`--backend …`).
    pub backend: &'static [&'static str],
    pub dir: PathBuf,
    pub recorder: Option<Child>,
    pub sipctl: Option<Child>,
    /// Other processes of the lab (a DNS server...), killed with it.
    pub others: Vec<Child>,
    pub ng_port: u16,
    pub api_port: u16,
    pub config: PathBuf,
}

impl Lab {
    /// Brings the topology up and writes the pcaps. `dns` is the `[[dn]]`/`[[route]]` part
    /// of sipctl's configuration; the recorder is started unless `with_recorder` is false.
    pub fn up(extra_config: &str, with_recorder: bool) -> Lab {
        Lab::up_full(UDP, "", "", extra_config, with_recorder)
    }

    /// [`Lab::up`] with the recorder on `backend` ([`UDP`] or [`XDP`]).
    pub fn up_on(backend: &'static [&'static str], extra_config: &str, with_recorder: bool) -> Lab {
        Lab::up_full(backend, "", "", extra_config, with_recorder)
    }

    /// As [`Lab::up`], with `listen_extra` appended to `sip.listen` (e.g. a TLS listener
    /// table, starting with a comma) and `sip_keys` added to `[sip]`.
    pub fn up_with(
        listen_extra: &str,
        sip_keys: &str,
        extra_config: &str,
        with_recorder: bool,
    ) -> Lab {
        Lab::up_full(UDP, listen_extra, sip_keys, extra_config, with_recorder)
    }

    /// The lab with every knob: recorder backend, extra listeners, extra `[sip]` keys.
    pub fn up_full(
        backend: &'static [&'static str],
        listen_extra: &str,
        sip_keys: &str,
        extra_config: &str,
        with_recorder: bool,
    ) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ls{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("linecord-sipctl-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = netns("up", &prefix);
        assert!(
            out.status.success(),
            "netns.sh up failed (these tests need root, as CI runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sipctl::audio::write_pcap(&dir.join("caller.pcap"), &sipctl::audio::tone(TONE_A, 30.0))
            .unwrap();
        sipctl::audio::write_pcap(&dir.join("callee.pcap"), &sipctl::audio::tone(TONE_B, 30.0))
            .unwrap();
        let ng_port = 22300 + (n as u16 % 100);
        let api_port = 18080 + (n as u16 % 100);
        let config = dir.join("sipctl.toml");
        std::fs::write(
            &config,
            format!(
                r#"[sip]
listen = ["udp:{ADDR_REC}:5060", "tcp:{ADDR_REC}:5060"{listen_extra}]
advertise = "{ADDR_REC}"
switch-name = "test-switch"
{sip_keys}
[recorder]
ng = "127.0.0.1:{ng_port}"
timeout-ms = 300
retries = 1
[api]
listen = "127.0.0.1:{api_port}"
token = "{TOKEN}"
[events]
spool-dir = "{spool}"
{extra_config}
"#,
                spool = dir.join("spool").display()
            ),
        )
        .unwrap();
        let mut lab = Lab {
            prefix,
            backend,
            dir,
            recorder: None,
            sipctl: None,
            others: Vec::new(),
            ng_port,
            api_port,
            config,
        };
        if with_recorder {
            lab.start_recorder();
        }
        lab.start_sipctl();
        lab
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    fn start_recorder(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("rec")])
            .arg(bin("recorder"))
            .args(["--interface", ADDR_REC])
            .args(self.backend)
            .arg("--listen-ng")
            .arg(format!("127.0.0.1:{}", self.ng_port))
            .args([
                "--port-min",
                "30000",
                "--port-max",
                "30999",
                "--log-level",
                "warn",
            ])
            .arg("--recording-dir")
            .arg(self.dir.join("recordings"))
            .arg("--spool-dir")
            .arg(self.spool())
            .stdin(Stdio::null())
            .spawn()
            .expect("start recorder");
        self.recorder = Some(child);
        // Ready when it answers ping.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ng(&ping()).is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "the recorder did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_sipctl(&mut self) {
        let log = std::fs::File::create(self.dir.join("sipctl.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("rec")])
            .arg(bin("sipctl"))
            .arg("--config")
            .arg(&self.config)
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sipctl");
        self.sipctl = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.http("GET", "/v1/status", None, Some(TOKEN)).0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sipctl did not start: {}",
                self.sipctl_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops sipctl and starts it again (e.g. once a server it needs at start is up).
    pub fn restart_sipctl(&mut self) {
        if let Some(mut c) = self.sipctl.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.start_sipctl();
    }

    pub fn sipctl_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sipctl.log")).unwrap_or_default()
    }

    /// Stops the recorder (kill -9).
    pub fn kill_recorder(&mut self) {
        if let Some(mut c) = self.recorder.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One NG request to the recorder (from its namespace); `None` on timeout.
    pub fn ng(&self, body: &Value) -> Option<Value> {
        let port = self.ng_port;
        let body = body.clone();
        in_netns(&self.ns("rec"), move || {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
            let cookie = format!("t{}", COUNTER.fetch_add(1, Ordering::Relaxed));
            s.send_to(
                &message::frame(cookie.as_bytes(), &body),
                ("127.0.0.1", port),
            )
            .ok()?;
            let mut buf = vec![0u8; 65536];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            let (_, v) = message::parse(&buf[..n]).ok()?;
            Some(v)
        })
    }

    /// Packets that reached the recorder in total (NG `statistics`).
    pub fn relayed_packets(&self) -> u64 {
        let mut req = Value::dict();
        req.insert("command", "statistics");
        let v = self.ng(&req).expect("statistics");
        let total = v.get("statistics").and_then(|s| s.get("totalstatistics"));
        let packets = total.and_then(|t| t.get("packets"));
        packets
            .and_then(|p| p.get("received"))
            .and_then(Value::as_int)
            .unwrap_or_else(|| panic!("no packets.received in {v:?}")) as u64
    }

    /// An HTTP request to sipctl's API: (status, JSON body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let port = self.api_port;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: sipctl\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        in_netns(&self.ns("rec"), move || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return (0, serde_json::Value::Null);
            };
            s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let json = text
                .split_once("\r\n\r\n")
                .and_then(|(_, b)| serde_json::from_str(b).ok())
                .unwrap_or(serde_json::Value::Null);
            (status, json)
        })
    }

    /// The active calls (GET /v1/calls).
    pub fn calls(&self) -> Vec<serde_json::Value> {
        let (status, v) = self.http("GET", "/v1/calls", None, Some(TOKEN));
        assert_eq!(status, 200, "{v}");
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until a call is confirmed; returns it.
    pub fn wait_confirmed(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| c["state"] == "confirmed") {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no confirmed call; sipctl log:\n{}",
                self.sipctl_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST /v1/calls/{id}/recording`.
    pub fn record(&self, id: &str, action: &str) -> (u16, serde_json::Value) {
        self.http(
            "POST",
            &format!("/v1/calls/{id}/recording"),
            Some(&format!("{{\"action\":\"{action}\"}}")),
            Some(TOKEN),
        )
    }

    /// Starts sipp in `host`'s namespace with a scenario of `sipctl/tests/scenarios`.
    pub fn sipp(&self, host: &str, scenario: &str, args: &[&str]) -> Child {
        self.sipp_at(host, "5060", "6000", &self.dir, scenario, args)
    }

    /// Starts sipp on SIP port `port` and media port `media`, in folder `cwd` (where it finds
    /// its pcap files).
    pub fn sipp_at(
        &self,
        host: &str,
        port: &str,
        media: &str,
        cwd: &Path,
        scenario: &str,
        args: &[&str],
    ) -> Child {
        let ip = match host {
            "a" => ADDR_A,
            _ => ADDR_B,
        };
        let sf = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/").to_owned() + scenario;
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "sipp"])
            .args(["-sf", &sf, "-i", ip, "-p", port, "-mp", media, "-m", "1"])
            .args([
                "-timeout",
                "60s",
                "-timeout_error",
                "-nostdin",
                "-trace_err",
            ])
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipp (Debian package sip-tester)")
    }

    /// Starts the callee (party B) answering every call.
    pub fn callee(&self, scenario: &str, args: &[&str]) -> Child {
        self.sipp("b", scenario, args)
    }

    /// Starts the caller (party A) calling `number` through sipctl.
    pub fn caller(&self, scenario: &str, number: &str, args: &[&str]) -> Child {
        let target = format!("{ADDR_REC}:5060");
        let mut all: Vec<&str> = vec!["-s", number];
        all.extend_from_slice(args);
        all.push(&target);
        self.sipp("a", scenario, &all)
    }

    /// Spool jobs of a kind (`recording` or `event`), parsed, oldest first.
    pub fn jobs(&self, kind: &str) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.spool().join("new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .filter_map(|p| {
                serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).ok()?).ok()
            })
            .filter(|j| j["type"] == kind)
            .collect()
    }

    /// Call events, ordered per call by `seq` (calls in order of their first event).
    pub fn events(&self) -> Vec<serde_json::Value> {
        // Events are spooled by sipctl's event thread after the SIP exchange: wait (at most
        // 15 s) until every call seen has its last event, `released`.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut evs = loop {
            let evs = self.jobs("event");
            let calls: std::collections::BTreeSet<&str> = evs
                .iter()
                .filter_map(|e| e["global_call_id"].as_str())
                .collect();
            let released = !calls.is_empty()
                && calls.iter().all(|g| {
                    evs.iter()
                        .any(|e| e["global_call_id"] == *g && e["kind"] == "released")
                });
            if released || Instant::now() >= deadline {
                break evs;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let first: Vec<String> = evs
            .iter()
            .map(|e| e["global_call_id"].as_str().unwrap_or("").to_owned())
            .collect();
        evs.sort_by_key(|e| {
            let g = e["global_call_id"].as_str().unwrap_or("");
            (first.iter().position(|x| x == g), e["seq"].as_u64())
        });
        evs
    }

    /// Waits until `n` recording jobs are spooled.
    pub fn wait_recordings(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let jobs = self.jobs("recording");
            if jobs.len() >= n {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "{} recording jobs, expected {n}",
                jobs.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Event kinds of the call with global id `global`, in order.
    pub fn event_kinds(&self, global: &str) -> Vec<String> {
        // As in `events`: wait (at most 15 s) for the call's last event, `released`.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut evs = loop {
            let evs: Vec<serde_json::Value> = self
                .jobs("event")
                .into_iter()
                .filter(|e| e["global_call_id"] == global)
                .collect();
            if evs.iter().any(|e| e["kind"] == "released") || Instant::now() >= deadline {
                break evs;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        evs.sort_by_key(|e| e["seq"].as_u64());
        evs.iter()
            .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Exports a recording to WAV with the real `recorder export`; returns both channels.
    pub fn export(&self, file: &str) -> (Vec<i16>, Vec<i16>) {
        let wav = self
            .dir
            .join(format!("{}.wav", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let out = Command::new(bin("recorder"))
            .args(["export", file, "--wav"])
            .arg(&wav)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        read_wav(&wav)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let others = std::mem::take(&mut self.others);
        for c in [self.sipctl.take(), self.recorder.take()]
            .into_iter()
            .flatten()
            .chain(others)
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        netns("down", &self.prefix);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {} for inspection", self.dir.display());
        }
    }
}

fn netns(action: &str, prefix: &str) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/netns.sh");
    Command::new("bash")
        .args([script, action, "1"])
        .env("LC_NETNS_PREFIX", prefix)
        .output()
        .expect("run netns.sh")
}

fn ping() -> Value {
    let mut v = Value::dict();
    v.insert("command", "ping");
    v
}

/// Waits for a sipp process (bounded); returns (exit success, stderr).
pub fn wait_sipp(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (false, "sipp did not finish in time (killed)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts a sipp run succeeded.
pub fn assert_sipp_ok(child: Child, what: &str, lab: &Lab) {
    let (ok, err) = wait_sipp(child, Duration::from_secs(60));
    assert!(
        ok,
        "{what} failed: {err}\nsipctl log:\n{}",
        lab.sipctl_log()
    );
}

/// Reads a 16-bit stereo WAV written by `recorder export`.
pub fn read_wav(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..4], b"RIFF");
    let data = &b[44..];
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for frame in data.chunks_exact(4) {
        l.push(i16::from_le_bytes([frame[0], frame[1]]));
        r.push(i16::from_le_bytes([frame[2], frame[3]]));
    }
    (l, r)
}

/// Power of `hz` in `samples` (8 kHz), Goertzel.
pub fn tone_power(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / samples.len().max(1) as f64
}

/// Seconds of non-silent audio in a channel.
pub fn audible_seconds(ch: &[i16]) -> f64 {
    ch.chunks(160)
        .filter(|c| c.iter().map(|s| (*s as i64).abs()).max().unwrap_or(0) > 500)
        .count() as f64
        * 0.02
}

/// Asserts a channel carries `hz` (and not `other`) for at least `min_seconds`.
pub fn assert_tone(ch: &[i16], hz: f64, other: f64, min_seconds: f64, what: &str) {
    let secs = audible_seconds(ch);
    assert!(
        secs >= min_seconds,
        "{what}: {secs:.2} s audible, expected ≥ {min_seconds}"
    );
    let (p, q) = (tone_power(ch, hz), tone_power(ch, other));
    assert!(
        p > 20.0 * q,
        "{what}: power at {hz} Hz {p:.0} vs {other} Hz {q:.0}"
    );
}

/// The real `processor` on a lab's spool (root namespace, loopback, default admin token).
pub struct Processor {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl Processor {
    // The child is killed and waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn start(lab: &Lab) -> Processor {
        let log = lab.dir.join("processor.log");
        let mut child = Command::new(bin("processor"))
            .arg("--spool-dir")
            .arg(lab.spool())
            .arg("--storage-dir")
            .arg(lab.dir.join("store"))
            .arg("--db")
            .arg(lab.dir.join("index.sqlite"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start processor");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                let addr = addr.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':');
                return Processor {
                    child,
                    addr: addr.to_owned(),
                    log,
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("processor did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET with the admin token: (status, JSON).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return (0, serde_json::Value::Null);
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer admin-token\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        // Chunked bodies: take the JSON between the first '{' and the last '}'.
        let json = match (body.find('{'), body.rfind('}')) {
            (Some(i), Some(j)) if j > i => serde_json::from_str(&body[i..=j]).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        (status, json)
    }

    /// Waits until the interaction has a segment and at least `events` events.
    pub fn wait_interaction(&self, id: &str, events: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, v) = self.get(&format!("/v1/interactions/{id}"));
            if status == 200
                && v["segments"].as_array().is_some_and(|s| !s.is_empty())
                && v["events"].as_array().is_some_and(|e| e.len() >= events)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "interaction {id} not indexed ({status} {v}); processor log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the web UI's browser test (headless Chromium) on interaction `id`.
    pub fn play_in_browser(&self, id: &str, seconds: f64) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let script = repo.join("processor/tests/browser/ui.test.mjs");
        if !repo
            .join("processor/tests/browser/node_modules/playwright-core")
            .exists()
        {
            let ok = Command::new("bash")
                .arg(repo.join("scripts/setup-browser.sh"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "scripts/setup-browser.sh failed (Chromium, playwright-core)"
            );
        }
        let out = Command::new("node")
            .arg(&script)
            .arg(format!("http://{}/", self.addr))
            .arg("admin-token")
            .arg(id)
            .arg(format!("{seconds:.2}"))
            .output()
            .expect("node (Node.js) for the browser test");
        assert!(
            out.status.success(),
            "browser test failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
