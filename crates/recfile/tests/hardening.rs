//! Reproducers of the hardening issue, measured rather than timed: a counting global
//! allocator gives the peak heap of each step, and the reader's `ScanWork` counts the bytes
//! its block walk processed.
//!
//! * A few hundred bytes of recording whose packets are 8 hours apart used to export to a
//!   921 MB WAV through 705 MB of sample buffers; the export now streams (peak heap below
//!   [`EXPORT_HEAP_BOUND`]), silence written from a small zero buffer.
//! * Files of fake block headers each claiming the rest of the file used to cost the walk
//!   O(size²) bytes of CRC; it is now at most [`WORK_PER_BYTE`] × the size.
//!
//! The measured sections run one at a time (a global lock), since the allocator counts the
//! whole process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use linecord_recfile::block::{seal, BlockBuilder, BLOCK_HEADER_LEN, BLOCK_MAGIC};
use linecord_recfile::export::{
    render_recording, write_recording_pcap, write_recording_wav, write_wav, StereoSink, WavOptions,
    WAV_HEADER_LEN,
};
use linecord_recfile::format::{encode_footer, encode_header};
use linecord_recfile::reader::{recovery_footer, Recording};
use linecord_recfile::{
    CodecInfo, Completeness, Component, FileHeader, PartyInfo, RtpFields, StreamInfo,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measured section at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak heap growth (bytes above what was allocated before) while `f` runs.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// Heap an export may use, whatever the call's length: the reorder window (2 × 2^17
/// samples and their bitmaps ≈ 0.55 MiB), one block, write buffers and stream tables.
const EXPORT_HEAP_BOUND: usize = 2 << 20;

/// Bytes of work the block walk may do per byte of file.
const WORK_PER_BYTE: u64 = 4;

/// Counts what is written, keeps nothing.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const EIGHT_HOURS_US: u64 = 8 * 3600 * 1_000_000;

fn stream(id: u16, party: u8) -> StreamInfo {
    StreamInfo {
        id,
        party,
        media_index: 0,
        component: Component::Rtp,
        source: String::new(),
        destination: String::new(),
        codecs: vec![CodecInfo {
            payload_type: 0,
            name: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
        }],
    }
}

/// A few hundred bytes: two parties, one short PCMU packet each at the start and at the
/// end of 8 hours, a footer saying the recording lasted 8 hours.
fn sparse_eight_hours() -> Vec<u8> {
    let header = FileHeader {
        recording_id: "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071".into(),
        call_id: "sparse".into(),
        start_unix_ms: 1_795_597_200_000,
        metadata: None,
        parties: vec![PartyInfo::default(), PartyInfo::default()],
        streams: vec![stream(0, 0), stream(2, 1)],
    };
    let mut file = Vec::new();
    encode_header(&header, &mut file);
    for (i, at) in [0, EIGHT_HOURS_US - 20_000].into_iter().enumerate() {
        let mut b = BlockBuilder::with_capacity(1024);
        for sid in [0u16, 2] {
            let rtp = RtpFields {
                marker: false,
                payload_type: 0,
                sequence: i as u16,
                // A timestamp jump of a few seconds too: it must not move anything far.
                timestamp: (i as u32) * 160 + u32::from(sid) * 40_000,
                ssrc: 7 + u32::from(sid),
            };
            b.push_packet(sid, at + u64::from(sid), Some(&rtp), &[0x80; 40]);
        }
        seal(&b, &mut file);
    }
    let rec = Recording::from_bytes(file.clone()).expect("opens");
    let mut footer = recovery_footer(&rec, header.start_unix_ms + EIGHT_HOURS_US / 1000);
    footer.completeness = Completeness::Complete;
    encode_footer(&footer, &mut file);
    file
}

#[test]
fn sparse_eight_hour_recording_exports_in_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = sparse_eight_hours();
    println!("sparse file: {} bytes", file.len());
    assert!(file.len() < 1024);
    let rec = Recording::from_bytes(file).expect("opens");
    assert!(rec.is_intact());
    let frames = EIGHT_HOURS_US / 125 + 40 - 160;

    // The Recording API (what `recorder export` and the processor use).
    let (summary, heap) = peak_heap(|| {
        let mut out = CountingSink(0);
        let s = write_recording_wav(&rec, &WavOptions::default(), &mut out).expect("export");
        (s, out.0)
    });
    let (summary, written) = summary;
    println!("write_recording_wav: {written} bytes of WAV, peak heap {heap} bytes");
    assert!(heap < EXPORT_HEAP_BOUND, "{heap} bytes of heap");
    assert_eq!(summary.samples_per_channel, frames);
    assert_eq!(written, WAV_HEADER_LEN + 4 * frames);
    assert_eq!(summary.packets_used, 4);

    // The slice API (records already in memory: they are not counted).
    let records = rec.records().expect("records");
    let streams = rec.streams();
    let ((), heap) = peak_heap(|| {
        let mut out = CountingSink(0);
        write_wav(&rec.header, &streams, &records, &mut out).expect("export");
        assert_eq!(out.0, WAV_HEADER_LEN + 4 * frames);
    });
    println!("write_wav: peak heap {heap} bytes");
    assert!(heap < EXPORT_HEAP_BOUND, "{heap} bytes of heap");

    // Rendering for analysis: silence arrives as run lengths, not samples.
    struct Tally(u64, u64);
    impl StereoSink for Tally {
        fn audio(&mut self, l: &[i16], _: &[i16]) -> io::Result<()> {
            self.0 += l.len() as u64;
            Ok(())
        }
        fn silence(&mut self, n: u64) -> io::Result<()> {
            self.1 += n;
            Ok(())
        }
    }
    let (t, heap) = peak_heap(|| {
        let mut t = Tally(0, 0);
        render_recording(&rec, &WavOptions::default(), &mut t).expect("render");
        t
    });
    println!(
        "render_recording: {} audio frames, {} silent, peak heap {heap}",
        t.0, t.1
    );
    assert!(heap < EXPORT_HEAP_BOUND);
    assert_eq!(t.0 + t.1, frames);
    assert!(t.0 < 20_000, "{} frames handed out as samples", t.0);

    let ((), heap) = peak_heap(|| {
        let mut out = CountingSink(0);
        let s = write_recording_pcap(&rec, &mut out).expect("pcap");
        assert_eq!(s.packets, 4);
    });
    assert!(heap < 64 << 10, "{heap}");
}

