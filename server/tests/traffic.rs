//! Traffic splitting against the real server: two versions of a real ONNX
//! model live at once (y = x * 2 and y = x * 3), so every answer says which
//! one computed it. Split counts are exact, not timing.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::versions::*;
use common::*;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use serde_json::{Value, json};

async fn two_versions(name: &str) -> (TestServer, std::path::PathBuf) {
    let repo = temp_dir(name);
    scale_repo(&repo, "scale");
    let config = repo.join("scale/config.pbtxt");
    let text = std::fs::read_to_string(&config).unwrap() + "version_policy: { all: {} }\n";
    std::fs::write(&config, text).unwrap();
    write_version(&repo, "scale", 1, 2.0);
    write_version(&repo, "scale", 2, 3.0);
    (TestServer::start(explicit(&repo, &["scale"])).await, repo)
}

/// (k that computed the answer, x-quiver-variant of the answer).
async fn ask(s: &TestServer, path: &str, headers: &[(&str, String)]) -> (f64, Option<String>) {
    let mut r = s.client.post(s.url(path)).json(&infer_body());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let variant = r
        .headers()
        .get("x-quiver-variant")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    (body["outputs"][0]["data"][0].as_f64().unwrap(), variant)
}

async fn put(s: &TestServer, policy: Value) -> reqwest::Response {
    s.client
        .put(s.url("/v2/models/scale/traffic"))
        .json(&policy)
        .send()
        .await
        .unwrap()
}

