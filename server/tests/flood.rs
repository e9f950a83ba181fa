//! The flood test: 32 clients (16 REST, 16 gRPC) each send 60 MiB requests to
//! a server held to 1 GiB of memory (a memory cgroup where this machine lets
//! us make one). The server stays up, its peak resident memory stays under
//! the limit, a small client keeps being answered throughout, and the large
//! requests that do not fit are refused with 429 / RESOURCE_EXHAUSTED.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use quiver_proto::inference::model_infer_request::InferInputTensor;

const LIMIT: u64 = 1 << 30;
const WIDTH: usize = 15 << 20; // floats per request: 60 MiB

/// A memory cgroup limited to `LIMIT` (v1 or v2), or `None` where this
/// machine does not let the test make one.
fn memory_cgroup() -> Option<(PathBuf, PathBuf)> {
    let name = format!("quiver-flood-{}", std::process::id());
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (dir, limit_file) = if v1.join("memory.limit_in_bytes").exists() {
        (v1.join(&name), "memory.limit_in_bytes")
    } else if std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory")) {
        (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
    } else {
        return None;
    };
    std::fs::create_dir(&dir).ok()?;
    if std::fs::write(dir.join(limit_file), LIMIT.to_string()).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    let procs = dir.join("cgroup.procs");
    Some((dir, procs))
}

struct Server {
    child: Child,
    http: String,
    grpc: String,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    /// Removed once the server is gone.
    cgroup: Option<PathBuf>,
}

