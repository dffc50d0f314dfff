//! Test harness: starts the real `recorder` binary, talks NG to it as Kamailio's rtpengine
//! module would, and plays call parties with plain UDP sockets. Every wait is bounded.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::message;
use linecord_ng::request::{Command as NgCommand, Request};
use linecord_recfile::g711::{linear_to_ulaw, ulaw_to_linear};
use std::path::Path;

/// Path of the recorder binary under test.
pub fn recorder_bin() -> PathBuf {
    PathBuf::from(std::env::var("RECORDER_BIN").unwrap_or_else(|_| {
        option_env!("CARGO_BIN_EXE_recorder")
            .unwrap_or("recorder")
            .to_string()
    }))
}

/// A free UDP port on loopback (bound then released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running recorder; killed on drop.
pub struct Recorder {
    pub child: Child,
    pub ng: SocketAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// Holds `recordings/` and `spool/` of this recorder; removed on drop.
    pub data: PathBuf,
    args: Vec<String>,
    /// Where its stderr goes (appended across restarts), if not inherited.
    log: Option<PathBuf>,
}

/// How [`Recorder`] starts the binary beyond the test's own flags.
struct Launch {
    workers: u16,
    log_level: &'static str,
    /// A file for stderr; `None`: inherited (the test's output).
    log: Option<PathBuf>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            workers: 2,
            log_level: "warn",
            log: None,
        }
    }
}

