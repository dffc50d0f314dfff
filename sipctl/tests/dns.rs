//! RFC 3263 location against a real DNS server: dnsmasq in a network namespace this test
//! creates (addresses in 198.18.53.0/24 on its loopback), serving NAPTR, SRV and A records
//! for `.test` names; sipctl's DNS shell ([`sipctl::dns`]) asks it, the locator orders the
//! targets, and a request fails over from an unreachable first target to the second.
//!
//! Needs root (network namespaces) and dnsmasq (`scripts/setup.sh` installs
//! `dnsmasq-base`); without them the tests fail, naming what is missing.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sipctl::config::DnsConfig;
use sipctl::dns::{self, Resolver};
use sipctl::sip::locate::{
    fails_over, Answer, Destination, Failover, Located, Locator, Query, RecordType, Target,
};
use sipctl::sip::Uri;

const DNS_IP: &str = "198.18.53.1";
const A_IP: &str = "198.18.53.10";
const B_IP: &str = "198.18.53.11";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop (also when the test fails).
struct Netns {
    name: String,
    dir: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("lcdns{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("linecord-dns-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "ip netns add failed: these tests need root and iproute2 (scripts/setup.sh): {ok:?}"
        );
        let ns = Netns { name, dir };
        ns.ip(&["link", "set", "lo", "up"]);
        for a in [DNS_IP, A_IP, B_IP] {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        ns
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .status()
            .expect("ip");
        assert!(st.success(), "ip -n {} {args:?}", self.name);
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// dnsmasq serving the test zone inside a namespace; killed on drop.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

/// The zone: `trunk.test` by NAPTR (UDP preferred, then TCP), `srv.test` by SRV only (two
/// targets, different priorities and weights), `plain.test` by A only. `b_port` is the SRV
/// port of the second UDP target (changed by the refresh test).
fn zone_args(b_port: u16) -> Vec<String> {
    [
        "--naptr-record=trunk.test,10,10,S,SIP+D2U,,_sip._udp.trunk.test".to_owned(),
        "--naptr-record=trunk.test,20,10,S,SIP+D2T,,_sip._tcp.trunk.test".to_owned(),
        "--srv-host=_sip._udp.trunk.test,a.trunk.test,5060,10,60".to_owned(),
        format!("--srv-host=_sip._udp.trunk.test,b.trunk.test,{b_port},20,40"),
        "--srv-host=_sip._tcp.trunk.test,a.trunk.test,5070,10,0".to_owned(),
        "--srv-host=_sip._udp.srv.test,b.trunk.test,5090,5,10".to_owned(),
        "--srv-host=_sip._udp.srv.test,a.trunk.test,5080,1,90".to_owned(),
        format!("--host-record=a.trunk.test,{A_IP}"),
        format!("--host-record=b.trunk.test,{B_IP}"),
        format!("--host-record=plain.test,{B_IP}"),
    ]
    .into()
}

impl Dnsmasq {
    fn start(ns: &Netns, b_port: u16) -> Dnsmasq {
        let found = Command::new("dnsmasq")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        assert!(
            matches!(found, Ok(s) if s.success()),
            "dnsmasq is missing: run scripts/setup.sh (apt package dnsmasq-base): {found:?}"
        );
        let log = ns.dir.join(format!("dnsmasq-{b_port}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={DNS_IP}"),
                "--port=53",
                "--user=root",
                "--local=/test/",
                // 1 s: the locator keeps answers its minimum of 5 s, so refreshes are quick.
                "--local-ttl=1",
                "--log-queries",
                "--log-facility=-",
                &format!("--pid-file={}", ns.dir.join("dnsmasq.pid").display()),
            ])
            .args(zone_args(b_port))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start dnsmasq");
        Dnsmasq { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config() -> DnsConfig {
    DnsConfig {
        servers: vec![format!("{DNS_IP}:53").parse().expect("addr")],
        timeout: Duration::from_millis(300),
    }
}

fn dest(uri: &str) -> Destination {
    Destination::from_uri(&Uri::parse(uri).expect("uri")).expect("destination")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits (bounded) until dnsmasq answers.
async fn wait_ready(res: &Resolver) {
    let q = Query {
        name: "a.trunk.test".into(),
        rtype: RecordType::A,
    };
    for _ in 0..50 {
        if matches!(res.answer(&q).await, Answer::Records(_)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dnsmasq did not answer within 5 s");
}

fn shown(l: &Located) -> Vec<String> {
    match l {
        Located::Targets { targets, .. } => targets
            .iter()
            .map(|t| format!("{:?} {}", t.transport, t.addr))
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

fn target(l: &Located) -> Vec<Target> {
    match l {
        Located::Targets { targets, .. } => targets.clone(),
        other => panic!("no targets: {other:?}"),
    }
}

#[test]
fn trunks_found_by_naptr_srv_and_a() {
    let ns = Netns::new();
    let dnsmasq = Dnsmasq::start(&ns, 5062);
    let results = ns.run(|| {
        rt().block_on(async {
            let res = Resolver::new(&config()).expect("resolver");
            wait_ready(&res).await;
            let mut loc = Locator::new();
            let dests = [
                dest("sip:trunk.test"),
                dest("sip:+4930123@srv.test"),
                dest("sip:plain.test"),
                dest("sip:trunk.test;transport=tcp"),
                dest("sip:missing.test"),
            ];
            let mut r = fastrand::Rng::with_seed(1);
            dns::settle(&res, &mut loc, &dests, &mut || r.u32(..)).await
        })
    });
    let log = dnsmasq.log();
    let got: Vec<Vec<String>> = results.iter().map(shown).collect();
    // NAPTR order: UDP (10) before TCP (20); within UDP, SRV priority 10 before 20.
    assert_eq!(
        got[0],
        [
            format!("Udp {A_IP}:5060"),
            format!("Udp {B_IP}:5062"),
            format!("Tcp {A_IP}:5070"),
        ],
        "dnsmasq log:\n{log}"
    );
    // No NAPTR: SRV _sip._udp (and _sip._tcp, none here), priority 1 before 5.
    assert_eq!(
        got[1],
        [format!("Udp {A_IP}:5080"), format!("Udp {B_IP}:5090")],
        "{log}"
    );
    // Neither NAPTR nor SRV: A, port 5060, UDP.
    assert_eq!(got[2], [format!("Udp {B_IP}:5060")], "{log}");
    // transport=tcp: straight to _sip._tcp.
    assert_eq!(got[3], [format!("Tcp {A_IP}:5070")], "{log}");
    assert!(matches!(results[4], Located::Failed(_)), "{:?}", results[4]);
    assert!(log.contains("query[NAPTR] trunk.test"), "{log}");
    assert!(log.contains("query[SRV] _sip._udp.srv.test"), "{log}");
}

#[test]
fn a_request_fails_over_to_the_second_target() {
    let ns = Netns::new();
    let _dnsmasq = Dnsmasq::start(&ns, 5062);
    let attempts = ns.run(|| {
        let located = rt().block_on(async {
            let res = Resolver::new(&config()).expect("resolver");
            wait_ready(&res).await;
            let mut loc = Locator::new();
            let d = [dest("sip:trunk.test;transport=udp")];
            dns::settle(&res, &mut loc, &d, &mut || 0).await
        });
        let targets = target(&located[0]);
        // The second target answers; nothing listens on the first (ICMP port unreachable).
        let b: SocketAddr = format!("{B_IP}:5062").parse().expect("addr");
        let server = UdpSocket::bind(b).expect("bind second target");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, from) = server
                .recv_from(&mut buf)
                .expect("request at the second target");
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            server
                .send_to(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", from)
                .expect("reply");
            req
        });
        let mut failover = Failover::new(targets);
        let mut attempts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(t) = failover.next_target() {
            assert!(Instant::now() < deadline, "failover took too long");
            let sock = UdpSocket::bind(format!("{DNS_IP}:0")).expect("client socket");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            sock.connect(t.addr).expect("connect");
            let options = format!(
                "OPTIONS sip:trunk.test SIP/2.0\r\nVia: SIP/2.0/UDP {DNS_IP};branch=z9hG4bK-{}\r\n\
                 Max-Forwards: 70\r\nTo: <sip:trunk.test>\r\nFrom: <sip:t@{DNS_IP}>;tag=1\r\n\
                 Call-ID: fo-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                attempts.len(),
                attempts.len()
            );
            let _ = sock.send(options.as_bytes());
            let mut buf = [0u8; 2048];
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let status = String::from_utf8_lossy(&buf[..n])
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse::<u16>().ok());
                    attempts.push((t, format!("answer {status:?}")));
                    if !fails_over(status) {
                        break;
                    }
                }
                Err(e) => {
                    attempts.push((t, format!("error {:?}", e.kind())));
                    // RFC 3263 §4.3: a transport error moves on to the next target.
                    assert!(fails_over(None));
                }
            }
        }
        let req = answering.join().expect("server thread");
        (attempts, req)
    });
    let (attempts, req) = attempts;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0.addr.to_string(), format!("{A_IP}:5060"));
    assert_eq!(attempts[0].1, "error ConnectionRefused", "{attempts:?}");
    assert_eq!(attempts[1].0.addr.to_string(), format!("{B_IP}:5062"));
    assert_eq!(attempts[1].1, "answer Some(200)");
    assert!(req.starts_with("OPTIONS sip:trunk.test"), "{req}");
}

#[test]
fn background_refresh_keeps_the_last_good_answer_and_follows_changes() {
    let ns = Netns::new();
    let mut dnsmasq = Dnsmasq::start(&ns, 5062);
    let ns_name = ns.name.clone();
    let (tx_stop, rx_stop) = std::sync::mpsc::channel::<()>();
    let (tx_ev, rx_ev) = std::sync::mpsc::channel::<(Instant, Located)>();
    let worker = {
        let path = format!("/run/netns/{ns_name}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this thread only, with an open namespace file.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            rt().block_on(async move {
                let res = Resolver::new(&config()).expect("resolver");
                wait_ready(&res).await;
                let (tx, mut rx) = tokio::sync::mpsc::channel(16);
                let task = tokio::spawn(dns::keep_located(
                    res,
                    vec![dest("sip:trunk.test;transport=udp")],
                    tx,
                ));
                // Forward updates until told to stop (bounded by the test's own deadline).
                loop {
                    tokio::select! {
                        u = rx.recv() => match u {
                            Some((_, l)) => { let _ = tx_ev.send((Instant::now(), l)); }
                            None => break,
                        },
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {
                            if rx_stop.try_recv().is_ok() { break; }
                        }
                    }
                }
                task.abort();
            });
        })
    };
    let first = rx_ev
        .recv_timeout(Duration::from_secs(10))
        .expect("first update");
    assert_eq!(
        shown(&first.1),
        [format!("Udp {A_IP}:5060"), format!("Udp {B_IP}:5062")]
    );
    // The server goes away: past the answers' expiry (5 s) the refresh fails, and the
    // targets stay as they were (no update, in particular no Failed).
    dnsmasq.stop();
    let quiet = rx_ev.recv_timeout(Duration::from_secs(8));
    assert!(quiet.is_err(), "update without a server: {quiet:?}");
    // Back with the second target moved: the retry (10 s after the failure) picks it up.
    let dnsmasq2 = Dnsmasq::start(&ns, 5064);
    let next = rx_ev
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| {
            panic!(
                "no update after the server came back: {e}\n{}",
                dnsmasq2.log()
            )
        });
    assert_eq!(
        shown(&next.1),
        [format!("Udp {A_IP}:5060"), format!("Udp {B_IP}:5064")]
    );
    let _ = tx_stop.send(());
    worker.join().expect("worker");
}

