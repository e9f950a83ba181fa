//! The listeners: HTTP (REST, and `/metrics`), gRPC (inference, health,
//! reflection), the metrics port and the admin port, bound after the
//! start-up load so that a TCP readiness probe does not pass before the
//! models are in, and served until `stopped` turns true.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quiver_engine::Engine;
use quiver_engine::admission::Admission;
use quiver_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use crate::config::Config;
use crate::{api, auth, connections, telemetry, tls};

/// The bound sockets; `None` where Triton's --allow-http / --allow-grpc /
/// --allow-metrics turned a listener off, or no --admin-port was given.
pub struct Bound {
    http: Option<TcpListener>,
    grpc: Option<TcpListener>,
    metrics: Option<TcpListener>,
    admin: Option<TcpListener>,
}

impl Bound {
    /// The addresses: HTTP, gRPC, metrics, admin.
    pub fn addresses(&self) -> std::io::Result<[Option<SocketAddr>; 4]> {
        let addr = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr()).transpose();
        Ok([
            addr(&self.http)?,
            addr(&self.grpc)?,
            addr(&self.metrics)?,
            addr(&self.admin)?,
        ])
    }
}

/// The certificate and key (and client CA) of both listeners, when given: a
/// certificate that cannot be used stops start-up before any loading.
pub fn tls(config: &Config) -> anyhow::Result<Option<Arc<tls::Tls>>> {
    tls::install_crypto_provider();
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Tls::new(
            cert,
            key,
            config.client_ca().map(|p| p.as_path()),
        )?)),
        _ => None,
    })
}

pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
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
    Ok(Bound {
        http: bind_if(config.allow_http, config.http_port).await?,
        grpc: bind_if(config.allow_grpc, config.grpc_port).await?,
        metrics: bind_if(config.allow_metrics, config.metrics_port).await?,
        admin: match config.admin_port {
            Some(port) => Some(bind(port).await?),
            None => None,
        },
    })
}

/// What the running listeners share with [`crate::Server`].
pub struct Serving {
    pub connections: Arc<connections::Gate>,
    pub admission: Arc<Admission>,
    pub health: tonic_health::server::HealthReporter,
}

/// What the control endpoints read and change besides the engine.
pub struct Watchers<'a> {
    pub monitoring: &'a Arc<quiver_monitor::Monitoring>,
    pub tracer: &'a Arc<crate::trace::Tracer>,
}

/// Serves every bound listener as a task pushed onto `tasks`.
pub async fn serve(
    config: &Config,
    engine: &Arc<Engine>,
    watchers: Watchers<'_>,
    tls: Option<Arc<tls::Tls>>,
    bound: Bound,
    stopped: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Serving> {
    let stop_signal = stopped.clone();
    let until_stopped = move || {
        let mut rx = stop_signal.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
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
    let shm = Arc::new(crate::shm::Regions::new(
        config.shared_memory_key_prefix.clone(),
        crate::shm::cuda::Loader::Search(config.cuda_library_path.clone()),
        config.largest_request(),
    ));
    let state = api::http::HttpState {
        engine: Arc::clone(engine),
        shm: Arc::clone(&shm),
        max_body_bytes: config.http_max_body_bytes,
        admission: Arc::clone(&admission),
        auth: Arc::clone(&auth),
        monitoring: Arc::clone(watchers.monitoring),
        tracer: Arc::clone(watchers.tracer),
    };
    if let Some(listener) = bound.admin {
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
    if let Some(http) = bound.http {
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

    if let Some(metrics_listener) = bound.metrics {
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
        Arc::clone(engine),
        Arc::clone(watchers.tracer),
        stopped.clone(),
        limit,
        shm,
    ))
    // The guard and the service refuse first, with RESOURCE_EXHAUSTED;
    // tonic's checks (OUT_OF_RANGE) stay as a backstop.
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    if let Some(grpc) = bound.grpc {
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

    Ok(Serving {
        connections: gate,
        admission: admission_handle,
        health,
    })
}
