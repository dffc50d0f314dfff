//! sipctl end to end: real sipp UAs in network namespaces, sipctl and recorder in the
//! recorder's namespace (docs/sipctl.md). Needs root (network namespaces), as CI runs.

mod support;

use std::time::Duration;

use support::*;

const DN_RECORDED: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true
"#;

#[test]
fn dn_record_true_records_the_call_from_the_start() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &[]);
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let jobs = lab.wait_recordings(1);
    let job = &jobs[0];
    assert_eq!(job["status"], "complete", "{job}");
    let (left, right) = lab.export(job["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee channel");
    let global = job["call_id"].as_str().unwrap();
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
}

const ROUTED: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"

[[route]]
name = "record-2xxx"
callee = "2*"
target = "dn:1001"
record = true
"#;

#[test]
fn a_routing_rule_records_and_a_call_it_does_not_match_flows_directly() {
    let lab = Lab::up(ROUTED, true);
    // Matches the rule: recorded.
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "2001", &[]);
    assert_sipp_ok(a, "caller (2001)", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let jobs = lab.wait_recordings(1);
    let (left, right) = lab.export(jobs[0]["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee channel");
    let through_recorder = lab.relayed_packets();
    assert!(through_recorder > 200, "{through_recorder} packets");

    // Matches no rule: DN 1001 without record = true: direct media, nothing recorded.
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &[]);
    assert_sipp_ok(a, "caller (1001)", &lab);
    assert_sipp_ok(b, "callee", &lab);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.relayed_packets(),
        through_recorder,
        "media went through the recorder"
    );
    assert_eq!(lab.jobs("recording").len(), 1);
    let events = lab.events();
    let direct: Vec<&str> = events
        .iter()
        .filter(|e| e["parties"]["callee"]["number"] == "1001")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(direct, ["created", "ringing", "answered", "released"]);
}

const DN_PLAIN: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
"#;

#[test]
fn agent_starts_and_stops_recording_mid_call_with_reinvites() {
    let lab = Lab::up(DN_PLAIN, true);
    let b = lab.callee("callee_reinvites.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller_reinvites.xml", "1001", &[]);
    let call = lab.wait_confirmed();
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["recording"], "off");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.relayed_packets(), 0, "direct media before the start");

    let (status, body) = lab.record(&id, "start");
    assert_eq!(status, 200, "{body}\n{}", lab.sipctl_log());
    assert_eq!(body["call"]["recording"], "on");
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = lab.record(&id, "stop");
    assert_eq!(status, 200, "{body}\n{}", lab.sipctl_log());
    assert_eq!(body["call"]["recording"], "off");
    let after_stop = lab.relayed_packets();
    assert!(
        after_stop > 150,
        "{after_stop} packets went through the recorder"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        lab.relayed_packets(),
        after_stop,
        "media still through the recorder after stop"
    );

    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let jobs = lab.wait_recordings(1);
    let job = &jobs[0];
    let (left, right) = lab.export(job["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 1.5, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 1.5, "callee channel");
    assert!(
        super_short(&left),
        "the recording holds only the recorded span"
    );
    let kinds = lab.event_kinds(job["call_id"].as_str().unwrap());
    assert_eq!(
        kinds,
        [
            "created",
            "ringing",
            "answered",
            "recording_started",
            "recording_stopped",
            "released"
        ]
    );
}

/// At most ~3.5 s of audio: the span between start and stop, not the whole call.
fn super_short(ch: &[i16]) -> bool {
    audible_seconds(ch) < 3.5
}

#[test]
fn agent_pauses_and_resumes_a_recording() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &[]);
    let call = lab.wait_confirmed();
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["recording"], "on");
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = lab.record(&id, "pause");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["call"]["recording"], "paused");
    // Pausing twice is a conflict, with a clear message.
    let (status, body) = lab.record(&id, "pause");
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("paused"), "{body}");
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = lab.record(&id, "resume");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["call"]["recording"], "on");
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let jobs = lab.wait_recordings(1);
    let (left, _right) = lab.export(jobs[0]["file"].as_str().unwrap());
    let audible = audible_seconds(&left);
    assert!(
        (0.8..2.6).contains(&audible),
        "{audible:.2} s audible of a 3 s call paused for 1.2 s"
    );
    let kinds = lab.event_kinds(jobs[0]["call_id"].as_str().unwrap());
    assert_eq!(
        kinds,
        [
            "created",
            "ringing",
            "answered",
            "recording_started",
            "recording_paused",
            "recording_resumed",
            "recording_stopped",
            "released"
        ]
    );
}

