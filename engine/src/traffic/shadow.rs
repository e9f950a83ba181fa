//! Shadow traffic: a share of routed requests is also run on a shadow
//! variant after the primary has answered; the shadow's outputs are compared
//! with the primary's and discarded. The primary never waits for it, and
//! shadow work is the first to go under load: it is skipped when the shadow
//! version's queue is a quarter full or too many shadow runs are in flight.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, counter, gauge};
use quiver_runtimes::Tensor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::{ShadowSpec, Tolerance};
use crate::compare;
use crate::model::ModelVersion;
use crate::telemetry;

/// Shadow runs in flight per policy before more are dropped.
const MAX_IN_FLIGHT: usize = 64;

pub struct Shadow {
    /// The shadow variant's index in the policy.
    pub index: usize,
    percent: f64,
    pub tolerance: Tolerance,
    next: AtomicU64,
    in_flight: Arc<Semaphore>,
    pub compared: AtomicU64,
    pub mismatches: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    max_abs_bits: AtomicU64,
    m_requests: Counter,
    m_mismatches: Counter,
    m_dropped: Counter,
    m_max_abs: Gauge,
}

impl Shadow {
    pub fn new(model: &str, spec: &ShadowSpec, index: usize) -> Shadow {
        let labels = [("model", model.to_owned()), ("variant", spec.variant.clone())];
        Shadow {
            index,
            percent: spec.percent,
            tolerance: spec.tolerance,
            next: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            compared: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            max_abs_bits: AtomicU64::new(0f64.to_bits()),
            m_requests: counter!(telemetry::SHADOW_REQUESTS, &labels),
            m_mismatches: counter!(telemetry::SHADOW_MISMATCHES, &labels),
            m_dropped: counter!(telemetry::SHADOW_DROPPED, &labels),
            m_max_abs: gauge!(telemetry::SHADOW_MAX_ABS_DIFF, &labels),
        }
    }

    /// Whether this request is shadowed: exactly `percent` of requests,
    /// spread evenly (request n is when floor((n+1)p/100) > floor(np/100)).
    pub fn wanted(&self) -> bool {
        if self.percent <= 0.0 {
            return false;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.percent / 100.0).floor() > (n * self.percent / 100.0).floor()
    }

    /// A slot for one shadow run on `target`, or `None` (counted as
    /// dropped) when the target is busy or enough shadow runs are in flight.
    pub fn reserve(&self, target: &ModelVersion) -> Option<OwnedSemaphorePermit> {
        let capacity = target.scheduler.queue_config().capacity.max(1);
        let busy = target.scheduler.queued() * 4 >= capacity;
        let permit = match busy {
            true => None,
            false => Arc::clone(&self.in_flight).try_acquire_owned().ok(),
        };
        if permit.is_none() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.m_dropped.increment(1);
        }
        permit
    }

    /// Records one comparison of the shadow's outputs with the primary's.
    pub fn compare(&self, primary: &[Tensor], shadow: Result<Vec<Tensor>, String>) {
        self.m_requests.increment(1);
        let shadow = match shadow {
            Ok(s) => s,
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                self.m_mismatches.increment(1);
                return;
            }
        };
        self.compared.fetch_add(1, Ordering::Relaxed);
        if compare::compare(&shadow, primary, self.tolerance).is_err() {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
            self.m_mismatches.increment(1);
        }
        if let Some(d) = max_abs_difference(primary, &shadow) {
            let mut current = self.max_abs_bits.load(Ordering::Relaxed);
            while d > f64::from_bits(current) {
                match self.max_abs_bits.compare_exchange_weak(
                    current,
                    d.to_bits(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.m_max_abs.set(d);
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        }
    }

    pub fn max_abs_difference(&self) -> f64 {
        f64::from_bits(self.max_abs_bits.load(Ordering::Relaxed))
    }
}

/// The largest |a - b| over the numeric outputs both have with one shape.
fn max_abs_difference(a: &[Tensor], b: &[Tensor]) -> Option<f64> {
    let mut max: Option<f64> = None;
    for x in a {
        let Some(y) = b.iter().find(|y| y.name == x.name && y.shape == x.shape) else {
            continue;
        };
        let (Ok(xs), Ok(ys)) = (compare::numbers(x), compare::numbers(y)) else {
            continue;
        };
        for (p, q) in xs.iter().zip(&ys) {
            let d = (p - q).abs();
            max = Some(max.map_or(d, |m: f64| m.max(d)));
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_exact_and_spread() {
        let spec = ShadowSpec {
            variant: "c".into(),
            percent: 25.0,
            tolerance: Tolerance { atol: 0.0, rtol: 0.0 },
        };
        let s = Shadow::new("m", &spec, 1);
        let picks: Vec<bool> = (0..1000).map(|_| s.wanted()).collect();
        assert_eq!(picks.iter().filter(|p| **p).count(), 250);
        assert!(picks.chunks(4).all(|c| c.iter().filter(|p| **p).count() == 1));
    }
}
