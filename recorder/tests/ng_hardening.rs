//! Hostile NG input against the real `recorder` binary on loopback: a flood of requests that
//! each carry a 60 KB unknown key must not grow the daemon's memory or its log without bound,
//! and an offer with thousands of media lines must be refused by the per-call limit without
//! taking a single media port. Every loop and wait is bounded.

mod support;

use std::path::Path;
use std::time::Instant;

use linecord_ng::bencode::Value;
use linecord_ng::request::{Command as NgCommand, Request};
use support::*;

/// Requests in the flood (the size of the reproduction in the hardening issue).
const FLOOD_REQUESTS: usize = 4_000;
/// Size of the unknown key each flood request carries.
const FLOOD_KEY_BYTES: usize = 60_000;
/// Most the recorder's resident memory may grow over the flood. Each refused request leaves
/// one reply-cache entry of ~0.3 KB (cookie, 120-byte reply, bookkeeping), ~1.3 MB for the
/// flood; the rest is allocator noise. Before the fix the flood added ~230 MiB.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;
/// Most log output the flood may cause at `--log-level info` (before the fix: 240 MB).
const MAX_FLOOD_LOG_BYTES: u64 = 1 << 20;
/// Longest log line accepted: a refusal line names the source and a reason of at most 256
/// bytes.
const MAX_LOG_LINE: usize = 1024;
/// Refusal lines a second (`REFUSAL_LOGS_PER_SEC`) plus the "suppressed" line.
const LOG_LINES_PER_SEC: u64 = 10 + 1;

/// Resident memory of the recorder process (`VmRSS` in /proc/PID/status), KiB.
fn rss_kib(rec: &Recorder) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", rec.child.id()))
        .expect("recorder's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn stat(v: &Value, group: &str, key: &str) -> i64 {
    v.get("statistics")
        .and_then(|s| s.get(group))
        .and_then(|g| g.get(key))
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no statistics.{group}.{key} in {v:?}"))
}

#[test]
fn unknown_key_flood_keeps_memory_and_log_bounded_and_the_daemon_answers() {
    let rec = Recorder::start_logged("flood", 43_000, 43_099, &[]);
    let ng = rec.client();
    ng.ok(&Request::new(NgCommand::Ping));
    let rss_before = rss_kib(&rec);
    let log_before = file_len(rec.log());

    let key = "k".repeat(FLOOD_KEY_BYTES);
    let mut body = Request::new(NgCommand::Ping).to_value();
    body.insert(&key, 1);
    let started = Instant::now();
    let (mut longest_reason, mut longest_reply, mut answered) = (0, 0, 0);
    let mut sample = String::new();
    for i in 0..FLOOD_REQUESTS {
        // Lockstep (wait for each reply, retried by the client) so that every request is
        // processed: a burst would mostly be dropped by the socket buffer.
        let Ok(v) = ng.call_with_cookie(&format!("flood-{i}"), &body) else {
            continue;
        };
        answered += 1;
        longest_reply = longest_reply.max(v.to_bytes().len());
        let reason = v
            .get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or_default();
        longest_reason = longest_reason.max(reason.len());
        if sample.is_empty() {
            sample = reason.chars().take(120).collect();
        }
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(&rec);
    let log_after = file_len(rec.log());
    let growth = rss_after.saturating_sub(rss_before);
    let logged = log_after - log_before;
    eprintln!(
        "flood: {answered}/{FLOOD_REQUESTS} answered in {elapsed:?}; VmRSS {rss_before} -> \
         {rss_after} KiB (+{growth} KiB); log +{logged} bytes; longest reply {longest_reply} \
         bytes, longest error-reason {longest_reason} bytes: {sample:?}"
    );

    assert_eq!(answered, FLOOD_REQUESTS, "every flood request is answered");
    assert!(
        sample.starts_with("unsupported key 'kkkk") && sample.ends_with("…'"),
        "the refusal names the key by a short prefix: {sample:?}"
    );
    assert!(
        longest_reason <= 128,
        "error-reason echoes at most a short prefix: {longest_reason} bytes"
    );
    assert!(longest_reply <= 256, "reply of {longest_reply} bytes");
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "VmRSS grew by {growth} KiB (bound {MAX_RSS_GROWTH_KIB} KiB)"
    );
    assert!(
        logged < MAX_FLOOD_LOG_BYTES,
        "the flood logged {logged} bytes (bound {MAX_FLOOD_LOG_BYTES})"
    );
    // Tighter: what the rate limit allows for the time the flood took.
    let allowed = (elapsed.as_secs() + 2) * LOG_LINES_PER_SEC * MAX_LOG_LINE as u64;
    assert!(
        logged <= allowed,
        "{logged} bytes in {elapsed:?}: more than {LOG_LINES_PER_SEC} bounded lines a second"
    );
    let log = std::fs::read_to_string(rec.log()).unwrap();
    assert!(
        log.contains("NG request refused"),
        "refusals are logged (rate-limited), not silenced"
    );
    assert!(
        log.contains("suppressed"),
        "the rate limiter says how many lines it suppressed"
    );
    assert!(
        log.lines().all(|l| l.len() < MAX_LOG_LINE),
        "every log line is bounded"
    );

    // Still alive and answering, and the refusals are counted.
    let pong = ng.ok(&Request::new(NgCommand::Ping));
    assert_eq!(pong.get("result").and_then(Value::as_str), Some("pong"));
    let s = ng.ok(&Request::new(NgCommand::Statistics));
    assert!(stat(&s, "totalstatistics", "controlerrors") >= FLOOD_REQUESTS as i64);
}