/// sipctl itself, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemon_locates_a_trunk_given_by_name_at_start() {
    let ns = Netns::new();
    let dnsmasq = Dnsmasq::start(&ns, 5062);
    let config = ns.dir.join("sipctl.toml");
    std::fs::write(
        &config,
        format!(
            r#"[sip]
listen = ["udp:{DNS_IP}:5060"]
[recorder]
ng = "127.0.0.1:2223"
[api]
listen = "127.0.0.1:18099"
[events]
enabled = false
[dns]
servers = ["{DNS_IP}:53"]
timeout-ms = 300
[[trunk]]
name = "carrier"
address = "trunk.test"
transport = "udp"
"#
        ),
    )
    .expect("config");
    let log = ns.dir.join("sipctl.log");
    let _sipctl = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_sipctl")])
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sipctl"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("located") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = text
        .lines()
        .find(|l| l.contains("located"))
        .unwrap_or_else(|| {
            panic!(
                "sipctl did not locate the trunk:\n{text}\n{}",
                dnsmasq.log()
            )
        });
    assert!(line.contains("trunk.test"), "{line}");
    let a = line
        .find(&format!("{A_IP}:5060"))
        .expect("first target in the log");
    let b = line
        .find(&format!("{B_IP}:5062"))
        .expect("second target in the log");
    assert!(a < b, "priority order: {line}");
    assert!(dnsmasq.log().contains("query[SRV] _sip._udp.trunk.test"));
}
