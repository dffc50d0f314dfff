//! Recording benchmark: N concurrent recorded calls at 50 packets/s per direction (G.711,
//! 160-byte payloads) pushed through the real recording path — a worker's
//! `RecordingTable` (block buffers from the pool), the io_uring `Writer` thread, the store
//! (footer, move, job) — in simulated time, as fast as the machine allows.
//!
//! Time runs at real speed (each 20 ms tick is paced), so buffers in flight are what a live
//! system holds. Reports: worker CPU per recorded packet, the writer thread's CPU use (and so
//! how many such calls one writer thread sustains), whether anything was dropped, memory per
//! recorded call (RSS growth while all calls are active / N), the time to finish all files
//! (footer, fsync, move, job), and bytes on disk against raw payload bytes (payloads are
//! pseudo-random, so lz4 cannot shrink them: the worst case for the format).
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

/// CPU seconds (user + system) used so far by thread `tid` of this process.
fn thread_cpu_secs(tid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    // Fields after the command: state, ppid, pgrp, session, tty, tpgid (may be -1), flags,
    // minflt, cminflt, majflt, cmajflt, utime, stime (proc(5)), in clock ticks.
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks as f64 / 100.0
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
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let writer_thread = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let _ = tid_tx.send(unsafe { libc::gettid() });
        writer.run(rx)
    });
    let writer_tid = tid_rx.recv().unwrap();

    const FLUSH_NS: u64 = 500_000_000;
    let mut table = RecordingTable::new(Arc::clone(&pool), FLUSH_NS);
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
            producers: 1,
            recording: Arc::clone(&s),
            header: Box::new(header),
        })
        .unwrap();
        // Calls start spread over one flush interval, as real calls do, so their blocks are
        // not all sealed in the same tick.
        let offset = (i % 25) as u64 * 20_000_000;
        table.start(Arc::clone(&s), offset, offset);
        shared.push(s);
    }
    let slots: Vec<usize> = shared.iter().map(|s| table.slot(s.key).unwrap()).collect();
    // Let the writer create every file first (as if the calls had been set up earlier; the
    // creation rate is reported on its own), then measure the steady state.
    let open_start = Instant::now();
    while counters.opened.load(std::sync::atomic::Ordering::Relaxed) < calls as u64 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let open_elapsed = open_start.elapsed();
    let rss0 = rss_bytes();

    // Pre-built packets with pseudo-random (incompressible) payloads; sequence/timestamp
    // rewritten per tick; 64 variants so lz4 finds no repeats within a block.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut variants: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            p.extend((0..160).map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            }));
            p
        })
        .collect();
    let ticks = seconds * 50;
    let started = Instant::now();
    let writer_cpu0 = thread_cpu_secs(writer_tid);
    let mut peak_rss = 0;
    let mut packets = 0u64;
    let mut push_time = std::time::Duration::ZERO;
    for t in 0..ticks {
        let now = t * 20_000_000;
        let tick_start = Instant::now();
        for (i, slot) in slots.iter().enumerate() {
            if t < (i % 25) as u64 {
                continue;
            }
            for (stream, offset) in [(0u16, 0usize), (2, 32)] {
                let pkt = &mut variants[(i + t as usize + offset) % 64];
                pkt[2..4].copy_from_slice(&(t as u16).to_be_bytes());
                pkt[4..8].copy_from_slice(&((t as u32) * 160).to_be_bytes());
                let h = parse_rtp(pkt).unwrap();
                table.record_packet(
                    *slot,
                    i as u64 + 1,
                    stream,
                    pkt,
                    Some(&h),
                    now + u64::from(stream) * 500,
                );
                packets += 1;
            }
        }
        table.handle_timeout(now);
        while let Some(o) = table.poll_output() {
            tx.send(WriterMsg::Output(o)).unwrap();
        }
        push_time += tick_start.elapsed();
        if t % 50 == 0 {
            peak_rss = peak_rss.max(rss_bytes());
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!(
                    "  t={:>3} s  queued blocks {:>6}  pool buffers {:>6}  rss {:>5} MiB",
                    t / 50,
                    tx.len(),
                    pool.created(),
                    rss_bytes() >> 20
                );
            }
        }
        // Real time: the next tick is due 20 ms after this one.
        let due = started + std::time::Duration::from_millis(20 * (t + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let stream_elapsed = started.elapsed();
    let writer_cpu = thread_cpu_secs(writer_tid) - writer_cpu0;
    let steady_rss = rss_bytes();
    peak_rss = peak_rss.max(steady_rss);
    let finish_start = Instant::now();
    for s in &shared {
        table.stop(s.key, StopReason::Deleted, &[], ticks * 20_000_000);
    }
    while let Some(o) = table.poll_output() {
        tx.send(WriterMsg::Output(o)).unwrap();
    }
    drop(tx);
    writer_thread.join().unwrap();
    let finish_elapsed = finish_start.elapsed();

    let payload = packets * 160;
    let disk = dir_bytes(&dir.join("recordings"));
    let dropped: u64 = shared
        .iter()
        .map(|s| s.dropped.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let writer_util = writer_cpu / stream_elapsed.as_secs_f64();
    println!(
        "recording bench: {calls} calls x {seconds} s in real time, 2 x 50 pps, 160-byte payloads"
    );
    println!(
        "  creating the files    {:.2} s ({:.0} files/s, io_uring OpenAt)",
        open_elapsed.as_secs_f64(),
        calls as f64 / open_elapsed.as_secs_f64()
    );
    println!(
        "  packets recorded      {packets} (dropped {dropped}), {:.0} packets/s",
        packets as f64 / stream_elapsed.as_secs_f64()
    );
    println!(
        "  worker CPU            {:.0} ns per recorded packet ({:.1}% of one core)",
        push_time.as_secs_f64() * 1e9 / packets as f64,
        100.0 * push_time.as_secs_f64() / stream_elapsed.as_secs_f64()
    );
    println!(
        "  writer CPU            {:.1}% of one core -> one writer thread sustains ~{:.0} such calls",
        100.0 * writer_util,
        calls as f64 / writer_util.max(1e-9)
    );
    println!(
        "  finishing all files   {:.2} s (footer, fsync, move, metadata, job: {:.0} files/s)",
        finish_elapsed.as_secs_f64(),
        calls as f64 / finish_elapsed.as_secs_f64()
    );
    println!(
        "  blocks written        {}",
        counters.blocks.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "  memory per call       {:.1} KiB (RSS growth while streaming {:.1} MiB / {calls}, peak {:.1} MiB; pool buffers {} x {} KiB)",
        steady_rss.saturating_sub(rss0) as f64 / calls as f64 / 1024.0,
        steady_rss.saturating_sub(rss0) as f64 / 1048576.0,
        peak_rss.saturating_sub(rss0) as f64 / 1048576.0,
        pool.created(),
        BLOCK_CAPACITY / 1024
    );
    println!(
        "  disk / payload        {:.4}x ({disk} B on disk, {payload} B payload)",
        disk as f64 / payload as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
