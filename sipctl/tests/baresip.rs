//! sipctl with a real phone: baresip (Debian package `baresip-core`, installed by
//! `scripts/setup.sh`) in a party's network namespace registers with sipctl over TLS. As the
//! caller (party A) it calls a recorded DN through sipctl, puts the call on hold and resumes
//! it, then hangs up, with sipp as the callee; as the callee (party B) it is called by sipp
//! through sipctl at the Contact it registered, over a TLS connection sipctl opens and
//! verifies. Needs root (network namespaces), as CI runs. baresip is driven through its
//! `ctrl_tcp` module (netstring JSON commands); it sends a tone from a WAV file (`aufile`)
//! and plays what it hears into `aubridge` (a sink nobody reads).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// baresip's control port (in its party's namespace).
const CTRL_PORT: u16 = 4444;

/// A test CA that signs the certificates of sipctl and of baresip.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("CA");
        Pki { ca, ca_key }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `ip` (an IP address subjectAltName: peers are reached by address):
    /// (certificate PEM, key PEM).
    fn server(&self, ip: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![ip.to_owned()])
            .expect("params")
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A lab whose sipctl also listens for TLS on 198.18.0.1:5061 (certificate from `pki`) and
/// verifies TLS peers against `pki`'s CA.
fn tls_lab(pki: &Pki, dns: &str, name: &str) -> Lab {
    // The Lab's directory is made in up_with; the certificate files go to their own.
    let certs =
        std::env::temp_dir().join(format!("linecord-baresip-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&certs).expect("cert dir");
    let (cert, key) = pki.server(ADDR_REC);
    for (f, text) in [
        ("ca.pem", pki.ca_pem()),
        ("cert.pem", cert),
        ("key.pem", key),
    ] {
        std::fs::write(certs.join(f), text).expect("write");
    }
    let listen = format!(
        ", {{ transport = \"tls\", address = \"{ADDR_REC}:5061\", cert = \"{}\", key = \"{}\" }}",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display()
    );
    let sip_keys = format!("tls-ca = \"{}\"", certs.join("ca.pem").display());
    let lab = Lab::up_with(&listen, &sip_keys, dns, true);
    let _ = std::fs::remove_dir_all(&certs); // sipctl has read them
    lab
}

/// How a test's baresip is set up.
struct Phone<'a> {
    /// The namespace (`a` or `b`).
    host: &'a str,
    /// Its address there.
    addr: &'a str,
    /// The account's AOR (a DN of sipctl, `;transport=tls`).
    aor: &'a str,
    /// The tone it sends, Hz.
    tone: f64,
    /// Answers incoming calls at once, with a TLS server certificate for `addr` (baresip
    /// listens for TLS on its SIP port + 1 and registers that as its Contact).
    callee: bool,
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
    /// Starts baresip as `phone` says and waits for its control port.
    fn start(lab: &Lab, pki: &Pki, phone: &Phone) -> Baresip {
        let addr = phone.addr;
        let dir = lab.dir.join("baresip");
        std::fs::create_dir_all(&dir).expect("baresip dir");
        std::fs::write(dir.join("ca.pem"), pki.ca_pem()).expect("write CA");
        write_wav(
            &dir.join("tone.wav"),
            &sipctl::audio::tone(phone.tone, 60.0),
        );
        let mut certificate = String::new();
        if phone.callee {
            // baresip reads certificate and key from one PEM file.
            let (cert, key) = pki.server(addr);
            std::fs::write(dir.join("cert.pem"), format!("{cert}{key}")).expect("write");
            certificate = format!("sip_certificate\t\t{}\n", dir.join("cert.pem").display());
        }
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{addr}:5060\n\
             sip_cafile\t\t{ca}\n\
             {certificate}\
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
             ctrl_tcp_listen\t\t{addr}:{CTRL_PORT}\n",
            ca = dir.join("ca.pem").display(),
            tone = dir.join("tone.wav").display(),
        );
        std::fs::write(dir.join("config"), config).expect("write config");
        let answer = if phone.callee { ";answermode=auto" } else { "" };
        std::fs::write(
            dir.join("accounts"),
            format!("<{}>;regint=600;audio_codecs=pcmu{answer}\n", phone.aor),
        )
        .expect("write accounts");
        let log = std::fs::File::create(dir.join("baresip.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(phone.host), "baresip", "-f"])
            .arg(&dir)
            .args(["-t", "120", "-v"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start baresip (Debian package baresip-core; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            let (ns, addr) = (lab.ns(phone.host), addr.to_owned());
            // The socket stays in the phone's namespace.
            let conn = in_netns(&ns, move || {
                TcpStream::connect((addr.as_str(), CTRL_PORT)).ok()
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

    /// Waits (at most 10 s) until the account is registered (over TLS, to sipctl's port
    /// 5061, the default for `transport=tls`).
    fn wait_registered(&mut self, lab: &Lab) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = self.command("reginfo", "");
            if info.contains("OK") && info.contains("Expires") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "baresip did not register: {info}\nsipctl log:\n{}",
                lab.sipctl_log()
            );
            std::thread::sleep(Duration::from_millis(200));
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
    let pki = Pki::new();
    let lab = tls_lab(&pki, DNS, "caller");
    let aor = format!("sip:1002@{ADDR_REC};transport=tls");
    let phone = Phone {
        host: "a",
        addr: ADDR_A,
        aor: &aor,
        tone: TONE_A,
        callee: false,
    };
    let mut phone = Baresip::start(&lab, &pki, &phone);
    phone.wait_registered(&lab);

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

const DN_PHONE: &str = r#"
[[dn]]
number = "1002"
name = "baresip"
record = true
"#;

#[test]
fn a_call_to_baresip_goes_over_a_tls_connection_sipctl_opens_and_verifies() {
    let pki = Pki::new();
    let lab = tls_lab(&pki, DN_PHONE, "callee");
    let aor = format!("sip:1002@{ADDR_REC};transport=tls");
    let phone = Phone {
        host: "b",
        addr: ADDR_B,
        aor: &aor,
        tone: TONE_B,
        callee: true,
    };
    let mut phone = Baresip::start(&lab, &pki, &phone);
    phone.wait_registered(&lab);
    // sipp calls DN 1002 over UDP; sipctl sends the INVITE to the registered Contact,
    // `sip:…@198.18.0.20:5061;transport=tls`, over a new TLS connection whose certificate it
    // checks against tls-ca; baresip answers at once; sipp hangs up after its audio.
    let a = lab.caller("caller.xml", "1002", &[]);
    phone.wait_event("CALL_ESTABLISHED", 1, Duration::from_secs(10));
    assert_sipp_ok(a, "caller", &lab);
    phone.wait_event("CALL_CLOSED", 1, Duration::from_secs(10));
    let jobs = lab.wait_recordings(1);
    let job = &jobs[0];
    assert_eq!(job["status"], "complete", "{job}");
    let (left, right) = lab.export(job["file"].as_str().expect("file"));
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee (baresip) channel");
    let global = job["call_id"].as_str().expect("call id");
    assert_eq!(
        lab.event_kinds(global),
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
    assert!(!log.contains("SIP TLS connect failed"), "{log}");
}
