//! Blind transfer with direct media, leg by leg (the recorded case runs end to end in
//! `tests/e2e.rs`).

use super::*;
use crate::config::Config;
use std::time::Duration;

const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const SDP_B: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
const SDP_C: &str = "v=0\r\no=c 9 9 IN IP4 198.18.0.30\r\ns=-\r\nc=IN IP4 198.18.0.30\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\n";

fn core() -> B2bua {
    let cfg = Config::from_toml(
        "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\n\
         [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n\
         [[dn]]\nnumber = \"1003\"\ncontact = \"198.18.0.30:5060\"\n",
    )
    .unwrap();
    B2bua::new(
        CoreConfig {
            host: "198.18.0.1".into(),
            port: 5060,
            switch: "unit".into(),
            trusted_peers: Vec::new(),
            ng: ClientConfig::default(),
            timers: TimerConfig::default(),
            max_transactions: crate::sip::DEFAULT_MAX_TRANSACTIONS,
            session_timer: cfg.sip.session_timer,
            version: "test".into(),
            seed: 7,
        },
        cfg.router,
        cfg.directory,
    )
}

fn out(core: &mut B2bua) -> Vec<(String, Message)> {
    std::iter::from_fn(|| core.poll_transmit())
        .map(|t| (t.dest.addr.to_string(), Message::parse(&t.bytes).unwrap()))
        .filter(|(_, m)| !matches!(m, Message::Response(r) if r.status == 100))
        .collect()
}

fn reply(req: &Message, status: u16, tag: &str, sdp: &str) -> Vec<u8> {
    let mut r = Response::for_request(req.as_request().unwrap(), status, reason_phrase(status));
    r.set_to_tag(tag);
    if !sdp.is_empty() {
        r.set_body("application/sdp", sdp.as_bytes().to_vec());
    }
    r.to_bytes()
}

fn method(m: &Message) -> String {
    match m {
        Message::Request(r) => r.method.to_string(),
        Message::Response(r) => r.status.to_string(),
    }
}

