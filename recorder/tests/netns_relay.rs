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
    relay_and_record(&["--backend", "xdp", "--interface-name", "rec0"]);
}

/// A recorded call between A and B through the recorder running with `backend` flags.
fn relay_and_record(backend: &[&str]) {
    let topo = Topology::up(2);
    let data = temp_dir("netns");
    let _rec = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &topo.ns("rec")])
            .arg(recorder_bin())
            .args(backend)
            .args([
                "--interface",
                "198.18.0.1",
                "--listen-ng",
                "127.0.0.1:2223",
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
    );
    let ng = NgClient::with_socket(
        udp_in_netns(&topo.ns("rec"), "127.0.0.1:0"),
        "127.0.0.1:2223".parse().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while ng.try_call(&Request::new(Ng::Ping).to_value()).is_err() {
        assert!(
            Instant::now() < deadline,
            "recorder in its namespace does not answer"
        );
    }

    let mut a = Party::with_socket(udp_in_netns(&topo.ns("a"), "198.18.0.10:0"));
    let mut b = Party::with_socket(udp_in_netns(&topo.ns("b"), "198.18.0.20:0"));
    let mut offer = request(Ng::Offer, "netns-1", "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    offer.record_call = Some(true);
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

    let q = ng.ok(&request(Ng::Query, "netns-1", "tag-a", None));
    let packets = q
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .and_then(|t| t.get("packets"))
        .and_then(Value::as_int);
    assert_eq!(packets, Some(100));
    let recorded = q
        .get("recording")
        .and_then(|r| r.get("packets"))
        .and_then(Value::as_int);
    assert_eq!(recorded, Some(100));
    let stats = ng.ok(&Request::new(Ng::Statistics));
    let xdp = stats
        .get("statistics")
        .and_then(|s| s.get("totalstatistics"))
        .and_then(|t| t.get("xdp"));
    if backend.contains(&"xdp") {
        let x = xdp.expect("xdp counters in statistics");
        let int = |k: &str| x.get(k).and_then(Value::as_int).unwrap_or(-1);
        eprintln!(
            "xdp counters: redirected {} kernel path {}",
            int("redirected"),
            int("kernelpath")
        );
        assert!(int("redirected") >= 100, "{x:?}");
        // Only packets sent before the neighbour table knew a party may use the kernel.
        assert!(
            int("kernelpath") < 50,
            "most packets must take the AF_XDP path: {x:?}"
        );
    } else {
        assert!(xdp.is_none());
    }
    ng.ok(&request(Ng::Delete, "netns-1", "tag-a", Some("tag-b")));

    let deadline = Instant::now() + Duration::from_secs(10);
    let job = loop {
        let found = std::fs::read_dir(data.join("spool/new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .find_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        if let Some(j) = found {
            break j;
        }
        assert!(Instant::now() < deadline, "no job spooled");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job["status"], "complete");
    assert_eq!(job["streams"][0]["source"], a.addr().to_string());
    let _ = std::fs::remove_dir_all(&data);
}
