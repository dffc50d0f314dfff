//! Rate limiting and truncation for log lines about refused input, sans-IO.
//!
//! Anyone who can reach the SIP port can send garbage as fast as the link allows; a log line
//! per refused packet would let them fill the disk and drown every other line. So each kind of
//! refusal gets a [`RateLimiter`] (at most `burst` lines per `window`; the events it drops are
//! counted and the count is reported on the next line that is logged), and peer bytes only
//! ever reach a log line through [`excerpt`] (at most a few hundred bytes, escaped).
//!
//! Nothing here reads a clock: the caller passes `now` to [`RateLimiter::check`].

use std::time::{Duration, Instant};

/// At most `burst` events per fixed `window` are let through; the rest are counted.
///
/// Windows are fixed, not sliding: the first event at or after `window_start + window`
/// starts a new one. The suppressed count is handed out with the first event let through
/// after the suppression, so a quiet period after a flood reports nothing until the next event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimiter {
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
    /// (it is counted for the next `Some`). A `now` earlier than a previous one is treated as
    /// the same instant.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.window,
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

    /// Events suppressed since the last one let through.
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
        let t0 = Instant::now();
        let mut l = RateLimiter::new(5, Duration::from_secs(1));
        // 10 000 events spread over 10 s: at most 5 per second get through
        let logged = (0..10_000u64)
            .filter(|i| l.check(t0 + Duration::from_millis(*i)).is_some())
            .count();
        assert_eq!(logged, 50);
        // the clock going backwards does not open a new window
        let mut l = RateLimiter::new(1, Duration::from_secs(1));
        assert_eq!(l.check(t0 + Duration::from_secs(5)), Some(0));
        assert_eq!(l.check(t0), None);
    }

    #[test]
    fn zero_burst_never_logs() {
        let mut l = RateLimiter::new(0, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.check(t0), None);
        assert_eq!(l.check(t0 + Duration::from_secs(10)), None);
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
