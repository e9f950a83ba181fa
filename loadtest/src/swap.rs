//! The hot-swap scenario: REST (binary tensor data) and gRPC clients drive a
//! model while a new version is published every `--swap-every` seconds, and
//! the latency during the swaps is compared with a steady window just before,
//! side by side in one run.
//!
//! The model is `y = x * K` (`tests/fixtures/scale.onnx`, its constant
//! patched per version to K = the version number), so every answer is
//! checked: its values must be those of the version it names. An answer from
//! a mix of versions, or a failed request, is counted as an error.
//!
//! The server must serve `--swap-repository` in explicit model control mode
//! with the model loaded; the scenario writes version folders there and calls
//! `POST /v2/repository/models/{m}/load` for each.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use tonic::transport::Channel;

use crate::report::Row;
use crate::run::Measured;

/// The constant stored in the fixture (see `tests/fixtures/generate.py`).
const TEMPLATE_K: f32 = 12345.678;
pub(crate) const X: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

pub struct Scenario<'a> {
    pub model: &'a str,
    pub http: &'a str,
    pub grpc: &'a str,
    pub repository: &'a Path,
    pub template: &'a Path,
    pub swaps: u64,
    pub every: Duration,
    pub concurrency: usize,
    pub steady: Duration,
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
pub(crate) enum Wire {
    Http {
        client: HttpClient,
        url: String,
    },
    Grpc {
        client: GrpcInferenceServiceClient<Channel>,
    },
}

pub(crate) fn raw_x() -> Vec<u8> {
    X.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Wire {
    /// One request; `Ok` only if the answer's values are its version's.
    pub(crate) async fn send(&mut self, model: &str) -> Result<u64, String> {
        let (version, y) = match self {
            Wire::Http { client, url } => {
                let header = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
                let mut body = header.as_bytes().to_vec();
                body.extend_from_slice(&raw_x());
                let req = hyper::Request::post(url.as_str())
                    .header("inference-header-content-length", header.len())
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| format!("request: {e}"))?;
                let resp = client.request(req).await.map_err(|e| format!("transport: {e}"))?;
                let status = resp.status();
                let json_len: Option<usize> = resp
                    .headers()
                    .get("inference-header-content-length")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    return Err(format!("HTTP {}", status.as_u16()));
                }
                let n = json_len.ok_or("no inference-header-content-length")?;
                let head: serde_json::Value =
                    serde_json::from_slice(&body[..n]).map_err(|e| format!("answer JSON: {e}"))?;
                let version = head["model_version"].as_str().and_then(|v| v.parse().ok());
                (version.ok_or("no model_version")?, floats(&body[n..]))
            }
            Wire::Grpc { client } => {
                let r = client
                    .model_infer(grpc_request(model))
                    .await
                    .map_err(|s| format!("gRPC {:?}", s.code()))?
                    .into_inner();
                let y = floats(r.raw_output_contents.first().ok_or("no raw output")?);
                (r.model_version.parse().map_err(|_| "bad model_version")?, y)
            }
        };
        check(version, &y)?;
        Ok(version)
    }
}

/// The request every wire sends: x = [1, 2, 3, 4].
pub(crate) fn grpc_request(model: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_owned(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![raw_x().into()],
        ..Default::default()
    }
}

/// An answer must be `x * K` of the version it names (K = the version).
pub(crate) fn check(version: u64, y: &[f32]) -> Result<(), String> {
    let expected: Vec<f32> = X.iter().map(|x| x * version as f32).collect();
    if y != expected {
        return Err(format!("values of another version than {version}"));
    }
    Ok(())
}

/// The ONNX bytes of `y = x * k`.
fn model_bytes(template: &[u8], k: f32) -> anyhow::Result<Vec<u8>> {
    let marker = TEMPLATE_K.to_le_bytes();
    let at = template
        .windows(4)
        .position(|w| w == marker)
        .ok_or_else(|| anyhow::anyhow!("the template does not hold the constant {TEMPLATE_K}"))?;
    let mut bytes = template.to_vec();
    bytes[at..at + 4].copy_from_slice(&k.to_le_bytes());
    Ok(bytes)
}

pub(crate) fn write_version(dir: &Path, template: &[u8], version: u64) -> anyhow::Result<()> {
    let folder = dir.join(version.to_string());
    std::fs::create_dir_all(&folder)?;
    let tmp: PathBuf = dir.join(format!(".{version}.tmp"));
    std::fs::write(&tmp, model_bytes(template, version as f32)?)?;
    std::fs::rename(tmp, folder.join("model.onnx"))?;
    Ok(())
}

