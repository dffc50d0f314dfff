use super::*;
use crate::config::Config;
use linecord_ng::message;
use std::time::Duration;

const A: &str = "198.18.0.10:5060";
const B: &str = "198.18.0.20:5060";
const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
const SDP_B: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
const REC_TO_B: &str = "v=0\r\no=a 1 1 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
const REC_TO_A: &str = "v=0\r\no=b 7 7 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\n";

struct Harness {
    core: B2bua,
    t0: Instant,
    ms: u64,
    /// The INVITE sipctl sent to B.
    b_invite: Option<Message>,
}

impl Harness {
    fn new(dns: &str) -> Harness {
        let cfg = Config::from_toml(&format!(
            "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\nadvertise = \"198.18.0.1\"\n{dns}"
        ))
        .unwrap();
        let core = B2bua::new(
            CoreConfig {
                host: "198.18.0.1".into(),
                port: 5060,
                switch: "unit".into(),
                trusted_peers: cfg.sip.trusted_peers.clone(),
                ng: ClientConfig::default(),
                timers: TimerConfig::default(),
                max_transactions: crate::sip::DEFAULT_MAX_TRANSACTIONS,
                session_timer: cfg.sip.session_timer,
                version: "test".into(),
                seed: 7,
            },
            cfg.router.clone(),
            cfg.directory.clone(),
        );
        Harness {
            core,
            t0: Instant::now(),
            ms: 0,
            b_invite: None,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.t0 + Duration::from_millis(self.ms),
            unix_ms: 1_795_000_000_000 + self.ms,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.ms += ms;
        let now = self.now();
        self.core.handle_timeout(now);
    }

    fn sip_in(&mut self, from: &str, bytes: &[u8]) {
        let now = self.now();
        self.core
            .handle_sip(now, bytes, Peer::udp(from.parse().unwrap()));
    }

    /// Messages sipctl sent, with their destinations (100 Trying skipped).
    fn sip_out(&mut self) -> Vec<(String, Message)> {
        let mut v = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            let m = Message::parse(&t.bytes).unwrap();
            if matches!(&m, Message::Response(r) if r.status == 100) {
                continue;
            }
            v.push((t.dest.addr.to_string(), m));
        }
        v
    }

    /// NG requests sipctl sent: (cookie, request).
    fn ng_out(&mut self) -> Vec<(Vec<u8>, linecord_ng::Request)> {
        let mut v = Vec::new();
        while let Some(d) = self.core.poll_ng_transmit() {
            let (cookie, body) = message::parse(&d).unwrap();
            v.push((
                cookie.to_vec(),
                linecord_ng::Request::from_value(body).unwrap(),
            ));
        }
        v
    }

    fn ng_reply(&mut self, cookie: &[u8], body: &Value) {
        let now = self.now();
        self.core.handle_ng(now, &message::frame(cookie, body));
    }

    fn events(&mut self) -> Vec<&'static str> {
        let mut v = Vec::new();
        while let Some(e) = self.core.poll_event() {
            v.push(e.kind.as_str());
        }
        v
    }
}

fn invite(extra: &str) -> Vec<u8> {
    format!(
        "INVITE sip:1001@198.18.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-inv1\r\n\
         From: \"Caller\" <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>\r\n\
         Call-ID: call-a@198.18.0.10\r\nCSeq: 1 INVITE\r\nContact: <sip:100@198.18.0.10:5060>\r\n\
         Max-Forwards: 70\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
        SDP_A.len()
    )
    .into_bytes()
}

fn in_dialog(method: &str, to_tag: &str, cseq: u32, body: &str) -> Vec<u8> {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:sipctl@198.18.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{method}{cseq}\r\n\
         From: \"Caller\" <sip:100@198.18.0.10>;tag=atag\r\nTo: <sip:1001@198.18.0.1>;tag={to_tag}\r\n\
         Call-ID: call-a@198.18.0.10\r\nCSeq: {cseq} {method}\r\nContact: <sip:100@198.18.0.10:5060>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The callee's response to a request sipctl sent it.
fn answer(req: &Message, status: u16, body: &str) -> Vec<u8> {
    let req = req.as_request().unwrap();
    let mut r = Response::for_request(req, status, reason_phrase(status));
    r.set_to_tag("btag");
    r.headers.push("Contact", "<sip:1001@198.18.0.20:5060>");
    if !body.is_empty() {
        r.set_body("application/sdp", body.as_bytes().to_vec());
    }
    r.to_bytes()
}

fn request(m: &Message) -> &Request {
    m.as_request().unwrap()
}

fn response(m: &Message) -> &Response {
    m.as_response().unwrap()
}

const RECORDED_DN: &str =
    "[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n";

/// A recorded call through sipctl, up to A's ACK; returns A's To tag.
fn recorded_call(h: &mut Harness) -> String {
    h.sip_in(A, &invite(""));
    assert!(
        h.sip_out().is_empty(),
        "nothing goes to B before the recorder answered"
    );
    let ng = h.ng_out();
    assert_eq!(ng.len(), 1);
    let (cookie, offer) = &ng[0];
    assert_eq!(offer.command, linecord_ng::Command::Offer);
    assert_eq!(offer.record_call, Some(true));
    assert_eq!(offer.from_tag.as_deref(), Some("a"));
    assert_eq!(offer.sdp.as_deref(), Some(SDP_A.as_bytes()));
    let global = offer.call_id.clone().unwrap();
    assert!(linecord_jobs::is_uuid_v7(&global));
    h.ng_reply(
        cookie,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );

    let out = h.sip_out();
    assert_eq!(out.len(), 1);
    let (dest, b_invite) = &out[0];
    assert_eq!(dest, B);
    h.b_invite = Some(b_invite.clone());
    let inv = request(b_invite);
    assert_eq!(inv.method, Method::Invite);
    assert_eq!(inv.body, REC_TO_B.as_bytes(), "B gets the recorder's SDP");
    assert_eq!(
        inv.headers.get(GLOBAL_CALL_ID_HEADER),
        Some(global.as_str())
    );
    assert_ne!(
        inv.call_id(),
        Some("call-a@198.18.0.10"),
        "the B leg has its own Call-ID"
    );
    assert_eq!(inv.max_forwards(), Some(69));
    assert_eq!(
        inv.from_addr().unwrap().uri.user.as_deref(),
        Some("100"),
        "caller id kept"
    );

    h.sip_in(B, &answer(b_invite, 180, ""));
    let out = h.sip_out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, A);
    let ringing = response(&out[0].1);
    assert_eq!(ringing.status, 180);
    let a_tag = ringing.to_tag().unwrap();
    assert_eq!(ringing.call_id(), Some("call-a@198.18.0.10"));

    h.sip_in(B, &answer(b_invite, 200, SDP_B));
    let out = h.sip_out();
    assert_eq!(
        out.len(),
        1,
        "only the ACK to B until the recorder answered"
    );
    assert_eq!(request(&out[0].1).method, Method::Ack);
    assert_eq!(out[0].0, B);
    let ng = h.ng_out();
    let (cookie, answer_req) = &ng[0];
    assert_eq!(answer_req.command, linecord_ng::Command::Answer);
    assert_eq!(answer_req.to_tag.as_deref(), Some("b"));
    assert_eq!(answer_req.sdp.as_deref(), Some(SDP_B.as_bytes()));
    h.ng_reply(
        cookie,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
    );
    let out = h.sip_out();
    let ok = response(&out[0].1);
    assert_eq!((out[0].0.as_str(), ok.status), (A, 200));
    assert_eq!(ok.body, REC_TO_A.as_bytes(), "A gets the recorder's SDP");
    assert_eq!(ok.to_tag().as_deref(), Some(a_tag.as_str()));
    h.sip_in(A, &in_dialog("ACK", &a_tag, 1, ""));
    assert_eq!(h.core.calls()[0].state, "confirmed");
    assert_eq!(h.core.calls()[0].recording, RecordingState::On);
    a_tag
}

