//! Dynamic batching on the real server: answers inside a batch equal answers
//! alone, batches really form, and statistics and metrics report them; on
//! ONNX models and their TorchScript twins alike (the batcher does not know
//! which backend runs).
mod common;

use common::*;
use quiver_engine::request::InferRequest;
use quiver_engine::tap::Context;
use quiver_runtimes::{DataType, Tensor};
use serde_json::Value;

fn fraud_repo(name: &str, source: &str) -> std::path::PathBuf {
    let repo = temp_dir(name);
    let config = std::fs::read_to_string(root().join("models").join(source).join("config.pbtxt")).unwrap();
    let block_start = config.find("dynamic_batching").unwrap();
    let block_end = block_start + config[block_start..].find('}').unwrap() + 1;
    let without = format!("{}{}", &config[..block_start], &config[block_end..]);
    for (model, text) in [
        ("fraud_alone", without.clone()),
        (
            "fraud_batched",
            // A long fixed delay with preferred sizes: batches form
            // deterministically (at 16 or 32 rows, at 64, or when the delay ends).
            format!(
                "{without}\ndynamic_batching {{ preferred_batch_size: [ 16, 32 ] max_queue_delay_microseconds: 300000 }}\n{FIXED}"
            ),
        ),
        (
            "fraud_adaptive",
            format!("{without}\ndynamic_batching {{ max_queue_delay_microseconds: 10000000 }}\n"),
        ),
    ] {
        copy_model(source, &repo.join(model));
        std::fs::write(repo.join(model).join("config.pbtxt"), text.replace(source, model)).unwrap();
    }
    repo
}

/// Triton's fixed queue delay, for a model whose config ends with this.
const FIXED: &str = r#"parameters { key: "queue_delay_policy" value: { string_value: "fixed" } }"#;

fn request(model: &str, rows: usize, seed: usize) -> InferRequest {
    let values: Vec<f32> = (0..rows * 32)
        .map(|i| (((seed * 7919 + i * 104729) % 2000) as f32 - 1000.0) / 250.0)
        .collect();
    InferRequest {
        model_name: model.into(),
        id: seed.to_string(),
        inputs: vec![Tensor {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![rows as i64, 32],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        }],
        ..Default::default()
    }
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_a_batch_equal_answers_alone_onnx() {
    answers_in_a_batch_equal_answers_alone("fraud_mlp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_a_batch_equal_answers_alone_torchscript() {
    answers_in_a_batch_equal_answers_alone("fraud_mlp_pt").await;
}

async fn answers_in_a_batch_equal_answers_alone(source: &str) {
    let repo = fraud_repo(&format!("invariance-{source}"), source);
    let s = TestServer::start(config(&repo)).await;
    let engine = std::sync::Arc::clone(&s.server.as_ref().unwrap().engine);
    // A mix of one-row and three-row requests: rows, not requests, fill batches.
    let rows: Vec<usize> = (0..40).map(|i| if i % 5 == 0 { 3 } else { 1 }).collect();
    let mut alone = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        alone.push(
            engine
                .infer(request("fraud_alone", r, i), &Context::internal())
                .await
                .unwrap(),
        );
    }
    let batched = futures_join(rows.iter().enumerate().map(|(i, &r)| {
        let engine = std::sync::Arc::clone(&engine);
        tokio::spawn(async move {
            engine
                .infer(request("fraud_batched", r, i), &Context::internal())
                .await
                .unwrap()
        })
    }))
    .await;
    for ((a, b), &r) in alone.iter().zip(&batched).zip(&rows) {
        assert_eq!(a.id, b.id);
        assert_eq!(b.outputs[0].shape, vec![r as i64, 2]);
        for (x, y) in floats(&a.outputs[0]).iter().zip(floats(&b.outputs[0])) {
            assert!((x - y).abs() <= 1e-6, "request {}: {x} alone vs {y} in a batch", a.id);
        }
    }
    let stats = engine.statistics(Some("fraud_batched"), None).unwrap().remove(0);
    let total_rows: usize = rows.iter().sum();
    assert_eq!(stats.inference_count, total_rows as u64);
    assert!(
        stats.execution_count < rows.len() as u64 / 2,
        "only {} executions formed",
        stats.execution_count
    );
    assert!(stats.batches.keys().any(|&b| b >= 16), "{:?}", stats.batches.keys());
    let alone_stats = engine.statistics(Some("fraud_alone"), Some("1")).unwrap().remove(0);
    assert_eq!(alone_stats.execution_count, rows.len() as u64);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

/// A 10 s delay under the default (adaptive) policy: a lone client is not
/// made to wait for company, and closed-loop clients batch without waiting
/// out the delay. (Triton's policy would take 10 s per batch here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_delay_does_not_wait_for_requests_that_cannot_come() {
    let repo = fraud_repo("adaptive", "fraud_mlp");
    let s = TestServer::start(config(&repo)).await;
    let engine = std::sync::Arc::clone(&s.server.as_ref().unwrap().engine);
    let started = std::time::Instant::now();
    for i in 0..3 {
        engine
            .infer(request("fraud_adaptive", 1, i), &Context::internal())
            .await
            .unwrap();
    }
    let clients = futures_join((0..8).map(|c| {
        let engine = std::sync::Arc::clone(&engine);
        tokio::spawn(async move {
            for i in 0..50 {
                engine
                    .infer(request("fraud_adaptive", 1, c * 100 + i), &Context::internal())
                    .await
                    .unwrap();
            }
        })
    }))
    .await;
    assert_eq!(clients.len(), 8);
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(5), "took {elapsed:?}");
    let stats = engine.statistics(Some("fraud_adaptive"), None).unwrap().remove(0);
    assert_eq!(stats.inference_count, 3 + 8 * 50);
    assert!(
        stats.execution_count < stats.inference_count,
        "no batch formed: {:?}",
        stats.batches.keys()
    );
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn statistics_extension_over_rest_and_grpc() {
    let s = TestServer::demo().await;
    for model in ["add_sub", "add_sub_pt"] {
        statistics_of(&s, model).await;
    }
    let all: Value = s.get_json("/v2/models/stats").await;
    assert_eq!(all["model_stats"].as_array().unwrap().len(), DEMO_MODELS);
    s.stop().await;
}

async fn statistics_of(s: &TestServer, model: &str) {
    for _ in 0..3 {
        let r = s.post_json(&format!("/v2/models/{model}/infer"), &add_sub_json()).await;
        assert_eq!(r.status(), 200);
    }
    let bad = s
        .client
        .post(s.url(&format!("/v2/models/{model}/infer")))
        .body("{\"inputs\":[]}")
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "INPUT0").await;
    let stats: Value = s.get_json(&format!("/v2/models/{model}/stats")).await;
    let m = &stats["model_stats"][0];
    assert_eq!(m["name"], model);
    assert_eq!(m["version"], "1");
    assert_eq!(m["inference_count"], 3);
    assert_eq!(m["execution_count"], 3);
    assert_eq!(m["inference_stats"]["success"]["count"], 3);
    assert_eq!(m["inference_stats"]["fail"]["count"], 1);
    assert_eq!(m["batch_stats"][0]["batch_size"], 1);
    assert_eq!(m["batch_stats"][0]["compute_infer"]["count"], 3);
    assert!(m["inference_stats"]["compute_infer"]["ns"].as_u64().unwrap() > 0);
    let missing = s
        .client
        .get(s.url(&format!("/v2/models/{model}/versions/5/stats")))
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "unknown version '5'").await;
    let mut client = s.grpc_client().await;
    let grpc = client
        .model_statistics(quiver_proto::inference::ModelStatisticsRequest {
            name: model.into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.model_stats[0].inference_count, 3);
    assert_eq!(
        grpc.model_stats[0]
            .inference_stats
            .as_ref()
            .unwrap()
            .success
            .as_ref()
            .unwrap()
            .count,
        3
    );
}