/// The server and its cgroup go away even when an assertion fails.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.cgroup {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn start(repo: &Path, cgroup: Option<(PathBuf, PathBuf)>) -> Server {
    let bin = env!("CARGO_BIN_EXE_quiver");
    let mut args: Vec<String> = [
        "--model-repository",
        repo.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--shutdown-drain-seconds",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if cgroup.is_none() {
        // No cgroup to detect: give the budget the 1 GiB limit would give.
        args.push("--max-inflight-bytes".into());
        args.push((LIMIT / 4).to_string());
    }
    let mut command = match cgroup.as_ref().map(|(_, procs)| procs) {
        Some(procs) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("echo $$ > {} && exec \"$0\" \"$@\"", procs.display()))
                .arg(bin)
                .args(&args);
            c
        }
        None => {
            let mut c = Command::new(bin);
            c.args(&args);
            c
        }
    };
    let mut child = command
        .env("ORT_DYLIB_PATH", root().join(".cache/onnxruntime/libonnxruntime.so"))
        .env("QUIVER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quiver starts");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut http, mut grpc) = (None, None);
    while http.is_none() || grpc.is_none() {
        let line = lines.next().expect("quiver exited during start-up").unwrap();
        let addr = |l: &str| l.split("address=").nth(1).map(|a| format!("http://{}", a.trim()));
        if line.contains("HTTP listening") {
            http = addr(&line);
        } else if line.contains("gRPC listening") {
            grpc = addr(&line);
        }
        log.lock().unwrap().push(line);
    }
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        http: http.unwrap(),
        grpc: grpc.unwrap(),
        log,
        cgroup: cgroup.map(|(dir, _)| dir),
    }
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_requests_stays_within_memory_and_small_ones_still_pass() {
    let repo = temp_dir("flood");
    std::fs::create_dir_all(repo.join("wide_sum/1")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/wide_sum.onnx"),
        repo.join("wide_sum/1/model.onnx"),
    )
    .unwrap();
    write(
        &repo.join("wide_sum/config.pbtxt"),
        r#"name: "wide_sum" max_batch_size: 4
           input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
           output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]"#,
    );
    copy_model("add_sub", &repo.join("add_sub"));
    let server = start(&repo, memory_cgroup());
    let limited = server.cgroup.is_some();
    if limited {
        let log = server.log.lock().unwrap().join("\n");
        assert!(
            log.contains(&format!("max_inflight_bytes={}", LIMIT / 4)),
            "the budget did not follow the cgroup's limit:\n{log}"
        );
    }

    let ones: Bytes = std::iter::repeat_n(1.0f32.to_le_bytes(), WIDTH)
        .flatten()
        .collect::<Vec<u8>>()
        .into();
    let header = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,{WIDTH}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"y","parameters":{{"binary_data":true}}}}]}}"#,
        WIDTH * 4
    );
    let mut http_body = header.clone().into_bytes();
    http_body.extend_from_slice(&ones);
    let http_body = Bytes::from(http_body);

    let done = Arc::new(AtomicBool::new(false));
    let small = {
        let (url, done) = (format!("{}/v2/models/add_sub/infer", server.http), Arc::clone(&done));
        tokio::spawn(async move {
            let client = http_client();
            let (mut answered, mut failed) = (0u64, Vec::new());
            while !done.load(Ordering::Relaxed) {
                let r = client.post(&url).json(&add_sub_json()).send().await;
                match r {
                    Ok(r) if r.status() == 200 => answered += 1,
                    Ok(r) => failed.push(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (answered, failed)
        })
    };

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (http, grpc) = (server.http.clone(), server.grpc.clone());
        let (http_body, ones, header_len) = (http_body.clone(), ones.clone(), header.len());
        flood.spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..2 {
                let outcome = if i % 2 == 0 {
                    let r = http_client()
                        .post(format!("{http}/v2/models/wide_sum/infer"))
                        .header("Inference-Header-Content-Length", header_len)
                        .body(http_body.clone())
                        .send()
                        .await
                        .expect("an answer, not a dropped connection");
                    match r.status().as_u16() {
                        200 => {
                            let n: usize = r.headers()["inference-header-content-length"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            let body = r.bytes().await.unwrap();
                            assert_eq!(f32::from_le_bytes(body[n..n + 4].try_into().unwrap()), WIDTH as f32);
                            "ok"
                        }
                        429 => {
                            let e: serde_json::Value = r.json().await.unwrap();
                            assert!(e["error"].as_str().unwrap().contains("in flight"), "{e}");
                            "refused"
                        }
                        other => panic!("HTTP {other}: {}", r.text().await.unwrap()),
                    }
                } else {
                    let mut client = GrpcInferenceServiceClient::connect(grpc.clone())
                        .await
                        .unwrap()
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX);
                    let r = client
                        .model_infer(ModelInferRequest {
                            model_name: "wide_sum".into(),
                            inputs: vec![InferInputTensor {
                                name: "x".into(),
                                datatype: "FP32".into(),
                                shape: vec![1, WIDTH as i64],
                                ..Default::default()
                            }],
                            raw_input_contents: vec![ones.clone()],
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(r) => {
                            let y = &r.into_inner().raw_output_contents[0];
                            assert_eq!(f32::from_le_bytes(y[..4].try_into().unwrap()), WIDTH as f32);
                            "ok"
                        }
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                            assert!(s.message().contains("in flight"), "{s:?}");
                            "refused"
                        }
                        Err(s) => panic!("gRPC {s:?}"),
                    }
                };
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::new();
    while let Some(o) = flood.join_next().await {
        outcomes.extend(o.expect("a flood client failed"));
    }
    done.store(true, Ordering::Relaxed);
    let (answered, failed) = small.await.unwrap();

    let mut server = server;
    let pid = server.child.id();
    assert!(server.child.try_wait().unwrap().is_none(), "the server died");
    let peak = peak_rss(pid);
    drop(server);
    let ok = outcomes.iter().filter(|o| **o == "ok").count();
    let refused = outcomes.len() - ok;
    eprintln!(
        "flood: {ok} served, {refused} refused; small client {answered} answered; server peak RSS {} MiB; cgroup: {}",
        peak >> 20,
        limited
    );
    assert!(failed.is_empty(), "small requests failed: {failed:?}");
    assert!(answered > 0);
    assert!(ok > 0, "no large request was served");
    assert!(refused > 0, "the flood never hit the budget");
    assert!(peak < LIMIT, "peak RSS {peak} bytes is over the 1 GiB limit");
}
