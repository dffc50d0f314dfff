//! Log lines that peers can cause, kept bounded: a [`RateLimiter`] per kind of refusal (at
//! most `burst` lines per window; the events it drops are counted and the count is reported on
//! the next line logged, or by [`RateLimiter::flush`] from a timer), and [`excerpt`] for peer
//! bytes (at most a few hundred bytes, escaped) so a log line never carries raw input.
//!
//! Anyone who can reach the SIP or NG port can send garbage as fast as the link allows; a log
//! line per refused packet would let them fill the disk and drown every other line. Used by
//! sipctl (refused SIP) and the recorder (refused NG requests, socket errors).
//!
//! Sans-IO: nothing here reads a clock. Time is whatever the caller has, an [`Instant`] or
//! monotonic nanoseconds (`u64`), passed to every call.
//!
//! ```
//! use std::time::Duration;
//! use linecord_ratelimit::RateLimiter;
//!
//! let mut l = RateLimiter::new(2, Duration::from_secs(1));
//! assert_eq!(l.check(0u64), Some(0)); // log it
//! assert_eq!(l.check(1), Some(0));
//! assert_eq!(l.check(2), None); // suppressed, counted
//! // A second later: log again, after saying that one line was suppressed.
//! assert_eq!(l.check(1_000_000_000), Some(1));
//! ```

use std::time::{Duration, Instant};

/// A monotonic time the limiter can measure windows with.
pub trait Monotonic: Copy {
    /// Time from `earlier` to `self`; zero if `earlier` is later (a clock going backwards
    /// never opens a new window).
    fn since(self, earlier: Self) -> Duration;
}

impl Monotonic for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Monotonic nanoseconds since any fixed epoch.
impl Monotonic for u64 {
    fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.saturating_sub(earlier))
    }
}

/// At most `burst` events per fixed `window` are let through; the rest are counted.
///
/// Windows are fixed, not sliding: the first event at or after `window_start + window`
/// starts a new one. The suppressed count is handed out with the first event let through
/// after the suppression, or by [`flush`](Self::flush) once the window is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiter<T> {
    burst: u32,
    window: Duration,
    window_start: Option<T>,
    used: u32,
    suppressed: u64,
}

impl<T: Monotonic> RateLimiter<T> {
    /// A limiter letting `burst` events through per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimiter {
            burst,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Call once per event, at `now`. `Some(k)`: log this event, and say that `k` events
    /// were suppressed since the last one that was logged (usually 0). `None`: do not log it
    /// (it is counted for the next `Some`).
    pub fn check(&mut self, now: T) -> Option<u64> {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.since(start) >= self.window,
        };
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }

    /// Suppressed events not reported yet, once their window is over: `Some(k)` means "log
    /// that k events were suppressed". Call from a timer (about once a window), so a flood
    /// that stops is still accounted for.
    pub fn flush(&mut self, now: T) -> Option<u64> {
        let over = self
            .window_start
            .is_some_and(|start| now.since(start) >= self.window);
        if self.suppressed == 0 || !over {
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Events suppressed and not reported yet.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// Peer input made fit for a log line: the first `max` bytes of `input` with everything
/// but printable ASCII escaped (`\r`, `\n`, `\t`, `\\`, `\"`, `\xNN`), and `…(+N bytes)`
/// when `input` was longer. The result never contains a control character.
pub fn excerpt(input: &[u8], max: usize) -> String {
    let shown = input.get(..max).unwrap_or(input);
    let mut out = shown.escape_ascii().to_string();
    if input.len() > shown.len() {
        out.push_str(&format!("…(+{} bytes)", input.len() - shown.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_then_report_the_count() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(3, Duration::from_secs(1));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(l.check(at(0)), Some(0));
        assert_eq!(l.check(at(10)), Some(0));
        assert_eq!(l.check(at(20)), Some(0));
        // the window is full: the next 100 are counted, not let through
        for i in 0..100 {
            assert_eq!(l.check(at(30 + i)), None);
        }
        assert_eq!(l.suppressed(), 100);
        // a new window: the first event carries the count, then it starts over
        assert_eq!(l.check(at(1000)), Some(100));
        assert_eq!(l.suppressed(), 0);
        assert_eq!(l.check(at(1001)), Some(0));
        assert_eq!(l.check(at(1002)), Some(0));
        assert_eq!(l.check(at(1003)), None);
        assert_eq!(l.check(at(5000)), Some(1));
    }

    #[test]
    fn a_flood_is_bounded_per_window() {
        let mut l = RateLimiter::new(5, Duration::from_secs(1));
        // 10 000 events spread over 10 s: at most 5 per second get through
        let logged = (0..10_000u64)
            .filter(|i| l.check(i * 1_000_000).is_some())
            .count();
        assert_eq!(logged, 50);
        // the clock going backwards does not open a new window
        let mut l = RateLimiter::new(1, Duration::from_secs(1));
        assert_eq!(l.check(5_000_000_000u64), Some(0));
        assert_eq!(l.check(0), None);
    }

    #[test]
    fn flush_reports_a_flood_that_stopped_once_its_window_is_over() {
        let mut l = RateLimiter::new(1, Duration::from_secs(1));
        assert_eq!(l.flush(0u64), None, "nothing yet");
        assert_eq!(l.check(0), Some(0));
        assert_eq!(l.check(1), None);
        assert_eq!(l.check(2), None);
        assert_eq!(l.flush(500_000_000), None, "window still open");
        assert_eq!(l.flush(1_000_000_000), Some(2));
        assert_eq!(l.flush(2_000_000_000), None, "reported once");
        assert_eq!(l.suppressed(), 0);
    }

    #[test]
    fn zero_burst_never_logs() {
        let mut l = RateLimiter::new(0, Duration::from_secs(1));
        assert_eq!(l.check(0u64), None);
        assert_eq!(l.check(10_000_000_000), None);
        assert_eq!(l.suppressed(), 2);
    }

    #[test]
    fn excerpts_are_escaped_and_truncated() {
        assert_eq!(excerpt(b"OPTIONS sip:x", 200), "OPTIONS sip:x");
        assert_eq!(
            excerpt(b"a\r\n\x00\x1b[2J\xc3\xa9\"", 200),
            "a\\r\\n\\x00\\x1b[2J\\xc3\\xa9\\\""
        );
        let long = vec![b'x'; 1000];
        let e = excerpt(&long, 200);
        assert!(e.starts_with(&"x".repeat(200)));
        assert!(e.ends_with("…(+800 bytes)"), "{e}");
        assert_eq!(excerpt(b"", 200), "");
        for b in 0..=255u8 {
            let e = excerpt(&[b; 4], 200);
            assert!(!e.chars().any(char::is_control), "{b:#x}: {e:?}");
        }
    }
}
