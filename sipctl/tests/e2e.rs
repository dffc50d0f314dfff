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
