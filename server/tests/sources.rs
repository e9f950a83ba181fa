//! An object-store repository through the real server, with `file://` (the
//! same object_store code path as s3://, with no store to start; the S3
//! and MLflow cases run against real servers in tests/python/test_registry.py).
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::versions::*;
use common::*;
use serde_json::{Value, json};

async fn answer(s: &TestServer) -> (String, f64) {
    let body: Value = s
        .post_json("/v2/models/scale/infer", &infer_body())
        .await
        .json()
        .await
        .unwrap();
    (
        body["model_version"].as_str().unwrap_or_default().to_owned(),
        body["outputs"][0]["data"][0].as_f64().unwrap_or_default(),
    )
}

async fn provenance(s: &TestServer, version: &str) -> Value {
    s.index_row("scale", version).await["provenance"].clone()
}

fn store_config(bucket: &std::path::Path, cache: PathBuf) -> quiver_server::config::Config {
    let mut c = explicit(bucket, &["scale"]);
    c.model_repository = PathBuf::from(format!("file://{}", bucket.display()));
    c.cache_dir = cache;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_loads_sync_the_model_from_the_store_first() {
    let dir = temp_dir("store-explicit");
    let bucket = dir.join("bucket");
    scale_repo(&bucket, "scale");
    write_version(&bucket, "scale", 1, 2.0);
    let s = TestServer::start(store_config(&bucket, dir.join("cache"))).await;
    assert_eq!(answer(&s).await, ("1".into(), 2.0));
    let p = provenance(&s, "1").await;
    let shown = bucket.canonicalize().unwrap();
    assert_eq!(p["uri"], format!("file://{}/scale/1/", shown.display()), "{p}");
    assert!(p["etag"].as_str().unwrap().starts_with("model.onnx="), "{p}");
    // Served from the mirror, not from the store's folder.
    assert!(dir.join("cache/repository/scale/1/model.onnx").is_file());

    write_version(&bucket, "scale", 2, 3.0);
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(answer(&s).await, ("2".into(), 3.0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_follows_the_store_and_a_restart_fetches_nothing_unchanged() {
    let dir = temp_dir("store-poll");
    let bucket = dir.join("bucket");
    scale_repo(&bucket, "scale");
    write_version(&bucket, "scale", 1, 2.0);
    let mut c = store_config(&bucket, dir.join("cache"));
    c.model_control_mode = quiver_server::config::ControlMode::Poll;
    c.load_model.clear();
    c.repository_poll_secs = 1;
    let s = TestServer::start(c.clone()).await;
    assert_eq!(answer(&s).await, ("1".into(), 2.0));

    write_version(&bucket, "scale", 2, 3.0);
    eventually(10, "version 2 from the store", || async {
        answer(&s).await == ("2".into(), 3.0)
    })
    .await;
    std::fs::remove_dir_all(bucket.join("scale/2")).unwrap();
    eventually(10, "back to version 1", || async {
        answer(&s).await == ("1".into(), 2.0)
    })
    .await;
    s.stop().await;

    // The mirror survives a restart: the manifest says nothing changed.
    let mirrored = dir.join("cache/repository/scale/1/model.onnx");
    let before = std::fs::metadata(&mirrored).unwrap().modified().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let s = TestServer::start(c).await;
    assert_eq!(answer(&s).await, ("1".into(), 2.0));
    assert_eq!(std::fs::metadata(&mirrored).unwrap().modified().unwrap(), before);
    s.stop().await;
}

#[tokio::test]
async fn an_unsupported_repository_url_is_refused_at_start_up() {
    let mut c = config(&root().join("models"));
    c.model_repository = PathBuf::from("ftp://models.example.com/repo");
    let e = quiver_server::start(&c).await.err().expect("refused").to_string();
    assert!(e.contains("scheme 'ftp://' is not supported"), "{e}");
}
