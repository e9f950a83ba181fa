//! The soak run: a steady mixed load (REST with binary tensor data, gRPC,
//! and `ModelStreamInfer` streams) on several models for a long time while
//! the server is kept busy changing under it, then a report over time.
//!
//! The server serves a repository in poll mode. While the clients run:
//! - `--soak-swap` (the `y = x * K` model, K = version) gets a new version
//!   folder every `--swap-every` seconds: poll mode loads it and retires the
//!   old one, so every swap is a hot swap under load;
//! - `--soak-split` (versions 1 and 2 of the same model) has its traffic
//!   policy replaced every few seconds, cycling the canary's weight;
//! - any further `--model` names (a registry follower's model, whose alias
//!   a script moves) are driven the same way.
//!
//! Every answer is checked: its values must be those of the version it
//! names (K = the version number for every model the soak drives). Failures
//! are counted by cause. Every 5 seconds the server process is sampled:
//! resident memory, open file descriptors, threads, and the size of
//! `/metrics`; latencies go into one histogram per minute.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use quiver_proto::inference::{ModelInferRequest, ModelStreamInferResponse};
use tonic::transport::Channel;

use crate::swap::{HttpClient, Wire, check, floats, grpc_request, write_version};

pub struct Soak<'a> {
    pub http: &'a str,
    pub grpc: &'a str,
    pub repository: &'a Path,
    pub template: &'a Path,
    pub swap_model: &'a str,
    pub split_model: &'a str,
    pub other_models: &'a [String],
    pub duration: Duration,
    pub swap_every: Duration,
    pub clients: usize,
    pub streams: usize,
    pub pid: Option<u32>,
    pub report: Option<PathBuf>,
}

/// One minute of answers, over every client.
struct Minute {
    latencies: Histogram<u64>,
    ok: u64,
    failed: BTreeMap<String, u64>,
}

impl Minute {
    fn new() -> Minute {
        Minute {
            latencies: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            ok: 0,
            failed: BTreeMap::new(),
        }
    }
}

/// Per-minute results, each client adding its own at the end.
type Minutes = Arc<Mutex<Vec<Minute>>>;

/// One sample of the server process.
#[derive(Clone, Copy, Default)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    fds: usize,
    threads: usize,
    metrics_kib: f64,
}

fn sample_process(pid: u32) -> Option<(f64, usize, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:")? as usize;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kib as f64 / 1024.0, fds, threads))
}

/// A `ModelStreamInfer` stream that sends one request and waits for its
/// answer before the next.
async fn stream_client(
    mut client: GrpcInferenceServiceClient<Channel>,
    model: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    minutes: Minutes,
) {
    let mut own: Vec<Minute> = Vec::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<ModelInferRequest>(1);
    let request = grpc_request(&model);
    let mut answers = match client
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            record(
                &mut own,
                started,
                Duration::ZERO,
                Err(format!("stream open: gRPC {:?}", s.code())),
            );
            merge(&minutes, own);
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        if tx.send(request.clone()).await.is_err() {
            record(&mut own, started, t0.elapsed(), Err("stream closed".into()));
            break;
        }
        let result = match answers.message().await {
            Ok(Some(a)) => check_stream(a),
            Ok(None) => Err("stream ended".into()),
            Err(s) => Err(format!("stream gRPC {:?}", s.code())),
        };
        let broken = result.as_ref().is_err_and(|e| e.starts_with("stream"));
        record(&mut own, started, t0.elapsed(), result);
        if broken {
            break;
        }
    }
    merge(&minutes, own);
}

fn check_stream(a: ModelStreamInferResponse) -> Result<(), String> {
    if !a.error_message.is_empty() {
        return Err(format!("stream answer: {}", a.error_message));
    }
    let r = a.infer_response.ok_or("stream answer without a response")?;
    let version: u64 = r.model_version.parse().map_err(|_| "bad model_version")?;
    check(version, &floats(r.raw_output_contents.first().ok_or("no raw output")?))
}

fn record(own: &mut Vec<Minute>, started: Instant, took: Duration, result: Result<(), String>) {
    let minute = (started.elapsed().as_secs() / 60) as usize;
    while own.len() <= minute {
        own.push(Minute::new());
    }
    let m = &mut own[minute];
    match result {
        Ok(()) => {
            m.ok += 1;
            let _ = m.latencies.record((took.as_micros() as u64).max(1));
        }
        Err(cause) => *m.failed.entry(cause).or_default() += 1,
    }
}

fn merge(minutes: &Minutes, own: Vec<Minute>) {
    let mut all = minutes.lock().unwrap_or_else(|e| e.into_inner());
    for (i, m) in own.into_iter().enumerate() {
        while all.len() <= i {
            all.push(Minute::new());
        }
        let _ = all[i].latencies.add(&m.latencies);
        all[i].ok += m.ok;
        for (k, v) in m.failed {
            *all[i].failed.entry(k).or_default() += v;
        }
    }
}

