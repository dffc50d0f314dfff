//! SIP over TLS against the real sipctl binary on loopback (docs/sipctl.md, "Transports"):
//! a rustls client in the test talks to sipctl's TLS listener, and a rustls server in the
//! test is the DN sipctl connects to over TLS. Certificates are made here with rcgen: a test
//! CA, and server certificates with an IP address subjectAltName (sipctl checks the URI host,
//! an IP address). The process is killed on drop; every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const TOKEN: &str = "tls-token";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA that signs server certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "linecord test CA");
        let cert = p.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// A server certificate for `ip` (subjectAltName IP address): (cert PEM, key PEM).
    fn server(&self, ip: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![ip.to_owned()])
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// sipctl on 127.0.0.1 with a UDP and a TLS listener, its certificate signed by `ca`.
struct Sipctl {
    child: Child,
    dir: PathBuf,
    udp: u16,
    tls: u16,
    api: u16,
}

fn test_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sipctl-tls-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    dir
}

/// Writes the config and starts sipctl (not waiting for it). `cert`/`key` are the paths
/// put in the TLS listener; `extra` is appended (`[[dn]]` entries).
fn spawn(dir: &Path, cert: &Path, key: &Path, extra: &str) -> (Child, u16, u16, u16) {
    let (udp, tls, api, ng) = (
        free_udp_port(),
        free_tcp_port(),
        free_tcp_port(),
        free_udp_port(),
    );
    let config = dir.join("sipctl.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:{udp}\", {{ transport = \"tls\", address = \"127.0.0.1:{tls}\", \
             cert = \"{}\", key = \"{}\" }}]\nadvertise = \"127.0.0.1\"\ntls-ca = \"{}\"\n\
             [recorder]\nng = \"127.0.0.1:{ng}\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\ntoken = \"{TOKEN}\"\n\
             [events]\nenabled = false\n{extra}\n",
            cert.display(),
            key.display(),
            dir.join("ca.pem").display()
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.join("sipctl.log")).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sipctl"))
        .arg("--config")
        .arg(&config)
        .args(["--log-level", "debug"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sipctl");
    (child, udp, tls, api)
}

impl Sipctl {
    /// Starts sipctl with a certificate for 127.0.0.1 from `ca` and waits for its API.
    fn start(name: &str, ca: &Ca, extra: &str) -> Sipctl {
        let dir = test_dir(name);
        let (cert, key) = ca.server("127.0.0.1");
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).expect("write");
        std::fs::write(dir.join("cert.pem"), cert).expect("write");
        std::fs::write(dir.join("key.pem"), key).expect("write");
        let (child, udp, tls, api) =
            spawn(&dir, &dir.join("cert.pem"), &dir.join("key.pem"), extra);
        let mut s = Sipctl {
            child,
            dir,
            udp,
            tls,
            api,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", s.api)).is_err() {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sipctl.log")).unwrap_or_default()
    }

    /// A TLS connection to sipctl's TLS listener, verified with `ca`.
    fn tls_client(&self, ca: &Ca) -> rustls::StreamOwned<ClientConnection, TcpStream> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert.pem().as_bytes()).expect("CA PEM"))
            .expect("root");
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
        let tcp = TcpStream::connect(("127.0.0.1", self.tls)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        rustls::StreamOwned::new(conn, tcp)
    }

    /// Waits (at most `wait`) for `text` in the log.
    fn wait_log(&self, text: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Reads one SIP message (head and Content-Length body) from a stream: `None` on EOF, error
/// or timeout (the stream's read timeout bounds each read; at most 1000 reads).
fn read_message(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let clen: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    (n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + clen {
                let msg: Vec<u8> = buf.drain(..end + 4 + clen).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn options(n: u32) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t{n}\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: tls{n}@test\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn options_over_tls_is_answered_200_on_the_same_connection() {
    let ca = Ca::new();
    let s = Sipctl::start("options", &ca, "");
    let mut c = s.tls_client(&ca);
    let mut buf = Vec::new();
    // Two requests on one connection: the connection stays and both are answered.
    for n in 1..=2 {
        c.write_all(options(n).as_bytes()).expect("write over TLS");
        c.flush().expect("flush");
        let resp = read_message(&mut c, &mut buf)
            .unwrap_or_else(|| panic!("no response over TLS:\n{}", s.log()));
        assert!(resp.starts_with("SIP/2.0 200 "), "{resp}");
        let via = header(&resp, "Via").unwrap_or_default();
        assert!(
            via.starts_with("SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls"),
            "{resp}"
        );
        assert_eq!(header(&resp, "CSeq"), Some(format!("{n} OPTIONS").as_str()));
    }
    let suite = c.conn.negotiated_cipher_suite().expect("handshake done");
    assert!(
        c.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
        "{suite:?}"
    );
}

#[test]
fn a_tls_stream_is_framed_like_tcp() {
    // The same framing and limits as TCP: keepalive CRLFs are skipped (RFC 5626 §4.4.1), a
    // bad Content-Length is answered 400 and the connection closed (RFC 4475 §3.1.2.3).
    let ca = Ca::new();
    let s = Sipctl::start("framing", &ca, "");
    let mut c = s.tls_client(&ca);
    let mut buf = Vec::new();
    c.write_all(format!("\r\n\r\n{}", options(1)).as_bytes())
        .expect("write");
    c.flush().expect("flush");
    let first = read_message(&mut c, &mut buf).expect("first answer");
    assert!(first.starts_with("SIP/2.0 200 "), "{first}");
    let bad = options(2).replace("Content-Length: 0", "Content-Length: -1");
    c.write_all(bad.as_bytes()).expect("write");
    c.flush().expect("flush");
    let second = read_message(&mut c, &mut buf).expect("second answer");
    assert!(second.starts_with("SIP/2.0 400 "), "{second}");
    assert_eq!(read_message(&mut c, &mut buf), None, "closed after the 400");
}

#[test]
fn a_client_that_does_not_trust_the_certificate_gets_no_sip() {
    let ca = Ca::new();
    let s = Sipctl::start("untrusted", &ca, "");
    let other = Ca::new();
    let mut c = s.tls_client(&other);
    // The handshake fails on the client side: nothing is written, nothing read.
    let r = c.write_all(options(1).as_bytes()).and_then(|_| c.flush());
    let mut buf = Vec::new();
    let got = if r.is_ok() {
        read_message(&mut c, &mut buf)
    } else {
        None
    };
    assert_eq!(got, None);
    assert!(
        s.wait_log("SIP TLS handshake failed", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    // sipctl still answers a client that trusts it.
    let mut c = s.tls_client(&ca);
    c.write_all(options(2).as_bytes()).expect("write");
    c.flush().expect("flush");
    let resp = read_message(&mut c, &mut Vec::new()).expect("answer");
    assert!(resp.starts_with("SIP/2.0 200 "), "{resp}");
}

#[test]
fn bad_certificate_paths_stop_sipctl_at_start_with_the_key_named() {
    let ca = Ca::new();
    let dir = test_dir("badpath");
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).expect("write");
    let (cert, key) = ca.server("127.0.0.1");
    std::fs::write(dir.join("cert.pem"), cert).expect("write");
    std::fs::write(dir.join("key.pem"), &key).expect("write");
    let cases = [
        (
            dir.join("missing.pem"),
            dir.join("key.pem"),
            "sip.listen[1].cert",
        ),
        (
            dir.join("cert.pem"),
            dir.join("missing.pem"),
            "sip.listen[1].key",
        ),
        // A key file where the certificate should be: no CERTIFICATE section.
        (
            dir.join("key.pem"),
            dir.join("key.pem"),
            "sip.listen[1].cert",
        ),
    ];
    for (cert, key, want) in cases {
        let (mut child, ..) = spawn(&dir, &cert, &key, "");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sipctl kept running with {}", cert.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(dir.join("sipctl.log")).unwrap_or_default();
        assert!(!status.success(), "{log}");
        assert!(log.contains(want), "{want}: {log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The callee thread: (INVITE, ACK) as received, or what went wrong.
type Callee = std::thread::JoinHandle<Result<(String, String), String>>;

/// A TLS server on 127.0.0.1 with a certificate from `ca`: accepts one connection (within
/// 10 s), reads an INVITE, answers 486 and reads the ACK. Returns (INVITE, ACK) or the
/// error.
fn tls_callee(ca: &Ca) -> (u16, Callee) {
    let (cert, key) = ca.server("127.0.0.1");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let tcp = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("no connection from sipctl: {e}")),
            }
        };
        tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let conn = ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut buf = Vec::new();
        let invite = read_message(&mut s, &mut buf).ok_or("no INVITE over TLS")?;
        let mut resp = String::from("SIP/2.0 486 Busy Here\r\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            for line in invite.lines().filter(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            }) {
                resp.push_str(line);
                resp.push_str("\r\n");
            }
        }
        let to = header(&invite, "To").ok_or("no To")?;
        resp.push_str(&format!("To: {to};tag=callee\r\nContent-Length: 0\r\n\r\n"));
        s.write_all(resp.as_bytes()).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        let ack = read_message(&mut s, &mut buf).ok_or("no ACK over TLS")?;
        Ok((invite, ack))
    });
    (port, handle)
}

fn invite_over_udp(s: &Sipctl, number: &str) -> (UdpSocket, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let me: SocketAddr = sock.local_addr().expect("addr");
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let invite = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-inv1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=a1\r\nTo: <sip:{number}@127.0.0.1>\r\n\
         Call-ID: out-tls@test\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(invite.as_bytes(), ("127.0.0.1", s.udp))
        .expect("send");
    (sock, invite)
}

/// The first final response on `sock` within `wait`.
fn final_response(sock: &UdpSocket, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !msg.starts_with("SIP/2.0 1") {
            return Some(msg);
        }
    }
    None
}

#[test]
fn sipctl_calls_a_tls_contact_over_a_verified_tls_connection() {
    let ca = Ca::new();
    let (port, callee) = tls_callee(&ca);
    let s = Sipctl::start(
        "outbound",
        &ca,
        &format!(
            "[[dn]]\nnumber = \"1001\"\ncontact = \"sip:1001@127.0.0.1:{port};transport=tls\"\n"
        ),
    );
    let (sock, _) = invite_over_udp(&s, "1001");
    let resp = final_response(&sock, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no final response:\n{}", s.log()));
    assert!(resp.starts_with("SIP/2.0 486 "), "{resp}");
    let (invite, ack) = callee
        .join()
        .expect("callee thread")
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert!(
        invite.starts_with(&format!(
            "INVITE sip:1001@127.0.0.1:{port};transport=tls SIP/2.0"
        )),
        "{invite}"
    );
    // RFC 3261 §18.1.1 / §20.42: the Via names TLS with sipctl's TLS port; the Contact asks
    // for TLS back to that port.
    let via = header(&invite, "Via").unwrap_or_default();
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS 127.0.0.1:{};branch=z9hG4bK", s.tls)),
        "{invite}"
    );
    assert_eq!(
        header(&invite, "Contact"),
        Some(format!("<sip:sipctl@127.0.0.1:{};transport=tls>", s.tls).as_str()),
        "{invite}"
    );
    // The ACK for the 486 is hop-by-hop, on the same connection (RFC 3261 §17.1.1.3).
    assert!(ack.starts_with("ACK sip:1001@127.0.0.1"), "{ack}");
    assert_eq!(header(&ack, "CSeq").map(|c| c.ends_with("ACK")), Some(true));
}

#[test]
fn a_tls_contact_with_an_untrusted_certificate_gets_no_request() {
    let ca = Ca::new();
    let other = Ca::new();
    // The callee's certificate is from a CA sipctl does not trust.
    let (port, callee) = tls_callee(&other);
    let s = Sipctl::start(
        "outbound-untrusted",
        &ca,
        &format!(
            "[[dn]]\nnumber = \"1001\"\ncontact = \"sip:1001@127.0.0.1:{port};transport=tls\"\n"
        ),
    );
    let (_sock, _) = invite_over_udp(&s, "1001");
    let got = callee.join().expect("callee thread");
    assert!(
        got.is_err(),
        "the INVITE reached an unverified peer: {got:?}"
    );
    assert!(
        s.wait_log("SIP TLS handshake failed", Duration::from_secs(5)),
        "{}",
        s.log()
    );
}

#[test]
fn a_sips_trunk_is_reached_over_tls() {
    let ca = Ca::new();
    let (port, callee) = tls_callee(&ca);
    let s = Sipctl::start(
        "trunk",
        &ca,
        &format!(
            "[[trunk]]\nname = \"carrier\"\naddress = \"sips:127.0.0.1:{port}\"\n\
             [[route]]\ncallee = \"9*\"\ntarget = \"trunk:carrier\"\n"
        ),
    );
    let (sock, _) = invite_over_udp(&s, "9001");
    let resp = final_response(&sock, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no final response:\n{}", s.log()));
    assert!(resp.starts_with("SIP/2.0 486 "), "{resp}");
    let (invite, _ack) = callee
        .join()
        .expect("callee thread")
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert!(invite.starts_with("INVITE sips:"), "{invite}");
    let via = header(&invite, "Via").unwrap_or_default();
    assert!(via.starts_with("SIP/2.0/TLS "), "{invite}");
}
