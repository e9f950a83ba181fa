//! The series labelled by model version (Triton's `nv_inference_*` and
//! quiver's request, queue, compute and batch-size histograms), kept in a
//! registry of quiver's own so that a retired version's series leave
//! `/metrics` with it.
//!
//! Why not the `metrics` recorder: `metrics-exporter-prometheus` never
//! forgets a series, so every version a follower swapped in stayed in the
//! exposition for good (about twenty series each; a thousand swaps added
//! twenty thousand lines that Prometheus went on scraping). Its idle timeout
//! is no answer: it would also drop a live model that is merely idle, and the
//! handles cached at load would then count into series no longer rendered.
//!
//! Each version holds an `Arc<Series>`; the registry holds a `Weak`. Two
//! versions with the same labels (a version reloaded in place while the old
//! copy drains) share one `Series`, so counters carry on as Prometheus
//! expects. When the last holder goes (the version drained and its threads
//! exited), the series go from the registry and from the next scrape.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use super::names::*;

/// A histogram with fixed buckets, recorded with atomics only.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one for `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn record(&self, value: f64) {
        // Prometheus buckets are "less than or equal": the first bound >= value.
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Relaxed);
        let _ = self
            .sum
            .fetch_update(Relaxed, Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", f64::from_bits(self.sum.load(Relaxed)));
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Every series of one (model, version).
pub struct Series {
    key: (String, u64),
    /// `model="...",version="..."`, escaped once.
    labels: String,
    pub success: AtomicU64,
    /// By [`FailureReason`] as an index.
    pub failure: [AtomicU64; 3],
    pub inference_count: AtomicU64,
    pub exec_count: AtomicU64,
    pub request_us: AtomicU64,
    pub queue_us: AtomicU64,
    pub compute_input_us: AtomicU64,
    pub compute_infer_us: AtomicU64,
    pub compute_output_us: AtomicU64,
    pub pending: AtomicI64,
    pub cancelled: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_hit_us: AtomicU64,
    pub cache_miss_us: AtomicU64,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batch_size: Histogram,
}

type Registry = Mutex<BTreeMap<(String, u64), Weak<Series>>>;

fn registry() -> &'static Registry {
    static REGISTRY: Registry = Mutex::new(BTreeMap::new());
    &REGISTRY
}

/// The series of `model` at `version`: the live one if another holder has
/// it, else new ones starting from zero.
pub fn series(model: &str, version: u64) -> Arc<Series> {
    let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    let key = (model.to_owned(), version);
    if let Some(live) = registry.get(&key).and_then(Weak::upgrade) {
        return live;
    }
    let series = Arc::new(Series::new(key.clone()));
    registry.insert(key, Arc::downgrade(&series));
    series
}

impl Series {
    fn new(key: (String, u64)) -> Series {
        let labels = format!("model=\"{}\",version=\"{}\"", escape(&key.0), key.1);
        let zero = || AtomicU64::new(0);
        Series {
            key,
            labels,
            success: zero(),
            failure: [zero(), zero(), zero()],
            inference_count: zero(),
            exec_count: zero(),
            request_us: zero(),
            queue_us: zero(),
            compute_input_us: zero(),
            compute_infer_us: zero(),
            compute_output_us: zero(),
            pending: AtomicI64::new(0),
            cancelled: zero(),
            cache_hits: zero(),
            cache_misses: zero(),
            cache_hit_us: zero(),
            cache_miss_us: zero(),
            request_seconds: Histogram::new(LATENCY_BUCKETS),
            queue_seconds: Histogram::new(LATENCY_BUCKETS),
            compute_seconds: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(BATCH_BUCKETS),
        }
    }
}

impl Drop for Series {
    fn drop(&mut self) {
        let mut registry = registry().lock().unwrap_or_else(|e| e.into_inner());
        // A new holder may have made fresh series under the same key since
        // this one's count reached zero; leave those.
        if registry.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            registry.remove(&self.key);
        }
    }
}

/// The label value escaped as the text format wants it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Where one family's value sits in a [`Series`].
type Field<T> = fn(&Series) -> &T;

