//! sipctl with a real phone: baresip (Debian package `baresip-core`, installed by
//! `scripts/setup.sh`) as party A in its network namespace registers with sipctl over TLS and
//! calls a recorded DN through it, puts the call on hold and resumes it, then hangs up; sipp
//! is the callee (party B). Needs root (network namespaces), as CI runs. baresip is driven
//! through its `ctrl_tcp` module (netstring JSON commands); it sends a 440 Hz tone from a WAV
//! file (`aufile`) and plays what it hears into `aubridge` (a sink nobody reads).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// baresip's control port (in party A's namespace).
const CTRL_PORT: u16 = 4444;

/// A test CA and the sipctl certificate it signed (subjectAltName: the recorder host's
/// address, which phones use as the SIP server's name).
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![ADDR_REC.to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Writes 8 kHz mono 16-bit PCM as a WAV file (what baresip's `aufile` source reads).
fn write_wav(path: &Path, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).expect("write WAV");
}

/// baresip in party A's namespace, with its control connection.
struct Baresip {
    child: Child,
    dir: PathBuf,
    ctrl: TcpStream,
    buf: Vec<u8>,
    /// Events seen so far (`type` is `CALL_ESTABLISHED`, …), in order.
    events: Vec<serde_json::Value>,
}

impl Baresip {
    /// Starts baresip with account `aor` (a DN of sipctl) and waits for its control port.
    fn start(lab: &Lab, ca_pem: &str, aor: &str) -> Baresip {
        let dir = lab.dir.join("baresip");
        std::fs::create_dir_all(&dir).expect("baresip dir");
        std::fs::write(dir.join("ca.pem"), ca_pem).expect("write CA");
        write_wav(&dir.join("tone.wav"), &sipctl::audio::tone(TONE_A, 60.0));
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{ADDR_A}:5060\n\
             sip_cafile\t\t{ca}\n\
             audio_player\t\taubridge,nowhere\n\
             audio_alert\t\taubridge,nowhere\n\
             audio_source\t\taufile,{tone}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t{ADDR_A}:{CTRL_PORT}\n",
            ca = dir.join("ca.pem").display(),
            tone = dir.join("tone.wav").display(),
        );
        std::fs::write(dir.join("config"), config).expect("write config");
        std::fs::write(
            dir.join("accounts"),
            format!("<{aor}>;regint=600;audio_codecs=pcmu\n"),
        )
        .expect("write accounts");
        let log = std::fs::File::create(dir.join("baresip.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("a"), "baresip", "-f"])
            .arg(&dir)
            .args(["-t", "120", "-v"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start baresip (Debian package baresip-core; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            let ns = lab.ns("a");
            let conn = in_netns(&ns, || {
                TcpStream::connect((ADDR_A, CTRL_PORT)).ok() // the socket stays in ns a
            });
            if let Some(c) = conn {
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "baresip's ctrl_tcp did not come up:\n{}",
                std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Baresip {
            child,
            dir,
            ctrl,
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// The next netstring-framed JSON message, waiting at most until `deadline`.
    fn next(&mut self, deadline: Instant) -> Option<serde_json::Value> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .expect("netstring length");
                if self.buf.len() > colon + len {
                    let body = self.buf[colon + 1..colon + 1 + len].to_vec();
                    self.buf.drain(..colon + 2 + len); // the body and its ','
                    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                    if v["event"] == true {
                        self.events.push(v.clone());
                    }
                    return Some(v);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            match self.ctrl.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {} // read timeout: check the deadline
            }
        }
    }

    /// Runs a command; returns its response's `data` (panics if not ok or no answer in 5 s).
    fn command(&mut self, cmd: &str, params: &str) -> String {
        let body = serde_json::json!({"command": cmd, "params": params, "token": cmd}).to_string();
        self.ctrl
            .write_all(format!("{}:{body},", body.len()).as_bytes())
            .expect("ctrl write");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(v) = self.next(deadline) else {
                panic!("baresip did not answer {cmd}:\n{}", self.log());
            };
            if v["response"] == true && v["token"] == cmd {
                assert_eq!(v["ok"], true, "{cmd}: {v}");
                return v["data"].as_str().unwrap_or_default().to_owned();
            }
        }
    }

    /// Waits (at most `wait`) until event `kind` has been seen `n` times in all.
    fn wait_event(&mut self, kind: &str, n: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.events.iter().filter(|e| e["type"] == kind).count() < n {
            if self.next(deadline).is_none() {
                let kinds: Vec<&serde_json::Value> =
                    self.events.iter().map(|e| &e["type"]).collect();
                panic!(
                    "no {kind} #{n} from baresip (events {kinds:?}):\n{}",
                    self.log()
                );
            }
        }
    }

    /// The last event of type `kind`.
    fn event(&self, kind: &str) -> Option<&serde_json::Value> {
        self.events.iter().rev().find(|e| e["type"] == kind)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("baresip log:\n{}", self.log());
        }
    }
}

const DNS: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true

[[dn]]
number = "1002"
name = "baresip"
"#;

#[test]
fn baresip_registers_over_tls_and_a_recorded_call_survives_hold_and_resume() {
    let pki = pki();
    // The Lab's directory is made in up_with; the certificate files go to their own.
    let certs = std::env::temp_dir().join(format!("linecord-baresip-{}", std::process::id()));
    std::fs::create_dir_all(&certs).expect("cert dir");
    for (f, text) in [
        ("ca.pem", &pki.ca_pem),
        ("cert.pem", &pki.cert_pem),
        ("key.pem", &pki.key_pem),
    ] {
        std::fs::write(certs.join(f), text).expect("write");
    }
    let listen = format!(
        ", {{ transport = \"tls\", address = \"{ADDR_REC}:5061\", cert = \"{}\", key = \"{}\" }}",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display()
    );
    let sip_keys = format!("tls-ca = \"{}\"", certs.join("ca.pem").display());
    let lab = Lab::up_with(&listen, &sip_keys, DNS, true);
    let _ = std::fs::remove_dir_all(&certs); // sipctl has read them

    let mut phone = Baresip::start(
        &lab,
        &pki.ca_pem,
        &format!("sip:1002@{ADDR_REC};transport=tls"),
    );
    // REGISTER over TLS (to sipctl's TLS port 5061, the default for transport=tls).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = phone.command("reginfo", "");
        if info.contains("OK") && info.contains("Expires") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "baresip did not register: {info}\nsipctl log:\n{}",
            lab.sipctl_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The callee accepts exactly two re-INVITEs (hold, resume) before the BYE.
    let b = lab.callee("callee_reinvites.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    phone.command("dial", &format!("sip:1001@{ADDR_REC}"));
    phone.wait_event("CALL_ESTABLISHED", 1, Duration::from_secs(10));
    // baresip calls over its account's transport: TLS to sipctl.
    let peer = phone
        .event("CALL_ESTABLISHED")
        .map(|e| e["peeruri"].clone());
    assert!(
        peer.as_ref()
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.contains("transport=tls")),
        "{peer:?}"
    );
    let call = lab.wait_confirmed();
    assert_eq!(call["recording"], "on", "{call}");
    std::thread::sleep(Duration::from_secs(3));

    // Hold (re-INVITE with a=sendonly from baresip), then resume; each answered.
    phone.command("hold", "");
    phone.wait_event("CALL_REMOTE_SDP", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    phone.command("resume", "");
    phone.wait_event("CALL_REMOTE_SDP", 3, Duration::from_secs(10));
    let calls = lab.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["state"], "confirmed", "{calls:?}");
    assert_eq!(calls[0]["recording"], "on", "{calls:?}");
    std::thread::sleep(Duration::from_secs(3));

    phone.command("hangup", "");
    phone.wait_event("CALL_CLOSED", 1, Duration::from_secs(10));
    assert_sipp_ok(b, "callee", &lab);

    let jobs = lab.wait_recordings(1);
    let job = &jobs[0];
    assert_eq!(job["status"], "complete", "{job}");
    let (left, right) = lab.export(job["file"].as_str().expect("file"));
    // ~8 s of call: both voices for most of it, hold included (baresip keeps sending on
    // hold, sendonly; the callee restarts its audio after each re-INVITE).
    assert_tone(&left, TONE_A, TONE_B, 4.0, "caller (baresip) channel");
    assert_tone(&right, TONE_B, TONE_A, 4.0, "callee channel");
    let global = job["call_id"].as_str().expect("call id");
    let kinds = lab.event_kinds(global);
    assert_eq!(
        kinds,
        [
            "created",
            "ringing",
            "answered",
            "recording_started",
            "recording_stopped",
            "released"
        ],
        "events of {global}"
    );
    let log = lab.sipctl_log();
    assert!(!log.contains("SIP TLS handshake failed"), "{log}");
}
