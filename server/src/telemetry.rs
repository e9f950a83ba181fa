//! The exporter and the front ends' own series: HTTP and gRPC requests,
//! connections, TLS handshakes, bytes fetched by sources. The engine's series
//! (models, versions, lifecycle, traffic, admission) are named in
//! `quiver_engine::telemetry`; both end up in one exposition (`/metrics` on
//! the metrics port and the HTTP port).
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use quiver_engine::telemetry::{LATENCY_BUCKETS, LOAD_BUCKETS, MODEL_LOAD_SECONDS, VARIANT_SECONDS};

pub const HTTP_REQUESTS: &str = "quiver_http_requests_total";
pub const HTTP_SECONDS: &str = "quiver_http_request_duration_seconds";
pub const GRPC_REQUESTS: &str = "quiver_grpc_requests_total";
pub const GRPC_SECONDS: &str = "quiver_grpc_request_duration_seconds";
// Connections, labelled by listener (`http`, `grpc`).
pub const CONNECTIONS_OPEN: &str = "quiver_connections_open";
pub const CONNECTIONS_LIMIT: &str = "quiver_connections_limit";
pub const CONNECTIONS_REFUSED: &str = "quiver_connections_refused_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "quiver_tls_handshake_failures_total";
// What model sources downloaded.
pub const SOURCE_OBJECTS_FETCHED: &str = "quiver_source_objects_fetched_total";
pub const SOURCE_BYTES_FETCHED: &str = "quiver_source_bytes_fetched_total";
// One POST of the payload log to its HTTP sink (docs/logging.md).
pub const PAYLOAD_LOG_SEND_SECONDS: &str = "quiver_payload_log_send_seconds";
// The Redis response cache's failed commands, by op (get, put).
pub const RESPONSE_CACHE_ERRORS: &str = "quiver_response_cache_errors_total";

/// Installs the process-wide recorder once and returns its handle. Metric
/// handles created before this call would be no-ops, so `start` calls it first.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // The per-version histograms are quiver's own (`versions`).
        let mut builder = PrometheusBuilder::new();
        for name in [VARIANT_SECONDS, HTTP_SECONDS, GRPC_SECONDS, PAYLOAD_LOG_SEND_SECONDS] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), LATENCY_BUCKETS)
                .expect("buckets");
        }
        builder = builder
            .set_buckets_for_metric(Matcher::Full(MODEL_LOAD_SECONDS.into()), LOAD_BUCKETS)
            .expect("buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program);
        // then quiver's metrics go there and this handle renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        // Histogram samples are buffered until rendered; drain them regularly
        // so an unscraped server does not grow.
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// `--max-connections`, as resolved at start.
pub fn connection_limit(limit: usize) {
    gauge!(CONNECTIONS_LIMIT).set(limit as f64);
}

pub fn connection_opened(listener: &'static str) {
    gauge!(CONNECTIONS_OPEN, "listener" => listener).increment(1.0);
}

pub fn connection_closed(listener: &'static str) {
    gauge!(CONNECTIONS_OPEN, "listener" => listener).decrement(1.0);
}

/// A connection over `--max-connections`, refused.
pub fn connection_refused(listener: &'static str) {
    counter!(CONNECTIONS_REFUSED, "listener" => listener).increment(1);
}

/// A TLS handshake that failed or timed out (with mutual TLS: a client
/// without a valid certificate).
pub fn tls_handshake_failed(listener: &'static str) {
    counter!(TLS_HANDSHAKE_FAILURES, "listener" => listener).increment(1);
}

/// Objects a source downloaded (changed or new ones only) and their bytes.
pub fn source_fetched(source: &'static str, objects: u64, bytes: u64) {
    counter!(SOURCE_OBJECTS_FETCHED, "source" => source).increment(objects);
    counter!(SOURCE_BYTES_FETCHED, "source" => source).increment(bytes);
}

/// Per-protocol request accounting (front ends call these).
pub fn http_request(route: &str, status: u16, elapsed: Duration) {
    HTTP_SERIES.with_borrow_mut(|routes| {
        let series = find_or_add(
            routes,
            |r| r == route,
            || {
                let seconds = histogram!(HTTP_SECONDS, "route" => route.to_owned());
                (route.to_owned(), Series::new(seconds))
            },
        );
        series.record(
            status.into(),
            elapsed,
            || counter!(HTTP_REQUESTS, "route" => route.to_owned(), "status" => status.to_string()),
        );
    });
}

pub fn grpc_request(method: &'static str, code: tonic::Code, elapsed: Duration) {
    GRPC_SERIES.with_borrow_mut(|methods| {
        let series = find_or_add(
            methods,
            |m| *m == method,
            || (method, Series::new(histogram!(GRPC_SECONDS, "method" => method))),
        );
        series.record(
            code as i32,
            elapsed,
            || counter!(GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}")),
        );
    });
}

/// One route's or method's series, as a thread holds them. Registering a
/// series (formatting the status, hashing the labels, the registry's lock)
/// cost more than the request's other metrics together (1.4% of the CPU of
/// a small model over gRPC): each serving thread registers a (route or
/// method, status) pair once and keeps the handles, which record into the
/// same series as everyone's.
struct Series {
    seconds: metrics::Histogram,
    by_status: Vec<(i32, metrics::Counter)>,
}

impl Series {
    fn new(seconds: metrics::Histogram) -> Series {
        Series {
            seconds,
            by_status: Vec::new(),
        }
    }

    /// One request: its duration, and one more in its status's counter
    /// (registered by `register` the first time that status is seen).
    fn record(&mut self, status: i32, elapsed: Duration, register: impl FnOnce() -> metrics::Counter) {
        self.seconds.record(elapsed.as_secs_f64());
        find_or_add(&mut self.by_status, |s| *s == status, || (status, register())).increment(1);
    }
}

/// The value of `list` whose key `is`, added by `add` the first time.
fn find_or_add<K, V>(list: &mut Vec<(K, V)>, is: impl Fn(&K) -> bool, add: impl FnOnce() -> (K, V)) -> &mut V {
    let i = match list.iter().position(|(k, _)| is(k)) {
        Some(i) => i,
        None => {
            list.push(add());
            list.len() - 1
        }
    };
    &mut list[i].1
}

thread_local! {
    // A handful of routes and methods each: a scan beats hashing.
    static HTTP_SERIES: std::cell::RefCell<Vec<(String, Series)>> = const { std::cell::RefCell::new(Vec::new()) };
    static GRPC_SERIES: std::cell::RefCell<Vec<(&'static str, Series)>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn router() -> Router {
    Router::new().route("/metrics", get(render))
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn render() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        exposition(),
    )
}

/// The whole exposition: the recorder's series, then the live versions'.
pub fn exposition() -> String {
    let mut text = install().render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    quiver_engine::telemetry::render_versions(&mut text);
    quiver_monitor::render(&mut text);
    text
}