/// Appends every live version's series, one family at a time.
pub fn render(out: &mut String) {
    // Held only to take references: a series dropped while rendering must
    // not find the registry locked by its own thread.
    let live: Vec<Arc<Series>> = {
        let registry = registry().lock().unwrap_or_else(|e| e.into_inner());
        registry.values().filter_map(Weak::upgrade).collect()
    };
    if live.is_empty() {
        return;
    }
    let counters: [(&str, Field<AtomicU64>); 13] = [
        (REQUEST_SUCCESS, |s| &s.success),
        (INFERENCE_COUNT, |s| &s.inference_count),
        (EXEC_COUNT, |s| &s.exec_count),
        (REQUEST_DURATION_US, |s| &s.request_us),
        (QUEUE_DURATION_US, |s| &s.queue_us),
        (COMPUTE_INPUT_DURATION_US, |s| &s.compute_input_us),
        (COMPUTE_INFER_DURATION_US, |s| &s.compute_infer_us),
        (COMPUTE_OUTPUT_DURATION_US, |s| &s.compute_output_us),
        (CANCELLED, |s| &s.cancelled),
        (CACHE_HITS, |s| &s.cache_hits),
        (CACHE_MISSES, |s| &s.cache_misses),
        (CACHE_HIT_DURATION_US, |s| &s.cache_hit_us),
        (CACHE_MISS_DURATION_US, |s| &s.cache_miss_us),
    ];
    for (name, get) in counters {
        let _ = writeln!(out, "# TYPE {name} counter");
        for s in &live {
            let _ = writeln!(out, "{name}{{{}}} {}", s.labels, get(s).load(Relaxed));
        }
    }
    let _ = writeln!(out, "# TYPE {REQUEST_FAILURE} counter");
    for s in &live {
        for reason in [FailureReason::Rejected, FailureReason::Backend, FailureReason::Other] {
            let _ = writeln!(
                out,
                "{REQUEST_FAILURE}{{{},reason=\"{}\"}} {}",
                s.labels,
                reason.label(),
                s.failure[reason as usize].load(Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# TYPE {PENDING_REQUESTS} gauge");
    for s in &live {
        let _ = writeln!(out, "{PENDING_REQUESTS}{{{}}} {}", s.labels, s.pending.load(Relaxed));
    }
    let histograms: [(&str, Field<Histogram>); 4] = [
        (REQUEST_SECONDS, |s| &s.request_seconds),
        (QUEUE_SECONDS, |s| &s.queue_seconds),
        (COMPUTE_SECONDS, |s| &s.compute_seconds),
        (BATCH_SIZE, |s| &s.batch_size),
    ];
    for (name, get) in histograms {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for s in &live {
            get(s).render(out, name, &s.labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let mut out = String::new();
        render(&mut out);
        out
    }

    #[test]
    fn a_retired_versions_series_leave_the_exposition() {
        let a = series("versions_test_model", 1);
        let again = series("versions_test_model", 1);
        a.success.fetch_add(2, Relaxed);
        again.success.fetch_add(1, Relaxed);
        a.request_seconds.record(0.0001);
        a.request_seconds.record(3.0);
        let text = rendered();
        assert!(
            text.contains("nv_inference_request_success{model=\"versions_test_model\",version=\"1\"} 3"),
            "{text}"
        );
        let bucket = |le: &str| {
            format!(
                "quiver_inference_request_duration_seconds_bucket{{model=\"versions_test_model\",version=\"1\",le=\"{le}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 1", bucket("0.0001"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("2.5"))), "{text}");
        assert!(text.contains(&format!("{} 2", bucket("+Inf"))), "{text}");
        drop(a);
        assert!(rendered().contains("versions_test_model"));
        drop(again);
        assert!(!rendered().contains("versions_test_model"));
        // A new holder starts from zero.
        let b = series("versions_test_model", 1);
        assert_eq!(b.success.load(Relaxed), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        let s = series("a\"b\\c", 7);
        assert!(rendered().contains(r#"model="a\"b\\c",version="7""#));
        drop(s);
    }
}