#[test]
fn blind_transfer_with_direct_media() {
    let mut core = core();
    let t0 = Instant::now();
    let now = |ms: u64| Now {
        mono: t0 + Duration::from_millis(ms),
        unix_ms: 1_795_000_000_000 + ms,
    };
    let a: Peer = Peer::udp("198.18.0.10:5060".parse().unwrap());
    let b: Peer = Peer::udp("198.18.0.20:5060".parse().unwrap());
    let c: Peer = Peer::udp("198.18.0.30:5060".parse().unwrap());
    let invite = format!(
        "INVITE sip:1001@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-t1\r\n\
         From: <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>\r\nCall-ID: t@a\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:100@198.18.0.10:5060>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP_A}",
        SDP_A.len()
    );
    core.handle_sip(now(0), invite.as_bytes(), a);
    let b_inv = out(&mut core).remove(0).1;
    core.handle_sip(now(10), &reply(&b_inv, 200, "btag", SDP_B), b);
    let sent = out(&mut core);
    let a_tag = sent
        .iter()
        .find_map(|(_, m)| m.as_response().and_then(|r| r.to_tag()))
        .unwrap();
    let ack = format!(
        "ACK sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-t2\r\n\
         From: <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>;tag={a_tag}\r\nCall-ID: t@a\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    core.handle_sip(now(20), ack.as_bytes(), a);
    // B refers A to DN 1003.
    let b_inv_req = b_inv.as_request().unwrap();
    let refer = format!(
        "REFER sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-r1\r\n\
         From: <sip:1001@198.18.0.1>;tag=btag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 REFER\r\n\
         Refer-To: <sip:1003@198.18.0.1>\r\nContact: <sip:1001@198.18.0.20:5060>\r\nContent-Length: 0\r\n\r\n",
        b_inv_req.headers.get("From").unwrap(),
        b_inv_req.call_id().unwrap()
    );
    core.handle_sip(now(30), refer.as_bytes(), b);
    let sent = out(&mut core);
    let kinds: Vec<(String, String)> = sent.iter().map(|(d, m)| (d.clone(), method(m))).collect();
    assert_eq!(
        kinds,
        [
            ("198.18.0.20:5060".into(), "202".into()),
            ("198.18.0.20:5060".into(), "NOTIFY".into()),
            ("198.18.0.30:5060".into(), "INVITE".into())
        ]
    );
    let c_inv = sent[2].1.clone();
    assert_eq!(
        c_inv.as_request().unwrap().body,
        SDP_A.as_bytes(),
        "C gets A's SDP"
    );
    assert_eq!(core.calls()[0].recording, RecordingState::Off);
    // C answers: ACK to C, final NOTIFY and BYE to B, re-INVITE of A towards C.
    core.handle_sip(now(40), &reply(&c_inv, 200, "ctag", SDP_C), c);
    let sent = out(&mut core);
    let kinds: Vec<(String, String)> = sent.iter().map(|(d, m)| (d.clone(), method(m))).collect();
    assert_eq!(
        kinds,
        [
            ("198.18.0.30:5060".into(), "ACK".into()),
            ("198.18.0.20:5060".into(), "NOTIFY".into()),
            ("198.18.0.20:5060".into(), "BYE".into()),
            ("198.18.0.10:5060".into(), "INVITE".into())
        ]
    );
    let notify = sent[1].1.as_request().unwrap();
    assert!(notify
        .headers
        .get("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(notify.body, b"SIP/2.0 200 OK\r\n");
    let reinvite = sent[3].1.clone();
    let body = String::from_utf8(reinvite.as_request().unwrap().body.clone()).unwrap();
    assert!(
        body.contains("c=IN IP4 198.18.0.30"),
        "A is sent towards C: {body}"
    );
    core.handle_sip(now(50), &reply(&reinvite, 200, "atag", SDP_A), a);
    let sent = out(&mut core);
    assert_eq!(method(&sent[0].1), "ACK");
    let info = &core.calls()[0];
    assert_eq!(
        (info.dn.as_deref(), info.callee.as_deref()),
        (Some("1003"), Some("1003"))
    );
    let kinds: Vec<&str> = std::iter::from_fn(|| core.poll_event())
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["created", "answered", "transferred"]);
}

#[test]
fn attended_transfer_joins_the_consultation_calls_far_party() {
    let mut core = core();
    let t0 = Instant::now();
    let now = |ms: u64| Now {
        mono: t0 + Duration::from_millis(ms),
        unix_ms: 1_795_000_000_000 + ms,
    };
    let a: Peer = Peer::udp("198.18.0.10:5060".parse().unwrap());
    let b: Peer = Peer::udp("198.18.0.20:5060".parse().unwrap());
    let c: Peer = Peer::udp("198.18.0.30:5060".parse().unwrap());
    let invite = |from: &str, ip: &str, to: &str, call: &str, branch: &str, sdp: &str| {
        format!(
            "INVITE sip:{to}@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK-{branch}\r\n\
             From: <sip:{from}@{ip}>;tag={from}tag\r\nTo: <sip:{to}@198.18.0.1>\r\nCall-ID: {call}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:{from}@{ip}:5060>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    };
    let ack = |from: &str, ip: &str, to: &str, call: &str, tag: &str| {
        format!(
            "ACK sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK-ack{call}\r\n\
             From: <sip:{from}@{ip}>;tag={from}tag\r\nTo: <sip:{to}@198.18.0.1>;tag={tag}\r\n\
             Call-ID: {call}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let answered_tag = |sent: &[(String, Message)], to: &str| {
        sent.iter()
            .find(|(d, m)| d == to && m.as_response().is_some_and(|r| r.status == 200))
            .and_then(|(_, m)| m.as_response().and_then(|r| r.to_tag()))
            .unwrap()
    };
    // Call 1: A (100) calls B (1001).
    core.handle_sip(
        now(0),
        invite("100", "198.18.0.10", "1001", "one@a", "i1", SDP_A).as_bytes(),
        a,
    );
    let b_inv = out(&mut core).remove(0).1;
    core.handle_sip(now(10), &reply(&b_inv, 200, "btag", SDP_B), b);
    let tag1 = answered_tag(&out(&mut core), "198.18.0.10:5060");
    core.handle_sip(
        now(20),
        ack("100", "198.18.0.10", "1001", "one@a", &tag1).as_bytes(),
        a,
    );
    // Call 2 (consultation): B calls C (1003).
    core.handle_sip(
        now(30),
        invite("1001", "198.18.0.20", "1003", "two@b", "i2", SDP_B).as_bytes(),
        b,
    );
    let c_inv = out(&mut core).remove(0).1;
    let c_call_id = c_inv.as_request().unwrap().call_id().unwrap().to_owned();
    core.handle_sip(now(40), &reply(&c_inv, 200, "ctag", SDP_C), c);
    let tag2 = answered_tag(&out(&mut core), "198.18.0.20:5060");
    core.handle_sip(
        now(50),
        ack("1001", "198.18.0.20", "1003", "two@b", &tag2).as_bytes(),
        b,
    );
    assert_eq!(core.calls().len(), 2);
    let _ = std::iter::from_fn(|| core.poll_event()).count();
    // B refers A to its consultation dialog (RFC 3891 Replaces, escaped in the URI).
    let b_inv_req = b_inv.as_request().unwrap();
    let refer = format!(
        "REFER sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-r1\r\n\
         From: <sip:1001@198.18.0.1>;tag=btag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 REFER\r\n\
         Refer-To: <sip:1003@198.18.0.1?Replaces=two%40b%3Bto-tag%3D{tag2}%3Bfrom-tag%3D1001tag>\r\n\
         Contact: <sip:1001@198.18.0.20:5060>\r\nContent-Length: 0\r\n\r\n",
        b_inv_req.headers.get("From").unwrap(),
        b_inv_req.call_id().unwrap()
    );
    core.handle_sip(now(60), refer.as_bytes(), b);
    let sent = out(&mut core);
    let kinds: Vec<(String, String)> = sent.iter().map(|(d, m)| (d.clone(), method(m))).collect();
    assert_eq!(
        kinds,
        [
            ("198.18.0.20:5060".into(), "202".into()),
            ("198.18.0.20:5060".into(), "NOTIFY".into()),
            ("198.18.0.30:5060".into(), "INVITE".into())
        ]
    );
    let reinv_c = sent[2].1.clone();
    let r = reinv_c.as_request().unwrap();
    assert_eq!(
        r.call_id(),
        Some(c_call_id.as_str()),
        "a re-INVITE in C's own dialog"
    );
    assert_eq!(r.to_tag().as_deref(), Some("ctag"));
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("c=IN IP4 198.18.0.10"),
        "C is sent towards A: {body}"
    );
    assert!(
        body.contains("o=a 7 8 "),
        "C's leg keeps its o= session, one version up: {body}"
    );
    core.handle_sip(now(70), &reply(&reinv_c, 200, "ctag", SDP_C), c);
    let sent = out(&mut core);
    let got = |to: &str, what: &str| {
        sent.iter()
            .filter(|(d, m)| d == to && method(m) == what)
            .map(|(_, m)| m.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(got("198.18.0.30:5060", "ACK").len(), 1);
    let byes = got("198.18.0.20:5060", "BYE");
    let bye_calls: Vec<&str> = byes
        .iter()
        .filter_map(|m| m.as_request().and_then(|r| r.call_id()))
        .collect();
    assert!(
        bye_calls.contains(&"two@b") && bye_calls.len() == 2,
        "the transferor is hung up on both calls: {bye_calls:?}"
    );
    let reinv_a = got("198.18.0.10:5060", "INVITE");
    let body = String::from_utf8(reinv_a[0].as_request().unwrap().body.clone()).unwrap();
    assert!(
        body.contains("c=IN IP4 198.18.0.30"),
        "A is sent towards C: {body}"
    );
    core.handle_sip(now(80), &reply(&reinv_a[0], 200, "100tag", SDP_A), a);
    let calls = core.calls();
    assert_eq!(calls.len(), 1, "the consultation call ended");
    assert_eq!(calls[0].dn.as_deref(), Some("1003"));
    let events: Vec<(String, &'static str)> = std::iter::from_fn(|| core.poll_event())
        .map(|e| (e.switch_call_id.clone(), e.kind.as_str()))
        .collect();
    assert!(
        events.contains(&("1".to_owned(), "transferred")),
        "{events:?}"
    );
    assert!(events.contains(&("2".to_owned(), "released")), "{events:?}");
    // C's dialog now belongs to call 1: C's BYE ends it.
    let c_bye = format!(
        "BYE sip:sipctl@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.30:5060;branch=z9hG4bK-cb\r\n\
         From: {};tag=ctag\r\nTo: {}\r\nCall-ID: {c_call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        r.headers.get("To").unwrap().split(";tag").next().unwrap(),
        r.headers.get("From").unwrap()
    );
    core.handle_sip(now(90), c_bye.as_bytes(), c);
    let sent = out(&mut core);
    assert!(sent
        .iter()
        .any(|(d, m)| d == "198.18.0.30:5060" && method(m) == "200"));
    assert!(sent
        .iter()
        .any(|(d, m)| d == "198.18.0.10:5060" && method(m) == "BYE"));
    assert!(core.calls().is_empty());
}
