//! A full recording disk, against the real `recorder` binary: the recording directory is a
//! 4 MiB tmpfs (mounting it needs root, as CI runs), the spool directory is elsewhere.
//!
//! 1. Two recorded calls send incompressible 1000-byte RTP until the disk is full; the one
//!    deleted then gets a `partial` job naming its file, which holds every packet written
//!    before the failure (checked packet by packet), and counts the rest as dropped.
//! 2. A call offered on the full disk is relayed, but its recording is not started: NG
//!    `query` says why, its job is `failed` with no file, and no empty `.lcr` is left.
//! 3. The recorder is killed (SIGKILL) while the other call still streams, and restarted on
//!    the still-full disk: its recording is recovered and spooled, though no metadata file
//!    fits, and nothing is left in `.inprogress/` or as a `.tmp` file.
//! 4. With space again, a healthy recording is killed mid-stream and recovered the same way;
//!    every recording of the test has a spool job.
//! 5. The real `processor` takes that spool: the partial recording is indexed as `partial`
//!    and its audio plays (`audio.wav`), nothing goes to `failed/`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::{Command as Ng, Request};
use linecord_recfile::reader::Recording;
use linecord_recfile::Record;
use support::*;

/// Payload bytes per packet: ~1 KB, so a few seconds fill the disk.
const PAYLOAD: usize = 1000;

/// An RTP packet whose payload is pseudo-random (lz4 cannot shrink it) and a function of
/// (ssrc, seq), so the test can tell which packet a recorded payload is.
fn big_rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(payload(ssrc, seq));
    p
}

