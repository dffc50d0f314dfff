//! Rate limiting of log lines that peers can cause (refused NG requests, send errors): at
//! most N lines per second, then one line saying how many were suppressed. Sans-IO: the
//! caller passes the monotonic time and does the logging.
//!
//! ```
//! use recorder::control::ratelimit::LogLimiter;
//!
//! let mut l = LogLimiter::new(2);
//! assert_eq!(l.admit(0), Some(0)); // log it
//! assert_eq!(l.admit(1), Some(0));
//! assert_eq!(l.admit(2), None); // suppressed
//! // A second later: log again, and say that one line was suppressed.
//! assert_eq!(l.admit(1_000_000_000), Some(1));
//! ```

/// One second, the window of a [`LogLimiter`].
pub const WINDOW_NS: u64 = 1_000_000_000;

/// At most `per_window` admitted lines per [`WINDOW_NS`]; the rest are counted.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    per_window: u32,
    window_start_ns: u64,
    in_window: u32,
    suppressed: u64,
    started: bool,
}

impl LogLimiter {
    /// A limiter admitting `per_second` lines a second.
    pub fn new(per_second: u32) -> Self {
        LogLimiter {
            per_window: per_second,
            window_start_ns: 0,
            in_window: 0,
            suppressed: 0,
            started: false,
        }
    }

    fn roll(&mut self, now_ns: u64) {
        if !self.started || now_ns.saturating_sub(self.window_start_ns) >= WINDOW_NS {
            self.started = true;
            self.window_start_ns = now_ns;
            self.in_window = 0;
        }
    }

    /// Whether to log a line at `now_ns`: `Some(k)` to log it, after a line saying `k` lines
    /// were suppressed since the last one logged (when `k > 0`); `None` to drop it (counted).
    pub fn admit(&mut self, now_ns: u64) -> Option<u64> {
        self.roll(now_ns);
        if self.in_window >= self.per_window {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Suppressed lines not reported yet, once their window is over: `Some(k)` means "log
    /// that k lines were suppressed". Call about once a second, so a burst that stops is
    /// still accounted for.
    pub fn flush(&mut self, now_ns: u64) -> Option<u64> {
        if self.suppressed == 0 || now_ns.saturating_sub(self.window_start_ns) < WINDOW_NS {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Lines suppressed and not reported yet.
    pub fn pending(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn at_most_n_per_second_then_a_count() {
        let mut l = LogLimiter::new(10);
        // 1 000 events in 1 s (one per ms): 10 logged, 990 suppressed.
        let logged = (0..1_000).filter(|i| l.admit(i * MS).is_some()).count();
        assert_eq!(logged, 10);
        assert_eq!(l.pending(), 990);
        // The next window's first line carries the count; the counter restarts.
        assert_eq!(l.admit(1_000 * MS), Some(990));
        assert_eq!(l.pending(), 0);
        assert_eq!(l.admit(1_001 * MS), Some(0));
    }

    #[test]
    fn a_sustained_flood_logs_n_lines_per_second() {
        let mut l = LogLimiter::new(5);
        let mut lines = 0u64;
        let mut reported = 0u64;
        // 10 s of 10 000 events/s.
        for i in 0..100_000u64 {
            if let Some(k) = l.admit(i * 100_000) {
                lines += 1 + u64::from(k > 0);
                reported += k;
            }
        }
        assert_eq!(
            lines,
            5 * 10 + 9,
            "5 a second plus one count line per later second"
        );
        assert_eq!(
            reported + l.pending() + 50,
            100_000,
            "every event is accounted for"
        );
    }

    #[test]
    fn flush_reports_a_burst_that_stopped() {
        let mut l = LogLimiter::new(1);
        assert_eq!(l.admit(0), Some(0));
        assert_eq!(l.admit(MS), None);
        assert_eq!(l.admit(2 * MS), None);
        assert_eq!(l.flush(500 * MS), None, "the window is not over");
        assert_eq!(l.flush(1_000 * MS), Some(2));
        assert_eq!(l.flush(5_000 * MS), None, "reported once");
        assert_eq!(l.admit(5_000 * MS), Some(0));
    }

    #[test]
    fn zero_means_silence_but_counting() {
        let mut l = LogLimiter::new(0);
        assert_eq!(l.admit(0), None);
        assert_eq!(l.admit(WINDOW_NS), None);
        assert_eq!(l.flush(3 * WINDOW_NS), Some(2));
    }
}
