//! A counting global allocator: how many bytes one input made a target allocate (in all, and
//! at the peak), so a target can assert that its memory is bounded by its input.
//!
//! The counters are process-wide atomics: [`measure`] takes one input at a time (a lock), and
//! the fuzz binary and the corpus test allocate nothing else meanwhile, so a measurement is
//! that input's alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator with byte counters. Install it with
/// `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.
pub struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    TOTAL.fetch_add(bytes, Relaxed);
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// What one measured call allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Most bytes live at once during the call, above what was live before it.
    pub peak_bytes: usize,
    /// Bytes allocated in all during the call (reallocations count their new size).
    pub total_bytes: usize,
    /// CPU time of the calling thread during the call (not wall time: a preempted input is
    /// not a slow one).
    pub elapsed: std::time::Duration,
}

/// Runs `f` and reports what it allocated. Without [`CountingAllocator`] installed as the
/// global allocator the byte figures are 0.
pub fn measure(f: impl FnOnce()) -> Usage {
    // The counters are process-wide: one measurement at a time (tests run in parallel).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let total = TOTAL.load(Relaxed);
    let started = thread_cpu_time();
    f();
    let elapsed = thread_cpu_time().saturating_sub(started);
    Usage {
        peak_bytes: PEAK.load(Relaxed).saturating_sub(base),
        total_bytes: TOTAL.load(Relaxed).saturating_sub(total),
        elapsed,
    }
}

/// Whether the counting allocator is the global allocator of this process.
pub fn counting() -> bool {
    let before = TOTAL.load(Relaxed);
    let v = std::hint::black_box(vec![0u8; 64]);
    drop(v);
    TOTAL.load(Relaxed) > before
}

/// CPU time this thread has used.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