async fn post(http: &HttpClient, method: hyper::Method, url: &str, body: String) -> anyhow::Result<()> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = http.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

async fn metrics_size(http: &HttpClient, base: &str) -> Option<f64> {
    let resp = http.get(format!("{base}/metrics").parse().ok()?).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(body.len() as f64 / 1024.0)
}

pub async fn run(s: Soak<'_>) -> anyhow::Result<bool> {
    let template = std::fs::read(s.template)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    // The metrics are read on their own connection pool: never behind a
    // request of the load on a shared connection.
    let probe: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let channel = Channel::from_shared(s.grpc.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut models = vec![s.swap_model.to_owned(), s.split_model.to_owned()];
    models.extend(s.other_models.iter().cloned());

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let minutes: Minutes = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..s.clients {
        let model = models[i % models.len()].clone();
        let mut wire = match i % 2 {
            0 => Wire::Http {
                client: http.clone(),
                url: format!("{}/v2/models/{model}/infer", s.http),
            },
            _ => Wire::Grpc {
                client: GrpcInferenceServiceClient::new(channel.clone()),
            },
        };
        let (stop, minutes) = (Arc::clone(&stop), Arc::clone(&minutes));
        tasks.push(tokio::spawn(async move {
            let mut own = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let result = wire.send(&model).await.map(|_| ());
                record(&mut own, started, t0.elapsed(), result);
            }
            merge(&minutes, own);
        }));
    }
    for i in 0..s.streams {
        let model = models[i % models.len()].clone();
        tasks.push(tokio::spawn(stream_client(
            GrpcInferenceServiceClient::new(channel.clone()),
            model,
            started,
            Arc::clone(&stop),
            Arc::clone(&minutes),
        )));
    }

    // The changes under the load: a new version of the swapped model every
    // --swap-every, a new traffic policy for the split model every 3 s.
    let swap_dir = s.repository.join(s.swap_model);
    let mut next_version = std::fs::read_dir(&swap_dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let policy_url = format!("{}/v2/models/{}/traffic", s.http, s.split_model);
    let mut samples = Vec::new();
    let (mut swaps, mut policies, mut control_errors) = (0u64, 0u64, Vec::new());
    let mut next_swap = started + s.swap_every;
    let mut next_policy = started + Duration::from_secs(3);
    let mut next_sample = started;
    let end = started + s.duration;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            next_sample += Duration::from_secs(5);
            let mut sample = Sample {
                at_s: started.elapsed().as_secs_f64(),
                metrics_kib: metrics_size(&probe, s.http).await.unwrap_or(f64::NAN),
                ..Default::default()
            };
            if let Some((rss, fds, threads)) = s.pid.and_then(sample_process) {
                (sample.rss_mib, sample.fds, sample.threads) = (rss, fds, threads);
            }
            samples.push(sample);
        }
        if now >= next_swap {
            next_swap += s.swap_every;
            match write_version(&swap_dir, &template, next_version) {
                Ok(()) => {
                    // The version before last is removed: poll mode serves
                    // the latest, and the folder stays small.
                    let _ = std::fs::remove_dir_all(swap_dir.join((next_version.saturating_sub(2)).to_string()));
                    next_version += 1;
                    swaps += 1;
                }
                Err(e) => control_errors.push(format!("write version {next_version}: {e}")),
            }
        }
        if now >= next_policy {
            next_policy += Duration::from_secs(3);
            let canary = [5, 25, 50, 100, 0, 10][(policies % 6) as usize];
            let body = format!(
                r#"{{"variants": [{{"name": "stable", "version": 1, "weight": {}}},
                                  {{"name": "canary", "version": 2, "weight": {canary}}}]}}"#,
                100 - canary
            );
            match post(&probe, hyper::Method::PUT, &policy_url, body).await {
                Ok(()) => policies += 1,
                Err(e) => control_errors.push(format!("traffic policy: {e}")),
            }
        }
        let wake = next_sample.min(next_swap).min(next_policy).min(end);
        tokio::time::sleep_until(wake.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut minutes = std::mem::take(&mut *minutes.lock().unwrap_or_else(|e| e.into_inner()));
    // The last requests finish after the end: folded into the last minute.
    let whole = (s.duration.as_secs_f64() / 60.0).ceil().max(1.0) as usize;
    while minutes.len() > whole {
        let tail = minutes.pop().expect("longer than whole");
        let last = minutes.last_mut().expect("at least one");
        let _ = last.latencies.add(&tail.latencies);
        last.ok += tail.ok;
        for (k, v) in tail.failed {
            *last.failed.entry(k).or_default() += v;
        }
    }
    let (report, passed) = report(&s, &minutes, &samples, swaps, policies, &control_errors);
    print!("{report}");
    if let Some(path) = &s.report {
        std::fs::write(path, &report)?;
    }
    Ok(passed)
}

