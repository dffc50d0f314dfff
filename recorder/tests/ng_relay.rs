//! End-to-end tests of the real `recorder` binary on loopback: NG signalling as Kamailio's
//! rtpengine module sends it, RTP between two plain UDP sockets through the relay, and bad
//! input of every kind. Each test uses its own recorder and port range.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::{Command, Request};
use support::*;

fn stream_stats<'a>(q: &'a Value, tag: &str, stream: usize) -> &'a Value {
    let s = q
        .get("tags")
        .and_then(|t| t.get(tag))
        .and_then(|t| t.get("medias"))
        .and_then(Value::as_list)
        .and_then(|m| m.first())
        .and_then(|m| m.get("streams"))
        .and_then(Value::as_list)
        .and_then(|s| s.get(stream))
        .unwrap_or_else(|| panic!("no stream {stream} for tag {tag} in {q:?}"));
    s
}

fn int(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for k in path {
        cur = cur.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}"));
    }
    cur.as_int()
        .unwrap_or_else(|| panic!("{path:?} not an int"))
}

fn port_is_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn relays_rtp_both_ways_with_query_counters_and_frees_ports_on_delete() {
    let rec = Recorder::start(40_000, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-relay-1", &["trust-address"]);
    assert_eq!(call.a_to.ip().to_string(), "127.0.0.1");
    assert!((rec.port_min..=rec.port_max).contains(&call.a_to.port()));
    assert!((rec.port_min..=rec.port_max).contains(&call.b_to.port()));
    assert_ne!(call.a_to.port(), call.b_to.port());

    // A -> B: payloads intact, sent from the port advertised to B.
    let sent = call.a.send_rtp(call.a_to, 50);
    let got = call.b.recv_n(50);
    assert_eq!(got.len(), 50, "B received {} of 50", got.len());
    for ((p, src), s) in got.iter().zip(&sent) {
        assert_eq!(p, s);
        assert_eq!(*src, call.b_to, "B's packets come from the port B sends to");
    }
    // B -> A.
    let sent = call.b.send_rtp(call.b_to, 30);
    let got = call.a.recv_n(30);
    assert_eq!(got.len(), 30);
    for ((p, src), s) in got.iter().zip(&sent) {
        assert_eq!(p, s);
        assert_eq!(*src, call.a_to);
    }
    // RTCP pair: A's RTCP port (rtp+1) to B's RTCP (its rtp+1).
    let a_rtcp = UdpSocket::bind(SocketAddr::new(
        call.a.addr().ip(),
        call.a.addr().port() + 1,
    ));
    let b_rtcp = UdpSocket::bind(SocketAddr::new(
        call.b.addr().ip(),
        call.b.addr().port() + 1,
    ));
    if let (Ok(a_rtcp), Ok(b_rtcp)) = (a_rtcp, b_rtcp) {
        b_rtcp
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
        a_rtcp
            .send_to(&rr, SocketAddr::new(call.a_to.ip(), call.a_to.port() + 1))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, src) = b_rtcp.recv_from(&mut buf).expect("RTCP relayed");
        assert_eq!(&buf[..n], &rr);
        assert_eq!(src.port(), call.b_to.port() + 1);
    }

    let mut q = request(Command::Query, &call.call_id, "tag-a", None);
    q.to_tag = Some("tag-b".into());
    let q = ng.ok(&q);
    let a_rtp = stream_stats(&q, "tag-a", 0);
    assert_eq!(int(a_rtp, &["stats", "packets"]), 50);
    assert_eq!(int(a_rtp, &["stats", "bytes"]), 50 * 172);
    assert_eq!(int(a_rtp, &["stats", "errors"]), 0);
    assert_eq!(int(a_rtp, &["lost"]), 0);
    assert_eq!(int(a_rtp, &["local port"]), i64::from(call.a_to.port()));
    assert_eq!(
        int(a_rtp, &["endpoint", "port"]),
        i64::from(call.a.addr().port())
    );
    assert_eq!(int(a_rtp, &["SSRC"]), i64::from(call.a.ssrc));
    let b_rtp = stream_stats(&q, "tag-b", 0);
    assert_eq!(int(b_rtp, &["stats", "packets"]), 30);
    assert_eq!(int(&q, &["totals", "RTP", "packets"]), 80);
    assert_eq!(
        q.get("tags")
            .and_then(|t| t.get("tag-a"))
            .and_then(|t| t.get("in dialogue with"))
            .and_then(Value::as_str),
        Some("tag-b")
    );

    // Delete: final stats in the reply, then the call and its ports are gone.
    let d = ng.ok(&request(
        Command::Delete,
        &call.call_id,
        "tag-a",
        Some("tag-b"),
    ));
    assert_eq!(int(&d, &["totals", "RTP", "packets"]), 80);
    let reason = ng.err(&request(Command::Query, &call.call_id, "tag-a", None).to_value());
    assert!(reason.contains("Unknown call-id"), "{reason}");
    for port in [call.a_to.port(), call.b_to.port()] {
        wait_until("media ports to be closed", || {
            port_is_free(port) && port_is_free(port + 1)
        });
    }
    call.a.send_rtp(call.a_to, 5);
    assert_eq!(call.b.count_for(Duration::from_millis(300)), 0);
}

