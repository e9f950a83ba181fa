//! Per model-version statistics in the shape of Triton's statistics
//! extension, fed from the same events as the Prometheus metrics.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::telemetry::{FailureReason, VersionMetrics};

/// A count and the total time spent, like Triton's `StatisticDuration`.
#[derive(Default)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    fn add(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64 * n, Relaxed);
    }
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// Per batch size (in rows): executions and their compute times.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchStat {
    pub count: u64,
    pub input_ns: u64,
    pub infer_ns: u64,
    pub output_ns: u64,
}

pub struct VersionStats {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    /// Answered from the response cache, and looked up there in vain.
    pub cache_hit: DurationStat,
    pub cache_miss: DurationStat,
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last completed request.
    pub last_inference_ms: AtomicU64,
    /// Requests dropped from the queue because their client had gone.
    pub cancelled: AtomicU64,
    batches: Mutex<BTreeMap<u64, BatchStat>>,
    metrics: VersionMetrics,
}

impl VersionStats {
    pub fn new(model: &str, version: u64) -> VersionStats {
        VersionStats {
            success: DurationStat::default(),
            fail: DurationStat::default(),
            queue: DurationStat::default(),
            compute_input: DurationStat::default(),
            compute_infer: DurationStat::default(),
            compute_output: DurationStat::default(),
            cache_hit: DurationStat::default(),
            cache_miss: DurationStat::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            batches: Mutex::new(BTreeMap::new()),
            metrics: VersionMetrics::new(model, version),
        }
    }

    /// A request was accepted onto the queue.
    pub fn enqueued(&self) {
        self.metrics.pending(1);
    }

    /// A request counted by `enqueued` was refused by the queue after all.
    pub fn refused(&self) {
        self.metrics.pending(-1);
    }

    /// A request left the queue: run, timed out or cancelled.
    pub fn dequeued(&self, waited: Duration) {
        self.metrics.pending(-1);
        self.queue.add(1, waited);
        self.metrics.queued(waited);
    }

    /// A response cache lookup: hits and misses add up to the lookups,
    /// exactly; `took` is the cache's part (lookup, and the store on a miss).
    pub fn cache_lookup(&self, hit: bool, took: Duration) {
        match hit {
            true => self.cache_hit.add(1, took),
            false => self.cache_miss.add(1, took),
        }
        self.metrics.cache_lookup(hit, took);
    }

    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
        self.metrics.cancelled();
    }

    /// One execution of `requests` requests totalling `rows` rows.
    pub fn batch(&self, requests: usize, rows: usize, input: Duration, infer: Duration, output: Duration) {
        let n = requests as u64;
        self.execution_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(rows as u64, Relaxed);
        self.compute_input.add(n, input);
        self.compute_infer.add(n, infer);
        self.compute_output.add(n, output);
        if let Ok(mut b) = self.batches.lock() {
            let s = b.entry(rows as u64).or_default();
            s.count += 1;
            s.input_ns += input.as_nanos() as u64;
            s.infer_ns += infer.as_nanos() as u64;
            s.output_ns += output.as_nanos() as u64;
        }
        self.metrics.batch_done(requests, rows, input, infer, output);
    }

    /// A request finished, end to end as the engine saw it.
    pub fn request(&self, outcome: Result<(), FailureReason>, elapsed: Duration) {
        match outcome {
            Ok(()) => self.success.add(1, elapsed),
            Err(_) => self.fail.add(1, elapsed),
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_inference_ms.store(now_ms, Relaxed);
        self.metrics.request_done(outcome, elapsed);
    }

    pub fn batch_stats(&self) -> BTreeMap<u64, BatchStat> {
        self.batches.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// A copy of one version's statistics at one moment, for the endpoints.
pub struct StatsSnapshot {
    pub name: String,
    pub version: u64,
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: (u64, u64),
    pub fail: (u64, u64),
    pub queue: (u64, u64),
    pub compute_input: (u64, u64),
    pub compute_infer: (u64, u64),
    pub compute_output: (u64, u64),
    pub cache_hit: (u64, u64),
    pub cache_miss: (u64, u64),
    pub batches: BTreeMap<u64, BatchStat>,
}

impl VersionStats {
    pub fn snapshot(&self, name: &str, version: u64) -> StatsSnapshot {
        StatsSnapshot {
            name: name.to_owned(),
            version,
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            success: self.success.get(),
            fail: self.fail.get(),
            queue: self.queue.get(),
            compute_input: self.compute_input.get(),
            compute_infer: self.compute_infer.get(),
            compute_output: self.compute_output.get(),
            cache_hit: self.cache_hit.get(),
            cache_miss: self.cache_miss.get(),
            batches: self.batch_stats(),
        }
    }
}
