//! Flows through the simulated network ([`super::sim`]): every flow over many seeds, with
//! loss and reordering, checking that each party ends where it should and that no SDP a
//! party gets names the other party while the call is recorded.

use super::sim::*;
use super::*;

const RECORDED_DN: &str =
    "[[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n";

/// 15 % SIP loss (2 % on the NG LAN), 1–80 ms delay (datagrams overtake each other).
const LOSSY: Conditions = Conditions {
    loss: 0.15,
    ng_loss: 0.02,
    delay_ms: (1, 80),
};

const SEEDS: u64 = 25;

fn assert_anchored(sim: &Sim, seed: u64) {
    for (who, sdps, other) in [
        ("caller", &sim.caller.got_sdp, "198.18.0.20"),
        ("callee", &sim.callee.got_sdp, "198.18.0.10"),
    ] {
        assert!(!sdps.is_empty(), "seed {seed}: the {who} got no SDP");
        for sdp in sdps {
            assert!(
                sdp.contains(RECORDER_IP) && !sdp.contains(other),
                "seed {seed}: the {who} got {sdp}"
            );
        }
    }
}

/// Sets a recorded call up; returns the scene once both parties are confirmed.
fn established(seed: u64) -> Sim {
    let mut sim = Sim::new(RECORDED_DN, LOSSY, seed);
    let now = sim.instant();
    sim.caller.call(now, "1001");
    sim.run_until(Duration::from_secs(8));
    assert!(
        sim.caller.confirmed() && sim.callee.confirmed(),
        "seed {seed}: not established after 8 s ({} lost)",
        sim.lost
    );
    sim
}

#[test]
fn a_recorded_call_over_a_lossy_reordering_network() {
    let mut total_lost = 0;
    for seed in 0..SEEDS {
        let mut sim = established(seed);
        assert_eq!(sim.core.calls().len(), 1);
        assert_eq!(sim.core.calls()[0].recording, RecordingState::On);
        let now = sim.instant();
        sim.caller.send_in_dialog(now, Method::Bye, false);
        sim.run_until(sim.elapsed() + Duration::from_secs(40));
        let events = sim.events();
        assert!(
            sim.caller.ended() && sim.callee.ended(),
            "seed {seed}: caller {:?} {:?}, callee {:?} {:?}, calls {:?}, events {:?}",
            sim.caller.dialog.as_ref().map(|d| d.state),
            sim.caller.got_finals,
            sim.callee.dialog.as_ref().map(|d| d.state),
            sim.callee.got_requests,
            sim.core.calls(),
            events
        );
        assert!(sim.core.calls().is_empty(), "seed {seed}");
        assert!(
            sim.caller.got_finals.contains(&(Method::Bye, 200)),
            "seed {seed}"
        );
        assert_eq!(
            sim.ng_commands.iter().filter(|c| *c == "delete").count(),
            1,
            "seed {seed}: {:?}",
            sim.ng_commands
        );
        assert_eq!(events.first(), Some(&"created"), "seed {seed}");
        assert_eq!(events.last(), Some(&"released"), "seed {seed}");
        assert!(
            events.contains(&"recording_started"),
            "seed {seed}: {events:?}"
        );
        assert_anchored(&sim, seed);
        total_lost += sim.lost;
    }
    assert!(
        total_lost > 0,
        "the network lost nothing: the test proves nothing"
    );
}

