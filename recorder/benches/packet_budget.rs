//! Per-packet budget: real Ethernet/IPv4/UDP/RTP G.711 frames (160-byte payload) through the
//! real worker code in memory, in batches of 64 as the AF_XDP worker takes them, stage by
//! stage, reported as time per packet (criterion `Throughput::Elements`).
//!
//! A 10 GbE port carries 5.25 M such packets/s: one core at line rate has 190 ns per packet
//! for everything. Stages are cumulative; the ids are stable so a report can read
//! `target/criterion/packet_budget/<mode>/<stage>/new/estimates.json`:
//!
//! - `unrecorded/parse`: `frame::parse` (Ethernet, IPv4, UDP) only.
//! - `unrecorded/core`: + `MediaCore::handle_packet` (port lookup, RTP parse, latching,
//!   RFC 3550 statistics), plus per batch what the worker does after it (record tick,
//!   `poll_event`).
//! - `unrecorded/rewrite`: + next-hop MAC (`NextHops::mac_for`) and `frame::rewrite`
//!   (addresses, ports, TTL, incremental checksums).
//! - `unrecorded/full`: + a TX descriptor per frame into an in-memory descriptor ring and a
//!   release store of the producer index per batch. The ring is modelled here (the backend's
//!   `xsk` rings need a socket); it is the same work: one 16-byte descriptor per frame.
//! - `recorded/core`, `recorded/rewrite`, `recorded/full`: the same with every stream tapped
//!   into a recording (block append in the worker; sealed blocks handed out per batch and,
//!   standing in for the writer thread, given back to the pool without compression).
//!
//! `recorded_1k/*` and `unrecorded_1k/*` are the same with 1 000 streams instead of 10 000.
//! The frames of each batch are written by a generator outside the timed part (criterion
//! `iter_batched_ref`), as the NIC writes them into UMEM, so a stage's time is the worker's.
//! Simulated time advances 20 ms per round over all streams (50 packets/s per stream).
//! Each batch is parsed first and the streams' state prefetched (`MediaCore::prefetch`);
//! `LINECORD_NO_PREFETCH=1` leaves that out, to compare. Times are CPU time of the bench
//! thread ([`ThreadTime`]), so preemption on a shared machine is not counted.
//!
//! Before the timed stages the bench prints memory per recorded call at 10 000 calls
//! (counting allocator: endpoint table, recording table, block buffers), UMEM apart.
//!
//! `cargo bench -p recorder --bench packet_budget`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use recorder::backend::neigh::{NextHops, Route};
use recorder::backend::xsk::DEFAULT_FRAMES;
use recorder::config::BLOCK_CAPACITY;
use recorder::media::frame::{self, Rewrite, UdpFrame};
use recorder::media::record::{
    BufferPool, RecordOutput, RecordTap, RecordingShared, RecordingTable,
};
use recorder::media::{Action, Component, EndpointConfig, Latching, MediaCore};

/// The system allocator with a live-bytes counter (for the memory figure).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Criterion measurement in CPU time of the benchmarking thread (`CLOCK_THREAD_CPUTIME_ID`),
/// not wall time: on a machine shared with other work, time the thread spent preempted is
/// not counted (its caches still suffer). Values are nanoseconds.
struct ThreadTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Formats [`ThreadTime`] values (ns of CPU) in ns/µs/ms, throughput in elements/s.
struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else {
            (1e6, "ms")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(&self, typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
        };
        let per_sec = |v: f64| n * 1e9 / v;
        let (div, unit) = if per_sec(typical) < 1e6 {
            (1e3, "Kelem/s (CPU)")
        } else {
            (1e6, "Melem/s (CPU)")
        };
        values.iter_mut().for_each(|v| *v = per_sec(*v) / div);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Frames per batch, as the AF_XDP worker receives them (`xsk::RX_BATCH`).
const BATCH: usize = 64;
/// UMEM frame slot size used by the bench (the frames are 214 bytes).
const SLOT: usize = 256;
const PAYLOAD: usize = 160;
const FRAME_LEN: usize = 14 + 20 + 8 + 12 + PAYLOAD;
const PORT_MIN: u16 = 20_000;
/// The worker's record tick (`backend::xdp::RECORD_TICK_NS`).
const RECORD_TICK_NS: u64 = 20_000_000;
/// The flush interval of the default configuration.
const FLUSH_NS: u64 = 500_000_000;
const PACKET_INTERVAL_NS: u64 = 20_000_000;
const LOCAL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

fn local_ip() -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 255, 1)
}

/// Party `k`'s address: 198.18.0.0/15 from 198.18.0.1 on.
fn peer(k: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc612_0001 + k)), 4000)
}

