//! Demo NG client: sets up one call through a running recorder as a SIP proxy would, records
//! it, plays both parties (speech-like tones as 20 ms PCMU RTP, 50 packets/s each way) for a
//! bounded time, prints what the recorder reports, deletes the call, waits for the spooled
//! job and exports the recording to WAV. Used by `scripts/demo.sh`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::Command;
use support::{request, setup_call, NgClient};

fn main() -> anyhow::Result<()> {
    let mut ng = "127.0.0.1:2223".to_string();
    let mut seconds = 10u64;
    let mut spool = std::path::PathBuf::from("/var/spool/linecord");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ng" => {
                ng = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--ng needs ADDR:PORT"))?
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--seconds needs a number"))?
                    .parse()?
            }
            "--spool-dir" => {
                spool = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--spool-dir needs a directory"))?
                    .into()
            }
            other => anyhow::bail!(
                "unknown argument {other} (use --ng ADDR:PORT --seconds N --spool-dir DIR)"
            ),
        }
    }
    let client = NgClient::new(ng.parse()?);
    let deadline = Instant::now() + Duration::from_secs(5);
    while client
        .try_call(&linecord_ng::request::Request::new(Command::Ping).to_value())
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "recorder at {ng} does not answer ping"
        );
    }
    let call_id = format!("demo-{}", std::process::id());
    let call = setup_call(&client, &call_id, &["trust-address"]);
    println!(
        "demo: call {call_id}: caller sends to {}, callee sends to {}",
        call.a_to, call.b_to
    );
    let mut start = request(Command::StartRecording, &call_id, "tag-a", None);
    start.metadata = Some("demo=1".into());
    client.ok(&start);
    println!("demo: recording started");

    let packets = seconds * 50;
    let start = Instant::now();
    let (mut got_a, mut got_b) = (0usize, 0usize);
    call.a.sock.set_nonblocking(true)?;
    call.b.sock.set_nonblocking(true)?;
    let mut buf = [0u8; 2048];
    for i in 0..packets {
        let a_pkt = tone_packet(i, 0xa, 300.0);
        let b_pkt = tone_packet(i, 0xb, 450.0);
        call.a.sock.send_to(&a_pkt, call.a_to)?;
        call.b.sock.send_to(&b_pkt, call.b_to)?;
        let due = start + Duration::from_millis(20 * (i + 1));
        while Instant::now() < due {
            while call.b.sock.recv_from(&mut buf).is_ok() {
                got_b += 1;
            }
            while call.a.sock.recv_from(&mut buf).is_ok() {
                got_a += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if (i + 1) % 250 == 0 {
            println!(
                "demo: {:>3} s: sent {} each way, callee got {got_b}, caller got {got_a}",
                (i + 1) / 50,
                i + 1
            );
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    while call.b.sock.recv_from(&mut buf).is_ok() {
        got_b += 1;
    }
    while call.a.sock.recv_from(&mut buf).is_ok() {
        got_a += 1;
    }
    let q = client.ok(&request(Command::Query, &call_id, "tag-a", Some("tag-b")));
    let totals = |k: &str| {
        q.get("totals")
            .and_then(|t| t.get("RTP"))
            .and_then(|t| t.get(k))
            .and_then(Value::as_int)
            .unwrap_or(-1)
    };
    println!(
        "demo: sent {packets} packets each way; callee received {got_b}, caller received {got_a}; recorder relayed {} packets, {} bytes, {} errors",
        totals("packets"),
        totals("bytes"),
        totals("errors")
    );
    client.ok(&request(Command::Delete, &call_id, "tag-a", Some("tag-b")));
    println!("demo: call deleted");
    anyhow::ensure!(
        got_a as u64 == packets && got_b as u64 == packets,
        "packets were lost in the demo"
    );

    // The recorder finishes the file and spools a job for the processor.
    let deadline = Instant::now() + Duration::from_secs(10);
    let job = loop {
        let found = std::fs::read_dir(spool.join("new"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .find(|j| j["call_id"] == call_id.as_str());
        if let Some(j) = found {
            break j;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no job was spooled in {}",
            spool.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let file = std::path::PathBuf::from(job["file"].as_str().unwrap_or_default());
    println!(
        "demo: recording {} ({}): {}",
        job["recording_id"],
        job["status"],
        file.display()
    );
    let wav = file.with_extension("wav");
    let line = recorder::tools::export(&file, &recorder::tools::ExportTo::Wav(wav.clone()))?;
    println!("demo: exported {line}");
    println!("demo: listen to {}", wav.display());
    Ok(())
}

/// A 20 ms PCMU packet of a tone with a slow syllable-like envelope.
fn tone_packet(i: u64, ssrc: u32, hz: f64) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&(i as u16).to_be_bytes());
    p.extend_from_slice(&((i * 160) as u32).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u64).map(|n| {
        let t = (i * 160 + n) as f64 / 8000.0;
        let env = (2.0 * std::f64::consts::PI * 3.0 * t).sin().abs();
        let s = (2.0 * std::f64::consts::PI * hz * t).sin() * env * 8000.0;
        linecord_recfile::g711::linear_to_ulaw(s as i16)
    }));
    p
}
