//! Starts the real server on 127.0.0.1:0 over a model repository.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::time::Duration;

use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use quiver_server::Server;
use quiver_server::config::Config;
use tonic::transport::Channel;

/// Models in the demo repository (models/): twelve ONNX models, six
/// TorchScript twins and three pipelines (ensembles).
pub const DEMO_MODELS: usize = 21;

/// The demo models' golden requests and answers (models/golden.json).
pub fn golden() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(root().join("models/golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Floats within the golden tolerance (float reductions differ between
/// backends in the last bits); everything else exactly.
pub fn assert_close(model: &str, expected: &serde_json::Value, actual: &serde_json::Value) {
    let name = expected["name"].as_str().unwrap();
    assert_eq!(actual["shape"], expected["shape"], "{model} {name}");
    assert_eq!(actual["datatype"], expected["datatype"], "{model} {name}");
    let (rtol, atol) = match expected["datatype"].as_str().unwrap() {
        "FP16" | "BF16" => (1e-2, 1e-3),
        "FP32" | "FP64" => (1e-5, 1e-6),
        _ => (0.0, 0.0),
    };
    let want = expected["data"].as_array().unwrap();
    let got = actual["data"].as_array().unwrap();
    assert_eq!(want.len(), got.len(), "{model} {name}");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        match (w.as_f64(), g.as_f64()) {
            (Some(w), Some(g)) if rtol > 0.0 => {
                assert!(
                    (w - g).abs() <= atol + rtol * w.abs(),
                    "{model} {name}[{i}]: {g} != {w}"
                )
            }
            _ => assert_eq!(w, g, "{model} {name}[{i}]"),
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn config(repository: &Path) -> Config {
    let mut c = Config::for_tests(repository);
    if c.onnxruntime_lib.is_none() && c.ort_dylib_path.is_none() {
        c.onnxruntime_lib = Some(root().join(".cache/onnxruntime/libonnxruntime.so"));
    }
    c
}

pub struct TestServer {
    pub server: Option<Server>,
    pub http: String,
    pub grpc: String,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = quiver_server::start(&config).await.expect("server starts");
        TestServer {
            http: format!("http://{}", server.http_addr.expect("HTTP on")),
            grpc: format!("http://{}", server.grpc_addr.expect("gRPC on")),
            server: Some(server),
            client: http_client(),
        }
    }

    pub async fn demo() -> TestServer {
        TestServer::start(config(&root().join("models"))).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// GET `path` and parse the JSON answer.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GET `path` and return the status.
    pub async fn get_status(&self, path: &str) -> u16 {
        self.client.get(self.url(path)).send().await.unwrap().status().as_u16()
    }

    /// The Prometheus exposition of the metrics port.
    pub async fn metrics(&self) -> String {
        let addr = self.server.as_ref().expect("running").metrics_addr.expect("metrics on");
        metrics_at(&self.client, &format!("http://{addr}")).await
    }

    /// The repository index row of `model` at `version`.
    pub async fn index_row(&self, model: &str, version: &str) -> serde_json::Value {
        index_row_at(&self.client, &self.http, model, version).await
    }

    /// POST a V2 JSON inference request to `model` and parse the answer.
    pub async fn infer_json(&self, model: &str, body: &serde_json::Value) -> serde_json::Value {
        self.post_json(&format!("/v2/models/{model}/infer"), body)
            .await
            .json()
            .await
            .unwrap()
    }

    /// POST `body` as JSON to `path`.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn grpc_client(&self) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::connect(self.grpc.clone())
            .await
            .expect("gRPC connects")
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::ZERO).await;
        }
    }
}

/// The repository index row of `model` at `version` of the server at `http`
/// (a base URL): also for servers started as a process of their own.
pub async fn index_row_at(client: &reqwest::Client, http: &str, model: &str, version: &str) -> serde_json::Value {
    let rows: serde_json::Value = client
        .post(format!("{http}/v2/repository/index"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == model && r["version"] == version)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Checks an error answer: its status, and a JSON body whose `error`
/// message contains `needle`.
pub async fn expect_error(r: reqwest::Response, status: u16, needle: &str) {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not a JSON error body: {text}"));
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {text}"));
    assert!(message.contains(needle), "'{message}' does not mention '{needle}'");
}

/// A request to add_sub with INPUT0 = 0..16 and INPUT1 = 1 everywhere.
pub fn add_sub_json() -> serde_json::Value {
    serde_json::json!({
        "id": "t",
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": (0..16).collect::<Vec<i32>>()},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]}
        ]
    })
}

/// add_sub's request over gRPC: INPUT0 and INPUT1 of 16 INT32s each, all
/// `a` and all `b`, as raw contents.
pub fn add_sub_grpc(model: &str, a: i32, b: i32) -> quiver_proto::inference::ModelInferRequest {
    use quiver_proto::inference::model_infer_request::InferInputTensor;
    let raw = |v: i32| bytes::Bytes::from((0..16).flat_map(|_| v.to_le_bytes()).collect::<Vec<u8>>());
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    quiver_proto::inference::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![raw(a), raw(b)],
        ..Default::default()
    }
}

pub fn expected_sum() -> Vec<i64> {
    (1..17).collect()
}

/// Copies a demo model's folder into `dest` (for repositories built by a test).
pub fn copy_model(model: &str, dest: &Path) {
    let src = root().join("models").join(model);
    copy_dir(&src, dest);
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// Writes `text` to `path`, creating its folders.
pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A fresh, empty directory under the target dir, unique per test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("target")
        .join("test-repos")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub mod binary;
pub mod versions;

/// A test config over `repository` in explicit model control mode.
pub fn explicit(repository: &Path, load: &[&str]) -> Config {
    let mut c = config(repository);
    c.model_control_mode = quiver_server::config::ControlMode::Explicit;
    c.load_model = load.iter().map(|s| s.to_string()).collect();
    c
}

/// Polls `check` every 20 ms until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Prometheus exposition at `base` (`http://host:port`): an in-process
/// server's metrics port or a child process's HTTP port.
pub async fn metrics_at(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// An HTTP client for the tests (the process's TLS provider installed
/// first, as quiver itself does: reqwest needs one to build any client).
/// The value of the first series in a Prometheus exposition whose line
/// starts with `line_start` (name and labels); 0 when absent.
pub fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn http_client() -> reqwest::Client {
    quiver_server::tls::install_crypto_provider();
    reqwest::Client::new()
}