/// An SDP with `lines` audio media lines (24 bytes each), like the 57 KB offer of the issue.
fn many_media_sdp(lines: usize) -> Vec<u8> {
    let mut s =
        String::from("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n");
    for i in 0..lines {
        s.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * (i % 1000)));
    }
    s.into_bytes()
}

#[test]
fn offer_with_2400_media_lines_is_refused_by_name_and_takes_no_ports() {
    // 5 000 pairs: without a limit the offer would take 4 800 of them (96 %).
    let rec = Recorder::start_logged("media-limit", 20_000, 29_999, &[]);
    let ng = rec.client();
    let stats = || ng.ok(&Request::new(NgCommand::Statistics));
    let free = |s: &Value| stat(s, "currentstatistics", "freeportpairs");
    let before = stats();
    assert_eq!(free(&before), 5_000);

    let sdp = many_media_sdp(2_400);
    assert!(sdp.len() > 57_000, "{} bytes", sdp.len());
    let mut offer = request(NgCommand::Offer, "call-2400", "tag-a", None);
    offer.sdp = Some(sdp);
    let reply = ng.try_call(&offer.to_value()).expect("NG reply");
    let after = stats();
    let reason = reply
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "2400 m= lines: result {:?} {reason:?}; free port pairs {} -> {}",
        reply.get("result").and_then(Value::as_str),
        free(&before),
        free(&after)
    );
    assert_eq!(reason, "too many media lines: 2400 > max-media-per-call 16");
    assert_eq!(free(&after), free(&before), "no port was taken");
    assert_eq!(stat(&after, "currentstatistics", "sessionsown"), 0);
    assert_eq!(stat(&after, "totalstatistics", "managedsessions"), 0);
    assert_eq!(stat(&after, "totalstatistics", "limitrejections"), 1);

    // An SDP over the size bound (one media line, padded with attributes) is refused too.
    let mut big = many_media_sdp(1);
    while big.len() <= 16 * 1024 {
        big.extend_from_slice(b"a=x-padding:0123456789abcdef0123456789abcdef\r\n");
    }
    let mut offer = request(NgCommand::Offer, "call-big", "tag-a", None);
    offer.sdp = Some(big.clone());
    let reason = ng.err(&offer.to_value());
    assert_eq!(
        reason,
        format!("SDP too large: {} bytes > max-sdp-size 16384", big.len())
    );
    assert_eq!(free(&stats()), free(&before));

    // The same recorder serves a normal call: one media line, a pair per party.
    let mut call = setup_call(&ng, "call-normal", &["trust-address"]);
    assert_eq!(free(&stats()), free(&before) - 2);
    call.a.send_rtp(call.a_to, 10);
    assert_eq!(call.b.recv_n(10).len(), 10);
    ng.ok(&request(
        NgCommand::Delete,
        "call-normal",
        "tag-a",
        Some("tag-b"),
    ));
    let end = stats();
    assert_eq!(free(&end), free(&before), "nothing leaked");
    assert_eq!(stat(&end, "currentstatistics", "sessionsown"), 0);
    assert_eq!(stat(&end, "totalstatistics", "managedsessions"), 1);
    assert_eq!(stat(&end, "totalstatistics", "limitrejections"), 2);

    // A limit raised by flag lets a bigger (legitimate) call through.
    drop(rec);
    let rec = Recorder::start_logged(
        "media-limit-raised",
        20_000,
        20_199,
        &["--max-media-per-call", "20"],
    );
    let ng = rec.client();
    let mut offer = request(NgCommand::Offer, "call-20", "tag-a", None);
    offer.sdp = Some(many_media_sdp(20));
    ng.ok(&offer);
    let mut offer = request(NgCommand::Offer, "call-21", "tag-a", None);
    offer.sdp = Some(many_media_sdp(21));
    assert_eq!(
        ng.err(&offer.to_value()),
        "too many media lines: 21 > max-media-per-call 20"
    );
}