#[test]
fn callee_hangs_up() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee_hangup.xml", &["-key", "sipctl", "198.18.0.1:5060"]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller_wait_bye.xml", "1001", &[]);
    assert_sipp_ok(b, "callee", &lab);
    assert_sipp_ok(a, "caller", &lab);
    let jobs = lab.wait_recordings(1);
    let kinds = lab.event_kinds(jobs[0]["call_id"].as_str().unwrap());
    assert_eq!(kinds.last().map(String::as_str), Some("released"));
    let released = lab
        .jobs("event")
        .into_iter()
        .find(|e| e["kind"] == "released")
        .unwrap();
    assert_eq!(released["reason"], "callee hung up");
    assert!(lab.calls().is_empty());
}

#[test]
fn caller_cancels_before_answer() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee_ring.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller_cancel.xml", "1001", &[]);
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let events = lab.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "ringing", "released"]);
    assert_eq!(events[2]["status_code"], 487);
    assert!(lab.calls().is_empty());
    // The recorder's session was deleted: no call left there.
    let mut list = linecord_ng::Value::dict();
    list.insert("command", "list");
    let v = lab.ng(&list).unwrap();
    assert_eq!(
        v.get("calls").and_then(|c| c.as_list()).map(|l| l.len()),
        Some(0),
        "{v:?}"
    );
}

const DN_CRITICAL: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true
record-critical = true

[[dn]]
number = "1003"
contact = "198.18.0.20:5060"
record = true
"#;

#[test]
fn recorder_down_refuses_critical_calls_and_lets_others_through_unrecorded() {
    let lab = Lab::up(DN_CRITICAL, false);
    // record-critical: refused with 500.
    let a = lab.caller("caller_refused.xml", "1001", &[]);
    assert_sipp_ok(a, "caller (critical)", &lab);
    // Not critical: the call goes on with direct media.
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1003", &[]);
    assert_sipp_ok(a, "caller (not critical)", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let events = lab.events();
    let by_callee = |n: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["parties"]["callee"]["number"] == n)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        by_callee("1001"),
        ["created", "recording_failed", "released"]
    );
    assert_eq!(
        by_callee("1003"),
        [
            "created",
            "recording_failed",
            "ringing",
            "answered",
            "released"
        ]
    );
    let failed = events
        .iter()
        .find(|e| e["kind"] == "recording_failed")
        .unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("recorder"),
        "{failed}"
    );
    let (status, v) = lab.http("GET", "/v1/status", None, Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(v["counters"]["recordings_failed"], 2, "{v}");
    assert_eq!(v["counters"]["refused_record_critical"], 1, "{v}");
}

