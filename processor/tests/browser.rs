//! The web UI end to end, in headless Chromium, against the real `processor` binary.
//!
//! 1. Checks for Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) and the pinned
//!    `playwright-core` in `processor/tests/browser/node_modules`; if either is missing it
//!    runs `scripts/setup-browser.sh` (idempotent) and, if that cannot help, fails saying so.
//! 2. Builds a recorded call the way `recorder` and `sipctl` would leave it: a 3-second
//!    two-party PCMU `.lcr` file (written with `linecord_recfile`'s block and footer
//!    encoders) and, in a spool directory, the call's events (`linecord.event.v1`) and the
//!    recording job (`linecord.recording.v1`).
//! 3. Starts `processor` on that spool with an admin token and `--listen 127.0.0.1:0`,
//!    reads the address from its "listening on ADDR" log line, and waits until the call is
//!    consolidated (`GET /v1/interactions`, `GET /v1/interactions/{id}`).
//! 4. Runs `node processor/tests/browser/ui.test.mjs URL TOKEN ID 3`: search, open, audio
//!    duration, waveform pixels, event timeline, error messages. Screenshots land in
//!    `$CARGO_TARGET_TMPDIR/browser-ui/`.
//!
//! On failure the processor's log, the spool's failed jobs and the temporary directory
//! (kept) are reported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linecord_jobs::{
    CallContext, Codec, EventKind, EventParties, EventRecording, Job, Party, RecorderInfo,
    RecordingInitiator, RecordingJob, RecordingParty, RecordingSchema, RecordingStatus,
    RecordingStream, RecordingType, Spool,
};
use linecord_recfile::block::{seal, BlockBuilder};
use linecord_recfile::format::{encode_footer, encode_header};
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    g711, CodecInfo, Completeness, Component, Event, EventRecord, FileHeader, PartyInfo, RtpFields,
    StopReason, StreamInfo,
};

/// The admin token configured for the test.
const TOKEN: &str = "browser-test-admin-token";
/// Length of the recorded call.
const SECONDS: u64 = 3;
/// G.711 at 20 ms packets.
const SAMPLES_PER_PACKET: usize = 160;
const PACKET_US: u64 = 20_000;
const CALLER: &str = "+4930123456";
const CALLEE: &str = "1001";
const SWITCH: &str = "sipctl-1";

#[test]
fn web_ui_finds_plays_and_draws_a_recorded_call() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    ensure_browser(&repo);

    let tmp = TempDir::new("browser-ui");
    let call = write_fixture(tmp.path());

    let config = tmp.path().join("processor.toml");
    std::fs::write(
        &config,
        format!(
            "poll-interval-ms = 50\n\n[[token]]\nname = \"browser-test\"\ntoken = \"{TOKEN}\"\nrole = \"admin\"\n"
        ),
    )
    .expect("writing the config");

    let mut processor = Processor::start(tmp.path(), &config);
    let addr = processor.address();
    wait_for_interaction(addr, &call, &mut processor, tmp.path());

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-ui");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let script = repo.join("processor/tests/browser/ui.test.mjs");
    let mut node = Command::new("node")
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .arg(TOKEN)
        .arg(&call.interaction_id)
        .arg(SECONDS.to_string())
        .env("SCREENSHOT", shots.join("interaction.png"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `node {}`: {e}", script.display()));
    let (out, err) = (capture(node.stdout.take()), capture(node.stderr.take()));
    let status = wait_bounded(&mut node, Duration::from_secs(90));
    let (out, err) = (joined(out), joined(err));
    print!("{out}");
    eprint!("{err}");
    match status {
        Some(s) if s.success() => {
            println!("screenshots: {}", shots.display());
        }
        other => panic!(
            "the browser test failed ({}):\n{out}{err}\n--- processor log ---\n{}",
            other.map_or("killed after 90 s".to_owned(), |s| s.to_string()),
            processor.log()
        ),
    }
}

// ----------------------------------------------------------------------------------------
// Browser prerequisites

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn browser_missing(repo: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !chromium().exists() {
        missing.push(format!("Chromium ({})", chromium().display()));
    }
    let pw = repo.join("processor/tests/browser/node_modules/playwright-core/package.json");
    if !pw.exists() {
        missing.push(format!("playwright-core ({})", pw.display()));
    }
    if Command::new("node")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        missing.push("node (Node.js >= 20 on PATH)".into());
    }
    missing
}