#[test]
fn retransmitted_cookie_gets_the_cached_reply_and_reoffers_keep_ports() {
    let rec = Recorder::start(40_100, &[]);
    let ng = rec.client();
    let a = Party::new();
    let mut offer = request(Command::Offer, "call-cookie", "tag-a", None);
    offer.sdp = Some(party_sdp(a.addr()).into_bytes());
    let body = offer.to_value();
    let r1 = ng.call_with_cookie("same-cookie", &body).unwrap();
    let r2 = ng.call_with_cookie("same-cookie", &body).unwrap();
    assert_eq!(r1, r2);
    // A re-offer with a new cookie is processed again and keeps the port.
    let r3 = ng.try_call(&body).unwrap();
    let port = |v: &Value| sdp_media_addr(v.get("sdp").and_then(Value::as_bytes).unwrap());
    assert_eq!(port(&r1), port(&r3));
    let list = ng.ok(&Request::new(Command::List));
    assert_eq!(
        list.get("calls")
            .and_then(Value::as_list)
            .map(<[Value]>::len),
        Some(1)
    );
    let stats = ng.ok(&Request::new(Command::Statistics));
    assert_eq!(
        int(
            &stats,
            &["statistics", "totalstatistics", "controlretransmissions"]
        ),
        1
    );
}

#[test]
fn reoffer_with_new_address_moves_the_party() {
    let rec = Recorder::start(40_200, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-move", &["trust-address"]);
    call.a.send_rtp(call.a_to, 3);
    assert_eq!(call.b.recv_n(3).len(), 3);
    call.b.send_rtp(call.b_to, 3);
    assert_eq!(call.a.recv_n(3).len(), 3);

    // A re-INVITEs from a new address (e.g. a transfer to another phone).
    let a2 = Party::new();
    let mut offer = request(Command::Offer, &call.call_id, "tag-a", Some("tag-b"));
    offer.sdp = Some(party_sdp(a2.addr()).into_bytes());
    offer.flags = vec!["trust-address".into()];
    let r = ng.ok(&offer);
    assert_eq!(
        sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap()),
        call.b_to
    );
    let mut answer = request(Command::Answer, &call.call_id, "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(call.b.addr()).into_bytes());
    let r = ng.ok(&answer);
    assert_eq!(
        sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap()),
        call.a_to
    );

    call.b.send_rtp(call.b_to, 10);
    assert_eq!(a2.recv_n(10).len(), 10, "B's media goes to A's new address");
    assert_eq!(call.a.count_for(Duration::from_millis(200)), 0);
}