#[test]
fn recorded_call_maps_both_legs_and_the_recorder() {
    let mut h = Harness::new(RECORDED_DN);
    let a_tag = recorded_call(&mut h);
    assert_eq!(
        h.events(),
        ["created", "ringing", "answered", "recording_started"]
    );
    // B did not get our ACK and retransmits its 200: the same ACK goes again.
    let b_invite = h.b_invite.clone().unwrap();
    h.sip_in(B, &answer(&b_invite, 200, SDP_B));
    let out = h.sip_out();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].0.as_str(), &request(&out[0].1).method),
        (B, &Method::Ack)
    );
    assert!(h.ng_out().is_empty(), "no second NG answer");
    // The caller hangs up: 200 to A, BYE to B, NG delete.
    h.sip_in(A, &in_dialog("BYE", &a_tag, 2, ""));
    let out = h.sip_out();
    let kinds: Vec<(String, String)> = out
        .iter()
        .map(|(d, m)| {
            let k = match m {
                Message::Request(r) => r.method.to_string(),
                Message::Response(r) => r.status.to_string(),
            };
            (d.clone(), k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (A.to_owned(), "200".to_owned()),
            (B.to_owned(), "BYE".to_owned())
        ]
    );
    let bye = request(&out[1].1);
    assert_eq!(bye.to_tag().as_deref(), Some("btag"));
    assert_eq!(
        bye.uri.to_string(),
        "sip:1001@198.18.0.20:5060",
        "B's Contact"
    );
    let ng = h.ng_out();
    assert_eq!(ng[0].1.command, linecord_ng::Command::Delete);
    assert_eq!(h.events(), ["recording_stopped", "released"]);
    assert!(h.core.calls().is_empty());
    // A retransmitted BYE is answered by the transaction layer, not by a new call.
    h.sip_in(A, &in_dialog("BYE", &a_tag, 2, ""));
    assert!(h.events().is_empty());
}

#[test]
fn global_call_id_is_taken_only_from_trusted_peers() {
    let given = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let mut h = Harness::new(RECORDED_DN);
    h.sip_in(A, &invite(&format!("X-Linecord-Call-Id: {given}\r\n")));
    assert_eq!(h.ng_out()[0].1.call_id.as_deref(), Some(given));

    let mut h = Harness::new(RECORDED_DN);
    h.core.config.trusted_peers = vec![IpNet::parse("192.0.2.0/24").unwrap()];
    h.sip_in(A, &invite(&format!("X-Linecord-Call-Id: {given}\r\n")));
    let id = h.ng_out()[0].1.call_id.clone().unwrap();
    assert_ne!(id, given, "an untrusted peer cannot choose the global id");
    assert!(linecord_jobs::is_uuid_v7(&id));
}