#[test]
fn a_call_over_tcp() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &["-t", "t1"]);
    assert_sipp_ok(a, "caller over TCP", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let jobs = lab.wait_recordings(1);
    let (left, right) = lab.export(jobs[0]["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee channel");
}

#[test]
fn bad_sip_gets_400_or_is_dropped_and_sipctl_keeps_working() {
    let lab = Lab::up(DN_RECORDED, true);
    let replies = in_netns(&lab.ns("a"), || {
        let s = std::net::UdpSocket::bind("198.18.0.10:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let to = "198.18.0.1:5060";
        let head = |extra: &str| {
            format!(
                "INVITE sip:1001@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5070;branch=z9hG4bK-bad{}\r\n\
                 From: <sip:100@198.18.0.10>;tag=x\r\nTo: <sip:1001@198.18.0.1>\r\nCall-ID: bad@test\r\n\
                 CSeq: 1 INVITE\r\n{extra}",
                extra.len()
            )
        };
        let mut got = Vec::new();
        let cases: Vec<Vec<u8>> = vec![
            b"\x00\x01garbage\r\n\r\n".to_vec(),
            head("Max-Forwards: many\r\nContent-Length: 0\r\n\r\n").into_bytes(),
            head("Content-Length: 500\r\n\r\nv=0\r\n").into_bytes(),
            b"INVITE sip:1001@198.18.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec(),
            {
                let mut big = head("Content-Length: 60000\r\n\r\n").into_bytes();
                big.resize(big.len() + 60000, b'x');
                big
            },
        ];
        for c in cases {
            let _ = s.send_to(&c, to);
            let mut buf = vec![0u8; 65536];
            got.push(match s.recv_from(&mut buf) {
                Ok((n, _)) => String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                Err(_) => "(dropped)".to_owned(),
            });
        }
        // Still alive: OPTIONS is answered.
        let options = "OPTIONS sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5070;branch=z9hG4bK-opt\r\n\
                       From: <sip:100@198.18.0.10>;tag=y\r\nTo: <sip:198.18.0.1>\r\nCall-ID: opt@test\r\n\
                       CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        s.send_to(options.as_bytes(), to).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.recv_from(&mut buf).map(|(n, _)| n).unwrap_or(0);
        got.push(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        );
        got
    });
    assert_eq!(replies[0], "(dropped)", "garbage");
    assert!(
        replies[1].starts_with("SIP/2.0 400"),
        "bad Max-Forwards: {}",
        replies[1]
    );
    assert!(
        replies[2].starts_with("SIP/2.0 400"),
        "truncated body: {}",
        replies[2]
    );
    assert_eq!(replies[3], "(dropped)", "no Via/From/To: nowhere to answer");
    // A 60 KB INVITE is within the 64 KiB limit: answered (not an SDP offer), not a crash.
    assert!(
        replies[4].starts_with("SIP/2.0 4"),
        "60 KB INVITE: {}",
        replies[4]
    );
    assert_eq!(replies[5], "SIP/2.0 200 OK", "OPTIONS after the bad input");
    // Over TCP a message larger than the limit closes the connection.
    let closed = in_netns(&lab.ns("a"), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect("198.18.0.1:5060").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut huge = b"OPTIONS sip:198.18.0.1 SIP/2.0\r\nX-Huge: ".to_vec();
        huge.resize(200_000, b'y');
        let _ = s.write_all(&huge);
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    });
    assert!(
        closed,
        "the connection is closed after an oversized message"
    );
    let (status, v) = lab.http("GET", "/v1/status", None, Some(TOKEN));
    assert_eq!(status, 200);
    assert!(v["counters"]["bad_messages"].as_u64().unwrap() >= 3, "{v}");
}

#[test]
fn the_api_refuses_bad_requests_clearly() {
    let lab = Lab::up(DN_RECORDED, true);
    let (s, v) = lab.http("GET", "/v1/calls", None, None);
    assert_eq!(s, 401, "{v}");
    let (s, v) = lab.http("GET", "/v1/calls", None, Some("wrong"));
    assert_eq!(s, 401, "{v}");
    let (s, v) = lab.http(
        "POST",
        "/v1/calls/999/recording",
        Some("{\"action\":\"start\"}"),
        Some(TOKEN),
    );
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("999"));
    let (s, v) = lab.http(
        "POST",
        "/v1/calls/1/recording",
        Some("{\"action\":\"explode\"}"),
        Some(TOKEN),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("explode"));
    let (s, v) = lab.http(
        "POST",
        "/v1/calls/1/recording",
        Some("not json"),
        Some(TOKEN),
    );
    assert_eq!(s, 400, "{v}");
    let (s, _) = lab.http("GET", "/v1/nothing", None, Some(TOKEN));
    assert_eq!(s, 404);
}