/// The report: per minute, the load and the process; then the targets.
/// Returns whether no request failed (what the soak asserts; the other
/// targets depend on the machine and are reported, not asserted).
fn report(
    s: &Soak<'_>,
    minutes: &[Minute],
    samples: &[Sample],
    swaps: u64,
    policies: u64,
    control_errors: &[String],
) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "soak: {:.0} s, {} clients (REST binary and gRPC) + {} streams over {} models; {swaps} hot swaps \
         (a new version every {:.1} s, poll mode), {policies} traffic policy changes\n",
        s.duration.as_secs_f64(),
        s.clients,
        s.streams,
        2 + s.other_models.len(),
        s.swap_every.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| minute | answered | failed | p50 ms | p99 ms | RSS MiB | fds | threads | /metrics KiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let at_minute_end = |i: usize| {
        samples
            .iter()
            .rev()
            .find(|x| x.at_s < ((i + 1) * 60) as f64)
            .copied()
            .unwrap_or_default()
    };
    let mut failed_by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, m) in minutes.iter().enumerate() {
        let failed: u64 = m.failed.values().sum();
        for (k, v) in &m.failed {
            *failed_by_cause.entry(k).or_default() += v;
        }
        let x = at_minute_end(i);
        let _ = writeln!(
            out,
            "| {} | {} | {failed} | {:.2} | {:.2} | {:.1} | {} | {} | {:.1} |",
            i + 1,
            m.ok,
            m.latencies.value_at_quantile(0.5) as f64 / 1e3,
            m.latencies.value_at_quantile(0.99) as f64 / 1e3,
            x.rss_mib,
            x.fds,
            x.threads,
            x.metrics_kib
        );
    }
    let total_failed: u64 = failed_by_cause.values().sum();
    let answered: u64 = minutes.iter().map(|m| m.ok).sum();
    let _ = writeln!(out, "\nanswered {answered}, failed {total_failed}");
    for (cause, n) in &failed_by_cause {
        let _ = writeln!(out, "  failed: {n} × {cause}");
    }
    for e in control_errors {
        let _ = writeln!(out, "  control error: {e}");
    }
    // Targets (for a 30-minute run): RSS after the first 5 minutes within
    // 5%, descriptors and threads flat, p99 per minute within 2x of the first.
    let settle = samples
        .first()
        .map_or(0.0, |_| (s.duration.as_secs_f64() / 6.0).min(300.0));
    let after: Vec<&Sample> = samples.iter().filter(|x| x.at_s >= settle).collect();
    if let (Some(first), true) = (after.first(), s.pid.is_some()) {
        let spread = |f: fn(&Sample) -> f64| {
            let v: Vec<f64> = after.iter().map(|x| f(x)).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            (lo, hi)
        };
        let (rss_lo, rss_hi) = spread(|x| x.rss_mib);
        let _ = writeln!(
            out,
            "RSS after {settle:.0} s: {rss_lo:.1}-{rss_hi:.1} MiB, last {:.1} MiB: {:+.1}% of the first sample then ({:.1} MiB)",
            after.last().map_or(0.0, |x| x.rss_mib),
            (after.last().map_or(0.0, |x| x.rss_mib) / first.rss_mib - 1.0) * 100.0,
            first.rss_mib
        );
        let (fd_lo, fd_hi) = spread(|x| x.fds as f64);
        let (th_lo, th_hi) = spread(|x| x.threads as f64);
        let (mk_lo, mk_hi) = spread(|x| x.metrics_kib);
        let _ = writeln!(
            out,
            "after {settle:.0} s: fds {fd_lo:.0}-{fd_hi:.0}, threads {th_lo:.0}-{th_hi:.0}, /metrics {mk_lo:.1}-{mk_hi:.1} KiB"
        );
    }
    let p99: Vec<f64> = minutes
        .iter()
        .filter(|m| m.ok > 0)
        .map(|m| m.latencies.value_at_quantile(0.99) as f64 / 1e3)
        .collect();
    if let Some(first) = p99.first() {
        let worst = p99.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "p99 per minute: first {first:.2} ms, worst {worst:.2} ms ({:.2}x)",
            worst / first
        );
    }
    let passed = total_failed == 0 && control_errors.is_empty() && answered > 0;
    let _ = writeln!(
        out,
        "{}",
        if passed {
            "soak: no request failed"
        } else {
            "soak: FAILED"
        }
    );
    (out, passed)
}