#[test]
fn mid_call_offers_from_the_callee_stay_in_the_recorder() {
    for seed in 0..SEEDS {
        let mut sim = established(seed);
        // RFC 3311 UPDATE with SDP, then a hold re-INVITE.
        let now = sim.instant();
        sim.callee.send_in_dialog(now, Method::Update, true);
        sim.run_until(sim.elapsed() + Duration::from_secs(20));
        assert!(
            sim.callee.got_finals.contains(&(Method::Update, 200)),
            "seed {seed}: {:?}",
            sim.callee.got_finals
        );
        assert!(
            sim.caller.got_requests.contains(&Method::Update),
            "seed {seed}"
        );
        let now = sim.instant();
        sim.callee.send_in_dialog(now, Method::Invite, true);
        sim.run_until(sim.elapsed() + Duration::from_secs(20));
        assert!(
            sim.callee.got_finals.contains(&(Method::Invite, 200)),
            "seed {seed}: {:?}",
            sim.callee.got_finals
        );
        let events = sim.events();
        assert_eq!(
            sim.core.calls()[0].recording,
            RecordingState::On,
            "seed {seed}: {events:?} {:?}",
            sim.ng_commands
        );
        assert_anchored(&sim, seed);
    }
}

#[test]
fn the_same_seed_replays_the_same_exchange() {
    let run = |seed| {
        let mut sim = established(seed);
        let now = sim.instant();
        sim.caller.send_in_dialog(now, Method::Bye, false);
        sim.run_until(sim.elapsed() + Duration::from_secs(40));
        (
            sim.lost,
            sim.ng_commands.clone(),
            sim.caller.got_sdp.clone(),
        )
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn early_media_stays_in_the_recorder_over_loss() {
    for seed in 0..SEEDS {
        let mut sim = Sim::new(RECORDED_DN, LOSSY, seed);
        sim.callee.early_media = true;
        sim.callee.answer_after = Some(Duration::from_secs(2));
        let now = sim.instant();
        sim.caller.call(now, "1001");
        sim.run_until(Duration::from_secs(10));
        assert!(
            sim.caller.confirmed() && sim.callee.confirmed(),
            "seed {seed}"
        );
        assert_anchored(&sim, seed);
        let events = sim.events();
        // A lost 183 is not retransmitted (it is unreliable): early media may be missed,
        // but never around the recorder.
        assert!(events.contains(&"answered"), "seed {seed}: {events:?}");
    }
}

#[test]
fn sipctl_keeps_a_session_alive_over_loss_as_refresher() {
    for seed in 0..SEEDS {
        let mut sim = Sim::new(RECORDED_DN, LOSSY, seed);
        sim.callee.answer_headers = vec![
            ("Session-Expires", "90;refresher=uac"),
            ("Require", "timer"),
        ];
        let now = sim.instant();
        sim.caller.call(now, "1001");
        // Four refresh periods of 45 s.
        sim.run_until(Duration::from_secs(190));
        let refreshes = sim
            .callee
            .got_requests
            .iter()
            .filter(|m| **m == Method::Update)
            .count();
        assert!(refreshes >= 4, "seed {seed}: {refreshes} refreshes");
        assert_eq!(sim.core.calls().len(), 1, "seed {seed}: the call ended");
        assert!(
            sim.caller.confirmed() && sim.callee.confirmed(),
            "seed {seed}"
        );
    }
}

#[test]
fn an_unanswered_call_moves_on_over_loss() {
    let toml = "[routing]\nno-answer-secs = 5\nno-answer-target = \"reject:480\"\n\
                [[dn]]\nnumber = \"1001\"\ncontact = \"198.18.0.20:5060\"\nrecord = true\n";
    for seed in 0..SEEDS {
        let mut sim = Sim::new(toml, LOSSY, seed);
        sim.callee.answer_after = None;
        let now = sim.instant();
        sim.caller.call(now, "1001");
        sim.run_until(Duration::from_secs(40));
        assert!(
            sim.caller.got_finals.contains(&(Method::Invite, 480)),
            "seed {seed}: {:?}",
            sim.caller.got_finals
        );
        assert!(
            sim.callee.got_requests.contains(&Method::Cancel),
            "seed {seed}"
        );
        assert!(sim.core.calls().is_empty(), "seed {seed}");
        assert!(
            sim.ng_commands.contains(&"delete".to_owned()),
            "seed {seed}"
        );
    }
}