#[test]
fn agent_start_then_a_party_reinvite_meets_491() {
    let mut h = Harness::new("[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n");
    h.sip_in(A, &invite(""));
    assert!(h.ng_out().is_empty(), "not recorded: no NG");
    let out = h.sip_out();
    let b_invite = out[0].1.clone();
    assert_eq!(request(&b_invite).body, SDP_A.as_bytes(), "direct media");
    h.sip_in(B, &answer(&b_invite, 200, SDP_B));
    let out = h.sip_out();
    let ok = out.iter().find(|(d, _)| d == A).unwrap();
    let a_tag = response(&ok.1).to_tag().unwrap();
    assert_eq!(response(&ok.1).body, SDP_B.as_bytes());
    h.sip_in(A, &in_dialog("ACK", &a_tag, 1, ""));
    let id = h.core.calls()[0].id.clone();
    assert_eq!(
        h.core.api_command(h.now(), "42", RecordingAction::Start),
        Err(ApiError::UnknownCall("42".into()))
    );
    assert!(matches!(
        h.core.api_command(h.now(), &id, RecordingAction::Pause),
        Err(ApiError::Conflict(_))
    ));
    let _ticket = h
        .core
        .api_command(h.now(), &id, RecordingAction::Start)
        .unwrap();
    let ng = h.ng_out();
    assert_eq!(ng[0].1.command, linecord_ng::Command::Offer);
    assert_eq!(ng[0].1.sdp.as_deref(), Some(SDP_A.as_bytes()));
    // Glare: A re-INVITEs while the start is in progress.
    h.sip_in(A, &in_dialog("INVITE", &a_tag, 2, SDP_A));
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 491);
    // The start goes on: re-INVITE to B with the recorder's SDP, o= line kept in step.
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let out = h.sip_out();
    assert_eq!(out[0].0, B);
    let reinvite = request(&out[0].1);
    assert_eq!(reinvite.method, Method::Invite);
    assert_eq!(reinvite.to_tag().as_deref(), Some("btag"));
    let body = String::from_utf8(reinvite.body.clone()).unwrap();
    assert!(body.contains("o=a 1 2 IN IP4 198.18.0.1"), "{body}");
    assert_eq!(h.core.calls()[0].recording, RecordingState::Starting);
    // B refuses: the call goes on with direct media, the event says why.
    h.sip_in(B, &answer(&out[0].1, 488, ""));
    let out = h.sip_out();
    assert!(out
        .iter()
        .all(|(_, m)| !matches!(m, Message::Request(r) if r.method == Method::Bye)));
    assert_eq!(h.ng_out()[0].1.command, linecord_ng::Command::Delete);
    let (_, result) = h.core.poll_api_result().unwrap();
    assert!(
        matches!(result, Err(ApiError::Failed(ref why)) if why.contains("488")),
        "{result:?}"
    );
    assert_eq!(h.core.calls()[0].recording, RecordingState::Off);
    assert_eq!(h.events(), ["created", "answered", "recording_failed"]);
}

#[test]
fn critical_recording_refuses_the_call_when_the_recorder_is_silent() {
    let mut h = Harness::new(
        "[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\nrecord-critical = true\n",
    );
    h.sip_in(A, &invite(""));
    assert_eq!(h.ng_out().len(), 1);
    // 500 ms, 1 s, 2 s of retransmissions, then the recorder is given up.
    for _ in 0..8 {
        h.advance(500);
    }
    let out = h.sip_out();
    let refused = out
        .iter()
        .find(|(d, m)| d == A && matches!(m, Message::Response(_)))
        .unwrap();
    let r = response(&refused.1);
    assert_eq!(r.status, 500);
    assert!(r
        .headers
        .get("Warning")
        .unwrap()
        .contains("recording is critical"));
    assert!(
        out.iter().all(|(d, _)| d != B),
        "the callee is never called"
    );
    assert_eq!(h.events(), ["created", "recording_failed", "released"]);
    assert_eq!(h.core.counters().refused_record_critical, 1);
}

/// Replaces the first `from` in a message with `to`.
fn edit(msg: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(msg.to_vec())
        .unwrap()
        .replacen(from, to, 1)
        .into_bytes()
}

