//! Recording benchmark: N concurrent recorded calls at 50 packets/s per direction (G.711,
//! 160-byte payloads) pushed through the real recording path — a worker's
//! `RecordingTable` (block buffers from the pool), the io_uring `Writer` thread, the store
//! (footer, move, job) — in simulated time, as fast as the machine allows.
//!
//! Reports: packets/s the path sustains (against the real-time rate it must keep up with),
//! memory per recorded call (RSS growth while all calls are active / N), and bytes on disk
//! against raw payload bytes.
//!
//! `cargo bench -p recorder --bench recording_writer -- [--calls N] [--seconds S]`

use std::sync::Arc;
use std::time::Instant;

use linecord_recfile::{FileHeader, PartyInfo, StopReason};
use recorder::config::BLOCK_CAPACITY;
use recorder::media::record::{BufferPool, RecordingShared, RecordingTable};
use recorder::media::rtp::parse_rtp;
use recorder::recording::store::Store;
use recorder::recording::writer::{FsyncPolicy, Writer, WriterCounters, WriterMsg};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_bytes(&p);
            } else if p.extension().and_then(|x| x.to_str()) == Some("lcr") {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn main() {
    let mut calls = 10_000usize;
    let mut seconds = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("linecord-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::new(dir.join("recordings"), dir.join("spool")).unwrap();
    let pool = Arc::new(BufferPool::new(1 << 30, BLOCK_CAPACITY));
    let counters = Arc::new(WriterCounters::default());
    let (tx, rx) = crossbeam_channel::unbounded();
    let writer = Writer::new(
        store,
        Arc::clone(&pool),
        FsyncPolicy::Close,
        Arc::clone(&counters),
    )
    .unwrap();
    let writer_thread = std::thread::spawn(move || writer.run(rx));

    const FLUSH_NS: u64 = 500_000_000;
    let mut table = RecordingTable::new(Arc::clone(&pool), FLUSH_NS);
    let rss0 = rss_bytes();
    let mut shared = Vec::with_capacity(calls);
    for i in 0..calls {
        let s = Arc::new(RecordingShared::new(i as u64 + 1, format!("bench-{i:06}")));
        let header = FileHeader {
            recording_id: s.id.clone(),
            call_id: format!("call-{i}"),
            start_unix_ms: 1_795_564_800_000,
            metadata: None,
            parties: vec![PartyInfo::default(), PartyInfo::default()],
            streams: Vec::new(),
        };
        tx.send(WriterMsg::Open {
            recording: Arc::clone(&s),
            header: Box::new(header),
        })
        .unwrap();
        table.start(Arc::clone(&s), 0, 0);
        shared.push(s);
    }
    let slots: Vec<usize> = shared.iter().map(|s| table.slot(s.key).unwrap()).collect();

    // One pre-built packet per direction; sequence/timestamp rewritten per tick.
    let mut pkt = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pkt.extend((0..160u32).map(|i| (i * 37 % 251) as u8));
    let ticks = seconds * 50;
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut packets = 0u64;
    for t in 0..ticks {
        let now = t * 20_000_000;
        pkt[2..4].copy_from_slice(&(t as u16).to_be_bytes());
        pkt[4..8].copy_from_slice(&((t as u32) * 160).to_be_bytes());
        let h = parse_rtp(&pkt).unwrap();
        for (i, slot) in slots.iter().enumerate() {
            table.record_packet(*slot, i as u64 + 1, 0, &pkt, Some(&h), now);
            table.record_packet(*slot, i as u64 + 1, 2, &pkt, Some(&h), now + 1000);
            packets += 2;
        }
        table.handle_timeout(now);
        while let Some(o) = table.poll_output() {
            tx.send(WriterMsg::Output(o)).unwrap();
        }
        if t % 50 == 0 {
            peak_rss = peak_rss.max(rss_bytes());
        }
    }
    let push_elapsed = started.elapsed();
    peak_rss = peak_rss.max(rss_bytes());
    for s in &shared {
        table.stop(s.key, StopReason::Deleted, &[], ticks * 20_000_000);
    }
    while let Some(o) = table.poll_output() {
        tx.send(WriterMsg::Output(o)).unwrap();
    }
    drop(tx);
    writer_thread.join().unwrap();
    let total = started.elapsed();

    let payload = packets * 160;
    let disk = dir_bytes(&dir.join("recordings"));
    let dropped: u64 = shared
        .iter()
        .map(|s| s.dropped.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let pps = packets as f64 / total.as_secs_f64();
    let realtime_pps = calls as f64 * 100.0;
    println!("recording bench: {calls} calls x {seconds} s, 2 x 50 pps, 160-byte payloads");
    println!("  packets recorded      {packets} (dropped {dropped})");
    println!(
        "  worker push time      {:.2} s",
        push_elapsed.as_secs_f64()
    );
    println!("  total incl. writer    {:.2} s  -> {:.0} packets/s = {:.1}x the real-time rate of {:.0} packets/s",
        total.as_secs_f64(), pps, pps / realtime_pps, realtime_pps);
    println!(
        "  blocks written        {}",
        counters.blocks.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("  memory per call       {:.1} KiB (peak RSS growth {:.1} MiB / {calls}; pool buffers {} x {} KiB)",
        peak_rss.saturating_sub(rss0) as f64 / calls as f64 / 1024.0,
        peak_rss.saturating_sub(rss0) as f64 / 1048576.0,
        pool.created(), BLOCK_CAPACITY / 1024);
    println!(
        "  disk / payload        {:.4}x ({disk} B on disk, {payload} B payload)",
        disk as f64 / payload as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
