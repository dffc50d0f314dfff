//! The relay and recording across the netns topology (`scripts/netns.sh`): party A and B in
//! their own namespaces, the recorder in its own, joined by a bridge. Needs root (CI runs as
//! root); the topology is removed afterwards, also when the test fails.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::{Command as Ng, Request};
use support::*;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn call_relays_and_records_across_namespaces_with_the_udp_backend() {
    relay_and_record(&["--backend", "udp"]);
}

#[test]
fn call_relays_and_records_across_namespaces_with_the_xdp_backend() {
    relay_and_record(XDP);
}

/// A recorded call between A and B through the recorder running with `backend` flags.
fn relay_and_record(backend: &[&str]) {
    let topo = Topology::up(2);
    let data = temp_dir("netns");
    let _rec = start_in(&topo.ns("rec"), backend, &data);
    let ng = ng_local(&topo.ns("rec"));

    let mut a = Party::with_socket(udp_in_netns(&topo.ns("a"), "198.18.0.10:0"));
    let mut b = Party::with_socket(udp_in_netns(&topo.ns("b"), "198.18.0.20:0"));
    let mut offer = request(Ng::Offer, "netns-1", "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    let r = ng.ok(&offer);
    let b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    assert_eq!(b_to.ip().to_string(), "198.18.0.1");
    let mut answer = request(Ng::Answer, "netns-1", "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(b.addr()).into_bytes());
    let r = ng.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());

    let sent = a.send_rtp(a_to, 50);
    let got = b.recv_n(50);
    assert_eq!(got.len(), 50, "A -> B across namespaces");
    for ((p, src), s) in got.iter().zip(&sent) {
        assert_eq!(p, s);
        assert_eq!(*src, b_to);
    }
    let sent = b.send_rtp(b_to, 50);
    let got = a.recv_n(50);
    assert_eq!(got.len(), 50, "B -> A across namespaces");
    assert!(got
        .iter()
        .zip(&sent)
        .all(|((p, src), s)| p == s && *src == a_to));

    // Then a recorded stretch of speech both ways, to compare the export bit for bit.
    let mut start = request(Ng::StartRecording, "netns-1", "tag-a", None);
    start.metadata = Some("netns".into());
    ng.ok(&start);
    let (a_pcm, b_pcm) = (speech(2.0, 140.0), speech(2.0, 200.0));
    let mut call = Call {
        call_id: "netns-1".into(),
        a,
        b,
        a_to,
        b_to,
    };
    play(&mut call, &a_pcm, &b_pcm, |_| {});
    assert_eq!(call.b.recv_n(100).len(), 100, "A's speech reached B");
    assert_eq!(call.a.recv_n(100).len(), 100, "B's speech reached A");
    let a = call.a;

    let q = ng.ok(&request(Ng::Query, "netns-1", "tag-a", None));
    let packets = q
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|t| t.get("packets"))
        .and_then(Value::as_int);
    assert_eq!(packets, Some(300));
    let recorded = q
        .get("recording")
        .and_then(|r| r.get("packets"))
        .and_then(Value::as_int);
    assert_eq!(recorded, Some(200));
    let xdp = xdp_stats(&ng);
    if backend.contains(&"xdp") {
        let x = xdp.expect("xdp counters in statistics");
        let int = |k: &str| counter(&x, k);
        eprintln!(
            "xdp counters: redirected {} kernel path {}",
            int("redirected"),
            int("kernelpath")
        );
        assert!(int("redirected") >= 300, "{x:?}");
        // Only packets sent before the neighbour table knew a party may use the kernel.
        assert!(
            int("kernelpath") < 50,
            "most packets must take the AF_XDP path: {x:?}"
        );
    } else {
        assert!(xdp.is_none());
    }
    ng.ok(&request(Ng::Delete, "netns-1", "tag-a", Some("tag-b")));

    let job = wait_jobs_in(&data.join("spool/new"), 1).remove(0);
    assert_eq!(job["status"], "complete");
    assert_eq!(job["streams"][0]["source"], a.addr().to_string());
    let file = std::path::PathBuf::from(job["file"].as_str().unwrap());
    let wav = data.join("netns.wav");
    export(&file, "--wav", &wav);
    let (_, left, right) = read_wav(&wav);
    assert_channel_is(&left, &g711_round_trip(&a_pcm), "caller");
    assert_channel_is(&right, &g711_round_trip(&b_pcm), "callee");
    let _ = std::fs::remove_dir_all(&data);
}

