//! Every knob of the server, from flags or `QUIVER_*` environment variables
//! (and the MLflow variables users already set). This is the only module
//! that reads quiver's settings from the environment; the cloud SDK's own
//! variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are read by object_store where
//! a store is opened, and by `sources::secrets` to keep them out of messages.
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use quiver_engine::batcher::policy::DelayPolicy;

pub use quiver_engine::repository::ControlMode;

/// `--model-control-mode`: the engine's modes by Triton's names, listed in
/// `--help` and in the error for any other value.
fn control_mode() -> impl clap::builder::TypedValueParser<Value = ControlMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(ControlMode::NAMES)
        .map(|name| ControlMode::from_name(&name).expect("a listed name"))
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about = "Open Inference Protocol (KServe V2) server for ONNX Runtime and LibTorch (TorchScript) models"
)]
pub struct Config {
    /// Triton-layout model repository: <dir>/<model>/config.pbtxt and numeric version folders.
    #[arg(
        long,
        visible_alias = "model-store",
        alias = "model_dir",
        env = "QUIVER_MODEL_REPOSITORY",
        default_value = "models"
    )]
    pub model_repository: PathBuf,

    /// Address to listen on for HTTP, gRPC and metrics.
    #[arg(long, env = "QUIVER_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// KServe custom runtimes pass `--model_name={{.Name}}`. When the repository
    /// folder is itself one model (it holds numeric version folders, as the
    /// storage initializer lays out /mnt/models), that model is served under
    /// this name; otherwise every model of the repository is served.
    #[arg(long, alias = "model_name", env = "QUIVER_MODEL_NAME")]
    pub model_name: Option<String>,

    /// HTTP/REST port (0 picks a free port; the start-up log prints it).
    #[arg(long, alias = "http_port", env = "QUIVER_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// gRPC port (0 picks a free port).
    #[arg(long, alias = "grpc_port", env = "QUIVER_GRPC_PORT", default_value_t = 8081)]
    pub grpc_port: u16,

    /// A separate admin listener for the control routes (traffic policies,
    /// repository load/unload/index) and health, e.g. on a port only the
    /// platform can reach. They stay on the HTTP port too. Unset: none.
    #[arg(long, env = "QUIVER_ADMIN_PORT")]
    pub admin_port: Option<u16>,

    /// Prometheus metrics port, serving /metrics (0 picks a free port).
    #[arg(long, env = "QUIVER_METRICS_PORT", default_value_t = 8082)]
    pub metrics_port: u16,

    /// Serve HTTP/REST (Triton's --allow-http=<bool>).
    #[arg(long, env = "QUIVER_ALLOW_HTTP", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_http: bool,

    /// Serve gRPC (Triton's --allow-grpc=<bool>).
    #[arg(long, env = "QUIVER_ALLOW_GRPC", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_grpc: bool,

    /// Open the metrics port (Triton's --allow-metrics=<bool>); /metrics on
    /// the HTTP port stays.
    #[arg(long, env = "QUIVER_ALLOW_METRICS", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_metrics: bool,

    /// Export Triton's GPU metrics (nv_gpu_*, nv_energy_consumption) read
    /// through NVML; they are absent on machines without an NVIDIA driver.
    #[arg(long, env = "QUIVER_ALLOW_GPU_METRICS", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub allow_gpu_metrics: bool,

    /// How often GPU metrics are read, in milliseconds (Triton's flag).
    #[arg(long, env = "QUIVER_METRICS_INTERVAL_MS", default_value_t = 2000)]
    pub metrics_interval_ms: u64,

    /// NVML library to read GPU metrics from (default: the driver's
    /// libnvidia-ml.so.1 on the loader's path).
    #[arg(long, env = "QUIVER_NVML_LIBRARY", hide = true)]
    pub nvml_library: Option<PathBuf>,

    /// Path of libonnxruntime.so. Unset: ORT_DYLIB_PATH, then
    /// .cache/onnxruntime/libonnxruntime.so under the working directory, then
    /// next to the quiver binary, then /usr/local/lib and /usr/lib.
    #[arg(long, env = "QUIVER_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,

    /// Where ONNX Runtime is usually found when --onnxruntime-lib is unset
    /// (read from ORT_DYLIB_PATH, the variable ort itself honours).
    #[arg(long, env = "ORT_DYLIB_PATH", hide = true)]
    pub ort_dylib_path: Option<PathBuf>,

    /// Where backends that are libraries of their own live (LibTorch's
    /// libquiver_torch.so), as Triton's --backend-directory. Unset: beside the
    /// quiver executable.
    #[arg(long, env = "QUIVER_BACKEND_DIRECTORY")]
    pub backend_directory: Option<PathBuf>,

    /// A backend setting, `<backend>,<setting>=<value>` (repeatable), as
    /// Triton's --backend-config: `pytorch,libtorch=<dir>` (the LibTorch
    /// folder; else LIBTORCH), `onnxruntime,library=<path>` (as --onnxruntime-lib).
    #[arg(long = "backend-config", value_name = "BACKEND,KEY=VALUE")]
    pub backend_config: Vec<String>,

    /// Run a KIND_GPU instance on the CPU, with a warning, when its GPU
    /// provider cannot start (no driver, missing CUDA libraries, a CPU-only
    /// ONNX Runtime). Off: such a model fails to load, naming what is missing.
    #[arg(long, env = "QUIVER_ALLOW_CPU_FALLBACK")]
    pub allow_cpu_fallback: bool,

    /// Folders holding CUDA, cuDNN and TensorRT libraries for ONNX Runtime's
    /// GPU providers (colon-separated), searched before $CUDA_HOME,
    /// /usr/local/cuda and the nvidia-* Python wheels quiver finds itself.
    #[arg(long, env = "QUIVER_CUDA_LIBRARY_PATH", value_delimiter = ':')]
    pub cuda_library_path: Vec<PathBuf>,

    /// Largest HTTP request body, in bytes, before and after gzip/deflate inflation.
    #[arg(long, env = "QUIVER_HTTP_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub http_max_body_bytes: usize,

    /// Largest gRPC message, in bytes, in either direction. The same as the
    /// HTTP body limit by default (Triton allows up to 2 GiB: raise both
    /// together, with --max-inflight-bytes, for models that need it).
    #[arg(long, env = "QUIVER_GRPC_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub grpc_max_message_bytes: usize,

    /// Request bytes in flight across the server (received, queued or
    /// running) before new requests are refused with 429 /
    /// RESOURCE_EXHAUSTED. Default: a quarter of the memory this process may
    /// use (its cgroup limit, address-space limit or the machine's memory,
    /// whichever is smallest), leaving room for each request's copies.
    #[arg(long, env = "QUIVER_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<usize>,

    /// Requests in flight across the server (HTTP and gRPC calls, streams
    /// counted once) before new ones are refused with 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUIVER_MAX_INFLIGHT_REQUESTS", default_value_t = 4096)]
    pub max_inflight_requests: usize,

    /// Threads for codec work on large bodies and for model loads (tokio's
    /// blocking pool), so a burst cannot grow it to hundreds of threads.
    #[arg(long, env = "QUIVER_MAX_BLOCKING_THREADS", default_value_t = 16)]
    pub max_blocking_threads: usize,

    /// max_batch_size given to a model whose config is completed from the model
    /// file and whose inputs and outputs all start with a variable dimension
    /// (Triton's --backend-config=default-max-batch-size, same default).
    #[arg(long, env = "QUIVER_DEFAULT_MAX_BATCH_SIZE", default_value_t = 4)]
    pub default_max_batch_size: i32,

    /// ONNX Runtime intra-op threads per session, unless the model's config sets
    /// parameters { key: "intra_op_thread_count" }. The default of 1 lets
    /// instances (instance_group count) scale across cores without every session
    /// claiming all of them; 0 means ONNX Runtime's own default (all cores).
    #[arg(long, env = "QUIVER_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Requests waiting per model version before new ones are refused with
    /// 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUIVER_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// How a dynamic batcher waits for a fuller batch within the model's
    /// max_queue_delay_microseconds: "adaptive" waits only while another
    /// request is likely to join; "fixed" always waits the whole delay, as
    /// Triton does. A model's config can choose for itself with
    /// parameters { key: "queue_delay_policy" value: { string_value: "fixed" } }.
    #[arg(long, env = "QUIVER_QUEUE_DELAY_POLICY", default_value = "adaptive")]
    pub queue_delay_policy: DelayPolicy,

    /// How the OS schedules the models' instance threads: "batch" (Linux's
    /// SCHED_BATCH: a request's wake-up does not preempt the I/O thread, which
    /// goes on queueing the requests that came with it, so a busy core runs
    /// larger batches) or "normal" (the default policy: a woken instance runs
    /// at once, a few microseconds sooner on a busy core).
    #[arg(long, env = "QUIVER_INSTANCE_SCHEDULING", default_value = "batch")]
    pub instance_scheduling: quiver_engine::batcher::InstanceScheduling,

    /// Tokio worker threads for HTTP and gRPC I/O. Inference runs on its own
    /// threads, so a small number leaves the cores to the models.
    #[arg(long, env = "QUIVER_WORKER_THREADS", default_value_t = 2)]
    pub worker_threads: usize,

    /// On SIGTERM/SIGINT: report not-ready at once, keep serving for this many
    /// seconds so load balancers stop routing here, then finish in-flight work and exit.
    #[arg(long, env = "QUIVER_SHUTDOWN_DRAIN_SECONDS", default_value_t = 5)]
    pub shutdown_drain_seconds: u64,

    /// How the set of served models may change while running (Triton's
    /// names): none (load everything at start-up), poll (follow the
    /// repository), explicit (load/unload through the repository API).
    #[arg(long, env = "QUIVER_MODEL_CONTROL_MODE", default_value = "none", value_parser = control_mode())]
    pub model_control_mode: ControlMode,

    /// Seconds between two scans of the repository in poll mode. A change is
    /// loaded once the model's files have held still for one whole interval.
    #[arg(long, env = "QUIVER_REPOSITORY_POLL_SECS", default_value_t = 15)]
    pub repository_poll_secs: u64,

    /// Folder for what quiver downloads: the mirror of an object-store
    /// repository and registry artifacts. Kept across restarts (only
    /// changed objects are fetched again); quiver owns what is inside.
    #[arg(long, env = "QUIVER_CACHE_DIR", default_value = "/tmp/quiver-cache")]
    pub cache_dir: PathBuf,

    /// Endpoint of an S3-compatible store (MinIO, Ceph) for an `s3://`
    /// repository; AWS_ENDPOINT_URL works too. Plain http:// is allowed.
    #[arg(long, env = "QUIVER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Serve a model that follows an MLflow Model Registry reference:
    /// `<served name>=models:/<name>@<alias>`, `models:/<name>/<stage>`,
    /// `models:/<name>/<version>` or `models:/<name>/latest` (repeatable).
    /// Polled every --repository-poll-secs in every control mode.
    #[arg(long, env = "QUIVER_REGISTRY_MODELS", value_delimiter = ',')]
    pub registry_model: Vec<String>,

    /// The MLflow tracking server that --registry-model references resolve on.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub mlflow_tracking_uri: Option<String>,

    /// Bearer token for the MLflow tracking server (prefer the variable).
    #[arg(long, env = "MLFLOW_TRACKING_TOKEN", hide_env_values = true)]
    pub mlflow_tracking_token: Option<String>,

    /// Basic auth for the MLflow tracking server (MLflow's own variables).
    #[arg(long, env = "MLFLOW_TRACKING_USERNAME", hide = true)]
    pub mlflow_tracking_username: Option<String>,

    #[arg(long, env = "MLFLOW_TRACKING_PASSWORD", hide = true, hide_env_values = true)]
    pub mlflow_tracking_password: Option<String>,

    /// S3-compatible endpoint of the store behind MLflow's artifact URIs.
    #[arg(long, env = "MLFLOW_S3_ENDPOINT_URL", hide = true)]
    pub mlflow_s3_endpoint_url: Option<String>,

    /// Explicit mode: a model to load at start-up (repeatable; `*` loads all).
    #[arg(long, env = "QUIVER_LOAD_MODEL", value_delimiter = ',')]
    pub load_model: Vec<String>,

    /// Model loads that may run at once (loads of one model always take turns).
    #[arg(
        long,
        alias = "model-load-thread-count",
        env = "QUIVER_MODEL_LOAD_THREADS",
        default_value_t = 2
    )]
    pub model_load_threads: usize,

    /// Do not warm a model that has no `model_warmup` with one run on zeros
    /// before it becomes READY.
    #[arg(long, env = "QUIVER_NO_DEFAULT_WARMUP")]
    pub no_default_warmup: bool,

    /// Monitoring (docs/monitoring.md): the length of a drift and data-quality
    /// window. A version with a `reference.npz` is monitored; its
    /// `monitoring.json` may set its own.
    #[arg(long, env = "QUIVER_MONITORING_WINDOW_SECONDS", default_value_t = 60.0)]
    pub monitoring_window_seconds: f64,

    /// A window with fewer rows than this is not judged: it carries on
    /// (up to ten window lengths) until it has them.
    #[arg(long, env = "QUIVER_MONITORING_MIN_SAMPLES", default_value_t = 500)]
    pub monitoring_min_samples: u64,

    /// Where state changes go: each change of a feature's or a version's
    /// drift state is POSTed as a CloudEvent (binary mode) to every URL,
    /// with retries. Repeatable; comma-separated in the environment.
    #[arg(long, env = "QUIVER_MONITORING_WEBHOOKS", value_delimiter = ',')]
    pub monitoring_webhook: Vec<String>,

    /// Payload logging (docs/logging.md): every request and answer is sent
    /// to this URL as a CloudEvent in KServe's format (KServe's logger `url`).
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_URL")]
    pub payload_log_url: Option<String>,

    /// What is logged: `all`, `request` or `response` (KServe's logger `mode`).
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_MODE", default_value = "all")]
    pub payload_log_mode: String,

    /// Payload logging to a local file: one CloudEvent (structured, JSON) a
    /// line, rotated by size; for a log shipper beside a standalone container.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_FILE")]
    pub payload_log_file: Option<PathBuf>,

    /// The log file is rotated (`PATH.1`, `PATH.2`, ...) when it reaches this size.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_FILE_MAX_BYTES", default_value_t = 100 << 20)]
    pub payload_log_file_max_bytes: u64,

    /// Rotated log files kept besides the current one.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_FILE_KEEP", default_value_t = 5)]
    pub payload_log_file_keep: usize,

    /// Events per HTTP POST: above 1, events go in CloudEvents' batch mode
    /// (`application/cloudevents-batch+json`), as KServe's `batchSize`.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_BATCH_SIZE", default_value_t = 1)]
    pub payload_log_batch_size: usize,

    /// A batch that is not full is sent after this long (KServe's `batchInterval`).
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_BATCH_INTERVAL_MS", default_value_t = 1000)]
    pub payload_log_batch_interval_ms: u64,

    /// Request headers (or gRPC metadata) copied into `ce-metadata`, as
    /// KServe's `metadataHeaders`. Comma-separated in the environment.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_METADATA_HEADERS", value_delimiter = ',')]
    pub payload_log_metadata_headers: Vec<String>,

    /// Inputs whose data is never logged (their name, type and shape are).
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_REDACT_INPUTS", value_delimiter = ',')]
    pub payload_log_redact_inputs: Vec<String>,

    /// Metadata headers whose value is logged as `[REDACTED]`.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_REDACT_HEADERS", value_delimiter = ',')]
    pub payload_log_redact_headers: Vec<String>,

    /// The share of requests logged, from 0 to 1.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_SAMPLE_RATE", default_value_t = 1.0)]
    pub payload_log_sample_rate: f64,

    /// An event whose body would be larger is logged without tensor data
    /// (names, types and shapes only) and counted as truncated.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_MAX_EVENT_BYTES", default_value_t = 1 << 20)]
    pub payload_log_max_event_bytes: usize,

    /// The queue between serving and each sink, in requests and in tensor
    /// bytes: when either is full, new events are dropped and counted.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_QUEUE", default_value_t = 10_000)]
    pub payload_log_queue: usize,
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_QUEUE_BYTES", default_value_t = 64 << 20)]
    pub payload_log_queue_bytes: usize,

    /// HTTP POSTs in flight at once, per sink.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_WORKERS", default_value_t = 4)]
    pub payload_log_workers: usize,

    /// How the OS schedules the sinks' worker threads: "idle" (Linux's
    /// SCHED_IDLE: they run on CPU time serving leaves, so a sink or an
    /// encoding that cannot keep up fills the queue, whose overflow is
    /// dropped and counted, instead of taking a core's time from serving)
    /// or "normal" (the default policy: the workers compete with serving).
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_SCHEDULING", default_value = "idle")]
    pub payload_log_scheduling: crate::payload_log::settings::Scheduling,

    /// How long a failed delivery (5xx, 408, 429, no connection) is retried,
    /// with back-off, before its events are counted as failed.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_RETRY_SECONDS", default_value_t = 60.0)]
    pub payload_log_retry_seconds: f64,

    /// `ce-source`. Default: `http://localhost:<http port>/v2/models/<model>/versions/<version>`.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_SOURCE_URI")]
    pub payload_log_source_uri: Option<String>,

    /// `ce-inferenceservicename`, `ce-namespace`, `ce-component` and
    /// `ce-endpoint` (the last only for a request no traffic policy routed:
    /// otherwise it is the variant's name), as KServe's agent sets them.
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_INFERENCE_SERVICE", default_value = "")]
    pub payload_log_inference_service: String,
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_NAMESPACE", default_value = "")]
    pub payload_log_namespace: String,
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_COMPONENT", default_value = "predictor")]
    pub payload_log_component: String,
    #[arg(long, env = "QUIVER_PAYLOAD_LOG_ENDPOINT", default_value = "default")]
    pub payload_log_endpoint: String,

    /// After the drain, how long in-flight requests get to finish before open
    /// connections and streams are closed and quiver exits anyway.
    #[arg(
        long,
        alias = "exit-timeout-secs",
        env = "QUIVER_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10
    )]
    pub shutdown_grace_seconds: u64,

    /// Server readiness (`/v2/health/ready`, ServerReady) says 503/false
    /// unless every model that should serve has a READY version. Default: on
    /// when serving one model (`--model-name`), as KServe's servers do; off
    /// otherwise, where one broken model should not take the others out of
    /// a load balancer.
    #[arg(long, env = "QUIVER_STRICT_READINESS", num_args = 0..=1, default_missing_value = "true")]
    pub strict_readiness: Option<bool>,

    /// Data-plane tokens (inference, metadata, statistics, index): clients
    /// send `Authorization: Bearer <token>` or `X-API-Key: <token>`. Prefer
    /// the environment variable (comma-separated) to keep tokens out of `ps`.
    /// No token configured at all: no auth.
    #[arg(long, env = "QUIVER_DATA_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub data_token: Vec<String>,

    /// Control-plane tokens: model load and unload, and everything a data
    /// token may do.
    #[arg(long, env = "QUIVER_CONTROL_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub control_token: Vec<String>,

    /// Require a token on health (`/v2/health/*`, gRPC health) and on
    /// `/metrics` of the HTTP port too. The metrics port stays open.
    #[arg(long, env = "QUIVER_AUTH_HEALTH")]
    pub auth_health: bool,

    /// PEM certificate (chain) for TLS on the HTTP and gRPC listeners; with
    /// --tls-key. Both files are read again when they change. Triton's
    /// --grpc-server-cert is the same flag.
    #[arg(long, alias = "grpc-server-cert", env = "QUIVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (Triton's --grpc-server-key).
    #[arg(long, alias = "grpc-server-key", env = "QUIVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: a PEM bundle of the CAs whose client certificates both
    /// listeners accept. A client without a certificate signed by one of
    /// them is refused at the handshake. Read again when it changes, like
    /// the server's certificate. Needs --tls-cert.
    #[arg(long, env = "QUIVER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Triton's --grpc-use-ssl: TLS is on whenever --tls-cert (Triton's
    /// --grpc-server-cert) is given; `true` without one stops start-up.
    #[arg(long, hide = true, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_use_ssl: Option<bool>,

    /// Triton's --grpc-use-ssl-mutual: with --grpc-root-cert, the same as
    /// --tls-client-ca.
    #[arg(long, hide = true, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_use_ssl_mutual: Option<bool>,

    /// Triton's --grpc-root-cert: the client CA, used when
    /// --grpc-use-ssl-mutual=true (as in Triton).
    #[arg(long, hide = true)]
    pub grpc_root_cert: Option<PathBuf>,

    /// Open connections the HTTP and gRPC listeners hold together; one more
    /// is refused at once (HTTP: a 503 naming this flag, then close; gRPC:
    /// closed, which clients see as UNAVAILABLE and retry). 0: three
    /// quarters of the open-file limit (raised to its hard limit at start),
    /// at most 65,536, so quiver refuses before the kernel does.
    #[arg(long, env = "QUIVER_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Seconds an HTTP/1.1 client has to send a request's headers once it
    /// has started (slowloris); the connection is closed after that.
    #[arg(long, env = "QUIVER_HTTP_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 30)]
    pub http_header_read_timeout_seconds: u64,

    /// Seconds an HTTP connection may stay open with no request in flight
    /// and nothing sent or received; then it is closed (HTTP/2: GOAWAY).
    /// Longer than the usual load balancer idle timeouts (60 s on AWS, 600 s
    /// on Google Cloud), so the balancer, not quiver, closes first.
    #[arg(long, env = "QUIVER_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 620)]
    pub http_idle_timeout_seconds: u64,

    /// Streams one HTTP/2 connection may have open at once, on both
    /// listeners; a client opening more waits for one to end (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "QUIVER_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,

    /// gRPC HTTP/2 keepalive: milliseconds between pings on a connection
    /// (Triton's flag and default, 2 hours); 0 turns them off.
    #[arg(long, env = "QUIVER_GRPC_KEEPALIVE_TIME", default_value_t = 7_200_000)]
    pub grpc_keepalive_time: u64,

    /// Milliseconds a keepalive ping waits for its answer before the
    /// connection is closed (Triton's flag and default).
    #[arg(long, env = "QUIVER_GRPC_KEEPALIVE_TIMEOUT", default_value_t = 20_000)]
    pub grpc_keepalive_timeout: u64,

    /// Milliseconds a gRPC connection may live before the server asks the
    /// client to reconnect (GOAWAY), spreading clients over new replicas;
    /// 0: no limit (Triton's flag).
    #[arg(long, env = "QUIVER_GRPC_MAX_CONNECTION_AGE", default_value_t = 0)]
    pub grpc_max_connection_age: u64,

    /// Milliseconds a connection past its age keeps for its open calls.
    #[arg(long, env = "QUIVER_GRPC_MAX_CONNECTION_AGE_GRACE", default_value_t = 0)]
    pub grpc_max_connection_age_grace: u64,

    /// Seconds between checks of the TLS files for a rotated certificate.
    #[arg(long, env = "QUIVER_TLS_RELOAD_SECONDS", default_value_t = 10)]
    pub tls_reload_seconds: u64,

    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "quiver_server=debug".
    #[arg(long, env = "QUIVER_LOG", default_value = "info")]
    pub log: String,

    /// Check the command line (quiver's and Triton's flags) and exit: 0 when
    /// it would start, 2 with the reason when it would not. Loads nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Triton's verbose logging level: 1 turns quiver's own logs to debug,
    /// 2 or more to trace, over --log. `/v2/logging` changes it at run time,
    /// as it does the four below.
    #[arg(long, env = "QUIVER_LOG_VERBOSE", default_value_t = 0)]
    pub log_verbose: u32,

    /// Write INFO lines (Triton's --log-info=<bool>).
    #[arg(long, env = "QUIVER_LOG_INFO", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub log_info: bool,

    /// Write WARN lines (Triton's --log-warning=<bool>).
    #[arg(long, env = "QUIVER_LOG_WARNING", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub log_warning: bool,

    /// Write ERROR lines (Triton's --log-error=<bool>).
    #[arg(long, env = "QUIVER_LOG_ERROR", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub log_error: bool,

    /// Append the log to this file instead of standard error (Triton's
    /// --log-file).
    #[arg(long, env = "QUIVER_LOG_FILE")]
    pub log_file: Option<std::path::PathBuf>,

    /// Triton's --log-format: `default` or `ISO8601`. quiver's lines carry an
    /// ISO 8601 time in both.
    #[arg(long, env = "QUIVER_LOG_FORMAT", default_value = "default",
          value_parser = ["default", "ISO8601"])]
    pub log_format: String,

    /// Triton's --trace-config, repeatable: `SETTING=VALUE` for the global
    /// trace settings (`mode`, `level`, `rate`, `count`), or
    /// `triton,file=PATH` / `triton,log-frequency=N` /
    /// `opentelemetry,url=URL` / `opentelemetry,resource=KEY=VALUE` /
    /// `opentelemetry,bsp_max_queue_size|bsp_schedule_delay|bsp_max_export_batch_size=N`.
    /// Over the `OTEL_*` environment (docs/observability.md).
    #[arg(long = "trace-config", value_name = "[MODE,]SETTING=VALUE")]
    pub trace_config: Vec<String>,

    /// OpenTelemetry's standard environment, for those who know it rather
    /// than Triton: an endpoint turns on OTLP tracing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", hide = true)]
    pub otel_traces_endpoint: Option<String>,
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide = true)]
    pub otel_endpoint: Option<String>,
    #[arg(long, env = "OTEL_SERVICE_NAME", hide = true)]
    pub otel_service_name: Option<String>,
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", hide = true)]
    pub otel_resource_attributes: Option<String>,
    #[arg(long, env = "OTEL_TRACES_SAMPLER", hide = true)]
    pub otel_traces_sampler: Option<String>,
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", hide = true)]
    pub otel_traces_sampler_arg: Option<String>,

    /// Triton's --cache-config, repeatable: `local,size=BYTES` keeps answers
    /// in this process (least recently used out first), `redis,host=H`,
    /// `redis,port=P`, ... in a Redis shared by replicas. Models enable it
    /// with `response_cache { enable: true }` (docs/compatibility.md).
    #[arg(long = "cache-config", value_name = "CACHE,KEY=VALUE")]
    pub cache_config: Vec<String>,

    /// Triton's older flag: a local response cache of this many bytes.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub response_cache_byte_size: Option<usize>,

    /// System shared memory: the key prefixes a region may be registered
    /// from (comma-separated, repeatable). Unset, every key is allowed, as in
    /// Triton.
    #[arg(
        long,
        env = "QUIVER_SHARED_MEMORY_KEY_PREFIX",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    pub shared_memory_key_prefix: Vec<String>,

    /// Exit at start-up if a model that should serve fails to load (Triton's
    /// --exit-on-error, whose default is true). quiver's default is false:
    /// one broken model does not take the others down.
    #[arg(long, env = "QUIVER_EXIT_ON_ERROR", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub exit_on_error: bool,
}