#[test]
fn requests_are_inspected_in_rfc3261_order() {
    let mut h = Harness::new(RECORDED_DN);
    let status = |h: &mut Harness, msg: &[u8]| {
        h.sip_in(A, msg);
        let out = h.sip_out();
        let r = out.iter().find_map(|(_, m)| m.as_response()).cloned();
        r.map(|r| (r.status, r))
    };
    let options = |uri: &str, branch: &str| {
        format!(
            "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-{branch}\r\n\
             From: <sip:100@198.18.0.10>;tag=o\r\nTo: <sip:1001@198.18.0.1>\r\nCall-ID: opt-{branch}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    // §8.2.1: unknown method 501, known but not taken outside a dialog 405, both with Allow
    let foo = String::from_utf8(options("sip:1001@198.18.0.1", "m1"))
        .unwrap()
        .replace("OPTIONS", "FOO");
    let (st, r) = status(&mut h, foo.as_bytes()).unwrap();
    assert_eq!(st, 501);
    assert_eq!(r.headers.get("Allow"), Some(ALLOW));
    let sub = String::from_utf8(options("sip:1001@198.18.0.1", "m2"))
        .unwrap()
        .replace("OPTIONS", "SUBSCRIBE");
    let (st, r) = status(&mut h, sub.as_bytes()).unwrap();
    assert_eq!(st, 405);
    assert_eq!(r.headers.get("Allow"), Some(ALLOW));
    // the method check comes before the scheme check (a FOO to urn: is 501)
    let foo_urn = foo.replacen("sip:1001@198.18.0.1", "urn:service:sos", 1);
    let foo_urn = foo_urn.replace("z9hG4bK-m1", "z9hG4bK-m3");
    assert_eq!(status(&mut h, foo_urn.as_bytes()).map(|s| s.0), Some(501));
    // §8.2.2.1: schemes
    assert_eq!(
        status(&mut h, &options("urn:service:sos", "s1")).map(|s| s.0),
        Some(416)
    );
    let (st, r) = status(&mut h, &options("tel:+4930123", "s2")).unwrap();
    assert_eq!(st, 200);
    assert_eq!(r.headers.get("Accept"), Some("application/sdp"));
    // §8.2.2.3: Require, listed back in Unsupported; Proxy-Require alone is ignored
    let req = edit(
        &options("sip:1001@198.18.0.1", "r1"),
        "Content-Length",
        "Require: 100rel, timer\r\nContent-Length",
    );
    let (st, r) = status(&mut h, &req).unwrap();
    assert_eq!(st, 420);
    assert_eq!(
        r.headers.get("Unsupported"),
        Some("100rel"),
        "session timers are supported, reliable provisionals towards the caller are not"
    );
    let req = edit(
        &options("sip:1001@198.18.0.1", "r2"),
        "Content-Length",
        "Proxy-Require: x\r\nContent-Length",
    );
    assert_eq!(status(&mut h, &req).map(|s| s.0), Some(200));
    // §8.2.3 / RFC 4475 §3.3.6, §3.3.15: INVITE bodies and Accept
    let inv = edit(
        &invite(""),
        "Content-Type: application/sdp",
        "Content-Type: text/plain",
    );
    let (st, r) = status(&mut h, &inv).unwrap();
    assert_eq!(st, 415);
    assert_eq!(r.headers.get("Accept"), Some("application/sdp"));
    let inv = edit(
        &invite("Content-Encoding: gzip\r\n"),
        "z9hG4bK-inv1",
        "z9hG4bK-inv2",
    );
    let (st, r) = status(&mut h, &inv).unwrap();
    assert_eq!(st, 415);
    assert_eq!(r.headers.get("Accept-Encoding"), Some("identity"));
    for (i, accept) in ["text/plain", "application/sdp;q=0", ""].iter().enumerate() {
        let inv = edit(
            &invite(&format!("Accept: {accept}\r\n")),
            "z9hG4bK-inv1",
            &format!("z9hG4bK-acc{i}"),
        );
        assert_eq!(status(&mut h, &inv).map(|s| s.0), Some(406), "{accept:?}");
    }
    assert!(h.ng_out().is_empty(), "nothing reached the recorder");
    // RFC 4475 §3.4.1: an RFC 2543 INVITE without From tag is taken (the DN records: NG offer)
    let inv = edit(
        &edit(&invite("Accept: application/*\r\n"), ";tag=atag", ""),
        "z9hG4bK-inv1",
        "z9hG4bK-2543",
    );
    h.sip_in(A, &inv);
    assert!(h.sip_out().is_empty());
    assert_eq!(h.ng_out().len(), 1, "the call goes on to the recorder");
}

#[test]
fn in_dialog_requests_are_inspected_too() {
    let mut h = Harness::new(RECORDED_DN);
    let a_tag = recorded_call(&mut h);
    let _ = h.sip_out();
    let _ = h.ng_out();
    // a re-INVITE requiring an extension sipctl lacks: 420, the call is untouched
    let re = edit(
        &in_dialog("INVITE", &a_tag, 2, SDP_A),
        "Contact:",
        "Require: 100rel\r\nContact:",
    );
    h.sip_in(A, &re);
    let out = h.sip_out();
    assert_eq!(out.len(), 1);
    assert_eq!(response(&out[0].1).status, 420);
    // a re-INVITE with a body that is not SDP: 415
    let re = edit(
        &in_dialog("INVITE", &a_tag, 3, SDP_A),
        "application/sdp",
        "application/x-unknown",
    );
    h.sip_in(A, &re);
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 415);
    assert!(
        h.ng_out().is_empty(),
        "no NG request for refused re-INVITEs"
    );
    assert_eq!(h.core.calls()[0].state, "confirmed");
}

#[test]
fn registrar_refuses_non_sip_addresses_of_record() {
    let mut h = Harness::new("[[dn]]\nnumber = \"1002\"\n");
    let reg = "REGISTER sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-reg\r\n\
               From: <sip:1002@198.18.0.1>;tag=r\r\nTo: <tel:1002>\r\nCall-ID: reg@b\r\n\
               CSeq: 1 REGISTER\r\nContact: <sip:1002@198.18.0.20:5062>\r\nContent-Length: 0\r\n\r\n";
    h.sip_in(B, reg.as_bytes());
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 400);
    assert!(h.core.directory().registration("1002", 0).is_none());
}

#[test]
fn malformed_input_is_counted_and_answered_with_the_right_code() {
    let mut h = Harness::new(RECORDED_DN);
    // 505 for another SIP version, 501 (with Allow) for an unknown method whose CSeq
    // differs, nothing for garbage; all counted
    let v7 = edit(&invite(""), "SIP/2.0\r\n", "SIP/7.0\r\n");
    h.sip_in(A, &v7);
    let newm = edit(
        &edit(&invite(""), "INVITE sip:", "NEWMETHOD sip:"),
        "z9hG4bK-inv1",
        "z9hG4bK-nm",
    );
    h.sip_in(A, &newm);
    h.sip_in(A, b"abc\xc3\xa9 sip:x SIP/2.0\r\n\r\n");
    let mut statuses = Vec::new();
    while let Some(t) = h.core.poll_transmit() {
        let text = String::from_utf8_lossy(&t.bytes).into_owned();
        statuses.push(text.lines().next().unwrap_or("").to_owned());
        if text.starts_with("SIP/2.0 501") {
            assert!(text.contains(&format!("Allow: {ALLOW}\r\n")), "{text}");
        }
    }
    assert_eq!(
        statuses,
        [
            "SIP/2.0 505 Version Not Supported",
            "SIP/2.0 501 Not Implemented"
        ]
    );
    assert_eq!(h.core.counters().bad_messages, 3);
}

#[test]
fn peer_text_is_short_and_escaped() {
    assert_eq!(peer_text("Busy Here"), "Busy Here");
    assert_eq!(peer_text("a\u{0}b\u{1b}[2J"), "a\\u{0}b\\u{1b}[2J");
    let long = "é".repeat(300);
    let t = peer_text(&long);
    assert!(t.ends_with('…') && t.len() <= REFUSED_LOG_EXCERPT + '…'.len_utf8());
    assert!(t.starts_with("éé"));
}