#[tokio::test]
async fn prometheus_metrics_have_triton_names_and_histograms() {
    let s = TestServer::demo().await;
    let r = s
        .post_json(
            "/v2/models/text_greet/infer",
            &serde_json::json!({"inputs":[{"name":"name","shape":[1],"datatype":"BYTES","data":["m"]}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut client = s.grpc_client().await;
    client
        .server_live(quiver_proto::inference::ServerLiveRequest {})
        .await
        .unwrap();
    let _ = client
        .model_infer(quiver_proto::inference::ModelInferRequest {
            model_name: "text_greet".into(),
            ..Default::default()
        })
        .await;
    let addr = s.server.as_ref().unwrap().metrics_addr.unwrap();
    for url in [format!("http://{addr}/metrics"), s.url("/metrics")] {
        let text = s.client.get(url).send().await.unwrap().text().await.unwrap();
        for needle in [
            "nv_inference_request_success{model=\"text_greet\",version=\"1\"}",
            "nv_inference_exec_count{model=\"text_greet\",version=\"1\"}",
            "nv_inference_count{model=\"text_greet\",version=\"1\"}",
            "nv_inference_queue_duration_us{model=\"text_greet\",version=\"1\"}",
            "nv_inference_request_failure{model=\"text_greet\",version=\"1\",reason=\"REJECTED\"}",
            "nv_inference_pending_request_count{model=\"text_greet\",version=\"1\"}",
            "quiver_inference_request_duration_seconds_bucket{model=\"text_greet\",version=\"1\",le=\"0.00005\"}",
            "quiver_inference_batch_size_bucket{model=\"text_greet\",version=\"1\",le=\"1\"}",
            "quiver_http_requests_total{route=\"/v2/models/{model}/infer\",status=\"200\"}",
            "quiver_grpc_requests_total{method=\"ModelInfer\",code=\"InvalidArgument\"}",
            "quiver_http_request_duration_seconds_bucket{route=\"/v2/models/{model}/infer\",le=\"0.001\"}",
        ] {
            assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
        }
        // Every request was answered: none is pending (the gauge is counted
        // before the queue can take a request, so it never dips below 0).
        let pending = text
            .lines()
            .find(|l| l.starts_with("nv_inference_pending_request_count{model=\"text_greet\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(pending, Some(0.0), "{text}");
    }
    s.stop().await;
}