/// The response cache the server keeps answers in.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheConfig {
    Local { size: usize },
    Redis(crate::redis_cache::Settings),
}

impl Config {
    /// `--max-inflight-bytes`, or a quarter of the memory this process may use.
    pub fn max_inflight_bytes(&self) -> usize {
        self.max_inflight_bytes.unwrap_or_else(|| {
            let limit = quiver_engine::admission::memory_limit().unwrap_or(4 << 30);
            usize::try_from(limit / 4).unwrap_or(usize::MAX)
        })
    }

    /// The client CA bundle for mutual TLS: --tls-client-ca, or Triton's
    /// --grpc-root-cert when --grpc-use-ssl-mutual=true.
    pub fn client_ca(&self) -> Option<&PathBuf> {
        self.tls_client_ca.as_ref().or(match self.grpc_use_ssl_mutual {
            Some(true) => self.grpc_root_cert.as_ref(),
            _ => None,
        })
    }

    /// The largest request body or message the listeners accept.
    pub fn largest_request(&self) -> usize {
        self.http_max_body_bytes.max(self.grpc_max_message_bytes)
    }

    /// Parses the command line, Triton's flags included: the ones quiver
    /// cannot honour are taken out first and returned as warnings to log.
    pub fn parse_with_triton_flags() -> (Config, Vec<String>) {
        let (args, mut warnings) = crate::triton_cli::strip_ignored(std::env::args_os());
        let config = Config::parse_from(args);
        warnings.extend(config.backend_config_warnings());
        (config, warnings)
    }