#[test]
fn accept_and_content_type_matching() {
    for yes in [
        "application/sdp",
        "Application/SDP;charset=x",
        "*/*",
        "application/*;q=0.5",
    ] {
        assert!(accepts_sdp(yes), "{yes}");
    }
    for no in [
        "text/plain",
        "application/sdp;q=0",
        "application/sdp; q=0.000",
        "",
        "multipart/mixed",
    ] {
        assert!(!accepts_sdp(no), "{no}");
    }
    assert!(is_sdp_type("application/SDP ; x=y"));
    assert!(!is_sdp_type("application/sdpx"));
}

#[test]
fn unknown_dn_gets_404_and_in_dialog_requests_without_a_dialog_481() {
    let mut h = Harness::new(RECORDED_DN);
    let inv = String::from_utf8(invite(""))
        .unwrap()
        .replace("sip:1001@", "sip:7777@");
    h.sip_in(A, inv.as_bytes());
    let out = h.sip_out();
    let not_found = response(&out[0].1);
    assert_eq!(not_found.status, 404);
    // RFC 3261 §8.2.6.2: every response but 100 to a request without a To tag gets one.
    assert!(not_found.to_tag().is_some(), "404 without a To tag");
    h.sip_in(A, &in_dialog("BYE", "nope", 5, ""));
    let out = h.sip_out();
    let no_dialog = response(&out[0].1);
    assert_eq!(no_dialog.status, 481);
    // An in-dialog request already names our tag: the answer keeps it.
    assert_eq!(no_dialog.to_tag().as_deref(), Some("nope"));
}

#[test]
fn register_binds_a_dn_and_calls_reach_it() {
    let mut h = Harness::new("[[dn]]\nnumber = \"1002\"\n");
    let reg = "REGISTER sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-reg\r\n\
               From: <sip:1002@198.18.0.1>;tag=r\r\nTo: <sip:1002@198.18.0.1>\r\nCall-ID: reg@b\r\n\
               CSeq: 1 REGISTER\r\nContact: <sip:1002@198.18.0.20:5062>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n";
    h.sip_in(B, reg.as_bytes());
    let out = h.sip_out();
    let ok = response(&out[0].1);
    assert_eq!(ok.status, 200);
    assert!(ok.headers.get("Contact").unwrap().contains("expires=60"));
    let inv = String::from_utf8(invite(""))
        .unwrap()
        .replace("sip:1001@", "sip:1002@");
    h.sip_in(A, inv.as_bytes());
    let out = h.sip_out();
    assert_eq!(out[0].0, "198.18.0.20:5062");
    assert_eq!(
        request(&out[0].1).uri.to_string(),
        "sip:1002@198.18.0.20:5062"
    );
}

/// A request from B in the B leg's dialog (B's tag `btag`, sipctl's tag from its INVITE).
fn from_b(b_invite: &Message, method: &str, cseq: u32, body: &str) -> Vec<u8> {
    let inv = request(b_invite);
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:sipctl@198.18.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.20:5060;branch=z9hG4bK-b{method}{cseq}\r\n\
         From: <sip:1001@198.18.0.20>;tag=btag\r\nTo: <sip:100@198.18.0.1>;tag={}\r\n\
         Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:1001@198.18.0.20:5060>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        inv.from_tag().unwrap(),
        inv.call_id().unwrap(),
        body.len()
    )
    .into_bytes()
}

/// A party's answer to a request sipctl sent it, tags as they are.
fn party_answer(req: &Message, status: u16, body: &str, contact: &str) -> Vec<u8> {
    let mut r = Response::for_request(request(req), status, reason_phrase(status));
    r.headers.push("Contact", contact);
    if !body.is_empty() {
        r.set_body("application/sdp", body.as_bytes().to_vec());
    }
    r.to_bytes()
}

const SDP_B2: &str = "v=0\r\no=b 7 8 IN IP4 198.18.0.20\r\ns=-\r\nc=IN IP4 198.18.0.20\r\nt=0 0\r\nm=audio 6010 RTP/AVP 8\r\n";
const REC_TO_A2: &str = "v=0\r\no=b 7 8 IN IP4 198.18.0.1\r\ns=-\r\nc=IN IP4 198.18.0.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 8\r\n";

/// No SDP sipctl sends a party names the other party's own media address.
fn assert_anchored(out: &[(String, Message)]) {
    for (dest, m) in out {
        let body = match m {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        };
        let body = String::from_utf8_lossy(body);
        let other = if dest == A {
            "198.18.0.20"
        } else {
            "198.18.0.10"
        };
        assert!(!body.contains(other), "{dest} got {other}: {body}");
    }
}

#[test]
fn update_with_sdp_in_a_recorded_call_goes_through_the_recorder() {
    let mut h = Harness::new(RECORDED_DN);
    recorded_call(&mut h);
    let b_invite = h.b_invite.clone().unwrap();
    // RFC 3311: the callee changes codec with an UPDATE.
    h.sip_in(B, &from_b(&b_invite, "UPDATE", 1, SDP_B2));
    assert!(
        h.sip_out().is_empty(),
        "nothing is relayed before the recorder"
    );
    let ng = h.ng_out();
    assert_eq!(ng.len(), 1);
    let (cookie, offer) = &ng[0];
    assert_eq!(offer.command, linecord_ng::Command::Offer);
    assert_eq!(
        (offer.from_tag.as_deref(), offer.to_tag.as_deref()),
        (Some("b"), Some("a"))
    );
    assert_eq!(offer.sdp.as_deref(), Some(SDP_B2.as_bytes()));
    h.ng_reply(
        cookie,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A2.as_bytes()),
    );
    let out = h.sip_out();
    assert_anchored(&out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, A);
    let update = request(&out[0].1);
    assert_eq!(
        update.method,
        Method::Update,
        "the caller gets an UPDATE too"
    );
    assert!(String::from_utf8_lossy(&update.body).contains("m=audio 30002 RTP/AVP 8"));
    assert!(update.contact().is_some(), "UPDATE is a target refresh");
    h.sip_in(
        A,
        &party_answer(&out[0].1, 200, SDP_A, "<sip:100@198.18.0.10:5060>"),
    );
    let out = h.sip_out();
    assert!(
        out.is_empty(),
        "no ACK for UPDATE, no answer before the recorder"
    );
    let ng = h.ng_out();
    let (cookie, ans) = &ng[0];
    assert_eq!(ans.command, linecord_ng::Command::Answer);
    assert_eq!(ans.sdp.as_deref(), Some(SDP_A.as_bytes()));
    h.ng_reply(
        cookie,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let out = h.sip_out();
    assert_anchored(&out);
    let ok = response(&out[0].1);
    assert_eq!((out[0].0.as_str(), ok.status), (B, 200));
    assert_eq!(ok.cseq().map(|c| c.method), Some(Method::Update));
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 30000"));
    assert_eq!(h.core.calls()[0].recording, RecordingState::On);
}