#[test]
fn strict_source_drops_packets_from_elsewhere() {
    let rec = Recorder::start(40_300, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-strict", &["trust-address", "strict-source"]);
    let mut intruder = Party::new();
    intruder.send_rtp(call.a_to, 10);
    assert_eq!(call.b.count_for(Duration::from_millis(300)), 0);
    call.a.send_rtp(call.a_to, 10);
    assert_eq!(call.b.recv_n(10).len(), 10);
    let q = ng.ok(&request(Command::Query, &call.call_id, "tag-a", None));
    assert_eq!(int(stream_stats(&q, "tag-a", 0), &["stats", "errors"]), 10);
}

#[test]
fn symmetric_latching_answers_to_the_real_source() {
    let rec = Recorder::start(40_400, &[]);
    let ng = rec.client();
    // A's SDP claims an address nobody listens on (a NAT's private side); A's packets come
    // from its real socket, and B's packets must go back there.
    let mut a = Party::new();
    let b = Party::new();
    let mut offer = request(Command::Offer, "call-nat", "tag-a", None);
    offer.sdp = Some(party_sdp("127.0.0.1:9".parse().unwrap()).into_bytes());
    offer.flags = vec!["trust-address".into()];
    let r = ng.ok(&offer);
    let b_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    let mut answer = request(Command::Answer, "call-nat", "tag-a", Some("tag-b"));
    answer.sdp = Some(party_sdp(b.addr()).into_bytes());
    let r = ng.ok(&answer);
    let a_to = sdp_media_addr(r.get("sdp").and_then(Value::as_bytes).unwrap());
    a.send_rtp(a_to, 5);
    assert_eq!(b.recv_n(5).len(), 5);
    let mut b = b;
    b.send_rtp(b_to, 5);
    assert_eq!(a.recv_n(5).len(), 5, "latched onto A's real address");
    let q = ng.ok(&request(Command::Query, "call-nat", "tag-a", None));
    assert_eq!(
        int(stream_stats(&q, "tag-a", 0), &["endpoint", "port"]),
        i64::from(a.addr().port())
    );
}

#[test]
fn media_timeout_deletes_abandoned_calls() {
    let rec = Recorder::start(40_500, &["--media-timeout", "1"]);
    let ng = rec.client();
    let call = setup_call(&ng, "call-abandoned", &[]);
    wait_until("the call to time out", || {
        let l = ng.ok(&Request::new(Command::List));
        l.get("calls")
            .and_then(Value::as_list)
            .is_some_and(<[Value]>::is_empty)
    });
    wait_until("ports freed", || port_is_free(call.a_to.port()));
    let s = ng.ok(&Request::new(Command::Statistics));
    assert_eq!(
        int(&s, &["statistics", "totalstatistics", "timeoutsessions"]),
        1
    );
}

#[test]
fn bad_input_gets_errors_or_counters_and_the_daemon_keeps_answering() {
    let rec = Recorder::start(40_600, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-good", &["trust-address"]);

    // Control plane.
    assert!(
        ng.raw(b"no-space-no-cookie").is_err(),
        "no cookie: nothing to answer"
    );
    let garbage = ng.raw(b"c1 d7:command4:ping").unwrap();
    assert!(String::from_utf8_lossy(&garbage).starts_with("c1 d"));
    assert!(String::from_utf8_lossy(&garbage).contains("error"));
    let mut huge = b"c2 ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 60_000));
    assert!(String::from_utf8_lossy(&ng.raw(&huge).unwrap()).contains("error"));
    let reason = ng.err(&Request::new(Command::Other("frobnicate".into())).to_value());
    assert!(reason.contains("frobnicate"), "{reason}");
    let mut no_id = Request::new(Command::Offer);
    no_id.sdp = Some(b"v=0".to_vec());
    assert!(ng.err(&no_id.to_value()).contains("call-id"));
    let mut no_sdp = request(Command::Offer, "x", "t", None);
    assert!(ng.err(&no_sdp.to_value()).contains("sdp"));
    no_sdp.sdp = Some(
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n"
            .to_vec(),
    );
    let reason = ng.err(&no_sdp.to_value());
    assert!(reason.to_lowercase().contains("audio"), "{reason}");
    no_sdp.sdp = Some(b"this is not SDP".to_vec());
    assert!(ng.err(&no_sdp.to_value()).contains("SDP"));
    let mut flag = request(Command::Offer, "y", "t", None);
    flag.sdp = Some(party_sdp("127.0.0.1:4000".parse().unwrap()).into_bytes());
    flag.flags = vec!["transcode-opus".into()];
    assert!(ng.err(&flag.to_value()).contains("transcode-opus"));
    let mut key = flag.clone();
    key.flags.clear();
    let mut body = key.to_value();
    body.insert("DTLS", "passive");
    assert!(ng.err(&body).contains("dtls"));
    let mut wrong_type = Request::new(Command::Query).to_value();
    wrong_type.insert("call-id", Value::List(vec![]));
    assert!(ng.err(&wrong_type).contains("call-id"));
    let answer_unknown = request(Command::Answer, "nope", "a", Some("b"));
    let mut answer_unknown = answer_unknown;
    answer_unknown.sdp = Some(party_sdp("127.0.0.1:4000".parse().unwrap()).into_bytes());
    assert!(ng
        .err(&answer_unknown.to_value())
        .contains("Unknown call-id"));

    // Media plane: truncated RTP, garbage, oversized, unknown port.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(&[0x80, 0, 1], call.a_to).unwrap();
    junk.send_to(b"GET / HTTP/1.0\r\n\r\n", call.a_to).unwrap();
    junk.send_to(&vec![0x80; 9000], call.a_to).unwrap();
    let unused = (rec.port_min..=rec.port_max)
        .find(|p| *p != call.a_to.port() && *p != call.b_to.port() && port_is_free(*p))
        .unwrap();
    junk.send_to(&call.a.rtp(), ("127.0.0.1", unused)).unwrap();
    assert_eq!(call.b.count_for(Duration::from_millis(200)), 0);

    // The good call is undisturbed and the daemon still answers.
    call.a.send_rtp(call.a_to, 20);
    assert_eq!(call.b.recv_n(20).len(), 20);
    ng.ok(&Request::new(Command::Ping));
    let q = ng.ok(&request(Command::Query, "call-good", "tag-a", None));
    assert_eq!(int(stream_stats(&q, "tag-a", 0), &["stats", "packets"]), 20);
    assert_eq!(int(stream_stats(&q, "tag-a", 0), &["stats", "errors"]), 3);
    let s = ng.ok(&Request::new(Command::Statistics));
    assert!(
        int(
            &s,
            &["statistics", "totalstatistics", "packets", "malformed"]
        ) >= 3
    );
    assert!(int(&s, &["statistics", "totalstatistics", "controlerrors"]) >= 10);
}

#[test]
fn port_exhaustion_is_a_clear_error_and_recovers() {
    // 100 ports = 50 pairs = 25 calls of one media line each.
    let rec = Recorder::start(40_700, &[]);
    let ng = rec.client();
    let sdp = party_sdp("127.0.0.1:4000".parse().unwrap()).into_bytes();
    let mut made = 0;
    let reason = loop {
        let mut offer = request(Command::Offer, &format!("exhaust-{made}"), "a", None);
        offer.sdp = Some(sdp.clone());
        let v = ng.try_call(&offer.to_value()).unwrap();
        if v.get("result").and_then(Value::as_str) == Some("error") {
            break v
                .get("error-reason")
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
        }
        made += 1;
        assert!(made <= 50, "more calls than port pairs");
    };
    assert_eq!(made, 25);
    assert!(reason.contains("ports"), "{reason}");
    ng.ok(&request(Command::Delete, "exhaust-0", "a", None));
    let mut offer = request(Command::Offer, "exhaust-again", "a", None);
    offer.sdp = Some(sdp);
    ng.ok(&offer);
}

#[test]
fn sigterm_stops_cleanly_and_finishes_recordings() {
    let mut rec = Recorder::start(40_800, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-at-shutdown", &["trust-address"]);
    ng.ok(&request(
        Command::StartRecording,
        "call-at-shutdown",
        "tag-a",
        None,
    ));
    call.a.send_rtp(call.a_to, 20);
    assert_eq!(call.b.recv_n(20).len(), 20);
    let pid = rec.child.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = rec.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "recorder did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    // The recording in progress was finished, not left for recovery.
    let jobs = rec.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["status"], "complete");
    assert_eq!(jobs[0]["streams"][0]["packets"], 20);
    let left: Vec<_> = std::fs::read_dir(rec.data.join("recordings/.inprogress"))
        .unwrap()
        .collect();
    assert!(left.is_empty());
}

#[test]
fn backend_auto_falls_back_to_udp_when_xdp_cannot_run() {
    let rec = Recorder::start(
        40_900,
        &["--backend", "auto", "--interface-name", "nonexistent0"],
    );
    let ng = rec.client();
    let mut call = setup_call(&ng, "call-auto", &["trust-address"]);
    call.a.send_rtp(call.a_to, 10);
    assert_eq!(call.b.recv_n(10).len(), 10);
    let s = ng.ok(&Request::new(Command::Statistics));
    assert!(
        s.get("statistics")
            .and_then(|s| s.get("totalstatistics"))
            .and_then(|t| t.get("xdp"))
            .is_none(),
        "running the udp backend"
    );
}
