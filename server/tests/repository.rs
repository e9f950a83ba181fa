//! Repository layouts built by the tests: version policies, models that fail
//! to load next to ones that serve, and a missing ONNX Runtime library.
mod common;

use common::*;
use serde_json::{Value, json};

fn add_sub_config(name: &str, extra: &str) -> String {
    let base = std::fs::read_to_string(root().join("models/add_sub/config.pbtxt")).unwrap();
    format!(
        "{}\n{extra}\n",
        base.replace("name: \"add_sub\"", &format!("name: \"{name}\""))
    )
}

#[tokio::test]
async fn failures_are_reported_and_the_rest_serve() {
    let repo = temp_dir("mixed");
    copy_model("add_sub", &repo.join("good"));
    write(&repo.join("good/config.pbtxt"), &add_sub_config("good", ""));
    let model = root().join("models/add_sub/1/model.onnx");
    for v in ["1", "2", "3"] {
        std::fs::create_dir_all(repo.join("multi").join(v)).unwrap();
        std::fs::copy(&model, repo.join("multi").join(v).join("model.onnx")).unwrap();
    }
    write(
        &repo.join("multi/config.pbtxt"),
        &add_sub_config("multi", "version_policy: { latest: { num_versions: 2 } }"),
    );
    write(&repo.join("broken/1/model.onnx"), "this is not an onnx file");
    write(
        &repo.join("bad_config/config.pbtxt"),
        "name: \"bad_config\" max_batch_size: [",
    );
    std::fs::create_dir_all(repo.join("bad_config/1")).unwrap();
    copy_model("fraud_mlp", &repo.join("gpu_only"));
    let gpu = std::fs::read_to_string(repo.join("gpu_only/config.pbtxt")).unwrap();
    write(
        &repo.join("gpu_only/config.pbtxt"),
        &gpu.replace("fraud_mlp", "gpu_only")
            .replace("kind: KIND_CPU", "kind: KIND_GPU"),
    );
    write(&repo.join("no_versions/config.pbtxt"), "name: \"no_versions\"");

    let s = TestServer::start(config(&repo)).await;
    assert_eq!(s.get_status("/v2/health/ready").await, 200);
    let index: Vec<Value> = s
        .client
        .post(s.url("/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = |name: &str, version: &str| {
        index
            .iter()
            .find(|r| r["name"] == name && r["version"] == version)
            .unwrap_or_else(|| panic!("no index row for {name} {version}: {index:?}"))
            .clone()
    };
    assert_eq!(row("good", "1")["state"], "READY");
    assert_eq!(row("multi", "2")["state"], "READY");
    assert_eq!(row("multi", "3")["state"], "READY");
    assert!(!index.iter().any(|r| r["name"] == "multi" && r["version"] == "1"));
    assert_eq!(row("broken", "1")["state"], "UNAVAILABLE");
    assert!(row("broken", "1")["reason"].as_str().unwrap().contains("model.onnx"));
    assert!(
        row("bad_config", "")["reason"]
            .as_str()
            .unwrap()
            .contains("config.pbtxt")
    );
    assert!(row("gpu_only", "1")["reason"].as_str().unwrap().contains("KIND_GPU"));
    assert!(
        row("no_versions", "")["reason"]
            .as_str()
            .unwrap()
            .contains("no version folder")
    );

    let infer = |path: String| s.client.post(s.url(&path)).json(&add_sub_json()).send();
    let r: Value = infer("/v2/models/multi/infer".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["model_version"], "3",
        "no version in the path serves the highest ready one"
    );
    let r: Value = infer("/v2/models/multi/versions/2/infer".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["model_version"], "2");
    expect_error(
        infer("/v2/models/multi/versions/1/infer".into()).await.unwrap(),
        404,
        "unknown version '1'",
    )
    .await;
    let r = infer("/v2/models/broken/infer".into()).await.unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("has no ready version"), "{e}");
    expect_error(
        s.client.get(s.url("/v2/models/broken/ready")).send().await.unwrap(),
        503,
        "has no ready version",
    )
    .await;
    let meta: Value = s.get_json("/v2/models/multi").await;
    assert_eq!(meta["versions"], json!(["2", "3"]));
    let r: Value = infer("/v2/models/good/infer".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["outputs"][0]["data"][0], 1);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn config_less_fixed_shape_model_does_not_batch() {
    // all_types without its config: inputs are [batch, 4] so it batches;
    // text_greet without its config has a symbolic 1-D shape: batch of strings.
    let repo = temp_dir("noconfig");
    copy_model("all_types", &repo.join("all_types"));
    std::fs::remove_file(repo.join("all_types/config.pbtxt")).unwrap();
    let s = TestServer::start(config(&repo)).await;
    let c: Value = s.get_json("/v2/models/all_types/config").await;
    assert_eq!(c["max_batch_size"], 4);
    assert_eq!(c["input"].as_array().unwrap().len(), 13);
    let bytes_input = c["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "IN_BYTES")
        .unwrap()
        .clone();
    assert_eq!(bytes_input["data_type"], "TYPE_STRING");
    assert_eq!(bytes_input["dims"], json!([4]));
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn kserve_single_model_folder_with_its_flags() {
    // KServe's storage initializer puts one model's files in /mnt/models and
    // the runtime gets --model_name, --model_dir and --http_port.
    let dir = temp_dir("kserve-single");
    copy_model("fraud_mlp", &dir);
    std::fs::remove_file(dir.join("config.pbtxt")).unwrap();
    let mut c = config(&root().join("models"));
    let parsed = <quiver_server::config::Config as clap::Parser>::try_parse_from([
        "quiver",
        "--model_name=fraud",
        &format!("--model_dir={}", dir.display()),
        "--http_port=0",
        "--grpc_port=0",
    ])
    .unwrap();
    c.model_repository = parsed.model_repository;
    c.model_name = parsed.model_name;
    assert_eq!(parsed.http_port, 0);
    let s = TestServer::start(c).await;
    let index: Vec<Value> = serde_json::from_value(s.get_json("/v2/models/fraud").await["versions"].clone()).unwrap();
    assert_eq!(index, vec![json!("1")]);
    let body = json!({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": vec![0.5f32; 32]}]});
    let r = s.post_json("/v2/models/fraud/infer", &body).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn strict_readiness_waits_for_every_model_that_should_serve() {
    let repo = temp_dir("strict");
    copy_model("add_sub", &repo.join("add_sub"));
    write(&repo.join("broken/1/model.onnx"), "not onnx");
    let mut c = config(&repo);
    c.strict_readiness = Some(true);
    let s = TestServer::start(c).await;
    let ready = s.client.get(s.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], false);
    let mut grpc = s.grpc_client().await;
    let r = grpc
        .server_ready(quiver_proto::inference::ServerReadyRequest {})
        .await
        .unwrap();
    assert!(!r.into_inner().ready);
    // The model that loaded serves all the same.
    assert_eq!(
        s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await.status(),
        200
    );
    s.stop().await;

    // In explicit mode a model unloaded on request is no longer waited for.
    std::fs::remove_dir_all(repo.join("broken")).unwrap();
    let mut c = explicit(&repo, &["add_sub"]);
    c.strict_readiness = Some(true);
    let s = TestServer::start(c).await;
    assert_eq!(s.get_status("/v2/health/ready").await, 200);
    let r = s.post_json("/v2/repository/models/add_sub/unload", &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.get_status("/v2/health/ready").await, 200);
    s.stop().await;
}