#[test]
fn early_media_of_a_recorded_call_goes_through_the_recorder() {
    let mut h = Harness::new(RECORDED_DN);
    h.sip_in(A, &invite(""));
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let b_invite = h.sip_out().remove(0).1;
    assert_eq!(
        request(&b_invite).headers.get("Supported"),
        Some("100rel, timer"),
        "the callee is offered sipctl's extensions"
    );
    h.sip_in(B, &answer(&b_invite, 183, SDP_B));
    assert!(h.sip_out().is_empty(), "the 183 waits for the recorder");
    let ng = h.ng_out();
    let (cookie, ans) = &ng[0];
    assert_eq!(ans.command, linecord_ng::Command::Answer);
    assert_eq!(ans.sdp.as_deref(), Some(SDP_B.as_bytes()));
    h.ng_reply(
        cookie,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
    );
    let out = h.sip_out();
    assert_anchored(&out);
    let early = response(&out[0].1);
    assert_eq!((out[0].0.as_str(), early.status), (A, 183));
    assert_eq!(
        early.body,
        REC_TO_A.as_bytes(),
        "early media from the recorder"
    );
    h.sip_in(B, &answer(&b_invite, 200, SDP_B));
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
    );
    let out = h.sip_out();
    assert_anchored(&out);
    assert!(out
        .iter()
        .any(|(d, m)| d == A && matches!(m, Message::Response(r) if r.status == 200)));
    assert_eq!(
        h.events(),
        [
            "created",
            "ringing",
            "early_media",
            "answered",
            "recording_started"
        ]
    );
}

#[test]
fn an_outbound_call_from_a_recorded_dn_is_recorded_with_the_caller_as_agent() {
    let mut h = Harness::new(
        "[[dn]]\nnumber = \"100\"\ncontact = \"198.18.0.10:5060\"\nrecord = true\n\
         [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\n",
    );
    h.sip_in(A, &invite(""));
    let ng = h.ng_out();
    assert_eq!(
        ng.len(),
        1,
        "the agent's outbound call goes to the recorder"
    );
    assert_eq!(ng[0].1.record_call, Some(true));
    let created = h.core.poll_event().unwrap();
    assert_eq!(created.parties.agent_dn.as_deref(), Some("100"));
    assert_eq!(created.parties.agent_side, Some(AgentSide::Caller));
    assert!(ng[0].1.metadata.as_deref().unwrap().contains("dn=100"));
}

#[test]
fn the_dialog_layer_answers_481_and_500() {
    let mut h = Harness::new(RECORDED_DN);
    let a_tag = recorded_call(&mut h);
    // RFC 3261 §12.2.2: the From tag is part of the dialog id.
    let wrong = edit(&in_dialog("BYE", &a_tag, 5, ""), "tag=atag", "tag=other");
    h.sip_in(A, &wrong);
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 481);
    // A CSeq lower than the last one gets 500 and changes nothing.
    h.sip_in(A, &in_dialog("BYE", &a_tag, 0, ""));
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 500);
    assert_eq!(h.core.calls().len(), 1);
    h.sip_in(A, &in_dialog("BYE", &a_tag, 6, ""));
    let out = h.sip_out();
    assert!(out
        .iter()
        .any(|(d, m)| d == A && matches!(m, Message::Response(r) if r.status == 200)));
    assert!(h.core.calls().is_empty());
}

#[test]
fn a_seeded_core_replays_exactly() {
    let run = || {
        let mut h = Harness::new(RECORDED_DN);
        recorded_call(&mut h);
        h.b_invite.unwrap().to_bytes()
    };
    assert_eq!(
        run(),
        run(),
        "same seed, same input: same tags, Call-IDs, branches"
    );
}

/// `resp` (to a request sipctl sent B) with extra header lines.
fn answer_with(req: &Message, status: u16, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let bytes = answer(req, status, body);
    let mut r = match Message::parse(&bytes).unwrap() {
        Message::Response(r) => r,
        _ => unreachable!(),
    };
    for (n, v) in extra {
        r.headers.push(*n, *v);
    }
    r.to_bytes()
}