fn ensure_browser(repo: &Path) {
    if browser_missing(repo).is_empty() {
        return;
    }
    let script = repo.join("scripts/setup-browser.sh");
    let out = Command::new("bash").arg(&script).current_dir(repo).output();
    let missing = browser_missing(repo);
    if !missing.is_empty() {
        let log = out.map_or_else(
            |e| format!("could not run it: {e}"),
            |o| {
                format!(
                    "{}\n{}{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            },
        );
        panic!(
            "the browser test needs {}; run scripts/setup-browser.sh (as root for apt-get, with \
             access to the npm registry).\nIt was tried and said: {log}",
            missing.join(", ")
        );
    }
}

// ----------------------------------------------------------------------------------------
// The recorded call

struct Call {
    interaction_id: String,
    recording_id: String,
    events: usize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Ten bytes that differ from run to run (ids must be unique across test runs sharing a
/// machine, nothing more).
fn random10(salt: u8) -> [u8; 10] {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let mut x = (n as u64) ^ (u64::from(std::process::id()) << 32) ^ u64::from(salt);
    let mut out = [0u8; 10];
    for b in &mut out {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
    }
    out
}

/// One 20 ms frame of a party's "speech": a syllable-modulated tone while the party
/// talks, silence otherwise. Caller talks 0.2–1.4 s, callee 1.5–2.8 s.
fn frame(party: u8, k: u64) -> Vec<u8> {
    let (start, end, hz) = if party == 0 {
        (0.2, 1.4, 300.0)
    } else {
        (1.5, 2.8, 440.0)
    };
    (0..SAMPLES_PER_PACKET)
        .map(|i| {
            let t = (k as f64 * SAMPLES_PER_PACKET as f64 + i as f64) / 8000.0;
            let v = if t >= start && t < end {
                let env = (std::f64::consts::PI * (t - start) / (end - start)).sin();
                let syll = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
                let s = (2.0 * std::f64::consts::PI * hz * t).sin()
                    + 0.3 * (2.0 * std::f64::consts::PI * 2.0 * hz * t).sin();
                12_000.0 * env * syll * s
            } else {
                0.0
            };
            g711::linear_to_ulaw(v as i16)
        })
        .collect()
}

fn stream(id: u16, party: u8, source: &str, destination: &str) -> StreamInfo {
    StreamInfo {
        id,
        party,
        media_index: 0,
        component: Component::Rtp,
        source: source.into(),
        destination: destination.into(),
        codecs: vec![CodecInfo {
            payload_type: 0,
            name: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
        }],
    }
}

/// Writes the `.lcr` file and the spool jobs of one recorded call under `dir`.
fn write_fixture(dir: &Path) -> Call {
    let start_ms = now_ms() - 60_000;
    let end_ms = start_ms + SECONDS * 1000;
    let recording_id = linecord_jobs::uuid_v7(start_ms, random10(1));
    let global_call_id = linecord_jobs::uuid_v7(start_ms - 2000, random10(2));
    let call_id = format!("{}@browser-test.invalid", &recording_id[..8]);
    let metadata = format!("caller={CALLER};callee={CALLEE};dn={CALLEE};switch={SWITCH}");

    // The recording file: header, ~8 KiB blocks of packets and events, footer.
    let streams = vec![
        stream(0, 0, "192.0.2.10:4000", "198.18.0.1:30000"),
        stream(2, 1, "192.0.2.20:5000", "198.18.0.1:30002"),
    ];
    let header = FileHeader {
        recording_id: recording_id.clone(),
        call_id: call_id.clone(),
        start_unix_ms: start_ms,
        metadata: Some(metadata.clone()),
        parties: vec![
            PartyInfo {
                tag: "caller-tag".into(),
                label: Some("caller".into()),
                sdp: b"v=0\r\n".to_vec(),
            },
            PartyInfo {
                tag: "callee-tag".into(),
                label: None,
                sdp: b"v=0\r\n".to_vec(),
            },
        ],
        streams: streams.clone(),
    };
    let mut file = Vec::new();
    encode_header(&header, &mut file);
    let mut b = BlockBuilder::with_capacity(12 * 1024);
    let flush = |b: &mut BlockBuilder, file: &mut Vec<u8>, force: bool| {
        if (force && !b.is_empty()) || b.len() > 8 * 1024 {
            seal(b, file);
            b.clear();
        }
    };
    b.push_event(&EventRecord {
        at_us: 0,
        event: Event::Started,
    });
    let packets = SECONDS * 1_000_000 / PACKET_US;
    for k in 0..packets {
        for (party, s) in [(0u8, 0u16), (1, 2)] {
            let rtp = RtpFields {
                marker: k == 0,
                payload_type: 0,
                sequence: 1000 + k as u16,
                timestamp: 16_000 + (k * SAMPLES_PER_PACKET as u64) as u32,
                ssrc: 0x1111_0000 + u32::from(party),
            };
            // The callee's packets arrive 300 µs after the caller's.
            b.push_packet(
                s,
                k * PACKET_US + u64::from(party) * 300,
                Some(&rtp),
                &frame(party, k),
            );
        }
        flush(&mut b, &mut file, false);
    }
    b.push_event(&EventRecord {
        at_us: SECONDS * 1_000_000,
        event: Event::Stopped(StopReason::Deleted),
    });
    flush(&mut b, &mut file, true);
    let rec = Recording::from_bytes(file.clone()).expect("reading back the fixture");
    let mut footer = recovery_footer(&rec, end_ms);
    footer.completeness = Completeness::Complete;
    encode_footer(&footer, &mut file);
    assert!(
        Recording::from_bytes(file.clone())
            .expect("fixture")
            .is_intact(),
        "the fixture recording is not intact"
    );
    let rec_dir = dir.join("recordings");
    std::fs::create_dir_all(&rec_dir).expect("recordings directory");
    let lcr = rec_dir.join(format!("{recording_id}.lcr"));
    std::fs::write(&lcr, &file).expect("writing the .lcr");

    // The spool: the call's events first (as sipctl sends them during the call), then the
    // recording job (the recorder writes it when the recording ends).
    let spool = Spool::open(dir.join("spool")).expect("spool");
    let parties = EventParties {
        caller: Party {
            number: Some(CALLER.into()),
            uri: format!("sip:{CALLER}@gw.example.com"),
            display_name: None,
        },
        callee: Party {
            number: Some(CALLEE.into()),
            uri: format!("sip:{CALLEE}@pbx.example.com"),
            display_name: Some("Alice".into()),
        },
        agent_dn: Some(CALLEE.into()),
        agent_side: None,
    };
    let mut ctx = CallContext {
        global_call_id: global_call_id.clone(),
        switch: SWITCH.into(),
        switch_call_id: "c-1".into(),
        a_leg_call_id: call_id.clone(),
        b_leg_call_id: Some(format!("b-{call_id}")),
        parties,
        recording: None,
        version: "0.1.0".into(),
        next_seq: 0,
    };
    let recording = EventRecording {
        ng_call_id: call_id.clone(),
        recording_id: Some(recording_id.clone()),
        recorder: Some("127.0.0.1:2223".into()),
        initiator: Some(RecordingInitiator::Dn),
    };
    let plan: [(EventKind, u64); 6] = [
        (EventKind::Created, start_ms - 2000),
        (EventKind::Ringing, start_ms - 1500),
        (EventKind::Answered, start_ms - 20),
        (EventKind::RecordingStarted, start_ms),
        (EventKind::RecordingStopped, end_ms),
        (EventKind::Released, end_ms + 5),
    ];
    for (i, (kind, at)) in plan.iter().enumerate() {
        if *kind == EventKind::RecordingStarted {
            ctx.recording = Some(recording.clone());
        }
        let mut ev = ctx.event(
            *kind,
            linecord_jobs::uuid_v7(*at, random10(10 + i as u8)),
            *at,
        );
        if *kind == EventKind::Answered {
            ev.status_code = Some(200);
        }
        if *kind == EventKind::Released {
            ev.reason = Some("BYE from callee".into());
        }
        ev.validate().expect("valid event");
        spool.push(&Job::Event(ev), *at).expect("spooling an event");
    }

    let stats = |id: u16| {
        footer
            .streams
            .iter()
            .find(|s| s.stream == id)
            .copied()
            .expect("footer stats")
    };
    let job = RecordingJob {
        schema: RecordingSchema,
        job_type: RecordingType,
        recording_id: recording_id.clone(),
        file: Some(lcr.to_str().expect("UTF-8 path").to_owned()),
        call_id: call_id.clone(),
        parties: vec![
            RecordingParty {
                index: 0,
                tag: "caller-tag".into(),
                label: Some("caller".into()),
            },
            RecordingParty {
                index: 1,
                tag: "callee-tag".into(),
                label: None,
            },
        ],
        metadata: Some(metadata),
        start: linecord_jobs::rfc3339(start_ms),
        start_unix_ms: start_ms,
        end: linecord_jobs::rfc3339(end_ms),
        end_unix_ms: end_ms,
        duration_ms: end_ms - start_ms,
        status: RecordingStatus::Complete,
        complete: true,
        packets_lost: 0,
        streams: streams
            .iter()
            .map(|s| {
                let st = stats(s.id);
                RecordingStream {
                    id: s.id,
                    party: s.party,
                    media_index: 0,
                    component: linecord_jobs::Component::Rtp,
                    source: s.source.clone(),
                    destination: s.destination.clone(),
                    codecs: vec![Codec {
                        payload_type: 0,
                        name: "PCMU".into(),
                        clock_rate: 8000,
                        channels: 1,
                    }],
                    packets: st.packets,
                    payload_bytes: st.payload_bytes,
                    lost: st.lost,
                    jitter: st.jitter,
                    first_us: st.first_us,
                    last_us: st.last_us,
                }
            })
            .collect(),
        error: None,
        recorder: RecorderInfo {
            version: "0.1.0".into(),
        },
    };
    spool
        .push(&Job::Recording(job), end_ms + 50)
        .expect("spooling the recording job");

    Call {
        interaction_id: global_call_id,
        recording_id,
        events: plan.len(),
    }
}

// ----------------------------------------------------------------------------------------
// The processor

struct Processor {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl Processor {
    fn start(dir: &Path, config: &Path) -> Processor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_processor"))
            .arg("--config")
            .arg(config)
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .arg("--storage-dir")
            .arg(dir.join("store"))
            .arg("--db")
            .arg(dir.join("index.sqlite"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the processor binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (log, tx) = (Arc::clone(&log), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(a) = listen_address(&line) {
                        let _ = tx.send(a);
                    }
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let mut p = Processor {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(100)) {
                p.addr = a;
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!(
                    "the processor exited ({status}) before listening:\n{}",
                    p.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the processor logged no \"listening on ADDR\" line within 30 s:\n{}",
                    p.log()
                );
            }
        }
    }

    fn address(&self) -> SocketAddr {
        self.addr
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a "listening on ADDR" log line (ANSI colours, `http://`, quotes and
/// `key=value` forms tolerated).
fn listen_address(line: &str) -> Option<SocketAddr> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let lower = plain.to_ascii_lowercase();
    let at = lower.find("listening")?;
    plain[at..]
        .split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == ',')
        .map(|w| {
            w.trim_start_matches("http://")
                .trim_end_matches(['/', '.', ')'])
        })
        .find_map(|w| w.parse::<SocketAddr>().ok())
}

/// Waits until the call shows up consolidated: its interaction in the search with one
/// segment, and its detail with the recording and every event.
fn wait_for_interaction(addr: SocketAddr, call: &Call, p: &mut Processor, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let why = match ready(addr, call) {
            Ok(()) => return,
            Err(why) => why,
        };
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("the processor exited ({status}):\n{}", p.log());
        }
        if Instant::now() > deadline {
            break why;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    panic!(
        "interaction {} not ready after 30 s: {last}\n--- spool ---\n{}\n--- processor log ---\n{}",
        call.interaction_id,
        failed_jobs(&dir.join("spool")),
        p.log(),
    );
}

fn ready(addr: SocketAddr, call: &Call) -> Result<(), String> {
    let (status, body) = http_get(addr, "/v1/interactions?limit=50").map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "search answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let items = v["items"].as_array().ok_or("search: no items array")?;
    let Some(item) = items
        .iter()
        .find(|i| i["id"].as_str() == Some(call.interaction_id.as_str()))
    else {
        let ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
        return Err(format!("search lists {ids:?}"));
    };
    if item["segments"].as_u64() != Some(1) {
        return Err(format!("interaction has segments = {}", item["segments"]));
    }
    let (status, body) = http_get(addr, &format!("/v1/interactions/{}", call.interaction_id))
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "detail answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let d: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let segs = d["segments"].as_array().map_or(0, Vec::len);
    let evs = d["events"].as_array().map_or(0, Vec::len);
    let rid = d["segments"][0]["recording_id"].as_str().unwrap_or("");
    if segs != 1 || rid != call.recording_id || evs != call.events {
        return Err(format!(
            "detail has {segs} segment(s) (first {rid:?}) and {evs} event(s); want 1 ({:?}) and {}",
            call.recording_id, call.events
        ));
    }
    if d["segments"][0]["audio_url"].as_str().is_none() {
        return Err("the segment has no audio_url".into());
    }
    Ok(())
}

fn failed_jobs(spool: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(spool.join("failed")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "reason") {
                out += &format!(
                    "{}: {}\n",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap_or_default()
                );
            }
        }
    }
    for sub in ["new", "work", "done"] {
        let n = std::fs::read_dir(spool.join(sub)).map_or(0, |r| r.count());
        out += &format!("{sub}/: {n} file(s)\n");
    }
    out
}

/// A minimal HTTP/1.1 GET with the test's bearer token; returns status and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

// ----------------------------------------------------------------------------------------
// Small helpers

fn capture(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

fn joined(h: std::thread::JoinHandle<String>) -> String {
    h.join().unwrap_or_default()
}

/// Waits for `child` at most `limit`, killing it after that (`None`).
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory under `CARGO_TARGET_TMPDIR`, removed when the test passes and kept (and
/// named) when it fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("creating the temporary directory");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("browser test: files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn listen_address_is_found_in_log_lines() {
    let a: SocketAddr = "127.0.0.1:41234".parse().unwrap();
    for line in [
        "listening on 127.0.0.1:41234",
        "2026-11-25T09:12:03Z  INFO processor: listening on http://127.0.0.1:41234/",
        "\u{1b}[32m INFO\u{1b}[0m processor: listening on \u{1b}[1m127.0.0.1:41234\u{1b}[0m",
        "INFO processor: listening addr=127.0.0.1:41234",
        "INFO processor: listening on \"127.0.0.1:41234\".",
    ] {
        assert_eq!(listen_address(line), Some(a), "{line}");
    }
    assert_eq!(listen_address("bound 127.0.0.1:41234"), None);
}