fn split(stable: u32, canary: u32) -> Value {
    json!({"variants": [{"name": "stable", "version": "stable", "weight": stable},
                        {"name": "canary", "version": 2, "weight": canary}],
           "labels": {"stable": 1, "canary": 2}, "sticky_header": "x-user-id"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_exactly_and_the_answer_names_its_variant() {
    let (s, _) = two_versions("traffic-split").await;
    assert_eq!(put(&s, split(90, 10)).await.status(), 200);
    let s = Arc::new(s);
    let canary = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, canary) = (Arc::clone(&s), Arc::clone(&canary));
        tasks.push(tokio::spawn(async move {
            for _ in 0..625 {
                let (k, variant) = ask(&s, "/v2/models/scale/infer", &[]).await;
                let expected = if k == 3.0 { "canary" } else { "stable" };
                assert_eq!(
                    variant.as_deref(),
                    Some(expected),
                    "the header names the variant that computed it"
                );
                if k == 3.0 {
                    canary.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 10,000 requests at 90/10: the round-robin is exact per cycle of 10.
    assert_eq!(canary.load(Ordering::Relaxed), 1_000);
    let policy = s.get_json("/v2/models/scale/traffic").await;
    assert_eq!(policy["stats"][0]["requests"], 9_000);
    assert_eq!(policy["stats"][1]["requests"], 1_000);
    assert_eq!(policy["origin"], "api");

    // Labels work where a version number does.
    assert_eq!(
        ask(&s, "/v2/models/scale/versions/canary/infer", &[]).await,
        (3.0, None)
    );
    assert_eq!(
        ask(&s, "/v2/models/scale/versions/stable/infer", &[]).await,
        (2.0, None)
    );
    let meta = s.get_json("/v2/models/scale/versions/canary").await;
    assert_eq!(meta["name"], "scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_keep_one_variant_and_the_header_overrides() {
    let (s, _) = two_versions("traffic-sticky").await;
    assert_eq!(put(&s, split(70, 30)).await.status(), 200);
    let mut canary_users = 0;
    for user in 0..1_000 {
        let id = [("x-user-id", format!("user-{user}"))];
        let (first, _) = ask(&s, "/v2/models/scale/infer", &id).await;
        for _ in 0..9 {
            assert_eq!(
                ask(&s, "/v2/models/scale/infer", &id).await.0,
                first,
                "user {user} switched variants"
            );
        }
        canary_users += usize::from(first == 3.0);
    }
    assert!(
        (270..=330).contains(&canary_users),
        "{canary_users} of 1000 users on the 30% canary"
    );

    // The header forces a variant, over the sticky hash too; sending back
    // the value an answer carried routes to it again.
    for _ in 0..100 {
        let forced = [
            ("x-quiver-variant", "canary".to_string()),
            ("x-user-id", "user-1".to_string()),
        ];
        assert_eq!(
            ask(&s, "/v2/models/scale/infer", &forced).await,
            (3.0, Some("canary".into()))
        );
    }
    let r = s
        .client
        .post(s.url("/v2/models/scale/infer"))
        .header("x-quiver-variant", "beta")
        .json(&infer_body())
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        400,
        "x-quiver-variant: 'beta' is not a variant of this model (variants: stable, canary)",
    )
    .await;

    // Over gRPC: metadata in, metadata out.
    let mut grpc = s.grpc_client().await;
    for _ in 0..100 {
        let mut req = tonic::Request::new(ModelInferRequest {
            model_name: "scale".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 4],
                ..Default::default()
            }],
            raw_input_contents: vec![X.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into()],
            ..Default::default()
        });
        req.metadata_mut().insert("x-quiver-variant", "canary".parse().unwrap());
        let resp = grpc.model_infer(req).await.unwrap();
        assert_eq!(resp.metadata().get("x-quiver-variant").unwrap(), "canary");
        let y = &resp.get_ref().raw_output_contents[0];
        assert_eq!(f32::from_le_bytes(y[..4].try_into().unwrap()), 3.0);
        assert_eq!(resp.get_ref().model_version, "2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_change_atomically_under_load_and_bad_ones_are_refused() {
    let (s, repo) = two_versions("traffic-change").await;
    assert_eq!(put(&s, split(100, 0)).await.status(), 200);
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (s, stop, failures, answered) = (
            Arc::clone(&s),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&answered),
        );
        clients.push(tokio::spawn(async move {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = s.post_json("/v2/models/scale/infer", &infer_body()).await;
                if r.status() != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
                seen += 1;
            }
            seen
        }));
    }
    // Each policy serves at least 25 requests before the next replaces it:
    // counted, not timed, so a slow machine changes nothing.
    for (stable, canary) in [(95, 5), (75, 25), (50, 50), (0, 100), (100, 0), (90, 10)] {
        assert_eq!(put(&s, split(stable, canary)).await.status(), 200);
        let from = answered.load(Ordering::Relaxed);
        eventually(30, "25 requests under this policy", || async {
            answered.load(Ordering::Relaxed) >= from + 25
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 100, "{total} requests");
    assert_eq!(failures.load(Ordering::Relaxed), 0);

    // Refused with the reason; the policy in force stays.
    let bad = [
        (json!({"variants": []}), "'variants' is empty"),
        (
            json!({"variants": [{"name": "a", "weight": 0}]}),
            "the weights sum to 0",
        ),
        (
            json!({"variants": [{"name": "a", "weight": 1}], "default": "b"}),
            "'default' names variant 'b'",
        ),
        (
            json!({"variants": [{"name": "a", "model": "nope", "weight": 1}]}),
            "model 'nope'",
        ),
        (
            json!({"variants": [{"name": "a", "version": "beta", "weight": 1}]}),
            "version 'beta'",
        ),
        (
            json!({"variants": [{"name": "a", "weight": 1}], "shadow": {"variant": "b", "percent": 5}}),
            "'shadow.variant' names variant 'b'",
        ),
    ];
    for (policy, needle) in bad {
        expect_error(put(&s, policy).await, 400, needle).await;
    }
    let r = s
        .client
        .put(s.url("/v2/models/nope/traffic"))
        .json(&split(1, 1))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "unknown model 'nope'").await;
    let kept = s.get_json("/v2/models/scale/traffic").await;
    assert_eq!(kept["variants"][1]["weight"], 10);

    // DELETE: plain version routing (the highest version) again.
    let r = s.client.delete(s.url("/v2/models/scale/traffic")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ask(&s, "/v2/models/scale/infer", &[]).await, (3.0, None));
    assert_eq!(s.get_status("/v2/models/scale/traffic").await, 404);

    // traffic.json beside config.pbtxt: applied by a load; a bad one is
    // refused and the policy in force stays.
    write(&repo.join("scale/traffic.json"), &split(0, 1).to_string());
    assert_eq!(
        s.post_json("/v2/repository/models/scale/load", &json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(
        ask(&s, "/v2/models/scale/infer", &[]).await,
        (3.0, Some("canary".into()))
    );
    assert_eq!(s.get_json("/v2/models/scale/traffic").await["origin"], "file");
    write(&repo.join("scale/traffic.json"), r#"{"variants": []}"#);
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    expect_error(r, 400, "traffic.json: traffic policy for 'scale': 'variants' is empty").await;
    assert_eq!(
        ask(&s, "/v2/models/scale/infer", &[]).await.1.as_deref(),
        Some("canary")
    );
    std::fs::remove_file(repo.join("scale/traffic.json")).unwrap();
    assert_eq!(
        s.post_json("/v2/repository/models/scale/load", &json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(ask(&s, "/v2/models/scale/infer", &[]).await, (3.0, None));
}

/// The scale model again as another model of the repository, but without
/// batching (`dims: [1, 4]`): a request of 2 rows, which the batching
/// `scale` serves, fails on it.
fn strict_twin(repo: &std::path::Path) {
    std::fs::create_dir_all(repo.join("strict/1")).unwrap();
    std::fs::copy(repo.join("scale/2/model.onnx"), repo.join("strict/1/model.onnx")).unwrap();
    write(
        &repo.join("strict/config.pbtxt"),
        r#"name: "strict"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]
"#,
    );
}

fn rows(n: usize) -> Value {
    let data: Vec<f32> = (0..n).flat_map(|_| X).collect();
    json!({"inputs": [{"name": "x", "shape": [n, 4], "datatype": "FP32", "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_traffic_is_compared_and_never_answers() {
    let (s, _) = two_versions("traffic-shadow").await;
    let policy = |shadow: &str| {
        json!({"variants": [{"name": "stable", "version": 1, "weight": 1},
                            {"name": "canary", "version": 2, "weight": 0},
                            {"name": "twin", "version": 1, "weight": 0}],
               "shadow": {"variant": shadow, "percent": 100, "tolerance": {"atol": 0.001}}})
    };
    // A shadow that computes x * 3 where the primary computes x * 2.
    assert_eq!(put(&s, policy("canary")).await.status(), 200);
    for _ in 0..200 {
        assert_eq!(
            ask(&s, "/v2/models/scale/infer", &[]).await,
            (2.0, Some("stable".into()))
        );
    }
    let settled = |v: &Value| {
        let st = &v["shadow_stats"];
        st["compared"].as_u64().unwrap() + st["failed"].as_u64().unwrap() + st["dropped"].as_u64().unwrap() == 200
    };
    eventually(10, "every shadow run accounted for", || {
        let s = &s;
        async move { settled(&s.get_json("/v2/models/scale/traffic").await) }
    })
    .await;
    let summary = s.get_json("/v2/models/scale/traffic").await;
    let st = &summary["shadow_stats"];
    assert!(st["compared"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(st["mismatches"], st["compared"], "{summary}");
    assert_eq!(
        st["max_abs_difference"], 4.0,
        "x = [1, 2, 3, 4]: |3x - 2x| is at most 4"
    );
    // The canary served nothing itself.
    assert_eq!(summary["stats"][1]["requests"], 0);

    // A shadow that computes the same: no mismatch.
    assert_eq!(put(&s, policy("twin")).await.status(), 200);
    for _ in 0..100 {
        ask(&s, "/v2/models/scale/infer", &[]).await;
    }
    eventually(10, "the twin's runs accounted for", || {
        let s = &s;
        async move {
            let v = s.get_json("/v2/models/scale/traffic").await;
            let st = &v["shadow_stats"];
            st["compared"].as_u64().unwrap() + st["dropped"].as_u64().unwrap() == 100
        }
    })
    .await;
    let summary = s.get_json("/v2/models/scale/traffic").await;
    assert_eq!(summary["shadow_stats"]["mismatches"], 0, "{summary}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("quiver_shadow_mismatches_total{model=\"scale\",variant=\"canary\"}"),
        "no shadow metric"
    );
    assert!(metrics.contains("quiver_variant_requests_total{model=\"scale\",variant=\"stable\",outcome=\"success\"}"));
}

/// Waits until the policy's rollout state starts with `prefix`.
async fn rollout_reaches(s: &TestServer, prefix: &str, what: &str) {
    eventually(30, what, || async {
        s.get_json("/v2/models/scale/traffic").await["rollout_state"]
            .as_str()
            .unwrap_or("")
            .starts_with(prefix)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_promoted_or_rolled_back_on_what_the_canary_does() {
    let (s, repo) = two_versions("traffic-rollout").await;
    strict_twin(&repo);
    assert_eq!(
        s.post_json("/v2/repository/models/strict/load", &json!({}))
            .await
            .status(),
        200
    );
    let s = Arc::new(s);

    // A healthy canary (version 2): 50% then 100%, then promoted.
    let healthy = json!({
        "variants": [{"name": "stable", "version": "stable", "weight": 100},
                     {"name": "canary", "version": 2, "weight": 0}],
        "labels": {"stable": 1},
        "rollout": {"canary": "canary", "stable": "stable", "steps": [50, 100],
                    "step_seconds": 0.3, "min_requests": 20}});
    assert_eq!(put(&s, healthy).await.status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let client = {
        let (s, stop, failures) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&failures));
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // One request in five has two rows: the strict model refuses those.
                let body = if n % 5 == 4 { rows(2) } else { rows(1) };
                if s.post_json("/v2/models/scale/infer", &body).await.status() != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        })
    };
    rollout_reaches(&s, "promoted", "the healthy canary promoted").await;
    let promoted = s.get_json("/v2/models/scale/traffic").await;
    assert_eq!(promoted["variants"][0]["version"], "2", "{promoted}");
    assert_eq!(promoted["labels"]["stable"], 2);
    assert_eq!(promoted["variants"][0]["weight"], 100);
    assert_eq!(
        ask(&s, "/v2/models/scale/infer", &[]).await,
        (3.0, Some("stable".into()))
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during the rollout"
    );

    // A canary that fails one request in five: rolled back, with the reason.
    let flaky = json!({
        "variants": [{"name": "stable", "version": 1, "weight": 100},
                     {"name": "canary", "model": "strict", "weight": 0}],
        "rollout": {"canary": "canary", "stable": "stable", "steps": [50, 100],
                    "step_seconds": 0.5, "min_requests": 40}});
    assert_eq!(put(&s, flaky).await.status(), 200);
    rollout_reaches(&s, "rolled back", "the flaky canary rolled back").await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let back = s.get_json("/v2/models/scale/traffic").await;
    let why = back["rollout_state"].as_str().unwrap();
    assert!(
        why.contains("rolled back at step 1 (50%): canary error rate") && why.contains("exceeds stable's 0.00%"),
        "{why}"
    );
    assert_eq!(back["variants"][1]["weight"], 0);
    assert_eq!(back["variants"][0]["weight"], 100);
    for _ in 0..20 {
        assert_eq!(
            s.post_json("/v2/models/scale/infer", &rows(2)).await.status(),
            200,
            "all traffic on stable again"
        );
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("quiver_rollout_rollbacks_total{model=\"scale\",check=\"error_rate\"} 1"),
        "no rollback counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_control_apart_from_the_data_plane() {
    let repo = temp_dir("traffic-admin");
    scale_repo(&repo, "scale");
    write_version(&repo, "scale", 1, 2.0);
    let mut c = explicit(&repo, &["scale"]);
    c.admin_port = Some(0);
    let s = TestServer::start(c).await;
    let admin = format!(
        "http://{}",
        s.server.as_ref().unwrap().admin_addr.expect("admin listener")
    );
    let policy = json!({"variants": [{"name": "only", "version": 1, "weight": 1}]});
    let r = s
        .client
        .put(format!("{admin}/v2/models/scale/traffic"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ask(&s, "/v2/models/scale/infer", &[]).await, (2.0, Some("only".into())));
    let r = s
        .client
        .get(format!("{admin}/v2/models/scale/traffic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["stats"][0]["requests"], 1);
    // No data plane there.
    let r = s
        .client
        .post(format!("{admin}/v2/models/scale/infer"))
        .json(&infer_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .post(format!("{admin}/v2/repository/index"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_variant_serves_when_the_chosen_one_cannot_and_poll_mode_reads_the_file() {
    let repo = temp_dir("traffic-poll");
    scale_repo(&repo, "scale");
    write_version(&repo, "scale", 1, 2.0);
    let mut c = config(&repo);
    c.model_control_mode = quiver_server::config::ControlMode::Poll;
    c.repository_poll_secs = 1;
    let s = TestServer::start(c).await;
    assert_eq!(ask(&s, "/v2/models/scale/infer", &[]).await, (2.0, None));

    // traffic.json written beside config.pbtxt: picked up by the poller.
    // The canary names a version that is not loaded: the default serves.
    let policy = json!({"variants": [{"name": "stable", "version": 1, "weight": 0},
                                     {"name": "canary", "version": 7, "weight": 1}],
                        "default": "stable"});
    write(&repo.join("scale/traffic.json"), &policy.to_string());
    eventually(15, "the policy file applied", || async {
        s.client
            .get(s.url("/v2/models/scale/traffic"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            ask(&s, "/v2/models/scale/infer", &[]).await,
            (2.0, Some("stable".into()))
        );
    }
    let summary = s.get_json("/v2/models/scale/traffic").await;
    assert_eq!(summary["origin"], "file");
    assert_eq!(
        summary["stats"][1]["errors"], 10,
        "the canary's refusals are counted: {summary}"
    );
    // Forced to the canary: its own error, no fallback.
    let r = s
        .client
        .post(s.url("/v2/models/scale/infer"))
        .header("x-quiver-variant", "canary")
        .json(&infer_body())
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "unknown version '7'").await;

    // The file removed: the policy it set goes.
    std::fs::remove_file(repo.join("scale/traffic.json")).unwrap();
    eventually(15, "the policy removed", || async {
        s.client
            .get(s.url("/v2/models/scale/traffic"))
            .send()
            .await
            .unwrap()
            .status()
            == 404
    })
    .await;
    assert_eq!(ask(&s, "/v2/models/scale/infer", &[]).await, (2.0, None));
}