/// A header, then fake block headers back to back, each claiming the rest of a file of
/// `size` bytes (codec 0, or lz4 with a raw length lz4 could produce), with a wrong CRC.
fn fake_headers(size: usize, codec: u8) -> Vec<u8> {
    let header = FileHeader {
        recording_id: "x".into(),
        call_id: String::new(),
        start_unix_ms: 0,
        metadata: None,
        parties: Vec::new(),
        streams: Vec::new(),
    };
    let mut f = Vec::with_capacity(size);
    encode_header(&header, &mut f);
    while f.len() + BLOCK_HEADER_LEN <= size {
        let stored = (size - f.len() - BLOCK_HEADER_LEN) as u32;
        f.extend_from_slice(&BLOCK_MAGIC);
        f.push(codec);
        f.extend_from_slice(&stored.to_le_bytes());
        f.extend_from_slice(&stored.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    }
    f.resize(size, 0);
    f
}

#[test]
fn adversarial_block_headers_scan_in_linear_work() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("lcr-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut per_byte = Vec::new();
    for codec in [0u8, 1] {
        for mib in [1usize, 2, 4] {
            let size = mib << 20;
            let file = fake_headers(size, codec);
            let path = dir.join(format!("fake-{codec}-{mib}.lcr"));
            std::fs::write(&path, &file).expect("write");
            let (rec, heap) = peak_heap(|| Recording::open(&path).expect("opens"));
            let w = rec.scan_work;
            println!(
                "codec {codec}, {mib} MiB: {} candidates, {} bytes checksummed, {} decoded, \
                 total work {} = {:.2} per byte; peak heap {heap} bytes (file-backed)",
                w.candidates,
                w.checksummed,
                w.decoded,
                w.total(),
                w.total() as f64 / size as f64
            );
            assert!(rec.blocks.is_empty());
            assert_eq!(rec.data_end + rec.tail_bytes, size as u64);
            assert!(w.candidates as usize >= size / BLOCK_HEADER_LEN - 1);
            assert_eq!(w.candidates_skipped, 0);
            assert!(w.checksummed <= 2 * size as u64, "{w:?}");
            assert!(w.total() <= WORK_PER_BYTE * size as u64, "{w:?}");
            // Waiting candidates cost ~100 bytes each: heap in proportion, never the file.
            assert!(heap < (w.candidates as usize) * 160 + (1 << 20), "{heap}");
            // The same from memory.
            let mem = Recording::from_bytes(file).expect("opens");
            assert_eq!(mem.scan_work, w);
            per_byte.push(w.total() as f64 / size as f64);
        }
    }
    // Linear: the work per byte does not grow with the size.
    for pair in per_byte.chunks(3) {
        assert!(pair[2] <= pair[0] * 1.05 + 0.01, "{per_byte:?}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn hostile_lengths_allocate_nothing_they_claim() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let header = FileHeader {
        recording_id: "x".into(),
        call_id: String::new(),
        start_unix_ms: 0,
        metadata: None,
        parties: Vec::new(),
        streams: Vec::new(),
    };
    let mut base = Vec::new();
    encode_header(&header, &mut base);
    // Header length field at 16 MiB exactly but the file ends: nothing of 16 MiB is read.
    let mut cut = base.clone();
    cut[10..14].copy_from_slice(&((16u32 << 20) - 1).to_le_bytes());
    let dir = std::env::temp_dir().join(format!("lcr-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("cut.lcr");
    std::fs::write(&path, &cut).expect("write");
    let (r, heap) = peak_heap(|| Recording::open(&path).map(|_| ()));
    assert!(r.is_err());
    assert!(heap < 64 << 10, "{heap}");
    // A trailer claiming a 16 MiB footer body in a small file.
    let mut f = base.clone();
    f.extend_from_slice(&(16u32 << 20).to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(b"LCREND\r\n");
    std::fs::write(&path, &f).expect("write");
    let (r, heap) = peak_heap(|| Recording::open(&path).map(|r| r.footer.is_none()));
    assert!(r.expect("opens"));
    assert!(heap < 64 << 10, "{heap}");
    // A 1 MiB header body whose stream count claims a million streams (each would be a
    // ~150-byte struct), then bytes that are no stream: nothing reserved for the million.
    let mut body = vec![1, b'x', 0, 0, 0, 0]; // id "x", call id "", start 0, no metadata, 0 parties
    let mut count = 1_000_000u64;
    // LEB128 by hand (the crate's encoder is private).
    while count >= 0x80 {
        body.push((count as u8) | 0x80);
        count >>= 7;
    }
    body.push(count as u8);
    body.resize(1 << 20, 0xff);
    let mut many = linecord_recfile::format::FILE_MAGIC.to_vec();
    many.extend_from_slice(&linecord_recfile::format::VERSION.to_le_bytes());
    many.extend_from_slice(&(body.len() as u32).to_le_bytes());
    many.extend_from_slice(&body);
    many.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let (r, heap) = peak_heap(|| Recording::from_bytes(many).map(|_| ()));
    assert!(r.is_err());
    assert!(heap < 64 << 10, "{heap}");
    // Blocks claiming 16 MiB raw from a few stored bytes, with a valid CRC.
    let mut f = base.clone();
    for _ in 0..100 {
        let mut h = vec![1u8];
        h.extend_from_slice(&8u32.to_le_bytes());
        h.extend_from_slice(&(16u32 << 20).to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&[0; 16]);
        let stored = [0u8; 8];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h), &stored);
        f.extend_from_slice(&BLOCK_MAGIC);
        f.extend_from_slice(&h);
        f.extend_from_slice(&crc.to_le_bytes());
        f.extend_from_slice(&stored);
    }
    let (rec, heap) = peak_heap(|| Recording::from_bytes(f).expect("opens"));
    assert!(rec.blocks.is_empty());
    assert_eq!(rec.scan_work.decoded, 0, "refused before decompression");
    assert!(heap < 1 << 20, "{heap}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
