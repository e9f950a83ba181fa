//! The model lifecycle against the real server: explicit load/unload over
//! REST and gRPC, hot swaps under concurrent load, broken new versions,
//! poll mode, warm-up, metrics and shutdown with a stream left open.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::versions::*;
use common::*;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use quiver_proto::inference::model_repository_parameter::ParameterChoice;
use quiver_proto::inference::*;
use serde_json::{Value, json};

/// One answer of the scale model: (version it claims, its y), or (status, error).
async fn ask(s: &TestServer, model: &str) -> Result<(u64, Vec<f32>), (u16, String)> {
    let r = s.post_json(&format!("/v2/models/{model}/infer"), &infer_body()).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if status != 200 {
        return Err((status, body["error"].as_str().unwrap_or_default().to_owned()));
    }
    let version = body["model_version"].as_str().unwrap().parse().unwrap();
    let y = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    Ok((version, y))
}

fn scaled(k: f32) -> Vec<f32> {
    X.iter().map(|x| x * k).collect()
}

async fn index(s: &TestServer) -> Vec<Value> {
    s.post_json("/v2/repository/index", &json!({}))
        .await
        .json()
        .await
        .unwrap()
}

async fn state(s: &TestServer, model: &str, version: &str) -> Option<(String, String)> {
    index(s).await.into_iter().find_map(|r| {
        (r["name"] == model && r["version"] == version).then(|| {
            (
                r["state"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}

async fn control(s: &TestServer, action: &str, model: &str, body: Value) -> (u16, Value) {
    let r = s
        .post_json(&format!("/v2/repository/models/{model}/{action}"), &body)
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

fn grpc_params(pairs: Vec<(&str, ParameterChoice)>) -> HashMap<String, ModelRepositoryParameter> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_owned(),
                ModelRepositoryParameter {
                    parameter_choice: Some(v),
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn explicit_mode_loads_swaps_and_unloads_over_rest_and_grpc() {
    let repo = temp_dir("explicit");
    scale_repo(&repo, "explicit_scale");
    write_version(&repo, "explicit_scale", 1, 1.0);
    copy_model("add_sub", &repo.join("add_sub"));
    let s = TestServer::start(explicit(&repo, &["add_sub"])).await;

    // Only what --load-model named is loaded.
    let (status, error) = ask(&s, "explicit_scale").await.unwrap_err();
    assert_eq!(status, 404, "{error}");
    assert!(error.contains("unknown model 'explicit_scale'"), "{error}");
    assert_eq!(
        s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await.status(),
        200
    );

    // REST load answers once the model is ready.
    let (status, body) = control(&s, "load", "explicit_scale", json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(ask(&s, "explicit_scale").await.unwrap(), (1, scaled(1.0)));

    // gRPC load of a new version: it takes over, the old one is retired.
    write_version(&repo, "explicit_scale", 2, 2.0);
    let mut client = s.grpc_client().await;
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "explicit_scale".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ask(&s, "explicit_scale").await.unwrap(), (2, scaled(2.0)));
    eventually(10, "version 1 drained", || async {
        state(&s, "explicit_scale", "1").await == Some(("UNAVAILABLE".into(), "unloaded".into()))
    })
    .await;
    assert_eq!(state(&s, "explicit_scale", "2").await.unwrap().0, "READY");
    // A drained version's series leave /metrics; the serving one's stay.
    let series = |m: &str, version: &str| {
        m.lines()
            .filter(|l| l.contains(&format!("model=\"explicit_scale\",version=\"{version}\"")))
            .count()
    };
    eventually(10, "version 1's series gone", || async {
        series(&s.metrics().await, "1") == 0
    })
    .await;
    assert!(series(&s.metrics().await, "2") > 20);

    // A reload with unchanged files keeps the serving version (no swap).
    let swaps = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("quiver_model_swaps_total{model=\"explicit_scale\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    let before = swaps(&s.metrics().await);
    assert_eq!(control(&s, "load", "explicit_scale", json!({})).await.0, 200);
    assert_eq!(swaps(&s.metrics().await), before);
    // Rewriting the serving version's file in place swaps it.
    write_version(&repo, "explicit_scale", 2, 3.0);
    assert_eq!(control(&s, "load", "explicit_scale", json!({})).await.0, 200);
    assert_eq!(ask(&s, "explicit_scale").await.unwrap(), (2, scaled(3.0)));
    assert_eq!(swaps(&s.metrics().await), before + 1);

    // Unload over REST: no new request reaches it once the answer is back.
    let (status, _) = control(
        &s,
        "unload",
        "explicit_scale",
        json!({"parameters": {"unload_dependents": false}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, error) = ask(&s, "explicit_scale").await.unwrap_err();
    assert_eq!(status, 503, "{error}");
    assert!(error.contains("has no ready version"), "{error}");
    let ready = s
        .client
        .get(s.url("/v2/models/explicit_scale/ready"))
        .send()
        .await
        .unwrap();
    expect_error(ready, 503, "has no ready version").await;
    eventually(10, "version 2 unloaded", || async {
        state(&s, "explicit_scale", "2").await == Some(("UNAVAILABLE".into(), "unloaded".into()))
    })
    .await;
    eventually(10, "version 2's series gone", || async {
        series(&s.metrics().await, "2") == 0
    })
    .await;

    // gRPC unload of add_sub, then ModelReady says false.
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: "add_sub".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "add_sub".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ready.ready);

    // Load with a config override and the model file inline (Triton's
    // `config` and `file:` parameters), over REST (base64) and gRPC (bytes).
    let config = json!({"name": "inline", "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]});
    let file = base64::engine::general_purpose::STANDARD.encode(scale_model(5.0));
    let (status, body) = control(
        &s,
        "load",
        "inline",
        json!({"parameters": {"config": config.to_string(), "file:7/model.onnx": file}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ask(&s, "inline").await.unwrap(), (7, scaled(5.0)));
    let config = s.get_json("/v2/models/inline/config").await;
    assert_eq!(config["max_batch_size"], 4);
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "inline".into(),
            parameters: grpc_params(vec![
                (
                    "config",
                    ParameterChoice::StringParam(json!({"name": "inline"}).to_string()),
                ),
                (
                    "file:8/model.onnx",
                    ParameterChoice::BytesParam(scale_model(6.0).into()),
                ),
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ask(&s, "inline").await.unwrap(), (8, scaled(6.0)));

    // Names that leave the repository, and unknown models, are refused.
    for name in ["..%2Fetc", ".hidden"] {
        let (status, body) = control(&s, "load", name, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains("not a model name"), "{body}");
    }
    let (status, body) = control(&s, "load", "nothing_here", json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no model folder"), "{body}");
    let (status, body) = control(
        &s,
        "load",
        "inline",
        json!({"parameters": {"file:../escape.onnx": "AAAA"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("file:../escape.onnx"),
        "{body}"
    );
    assert_eq!(ask(&s, "inline").await.unwrap(), (8, scaled(6.0)));
    s.stop().await;
}

#[tokio::test]
async fn control_is_refused_outside_explicit_mode() {
    let s = TestServer::demo().await;
    for action in ["load", "unload"] {
        let (status, body) = control(&s, action, "add_sub", json!({})).await;
        assert_eq!(status, 409, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("--model-control-mode=explicit"), "{error}");
    }
    let mut client = s.grpc_client().await;
    let e = client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "add_sub".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("'none'"), "{}", e.message());
    // Still serving.
    assert_eq!(
        s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await.status(),
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn a_broken_new_version_never_takes_down_the_serving_one_explicit() {
    let repo = temp_dir("broken-explicit");
    scale_repo(&repo, "broken");
    write_version(&repo, "broken", 1, 1.0);
    let s = TestServer::start(explicit(&repo, &["*"])).await;
    assert_eq!(ask(&s, "broken").await.unwrap(), (1, scaled(1.0)));

    // A bad ONNX file as version 2.
    write(&repo.join("broken/2/model.onnx"), "not an onnx file");
    let (status, body) = control(&s, "load", "broken", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("version 2"), "{body}");
    assert_eq!(ask(&s, "broken").await.unwrap(), (1, scaled(1.0)));
    let (state1, reason1) = state(&s, "broken", "1").await.unwrap();
    assert_eq!(state1, "READY");
    assert!(reason1.contains("last load failed"), "{reason1}");
    assert_eq!(state(&s, "broken", "2").await.unwrap().0, "UNAVAILABLE");
    assert_eq!(s.get_status("/v2/models/broken/ready").await, 200);

    // A bad config.
    std::fs::remove_dir_all(repo.join("broken/2")).unwrap();
    write(&repo.join("broken/config.pbtxt"), "name: \"broken\" max_batch_size: [");
    let (status, body) = control(&s, "load", "broken", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("config.pbtxt"), "{body}");
    assert_eq!(ask(&s, "broken").await.unwrap(), (1, scaled(1.0)));

    // A warm-up that cannot run keeps the version from serving.
    write(
        &repo.join("broken/config.pbtxt"),
        &format!(
            "{}\nmodel_warmup [ {{ name: \"w\" batch_size: 1 inputs {{ key: \"x\" value: {{ data_type: TYPE_FP32 dims: [ 4 ] input_data_file: \"missing.bin\" }} }} }} ]",
            scale_config("broken")
        ),
    );
    write_version(&repo, "broken", 3, 3.0);
    let (status, body) = control(&s, "load", "broken", json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("missing.bin"), "{body}");
    assert_eq!(ask(&s, "broken").await.unwrap(), (1, scaled(1.0)));

    // The fix loads, and the failure reason is gone.
    write(&repo.join("broken/config.pbtxt"), &scale_config("broken"));
    assert_eq!(control(&s, "load", "broken", json!({})).await.0, 200);
    assert_eq!(ask(&s, "broken").await.unwrap(), (3, scaled(3.0)));
    assert_eq!(state(&s, "broken", "3").await.unwrap(), ("READY".into(), String::new()));
    let m = s.metrics().await;
    assert!(
        m.contains("quiver_model_loads_total{model=\"broken\",outcome=\"failure\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("quiver_model_load_duration_seconds_bucket{model=\"broken\""),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn poll_mode_follows_the_repository_and_survives_broken_versions() {
    let repo = temp_dir("poll");
    scale_repo(&repo, "polled");
    write_version(&repo, "polled", 1, 1.0);
    let mut c = config(&repo);
    c.model_control_mode = quiver_server::config::ControlMode::Poll;
    c.repository_poll_secs = 1;
    let s = TestServer::start(c).await;
    assert_eq!(ask(&s, "polled").await.unwrap(), (1, scaled(1.0)));
    // Poll mode refuses the API, as Triton does.
    let (status, body) = control(&s, "load", "polled", json!({})).await;
    assert_eq!(status, 409);
    assert!(body["error"].as_str().unwrap().contains("'poll'"), "{body}");

    write_version(&repo, "polled", 2, 2.0);
    eventually(15, "version 2 serves", || async {
        ask(&s, "polled").await == Ok((2, scaled(2.0)))
    })
    .await;

    // A broken config while version 2 serves: it keeps serving, and the
    // index says why the change did not apply.
    let good_config = std::fs::read_to_string(repo.join("polled/config.pbtxt")).unwrap();
    write(&repo.join("polled/config.pbtxt"), "name: \"polled\" max_batch_size: [");
    eventually(15, "the config failure reported", || async {
        state(&s, "polled", "2")
            .await
            .is_some_and(|(st, why)| st == "READY" && why.contains("config.pbtxt"))
    })
    .await;
    assert_eq!(ask(&s, "polled").await.unwrap(), (2, scaled(2.0)));
    write(&repo.join("polled/config.pbtxt"), &good_config);
    // A broken version 3: version 2 keeps serving and 3 reports why.
    write(&repo.join("polled/3/model.onnx"), "garbage");
    eventually(15, "version 3 reported", || async {
        state(&s, "polled", "3")
            .await
            .is_some_and(|(st, _)| st == "UNAVAILABLE")
    })
    .await;
    assert_eq!(ask(&s, "polled").await.unwrap(), (2, scaled(2.0)));
    // It is not retried while its files stay the same...
    // Three more scans: a retry would have started by the second.
    let failures = |m: String| m.contains("quiver_model_loads_total{model=\"polled\",outcome=\"failure\"} 2");
    let engine = &s.server.as_ref().unwrap().engine;
    let scanned = engine.repository_polls();
    eventually(15, "three more scans", || async {
        engine.repository_polls() >= scanned + 3
    })
    .await;
    assert!(failures(s.metrics().await), "{}", s.metrics().await);
    // ...and is when they change.
    write_version(&repo, "polled", 3, 3.0);
    eventually(15, "version 3 serves", || async {
        ask(&s, "polled").await == Ok((3, scaled(3.0)))
    })
    .await;

    // A file written slowly, in pieces, is not loaded half-written.
    let path = repo.join("polled/4/model.onnx");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let full = scale_model(4.0);
    for n in 1..=8 {
        std::fs::write(&path, &full[..full.len() * n / 10]).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    std::fs::write(&path, &full).unwrap();
    eventually(15, "version 4 serves", || async {
        ask(&s, "polled").await == Ok((4, scaled(4.0)))
    })
    .await;
    assert!(
        failures(s.metrics().await),
        "a partial file was loaded: {}",
        s.metrics().await
    );

    // version_policy changes apply: all versions serve.
    write(
        &repo.join("polled/config.pbtxt"),
        &format!(
            "{}\nversion_policy: {{ specific: {{ versions: [2, 4] }} }}",
            scale_config("polled")
        ),
    );
    eventually(15, "versions 2 and 4 ready", || async {
        state(&s, "polled", "2").await.is_some_and(|(st, _)| st == "READY")
            && state(&s, "polled", "4").await.is_some_and(|(st, _)| st == "READY")
    })
    .await;
    let r = s.post_json("/v2/models/polled/versions/2/infer", &infer_body()).await;
    assert_eq!(r.status(), 200);
    let r = s.post_json("/v2/models/polled/versions/3/infer", &infer_body()).await;
    assert_ne!(r.status(), 200, "version 3 is outside the policy");

    // A removed model folder is unloaded.
    std::fs::remove_dir_all(repo.join("polled")).unwrap();
    eventually(15, "model unloaded", || async { ask(&s, "polled").await.is_err() }).await;
    s.stop().await;
}

/// Concurrent REST and gRPC clients while a new version is published every
/// 100 ms: nothing fails, every answer is computed by the version it names,
/// and the model never reports not-ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_fail_no_request() {
    let repo = temp_dir("swaps");
    scale_repo(&repo, "scale");
    swaps_under_load(repo, 20, |repo, v| write_version(repo, "scale", v, v as f32)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torchscript_swaps_under_load_fail_no_request() {
    let repo = temp_dir("torch-swaps");
    std::fs::create_dir_all(repo.join("scale")).unwrap();
    std::fs::write(repo.join("scale/config.pbtxt"), scale_config_torch("scale")).unwrap();
    swaps_under_load(repo, 7, |repo, v| write_torch_version(repo, "scale", v, v as u32)).await;
}

/// Publishes versions 2..=swaps+1 of the scale model (version v computes
/// x * v) one after another while REST and gRPC clients drive it: no request
/// fails, none is answered by another version's values, readiness holds.
async fn swaps_under_load(repo: std::path::PathBuf, swaps: u64, write: impl Fn(&std::path::Path, u64)) {
    write(&repo, 1);
    let s = Arc::new(TestServer::start(explicit(&repo, &["scale"])).await);
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (s, done) = (Arc::clone(&s), Arc::clone(&done));
        clients.spawn(async move {
            let mut grpc = s.grpc_client().await;
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let (version, y) = if i % 2 == 0 {
                    ask(&s, "scale")
                        .await
                        .unwrap_or_else(|e| panic!("HTTP request failed: {e:?}"))
                } else {
                    let raw: Vec<u8> = X.iter().flat_map(|x| x.to_le_bytes()).collect();
                    let r = grpc
                        .model_infer(ModelInferRequest {
                            model_name: "scale".into(),
                            inputs: vec![InferInputTensor {
                                name: "x".into(),
                                datatype: "FP32".into(),
                                shape: vec![1, 4],
                                ..Default::default()
                            }],
                            raw_input_contents: vec![raw.into()],
                            ..Default::default()
                        })
                        .await
                        .unwrap_or_else(|e| panic!("gRPC request failed: {e:?}"))
                        .into_inner();
                    let y = r.raw_output_contents[0]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    (r.model_version.parse().unwrap(), y)
                };
                assert_eq!(
                    y,
                    scaled(version as f32),
                    "version {version} answered with another's values"
                );
                seen.push(version);
            }
            seen
        });
    }
    let ready_watch = {
        let (s, done) = (Arc::clone(&s), Arc::clone(&done));
        tokio::spawn(async move {
            let mut grpc = s.grpc_client().await;
            while !done.load(Ordering::Relaxed) {
                let ready = grpc
                    .model_ready(ModelReadyRequest {
                        name: "scale".into(),
                        version: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .ready;
                assert!(ready, "the model reported not-ready during a swap");
            }
        })
    };
    for v in 2..=swaps + 1 {
        write(&repo, v);
        let (status, body) = control(&s, "load", "scale", json!({})).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut versions = std::collections::BTreeSet::new();
    let mut answers = 0;
    while let Some(seen) = clients.join_next().await {
        let seen = seen.expect("a client failed");
        answers += seen.len();
        versions.extend(seen);
    }
    ready_watch.await.expect("readiness dropped");
    assert!(answers > 100, "only {answers} answers");
    assert!(versions.len() as u64 > swaps / 4, "answers came from only {versions:?}");
    assert_eq!(ask(&s, "scale").await.unwrap().0, swaps + 1);
    Arc::into_inner(s).unwrap().stop().await;
}

#[tokio::test]
async fn shutdown_closes_an_idle_stream_and_returns() {
    let mut s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<ModelInferRequest>(1);
    let mut stream = client
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The stream stays open and idle: the client never ends it.
    let server = s.server.take().unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), server.shutdown(Duration::ZERO)).await;
    assert!(stopped.is_ok(), "shutdown hung on an open stream");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the stream was not closed: {end:?}"
    );
    drop(tx);
}

/// Two slow-loading models (conv_net warmed up 150 times) loaded at once:
/// with one load slot they take turns, with two they load side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_of_different_models_run_in_parallel_up_to_the_limit() {
    for slots in [1usize, 2] {
        let repo = temp_dir(&format!("parallel-{slots}"));
        for name in ["slow_a", "slow_b"] {
            copy_model("conv_net", &repo.join(name));
            let config = std::fs::read_to_string(repo.join(name).join("config.pbtxt")).unwrap();
            let warmup = "model_warmup [ { name: \"slow\" batch_size: 1 count: 150 inputs { key: \"image\" \
                          value: { data_type: TYPE_FP32 dims: [ 3, 64, 64 ] zero_data: true } } } ]";
            let config = format!("{}\n{warmup}\n", config.replace("\"conv_net\"", &format!("\"{name}\"")));
            write(&repo.join(name).join("config.pbtxt"), &config);
        }
        let mut c = explicit(&repo, &[]);
        c.model_load_threads = slots;
        let s = Arc::new(TestServer::start(c).await);
        let mut loads = tokio::task::JoinSet::new();
        for name in ["slow_a", "slow_b"] {
            let s = Arc::clone(&s);
            loads.spawn(async move { control(&s, "load", name, json!({})).await.0 });
        }
        let mut most_loading = 0;
        let mut done = 0;
        while done < 2 {
            let loading = index(&s).await.iter().filter(|r| r["state"] == "LOADING").count();
            most_loading = most_loading.max(loading);
            while let Some(status) = loads.try_join_next() {
                assert_eq!(status.unwrap(), 200);
                done += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(most_loading, slots, "with {slots} load slot(s)");
        Arc::into_inner(s).unwrap().stop().await;
    }
}
