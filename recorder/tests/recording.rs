//! End-to-end recording tests with the real `recorder` binary on loopback: speech-like audio
//! encoded to PCMU and sent as 20 ms RTP both ways through the relay with recording on, then
//! the file is exported and compared sample for sample; pause/resume; crash recovery.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::Command as Ng;
use linecord_recfile::g711::linear_to_ulaw;
use linecord_recfile::reader::Recording;
use linecord_recfile::{Completeness, Event, Record};
use support::*;

fn job_file(job: &serde_json::Value) -> PathBuf {
    PathBuf::from(job["file"].as_str().expect("job names its file"))
}

#[test]
fn recorded_call_exports_bit_exact_pcmu_in_both_channels() {
    let rec = Recorder::start(41_000, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-e2e", &["trust-address"]);
    let mut start = request(Ng::StartRecording, "rec-e2e", "tag-a", None);
    start.metadata = Some("agent=1001;queue=sales".into());
    ng.ok(&start);
    let a_pcm = speech(10.0, 130.0);
    let b_pcm = speech(10.0, 210.0);
    play(&mut call, &a_pcm, &b_pcm, |_| {});
    // Both parties got every packet while it was being recorded.
    assert!(call.b.count_for(Duration::from_millis(100)) > 0);
    let q = ng.ok(&request(Ng::Query, "rec-e2e", "tag-a", None));
    let state = q
        .get("recording")
        .and_then(|r| r.get("state"))
        .and_then(Value::as_str);
    assert_eq!(state, Some("recording"));
    ng.ok(&request(Ng::Delete, "rec-e2e", "tag-a", Some("tag-b")));

    let jobs = rec.wait_jobs(1);
    let job = &jobs[0];
    assert_eq!(job["schema"], "linecord.recording.v1");
    assert_eq!(job["call_id"], "rec-e2e");
    assert_eq!(job["status"], "complete");
    assert_eq!(job["complete"], true);
    let file = job_file(job);
    assert!(file.exists(), "{}", file.display());
    assert!(
        file.with_extension("json").exists(),
        "metadata beside the file"
    );
    let r = Recording::open(&file).unwrap();
    assert!(r.is_intact());
    assert_eq!(r.completeness(), Some(Completeness::Complete));
    assert_eq!(r.header.metadata.as_deref(), Some("agent=1001;queue=sales"));

    let wav = rec.data.join("call.wav");
    export(&file, "--wav", &wav);
    let (rate, left, right) = read_wav(&wav);
    assert_eq!(rate, 8000);
    assert_channel_is(
        &left,
        &g711_round_trip(&a_pcm[..a_pcm.len() / 160 * 160]),
        "caller",
    );
    assert_channel_is(
        &right,
        &g711_round_trip(&b_pcm[..b_pcm.len() / 160 * 160]),
        "callee",
    );

    let inspect = Command::new(recorder_bin())
        .args(["inspect", &file.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{text}");
    assert!(text.contains("integrity  ok"), "{text}");
    assert!(text.contains("rec-e2e"), "{text}");

    // Disk use against the raw payload (reported, and held to the format's target).
    let payload = 2 * (a_pcm.len() / 160) * 160;
    let size = std::fs::metadata(&file).unwrap().len();
    eprintln!(
        "recording: {size} bytes for {payload} payload bytes = {:.4}x",
        size as f64 / payload as f64
    );
    assert!(
        (size as f64) < payload as f64 * 1.05,
        "file {size} B vs payload {payload} B"
    );
}

#[test]
fn paused_span_is_silence_and_not_in_the_file() {
    let rec = Recorder::start(41_100, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-pause", &["trust-address"]);
    // `record call: yes` on an answer-like re-offer starts the recording.
    let mut offer = request(Ng::Offer, "rec-pause", "tag-a", Some("tag-b"));
    offer.sdp = Some(party_sdp(call.a.addr()).into_bytes());
    offer.flags = vec!["trust-address".into()];
    offer.record_call = Some(true);
    ng.ok(&offer);
    let a_pcm = speech(6.0, 140.0);
    let b_pcm = speech(6.0, 190.0);
    let ng2 = rec.client();
    play(&mut call, &a_pcm, &b_pcm, |i| match i {
        100 => {
            ng2.ok(&request(Ng::PauseRecording, "rec-pause", "tag-a", None));
        }
        200 => {
            ng2.ok(&request(Ng::StartRecording, "rec-pause", "tag-a", None));
        }
        _ => {}
    });
    let q = ng.ok(&request(Ng::Query, "rec-pause", "tag-a", None));
    assert_eq!(
        int_at(&q, &["recording", "packets"]) as usize,
        2 * 200,
        "{q:?}"
    );
    ng.ok(&request(Ng::StopRecording, "rec-pause", "tag-a", None));
    let jobs = rec.wait_jobs(1);
    let file = job_file(&jobs[0]);
    let r = Recording::open(&file).unwrap();
    let records = r.records().unwrap();
    let events: Vec<&Event> = records
        .iter()
        .filter_map(|x| match x {
            Record::Event(e) => Some(&e.event),
            Record::Packet(_) => None,
        })
        .collect();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Started,
                Event::Paused,
                Event::Resumed,
                Event::Stopped(_)
            ]
        ),
        "{events:?}"
    );
    // No payload of the paused span (packets 100..200 of either side) is in the file.
    let paused: Vec<Vec<u8>> = (100..200)
        .flat_map(|i| {
            [&a_pcm, &b_pcm].map(|pcm| {
                pcm[i * 160..(i + 1) * 160]
                    .iter()
                    .map(|s| linear_to_ulaw(*s))
                    .collect()
            })
        })
        .collect();
    for x in &records {
        if let Record::Packet(p) = x {
            assert!(!paused.contains(&p.payload), "a paused packet was recorded");
        }
    }
    let wav = rec.data.join("pause.wav");
    export(&file, "--wav", &wav);
    let (_, left, _) = read_wav(&wav);
    let expected = g711_round_trip(&a_pcm);
    let offset = left.iter().position(|s| *s != 0).unwrap();
    let seg = |from: usize, to: usize| &left[offset + from * 160..offset + to * 160];
    assert_eq!(seg(0, 100), &expected[..100 * 160]);
    assert!(
        seg(100, 200).iter().all(|s| *s == 0),
        "paused span is silence"
    );
    assert_eq!(seg(200, 300), &expected[200 * 160..300 * 160]);
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for k in path {
        cur = cur.get(k).unwrap_or_else(|| panic!("no {k} in {v:?}"));
    }
    cur.as_int().unwrap()
}

#[test]
fn kill_9_mid_call_then_restart_recovers_the_recording() {
    let mut rec = Recorder::start(41_200, &["--flush-interval", "200"]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-crash", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "rec-crash", "tag-a", None));
    let a_pcm = speech(3.0, 150.0);
    let b_pcm = speech(3.0, 170.0);
    play(&mut call, &a_pcm, &b_pcm, |_| {});
    // Let at least one flush interval pass after the last packet, then crash.
    std::thread::sleep(Duration::from_millis(400));
    rec.kill9();
    assert!(rec.jobs().is_empty(), "nothing is spooled before recovery");
    let in_progress: Vec<_> = std::fs::read_dir(rec.data.join("recordings/.inprogress"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(
        in_progress.len(),
        1,
        "the interrupted file is left in progress"
    );

    rec.restart();
    let jobs = rec.wait_jobs(1);
    assert_eq!(jobs[0]["status"], "recovered");
    assert_eq!(jobs[0]["complete"], false);
    let file = job_file(&jobs[0]);
    let r = Recording::open(&file).unwrap();
    assert!(r.is_intact(), "recovered file is intact");
    assert_eq!(r.completeness(), Some(Completeness::Recovered));
    let wav = rec.data.join("crash.wav");
    export(&file, "--wav", &wav);
    let (_, left, right) = read_wav(&wav);
    // Everything sent was flushed (the kill came > 1 flush interval after the last packet).
    assert_channel_is(&left, &g711_round_trip(&a_pcm), "caller");
    assert_channel_is(&right, &g711_round_trip(&b_pcm), "callee");
}

#[test]
fn tshark_reads_the_exported_pcap_as_rtp_streams_without_loss() {
    let tshark = Path::new("/usr/bin/tshark");
    assert!(
        tshark.exists(),
        "tshark is missing: run scripts/setup.sh (Debian package tshark)"
    );
    let rec = Recorder::start(41_300, &[]);
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-pcap", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "rec-pcap", "tag-a", None));
    play(&mut call, &speech(2.0, 120.0), &speech(2.0, 220.0), |_| {});
    ng.ok(&request(Ng::Delete, "rec-pcap", "tag-a", None));
    let file = job_file(&rec.wait_jobs(1)[0]);
    let pcap = rec.data.join("call.pcap");
    export(&file, "--pcap", &pcap);
    let o = Command::new(tshark)
        .args([
            "-n",
            "-r",
            &pcap.display().to_string(),
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-q",
            "-z",
            "rtp,streams",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One line per stream: "... SSRC  Payload  Pkts  Lost ..." with ITU-T G.711 PCMU.
    let streams: Vec<&str> = text.lines().filter(|l| l.contains("g711U")).collect();
    assert_eq!(streams.len(), 2, "two RTP streams expected:\n{text}");
    for s in streams {
        assert!(s.contains(" 100 "), "100 packets per stream:\n{text}");
        assert!(s.contains(" 0 (0.0%)"), "zero loss:\n{text}");
    }
}

/// Mounts a small tmpfs (needs root, as CI runs); unmounted on drop, also on failure.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf, size: &str) -> SmallFs {
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &dir.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "this test needs root to mount a tmpfs (CI runs as root): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_recording_filesystem_fails_the_recording_not_the_media() {
    let data = temp_dir("fullfs");
    // 32 KiB: the header and a few blocks fit, then ENOSPC (no free-space reserve, so the
    // recording starts and the write fails).
    let _fs = SmallFs::mount(data.join("recordings"), "32k");
    let rec = Recorder::start_in(
        41_400,
        &["--flush-interval", "100", "--min-free-disk", "0"],
        data,
    );
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-full", &["trust-address"]);
    let mut other = setup_call(&ng, "no-rec", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "rec-full", "tag-a", None));
    // 4 s of audio each way is ~130 KB: more than the filesystem holds.
    let pcm = speech(4.0, 150.0);
    play(&mut call, &pcm, &pcm, |_| {});
    let q = wait_recording_state(&ng, "rec-full", "failed");
    let reason = q
        .get("recording")
        .and_then(|r| r.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(reason.contains("No space left"), "{q:?}");
    // The recorded call's media kept flowing: B received every packet.
    let a_stats = int_at(&q, &["totals", "RTP", "packets"]);
    assert_eq!(a_stats, 2 * 200);
    // Another call is unaffected.
    other.a.send_rtp(other.a_to, 20);
    assert_eq!(other.b.recv_n(20).len(), 20);
    let s = ng.ok(&linecord_ng::request::Request::new(Ng::Statistics));
    assert_eq!(
        int_at(&s, &["statistics", "totalstatistics", "recordingsfailed"]),
        1
    );
    ng.ok(&request(Ng::Delete, "rec-full", "tag-a", None));
    let jobs = rec.wait_jobs(1);
    // What reached the disk before it filled is kept and indexed.
    assert_eq!(jobs[0]["status"], "partial", "{}", jobs[0]);
    assert!(
        jobs[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{}",
        jobs[0]
    );
    let file = job_file(&jobs[0]);
    let r = Recording::open(&file).unwrap();
    let written = r
        .records()
        .unwrap()
        .iter()
        .filter(|x| matches!(x, Record::Packet(_)))
        .count() as u64;
    let lost = jobs[0]["packets_lost"].as_u64().unwrap();
    assert!(written > 0 && lost > 0, "{written} written, {lost} lost");
    assert_eq!(
        written + lost,
        2 * 200,
        "every packet is in the file or counted"
    );
    ng.ok(&linecord_ng::request::Request::new(Ng::Ping));
}

#[test]
fn read_only_recording_filesystem_fails_the_recording_not_the_media() {
    let data = temp_dir("rofs");
    let fs = SmallFs::mount(data.join("recordings"), "1m");
    // No free-space reserve: the recording is started and its file cannot be created.
    let rec = Recorder::start_in(41_500, &["--min-free-disk", "0"], data);
    let o = Command::new("mount")
        .args(["-o", "remount,ro", &fs.0.display().to_string()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "remount ro: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ng = rec.client();
    let mut call = setup_call(&ng, "rec-ro", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "rec-ro", "tag-a", None));
    call.a.send_rtp(call.a_to, 30);
    assert_eq!(call.b.recv_n(30).len(), 30, "media flows");
    let q = wait_recording_state(&ng, "rec-ro", "failed");
    let reason = q
        .get("recording")
        .and_then(|r| r.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(reason.contains("Read-only file system"), "{q:?}");
    call.a.send_rtp(call.a_to, 30);
    assert_eq!(call.b.recv_n(30).len(), 30, "media still flows");
    ng.ok(&request(Ng::Delete, "rec-ro", "tag-a", None));
    let jobs = rec.wait_jobs(1);
    assert_eq!(jobs[0]["status"], "failed", "{}", jobs[0]);
    assert!(jobs[0]["file"].is_null(), "{}", jobs[0]);
    assert_eq!(jobs[0]["packets_lost"], 60, "{}", jobs[0]);
}

/// Polls `query` until the call's recording is in `state` (at most 5 s); returns the reply.
fn wait_recording_state(ng: &NgClient, call_id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = ng.ok(&request(Ng::Query, call_id, "tag-a", None));
        let now = q
            .get("recording")
            .and_then(|r| r.get("state"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if now.as_deref() == Some(state) {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "recording never reached {state}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
