//! quiver: an Open Inference Protocol (KServe V2) server for ONNX Runtime
//! and LibTorch models, on the engine of `quiver-engine`. `main` parses the
//! config and calls [`start`]; tests call the same function on `127.0.0.1:0`.
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connections;
pub mod error;
pub mod gpu_metrics;
mod listeners;
pub mod logging;
pub mod payload_log;
pub mod redis_cache;
pub mod shm;
pub mod sources;
mod startup;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod triton_cli;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quiver_engine::Engine;
use quiver_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::Config;
pub use startup::Observers;

/// A running server: its bound addresses and the handles to stop it.
pub struct Server {
    /// `None` where Triton's --allow-http / --allow-grpc / --allow-metrics
    /// turned the listener off.
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The admin listener, when `--admin-port` is set.
    pub admin_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    /// The drift and data-quality monitors of the loaded versions.
    pub monitoring: Arc<quiver_monitor::Monitoring>,
    /// Request and answer logging (docs/logging.md).
    pub payload_log: Arc<payload_log::PayloadLog>,
    /// Request tracing and its settings (docs/observability.md).
    pub tracer: Arc<trace::Tracer>,
    /// The connection budget of the HTTP and gRPC listeners.
    pub connections: Arc<connections::Gate>,
    /// The request and byte budgets: what is in flight now.
    pub admission: Arc<quiver_engine::admission::Admission>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// How long in-flight work gets after the listeners stop.
    grace: Duration,
}

/// Loads every model of the repository, then binds the listeners and
/// serves. Listeners are bound only after loading, so a TCP readiness probe
/// (KServe's default) does not pass before the models are in.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    start_with(config, Observers::default()).await
}

/// [`start`], with `observers` on the request path.
pub async fn start_with(config: &Config, mut observers: Observers) -> anyhow::Result<Server> {
    config.validate().map_err(anyhow::Error::msg)?;
    telemetry::install();
    // Every version with a reference is monitored (docs/monitoring.md).
    let monitoring = quiver_monitor::Monitoring::new(
        quiver_monitor::Settings::defaults(
            Duration::from_secs_f64(config.monitoring_window_seconds),
            config.monitoring_min_samples,
        ),
        webhooks::sink(config.monitoring_webhook.clone()),
    );
    observers.tap_factories.push(Arc::clone(&monitoring) as _);
    let payload_log = payload_log::PayloadLog::new(config.payload_log().map_err(anyhow::Error::msg)?)
        .map_err(|e| anyhow::anyhow!("--payload-log-file: {e}"))?;
    observers.tap_factories.push(Arc::clone(&payload_log) as _);
    let tracer =
        trace::Tracer::new(config.trace().map_err(anyhow::Error::msg)?).map_err(|e| anyhow::anyhow!("tracing: {e}"))?;
    observers.taps.push(Arc::clone(&tracer) as _);
    if config.allow_gpu_metrics {
        let interval = Duration::from_millis(config.metrics_interval_ms.max(100));
        let library = config.nvml_library.clone();
        // Opening NVML can take a moment on a GPU machine; it never blocks start-up.
        tokio::task::spawn_blocking(move || gpu_metrics::start(interval, library.as_deref()));
    }
    let tls = listeners::tls(config)?;
    let loaded = startup::load(config, observers).await?;
    let engine = Arc::clone(&loaded.engine);
    let bound = listeners::bind(config).await?;
    let [http_addr, grpc_addr, metrics_addr, admin_addr] = bound.addresses()?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = startup::follow(config, loaded, &stopped);
    let serving = listeners::serve(
        config,
        &engine,
        listeners::Watchers {
            monitoring: &monitoring,
            tracer: &tracer,
        },
        tls,
        bound,
        &stopped,
        &mut tasks,
    )
    .await?;

    engine.set_ready(true);
    serving
        .health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    serving
        .health
        .set_serving::<GrpcInferenceServiceServer<api::grpc::InferenceService>>()
        .await;
    Ok(Server {
        http_addr,
        grpc_addr,
        metrics_addr,
        admin_addr,
        engine,
        monitoring,
        payload_log,
        tracer,
        connections: serving.connections,
        admission: serving.admission,
        health: serving.health,
        stop,
        tasks,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    })
}

impl Server {
    /// Graceful stop: report not-ready at once (HTTP ready, gRPC health), keep
    /// serving for `drain` so load balancers move traffic away, then stop
    /// accepting, end open `ModelStreamInfer` streams (after the request each
    /// is running), give in-flight requests up to the grace period, and
    /// return even if a client holds a connection open past it.
    pub async fn shutdown(self, drain: Duration) {
        self.engine.set_ready(false);
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.health
            .set_not_serving::<GrpcInferenceServiceServer<api::grpc::InferenceService>>()
            .await;
        tokio::time::sleep(drain).await;
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let finished = tokio::time::timeout(self.grace, async {
            for t in self.tasks {
                let _ = t.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                grace_seconds = self.grace.as_secs(),
                "connections still open after the grace period; closing them"
            );
            for a in aborts {
                a.abort();
            }
        }
        // What was answered is logged: the payload log's queues are sent
        // within a grace period of their own.
        self.payload_log.close(self.grace).await;
        self.tracer.close(self.grace).await;
    }
}
