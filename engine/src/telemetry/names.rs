//! The engine's metric names, label values and histogram buckets.
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
// Triton's response cache counters per model version (durations in microseconds).
pub const CACHE_HITS: &str = "nv_cache_num_hits_per_model";
pub const CACHE_MISSES: &str = "nv_cache_num_misses_per_model";
pub const CACHE_HIT_DURATION_US: &str = "nv_cache_hit_duration_per_model";
pub const CACHE_MISS_DURATION_US: &str = "nv_cache_miss_duration_per_model";
// The local response cache as a whole.
pub const CACHE_ENTRIES: &str = "quiver_response_cache_entries";
pub const CACHE_BYTES: &str = "quiver_response_cache_bytes";
pub const CACHE_CAPACITY_BYTES: &str = "quiver_response_cache_capacity_bytes";
pub const CACHE_EVICTIONS: &str = "quiver_response_cache_evictions_total";

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
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}
