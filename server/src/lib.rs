//! quiver: an Open Inference Protocol (KServe V2) server for ONNX Runtime
//! models. `main` parses the config and calls [`start`]; tests call the same
//! function on `127.0.0.1:0`.
pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu_metrics;
pub mod sources;
pub mod telemetry;
pub mod tls;
pub mod triton_cli;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiver_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use config::{Config, ControlMode};
use quiver_engine::Engine;
use quiver_engine::repository::LoadOptions;

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

/// Loads every model of the repository, then binds the
/// listeners and serves. Listeners are bound only after loading, so a TCP
/// readiness probe (KServe's default) does not pass before the models are in.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    config.validate().map_err(anyhow::Error::msg)?;
    telemetry::install();
    if config.allow_gpu_metrics {
        let interval = Duration::from_millis(config.metrics_interval_ms.max(100));
        let library = config.nvml_library.clone();
        // Opening NVML can take a moment on a GPU machine; it never blocks start-up.
        tokio::task::spawn_blocking(move || gpu_metrics::start(interval, library.as_deref()));
    }
    // A certificate that cannot be used stops start-up, before any loading.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Tls::new(
            cert,
            key,
            config.client_ca().map(|p| p.as_path()),
        )?)),
        _ => None,
    };
    // Backends initialise when their first model loads: a missing ONNX
    // Runtime or LibTorch fails those models, not the server.
    let backends = Arc::new(config.backend_settings().map_err(anyhow::Error::msg)?);
    tls::install_crypto_provider();
    let options = LoadOptions {
        default_max_batch_size: config.default_max_batch_size,
        intra_op_threads: config.intra_op_threads,
        queue_capacity: config.queue_capacity,
        delay_policy: config.queue_delay_policy,
        model_name: config.model_name.clone(),
        default_warmup: !config.no_default_warmup,
        control: config.model_control_mode,
        parallel_loads: config.model_load_threads,
        strict_readiness: config.strict_readiness(),
        backends,
    };
    let sourced = sources::open(config, options)?;
    let engine = Arc::new(sourced.engine);
    // An object-store repository is mirrored before the first load: what
    // the store holds now is what start-up serves. If it cannot be read, the
    // mirror's copy from an earlier run serves and the sync is retried.
    let mut unsynced = None;
    let mut failed_models = Vec::new();
    if let Some(mirror) = &sourced.mirror {
        match mirror.sync(None).await {
            Ok(report) => failed_models = report.failed,
            Err(e) => unsynced = Some(e),
        }
    }
    let startup = match config.model_control_mode {
        ControlMode::Explicit if !config.load_model.iter().any(|m| m == "*") => Some(config.load_model.clone()),
        _ => None,
    };
    // Poll mode starts from what the folder holds before the load reads it.
    let baseline = match config.model_control_mode {
        ControlMode::Poll => Some(sources::poll::baseline(&engine).await),
        _ => None,
    };
    // Only registry models and no repository folder: nothing else to load.
    let repository_needed = sourced.followers.is_empty() || engine.repository().is_dir();
    if repository_needed {
        engine
            .load_many(startup)
            .await
            .with_context(|| format!("cannot read model repository {}", config.model_repository.display()))?;
    }
    if config.exit_on_error {
        let failed: Vec<String> = engine
            .repository_index()
            .into_iter()
            .filter(|row| row.state == "UNAVAILABLE" && !row.reason.is_empty())
            .map(|row| format!("{}: {}", row.name, row.reason))
            .collect();
        if !failed.is_empty() {
            anyhow::bail!(
                "--exit-on-error: {} model(s) failed to load: {}",
                failed.len(),
                failed.join("; ")
            );
        }
    }
    // Reported once the models exist, so the index shows it on their rows.
    if let Some(e) = &unsynced {
        engine.source_failed(None, "object_store", e);
    }
    for (name, why) in &failed_models {
        engine.source_failed(Some(name), "object_store", why);
    }
    let mut followers = sourced.followers;
    for follower in &mut followers {
        if let Err(e) = follower.start(&engine).await {
            engine.source_failed(Some(follower.served()), "mlflow", &e);
        }
    }

    let bind = |port: u16| {
        let addr = SocketAddr::new(config.host, port);
        async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))
        }
    };
    // Triton's --allow-http / --allow-grpc / --allow-metrics leave a listener out.
    let bind_if = |on: bool, port: u16| async move {
        match on {
            true => bind(port).await.map(Some),
            false => Ok(None),
        }
    };
    let http = bind_if(config.allow_http, config.http_port).await?;
    let grpc = bind_if(config.allow_grpc, config.grpc_port).await?;
    let metrics_listener = bind_if(config.allow_metrics, config.metrics_port).await?;
    let addr = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr()).transpose();
    let (http_addr, grpc_addr, metrics_addr) = (addr(&http)?, addr(&grpc)?, addr(&metrics_listener)?);

    let (stop, stopped) = watch::channel(false);
    let stop_signal = stopped.clone();
    let until_stopped = move || {
        let mut rx = stop_signal.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    let every = Duration::from_secs(config.repository_poll_secs.max(1));
    if let Some(baseline) = baseline {
        tasks.push(tokio::spawn(sources::poll::run(
            Arc::clone(&engine),
            sourced.mirror.clone(),
            every,
            stopped.clone(),
            baseline,
        )));
    } else if let Some(mirror) = sourced.mirror.clone().filter(|_| unsynced.is_some())
        && config.model_control_mode == ControlMode::None
    {
        tasks.push(tokio::spawn(sources::poll::sync_once(
            Arc::clone(&engine),
            mirror,
            every,
            stopped.clone(),
        )));
    }
    tasks.push(tokio::spawn(quiver_engine::traffic::rollout::run(
        Arc::clone(&engine),
        stopped.clone(),
    )));
    for follower in followers {
        tasks.push(tokio::spawn(follower.run(Arc::clone(&engine), every, stopped.clone())));
    }

    let auth = Arc::new(auth::Auth::new(
        &config.data_token,
        &config.control_token,
        config.auth_health,
    ));
    // Read once: the default looks the memory limit up in /proc and /sys.
    let budget = config.max_inflight_bytes();
    let admission = quiver_engine::admission::Admission::new(budget, config.max_inflight_requests);
    let admission_handle = Arc::clone(&admission);
    tracing::info!(
        max_inflight_bytes = budget,
        max_inflight_requests = config.max_inflight_requests,
        "admission budgets"
    );
    if budget / 4 * 3 < config.largest_request() {
        tracing::warn!(
            max_inflight_bytes = budget,
            largest_request = config.largest_request(),
            "the memory limit leaves less room than the largest request allowed: requests that large will \
             be refused with 429; lower --http-max-body-bytes / --grpc-max-message-bytes to match"
        );
    }
    let state = api::http::HttpState {
        engine: Arc::clone(&engine),
        max_body_bytes: config.http_max_body_bytes,
        admission: Arc::clone(&admission),
        auth: Arc::clone(&auth),
    };
    let admin = match config.admin_port {
        Some(port) => Some(bind(port).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(listener) = admin {
        let (app, shutdown) = (api::http::admin_router(state.clone()), until_stopped());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "admin server failed");
            }
        }));
    }
    let app = api::http::router(state);
    if let Some(tls) = &tls {
        let every = Duration::from_secs(config.tls_reload_seconds.max(1));
        tasks.push(tokio::spawn(Arc::clone(tls).watch(every, stopped.clone())));
    }
    let gate = connections::Gate::new(match config.max_connections {
        0 => connections::default_limit(),
        n => n,
    });
    tracing::info!(max_connections = gate.limit(), "connection limit");
    let http_limits = api::http::serve::HttpLimits {
        header_read_timeout: Duration::from_secs(config.http_header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.http_idle_timeout_seconds.max(1)),
        max_concurrent_streams: config.max_concurrent_streams,
    };
    if let Some(http) = http {
        let stop = stopped.clone();
        tasks.push(match &tls {
            Some(t) => {
                let incoming = tls::accept(http, Arc::clone(t), tls::Listener::Http, Arc::clone(&gate));
                tokio::spawn(api::http::serve::serve(incoming, app, http_limits, stop))
            }
            None => {
                let incoming = connections::accept_tcp(http, Arc::clone(&gate), "http", true);
                tokio::spawn(api::http::serve::serve(incoming, app, http_limits, stop))
            }
        });
    }

    if let Some(metrics_listener) = metrics_listener {
        let metrics_app = telemetry::router();
        let shutdown = until_stopped();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, metrics_app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quiver_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build gRPC reflection")?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quiver_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build gRPC reflection")?;
    let limit = config.grpc_max_message_bytes;
    let inference = GrpcInferenceServiceServer::new(api::grpc::InferenceService::new(
        Arc::clone(&engine),
        stopped.clone(),
        limit,
    ))
    // The guard and the service refuse first, with RESOURCE_EXHAUSTED;
    // tonic's checks (OUT_OF_RANGE) stay as a backstop.
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    if let Some(grpc) = grpc {
        let shutdown = until_stopped();
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(config.max_concurrent_streams)
            .http2_keepalive_interval(millis(config.grpc_keepalive_time))
            .http2_keepalive_timeout(millis(config.grpc_keepalive_timeout));
        if let Some(age) = millis(config.grpc_max_connection_age) {
            builder = builder.max_connection_age(age);
        }
        if let Some(grace) = millis(config.grpc_max_connection_age_grace) {
            builder = builder.max_connection_age_grace(grace);
        }
        let router = builder
            .layer(api::grpc::guard::GuardLayer {
                auth,
                admission,
                max_message_bytes: limit,
            })
            .add_service(inference)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_alpha);
        let (gate, tls) = (Arc::clone(&gate), tls.clone());
        tasks.push(tokio::spawn(async move {
            let served = match tls {
                Some(t) => {
                    let incoming = tls::accept(grpc, t, tls::Listener::Grpc, gate);
                    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming)
                        .map(|(io, _)| Ok::<_, std::io::Error>(io));
                    router.serve_with_incoming_shutdown(incoming, shutdown).await
                }
                None => {
                    let incoming = connections::accept_tcp(grpc, gate, "grpc", false);
                    let incoming = tokio_stream::wrappers::ReceiverStream::new(incoming)
                        .map(|(io, _)| Ok::<_, std::io::Error>(io));
                    router.serve_with_incoming_shutdown(incoming, shutdown).await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
    }

    engine.set_ready(true);
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_serving::<GrpcInferenceServiceServer<api::grpc::InferenceService>>()
        .await;
    Ok(Server {
        http_addr,
        grpc_addr,
        metrics_addr,
        admin_addr,
        engine,
        connections: gate,
        admission: admission_handle,
        health,
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
    }
}
