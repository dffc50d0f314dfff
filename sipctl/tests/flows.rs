//! Recorded calls whose media may move, end to end: real sipp parties in network namespaces,
//! sipctl and the recorder in the recorder's namespace, on both recorder backends. Each flow
//! checks that the media stays in the recorder (the sipp scenarios fail the call if an SDP a
//! party gets names the other party or lacks the recorder's address) and that the exported
//! WAV holds each party's tone for the time that proves it (docs/sipctl.md). Needs root.

mod support;

use std::time::Duration;

use support::*;

const DN_RECORDED: &str = r#"
[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true
"#;

/// sipctl's address for the scenarios that send requests in the dialog.
const SIPCTL: &[&str] = &["-key", "sipctl", "198.18.0.1:5060"];

/// Runs one recorded call: the callee scenario (with `callee_args`), then the caller calling
/// 1001; both must succeed. Returns the lab (for events) and the exported channels.
fn recorded_call(
    backend: &'static [&'static str],
    config: &str,
    callee: &str,
    callee_args: &[&str],
    caller: &str,
    caller_args: &[&str],
) -> (Lab, serde_json::Value, Vec<i16>, Vec<i16>) {
    let lab = Lab::up_on(backend, config, true);
    let b = lab.callee(callee, callee_args);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller(caller, "1001", caller_args);
    assert_sipp_ok(a, caller, &lab);
    assert_sipp_ok(b, callee, &lab);
    let job = lab.wait_recordings(1).remove(0);
    assert_eq!(job["status"], "complete", "{job}");
    let (left, right) = lab.export(job["file"].as_str().unwrap());
    (lab, job, left, right)
}

fn update_with_sdp_keeps_the_media_in_the_recorder(backend: &'static [&'static str]) {
    // The callee talks 1.5 s, sends UPDATE with SDP, talks on for the ~2.5 s until the
    // caller hangs up: more than 2 s of its tone is possible only after the UPDATE.
    let (lab, job, left, right) = recorded_call(
        backend,
        DN_RECORDED,
        "callee_update.xml",
        SIPCTL,
        "caller_update.xml",
        &[],
    );
    assert_tone(&left, TONE_A, TONE_B, 3.0, "caller channel");
    assert_tone(
        &right,
        TONE_B,
        TONE_A,
        3.0,
        "callee channel (after the UPDATE)",
    );
    let kinds = lab.event_kinds(job["call_id"].as_str().unwrap());
    assert!(kinds.contains(&"recording_stopped".to_owned()), "{kinds:?}");
}

#[test]
fn update_with_sdp_keeps_the_media_in_the_recorder_udp() {
    update_with_sdp_keeps_the_media_in_the_recorder(UDP);
}

#[test]
fn update_with_sdp_keeps_the_media_in_the_recorder_xdp() {
    update_with_sdp_keeps_the_media_in_the_recorder(XDP);
}

fn early_media_is_relayed_and_recorded(backend: &'static [&'static str]) {
    // 1.5 s of early media, then 3 s of call: over 4 s of the callee's tone only if the
    // early media went through the recorder.
    let (lab, job, left, right) = recorded_call(
        backend,
        DN_RECORDED,
        "callee_early.xml",
        &[],
        "caller.xml",
        &[],
    );
    assert_tone(
        &right,
        TONE_B,
        TONE_A,
        4.0,
        "callee channel (early media included)",
    );
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    let kinds = lab.event_kinds(job["call_id"].as_str().unwrap());
    assert_eq!(
        kinds,
        [
            "created",
            "ringing",
            "early_media",
            "answered",
            "recording_started",
            "recording_stopped",
            "released"
        ]
    );
}

#[test]
fn early_media_is_relayed_and_recorded_udp() {
    early_media_is_relayed_and_recorded(UDP);
}

#[test]
fn early_media_is_relayed_and_recorded_xdp() {
    early_media_is_relayed_and_recorded(XDP);
}

fn reliable_early_media_is_pracked_and_recorded(backend: &'static [&'static str]) {
    // The scenario fails without a PRACK whose RAck names RSeq 1; 1 s early + 3 s call.
    let (_lab, _job, left, right) = recorded_call(
        backend,
        DN_RECORDED,
        "callee_prack.xml",
        &[],
        "caller.xml",
        &[],
    );
    assert_tone(
        &right,
        TONE_B,
        TONE_A,
        3.5,
        "callee channel (reliable early media)",
    );
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
}

#[test]
fn reliable_early_media_is_pracked_and_recorded_udp() {
    reliable_early_media_is_pracked_and_recorded(UDP);
}

#[test]
fn reliable_early_media_is_pracked_and_recorded_xdp() {
    reliable_early_media_is_pracked_and_recorded(XDP);
}

fn callee_holds_and_resumes(backend: &'static [&'static str]) {
    let (lab, _job, left, right) = recorded_call(
        backend,
        DN_RECORDED,
        "callee_hold.xml",
        SIPCTL,
        "caller_reinvites.xml",
        &[],
    );
    // The caller talks until after the resume (2 s after the second re-INVITE).
    assert_tone(&left, TONE_A, TONE_B, 3.0, "caller channel");
    assert_tone(
        &right,
        TONE_B,
        TONE_A,
        2.5,
        "callee channel (after the resume)",
    );
    assert!(
        lab.relayed_packets() > 300,
        "the recorder relayed the call throughout"
    );
}

