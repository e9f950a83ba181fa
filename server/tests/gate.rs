//! The validation gate against the real server and real ONNX models: a
//! version that gives wrong answers, is too slow, or strays from the version
//! serving is never switched in; one that passes records it.
mod common;

use common::versions::*;
use common::*;
use serde_json::{Value, json};

fn golden(k: f32) -> String {
    json!({
        "request": infer_body(),
        "response": {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4],
                                  "data": X.iter().map(|x| x * k).collect::<Vec<_>>()}]}
    })
    .to_string()
}

async fn y(s: &TestServer) -> (String, Vec<f64>) {
    let body: Value = s
        .post_json("/v2/models/scale/infer", &infer_body())
        .await
        .json()
        .await
        .unwrap();
    let y = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (body["model_version"].as_str().unwrap().to_owned(), y)
}

async fn row(s: &TestServer, version: &str) -> Value {
    s.index_row("scale", version).await
}

async fn failures(s: &TestServer, check: &str) -> f64 {
    let text = s.metrics().await;
    let needle = format!("quiver_validation_failures_total{{model=\"scale\",check=\"{check}\"}} ");
    let alt = format!("quiver_validation_failures_total{{check=\"{check}\",model=\"scale\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle).or_else(|| l.strip_prefix(&alt)))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_its_gate_never_serves() {
    let repo = temp_dir("gate");
    scale_repo(&repo, "scale");
    write_version(&repo, "scale", 1, 2.0);
    let v1 = repo.join("scale/1/validation");
    write(&v1.join("golden.json"), &golden(2.0));
    let s = TestServer::start(explicit(&repo, &["scale"])).await;
    assert_eq!(y(&s).await, ("1".into(), vec![2.0, 4.0, 6.0, 8.0]));
    let passed = row(&s, "1").await["provenance"]["validation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        passed.starts_with("passed") && passed.contains("1 golden case(s) matched"),
        "{passed}"
    );

    // Version 2 computes x * 5 but its golden set says x * 3: refused.
    write_version(&repo, "scale", 2, 5.0);
    write(&repo.join("scale/2/validation/golden.json"), &golden(3.0));
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    expect_error(
        r,
        400,
        "validation failed (golden): case 'golden.json': output 'y'[0] is 5 where 3 was expected",
    )
    .await;
    assert_eq!(y(&s).await.0, "1", "the serving version keeps serving");
    let refused = row(&s, "2").await;
    assert_eq!(refused["state"], "UNAVAILABLE");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("validation failed (golden)"),
        "{refused}"
    );
    assert_eq!(failures(&s, "golden").await, 1.0);

    // Right numbers, but further from version 1 than the gate allows.
    write_version(&repo, "scale", 2, 3.0);
    write(
        &repo.join("scale/2/validation/gate.json"),
        r#"{"max_deviation": {"atol": 0.5}}"#,
    );
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    expect_error(
        r,
        400,
        "validation failed (deviation): case 'golden.json' against serving version 1",
    )
    .await;
    assert_eq!(failures(&s, "deviation").await, 1.0);
    assert_eq!(y(&s).await.0, "1");

    // A latency budget no model can meet.
    write(
        &repo.join("scale/2/validation/gate.json"),
        r#"{"max_p99_latency_ms": 0.000001, "latency_runs": 5}"#,
    );
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    expect_error(r, 400, "validation failed (latency): p99 latency").await;
    assert_eq!(failures(&s, "latency").await, 1.0);

    // A malformed golden set is a failure too, named by file.
    write(&repo.join("scale/2/validation/gate.json"), r#"{"max_p99_latency": 5}"#);
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    expect_error(r, 400, "validation failed (golden_set): gate.json").await;

    // Within every limit: switched in, and the index says it passed.
    write(
        &repo.join("scale/2/validation/gate.json"),
        r#"{"max_p99_latency_ms": 10000, "latency_runs": 10, "max_deviation": {"atol": 10}}"#,
    );
    let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(y(&s).await, ("2".into(), vec![3.0, 6.0, 9.0, 12.0]));
    let v2 = row(&s, "2").await;
    let passed = v2["provenance"]["validation"].as_str().unwrap();
    assert!(
        passed.contains("p99") && passed.contains("within max_deviation of version 1"),
        "{passed}"
    );
    assert!(v2["provenance"]["uri"].as_str().unwrap().starts_with("file://"), "{v2}");
    // The config's parameters carry the same record.
    let config = s.get_json("/v2/models/scale/config").await;
    assert_eq!(config["parameters"]["provenance.validation"]["string_value"], passed);
    s.stop().await;
}