fn spawn(args: &[String], log: Option<&Path>) -> Child {
    let mut cmd = Command::new(recorder_bin());
    cmd.args(args).stdin(Stdio::null());
    if let Some(log) = log {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("recorder log file");
        cmd.stdout(Stdio::null()).stderr(f);
    }
    cmd.spawn().expect("start recorder")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "linecord-test-{name}-{}-{}",
        std::process::id(),
        COOKIE.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Recorder {
    /// Starts the recorder on loopback with `port_min..port_min+99` and extra flags, and
    /// waits until it answers `ping`.
    pub fn start(port_min: u16, extra: &[&str]) -> Recorder {
        let data = temp_dir(&port_min.to_string());
        Self::start_in(port_min, extra, data)
    }

    /// Starts a recorder whose recording and spool directories are under `data`.
    pub fn start_in(port_min: u16, extra: &[&str], data: PathBuf) -> Recorder {
        Self::launch(port_min, port_min + 99, extra, data, &Launch::default())
    }

    /// Starts a recorder with one worker whose log (`--log-level info`, stderr) goes to
    /// `recorder.log` in its data directory ([`Recorder::log`]).
    pub fn start_logged(name: &str, port_min: u16, port_max: u16, extra: &[&str]) -> Recorder {
        let data = temp_dir(name);
        let launch = Launch {
            workers: 1,
            log_level: "info",
            log: Some(data.join("recorder.log")),
        };
        Self::launch(port_min, port_max, extra, data, &launch)
    }

    fn launch(
        port_min: u16,
        port_max: u16,
        extra: &[&str],
        data: PathBuf,
        launch: &Launch,
    ) -> Recorder {
        let ng: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let mut args: Vec<String> = [
            "--interface",
            "127.0.0.1",
            "--listen-ng",
            &ng.to_string(),
            "--port-min",
            &port_min.to_string(),
            "--port-max",
            &port_max.to_string(),
            "--workers",
            &launch.workers.to_string(),
            "--log-level",
            launch.log_level,
            "--recording-dir",
            &data.join("recordings").display().to_string(),
            "--spool-dir",
            &data.join("spool").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let r = Recorder {
            child: spawn(&args, launch.log.as_deref()),
            ng,
            port_min,
            port_max,
            data,
            args,
            log: launch.log.clone(),
        };
        r.wait_ready();
        r
    }

    /// The log file of a recorder started with [`Recorder::start_logged`].
    pub fn log(&self) -> &Path {
        self.log
            .as_deref()
            .expect("a recorder started with start_logged")
    }

    /// Starts the same recorder again (same directories and NG address) after it died.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.args, self.log.as_deref());
        self.wait_ready();
    }

    /// Kills the recorder with SIGKILL (no cleanup at all).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Jobs in the spool's `new/` directory, parsed.
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        read_jobs(&self.data.join("spool").join("new"))
    }

    /// Waits (at most 10 s) until `n` jobs are spooled and returns them.
    pub fn wait_jobs(&self, n: usize) -> Vec<serde_json::Value> {
        wait_jobs_in(&self.data.join("spool").join("new"), n)
    }

    fn wait_ready(&self) {
        let client = NgClient::new(self.ng);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = client.try_call(&Request::new(NgCommand::Ping).to_value()) {
                assert_eq!(v.get("result").and_then(Value::as_str), Some("pong"));
                break;
            }
            assert!(Instant::now() < deadline, "recorder did not answer ping");
        }
    }

    pub fn client(&self) -> NgClient {
        NgClient::new(self.ng)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

static COOKIE: AtomicU32 = AtomicU32::new(1);

/// A blocking NG client (retransmits like a SIP proxy's rtpengine module).
pub struct NgClient {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl NgClient {
    pub fn new(server: SocketAddr) -> Self {
        Self::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap(), server)
    }

    /// A client on a socket made elsewhere (e.g. inside a network namespace).
    pub fn with_socket(sock: UdpSocket, server: SocketAddr) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        NgClient { sock, server }
    }

    pub fn next_cookie() -> String {
        format!(
            "{}_{}",
            std::process::id(),
            COOKIE.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends raw bytes and waits for one reply datagram.
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        self.sock.send_to(bytes, self.server)?;
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends `body` with `cookie`, retrying up to 3 times; returns the reply dictionary.
    /// Late replies to earlier requests (other cookies) are skipped, as a proxy does.
    pub fn call_with_cookie(&self, cookie: &str, body: &Value) -> std::io::Result<Value> {
        let datagram = message::frame(cookie.as_bytes(), body);
        let mut last = None;
        for _ in 0..3 {
            self.sock.send_to(&datagram, self.server)?;
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut buf = vec![0u8; 65_536];
            while Instant::now() < deadline {
                match self.sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let (c, v) = message::parse(&buf[..n]).expect("reply parses");
                        if c == cookie.as_bytes() {
                            return Ok(v);
                        }
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut)))
    }

    pub fn try_call(&self, body: &Value) -> std::io::Result<Value> {
        self.call_with_cookie(&Self::next_cookie(), body)
    }

    /// A request that must succeed (`result` ok or pong).
    pub fn ok(&self, req: &Request) -> Value {
        let v = self.try_call(&req.to_value()).expect("NG reply");
        let result = v.get("result").and_then(Value::as_str).unwrap_or("");
        assert!(
            result == "ok" || result == "pong",
            "NG {:?} failed: {:?}",
            req.command,
            v.get("error-reason").and_then(Value::as_str)
        );
        v
    }

    /// A request that must fail; returns the `error-reason`.
    pub fn err(&self, body: &Value) -> String {
        let v = self.try_call(body).expect("NG reply");
        assert_eq!(
            v.get("result").and_then(Value::as_str),
            Some("error"),
            "{v:?}"
        );
        v.get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// SDP of a party at `addr` offering PCMU/PCMA/telephone-event.
pub fn party_sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1545997027 1 IN IP4 {ip}\r\ns=tester\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The media address and port an SDP advertises for its first m= line.
pub fn sdp_media_addr(sdp: &[u8]) -> SocketAddr {
    let parsed = linecord_sdp::Sdp::parse(sdp).expect("reply SDP parses");
    let m = &parsed.medias()[0];
    SocketAddr::new(m.address.expect("c= address"), m.port)
}

/// An NG request with the usual call keys.
pub fn request(cmd: NgCommand, call_id: &str, from_tag: &str, to_tag: Option<&str>) -> Request {
    let mut r = Request::new(cmd);
    r.call_id = Some(call_id.into());
    r.from_tag = Some(from_tag.into());
    r.to_tag = to_tag.map(Into::into);
    r
}

/// A call party: a UDP socket acting as a phone's RTP port.
pub struct Party {
    pub sock: UdpSocket,
    pub ssrc: u32,
    pub seq: u16,
}

impl Party {
    pub fn new() -> Party {
        Self::with_socket(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// A party on a socket made elsewhere (e.g. inside a network namespace).
    pub fn with_socket(sock: UdpSocket) -> Party {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Party {
            sock,
            ssrc: rand_ssrc(),
            seq: 1000,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// An RTP packet (PCMU, 160-byte payload that encodes `seq`).
    pub fn rtp(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend((0..160u32).map(|i| (i as u8) ^ (self.seq as u8)));
        p
    }

    /// Sends `count` RTP packets to `to`, 1 ms apart; returns them.
    pub fn send_rtp(&mut self, to: SocketAddr, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let p = self.rtp();
                self.sock.send_to(&p, to).unwrap();
                std::thread::sleep(Duration::from_millis(1));
                p
            })
            .collect()
    }

    /// Receives datagrams until `count` arrived or 2 s passed; returns (payload, source).
    pub fn recv_n(&self, count: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < count && Instant::now() < deadline {
            if let Ok((n, src)) = self.sock.recv_from(&mut buf) {
                out.push((buf[..n].to_vec(), src));
            }
        }
        out
    }

    /// Receives for `wait` and returns how many datagrams came.
    pub fn count_for(&self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut n = 0;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if self.sock.recv_from(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn rand_ssrc() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    t ^ std::process::id().rotate_left(16) ^ COOKIE.fetch_add(1, Ordering::Relaxed)
}

/// A call set up through the recorder: A offered, B answered.
pub struct Call {
    pub call_id: String,
    pub a: Party,
    pub b: Party,
    /// Where A sends (from the answer's SDP).
    pub a_to: SocketAddr,
    /// Where B sends (from the offer's SDP).
    pub b_to: SocketAddr,
}

/// Offer from A, answer from B, exactly as Kamailio's `rtpengine_offer()`/`rtpengine_answer()`
/// send them (with `flags` and `replace`).
pub fn setup_call(client: &NgClient, call_id: &str, flags: &[&str]) -> Call {
    let a = Party::new();
    let b = Party::new();
    let mut offer = request(NgCommand::Offer, call_id, "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    offer.via_branch = Some("z9hG4bK-1".into());
    offer.flags = flags.iter().map(|f| f.to_string()).collect();
    offer.replace = vec!["origin".into(), "session-connection".into()];
    offer.received_from = Some(linecord_ng::request::ReceivedFrom {
        family: "IP4".into(),
        address: "127.0.0.1".into(),
    });
    let r = client.ok(&offer);
    let b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    let mut answer = request(NgCommand::Answer, call_id, "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(b.addr()).into_bytes());
    answer.flags = flags.iter().map(|f| f.to_string()).collect();
    answer.replace = vec!["origin".into(), "session-connection".into()];
    let r = client.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    Call {
        call_id: call_id.into(),
        a,
        b,
        a_to,
        b_to,
    }
}

/// Binds a UDP socket to `addr` inside network namespace `ns` (the socket stays in that
/// namespace whichever thread uses it later).
pub fn udp_in_netns(ns: &str, addr: &str) -> UdpSocket {
    let path = format!("/run/netns/{ns}");
    let addr = addr.to_string();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this short-lived thread only; the fd is a valid netns handle.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr} in {path}: {e}"))
    })
    .join()
    .expect("netns thread")
}

/// The netns topology of `scripts/netns.sh` under a private prefix; removed on drop (also
/// when the test fails).
pub struct Topology {
    pub prefix: String,
}

impl Topology {
    pub fn up(queues: u32) -> Topology {
        // Unique per topology: tests in one binary run in parallel.
        let prefix = format!(
            "lt{}x{}",
            std::process::id(),
            COOKIE.fetch_add(1, Ordering::Relaxed)
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/netns.sh");
        let t = Topology { prefix };
        let o = Command::new("bash")
            .args([script, "up", &queues.to_string()])
            .env("LC_NETNS_PREFIX", &t.prefix)
            .output()
            .expect("run netns.sh");
        assert!(
            o.status.success(),
            "netns.sh up failed (these tests need root, as CI runs): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/netns.sh");
        let _ = Command::new("bash")
            .args([script, "down"])
            .env("LC_NETNS_PREFIX", &self.prefix)
            .output();
    }
}

// ---- audio: speech-like PCMU calls, WAV checks ----------------------------------------

/// Deterministic speech-like signal: a voiced buzz (120-180 Hz fundamental with harmonics)
/// shaped by a 4 Hz syllable envelope, with short pauses, at 8 kHz. `voice` varies pitch.
pub fn speech(seconds: f64, voice: f64) -> Vec<i16> {
    let n = (seconds * 8000.0) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f0 = voice * (1.0 + 0.15 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
            phase += 2.0 * std::f64::consts::PI * f0 / 8000.0;
            let buzz: f64 = (1..8).map(|h| (phase * h as f64).sin() / h as f64).sum();
            let syllable = (2.0 * std::f64::consts::PI * 4.0 * t).sin().abs();
            let pause = if (t % 2.5) > 2.1 { 0.05 } else { 1.0 };
            // A small constant keeps every sample away from zero, so alignment is unambiguous.
            (buzz * syllable * pause * 6000.0 + 300.0) as i16
        })
        .collect()
}

/// µ-law encode then decode: what a perfect recording must give back.
pub fn g711_round_trip(x: &[i16]) -> Vec<i16> {
    x.iter()
        .map(|s| ulaw_to_linear(linear_to_ulaw(*s)))
        .collect()
}

/// RTP packet (PCMU) of 20 ms starting at sample `start` of `pcm`.
pub fn pcmu_packet(seq: u16, ssrc: u32, ts: u32, samples: &[i16]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(samples.iter().map(|s| linear_to_ulaw(*s)));
    p
}

/// Plays `a_pcm` from A and `b_pcm` from B in real time (20 ms packets). `skip` is called
/// with the packet index and may pause/resume recording; returns the payloads each side sent.
pub fn play(call: &mut Call, a_pcm: &[i16], b_pcm: &[i16], mut each: impl FnMut(usize)) {
    let packets = a_pcm.len().min(b_pcm.len()) / 160;
    let start = Instant::now();
    let (a_ssrc, b_ssrc) = (0x1111_0001, 0x2222_0002);
    for i in 0..packets {
        each(i);
        let seq = 5000u16.wrapping_add(i as u16);
        let ts = 90_000u32.wrapping_add(160 * i as u32);
        let a = pcmu_packet(seq, a_ssrc, ts, &a_pcm[i * 160..(i + 1) * 160]);
        let b = pcmu_packet(
            seq.wrapping_add(777),
            b_ssrc,
            ts.wrapping_add(0x4000_0000),
            &b_pcm[i * 160..(i + 1) * 160],
        );
        call.a.sock.send_to(&a, call.a_to).unwrap();
        call.b.sock.send_to(&b, call.b_to).unwrap();
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Reads a 16-bit stereo WAV written by `recorder export` into its two channels.
pub fn read_wav(path: &Path) -> (u32, Vec<i16>, Vec<i16>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(&b[8..12], b"WAVE");
    assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "stereo");
    assert_eq!(u16::from_le_bytes([b[34], b[35]]), 16, "16-bit");
    let rate = u32::from_le_bytes(b[24..28].try_into().unwrap());
    let data = &b[44..];
    let (mut l, mut r) = (Vec::new(), Vec::new());
    for frame in data.chunks_exact(4) {
        l.push(i16::from_le_bytes([frame[0], frame[1]]));
        r.push(i16::from_le_bytes([frame[2], frame[3]]));
    }
    (rate, l, r)
}

/// Finds `expected` in `channel` after its leading silence; asserts it is there exactly and
/// that everything around it is silence. Returns its offset.
pub fn assert_channel_is(channel: &[i16], expected: &[i16], what: &str) -> usize {
    let offset = channel
        .iter()
        .position(|s| *s != 0)
        .unwrap_or_else(|| panic!("{what}: channel is silent"));
    let got = &channel[offset..(offset + expected.len()).min(channel.len())];
    assert_eq!(got.len(), expected.len(), "{what}: channel too short");
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: sample {i} differs: {} != {}", got[i], expected[i]);
    }
    assert!(
        channel[offset + expected.len()..].iter().all(|s| *s == 0),
        "{what}: trailing samples are not silence"
    );
    offset
}

pub fn export(file: &Path, flag: &str, out: &Path) -> String {
    let o = Command::new(recorder_bin())
        .args([
            "export",
            &file.display().to_string(),
            flag,
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether an XDP program is attached to `dev` in namespace `ns`.
pub fn xdp_attached(ns: &str, dev: &str) -> bool {
    let o = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", dev])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&o.stdout);
    text.contains("prog/xdp") || text.contains(" xdp")
}

/// The jobs in a spool's `new/` directory, parsed, oldest first.
pub fn read_jobs(dir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|j| j["start_unix_ms"].as_u64());
    out
}

/// Waits (at most 10 s) until `n` jobs are in `dir` and returns them.
pub fn wait_jobs_in(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = read_jobs(dir);
        if jobs.len() >= n {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} spooled jobs, have {}",
            jobs.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- full disks: a small tmpfs, files under a directory ---------------------------------

/// A tmpfs of a given size mounted on a directory (needs root, as CI runs); unmounted on
/// drop, also when the test fails.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `4m`) on `dir` (created).
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "this test needs root to mount a tmpfs (CI runs as root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs { dir }
    }

    /// Changes the size (frees space when it grows), keeping the files.
    pub fn resize(&self, size: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Every file under `root` (recursively), sorted.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
