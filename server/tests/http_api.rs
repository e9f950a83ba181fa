//! The REST front end of the real server, driven by an HTTP client.
mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_metadata_config_and_index() {
    let s = TestServer::demo().await;
    let get = |p: &str| s.client.get(s.url(p)).send();
    assert_eq!(get("/v2/health/live").await.unwrap().status(), 200);
    assert_eq!(get("/v2/health/ready").await.unwrap().status(), 200);
    let meta: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(meta["name"], "quiver");
    let m: Value = get("/v2/models/add_sub/versions/1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["inputs"][1],
        json!({"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]})
    );
    assert_eq!(get("/v2/models/add_sub/ready").await.unwrap().status(), 200);
    expect_error(
        get("/v2/models/add_sub/versions/2/ready").await.unwrap(),
        404,
        "unknown version '2'",
    )
    .await;
    let c: Value = get("/v2/models/fraud_mlp/config").await.unwrap().json().await.unwrap();
    assert_eq!(c["dynamic_batching"]["preferred_batch_size"], json!([16, 32]));
    assert_eq!(c["parameters"]["intra_op_thread_count"]["string_value"], "1");
    let index: Value = s
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(index.as_array().unwrap().len(), DEMO_MODELS);
    let missing = get("/v2/models/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("unknown model 'nope'"));
    s.stop().await;
}

#[tokio::test]
async fn json_infer_with_and_without_version() {
    let s = TestServer::demo().await;
    for model in ["add_sub", "add_sub_pt"] {
        for path in [
            format!("/v2/models/{model}/infer"),
            format!("/v2/models/{model}/versions/1/infer"),
        ] {
            json_infer(&s, model, &path).await;
        }
    }
    s.stop().await;
}

async fn json_infer(s: &TestServer, model: &str, path: &str) {
    let r: Value = s.post_json(path, &add_sub_json()).await.json().await.unwrap();
    assert_eq!(r["model_name"], model);
    assert_eq!(r["model_version"], "1");
    assert_eq!(r["id"], "t");
    let sum: Vec<i64> = serde_json::from_value(r["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(sum, expected_sum());
}

#[tokio::test]
async fn binary_extension_mixed_inputs_and_outputs() {
    let s = TestServer::demo().await;
    for model in ["add_sub", "add_sub_pt"] {
        binary_extension(&s, model).await;
    }
    s.stop().await;
}

async fn binary_extension(s: &TestServer, model: &str) {
    let header = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]}
        ],
        "outputs": [{"name": "OUTPUT1", "parameters": {"binary_data": true}}, {"name": "OUTPUT0"}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend((0..16i32).flat_map(|v| v.to_le_bytes()));
    let r = s
        .client
        .post(s.url(&format!("/v2/models/{model}/infer")))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..n]).unwrap();
    assert_eq!(head["outputs"][0]["name"], "OUTPUT1");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 64);
    let sum: Vec<i64> = serde_json::from_value(head["outputs"][1]["data"].clone()).unwrap();
    assert_eq!(sum, expected_sum());
    let diff: Vec<i32> = bytes[n..]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(diff, (-1..15).collect::<Vec<i32>>());
}

#[tokio::test]
async fn request_level_binary_data_output() {
    let s = TestServer::demo().await;
    let mut req = add_sub_json();
    req["parameters"] = json!({"binary_data_output": true});
    let r = s.post_json("/v2/models/add_sub/infer", &req).await;
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len(), n + 128);
    s.stop().await;
}

#[tokio::test]
async fn raw_body_form_for_a_single_input_model() {
    let s = TestServer::demo().await;
    let x: Vec<f32> = (0..32).map(|i| i as f32 / 10.0).collect();
    let r = s
        .client
        .post(s.url("/v2/models/fraud_mlp/infer"))
        .header("Inference-Header-Content-Length", "0")
        .body(x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..n]).unwrap();
    assert_eq!(head["outputs"][0]["shape"], json!([1, 2]));
    let p: Vec<f32> = bytes[n..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!((p[0] + p[1] - 1.0).abs() < 1e-5, "{p:?}");
    s.stop().await;
}

#[tokio::test]
async fn gzip_and_deflate_both_ways() {
    let s = TestServer::demo().await;
    let body = serde_json::to_vec(&add_sub_json()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zl.write_all(&body).unwrap();
    for (coding, packed) in [("gzip", gz.finish().unwrap()), ("deflate", zl.finish().unwrap())] {
        let r = s
            .client
            .post(s.url("/v2/models/add_sub/infer"))
            .header("Content-Encoding", coding)
            .header("Accept-Encoding", coding)
            .body(packed)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{coding}");
        assert_eq!(r.headers()["content-encoding"], coding);
        let raw = r.bytes().await.unwrap();
        let mut text = String::new();
        if coding == "gzip" {
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .unwrap();
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["outputs"][0]["data"][15], 16);
    }
    s.stop().await;
}

#[tokio::test]
async fn body_limits_hold_before_and_after_inflation() {
    let mut config = config(&root().join("models"));
    config.http_max_body_bytes = 4096;
    let s = TestServer::start(config).await;
    let big = vec![b' '; 5000];
    let r = s
        .client
        .post(s.url("/v2/models/add_sub/infer"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "over the limit of 4096 bytes").await;
    // 100 kB of spaces gzip to a few hundred bytes: the limit applies after inflation.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 100_000]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4096);
    let r = s
        .client
        .post(s.url("/v2/models/add_sub/infer"))
        .header("Content-Encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("4096-byte limit"), "{e}");
    // And it still serves.
    let r = s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_reports_not_ready_first_and_keeps_serving_while_draining() {
    let s = TestServer::demo().await;
    let server = s.server.as_ref().unwrap();
    let engine = std::sync::Arc::clone(&server.engine);
    let (client, url) = (s.client.clone(), s.http.clone());
    let TestServer { server, .. } = s;
    let stopping = tokio::spawn(server.unwrap().shutdown(std::time::Duration::from_millis(1500)));
    // Not ready at once...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while engine.is_ready() {
        assert!(std::time::Instant::now() < deadline, "still ready after shutdown began");
        tokio::task::yield_now().await;
    }
    let ready = client.get(format!("{url}/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], false);
    // ...but still answering inference during the drain window.
    let r = client
        .post(format!("{url}/v2/models/add_sub/infer"))
        .json(&add_sub_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stopping.await.unwrap();
    assert!(
        client.get(format!("{url}/v2/health/live")).send().await.is_err(),
        "still accepting after the drain"
    );
}

#[tokio::test]
async fn large_json_bodies_are_decoded_and_encoded_off_the_io_runtime() {
    // 4 images of 3x64x64 as JSON numbers: about 600 kB of text, over the
    // inline threshold, so decoding and the gzip-compressed answer take the
    // blocking-thread path.
    let s = TestServer::demo().await;
    let data: Vec<f32> = (0..4 * 3 * 64 * 64).map(|i| ((i % 255) as f32) / 255.0 - 0.5).collect();
    let body = json!({"inputs": [{"name": "image", "shape": [4, 3, 64, 64], "datatype": "FP32", "data": data}]});
    assert!(body.to_string().len() > 256 * 1024);
    let r = s
        .client
        .post(s.url("/v2/models/conv_net/infer"))
        .header("Accept-Encoding", "gzip")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.bytes().await.unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([4, 10]));
    let p: Vec<f64> = serde_json::from_value(v["outputs"][0]["data"].clone()).unwrap();
    for row in p.chunks(10) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    s.stop().await;
}
