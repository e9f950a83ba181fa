//! quiver-loadtest: drives an Open Inference Protocol server (quiver, Triton,
//! MLServer, KServe) over HTTP (JSON or binary tensor data) and gRPC, in
//! closed-loop concurrency sweeps or at an open-loop constant rate, and
//! measures the same model in-process on ONNX Runtime for the ceiling.
mod client;
mod cpu;
mod inprocess;
mod report;
mod run;
mod soak;
mod stream;
mod swap;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use client::Sender;
use report::Row;

#[derive(Parser, Debug)]
#[command(name = "quiver-loadtest", about)]
struct Args {
    /// Model to load.
    #[arg(long)]
    model: String,
    /// HTTP base URL (metadata and statistics are read from here too).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    grpc: String,
    /// Protocols to drive, in order: grpc, http-binary, http-json, and
    /// grpc-live (ServerLive calls: the gRPC stack's floor, no inference),
    /// grpc-stream (ModelStreamInfer: each of --concurrency streams sends
    /// --stream-requests requests as fast as it can).
    #[arg(long, value_delimiter = ',', default_value = "grpc,http-binary,http-json")]
    protocols: Vec<String>,
    /// Closed-loop concurrency levels to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Requests per stream for grpc-stream.
    #[arg(long, default_value_t = 10_000)]
    stream_requests: u64,
    /// Open loop at this many requests per second instead of the sweep.
    #[arg(long)]
    rate: Option<f64>,
    /// Outstanding requests at most in open loop.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Connections (HTTP/2 channels for gRPC) shared by the clients.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds measured per row, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Server process to report CPU use for.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Measure the model in-process instead: path of its model file
    /// (model.onnx, model.pt) in its version folder; the backend and, for
    /// TorchScript, the inputs come from the model folder's config.pbtxt.
    #[arg(long)]
    in_process: Option<PathBuf>,
    /// ONNX Runtime library for --in-process.
    #[arg(long, env = "ORT_DYLIB_PATH", default_value = ".cache/onnxruntime/libonnxruntime.so")]
    onnxruntime_lib: PathBuf,
    /// CUDA library folders for --in-process on a GPU (as quiver's flag).
    #[arg(long, env = "QUIVER_CUDA_LIBRARY_PATH", value_delimiter = ':')]
    cuda_library_path: Vec<PathBuf>,
    #[arg(long, default_value_t = 1)]
    intra_op_threads: usize,
    /// JSON report of an --in-process run: its throughput is the ceiling the
    /// server rows are compared with.
    #[arg(long)]
    ceiling: Option<PathBuf>,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hot-swap scenario: the model repository the server serves in explicit
    /// model control mode. Versions of `y = x * K` are written there and
    /// loaded one after another while REST and gRPC clients (half each, the
    /// first --concurrency in total) drive the model; --duration is the
    /// steady window measured before the swaps.
    #[arg(long)]
    swap_repository: Option<PathBuf>,
    /// Versions to publish in the hot-swap scenario.
    #[arg(long, default_value_t = 100)]
    swaps: u64,
    /// Seconds between two published versions.
    #[arg(long, default_value_t = 0.5)]
    swap_every: f64,
    /// The `y = x * K` template model (see tests/fixtures/generate.py).
    #[arg(long, default_value = "tests/fixtures/scale.onnx")]
    swap_template: PathBuf,
    /// Soak run (scripts/soak.sh): the model repository the server serves
    /// in poll mode. --swap-model gets a new version every --swap-every
    /// seconds, --split-model (versions 1 and 2) a new traffic policy every
    /// 3 s, and every --model named (comma-separated) is driven too, for
    /// --duration seconds by --concurrency clients and --streams streams.
    #[arg(long)]
    soak_repository: Option<PathBuf>,
    #[arg(long, default_value = "soak_swap")]
    swap_model: String,
    #[arg(long, default_value = "soak_split")]
    split_model: String,
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Where the soak writes its report (markdown) too.
    #[arg(long)]
    soak_report: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    if let Some(repository) = &args.soak_repository {
        let others: Vec<String> = args
            .model
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        let passed = runtime.block_on(soak::run(soak::Soak {
            http: &args.http,
            grpc: &args.grpc,
            repository,
            template: &args.swap_template,
            swap_model: &args.swap_model,
            split_model: &args.split_model,
            other_models: &others,
            duration: Duration::from_secs_f64(args.duration),
            swap_every: Duration::from_secs_f64(args.swap_every),
            clients: args.concurrency.first().copied().unwrap_or(8).max(2),
            streams: args.streams,
            pid: args.server_pid,
            report: args.soak_report.clone(),
        }))?;
        if !passed {
            std::process::exit(1);
        }
        return Ok(());
    }
    let rows = runtime.block_on(drive(&args))?;
    let md = report::markdown(&rows);
    print!("{md}");
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&rows)?)?;
    }
    if let Some(p) = &args.markdown {
        std::fs::write(p, md)?;
    }
    Ok(())
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client.get(url.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// (inference_count, execution_count) summed over the model's versions.
async fn counts(args: &Args) -> Option<(u64, u64)> {
    let stats = get_json(&format!("{}/v2/models/{}/stats", args.http, args.model))
        .await
        .ok()?;
    let models = stats["model_stats"].as_array()?;
    Some(models.iter().fold((0, 0), |(i, e), m| {
        (
            i + m["inference_count"].as_u64().unwrap_or(0),
            e + m["execution_count"].as_u64().unwrap_or(0),
        )
    }))
}

async fn drive(args: &Args) -> anyhow::Result<Vec<Row>> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    if let Some(repository) = &args.swap_repository {
        return swap::run(swap::Scenario {
            model: &args.model,
            http: &args.http,
            grpc: &args.grpc,
            repository,
            template: &args.swap_template,
            swaps: args.swaps,
            every: Duration::from_secs_f64(args.swap_every),
            concurrency: args.concurrency.first().copied().unwrap_or(16).max(2),
            steady: duration,
        })
        .await;
    }
    if let Some(model) = &args.in_process {
        let meter = cpu::CpuMeter::start(None);
        let mut settings = quiver_runtimes::Settings::default();
        settings.set("onnxruntime", "library", args.onnxruntime_lib.to_string_lossy());
        settings.cuda_library_path = args.cuda_library_path.clone();
        let m = inprocess::run(&settings, model, args.batch, args.intra_op_threads, warmup, duration)?;
        let mut row = Row::from_measured(&args.model, "in-process", "loop", args.batch, &m);
        row.client_cpu = meter.cores();
        row.avg_batch = Some(args.batch as f64);
        return Ok(vec![row]);
    }
    let ceiling: Option<f64> = match &args.ceiling {
        Some(p) => {
            let rows: Vec<Value> = serde_json::from_slice(&std::fs::read(p)?)?;
            rows.first().and_then(|r| r["inferences_per_s"].as_f64())
        }
        None => None,
    };
    let metadata = get_json(&format!("{}/v2/models/{}", args.http, args.model)).await?;
    let specs = workload::inputs_from_metadata(&metadata, args.batch)?;
    let mut rows = Vec::new();
    for protocol in &args.protocols {
        let mut senders = Vec::new();
        for _ in 0..args.connections.max(1) {
            senders.push(match protocol.as_str() {
                "grpc" | "grpc-stream" => Sender::grpc(&args.grpc, workload::grpc_request(&args.model, &specs)).await?,
                "grpc-live" => Sender::grpc(&args.grpc, workload::grpc_request(&args.model, &specs))
                    .await?
                    .into_live(),
                "http-binary" => {
                    let (body, n) = workload::http_binary_body(&specs);
                    Sender::http(format!("{}/v2/models/{}/infer", args.http, args.model), body, Some(n))
                }
                "http-json" => Sender::http(
                    format!("{}/v2/models/{}/infer", args.http, args.model),
                    workload::http_json_body(&specs),
                    None,
                ),
                other => {
                    anyhow::bail!("unknown protocol '{other}' (grpc, grpc-stream, http-binary, http-json, grpc-live)")
                }
            });
        }
        let loads: Vec<(Option<usize>, Option<f64>)> = match args.rate {
            Some(r) => vec![(None, Some(r))],
            None => args.concurrency.iter().map(|&c| (Some(c), None)).collect(),
        };
        for (concurrency, rate) in loads {
            let mut before = counts(args).await;
            let mut stream_before = None;
            let client = cpu::CpuMeter::start(None);
            let server = args.server_pid.map(|p| cpu::CpuMeter::start(Some(p)));
            let m = match (concurrency, rate, &senders[0]) {
                (Some(c), _, Sender::Grpc { client, request }) if protocol == "grpc-stream" => {
                    // A short unmeasured stream first warms connection and model up.
                    stream::run(client, request, c, args.stream_requests.min(1_000)).await;
                    let before_warm = counts(args).await;
                    let m = stream::run(client, request, c, args.stream_requests).await;
                    stream_before = before_warm;
                    m
                }
                (Some(c), _, _) => run::closed_loop(&senders, c, warmup, duration).await,
                (None, Some(r), _) => run::open_loop(&senders, r, warmup, duration, args.max_in_flight).await,
                _ => unreachable!("either a concurrency or a rate"),
            };
            let client_cpu = client.cores();
            let server_cpu = server.and_then(|s| s.cores());
            let after = counts(args).await;
            if stream_before.is_some() {
                before = stream_before;
            }
            let mode = if rate.is_some() { "open" } else { "closed" };
            let mut row = Row::from_measured(&args.model, protocol, mode, args.batch, &m);
            row.concurrency = concurrency;
            row.rate = rate;
            row.client_cpu = client_cpu;
            row.server_cpu = server_cpu;
            row.avg_batch = match (before, after) {
                (Some((i0, e0)), Some((i1, e1))) if e1 > e0 => Some((i1 - i0) as f64 / (e1 - e0) as f64),
                _ => None,
            };
            row.ceiling_ratio = ceiling.map(|c| row.inferences_per_s / c);
            eprintln!(
                "{} {} {:?}/{:?}: {:.0} inf/s p50 {:.3} ms p99 {:.3} ms errors {:?}",
                args.model, protocol, concurrency, rate, row.inferences_per_s, row.p50_ms, row.p99_ms, row.errors
            );
            rows.push(row);
        }
    }
    Ok(rows)
}