    /// A warning for each `--backend-config` key quiver does not act on,
    /// naming the key and why (Triton's command lines carry some that only
    /// Triton's backends read; a typo should not pass unseen either).
    pub fn backend_config_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for arg in &self.backend_config {
            let mut settings = quiver_runtimes::Settings::default();
            // A value that does not parse is refused by validate().
            if settings.parse_into(arg).is_err() {
                continue;
            }
            for (backend, key) in settings.keys() {
                if let Some(why) = quiver_runtimes::registry::review_setting(backend, key) {
                    warnings.push(format!("--backend-config={arg} is accepted and ignored: {why}"));
                }
            }
        }
        warnings
    }

    /// The log settings the flags ask for (`crate::logging`).
    pub fn log_settings(&self) -> crate::logging::Settings {
        crate::logging::Settings {
            log_file: self
                .log_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            log_info: self.log_info,
            log_warnings: self.log_warning,
            log_errors: self.log_error,
            log_verbose_level: self.log_verbose,
            log_format: self.log_format.clone(),
        }
    }

    /// Tracing as `--trace-config` and the `OTEL_*` environment set it:
    /// the environment first, Triton's flag over it; an error names the
    /// entry and what was wrong.
    pub fn trace(&self) -> Result<crate::trace::settings::Config, String> {
        use crate::trace::settings::{self, Config as Trace, Mode};
        let mut t = Trace::default();
        let mut resource: Vec<(String, String)> = Vec::new();
        let endpoint = match (&self.otel_traces_endpoint, &self.otel_endpoint) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(base)) => Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
            (None, None) => None,
        };
        if let Some(url) = endpoint {
            // OpenTelemetry's default sampler (parent based, always on).
            t.mode = Mode::OpenTelemetry;
            t.otel.url = url;
            t.values.timestamps = true;
            t.values.rate = 1;
        }
        match self.otel_traces_sampler.as_deref() {
            None | Some("always_on" | "parentbased_always_on") => {}
            Some("always_off" | "parentbased_always_off") => t.values.timestamps = false,
            Some("traceidratio" | "parentbased_traceidratio") => {
                let arg = self.otel_traces_sampler_arg.as_deref().unwrap_or("1");
                let ratio: f64 = arg
                    .parse()
                    .ok()
                    .filter(|r: &f64| *r > 0.0 && *r <= 1.0)
                    .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG: expected a ratio in (0, 1], got '{arg}'"))?;
                // quiver counts: a ratio of 1/N traces every Nth request.
                t.values.rate = (1.0 / ratio).round() as u32;
            }
            Some(other) => return Err(format!("OTEL_TRACES_SAMPLER: '{other}' is not a sampler quiver knows")),
        }
        for pair in self.otel_resource_attributes.iter().flat_map(|a| a.split(',')) {
            if let Some((k, v)) = pair.split_once('=') {
                resource.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let mut levels: Vec<String> = Vec::new();
        for entry in &self.trace_config {
            let bad = |why: String| format!("--trace-config {entry}: {why}");
            let (mode, setting) = match entry.split_once(',') {
                Some((m, s)) if !m.contains('=') => (Some(m), s),
                _ => (None, entry.as_str()),
            };
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| bad("expected SETTING=VALUE".into()))?;
            let number = |name| settings::parse_number(name, value).map_err(&bad);
            match (mode, key) {
                (None, "mode") => {
                    t.mode = match value {
                        "triton" => Mode::Triton,
                        "opentelemetry" => Mode::OpenTelemetry,
                        _ => return Err(bad("the modes are triton and opentelemetry".into())),
                    }
                }
                (None, "level") => levels.push(value.to_owned()),
                (None, "rate") => t.values.rate = number("rate")? as u32,
                (None, "count") => t.values.count = number("count")? as i32,
                (None | Some("triton"), "file") => t.values.file = value.to_owned(),
                (None | Some("triton"), "log-frequency" | "log_frequency") => {
                    t.values.log_frequency = number("log-frequency")? as u32
                }
                (Some("opentelemetry"), "url") => {
                    t.otel.url = if value.contains("://") {
                        value.to_owned()
                    } else {
                        format!("http://{value}")
                    }
                }
                (Some("opentelemetry"), "resource") => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| bad("expected resource=KEY=VALUE".into()))?;
                    resource.push((k.to_owned(), v.to_owned()));
                }
                (Some("opentelemetry"), "bsp_max_queue_size") => {
                    t.otel.max_queue = value.parse().map_err(|_| bad("expected a count".into()))?
                }
                (Some("opentelemetry"), "bsp_max_export_batch_size") => {
                    t.otel.max_batch = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("expected a positive count".into()))?
                }
                (Some("opentelemetry"), "bsp_schedule_delay") => {
                    let ms: u64 = value.parse().map_err(|_| bad("expected milliseconds".into()))?;
                    t.otel.schedule_delay = std::time::Duration::from_millis(ms)
                }
                (Some(m), _) if m != "triton" && m != "opentelemetry" => {
                    return Err(bad(format!("unknown mode '{m}' (triton, opentelemetry)")));
                }
                _ => return Err(bad(format!("unknown setting '{key}'"))),
            }
        }
        if !levels.is_empty() {
            t.values.timestamps = settings::level(t.mode, &levels).map_err(|e| format!("--trace-config level: {e}"))?;
        }
        if !resource.iter().any(|(k, _)| k == "service.name") {
            let name = self.otel_service_name.clone().unwrap_or_else(|| "quiver".into());
            resource.insert(0, ("service.name".into(), name));
        }
        t.otel.resource = resource;
        Ok(t)
    }

    /// `--strict-readiness`, or its default for how the server is used.
    pub fn strict_readiness(&self) -> bool {
        self.strict_readiness.unwrap_or(self.model_name.is_some())
    }

    /// The backends' settings: --backend-directory, --backend-config, and
    /// ONNX Runtime's library as --onnxruntime-lib and its defaults find it.
    pub fn backend_settings(&self) -> Result<quiver_runtimes::Settings, String> {
        let mut settings = quiver_runtimes::Settings::default();
        settings.directory = self.backend_directory.clone();
        settings.cpu_fallback = self.allow_cpu_fallback;
        settings.cuda_library_path = self.cuda_library_path.clone();
        // Unset: the ONNX Runtime backend looks where it usually is.
        if let Some(library) = self.onnxruntime_lib.as_ref().or(self.ort_dylib_path.as_ref()) {
            settings.set("onnxruntime", "library", library.to_string_lossy());
        }
        for arg in &self.backend_config {
            settings.parse_into(arg)?;
        }
        Ok(settings)
    }

    /// The response cache `--cache-config` describes, if any.
    pub fn cache(&self) -> Result<Option<CacheConfig>, String> {
        let mut local: Option<usize> = self.response_cache_byte_size;
        let mut redis: Option<crate::redis_cache::Settings> = None;
        for entry in &self.cache_config {
            let bad = |why: &str| format!("--cache-config {entry}: {why}");
            let (cache, setting) = entry.split_once(',').ok_or_else(|| bad("expected CACHE,KEY=VALUE"))?;
            let (key, value) = setting.split_once('=').ok_or_else(|| bad("expected CACHE,KEY=VALUE"))?;
            match cache {
                "local" => match key {
                    "size" => {
                        let size: usize = value.trim().parse().map_err(|_| bad("size is a number of bytes"))?;
                        local = Some(size);
                    }
                    _ => return Err(bad("the local cache takes size=BYTES")),
                },
                "redis" => redis
                    .get_or_insert_with(Default::default)
                    .set(key, value)
                    .map_err(|e| bad(&e))?,
                _ => return Err(bad("the caches are local and redis")),
            }
        }
        match (local, redis) {
            (Some(_), Some(_)) => Err("--cache-config: one cache at a time, local or redis".into()),
            (Some(0), None) => Err("--cache-config local,size: the size must be more than 0".into()),
            (Some(size), None) => Ok(Some(CacheConfig::Local { size })),
            (None, Some(r)) => Ok(Some(CacheConfig::Redis(r))),
            (None, None) => Ok(None),
        }
    }

    /// Checks that hold across fields; run once at start-up.
    pub fn validate(&self) -> Result<(), String> {
        self.trace()?;
        self.cache()?;
        if self.default_max_batch_size < 0 {
            return Err("--default-max-batch-size must be 0 or more".into());
        }
        if self.grpc_use_ssl == Some(true) && self.tls_cert.is_none() {
            return Err(
                "--grpc-use-ssl=true needs --grpc-server-cert and --grpc-server-key (or --tls-cert and --tls-key)"
                    .into(),
            );
        }
        if self.grpc_use_ssl_mutual == Some(true) && self.client_ca().is_none() {
            return Err("--grpc-use-ssl-mutual=true needs --grpc-root-cert (or --tls-client-ca)".into());
        }
        if self.client_ca().is_some() && self.tls_cert.is_none() {
            return Err("mutual TLS needs the server's own certificate: --tls-cert and --tls-key".into());
        }
        if self.max_concurrent_streams == 0 || self.http_header_read_timeout_seconds == 0 {
            return Err("--max-concurrent-streams and --http-header-read-timeout-seconds must be at least 1".into());
        }
        let settings = self.backend_settings()?;
        for (backend, key) in settings.keys() {
            if quiver_runtimes::registry::SHARED_SETTINGS.contains(&key) {
                let value = settings.get(backend, key).unwrap_or_default();
                if value.trim().parse::<u32>().is_err() {
                    return Err(format!(
                        "--backend-config {key}={value}: a whole number of 0 or more is needed"
                    ));
                }
            }
        }
        if !(self.monitoring_window_seconds >= 0.1 && self.monitoring_window_seconds <= 86_400.0) {
            return Err("--monitoring-window-seconds must be between 0.1 and 86400".into());
        }
        for url in &self.monitoring_webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--monitoring-webhook {url}: an http:// or https:// URL is needed"
                ));
            }
        }
        self.payload_log()?;
        if self.queue_capacity == 0 {
            return Err("--queue-capacity must be at least 1".into());
        }
        if self.model_load_threads == 0 {
            return Err("--model-load-threads must be at least 1".into());
        }
        if (self.model_control_mode == ControlMode::Poll || !self.registry_model.is_empty())
            && self.repository_poll_secs == 0
        {
            return Err("--repository-poll-secs must be at least 1".into());
        }
        if let Some(bad) = self
            .load_model
            .iter()
            .find(|m| m.is_empty() || m.contains('/') || m.starts_with('.'))
        {
            return Err(format!("--load-model '{bad}' is not a model folder name"));
        }
        if !self.load_model.is_empty() && self.model_control_mode != ControlMode::Explicit {
            return Err("--load-model needs --model-control-mode=explicit (the other modes load every model)".into());
        }
        if self.max_inflight_requests == 0 || self.max_blocking_threads == 0 {
            return Err("--max-inflight-requests and --max-blocking-threads must be at least 1".into());
        }
        // A large request may take 3/4 of the budget (the rest is kept for
        // small ones): a budget set by hand must leave room for the largest.
        if let Some(budget) = self.max_inflight_bytes
            && budget / 4 * 3 < self.largest_request()
        {
            return Err(format!(
                "--max-inflight-bytes {budget} leaves large requests {} bytes, below the largest request \
                 allowed ({} bytes: --http-max-body-bytes, --grpc-max-message-bytes): raise it or lower those",
                budget / 4 * 3,
                self.largest_request()
            ));
        }
        for flag in &self.registry_model {
            crate::sources::mlflow::Follow::parse(flag)?;
        }
        if !self.registry_model.is_empty() && self.mlflow_tracking_uri.is_none() {
            return Err("--registry-model needs --mlflow-tracking-uri (or MLFLOW_TRACKING_URI)".into());
        }
        if self.worker_threads == 0 {
            return Err("--worker-threads must be at least 1".into());
        }
        if !self.allow_http && !self.allow_grpc {
            return Err("--allow-http=false and --allow-grpc=false leave nothing to serve".into());
        }
        let mut ports: Vec<u16> = [
            (self.allow_http, self.http_port),
            (self.allow_grpc, self.grpc_port),
            (self.allow_metrics, self.metrics_port),
        ]
        .into_iter()
        .filter_map(|(on, port)| on.then_some(port))
        .collect();
        ports.extend(self.admin_port);
        for (i, a) in ports.iter().enumerate() {
            if *a != 0 && ports[i + 1..].contains(a) {
                return Err(format!("port {a} is given to two listeners"));
            }
        }
        Ok(())
    }

    /// The payload log's settings (docs/logging.md), checked.
    pub fn payload_log(&self) -> Result<crate::payload_log::Global, String> {
        use crate::payload_log::settings::{FileSettings, Global, Mode, Settings, check_rate, check_url, names};
        use std::time::Duration;
        let c = self;
        if let Some(url) = &c.payload_log_url {
            check_url(url, "--payload-log-url")?;
        }
        let mode = Mode::parse(&c.payload_log_mode).map_err(|e| format!("--payload-log-mode: {e}"))?;
        if c.payload_log_batch_size == 0 || c.payload_log_queue == 0 || c.payload_log_workers == 0 {
            return Err(
                "--payload-log-batch-size, --payload-log-queue and --payload-log-workers must be at least 1".into(),
            );
        }
        if !(c.payload_log_retry_seconds >= 0.0 && c.payload_log_retry_seconds <= 86_400.0) {
            return Err("--payload-log-retry-seconds must be between 0 and 86400".into());
        }
        if c.payload_log_file_max_bytes < 4096 {
            return Err("--payload-log-file-max-bytes must be at least 4096".into());
        }
        let http_port = c.http_port;
        Ok(Global {
            defaults: Settings {
                mode,
                url: c.payload_log_url.clone(),
                file: c.payload_log_file.is_some(),
                sample_rate: check_rate(c.payload_log_sample_rate, "--payload-log-sample-rate")?,
                metadata_headers: names(&c.payload_log_metadata_headers),
                redact_inputs: c.payload_log_redact_inputs.clone(),
                redact_headers: names(&c.payload_log_redact_headers),
                max_event_bytes: c.payload_log_max_event_bytes.max(1024),
            },
            file: c.payload_log_file.clone().map(|path| FileSettings {
                path,
                max_bytes: c.payload_log_file_max_bytes,
                keep: c.payload_log_file_keep,
            }),
            batch_size: c.payload_log_batch_size,
            batch_interval: Duration::from_millis(c.payload_log_batch_interval_ms.max(1)),
            queue: c.payload_log_queue,
            queue_bytes: c.payload_log_queue_bytes,
            workers: c.payload_log_workers,
            scheduling: c.payload_log_scheduling,
            retry_for: Duration::from_secs_f64(c.payload_log_retry_seconds),
            source_uri: c.payload_log_source_uri.clone(),
            http_port,
            inference_service: c.payload_log_inference_service.clone(),
            namespace: c.payload_log_namespace.clone(),
            component: c.payload_log_component.clone(),
            endpoint: c.payload_log_endpoint.clone(),
        })
    }

    /// A configuration for tests: every port 0, everything else default.
    pub fn for_tests(model_repository: impl Into<PathBuf>) -> Config {
        let mut c = Config::parse_from(["quiver"]);
        c.model_repository = model_repository.into();
        c.host = IpAddr::from([127, 0, 0, 1]);
        c.http_port = 0;
        c.grpc_port = 0;
        c.metrics_port = 0;
        c.shutdown_drain_seconds = 0;
        c.shutdown_grace_seconds = 5;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("quiver").chain(args.iter().copied()))
    }

    #[test]
    fn tritons_log_flags_are_the_initial_log_settings() {
        let c = parse(&[]);
        let s = c.log_settings();
        assert!(s.log_info && s.log_warnings && s.log_errors);
        assert_eq!(
            (s.log_file.as_str(), s.log_verbose_level, s.log_format.as_str()),
            ("", 0, "default")
        );
        let c = parse(&[
            "--log-info=false",
            "--log-warning",
            "false",
            "--log-error",
            "--log-verbose=2",
            "--log-file=/var/log/quiver.log",
            "--log-format=ISO8601",
        ]);
        let s = c.log_settings();
        assert!(!s.log_info && !s.log_warnings && s.log_errors);
        assert_eq!(
            (s.log_file.as_str(), s.log_verbose_level, s.log_format.as_str()),
            ("/var/log/quiver.log", 2, "ISO8601")
        );
        let bad = Config::try_parse_from(["quiver", "--log-format=json"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("--log-format"), "{bad}");
    }

    #[test]
    fn trace_config_is_read_as_triton_reads_it() {
        use crate::trace::settings::Mode;
        let t = parse(&[]).trace().unwrap();
        assert_eq!(
            (t.mode, t.values.timestamps, t.values.rate, t.values.count),
            (Mode::Triton, false, 1000, -1)
        );
        assert_eq!(t.otel.resource, [("service.name".to_owned(), "quiver".to_owned())]);
        let t = parse(&[
            "--trace-config=mode=opentelemetry",
            "--trace-config",
            "level=TIMESTAMPS",
            "--trace-config=rate=10",
            "--trace-config=count=3",
            "--trace-config=opentelemetry,url=collector:4318/v1/traces",
            "--trace-config=opentelemetry,resource=service.name=fraud",
            "--trace-config=opentelemetry,resource=team=risk",
            "--trace-config=opentelemetry,bsp_max_queue_size=100",
            "--trace-config=opentelemetry,bsp_schedule_delay=250",
            "--trace-config=opentelemetry,bsp_max_export_batch_size=20",
        ])
        .trace()
        .unwrap();
        assert_eq!(t.mode, Mode::OpenTelemetry);
        assert_eq!((t.values.timestamps, t.values.rate, t.values.count), (true, 10, 3));
        assert_eq!(t.otel.url, "http://collector:4318/v1/traces");
        assert_eq!(
            t.otel.resource,
            [("service.name".into(), "fraud".into()), ("team".into(), "risk".into())]
        );
        assert_eq!(
            (t.otel.max_queue, t.otel.max_batch, t.otel.schedule_delay.as_millis()),
            (100, 20, 250)
        );
        let t = parse(&[
            "--trace-config=triton,file=/tmp/t.json",
            "--trace-config=triton,log-frequency=50",
        ])
        .trace()
        .unwrap();
        assert_eq!((t.values.file.as_str(), t.values.log_frequency), ("/tmp/t.json", 50));
        for (arg, needle) in [
            ("rate=-1", "rate=-1"),
            ("level=LOUD", "unknown trace level"),
            ("mode=zipkin", "the modes are triton and opentelemetry"),
            ("zipkin,url=x", "unknown mode 'zipkin'"),
            ("colour=blue", "unknown setting 'colour'"),
        ] {
            let e = parse(&[&format!("--trace-config={arg}")]).trace().unwrap_err();
            assert!(e.contains(needle), "{arg}: {e}");
        }
        let e = parse(&["--trace-config=mode=opentelemetry", "--trace-config=level=TENSORS"])
            .trace()
            .unwrap_err();
        assert!(e.contains("not supported with OpenTelemetry"), "{e}");
        // OpenTelemetry's environment, read through clap's env attributes.
        let mut c = parse(&[]);
        c.otel_endpoint = Some("http://otel:4318/".into());
        c.otel_service_name = Some("scorer".into());
        c.otel_traces_sampler = Some("traceidratio".into());
        c.otel_traces_sampler_arg = Some("0.01".into());
        let t = c.trace().unwrap();
        assert_eq!(t.mode, Mode::OpenTelemetry);
        assert_eq!(t.otel.url, "http://otel:4318/v1/traces");
        assert_eq!((t.values.timestamps, t.values.rate), (true, 100));
        assert_eq!(t.otel.resource[0], ("service.name".into(), "scorer".into()));
    }

    #[test]
    fn backend_config_keys_are_read_warned_or_refused() {
        let c = parse(&[
            "--backend-config=default-max-batch-size=8",
            "--backend-config",
            "onnxruntime,default-max-batch-size=16",
            "--backend-config",
            "onnxruntime,enable-global-threadpool=1",
            "--backend-config",
            "pytorch,libtroch=/opt",
        ]);
        c.validate().unwrap();
        let warnings = c.backend_config_warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("enable-global-threadpool")));
        assert!(warnings.iter().any(|w| w.contains("'libtroch'")));
        let e = parse(&["--backend-config=default-max-batch-size=eight"])
            .validate()
            .unwrap_err();
        assert!(e.contains("default-max-batch-size=eight"), "{e}");
        assert!(parse(&["--backend-config=nonsense"]).validate().is_err());
    }

    #[test]
    fn model_control_flags_are_checked_together() {
        assert!(
            parse(&[
                "--model-control-mode",
                "explicit",
                "--load-model",
                "a,b",
                "--load-model",
                "*"
            ])
            .validate()
            .is_ok()
        );
        let c = parse(&[
            "--model-control-mode",
            "explicit",
            "--load-model",
            "a",
            "--load-model",
            "b",
        ]);
        assert_eq!(c.load_model, vec!["a", "b"]);
        let e = parse(&["--load-model", "a"]).validate().unwrap_err();
        assert!(e.contains("--model-control-mode=explicit"), "{e}");
        let e = parse(&["--model-control-mode", "explicit", "--load-model", "../a"])
            .validate()
            .unwrap_err();
        assert!(e.contains("'../a'"), "{e}");
        let e = parse(&["--model-control-mode", "poll", "--repository-poll-secs", "0"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--repository-poll-secs"), "{e}");
        assert!(Config::try_parse_from(["quiver", "--model-control-mode", "sometimes"]).is_err());
        let e = parse(&["--max-inflight-bytes", "67108864"]).validate().unwrap_err();
        assert!(e.contains("leaves large requests 50331648 bytes"), "{e}");
        assert!(parse(&["--max-inflight-bytes", "100000000"]).validate().is_ok());
    }

    fn global(args: &[&str]) -> Result<crate::payload_log::Global, String> {
        parse(args).payload_log()
    }

    fn with_params(params: &[(&str, &str)]) -> quiver_proto::inference::ModelConfig {
        let mut c = quiver_proto::inference::ModelConfig::default();
        for (k, v) in params {
            c.parameters.insert(
                (*k).into(),
                quiver_proto::inference::ModelParameter {
                    string_value: (*v).into(),
                },
            );
        }
        c
    }

    #[test]
    fn payload_log_flags_and_a_models_parameters() {
        let g = global(&[
            "--payload-log-url",
            "http://sink:8080",
            "--payload-log-metadata-headers",
            "X-User",
        ])
        .unwrap();
        assert_eq!(g.defaults.mode, Some(crate::payload_log::Mode::All));
        assert_eq!(g.defaults.metadata_headers, vec!["x-user"]);
        assert!(g.defaults.logs());
        let s = g
            .defaults
            .for_model(&with_params(&[
                ("payload_log_mode", "request"),
                ("payload_log_sample_rate", "0.25"),
                ("payload_log_redact_inputs", "ssn, card"),
            ]))
            .unwrap();
        assert_eq!(s.mode, Some(crate::payload_log::Mode::Request));
        assert_eq!(s.sample_rate, 0.25);
        assert_eq!(s.redact_inputs, vec!["ssn", "card"]);
        assert_eq!(s.url.as_deref(), Some("http://sink:8080"));
        let off = g
            .defaults
            .for_model(&with_params(&[("payload_log_mode", "none")]))
            .unwrap();
        assert!(!off.logs());
    }

    #[test]
    fn bad_payload_log_settings_are_refused_by_name() {
        let e = global(&["--payload-log-mode", "everything"]).unwrap_err();
        assert!(e.contains("--payload-log-mode") && e.contains("everything"), "{e}");
        let e = global(&["--payload-log-url", "sink:8080"]).unwrap_err();
        assert!(e.contains("--payload-log-url"), "{e}");
        let e = global(&["--payload-log-sample-rate", "2"]).unwrap_err();
        assert!(e.contains("sample-rate"), "{e}");
        let g = global(&[]).unwrap();
        assert!(!g.defaults.logs());
        let e = g
            .defaults
            .for_model(&with_params(&[("payload_log_sample_rate", "most")]))
            .unwrap_err();
        assert!(e.contains("payload_log_sample_rate") && e.contains("most"), "{e}");
    }
}