#[test]
fn callee_holds_and_resumes_udp() {
    callee_holds_and_resumes(UDP);
}

#[test]
fn callee_holds_and_resumes_xdp() {
    callee_holds_and_resumes(XDP);
}

#[test]
fn sipctl_refreshes_the_session_the_callee_asks_it_to() {
    // Session-Expires 90 with sipctl as refresher: its UPDATE comes at 45 s, the scenario
    // fails without it; the caller hangs up at 47 s.
    let (_lab, _job, left, right) = recorded_call(
        UDP,
        DN_RECORDED,
        "callee_session_timer.xml",
        &[],
        "caller_hold_on.xml",
        &["-d", "47000"],
    );
    assert_tone(&left, TONE_A, TONE_B, 20.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 20.0, "callee channel");
}

const NO_ANSWER: &str = r#"
[routing]
no-answer-secs = 5
no-answer-target = "dn:1003"

[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
record = true

[[dn]]
number = "1003"
contact = "198.18.0.20:5070"
"#;

#[test]
fn a_call_nobody_answers_moves_to_the_no_answer_target() {
    let lab = Lab::up(NO_ANSWER, true);
    // Party C: DN 1003, on B's host at port 5070, with its own voice.
    let c_dir = lab.dir.join("c");
    std::fs::create_dir_all(&c_dir).unwrap();
    sipctl::audio::write_pcap(
        &c_dir.join("callee.pcap"),
        &sipctl::audio::tone(TONE_C, 30.0),
    )
    .unwrap();
    let c = lab.sipp_at("b", "5070", "6100", &c_dir, "callee.xml", &[]);
    // B rings and never answers: sipctl CANCELs it after 5 s (the scenario needs the CANCEL).
    let b = lab.callee("callee_ring.xml", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.caller("caller.xml", "1001", &[]);
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee that never answers", &lab);
    assert_sipp_ok(c, "no-answer target", &lab);
    let job = lab.wait_recordings(1).remove(0);
    assert_eq!(job["status"], "complete", "{job}");
    let (left, right) = lab.export(job["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_C, 2.0, "caller channel");
    assert_tone(&right, TONE_C, TONE_A, 2.0, "no-answer target's channel");
}

const AGENT_CALLS_OUT: &str = r#"
[[dn]]
number = "100"
contact = "198.18.0.10:5060"
record = true

[[dn]]
number = "1001"
contact = "198.18.0.20:5060"
"#;

#[test]
fn an_agents_outbound_call_is_recorded() {
    // DN 100 (the caller) records; DN 1001 (called) does not.
    let (lab, job, left, right) =
        recorded_call(UDP, AGENT_CALLS_OUT, "callee.xml", &[], "caller.xml", &[]);
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee channel");
    let global = job["call_id"].as_str().unwrap();
    let created = lab
        .events()
        .into_iter()
        .find(|e| e["global_call_id"] == global && e["kind"] == "created")
        .expect("created event");
    assert_eq!(created["parties"]["agent_dn"], "100", "{created}");
    assert_eq!(created["parties"]["agent_side"], "caller", "{created}");
    let started = lab
        .events()
        .into_iter()
        .find(|e| e["global_call_id"] == global && e["kind"] == "recording_started")
        .expect("recording_started");
    assert_eq!(started["recording"]["initiator"], "dn", "{started}");
}

const TRUNK_BY_SRV: &str = r#"
[dns]
servers = ["127.0.0.1:5353"]

[[trunk]]
name = "carrier"
address = "carrier.test"
transport = "udp"

[[route]]
name = "to-the-carrier"
callee = "1001"
target = "trunk:carrier"
record = true
"#;

#[test]
fn a_call_reaches_a_trunk_found_by_srv() {
    let mut lab = Lab::up(TRUNK_BY_SRV, true);
    // dnsmasq in sipctl's namespace: _sip._udp.carrier.test → the callee's host.
    let log = lab.dir.join("dnsmasq.log");
    let dnsmasq = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("rec"), "dnsmasq"])
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-daemon",
            "--port=5353",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--log-queries",
            "--srv-host=_sip._udp.carrier.test,b.carrier.test,5060,0,10",
            "--host-record=b.carrier.test,198.18.0.20",
        ])
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!(
            "--pid-file={}",
            lab.dir.join("dnsmasq.pid").display()
        ))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dnsmasq (apt package dnsmasq-base, installed by scripts/setup.sh)");
    lab.others.push(dnsmasq);
    std::thread::sleep(Duration::from_millis(300));
    // sipctl locates the trunk at start: start it now that DNS is up.
    lab.restart_sipctl();
    let b = lab.callee("callee.xml", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let a = lab.caller("caller.xml", "1001", &[]);
    assert_sipp_ok(a, "caller", &lab);
    assert_sipp_ok(b, "callee at the SRV target", &lab);
    let job = lab.wait_recordings(1).remove(0);
    let (left, right) = lab.export(job["file"].as_str().unwrap());
    assert_tone(&left, TONE_A, TONE_B, 2.0, "caller channel");
    assert_tone(&right, TONE_B, TONE_A, 2.0, "callee channel");
    let queries = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        queries.contains("_sip._udp.carrier.test"),
        "sipctl asked for the SRV records: {queries}"
    );
}
