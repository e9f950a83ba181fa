//! Per-variant counts and latencies: cumulative atomics on the request path
//! (no lock), read as snapshots; the difference of two snapshots is a window
//! (a rollout step, or the time since the policy was set) with its error
//! rate and latency quantiles.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use crate::telemetry::{self, LATENCY_BUCKETS};

/// One variant's live record, kept across weight changes of its policy.
pub struct VariantStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Requests per latency bucket (`LATENCY_BUCKETS`, then +Inf).
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
            buckets: (0..=LATENCY_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            ok: labels("success"),
            failed: labels("failure"),
            seconds: histogram!(telemetry::VARIANT_SECONDS, "model" => model.to_owned(), "variant" => variant.to_owned()),
        }
    }

    pub fn record(&self, ok: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|&b| b < secs);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
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
    /// in (as Prometheus's histogram_quantile bounds it); `None` without
    /// requests, infinity past the last bucket.
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
                return Some(LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
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
        assert_eq!(w.quantile(0.5), Some(0.0005));
        assert_eq!(w.quantile(0.99), Some(0.05));
        assert_eq!(Snapshot::default().quantile(0.5), None);
    }
}
