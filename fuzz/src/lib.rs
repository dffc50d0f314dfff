//! linecord's fuzz targets: every decoder of outside input, as a function of one byte string
//! that must never panic, hang or allocate beyond a bound that grows linearly with the input.
//!
//! The same [`TARGETS`] run in two places:
//! - `scripts/fuzz.sh` builds `src/bin/fuzz.rs` with libFuzzer and coverage instrumentation
//!   (stable toolchain: `-C passes=sancov-module`) and fuzzes one target per process;
//! - `tests/corpus.rs` (part of `cargo test`) runs every seed of `corpus/<target>/` and every
//!   crash ever found (`regressions/<target>/`) through its target with the same bounds.
//!
//! How to add a target or a regression: `docs/fuzzing.md`.

pub mod alloc;
pub mod targets;

use std::time::Duration;

/// Resource limits of one input of a target, linear in its length: `fixed + per_byte * len`.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Peak bytes live on the heap at once (above what was live before the input).
    pub peak_fixed: usize,
    /// Peak bytes per input byte.
    pub peak_per_byte: usize,
    /// Bytes allocated in all (a target that allocates and frees in a loop is caught here).
    pub total_fixed: usize,
    /// Bytes allocated in all per input byte.
    pub total_per_byte: usize,
    /// CPU time per input in an optimised build; debug builds get [`DEBUG_TIME_FACTOR`] times
    /// as much.
    pub time_fixed: Duration,
    /// CPU time per input byte.
    pub time_per_byte: Duration,
}

/// How much slower an unoptimised build may be than the bound's time.
pub const DEBUG_TIME_FACTOR: u32 = 40;

impl Bound {
    /// The limits for an input of `len` bytes: (peak bytes, total bytes, time).
    pub fn limits(&self, len: usize) -> (usize, usize, Duration) {
        let mut time = self.time_fixed + self.time_per_byte * len as u32;
        if cfg!(debug_assertions) {
            time *= DEBUG_TIME_FACTOR;
        }
        (
            self.peak_fixed + self.peak_per_byte * len,
            self.total_fixed + self.total_per_byte * len,
            time,
        )
    }

    /// Checks a measured input against the bound; the error says which limit it broke.
    pub fn check(&self, len: usize, usage: &alloc::Usage) -> Result<(), String> {
        let (peak, total, time) = self.limits(len);
        if usage.peak_bytes > peak {
            return Err(format!(
                "peak heap {} B > bound {} B for a {len}-byte input",
                usage.peak_bytes, peak
            ));
        }
        if usage.total_bytes > total {
            return Err(format!(
                "allocated {} B in all > bound {} B for a {len}-byte input",
                usage.total_bytes, total
            ));
        }
        if usage.elapsed > time {
            return Err(format!(
                "took {:?} > bound {:?} for a {len}-byte input",
                usage.elapsed, time
            ));
        }
        Ok(())
    }
}

/// One fuzz target: a name (the folder of its corpus and regressions), the function and its
/// resource bound.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name, as given to `scripts/fuzz.sh` and used for `corpus/<name>/`.
    pub name: &'static str,
    /// What it exercises, for `--list`.
    pub what: &'static str,
    /// Runs one input; panics on a broken invariant.
    pub run: fn(&[u8]),
    /// Largest input worth generating (libFuzzer's `-max_len`).
    pub max_len: usize,
    /// Resource limits per input.
    pub bound: Bound,
}

impl Target {
    /// Runs one input under measurement and checks its bound.
    pub fn run_checked(&self, data: &[u8]) -> Result<alloc::Usage, String> {
        let usage = alloc::measure(|| (self.run)(data));
        self.bound.check(data.len(), &usage)?;
        Ok(usage)
    }
}

/// The target called `name`.
pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

pub use targets::TARGETS;