#[test]
fn a_reliable_provisional_gets_a_prack_once_and_its_sdp_goes_through_the_recorder() {
    let mut h = Harness::new(RECORDED_DN);
    h.sip_in(A, &invite(""));
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let b_invite = h.sip_out().remove(0).1;
    let rel = [("Require", "100rel"), ("RSeq", "1")];
    h.sip_in(B, &answer_with(&b_invite, 183, SDP_B, &rel));
    let out = h.sip_out();
    assert_eq!(
        out.len(),
        1,
        "the PRACK, and nothing to A before the recorder"
    );
    let prack = request(&out[0].1);
    assert_eq!((out[0].0.as_str(), &prack.method), (B, &Method::Prack));
    assert_eq!(
        prack.headers.get("RAck"),
        Some("1 ".to_owned() + &request(&b_invite).cseq().unwrap().seq.to_string() + " INVITE")
            .as_deref()
    );
    assert_eq!(
        prack.to_tag().as_deref(),
        Some("btag"),
        "in the early dialog"
    );
    // A retransmission of the same 183 is neither PRACKed again by the core nor relayed.
    h.sip_in(B, &answer_with(&b_invite, 183, SDP_B, &rel));
    assert!(h
        .sip_out()
        .iter()
        .all(|(_, m)| m.as_request().is_none_or(|r| r.method != Method::Prack)));
    let ng = h.ng_out();
    assert_eq!(ng.len(), 1, "one NG answer for the early SDP");
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
    );
    let out = h.sip_out();
    assert_anchored(&out);
    let early = response(&out[0].1);
    assert_eq!(
        (early.status, early.body.as_slice()),
        (183, REC_TO_A.as_bytes())
    );
    assert!(
        early.headers.get("RSeq").is_none(),
        "unreliable towards the caller"
    );
}

#[test]
fn session_timers_are_negotiated_per_leg_and_an_unrefreshed_session_ends() {
    let mut h = Harness::new(RECORDED_DN);
    // The caller asks for 90 s and refreshes itself.
    let inv = edit(
        &invite(""),
        "Max-Forwards",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nMax-Forwards",
    );
    h.sip_in(A, &inv);
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let b_invite = h.sip_out().remove(0).1;
    assert_eq!(
        request(&b_invite).headers.get("Session-Expires"),
        Some("1800")
    );
    assert_eq!(request(&b_invite).headers.get("Min-SE"), Some("90"));
    // The callee makes sipctl the refresher of its leg.
    h.sip_in(
        B,
        &answer_with(
            &b_invite,
            200,
            SDP_B,
            &[
                ("Session-Expires", "120;refresher=uac"),
                ("Allow", "INVITE, ACK, BYE, UPDATE"),
            ],
        ),
    );
    let _ = h.sip_out();
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_A.as_bytes()),
    );
    let out = h.sip_out();
    let ok = response(&out[0].1);
    assert_eq!(ok.headers.get("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(ok.headers.get("Require"), Some("timer"));
    let a_tag = ok.to_tag().unwrap();
    h.sip_in(A, &in_dialog("ACK", &a_tag, 1, ""));
    // The caller refreshes once (an UPDATE answered by sipctl itself) ...
    h.advance(45_000);
    h.sip_in(
        A,
        &edit(
            &in_dialog("UPDATE", &a_tag, 2, ""),
            "Contact:",
            "Session-Expires: 90;refresher=uac\r\nSupported: timer\r\nContact:",
        ),
    );
    let out = h.sip_out();
    let r = response(&out[0].1);
    assert_eq!((out[0].0.as_str(), r.status), (A, 200));
    assert_eq!(r.headers.get("Session-Expires"), Some("90;refresher=uac"));
    // At half of 120 s sipctl refreshes B with UPDATE.
    h.advance(14_000);
    assert!(h.sip_out().is_empty());
    h.advance(1_500);
    let out = h.sip_out();
    assert_eq!(out.len(), 1, "{out:#?}");
    let upd = request(&out[0].1);
    assert_eq!((out[0].0.as_str(), &upd.method), (B, &Method::Update));
    assert!(upd.body.is_empty());
    assert_eq!(
        upd.headers.get("Session-Expires"),
        Some("120;refresher=uac")
    );
    h.sip_in(
        B,
        &answer_with(
            &out[0].1,
            200,
            "",
            &[("Session-Expires", "120;refresher=uac")],
        ),
    );
    assert!(h.sip_out().is_empty(), "no ACK for UPDATE");
    // ... then stops: 90 - 30 s after its refresh the call ends, BYE to both.
    h.advance(44_000);
    assert_eq!(h.core.calls().len(), 1);
    h.advance(1_000);
    let byes: Vec<String> = h
        .sip_out()
        .into_iter()
        .filter(|(_, m)| m.as_request().is_some_and(|r| r.method == Method::Bye))
        .map(|(d, _)| d)
        .collect();
    assert!(
        byes.contains(&A.to_owned()) && byes.contains(&B.to_owned()),
        "{byes:?}"
    );
    assert!(h.core.calls().is_empty());
    let ev = std::iter::from_fn(|| h.core.poll_event()).last().unwrap();
    assert_eq!(ev.kind, EventKind::Released);
    assert!(ev.reason.unwrap().contains("session timer expired"));
}

#[test]
fn too_short_a_session_interval_gets_422() {
    let mut h = Harness::new(RECORDED_DN);
    h.sip_in(
        A,
        &edit(
            &invite(""),
            "Max-Forwards",
            "Session-Expires: 30\r\nMax-Forwards",
        ),
    );
    let out = h.sip_out();
    let r = response(&out[0].1);
    assert_eq!((r.status, r.headers.get("Min-SE")), (422, Some("90")));
    assert!(h.core.calls().is_empty());
}

#[test]
fn a_call_that_rings_too_long_goes_to_the_no_answer_target() {
    let mut h = Harness::new(
        "[routing]\nno-answer-secs = 20\nno-answer-target = \"dn:1003\"\n\
         [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n\
         [[dn]]\nnumber = \"1003\"\ncontact = \"198.18.0.30:5060\"\n",
    );
    h.sip_in(A, &invite(""));
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let b_invite = h.sip_out().remove(0).1;
    h.sip_in(B, &answer(&b_invite, 180, ""));
    let _ = h.sip_out();
    h.advance(19_000);
    assert!(h.sip_out().iter().all(|(_, m)| m.as_request().is_none()));
    h.advance(1_500);
    let out = h.sip_out();
    let cancel = out
        .iter()
        .find(|(_, m)| m.as_request().is_some_and(|r| r.method == Method::Cancel));
    assert_eq!(
        cancel.map(|(d, _)| d.as_str()),
        Some(B),
        "the ringing callee is cancelled"
    );
    let (dest, c_invite) = out
        .iter()
        .find(|(_, m)| m.as_request().is_some_and(|r| r.method == Method::Invite))
        .expect("INVITE to the no-answer target");
    assert_eq!(dest, "198.18.0.30:5060");
    assert_eq!(
        request(c_invite).body,
        request(&b_invite).body,
        "the recorder's offer again"
    );
    assert!(String::from_utf8_lossy(&request(c_invite).body).contains("198.18.0.1"));
    // The first callee's 487 ends its leg only; the call goes on with the new one.
    h.sip_in(B, &answer(&b_invite, 487, ""));
    assert_eq!(h.core.calls().len(), 1);
    assert_eq!(h.core.calls()[0].dn.as_deref(), Some("1003"));
    // The target does not answer either: 480 to the caller.
    h.advance(20_500);
    let out = h.sip_out();
    assert!(out
        .iter()
        .any(|(d, m)| d == A && matches!(m, Message::Response(r) if r.status == 480)));
}

#[test]
fn an_offerless_reinvite_in_a_recorded_call_gets_the_recorders_sdp() {
    let mut h = Harness::new(RECORDED_DN);
    let a_tag = recorded_call(&mut h);
    h.sip_in(A, &in_dialog("INVITE", &a_tag, 2, ""));
    let out = h.sip_out();
    assert_anchored(&out);
    let r = response(&out[0].1);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("m=audio 30002"));
}