/// The xdp backend's flags for the topology.
const XDP: &[&str] = &["--backend", "xdp", "--interface-name", "rec0"];

/// Starts the recorder in namespace `ns` with `backend` flags, NG on every address there.
fn start_in(ns: &str, backend: &[&str], data: &std::path::Path) -> Daemon {
    start_on(ns, "198.18.0.1", backend, data)
}

/// Like [`start_in`], with media on address `media`.
fn start_on(ns: &str, media: &str, backend: &[&str], data: &std::path::Path) -> Daemon {
    Daemon(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(recorder_bin())
            .args(backend)
            .args([
                "--interface",
                media,
                "--listen-ng",
                "0.0.0.0:2223",
                "--port-min",
                "30000",
                "--port-max",
                "30099",
                "--log-level",
                "warn",
                "--recording-dir",
                &data.join("recordings").display().to_string(),
                "--spool-dir",
                &data.join("spool").display().to_string(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start recorder in its namespace"),
    )
}

/// An NG client inside the recorder's namespace, once the recorder answers `ping`.
fn ng_local(ns: &str) -> NgClient {
    let ng = NgClient::with_socket(
        udp_in_netns(ns, "127.0.0.1:0"),
        "127.0.0.1:2223".parse().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ng.try_call(&Request::new(Ng::Ping).to_value()).is_err() {
        assert!(
            Instant::now() < deadline,
            "recorder in {ns} does not answer"
        );
    }
    ng
}

/// Waits until the recorder answers NG `ping` sent by party A over the XDP interface.
fn wait_ping_over_rec0(ng: &NgClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ng.try_call(&Request::new(Ng::Ping).to_value()).is_err() {
        assert!(
            Instant::now() < deadline,
            "NG control port unreachable over rec0"
        );
    }
}

fn wait_exit(d: &mut Daemon) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = d.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "recorder did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn xdp_program_is_gone_after_sigterm_and_after_kill_9_and_restarts_cleanly() {
    let topo = Topology::up(2);
    let rec = topo.ns("rec");
    let data = temp_dir("xdp-life");
    // NG from party A reaches the recorder through rec0 while the program is attached.
    let ng = NgClient::with_socket(
        udp_in_netns(&topo.ns("a"), "198.18.0.10:0"),
        "198.18.0.1:2223".parse().unwrap(),
    );

    let mut d = start_in(&rec, XDP, &data);
    wait_ping_over_rec0(&ng);
    assert!(xdp_attached(&rec, "rec0"));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) }, 0);
    assert!(wait_exit(&mut d).success());
    assert!(
        !xdp_attached(&rec, "rec0"),
        "clean shutdown detaches the program"
    );

    let mut d = start_in(&rec, XDP, &data);
    wait_ping_over_rec0(&ng);
    assert!(xdp_attached(&rec, "rec0"));
    d.0.kill().unwrap();
    wait_exit(&mut d);
    assert!(
        !xdp_attached(&rec, "rec0"),
        "the kernel removes the link of a killed recorder"
    );

    let _d = start_in(&rec, XDP, &data);
    wait_ping_over_rec0(&ng);
    assert!(xdp_attached(&rec, "rec0"), "restart after kill -9 attaches");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn xdp_backend_sends_through_the_kernel_until_the_neighbour_is_known() {
    let topo = Topology::up(2);
    let rec = topo.ns("rec");
    let data = temp_dir("xdp-neigh");
    // Forget A and B: the recorder must not have their MACs when media starts.
    let flushed = Command::new("ip")
        .args(["-n", &rec, "neigh", "flush", "all"])
        .status()
        .unwrap();
    assert!(flushed.success());
    let _d = start_in(&rec, XDP, &data);
    let ng = ng_local(&rec);
    let mut a = Party::with_socket(udp_in_netns(&topo.ns("a"), "198.18.0.10:0"));
    let b = Party::with_socket(udp_in_netns(&topo.ns("b"), "198.18.0.20:0"));
    let mut offer = request(Ng::Offer, "neigh-1", "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    let r = ng.ok(&offer);
    let _b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    let mut answer = request(Ng::Answer, "neigh-1", "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(b.addr()).into_bytes());
    let r = ng.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    // 1 s of A -> B at 50 packets/s: the first go through the kernel (which resolves B),
    // the rest through AF_XDP once the neighbour table has B.
    let mut sent = Vec::new();
    for _ in 0..50 {
        sent.extend(a.send_rtp(a_to, 1));
        std::thread::sleep(Duration::from_millis(19));
    }
    let got = b.recv_n(50);
    assert_eq!(got.len(), 50, "every packet reached B");
    assert!(got.iter().zip(&sent).all(|((p, _), s)| p == s));
    let x = xdp_stats(&ng).expect("xdp counters");
    let int = |k: &str| counter(&x, k);
    eprintln!("kernel path {} of 50", int("kernelpath"));
    assert!(
        int("kernelpath") >= 1,
        "the first packets took the kernel path: {x:?}"
    );
    assert!(
        int("kernelpath") < 50,
        "later packets took the AF_XDP path: {x:?}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn xdp_backend_spreads_calls_over_queues_and_relays_and_records_them_all() {
    const CALLS: usize = 8;
    let topo = Topology::up(2);
    let rec = topo.ns("rec");
    let data = temp_dir("xdp-mq");
    let _d = start_in(&rec, XDP, &data);
    let ng = ng_local(&rec);
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let a = Party::with_socket(udp_in_netns(&topo.ns("a"), "198.18.0.10:0"));
        let b = Party::with_socket(udp_in_netns(&topo.ns("b"), "198.18.0.20:0"));
        let id = format!("mq-{i}");
        let mut offer = request(Ng::Offer, &id, "tag-a", None);
        offer.sdp = Some(party_sdp(a.addr()).into_bytes());
        offer.record_call = Some(true);
        let r = ng.ok(&offer);
        let b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
        let mut answer = request(Ng::Answer, &id, "tag-a", Some("tag-b"));
        answer.sdp = Some(party_sdp(b.addr()).into_bytes());
        let r = ng.ok(&answer);
        let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
        calls.push(Call {
            call_id: id,
            a,
            b,
            a_to,
            b_to,
        });
    }
    for c in &mut calls {
        c.a.send_rtp(c.a_to, 20);
        c.b.send_rtp(c.b_to, 20);
    }
    for c in &calls {
        assert_eq!(c.b.recv_n(20).len(), 20, "{}: A -> B", c.call_id);
        assert_eq!(c.a.recv_n(20).len(), 20, "{}: B -> A", c.call_id);
        ng.ok(&request(Ng::Delete, &c.call_id, "tag-a", Some("tag-b")));
    }
    let s = ng.ok(&Request::new(Ng::Statistics));
    let workers: Vec<i64> = s
        .get("statistics")
        .and_then(|s| s.get("totalstatistics"))
        .and_then(|t| t.get("workers"))
        .and_then(Value::as_list)
        .expect("per-worker counters")
        .iter()
        .map(|w| w.get("received").and_then(Value::as_int).unwrap_or(0))
        .collect();
    eprintln!("packets per queue worker: {workers:?}");
    assert_eq!(workers.len(), 2, "one worker per queue");
    // 32 flows (8 calls x 2 directions x different ports): all on one queue has odds 2^-31.
    assert!(
        workers.iter().all(|n| *n > 0),
        "both queues carried calls: {workers:?}"
    );
    assert_eq!(workers.iter().sum::<i64>(), (CALLS * 40) as i64);
    // Every call's recording is complete, with both directions, even when its two
    // directions were handled by different queues.
    let jobs = wait_jobs_in(&data.join("spool/new"), CALLS);
    assert_eq!(jobs.len(), CALLS);
    for j in &jobs {
        assert_eq!(j["status"], "complete", "{j}");
        let packets: u64 = j["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["packets"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(packets, 40, "{}", j["call_id"]);
    }
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn xdp_backend_reaches_a_party_behind_a_gateway_on_the_fast_path() {
    let topo = Topology::up(2);
    let (rec, b_ns) = (topo.ns("rec"), topo.ns("b"));
    let data = temp_dir("xdp-gw");
    // B also owns 203.0.113.5 and routes it; the recorder reaches that network via B.
    for args in [
        vec![
            "-n",
            b_ns.as_str(),
            "addr",
            "add",
            "203.0.113.5/32",
            "dev",
            "lo",
        ],
        vec![
            "-n",
            rec.as_str(),
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "198.18.0.20",
        ],
    ] {
        assert!(
            Command::new("ip").args(&args).status().unwrap().success(),
            "{args:?}"
        );
    }
    let _d = start_in(&rec, XDP, &data);
    let ng = ng_local(&rec);
    let mut a = Party::with_socket(udp_in_netns(&topo.ns("a"), "198.18.0.10:0"));
    let b = Party::with_socket(udp_in_netns(&b_ns, "203.0.113.5:0"));
    let mut offer = request(Ng::Offer, "gw-1", "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    ng.ok(&offer);
    let mut answer = request(Ng::Answer, "gw-1", "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(b.addr()).into_bytes());
    let r = ng.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    let sent = a.send_rtp(a_to, 40);
    let got = b.recv_n(40);
    assert_eq!(got.len(), 40, "B behind the gateway got every packet");
    assert!(got.iter().zip(&sent).all(|((p, _), s)| p == s));
    let kernel = counter(&xdp_stats(&ng).expect("xdp counters"), "kernelpath");
    // The gateway's MAC was known from the topology's start-up pings: no kernel path at all.
    assert_eq!(
        kernel, 0,
        "packets to an off-link party use the gateway's MAC"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// SDP of a party at an IPv6 address.
fn party_sdp6(addr: std::net::SocketAddr) -> String {
    party_sdp(addr).replace("IN IP4", "IN IP6")
}

#[test]
fn xdp_backend_relays_and_records_over_ipv6() {
    let topo = Topology::up(2);
    let rec = topo.ns("rec");
    let data = temp_dir("xdp-v6");
    let _d = start_on(&rec, "2001:2::1", XDP, &data);
    let ng = ng_local(&rec);
    let mut a = Party::with_socket(udp_in_netns(&topo.ns("a"), "[2001:2::10]:0"));
    let mut b = Party::with_socket(udp_in_netns(&topo.ns("b"), "[2001:2::20]:0"));
    let mut offer = request(Ng::Offer, "v6-1", "tag-a", None);
    offer.sdp = Some(party_sdp6(a.addr()).into_bytes());
    offer.record_call = Some(true);
    let r = ng.ok(&offer);
    let b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    assert_eq!(b_to.ip().to_string(), "2001:2::1");
    let mut answer = request(Ng::Answer, "v6-1", "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp6(b.addr()).into_bytes());
    let r = ng.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    // 1 s each way at 50 packets/s: the first may use the kernel until neighbours resolve.
    let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        sent_a.extend(a.send_rtp(a_to, 1));
        sent_b.extend(b.send_rtp(b_to, 1));
        std::thread::sleep(Duration::from_millis(18));
    }
    let got_b = b.recv_n(50);
    let got_a = a.recv_n(50);
    assert_eq!((got_b.len(), got_a.len()), (50, 50), "IPv6 both ways");
    assert!(got_b
        .iter()
        .zip(&sent_a)
        .all(|((p, src), s)| p == s && *src == b_to));
    assert!(got_a
        .iter()
        .zip(&sent_b)
        .all(|((p, src), s)| p == s && *src == a_to));
    let x = xdp_stats(&ng).expect("xdp counters");
    let int = |k: &str| counter(&x, k);
    eprintln!(
        "IPv6: redirected {} kernel path {}",
        int("redirected"),
        int("kernelpath")
    );
    assert!(int("redirected") >= 100, "{x:?}");
    assert!(
        int("kernelpath") < 50,
        "IPv6 packets take the AF_XDP path once resolved: {x:?}"
    );
    let q = ng.ok(&request(Ng::Query, "v6-1", "tag-a", None));
    let recorded = q
        .get("recording")
        .and_then(|r| r.get("packets"))
        .and_then(Value::as_int);
    assert_eq!(recorded, Some(100));
    let _ = std::fs::remove_dir_all(&data);
}

/// The `xdp` counters of NG `statistics`, when the xdp backend runs.
fn xdp_stats(ng: &NgClient) -> Option<Value> {
    ng.ok(&Request::new(Ng::Statistics))
        .get("statistics")
        .and_then(|s| s.get("totalstatistics"))
        .and_then(|t| t.get("xdp"))
        .cloned()
}

/// One integer of a counters dictionary (-1 when missing).
fn counter(x: &Value, key: &str) -> i64 {
    x.get(key).and_then(Value::as_int).unwrap_or(-1)
}
