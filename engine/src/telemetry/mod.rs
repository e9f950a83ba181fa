//! The metrics the engine records: model and version series (Triton's
//! `nv_inference_*` names, labels `model` and `version`, so existing
//! dashboards work unchanged, plus real histograms), model lifecycle,
//! sources, the validation gate, traffic splitting and admission. Names,
//! units, labels and buckets of these series live here; the front ends'
//! own series (HTTP, gRPC, connections) and the exporter live in the server.
mod names;
mod versions;

pub use names::*;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use metrics::{Gauge, counter, gauge, histogram};

/// The series of one model version, made once at load so the request path
/// does no label lookups; they leave `/metrics` when the version retires
/// ([`versions`]).
pub struct VersionMetrics {
    series: std::sync::Arc<versions::Series>,
}

impl VersionMetrics {
    pub fn new(model: &str, version: u64) -> VersionMetrics {
        VersionMetrics {
            series: versions::series(model, version),
        }
    }

    pub fn request_done(&self, outcome: Result<(), FailureReason>, elapsed: Duration) {
        let s = &self.series;
        match outcome {
            Ok(()) => s.success.fetch_add(1, Relaxed),
            Err(reason) => s.failure[reason as usize].fetch_add(1, Relaxed),
        };
        s.request_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
        s.request_seconds.record(elapsed.as_secs_f64());
    }

    /// A lookup of the response cache: a hit (answered from it) or a miss
    /// (looked up, computed, stored), with the cache's part of the time.
    pub fn cache_lookup(&self, hit: bool, took: Duration) {
        let s = &self.series;
        let us = took.as_micros() as u64;
        if hit {
            s.cache_hits.fetch_add(1, Relaxed);
            s.cache_hit_us.fetch_add(us, Relaxed);
        } else {
            s.cache_misses.fetch_add(1, Relaxed);
            s.cache_miss_us.fetch_add(us, Relaxed);
        }
    }

    pub fn queued(&self, wait: Duration) {
        self.series.queue_us.fetch_add(wait.as_micros() as u64, Relaxed);
        self.series.queue_seconds.record(wait.as_secs_f64());
    }

    pub fn batch_done(&self, requests: usize, rows: usize, input: Duration, infer: Duration, output: Duration) {
        let s = &self.series;
        let per_request = |d: Duration| d.as_micros() as u64 * requests as u64;
        s.exec_count.fetch_add(1, Relaxed);
        s.inference_count.fetch_add(rows as u64, Relaxed);
        s.batch_size.record(rows as f64);
        s.compute_input_us.fetch_add(per_request(input), Relaxed);
        s.compute_infer_us.fetch_add(per_request(infer), Relaxed);
        s.compute_output_us.fetch_add(per_request(output), Relaxed);
        s.compute_seconds.record((input + infer + output).as_secs_f64());
    }

    pub fn pending(&self, delta: i64) {
        self.series.pending.fetch_add(delta, Relaxed);
    }

    pub fn cancelled(&self) {
        self.series.cancelled.fetch_add(1, Relaxed);
    }
}

/// The in-flight gauges (bytes, requests), with the limits exported beside them.
pub fn admission_gauges(max_bytes: usize, max_requests: usize) -> (Gauge, Gauge) {
    gauge!(ADMISSION_BYTES_LIMIT).set(max_bytes as f64);
    gauge!(ADMISSION_REQUESTS_LIMIT).set(max_requests as f64);
    (gauge!(ADMISSION_BYTES), gauge!(ADMISSION_REQUESTS))
}

/// A load (or reload) of a model finished, ready or failed.
pub fn model_loaded(model: &str, ok: bool, elapsed: Duration) {
    histogram!(MODEL_LOAD_SECONDS, "model" => model.to_owned()).record(elapsed.as_secs_f64());
    let outcome = if ok { "success" } else { "failure" };
    counter!(MODEL_LOADS, "model" => model.to_owned(), "outcome" => outcome).increment(1);
}

/// A load replaced serving versions with new ones.
pub fn model_swapped(model: &str) {
    counter!(MODEL_SWAPS, "model" => model.to_owned()).increment(1);
}

pub fn model_unloaded(model: &str) {
    counter!(MODEL_UNLOADS, "model" => model.to_owned()).increment(1);
}

/// A source (`object_store`, `mlflow`) could not be read; `model` is empty
/// for a whole repository. The message goes to the log, never a label.
pub fn source_error(source: &'static str, model: &str) {
    counter!(SOURCE_ERRORS, "source" => source, "model" => model.to_owned()).increment(1);
}

/// Poll mode finished a scan of the repository folder (`folder`) or a
/// sync of its mirror (`object_store`): a poller that stopped shows here.
pub fn repository_polled(source: &'static str) {
    counter!(REPOSITORY_POLLS, "source" => source).increment(1);
}

/// Objects a source downloaded (changed or new ones only) and their bytes.
/// A new version failed a check of the validation gate (`golden`,
/// `latency`, `deviation`, `golden_set`) and was not switched in.
pub fn validation_failed(model: &str, check: &'static str) {
    counter!(VALIDATION_FAILURES, "model" => model.to_owned(), "check" => check).increment(1);
}

pub fn validation_passed(model: &str) {
    counter!(VALIDATION_PASSES, "model" => model.to_owned()).increment(1);
}

/// Appends the live versions' series to a Prometheus text exposition.
pub fn render_versions(out: &mut String) {
    versions::render(out);
}

/// The local response cache after a store: what it holds, and what it
/// evicted to make room.
pub fn cache_usage(entries: usize, bytes: usize, capacity: usize, evicted: u64) {
    gauge!(CACHE_ENTRIES).set(entries as f64);
    gauge!(CACHE_BYTES).set(bytes as f64);
    gauge!(CACHE_CAPACITY_BYTES).set(capacity as f64);
    if evicted > 0 {
        counter!(CACHE_EVICTIONS).increment(evicted);
    }
}