fn payload(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut x = (u64::from(ssrc) << 16 | u64::from(seq)) ^ 0x9e37_79b9_7f4a_7c15;
    (0..PAYLOAD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn recording_of(ng: &NgClient, call_id: &str) -> Value {
    let q = ng.ok(&request(Ng::Query, call_id, "tag-a", None));
    q.get("recording")
        .cloned()
        .expect("query has a recording dict")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int(v: &Value, key: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no {key} in {v:?}"))
}

/// Waits (at most 10 s) for the job of `id` in `spool/new`.
fn wait_job(rec: &Recorder, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(j) = rec.jobs().into_iter().find(|j| j["recording_id"] == id) {
            return j;
        }
        assert!(Instant::now() < deadline, "no job for recording {id}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Recorded packets of stream 0 (the caller's RTP): (sequence, payload).
fn caller_packets(file: &Path) -> Vec<(u16, Vec<u8>)> {
    let rec = Recording::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        rec.bad_blocks.is_empty() && rec.tail_bytes == 0,
        "{}: cut cleanly after its last complete block",
        file.display()
    );
    rec.records()
        .expect("records")
        .into_iter()
        .filter_map(|r| match r {
            Record::Packet(p) if p.stream == 0 => Some((p.rtp?.sequence, p.payload)),
            _ => None,
        })
        .collect()
}

/// Nothing left half done: no file in `.inprogress/`, no `.tmp` file under either dir.
fn assert_clean(rec: &Recorder) {
    let in_progress = files_under(&rec.data.join("recordings/.inprogress"));
    assert!(in_progress.is_empty(), "left in progress: {in_progress:?}");
    for dir in ["recordings", "spool"] {
        let tmp: Vec<PathBuf> = files_under(&rec.data.join(dir))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
            .collect();
        assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    }
}

/// Streams `big_rtp` from A of `call` to the recorder until `stop` is set (the media of a
/// call that is still going when the recorder is killed).
fn stream_until(stop: Arc<AtomicBool>, call: &Call) -> std::thread::JoinHandle<u16> {
    let sock = call.a.sock.try_clone().expect("clone socket");
    let (to, ssrc) = (call.a_to, call.a.ssrc);
    std::thread::spawn(move || {
        let mut seq = 30_000u16;
        while !stop.load(Ordering::Relaxed) {
            let _ = sock.send_to(&big_rtp(ssrc, seq), to);
            seq = seq.wrapping_add(1);
            std::thread::sleep(Duration::from_micros(500));
        }
        seq
    })
}

/// Writes zeros into `path` until the filesystem is full (at most 64 MiB).
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 4096];
    for _ in 0..16_384 {
        match f.write(&chunk) {
            Ok(n) if n > 0 => {}
            Ok(_) => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    panic!("the filesystem never filled up");
}

#[test]
fn a_full_recording_disk_keeps_what_was_written_refuses_new_recordings_and_recovers() {
    let data = temp_dir("diskfull");
    let fs = Tmpfs::mount(data.join("recordings"), "4m");
    let mut rec = Recorder::start_in(
        42_000,
        &["--min-free-disk", "1", "--flush-interval", "100"],
        data.clone(),
    );
    let ng = rec.client();

    // 1. Two recorded calls fill the disk.
    let fill1 = setup_call(&ng, "fill-1", &["trust-address"]);
    let fill2 = setup_call(&ng, "fill-2", &["trust-address"]);
    for id in ["fill-1", "fill-2"] {
        ng.ok(&request(Ng::StartRecording, id, "tag-a", None));
        assert_eq!(text(&recording_of(&ng, id), "state"), "recording");
    }
    let send = |call: &Call, seq: u16| {
        call.a
            .sock
            .send_to(&big_rtp(call.a.ssrc, seq), call.a_to)
            .expect("send");
    };
    let mut seq = 0u16;
    let full = loop {
        send(&fill1, seq);
        send(&fill2, seq);
        seq += 1;
        std::thread::sleep(Duration::from_micros(500));
        if seq.is_multiple_of(200) {
            let (r1, r2) = (recording_of(&ng, "fill-1"), recording_of(&ng, "fill-2"));
            if text(&r1, "state") == "failed" && text(&r2, "state") == "failed" {
                break r1;
            }
        }
        // 4 MiB hold ~4 000 such packets; 20 000 would be 5 times that.
        assert!(seq < 20_000, "the recordings never failed");
    };
    assert!(text(&full, "reason").contains("No space left"), "{full:?}");
    let sent_before_failure = seq;
    // The call goes on after the failure: these packets are relayed and dropped.
    for _ in 0..300 {
        send(&fill1, seq);
        seq += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    std::thread::sleep(Duration::from_millis(300));
    let view = recording_of(&ng, "fill-1");
    let dropped = int(&view, "dropped");
    assert!(dropped >= 300, "{view:?}");
    let id1 = text(&view, "id").to_owned();
    let gone = ng.ok(&request(Ng::Delete, "fill-1", "tag-a", Some("tag-b")));
    let received = gone
        .get("totals")
        .and_then(|t| t.get("RTP"))
        .map(|t| int(t, "packets"))
        .expect("totals");
    assert_eq!(
        received,
        i64::from(seq),
        "the recorder got every packet sent"
    );

    let job = wait_job(&rec, &id1);
    assert_eq!(job["status"], "partial", "{job}");
    assert_eq!(job["complete"], false);
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{job}"
    );
    let file = PathBuf::from(job["file"].as_str().expect("a partial job names its file"));
    assert!(file.starts_with(data.join("recordings")) && file.is_file());
    assert!(!file.starts_with(data.join("recordings/.inprogress")));
    let packets = caller_packets(&file);
    let written = packets.len();
    eprintln!(
        "disk full: {written} packets written ({} sent before the failure was seen, {seq} in \
         all), {} dropped; job: status {}, packets_lost {}, file {} ({} bytes)",
        sent_before_failure,
        dropped,
        job["status"],
        job["packets_lost"],
        file.display(),
        std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0)
    );
    // The two calls share 4 MiB: each file holds about 2 MB, i.e. ~2 000 packets.
    assert!(written >= 1_500, "only {written} packets written");
    // Exactly the first packets sent, in order, byte for byte.
    for (i, (s, p)) in packets.iter().enumerate() {
        assert_eq!(*s, i as u16, "packet {i} of the file");
        assert!(*p == payload(fill1.a.ssrc, *s), "payload of packet {s}");
    }
    assert_eq!(job["streams"][0]["packets"], written as u64);
    assert_eq!(job["packets_lost"], dropped, "the job and NG query agree");
    assert_eq!(
        written as i64 + dropped,
        received,
        "every packet is written or dropped"
    );

    // 2. A call on the full disk: relayed, its recording not started.
    let mut late = setup_call(&ng, "late", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "late", "tag-a", None));
    late.a.send_rtp(late.a_to, 50);
    assert_eq!(late.b.recv_n(50).len(), 50, "media is relayed");
    let view = recording_of(&ng, "late");
    assert_eq!(text(&view, "state"), "failed", "{view:?}");
    assert!(
        text(&view, "reason").starts_with("not started: "),
        "{view:?}"
    );
    assert!(
        text(&view, "reason").contains("--min-free-disk"),
        "{view:?}"
    );
    let id_late = text(&view, "id").to_owned();
    ng.ok(&request(Ng::Delete, "late", "tag-a", Some("tag-b")));
    let job = wait_job(&rec, &id_late);
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["file"].is_null(), "{job}");
    assert!(job["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("not started: "));
    let lcrs: Vec<PathBuf> = files_under(&data.join("recordings"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "lcr"))
        .collect();
    assert!(
        !lcrs.iter().any(|p| p.to_string_lossy().contains(&id_late)),
        "no file for a recording that did not start: {lcrs:?}"
    );
    for p in &lcrs {
        assert!(std::fs::metadata(p).unwrap().len() > 0, "empty file {p:?}");
    }
    let s = ng.ok(&Request::new(Ng::Statistics));
    let failed = s
        .get("statistics")
        .and_then(|s| s.get("totalstatistics"))
        .map(|t| int(t, "recordingsfailed"))
        .expect("statistics");
    assert_eq!(failed, 3, "fill-1, fill-2 and late");

    // 3. SIGKILL while fill-2 still streams; restart on the still-full disk.
    let id2 = text(&recording_of(&ng, "fill-2"), "id").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = stream_until(Arc::clone(&stop), &fill2);
    std::thread::sleep(Duration::from_millis(300));
    rec.kill9();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    assert!(
        !files_under(&data.join("recordings/.inprogress")).is_empty(),
        "fill-2 was left in progress"
    );
    // Whatever finishing fill-1 freed is taken by someone else: the disk is full to the
    // byte when the recorder comes back (recovery itself frees the torn tail it cuts off).
    let filler = data.join("recordings/filler");
    fill_up(&filler);
    rec.restart();
    let job = wait_job(&rec, &id2);
    assert!(
        ["recovered", "partial"].contains(&job["status"].as_str().unwrap_or("")),
        "{job}"
    );
    let file2 = PathBuf::from(job["file"].as_str().expect("file"));
    eprintln!(
        "recovered on the full disk: status {}, {} metadata file",
        job["status"],
        if file2.with_extension("json").exists() {
            "with a"
        } else {
            "without"
        }
    );
    let packets2 = caller_packets(&file2);
    assert!(packets2.len() >= 1_500, "{} packets", packets2.len());
    assert_eq!(job["streams"][0]["packets"], packets2.len() as u64, "{job}");
    assert_clean(&rec);
    ng.ok(&Request::new(Ng::Ping));

    // 4. Space again: a healthy recording, killed mid-stream, recovered.
    std::fs::remove_file(&filler).expect("remove the filler");
    fs.resize("16m");
    let after = setup_call(&ng, "after", &["trust-address"]);
    ng.ok(&request(Ng::StartRecording, "after", "tag-a", None));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = stream_until(Arc::clone(&stop), &after);
    std::thread::sleep(Duration::from_millis(800));
    let view = recording_of(&ng, "after");
    assert_eq!(text(&view, "state"), "recording", "{view:?}");
    let id_after = text(&view, "id").to_owned();
    rec.kill9();
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    rec.restart();
    let job = wait_job(&rec, &id_after);
    assert_eq!(job["status"], "recovered", "{job}");
    let file = PathBuf::from(job["file"].as_str().expect("file"));
    assert!(file.with_extension("json").is_file(), "metadata beside it");
    let packets = caller_packets(&file);
    assert!(packets.len() >= 500, "{} packets", packets.len());
    assert!(Recording::open(&file).expect("read").is_intact());
    assert_clean(&rec);

    let ids: BTreeSet<String> = rec
        .jobs()
        .iter()
        .map(|j| j["recording_id"].as_str().unwrap_or("").to_owned())
        .collect();
    let want: BTreeSet<String> = [id1.clone(), id_late, id2, id_after].into_iter().collect();
    assert_eq!(ids, want, "every recording has a spool job");

    // 5. The processor indexes what the full disk kept, and plays it (before the recorder's
    // guard removes its directories).
    let played = processor_plays(&data, &id1);
    assert!(
        played >= 44 + 4 * 8_000,
        "audio.wav of the partial recording is {played} bytes"
    );
    drop(rec);
    drop(fs);
    let _ = std::fs::remove_dir_all(&data);
}

/// The workspace's `processor` binary (integration tests run from target/debug/deps).
fn processor_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("processor");
    assert!(
        p.exists(),
        "{} missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// `GET path` with the processor's default admin token; (status, body).
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the processor");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer admin-token\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let mut body = raw[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next().unwrap_or("").trim(), 16).ok())
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// Runs the processor on the test's spool until it has taken every job; checks that the
/// partial recording `id` is indexed as `partial` and returns the size of its `audio.wav`.
fn processor_plays(data: &Path, id: &str) -> usize {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(processor_bin())
        .args(["--listen", "127.0.0.1:0", "--spool-dir"])
        .arg(data.join("spool"))
        .arg("--storage-dir")
        .arg(data.join("store"))
        .arg("--db")
        .arg(data.join("index.sqlite"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the processor");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for out in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let addr = line[at + "listening on ".len()..].trim().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
    }
    let _child = Kill(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the processor says where it listens");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = http_get(&addr, "/v1/status");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let st: serde_json::Value = serde_json::from_slice(&body).expect("status JSON");
        if st["recording_jobs"] == 4 {
            assert_eq!(st["jobs_failed"], 0, "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the processor did not take the jobs: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = http_get(&addr, "/v1/interactions?q=partial");
    assert_eq!(code, 200);
    let found: serde_json::Value = serde_json::from_slice(&body).expect("search JSON");
    let interaction = found["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no interaction with a partial recording: {found}"))
        .to_owned();
    let (code, body) = http_get(&addr, &format!("/v1/interactions/{interaction}"));
    assert_eq!(code, 200);
    let detail: serde_json::Value = serde_json::from_slice(&body).expect("detail JSON");
    let segment = detail["segments"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["recording_id"] == id))
        .unwrap_or_else(|| panic!("recording {id} not in {detail}"));
    assert_eq!(segment["status"], "partial", "{segment}");
    let (code, wav) = http_get(&addr, &format!("/v1/recordings/{id}/audio.wav"));
    assert_eq!(
        code,
        200,
        "{}",
        String::from_utf8_lossy(&wav[..wav.len().min(200)])
    );
    assert_eq!(&wav[..4], b"RIFF", "a WAV");
    eprintln!(
        "processor: the partial recording plays, audio.wav {} bytes",
        wav.len()
    );
    wav.len()
}