/// Stream `s` (0..streams): party `s` of call `s / 2` sends to local port `PORT_MIN + 2 s`
/// (RTP ports even, RTCP ports between them unused, as the port allocator hands them out).
fn stream_port(s: u32) -> u16 {
    PORT_MIN + 2 * s as u16
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A G.711 RTP frame from party `s` to its local port, with valid IPv4 and UDP checksums.
fn template(s: u32) -> [u8; SLOT] {
    let mut f = [0u8; SLOT];
    let src = peer(s);
    let (IpAddr::V4(sip), dport) = (src.ip(), stream_port(s)) else {
        unreachable!()
    };
    f[0..6].copy_from_slice(&LOCAL_MAC);
    f[6..12].copy_from_slice(&GATEWAY_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let udp_len = (8 + 12 + PAYLOAD) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&sip.octets());
    ip[16..20].copy_from_slice(&local_ip().octets());
    let c = !fold(sum16(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let rtp = &mut f[42..54];
    rtp[0] = 0x80;
    rtp[1] = 0; // PCMU
    rtp[8..12].copy_from_slice(&(0x1000_0000 + s).to_be_bytes());
    for (i, b) in f[54..54 + PAYLOAD].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ (s as u8);
    }
    f
}

/// The UDP checksum of a frame built by [`template`] (pseudo-header, header, payload).
fn udp_checksum(f: &[u8]) -> u16 {
    let udp_len = u32::from(u16::from_be_bytes([f[38], f[39]]));
    let mut s = sum16(&f[26..34]) + 17 + udp_len;
    s += sum16(&f[34..40]) + sum16(&f[42..34 + udp_len as usize]);
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// The traffic: per stream a template and its next sequence number; writes batches of frames
/// round-robin over the streams, as the NIC would into UMEM.
struct Generator {
    templates: Vec<[u8; SLOT]>,
    seq: Vec<u16>,
    next: usize,
}

impl Generator {
    fn new(streams: u32) -> Self {
        Generator {
            templates: (0..streams).map(template).collect(),
            seq: vec![0; streams as usize],
            next: 0,
        }
    }

    fn fill(&mut self) -> Box<[[u8; SLOT]; BATCH]> {
        let mut batch = Box::new([[0u8; SLOT]; BATCH]);
        for slot in batch.iter_mut() {
            let s = self.next;
            self.next = (self.next + 1) % self.templates.len();
            let seq = self.seq[s];
            self.seq[s] = seq.wrapping_add(1);
            let f = &mut self.templates[s];
            f[44..46].copy_from_slice(&seq.to_be_bytes());
            f[46..50].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            f[40..42].fill(0);
            let c = udp_checksum(f);
            f[40..42].copy_from_slice(&c.to_be_bytes());
            *slot = *f;
        }
        batch
    }
}

/// An AF_XDP TX descriptor (`struct xdp_desc`).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    options: u32,
}

const RING: usize = 2048;

/// The TX ring: descriptors and the producer index the kernel reads.
struct TxRing {
    descs: Box<[Desc; RING]>,
    cached_prod: u32,
    producer: AtomicU32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Parse,
    Core,
    Rewrite,
    Full,
}

/// One packet worker: its media core, next hops, TX ring, and simulated time.
struct Worker {
    core: MediaCore,
    pool: Option<Arc<BufferPool>>,
    neighbours: Arc<NextHops>,
    tx: TxRing,
    now: u64,
    step_ns: u64,
    last_tick: u64,
    local_ip: IpAddr,
    batches: u64,
    /// Whether the batch prefetches stream state (`LINECORD_NO_PREFETCH` turns it off, to
    /// compare).
    prefetch: bool,
}

impl Worker {
    /// `streams` streams (`streams / 2` calls) configured as the control plane does:
    /// recordings started first, then both endpoints of each call upserted with their taps.
    fn new(streams: u32, recorded: bool) -> Self {
        let port_max = stream_port(streams) + 1;
        let mut core = MediaCore::new(PORT_MIN, port_max);
        let mut pool = None;
        if recorded {
            // The default `recording_memory` (256 MiB): 21 845 buffers, more than 10 000
            // calls hold at once.
            let p = Arc::new(BufferPool::new(256 << 20, BLOCK_CAPACITY));
            core = core.with_recordings(RecordingTable::new(Arc::clone(&p), FLUSH_NS));
            pool = Some(p);
        }
        for call in 0..streams / 2 {
            let key = u64::from(call);
            if recorded {
                let id = format!("0190c0de-0000-7000-8000-{call:012x}");
                core.start_recording(Arc::new(RecordingShared::new(key, id)), 0, 0);
            }
            for side in 0..2 {
                let s = call * 2 + side;
                let other = call * 2 + (1 - side);
                core.upsert(EndpointConfig {
                    port: stream_port(s),
                    component: Component::Rtp,
                    peer: Some(peer(s)),
                    latching: Latching::Symmetric,
                    forward_port: Some(stream_port(other)),
                    clock_rate: 8000,
                    stats: Arc::default(),
                    record: recorded.then_some(RecordTap {
                        recording: key,
                        stream: side as u16,
                    }),
                    dtmf_payload_type: Some(101),
                });
                // The RTCP endpoint next to it (no traffic here, but it is in the table).
                core.upsert(EndpointConfig {
                    port: stream_port(s) + 1,
                    component: Component::Rtcp,
                    peer: Some(SocketAddr::new(peer(s).ip(), 4001)),
                    latching: Latching::Symmetric,
                    forward_port: Some(stream_port(other) + 1),
                    clock_rate: 8000,
                    stats: Arc::default(),
                    record: recorded.then_some(RecordTap {
                        recording: key,
                        stream: 2 + side as u16,
                    }),
                    dtmf_payload_type: None,
                });
            }
        }
        let gateway = IpAddr::V4(Ipv4Addr::new(198, 19, 255, 254));
        let neighbours = Arc::new(NextHops {
            routes: vec![
                Route {
                    dst: IpAddr::V4(Ipv4Addr::new(198, 19, 255, 0)),
                    prefix: 24,
                    gateway: None,
                },
                Route {
                    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                    gateway: Some(gateway),
                },
            ],
            macs: HashMap::from([(gateway, GATEWAY_MAC)]),
        });
        Worker {
            core,
            pool,
            neighbours,
            tx: TxRing {
                descs: Box::new([Desc::default(); RING]),
                cached_prod: 0,
                producer: AtomicU32::new(0),
            },
            now: 1,
            step_ns: PACKET_INTERVAL_NS / u64::from(streams),
            last_tick: 0,
            local_ip: IpAddr::V4(local_ip()),
            batches: 0,
            prefetch: std::env::var_os("LINECORD_NO_PREFETCH").is_none(),
        }
    }

    /// The worker's per-frame decision (as `backend::xdp::XdpWorker::frame`) on a parsed
    /// frame, up to `stage`.
    #[inline(always)]
    fn frame(&mut self, frame: &mut [u8], f: &UdpFrame, stage: Stage, now: u64) -> bool {
        let payload = f.payload..f.payload + f.payload_len;
        let action = self
            .core
            .handle_packet(&frame[payload], f.destination.port(), f.source, now);
        let Action::Forward { from_port, to } = action else {
            return false;
        };
        if stage == Stage::Core {
            black_box(to);
            return false;
        }
        let Some(mac) = self.neighbours.mac_for(to.ip()) else {
            return false;
        };
        let r = Rewrite {
            src_mac: LOCAL_MAC,
            dst_mac: mac,
            source: SocketAddr::new(self.local_ip, from_port),
            destination: to,
        };
        frame::rewrite(frame, f, &r).is_ok()
    }

    /// One batch: parse every frame and prefetch the state of their streams
    /// (`MediaCore::prefetch`), then each frame through the stages, its TX descriptor, and
    /// what the worker does after each batch.
    fn batch(&mut self, frames: &mut [[u8; SLOT]; BATCH], stage: Stage) {
        let now = self.now;
        let mut parsed: [Option<UdpFrame>; BATCH] = [None; BATCH];
        let mut ports = [0u16; BATCH];
        let mut n = 0;
        for (p, f) in parsed.iter_mut().zip(frames.iter()) {
            *p = frame::parse(&f[..FRAME_LEN])
                .ok()
                .filter(|u| u.destination.ip() == self.local_ip);
            if let Some(u) = p {
                ports[n] = u.destination.port();
                n += 1;
            }
        }
        if stage == Stage::Parse {
            black_box(&parsed);
            return;
        }
        if self.prefetch {
            self.core.prefetch(&ports[..n]);
        }
        let base = self.batches * (BATCH * SLOT) as u64;
        for (i, (f, p)) in frames.iter_mut().zip(&parsed).enumerate() {
            let Some(p) = p else { continue };
            let keep = self.frame(&mut f[..FRAME_LEN], p, stage, now);
            if keep && stage == Stage::Full {
                let idx = self.tx.cached_prod as usize & (RING - 1);
                self.tx.descs[idx] = Desc {
                    addr: base + (i * SLOT) as u64,
                    len: FRAME_LEN as u32,
                    options: 0,
                };
                self.tx.cached_prod = self.tx.cached_prod.wrapping_add(1);
            }
        }
        if stage == Stage::Full {
            // The kernel consumes at once in this model: no ring-full case.
            self.tx
                .producer
                .store(self.tx.cached_prod, Ordering::Release);
        }
        self.batches += 1;
        self.now += self.step_ns * BATCH as u64;
        self.after_batch(now);
    }

    fn after_batch(&mut self, now: u64) {
        if now.saturating_sub(self.last_tick) >= RECORD_TICK_NS {
            self.last_tick = now;
            self.core.handle_timeout(now);
        }
        while let Some(out) = self.core.poll_record_output() {
            // The writer's part, without compression or I/O: the buffer goes back.
            if let (RecordOutput::Block { block, .. }, Some(pool)) = (out, self.pool.as_ref()) {
                pool.give(block);
            }
        }
        while let Some(ev) = self.core.poll_event() {
            black_box(ev);
        }
    }
}

/// Checks the bench does what it claims: frames forwarded with valid checksums, recorded.
fn self_check() {
    let mut g = Generator::new(1000);
    let mut w = Worker::new(1000, true);
    for _ in 0..100 {
        let mut frames = g.fill();
        w.batch(&mut frames, Stage::Full);
        let f = &frames[0][..FRAME_LEN];
        let p = frame::parse(f).expect("rewritten frame parses");
        assert_eq!(p.source.ip(), w.local_ip);
        assert_eq!(udp_checksum(f), u16::from_be_bytes([f[40], f[41]]));
        assert_eq!(fold(sum16(&f[14..34])), 0xffff, "IPv4 header checksum");
    }
    let c = w.core.counters();
    assert_eq!(c.forwarded, c.received, "every frame forwarded");
    assert_eq!(c.received, 6400);
    let pool = w.pool.as_ref().expect("recorded");
    assert!(pool.created() > 0, "recording took buffers");
}

fn mib(b: usize) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Memory per recorded call at `calls` calls (2 streams each) after `secs` simulated
/// seconds: the endpoint table alone (the same calls unrecorded), then with recording (the
/// recording table and the block buffers, each recording holding one from its start); the
/// traffic generator's own memory is left out.
fn memory_report(calls: u32, secs: u64) {
    let live = || LIVE.load(Ordering::Relaxed);
    let before = live();
    let plain = Worker::new(calls * 2, false);
    let endpoints = live() - before;
    drop(plain);
    let before = live();
    let mut w = Worker::new(calls * 2, true);
    let at_start = live() - before;
    let g_before = live();
    let mut g = Generator::new(calls * 2);
    let mut frames = g.fill();
    let generator = live() - g_before;
    let batches = u64::from(calls) * 2 * 50 * secs / BATCH as u64;
    for _ in 0..batches {
        frames.copy_from_slice(&g.fill()[..]);
        w.batch(&mut frames, Stage::Full);
    }
    let steady = live() - before - generator;
    let pool = w.pool.as_ref().expect("recorded");
    let buffers = pool.created() as usize * pool.block_capacity();
    let per_call = |b: usize| b as f64 / f64::from(calls) / 1024.0;
    println!(
        "packet_budget memory at {calls} recorded calls ({secs} s of traffic): \
         {:.2} KiB/call in all ({:.1} MiB; {:.2} KiB/call at start) = \
         endpoints {:.2} KiB/call (4 per call) + recording state {:.2} KiB/call + \
         block buffers {:.2} KiB/call ({} x {} B); \
         UMEM apart: {} frames x 2048 B = {:.0} MiB per queue",
        per_call(steady),
        mib(steady),
        per_call(at_start),
        per_call(endpoints),
        per_call(steady.saturating_sub(endpoints + buffers)),
        per_call(buffers),
        pool.created(),
        pool.block_capacity(),
        DEFAULT_FRAMES,
        mib(DEFAULT_FRAMES as usize * 2048),
    );
    drop(frames);
}

fn budget(c: &mut Criterion<ThreadTime>) {
    self_check();
    memory_report(10_000, 3);
    let mut group = c.benchmark_group("packet_budget");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (streams, suffix) in [(10_000u32, ""), (1_000, "_1k")] {
        for recorded in [false, true] {
            let mode = if recorded { "recorded" } else { "unrecorded" };
            let stages: &[(&str, Stage)] = if recorded {
                &[
                    ("core", Stage::Core),
                    ("rewrite", Stage::Rewrite),
                    ("full", Stage::Full),
                ]
            } else {
                &[
                    ("parse", Stage::Parse),
                    ("core", Stage::Core),
                    ("rewrite", Stage::Rewrite),
                    ("full", Stage::Full),
                ]
            };
            for &(name, stage) in stages {
                let mut g = Generator::new(streams);
                let mut w = Worker::new(streams, recorded);
                // Warm up: every stream latched and, if recorded, holding a block.
                for _ in 0..(streams as usize * 2).div_ceil(BATCH) {
                    let mut frames = g.fill();
                    w.batch(&mut frames, Stage::Full);
                }
                let id = BenchmarkId::new(format!("{mode}{suffix}"), name);
                group.bench_function(id, |b| {
                    b.iter_batched_ref(
                        || g.fill(),
                        |frames| w.batch(frames, stage),
                        BatchSize::SmallInput,
                    )
                });
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadTime);
    targets = budget
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
