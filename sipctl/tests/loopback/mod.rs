//! The real `sipctl` binary on loopback, for tests about what it answers on the wire: no
//! network namespaces, no recorder, no sipp. The process is killed on drop (also when a test
//! fails); every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// API token of the test configuration.
pub const TOKEN: &str = "loopback-token";

/// A running sipctl listening on 127.0.0.1 (UDP and TCP SIP, HTTP API).
pub struct Sipctl {
    pub child: Child,
    pub dir: PathBuf,
    pub sip_udp: u16,
    pub sip_tcp: u16,
    pub api: u16,
}

/// A port that was free a moment ago (the kernel picks it; the race with other processes is
/// accepted in tests).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port on 127.0.0.1")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.0.0.1")
}

impl Sipctl {
    /// Starts sipctl with `extra` (e.g. `[[dn]]` entries) added to a loopback configuration
    /// with call events disabled and the recorder pointing at an unused port.
    pub fn start(extra: &str) -> Sipctl {
        Sipctl::start_with("", extra)
    }

    /// As [`Sipctl::start`], with `sip_keys` (e.g. `max-transactions = 64`) added to `[sip]`.
    pub fn start_with(sip_keys: &str, extra: &str) -> Sipctl {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sipctl-loopback-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let (sip_udp, sip_tcp, api, ng) = (
            free_udp_port(),
            free_tcp_port(),
            free_tcp_port(),
            free_udp_port(),
        );
        let config = dir.join("sipctl.toml");
        std::fs::write(
            &config,
            format!(
                "[sip]\nlisten = [\"udp:127.0.0.1:{sip_udp}\", \"tcp:127.0.0.1:{sip_tcp}\"]\n\
                 advertise = \"127.0.0.1\"\n{sip_keys}\n\
                 [recorder]\nng = \"127.0.0.1:{ng}\"\n\
                 [api]\nlisten = \"127.0.0.1:{api}\"\ntoken = \"{TOKEN}\"\n\
                 [events]\nenabled = false\n{extra}\n"
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join("sipctl.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sipctl"))
            .arg("--config")
            .arg(&config)
            .args(["--log-level", "info"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sipctl");
        let mut s = Sipctl {
            child,
            dir,
            sip_udp,
            sip_tcp,
            api,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if s.status_counters().is_some() {
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("sipctl exited at start ({status}):\n{}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "sipctl did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// sipctl's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sipctl.log")).unwrap_or_default()
    }

    /// Size of the log so far, in bytes.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.dir.join("sipctl.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /v1/status` counters, or `None` if the API does not answer.
    pub fn status_counters(&self) -> Option<serde_json::Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.api)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let req = format!(
            "GET /v1/status HTTP/1.1\r\nHost: sipctl\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let (_, body) = text.split_once("\r\n\r\n")?;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        Some(v["counters"].clone())
    }

    /// The `bad_messages` counter.
    pub fn bad_messages(&self) -> u64 {
        self.status_counters()
            .and_then(|c| c["bad_messages"].as_u64())
            .expect("bad_messages counter")
    }

    /// Sends `bytes` as one datagram from a fresh socket and returns the first final
    /// response (1xx skipped), or `None` if none arrives within `wait`.
    pub fn udp_exchange(&self, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        s.send_to(bytes, ("127.0.0.1", self.sip_udp)).expect("send");
        first_final(wait, |timeout| {
            s.set_read_timeout(Some(timeout)).ok()?;
            let mut buf = vec![0u8; 65_536];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            buf.truncate(n);
            Some(buf)
        })
    }

    /// Every datagram answering `bytes` (sent from a fresh socket) within `wait`.
    pub fn udp_all(&self, bytes: &[u8], wait: Duration) -> Vec<Vec<u8>> {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        s.send_to(bytes, ("127.0.0.1", self.sip_udp)).expect("send");
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                break;
            }
            let mut buf = vec![0u8; 65_536];
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    buf.truncate(n);
                    out.push(buf);
                }
                Err(_) => break,
            }
        }
        out
    }

    /// An OPTIONS from a fresh UDP socket: its final status, if answered within 3 s.
    pub fn options_status(&self) -> Option<u16> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let opt = format!(
            "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-alive{n}\r\n\
             From: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: alive{n}@test\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        self.udp_exchange(opt.as_bytes(), Duration::from_secs(3))
            .and_then(|r| status_of(&r))
    }

    /// A TCP connection to the SIP port.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.sip_tcp)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }
}

impl Drop for Sipctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("sipctl log ({}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads with `recv(timeout)` until a final response arrives or `wait` is over.
fn first_final(
    wait: Duration,
    mut recv: impl FnMut(Duration) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let msg = recv(left)?;
        if status_of(&msg).is_some_and(|s| s >= 200) {
            return Some(msg);
        }
    }
}

/// Reads one response (status line, headers, Content-Length body) from a stream, skipping
/// 1xx; `None` on EOF or timeout.
pub fn read_final_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let clen: usize = header_in(&head, "Content-Length")
                .or_else(|| header_in(&head, "l"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + clen;
            if buf.len() >= total {
                let msg: Vec<u8> = buf.drain(..total).collect();
                if status_of(&msg).is_some_and(|s| s >= 200) {
                    return Some(msg);
                }
                continue;
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status code of a response (raw bytes), if it is one.
pub fn status_of(msg: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(msg);
    let line = text.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The value of the first header `name` (case-insensitive) of a raw message.
pub fn header(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    header_in(head, name)
}

fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}
