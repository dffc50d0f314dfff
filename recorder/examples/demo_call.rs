//! Demo NG client: sets up one call through a running recorder as a SIP proxy would, plays
//! both parties (20 ms RTP, 50 packets/s each way) for a bounded time, prints what the
//! recorder reports, and deletes the call. Used by `scripts/demo.sh`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use linecord_ng::bencode::Value;
use linecord_ng::request::Command;
use support::{request, setup_call, NgClient};

fn main() -> anyhow::Result<()> {
    let mut ng = "127.0.0.1:2223".to_string();
    let mut seconds = 10u64;
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
            other => anyhow::bail!("unknown argument {other} (use --ng ADDR:PORT --seconds N)"),
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
    let mut call = setup_call(&client, &call_id, &["trust-address"]);
    println!(
        "demo: call {call_id}: caller sends to {}, callee sends to {}",
        call.a_to, call.b_to
    );

    let packets = seconds * 50;
    let start = Instant::now();
    let (mut got_a, mut got_b) = (0usize, 0usize);
    call.a.sock.set_nonblocking(true)?;
    call.b.sock.set_nonblocking(true)?;
    let mut buf = [0u8; 2048];
    for i in 0..packets {
        let a_pkt = call.a.rtp();
        let b_pkt = call.b.rtp();
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
    Ok(())
}
