//! Per-variant counts and latencies: cumulative atomics on the request path
//! (no lock), read as snapshots; the difference of two snapshots is a window
//! (a rollout step, or the time since the policy was set) with its error
//! rate and latency quantiles.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use crate::telemetry;

/// Latency buckets of the windows: 10 µs growing by 10% per bucket (170
/// buckets reach 100 s). Fine enough that a quantile is within 10% of the
/// truth, so a p99 ratio does not jump on a bucket edge the way the
/// exported histogram's coarse buckets would.
const FIRST: f64 = 1e-5;
const GROWTH: f64 = 1.1;
const BUCKETS: usize = 170;

fn bucket_of(secs: f64) -> usize {
    if secs <= FIRST {
        return 0;
    }
    (((secs / FIRST).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> f64 {
    FIRST * GROWTH.powi(bucket as i32)
}

/// One variant's live record, kept across weight changes of its policy.
pub struct VariantStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per latency bucket (see `bucket_of`).
    buckets: Vec<AtomicU64>,
    ok: Counter,
    failed: Counter,
    seconds: Histogram,
}

impl VariantStats {
    pub fn new(model: &str, variant: &str) -> VariantStats {
        let labels = |outcome: &'static str| counter!(telemetry::VARIANT_REQUESTS, "model" => model.to_owned(), "variant" => variant.to_owned(), "outcome" => outcome);
        VariantStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            ok: labels("success"),
            failed: labels("failure"),
            seconds: histogram!(telemetry::VARIANT_SECONDS, "model" => model.to_owned(), "variant" => variant.to_owned()),
        }
    }

    pub fn record(&self, ok: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        self.buckets[bucket_of(secs)].fetch_add(1, Ordering::Relaxed);
        self.seconds.record(secs);
        if ok {
            self.ok.increment(1);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.failed.increment(1);
        }
    }

    /// A request that failed before it could run (no ready version).
    pub fn refused(&self) {
        self.record(false, Duration::ZERO);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// Cumulative counts at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub requests: u64,
    pub errors: u64,
    pub buckets: Vec<u64>,
}

impl Snapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - earlier.requests.min(self.requests),
            errors: self.errors - earlier.errors.min(self.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b - earlier.buckets.get(i).copied().unwrap_or(0).min(*b))
                .collect(),
        }
    }

    pub fn error_rate(&self) -> f64 {
        match self.requests {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }

    /// The `q` quantile in seconds: the upper bound of the bucket it falls
    /// in (at most 10% above the true value); `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_have_rates_and_quantiles() {
        let s = VariantStats::new("m", "v");
        let start = s.snapshot();
        for _ in 0..98 {
            s.record(true, Duration::from_micros(300));
        }
        s.record(false, Duration::from_millis(40));
        s.record(false, Duration::from_millis(40));
        let w = s.snapshot().since(&start);
        assert_eq!((w.requests, w.errors), (100, 2));
        assert!((w.error_rate() - 0.02).abs() < 1e-12);
        let near = |q: Option<f64>, want: f64| q.is_some_and(|v| v >= want && v <= want * 1.1);
        assert!(near(w.quantile(0.5), 0.0003), "{:?}", w.quantile(0.5));
        assert!(near(w.quantile(0.99), 0.04), "{:?}", w.quantile(0.99));
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        assert_eq!(Snapshot::default().quantile(0.5), None);
    }
}