#[test]
fn a_trunk_by_name_fails_over_to_its_next_located_target() {
    use crate::sip::locate::{Destination, Located, Target, Transport as T};
    let toml = "[[trunk]]\nname = \"carrier\"\naddress = \"carrier.test\"\n\
                [[route]]\ncallee = \"1001\"\ntarget = \"trunk:carrier\"\n";
    let mut h = Harness::new(toml);
    let cfg = Config::from_toml(&format!(
        "[sip]\nlisten = [\"udp:198.18.0.1:5060\"]\n{toml}"
    ))
    .unwrap();
    let dest = Destination::from_uri(&Uri::parse(&cfg.trunks[0].uri).unwrap()).unwrap();
    // Before DNS answered, the trunk cannot be reached: 502.
    h.sip_in(A, &invite(""));
    let out = h.sip_out();
    assert_eq!(response(&out[0].1).status, 502);
    let target = |port| Target {
        addr: format!("198.18.0.{port}:5060").parse().unwrap(),
        transport: T::Udp,
    };
    h.core.handle_located(
        dest,
        Located::Targets {
            targets: vec![target(31), target(32), target(33)],
            expires: None,
        },
    );
    let call = edit(
        &edit(&invite(""), "call-a@", "call-b@"),
        "z9hG4bK-inv1",
        "z9hG4bK-inv2",
    );
    h.sip_in(A, &call);
    let out = h.sip_out();
    let (first, inv1) = out
        .iter()
        .find(|(_, m)| m.as_request().is_some())
        .expect("INVITE");
    assert_eq!(first, "198.18.0.31:5060");
    // 503 from the first (RFC 3263 §4.3): the next one gets the INVITE.
    h.sip_in("198.18.0.31:5060", &answer(inv1, 503, ""));
    let out = h.sip_out();
    let (second, _) = out
        .iter()
        .find(|(_, m)| m.as_request().is_some_and(|r| r.method == Method::Invite))
        .expect("INVITE to the second target");
    assert_eq!(second, "198.18.0.32:5060");
    assert!(
        out.iter().all(|(d, _)| d != A),
        "the caller hears nothing of the failover"
    );
    // The second never answers (timer B, 32 s): the third gets it.
    h.advance(32_500);
    let out = h.sip_out();
    assert!(
        out.iter().any(|(d, m)| d == "198.18.0.33:5060"
            && m.as_request().is_some_and(|r| r.method == Method::Invite)),
        "{out:?}"
    );
}

#[test]
fn a_callee_asking_for_a_longer_session_interval_gets_one_retry() {
    let mut h = Harness::new(RECORDED_DN);
    h.sip_in(A, &invite(""));
    let ng = h.ng_out();
    h.ng_reply(
        &ng[0].0,
        &linecord_ng::reply::ok_with_sdp(REC_TO_B.as_bytes()),
    );
    let first = h.sip_out().remove(0).1;
    assert_eq!(request(&first).headers.get("Session-Expires"), Some("1800"));
    // RFC 4028 §7.4: 422 with a Min-SE above what sipctl asked for.
    h.sip_in(B, &answer_with(&first, 422, "", &[("Min-SE", "2400")]));
    let out = h.sip_out();
    let retry = out
        .iter()
        .map(|(_, m)| m)
        .find(|m| matches!(m, Message::Request(r) if r.method == Method::Invite))
        .expect("a new INVITE to the callee");
    let (r0, r1) = (request(&first), request(retry));
    assert_eq!(r1.headers.get("Session-Expires"), Some("2400"));
    assert_eq!(r1.headers.get("Min-SE"), Some("2400"));
    assert_eq!(r1.call_id(), r0.call_id(), "the same leg");
    assert_eq!(
        r1.cseq().map(|c| c.seq),
        r0.cseq().map(|c| c.seq + 1),
        "a new transaction"
    );
    assert!(
        !out.iter().any(|(to, _)| to == A),
        "the caller sees nothing of the first try"
    );
    // A second 422 goes back to the caller as it is: one retry only.
    h.sip_in(B, &answer_with(retry, 422, "", &[("Min-SE", "3000")]));
    let out = h.sip_out();
    let to_a: Vec<u16> = out
        .iter()
        .filter(|(to, _)| to == A)
        .map(|(_, m)| response(m).status)
        .collect();
    assert_eq!(to_a, [422]);
}
