//! The metrics the engine records: model and version series (Triton's
//! `nv_inference_*` names, labels `model` and `version`, so existing
//! dashboards work unchanged, plus real histograms), model lifecycle,
//! sources, the validation gate, traffic splitting and admission. Names,
//! units, labels and buckets of these series live here; the front ends'
//! own series (HTTP, gRPC, connections) and the exporter live in the server.
mod versions;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use metrics::{Gauge, counter, gauge, histogram};

// Triton-compatible counters (microseconds, cumulative).
pub const REQUEST_SUCCESS: &str = "nv_inference_request_success";
pub const REQUEST_FAILURE: &str = "nv_inference_request_failure";
pub const INFERENCE_COUNT: &str = "nv_inference_count";
pub const EXEC_COUNT: &str = "nv_inference_exec_count";
pub const REQUEST_DURATION_US: &str = "nv_inference_request_duration_us";
pub const QUEUE_DURATION_US: &str = "nv_inference_queue_duration_us";
pub const COMPUTE_INPUT_DURATION_US: &str = "nv_inference_compute_input_duration_us";
pub const COMPUTE_INFER_DURATION_US: &str = "nv_inference_compute_infer_duration_us";
pub const COMPUTE_OUTPUT_DURATION_US: &str = "nv_inference_compute_output_duration_us";
pub const PENDING_REQUESTS: &str = "nv_inference_pending_request_count";

// quiver's histograms (seconds, Prometheus convention) and counters.
pub const REQUEST_SECONDS: &str = "quiver_inference_request_duration_seconds";
pub const QUEUE_SECONDS: &str = "quiver_inference_queue_duration_seconds";
pub const COMPUTE_SECONDS: &str = "quiver_inference_compute_duration_seconds";
pub const BATCH_SIZE: &str = "quiver_inference_batch_size";
pub const CANCELLED: &str = "quiver_inference_cancelled_total";
// Model lifecycle, labelled by model.
pub const MODEL_LOAD_SECONDS: &str = "quiver_model_load_duration_seconds";
pub const MODEL_LOADS: &str = "quiver_model_loads_total";
pub const MODEL_UNLOADS: &str = "quiver_model_unloads_total";
pub const MODEL_SWAPS: &str = "quiver_model_swaps_total";
// Model sources and the validation gate.
pub const SOURCE_ERRORS: &str = "quiver_source_errors_total";
pub const REPOSITORY_POLLS: &str = "quiver_repository_polls_total";
pub const VALIDATION_FAILURES: &str = "quiver_validation_failures_total";
pub const VALIDATION_PASSES: &str = "quiver_validation_passes_total";
// Traffic splitting, labelled by model and variant.
pub const VARIANT_REQUESTS: &str = "quiver_variant_requests_total";
pub const VARIANT_SECONDS: &str = "quiver_variant_request_duration_seconds";
pub const SHADOW_REQUESTS: &str = "quiver_shadow_requests_total";
pub const SHADOW_MISMATCHES: &str = "quiver_shadow_mismatches_total";
pub const SHADOW_MAX_ABS_DIFF: &str = "quiver_shadow_max_abs_difference";
pub const SHADOW_DROPPED: &str = "quiver_shadow_dropped_total";
pub const ROLLOUT_STEPS: &str = "quiver_rollout_steps_total";
pub const ROLLOUT_ROLLBACKS: &str = "quiver_rollout_rollbacks_total";
pub const ROLLOUT_WEIGHT: &str = "quiver_rollout_canary_weight_percent";
// Admission control: what is in flight against the server-wide budgets.
pub const ADMISSION_BYTES: &str = "quiver_admission_bytes_in_flight";
pub const ADMISSION_BYTES_LIMIT: &str = "quiver_admission_bytes_limit";
pub const ADMISSION_REQUESTS: &str = "quiver_admission_requests_in_flight";
pub const ADMISSION_REQUESTS_LIMIT: &str = "quiver_admission_requests_limit";

/// Latency buckets from 50 µs to 10 s: the fast end resolves sub-millisecond
/// tabular models, the slow end queueing under overload and large batches.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Load durations, 10 ms (a small ONNX file) to 5 minutes (a large model
/// with warm-up).
pub const LOAD_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Batch sizes in rows: powers of two up to 1024.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Triton's failure reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused before running: queue full, timed out in the queue, invalid.
    Rejected,
    /// The runtime failed.
    Backend,
    Other,
}

impl FailureReason {
    fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}

/// Installs the process-wide recorder once and returns its handle. Metric

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
