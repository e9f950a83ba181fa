//! Faults at bad moments, each against the real server: clients that go
//! away mid-request and mid-stream, a serving model's file broken in
//! place, a SIGKILL while a new version is being mirrored and loaded, and a
//! cache directory whose disk is full. `docs/reliability.md` lists them
//! with what quiver does.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::versions::*;
use common::*;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use quiver_proto::inference::*;
use serde_json::{Value, json};

/// (version it names, first value of y) of the `y = x * K` model `model`.
async fn answer_at(http: &str, model: &str) -> Result<(u64, f32), String> {
    let r = http_client()
        .post(format!("{http}/v2/models/{model}/infer"))
        .json(&infer_body())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let version = body["model_version"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or("no version")?;
    let y: Vec<f32> = body["outputs"][0]["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
        .collect();
    // Every value of one answer from one version: y = x * K throughout.
    let k = y[0] / X[0];
    if y.iter().zip(X).any(|(y, x)| *y != x * k) {
        return Err(format!("an answer mixing versions: {y:?}"));
    }
    Ok((version, k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_away_mid_request_and_mid_stream_give_their_slots_back() {
    let repo = temp_dir("chaos-disconnect");
    std::fs::create_dir_all(repo.join("chaos_slow/1")).unwrap();
    std::fs::write(
        repo.join("chaos_slow/config.pbtxt"),
        r#"backend: "mock"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"#,
    )
    .unwrap();
    std::fs::write(repo.join("chaos_slow/1/model.mock"), "sleep 200").unwrap();
    let s = TestServer::start(config(&repo)).await;
    let admission = Arc::clone(&s.server.as_ref().unwrap().admission);
    let body = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut gone = tokio::task::JoinSet::new();
    // REST clients that give up while their request is queued or running.
    for _ in 0..6 {
        let (client, url, body) = (impatient.clone(), s.url("/v2/models/chaos_slow/infer"), body.clone());
        gone.spawn(async move { client.post(url).json(&body).send().await.is_err() });
    }
    // gRPC calls cancelled by their deadline.
    let request = ModelInferRequest {
        model_name: "chaos_slow".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 3],
            ..Default::default()
        }],
        raw_input_contents: vec![
            [1f32, 2., 3.]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    };
    for _ in 0..4 {
        let (mut client, request) = (s.grpc_client().await, request.clone());
        gone.spawn(async move {
            let mut r = tonic::Request::new(request);
            r.set_timeout(Duration::from_millis(50));
            client.model_infer(r).await.is_err()
        });
    }
    // Streams dropped with requests in flight.
    for _ in 0..2 {
        let (mut client, request) = (s.grpc_client().await, request.clone());
        gone.spawn(async move {
            let stream = client
                .model_stream_infer(tokio_stream::iter(vec![request.clone(), request.clone(), request]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(stream);
            true
        });
    }
    while let Some(went) = gone.join_next().await {
        assert!(went.unwrap(), "a client meant to give up got its answer");
    }
    // Every admission ticket and queue slot comes back.
    eventually(30, "nothing in flight", || async {
        admission.requests_in_flight() == 0 && admission.bytes_in_flight() == 0
    })
    .await;
    let pending = "nv_inference_pending_request_count{model=\"chaos_slow\",version=\"1\"}";
    eventually(30, "an empty queue", || async {
        sample(&s.metrics().await, pending) == 0.0
    })
    .await;
    // Queued requests whose client had gone were dropped, not run, and counted.
    let cancelled = "quiver_inference_cancelled_total{model=\"chaos_slow\",version=\"1\"}";
    assert!(sample(&s.metrics().await, cancelled) > 0.0, "{}", s.metrics().await);
    // And the server serves on.
    let r = s.post_json("/v2/models/chaos_slow/infer", &body).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_model_file_broken_in_place_is_refused_and_the_old_copy_serves() {
    let repo = temp_dir("chaos-garbage");
    scale_repo(&repo, "chaos_garbage");
    write_version(&repo, "chaos_garbage", 1, 2.0);
    let mut c = config(&repo);
    c.model_control_mode = quiver_server::config::ControlMode::Poll;
    c.repository_poll_secs = 1;
    let s = TestServer::start(c).await;
    assert_eq!(answer_at(&s.http, "chaos_garbage").await, Ok((1, 2.0)));
    let file = repo.join("chaos_garbage/1/model.onnx");
    let failures = |m: &str| {
        sample(
            m,
            "quiver_model_loads_total{model=\"chaos_garbage\",outcome=\"failure\"}",
        )
    };
    let good = scale_model(3.0);
    for (n, broken) in [
        (1.0, b"garbage, not ONNX".to_vec()),
        (2.0, good[..good.len() / 2].to_vec()),
    ] {
        std::fs::write(&file, broken).unwrap();
        eventually(20, "the broken file tried and refused", || async {
            failures(&s.metrics().await) >= n
        })
        .await;
        // The copy loaded before keeps answering, whole.
        assert_eq!(answer_at(&s.http, "chaos_garbage").await, Ok((1, 2.0)));
        let row = s.index_row("chaos_garbage", "1").await;
        assert_eq!(row["state"], "READY", "{row}");
    }
    // Fixed: the new file serves.
    std::fs::write(&file, &good).unwrap();
    eventually(20, "the fixed file serves", || async {
        answer_at(&s.http, "chaos_garbage").await == Ok((1, 3.0))
    })
    .await;
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

/// The quiver binary on `args`, once it is ready.
async fn quiver(args: &[&str], log: &Path) -> common::binary::Child {
    let q = common::binary::start(args, Some(log)).await;
    let ready = format!("{}/v2/health/ready", q.http);
    eventually(60, "quiver ready", || {
        let ready = ready.clone();
        async move { http_client().get(&ready).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    q
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_version_is_mirrored_then_a_restart_serves_whole_versions_and_catches_up() {
    let dir = temp_dir("chaos-sigkill");
    let bucket = dir.join("bucket");
    scale_repo(&bucket, "scale");
    write_version(&bucket, "scale", 1, 1.0);
    let store = format!("file://{}", bucket.display());
    let cache = dir.join("cache");
    let args = [
        "--model-repository",
        &store,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ];
    let log = dir.join("quiver.log");
    let mut q = quiver(&args, &log).await;
    assert_eq!(answer_at(&q.http, "scale").await, Ok((1, 1.0)));
    for version in 2..=6u64 {
        // A new version lands in the store; quiver is killed at a moment
        // that moves from round to round: before, during or after its sync.
        write_version(&bucket, "scale", version, version as f32);
        tokio::time::sleep(Duration::from_millis((version - 2) * 300)).await;
        drop(q); // SIGKILL
        q = quiver(&args, &log).await;
        // Whatever the mirror held at the kill, what serves is whole: a
        // version's own answer, never a mix or a half-written file.
        let (served, k) = answer_at(&q.http, "scale")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap()));
        assert!(
            (1..=version).contains(&served) && k == served as f32,
            "version {served} answered K = {k}"
        );
        eventually(30, "the restart catches up with the store", || async {
            answer_at(&q.http, "scale").await == Ok((version, version as f32))
        })
        .await;
    }
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs of `bytes` mounted at `dir` for the test's life.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, bytes: usize) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (util-linux) runs");
        assert!(
            status.success(),
            "this test mounts a small tmpfs as the cache disk: it needs root (CI runs as root)"
        );
        SmallDisk(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_disk_fails_the_load_with_the_reason_and_serving_goes_on() {
    let dir = temp_dir("chaos-disk-full");
    let bucket = dir.join("bucket");
    scale_repo(&bucket, "scale");
    write_version(&bucket, "scale", 1, 1.0);
    let disk = SmallDisk::mount(&dir.join("cache"), 256 * 1024);
    let mut c = explicit(&bucket, &["scale"]);
    c.model_repository = format!("file://{}", bucket.display()).into();
    c.cache_dir = disk.0.clone();
    let s = TestServer::start(c).await;
    assert_eq!(answer_at(&s.http, "scale").await, Ok((1, 1.0)));
    // Version 2 brings a file larger than the disk.
    write_version(&bucket, "scale", 2, 2.0);
    std::fs::write(bucket.join("scale/2/weights.bin"), vec![7u8; 1024 * 1024]).unwrap();
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_client_error() || status.is_server_error(), "{status} {body}");
    let reason = body["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(reason.contains("no space left"), "{body}");
    assert_eq!(answer_at(&s.http, "scale").await, Ok((1, 1.0)));
    // Room again (the large file gone from the store): the next load works,
    // so nothing the failed one wrote was left taking the space.
    std::fs::remove_file(bucket.join("scale/2/weights.bin")).unwrap();
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(answer_at(&s.http, "scale").await, Ok((2, 2.0)));
    s.stop().await;
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
