//! The arithmetic of a benchmark run: loss, the zero-loss rate search, latency summaries.
//!
//! Pure functions and a sans-IO search state machine, so the numbers the bench publishes
//! are unit-tested apart from any traffic.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest loss ratio a trial may show and still count as "zero loss" (0.001 %, the
/// threshold of the bench issue; RFC 2544 uses strictly zero, which a shared 2-core VM
/// cannot hold for one packet in ten million).
pub const ZERO_LOSS_RATIO: f64 = 0.000_01;

/// Fraction of `sent` packets that did not arrive. `received > sent` (duplicates) counts
/// as no loss; nothing sent is no loss.
pub fn loss_ratio(sent: u64, received: u64) -> f64 {
    if sent == 0 || received >= sent {
        0.0
    } else {
        (sent - received) as f64 / sent as f64
    }
}

/// Binary search for the highest offered rate whose trial loses at most
/// [`ZERO_LOSS_RATIO`] (RFC 2544 §26.1 throughput, with a loss tolerance).
///
/// Drive it with [`RateSearch::next_rate`], run a trial at that rate, report it with
/// [`RateSearch::record`]; repeat until `next_rate` returns `None`, then read
/// [`RateSearch::result`].
#[derive(Debug, Clone)]
pub struct RateSearch {
    /// Highest rate seen passing (or the floor, untested, before any pass).
    lo: f64,
    /// Lowest rate seen failing (or the ceiling, untested).
    hi: f64,
    passed_any: bool,
    tested_hi: bool,
    resolution: f64,
    trials_left: u32,
}

impl RateSearch {
    /// Searches `[min, max]` packets/s until the bracket is narrower than `resolution`
    /// (a fraction of the upper bound, e.g. 0.05) or `max_trials` trials were run. The
    /// first trial is at `max`: a relay that keeps up with the generator's ceiling needs
    /// no search.
    pub fn new(min: f64, max: f64, resolution: f64, max_trials: u32) -> RateSearch {
        RateSearch {
            lo: min.min(max),
            hi: max,
            passed_any: false,
            tested_hi: false,
            resolution,
            trials_left: max_trials,
        }
    }

    /// The rate of the next trial, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.trials_left == 0 {
            return None;
        }
        if !self.tested_hi {
            return Some(self.hi);
        }
        if !self.passed_any {
            // Nothing passed yet: test the floor itself once before bisecting above it.
            return Some(self.lo);
        }
        if (self.hi - self.lo) <= self.resolution * self.hi {
            return None;
        }
        Some((self.lo + self.hi) / 2.0)
    }

    /// Reports the trial at `rate`: `loss` is its loss ratio.
    pub fn record(&mut self, rate: f64, loss: f64) {
        self.trials_left = self.trials_left.saturating_sub(1);
        let pass = loss <= ZERO_LOSS_RATIO;
        if !self.tested_hi {
            self.tested_hi = true;
            if pass {
                self.lo = rate;
                self.hi = rate;
                self.passed_any = true;
                self.trials_left = 0; // the whole range passes
            } else {
                self.hi = rate;
            }
            return;
        }
        if pass {
            self.passed_any = true;
            self.lo = self.lo.max(rate);
            if rate >= self.hi {
                // A pass at or above the bracket's top (a trial that achieved less than it
                // was offered reports what it achieved): nothing left to search.
                self.hi = rate;
                self.trials_left = 0;
            }
        } else if !self.passed_any && rate <= self.lo {
            // Even the floor loses: the answer is "below the floor".
            self.hi = rate;
            self.trials_left = 0;
        } else {
            self.hi = self.hi.min(rate);
        }
    }

    /// The highest rate that passed, if any did.
    pub fn result(&self) -> Option<f64> {
        self.passed_any.then_some(self.lo)
    }
}

/// Percentiles of a latency histogram (nanoseconds in, microseconds out).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LatencySummary {
    /// Samples in the histogram.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest sample, µs.
    pub max_us: f64,
}

/// A histogram for one-way latencies in nanoseconds: 100 ns to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts: this cannot fail.
    Histogram::new_with_bounds(100, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Adds every sample of `part` into `total` (per-thread histograms merged for the report).
/// Samples beyond `total`'s range are clamped to its maximum rather than dropped.
pub fn merge(total: &mut Histogram<u64>, part: &Histogram<u64>) {
    if total.add(part).is_err() {
        for v in part.iter_recorded() {
            let value = v.value_iterated_to().min(total.high());
            total.saturating_record_n(value, v.count_at_value());
        }
    }
}

/// Summarizes a histogram of nanoseconds.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    LatencySummary {
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

/// CPU nanoseconds per packet, or `None` without packets.
pub fn ns_per_packet(cpu_ns: u64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| cpu_ns as f64 / packets as f64)
}

/// Resident memory added per call, KiB, or `None` without calls. A shrinking RSS counts
/// as zero.
pub fn kib_per_call(rss_before_kib: u64, rss_after_kib: u64, calls: u64) -> Option<f64> {
    (calls > 0).then(|| rss_after_kib.saturating_sub(rss_before_kib) as f64 / calls as f64)
}