/// Runs `concurrency` clients, half REST and half gRPC, until `stop`.
async fn drive(
    wires: &[Wire],
    model: &str,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> (Measured, Measured, std::collections::BTreeSet<u64>) {
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let kind = i % wires.len();
        let mut wire = wires[kind].clone();
        let (stop, model) = (Arc::clone(&stop), model.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::new();
            let mut versions = std::collections::BTreeSet::new();
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let result = wire.send(&model).await;
                if let Ok(v) = &result {
                    versions.insert(*v);
                }
                m.record(t0.elapsed(), result.map(|_| ()));
            }
            m.elapsed = started.elapsed();
            (kind, m, versions)
        }));
    }
    let (mut http, mut grpc) = (Measured::new(), Measured::new());
    let mut versions = std::collections::BTreeSet::new();
    for t in tasks {
        if let Ok((kind, m, v)) = t.await {
            let elapsed = m.elapsed;
            let into = if kind == 0 { &mut http } else { &mut grpc };
            into.merge(m);
            into.elapsed = into.elapsed.max(elapsed);
            versions.extend(v);
        }
    }
    (http, grpc, versions)
}

pub async fn run(s: Scenario<'_>) -> anyhow::Result<Vec<Row>> {
    let template = std::fs::read(s.template)?;
    let dir = s.repository.join(s.model);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let channel = Channel::from_shared(s.grpc.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let wires = vec![
        Wire::Http {
            client: http.clone(),
            url: format!("{}/v2/models/{}/infer", s.http, s.model),
        },
        Wire::Grpc {
            client: GrpcInferenceServiceClient::new(channel),
        },
    ];
    // Start from version 1 being served.
    let load_url = format!("{}/v2/repository/models/{}/load", s.http, s.model);
    let load = |version: u64| {
        let (http, url, template, dir) = (http.clone(), load_url.clone(), &template, &dir);
        async move {
            write_version(dir, template, version)?;
            let req = hyper::Request::post(url.as_str()).body(Full::new(Bytes::new()))?;
            let resp = http.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(
                status.is_success(),
                "load of version {version} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            anyhow::Ok(())
        }
    };
    load(1).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let steady = {
        let stop2 = Arc::clone(&stop);
        let every = s.steady;
        tokio::spawn(async move {
            tokio::time::sleep(every).await;
            stop2.store(true, Ordering::Relaxed);
        });
        drive(&wires, s.model, s.concurrency, Arc::clone(&stop)).await
    };

    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (wires, model, stop) = (wires.clone(), s.model.to_owned(), Arc::clone(&stop));
        let c = s.concurrency;
        tokio::spawn(async move { drive(&wires, &model, c, stop).await })
    };
    let started = Instant::now();
    let mut load_ms = Vec::new();
    for version in 2..=s.swaps + 1 {
        let t0 = Instant::now();
        let result = load(version).await;
        load_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = result {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        let next = started + s.every.mul_f64((version - 1) as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let swapping = driver.await?;
    load_ms.sort_by(f64::total_cmp);
    eprintln!(
        "{} swaps in {:.1} s; load call p50 {:.1} ms, max {:.1} ms; versions answered during swaps: {}",
        s.swaps,
        started.elapsed().as_secs_f64(),
        load_ms[load_ms.len() / 2],
        load_ms[load_ms.len() - 1],
        swapping.2.len()
    );
    let mut rows = Vec::new();
    for (phase, (http, grpc, _)) in [("steady", steady), ("swapping", swapping)] {
        for (protocol, m) in [("http-binary", http), ("grpc", grpc)] {
            let mut row = Row::from_measured(s.model, &format!("{protocol}, {phase}"), phase, 1, &m);
            row.concurrency = Some(s.concurrency / 2);
            rows.push(row);
        }
    }
    for protocol in ["http-binary", "grpc"] {
        let p99 = |phase: &str| {
            rows.iter()
                .find(|r| r.mode == phase && r.protocol.starts_with(protocol))
                .map_or(0.0, |r| r.p99_ms)
        };
        eprintln!(
            "{protocol}: p99 steady {:.3} ms, during swaps {:.3} ms ({:.2}x)",
            p99("steady"),
            p99("swapping"),
            p99("swapping") / p99("steady")
        );
    }
    Ok(rows)
}