/// The whole system: a call recorded through sipctl and the recorder, then the real
/// processor indexes the recorder's job and sipctl's events from the shared spool, its API
/// shows the interaction, and headless Chromium plays it in the web UI.
#[test]
fn a_recorded_call_reaches_the_processor_and_plays_in_the_ui() {
    let lab = Lab::up(DN_RECORDED, true);
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &[]);
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee", &lab);
    let global = lab.wait_recordings(1)[0]["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // sipctl writes its last events right after the call; give it a moment.
    std::thread::sleep(Duration::from_millis(500));

    let processor = Processor::start(&lab);
    let detail = processor.wait_interaction(&global, 6);
    let interaction = &detail["interaction"];
    assert_eq!(interaction["caller"], "100", "{detail}");
    assert_eq!(interaction["callee"], "1001", "{detail}");
    assert_eq!(interaction["dns"], serde_json::json!(["1001"]), "{detail}");
    let seconds = interaction["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!((2.5..4.5).contains(&seconds), "{seconds} s");
    let segment = &detail["segments"][0];
    let talk = &segment["analysis"]["talk_ms"];
    assert!(
        talk[0].as_u64().unwrap() > 2000 && talk[1].as_u64().unwrap() > 2000,
        "{segment}"
    );
    let mos = segment["analysis"]["mos"].as_f64().unwrap();
    assert!(mos > 4.0, "MOS {mos} of a lossless call");
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "ringing",
            "answered",
            "recording_started",
            "recording_stopped",
            "released"
        ]
    );
    let recorded_seconds = segment["duration_ms"].as_f64().unwrap() / 1000.0;
    processor.play_in_browser(&global, recorded_seconds);
}

const TRANSFER: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true

[[dn]]
number = "1003"
contact = "198.18.0.20:5070"
"#;

/// Tone of the transfer target (party C), Hz.

#[test]
fn callee_transfers_the_caller_and_the_recording_goes_on() {
    let lab = Lab::up(TRANSFER, true);
    // Party C: DN 1003, on B's host at port 5070, with its own voice.
    let c_dir = lab.dir.join("c");
    std::fs::create_dir_all(&c_dir).unwrap();
    sipctl::audio::write_pcap(
        &c_dir.join("callee.pcap"),
        &sipctl::audio::tone(TONE_C, 30.0),
    )
    .unwrap();
    let c = lab.sipp_at("b", "5070", "6100", &c_dir, "callee.xml", &[]);
    let b = lab.callee(
        "callee_transfer.xml",
        &["-key", "sipctl", "198.18.0.1:5060"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller_long.xml", "1001", &[]);
    assert_sipp_ok(b, "transferor (B)", &lab);
    std::thread::sleep(Duration::from_millis(300));
    let calls = lab.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["dn"], "1003", "the call now terminates at DN 1003");
    assert_eq!(calls[0]["recording"], "on");
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(c, "transfer target (C)", &lab);

    let jobs = lab.wait_recordings(1);
    assert_eq!(jobs.len(), 1, "one recording across the transfer");
    let (left, right) = lab.export(jobs[0]["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 4.0, "caller channel");
    // The other channel: B before the transfer, C after it.
    let (pb, pc, pa) = (
        tone_power(&right, TONE_B),
        tone_power(&right, TONE_C),
        tone_power(&right, TONE_A),
    );
    assert!(
        pb > 20.0 * pa && pc > 20.0 * pa,
        "B {pb:.0}, C {pc:.0}, A {pa:.0}"
    );
    let global = jobs[0]["call_id"].as_str().unwrap();
    assert_eq!(
        lab.event_kinds(global),
        [
            "created",
            "ringing",
            "answered",
            "recording_started",
            "transferred",
            "recording_stopped",
            "released"
        ]
    );
    let transferred = lab
        .events()
        .into_iter()
        .find(|e| e["kind"] == "transferred")
        .unwrap();
    assert_eq!(
        transferred["transfer_target"]["number"], "1003",
        "{transferred}"
    );
}