/// Packets a line of `gbit_per_s` carries per second for IP packets of `ip_bytes`, counting
/// what Ethernet adds on the wire: 14 header + 4 FCS + 8 preamble/SFD + 12 inter-frame gap.
pub fn line_rate_pps(gbit_per_s: f64, ip_bytes: u32) -> f64 {
    let wire_bytes = (ip_bytes + 14 + 4 + 8 + 12) as f64;
    gbit_per_s * 1e9 / (wire_bytes * 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_arithmetic() {
        assert_eq!(loss_ratio(0, 0), 0.0);
        assert_eq!(loss_ratio(100, 100), 0.0);
        assert_eq!(loss_ratio(100, 101), 0.0);
        assert_eq!(loss_ratio(200, 150), 0.25);
        // The threshold: 1 in 100 000 passes, 2 do not.
        assert!(loss_ratio(100_000, 99_999) <= ZERO_LOSS_RATIO);
        assert!(loss_ratio(100_000, 99_998) > ZERO_LOSS_RATIO);
    }

    /// Runs a search against a relay that loses everything above `capacity`.
    fn search(capacity: f64, min: f64, max: f64) -> (Option<f64>, Vec<f64>) {
        let mut s = RateSearch::new(min, max, 0.02, 30);
        let mut rates = Vec::new();
        while let Some(rate) = s.next_rate() {
            rates.push(rate);
            let loss = if rate <= capacity { 0.0 } else { 0.1 };
            s.record(rate, loss);
        }
        (s.result(), rates)
    }

    #[test]
    fn search_converges_on_capacity() {
        let (found, rates) = search(333_000.0, 10_000.0, 1_000_000.0);
        let found = found.unwrap();
        assert!((333_000.0 * 0.97..=333_000.0).contains(&found), "{found}");
        assert_eq!(rates[0], 1_000_000.0, "starts at the ceiling");
        assert_eq!(rates[1], 10_000.0, "then proves the floor");
        assert!(rates.len() < 12, "{rates:?}");
    }

    #[test]
    fn search_everything_passes_or_fails() {
        assert_eq!(
            search(f64::MAX, 1000.0, 50_000.0),
            (Some(50_000.0), vec![50_000.0])
        );
        let (found, rates) = search(10.0, 1000.0, 50_000.0);
        assert_eq!(found, None);
        assert_eq!(rates, vec![50_000.0, 1000.0]);
    }

    #[test]
    fn search_with_a_capped_generator_reports_what_was_achieved() {
        // The generator reaches only 250 kpps: the trial at 2 Mpps passes at 250 kpps.
        let mut s = RateSearch::new(100_000.0, 2_000_000.0, 0.05, 10);
        assert_eq!(s.next_rate(), Some(2_000_000.0));
        s.record(250_000.0, 0.0);
        assert_eq!(s.next_rate(), None);
        assert_eq!(s.result(), Some(250_000.0));
        // Later in a search: a pass achieved at or above the bracket's top ends it.
        let mut s = RateSearch::new(100_000.0, 2_000_000.0, 0.01, 10);
        s.record(2_000_000.0, 0.5); // hi = 2M
        s.record(100_000.0, 0.0); // floor passes
        let mid = s.next_rate().unwrap();
        s.record(mid, 0.0);
        let next = s.next_rate().unwrap();
        s.record(next.min(1_600_000.0), 0.0);
        assert!(
            s.next_rate().is_some(),
            "1.6M is below hi = 2M: keep searching"
        );
    }

    #[test]
    fn search_stops_after_max_trials() {
        let mut s = RateSearch::new(1.0, 1e9, 0.0, 5);
        let mut n = 0;
        while let Some(r) = s.next_rate() {
            s.record(r, if r < 12345.0 { 0.0 } else { 1.0 });
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(s.result().unwrap() < 12345.0);
    }

    #[test]
    fn histogram_merge_and_summary() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        for i in 1..=900u64 {
            a.record(i * 1000).unwrap(); // 1..900 µs
        }
        for i in 901..=1000u64 {
            b.record(i * 1000).unwrap(); // 901..1000 µs
        }
        let mut total = latency_histogram();
        merge(&mut total, &a);
        merge(&mut total, &b);
        let s = summarize(&total);
        assert_eq!(s.samples, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.p999_us - 999.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(summarize(&latency_histogram()), LatencySummary::default());
    }

    #[test]
    fn merge_clamps_out_of_range_samples() {
        let mut small = Histogram::<u64>::new_with_bounds(1, 1000, 3).unwrap();
        let mut big = latency_histogram();
        big.record(5_000_000).unwrap();
        merge(&mut small, &big);
        assert_eq!(small.len(), 1);
        assert!(small.max() >= 1000);
    }

    #[test]
    fn per_packet_and_per_call() {
        assert_eq!(ns_per_packet(1_000_000, 0), None);
        assert_eq!(ns_per_packet(1_000_000, 4000), Some(250.0));
        assert_eq!(kib_per_call(10_000, 26_000, 1000), Some(16.0));
        assert_eq!(kib_per_call(10_000, 9_000, 10), Some(0.0));
        assert_eq!(kib_per_call(1, 2, 0), None);
    }

    #[test]
    fn line_rate() {
        // 200-byte IP packets take 238 bytes on the wire: 10 GbE carries ~5.25 Mpps.
        let pps = line_rate_pps(10.0, 200);
        assert!((pps - 5_252_100.0).abs() < 100.0, "{pps}");
        assert!((line_rate_pps(100.0, 200) / pps - 10.0).abs() < 1e-9);
    }
}
