//! Monitoring through the real server: a version with a reference is
//! watched; a shifted feature shows in the API, the metrics and the log of
//! state changes; a reference or setting that does not fit fails the load
//! with the reason while the previous version serves on.
mod common;

use common::*;
use serde_json::{Value, json};

const FEATURES: usize = 32;

/// Standard normal rows, reproducible (xorshift and Box-Muller).
fn normal_rows(seed: u64, rows: usize, shift: Option<(usize, f64)>) -> Vec<f64> {
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(rows * FEATURES);
    for _ in 0..rows {
        for f in 0..FEATURES {
            let (u, v) = (uniform(), uniform());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            let delta = shift.filter(|(g, _)| *g == f).map_or(0.0, |(_, d)| d);
            out.push(((z + delta) as f32) as f64);
        }
    }
    out
}

fn reference_json(rows: usize) -> String {
    json!({"inputs": [{"name": "input", "shape": [rows, FEATURES], "datatype": "FP32",
                        "data": normal_rows(1, rows, None)}]})
    .to_string()
}

/// A server over fraud_mlp with a reference of 2,000 rows, half-second
/// windows of at least 300 rows.
async fn monitored_fraud_mlp(name: &str) -> TestServer {
    let repo = temp_dir(name);
    copy_model("fraud_mlp", &repo.join("fraud_mlp"));
    write(&repo.join("fraud_mlp/reference.json"), &reference_json(2000));
    write(
        &repo.join("fraud_mlp/monitoring.json"),
        r#"{"window_seconds": 0.5, "min_samples": 300}"#,
    );
    TestServer::start(config(&repo)).await
}

/// Sends `rows` rows to fraud_mlp in requests of 50.
async fn send(s: &TestServer, seed: u64, rows: usize, shift: Option<(usize, f64)>) {
    let data = normal_rows(seed, rows, shift);
    for chunk in data.chunks(50 * FEATURES) {
        let n = chunk.len() / FEATURES;
        let body = json!({"inputs": [{"name": "input", "shape": [n, FEATURES], "datatype": "FP32", "data": chunk}]});
        let out = s.infer_json("fraud_mlp", &body).await;
        assert_eq!(out["outputs"][0]["shape"], json!([n, 2]), "{out}");
    }
}

fn feature<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["input"] == "input" && f["feature"] == name)
        .unwrap_or_else(|| panic!("feature {name} not in {report}"))
}

#[tokio::test]
async fn a_shifted_feature_is_flagged_in_the_api_and_the_metrics() {
    let s = monitored_fraud_mlp("monitoring-shift").await;

    // Before any traffic: watched, nothing judged.
    let report = s.get_json("/v2/models/fraud_mlp/versions/1/monitoring").await;
    assert_eq!(report["reference"]["source"], "reference.json", "{report}");
    assert_eq!(report["features"].as_array().unwrap().len(), FEATURES);
    assert_eq!(feature(&report, "0")["judged"], false);

    // One window of data like the reference: judged, nothing drifts.
    send(&s, 2, 600, None).await;
    eventually(10, "the first window is judged", || async {
        feature(&s.get_json("/v2/models/fraud_mlp/monitoring").await, "0")["judged"] == true
    })
    .await;
    let report = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    for f in report["features"].as_array().unwrap() {
        assert_ne!(f["state"], "drift", "{f}");
    }

    // Feature 5 moves by one standard deviation.
    send(&s, 3, 600, Some((5, 1.0))).await;
    eventually(10, "feature 5 drifts", || async {
        feature(&s.get_json("/v2/models/fraud_mlp/monitoring").await, "5")["state"] == "drift"
    })
    .await;
    let report = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    let five = feature(&report, "5");
    assert!(five["scores"]["ks_pvalue"].as_f64().unwrap() < 1e-6, "{five}");
    assert!(five["scores"]["wasserstein"].as_f64().unwrap() > 0.5, "{five}");
    assert!(five["samples"].as_u64().unwrap() >= 300, "{five}");
    for f in report["features"].as_array().unwrap() {
        if f["feature"] != "5" {
            assert_ne!(f["state"], "drift", "{f}");
        }
    }
    let metrics = s.metrics().await;
    let state = "quiver_feature_drift_state{model=\"fraud_mlp\",version=\"1\",input=\"input\",feature=\"5\"} 2";
    assert!(metrics.contains(state), "{metrics}");
    assert!(
        metrics.contains(
            "quiver_feature_drift{model=\"fraud_mlp\",version=\"1\",input=\"input\",feature=\"5\",method=\"psi\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("quiver_data_quality_ratio{model=\"fraud_mlp\",version=\"1\",input=\"input\",check=\"nan\"} 0"),
        "{metrics}"
    );

    // NaNs, values past the reference's range and refused requests count
    // as data quality. First every row sent so far is in a judged window.
    eventually(10, "the shifted rows are all judged", || async {
        let r = s.get_json("/v2/models/fraud_mlp/monitoring").await;
        r["versions"][0]["variants"][0]["current_window"]["rows"] == 0
    })
    .await;
    let bad = json!({"inputs": [{"name": "input", "shape": [1, 31], "datatype": "FP32", "data": vec![0.0; 31]}]});
    let r = s.post_json("/v2/models/fraud_mlp/infer", &bad).await;
    expect_error(r, 400, "input 'input'").await;
    let mut rows = normal_rows(4, 300, None);
    for (i, v) in rows.iter_mut().enumerate() {
        if i % 10 == 0 {
            *v = if i % 20 == 0 { f64::NAN } else { 1e6 };
        }
    }
    for chunk in rows.chunks(50 * FEATURES) {
        let n = chunk.len() / FEATURES;
        // NaN is not JSON: the binary tensor extension carries it.
        let raw: Vec<u8> = chunk.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
        let header = json!({"inputs": [{"name": "input", "shape": [n, FEATURES], "datatype": "FP32",
                                         "parameters": {"binary_data_size": raw.len()}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(&raw);
        let r = s
            .client
            .post(s.url("/v2/models/fraud_mlp/infer"))
            .header("Inference-Header-Content-Length", header.len())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    eventually(10, "the data-quality window is judged", || async {
        let r = s.get_json("/v2/models/fraud_mlp/monitoring").await;
        r["versions"][0]["variants"][0]["quality"][0]["nan"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    })
    .await;
    let r = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    let q = &r["versions"][0]["variants"][0]["quality"][0];
    let nan = q["nan"].as_f64().unwrap();
    let out = q["out_of_range"].as_f64().unwrap();
    assert!((nan - 0.05).abs() < 1e-9, "{q}");
    // 5% set past the range, over the finite values (95%), plus the tails
    // of normal data past the reference's own extremes (rare).
    assert!((0.05 / 0.95..0.06).contains(&out), "{q}");
    // One request of the window's seven was refused naming the input.
    assert!((q["refused"].as_f64().unwrap() - 1.0 / 7.0).abs() < 1e-9, "{q}");
    s.stop().await;
}

#[tokio::test]
async fn monitoring_settings_that_do_not_fit_fail_the_load_and_the_served_version_stays() {
    let repo = temp_dir("monitoring-bad");
    copy_model("fraud_mlp", &repo.join("fraud_mlp"));
    let s = TestServer::start(explicit(&repo, &["fraud_mlp"])).await;
    let unmonitored = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    assert_eq!(unmonitored["monitored"], false, "{unmonitored}");

    let v2 = repo.join("fraud_mlp/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(repo.join("fraud_mlp/1/model.onnx"), v2.join("model.onnx")).unwrap();
    for (file, text, why) in [
        (
            "reference.json",
            json!({"inputs": [{"name": "features", "shape": [2, 32], "datatype": "FP32", "data": vec![0.0; 64]}]})
                .to_string(),
            "reference array 'features' is neither an input nor an output of model 'fraud_mlp'",
        ),
        (
            "reference.json",
            json!({"inputs": [{"name": "input", "shape": [2, 31], "datatype": "FP32", "data": vec![0.0; 62]}]})
                .to_string(),
            "reference array 'input' has rows of shape [31]; model 'fraud_mlp' input 'input' has dims [32]",
        ),
        (
            "reference.npz",
            "PK not really".into(),
            "reference.npz: not a zip archive",
        ),
        (
            "monitoring.json",
            r#"{"thresholds": {"kl": 0.1}}"#.into(),
            "unknown method 'kl'",
        ),
        (
            "monitoring.json",
            r#"{"thresholds": {"ks": 2}}"#.into(),
            "ks p-value 2 is out of range",
        ),
    ] {
        for f in ["reference.json", "reference.npz", "monitoring.json"] {
            let _ = std::fs::remove_file(v2.join(f));
        }
        if file == "monitoring.json" {
            write(&v2.join("reference.json"), &reference_json(100));
        }
        write(&v2.join(file), &text);
        let r = s.post_json("/v2/repository/models/fraud_mlp/load", &json!({})).await;
        expect_error(r, 400, why).await;
        // Version 1 serves on.
        send(&s, 9, 50, None).await;
        let ready = s.get_json("/v2/models/fraud_mlp/ready").await;
        assert_eq!(ready["ready"], true);
    }
    // A good reference: version 2 serves, monitored.
    let _ = std::fs::remove_file(v2.join("monitoring.json"));
    write(&v2.join("reference.json"), &reference_json(100));
    let r = s.post_json("/v2/repository/models/fraud_mlp/load", &json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let report = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    assert_eq!(report["monitored"], true, "{report}");
    assert_eq!(report["versions"][0]["version"], "2", "{report}");
    s.stop().await;
}

#[tokio::test]
async fn live_traffic_becomes_the_reference_and_bad_freezes_are_refused() {
    let s = monitored_fraud_mlp("monitoring-freeze").await;
    let freeze = |body: Value| {
        let s = &s;
        async move {
            s.post_json("/v2/models/fraud_mlp/versions/1/monitoring/reference", &body)
                .await
        }
    };
    // Nothing closed yet.
    expect_error(freeze(json!({})).await, 400, "has no closed window to freeze yet").await;

    // Traffic whose feature 5 sits one standard deviation off the reference.
    send(&s, 5, 600, Some((5, 1.0))).await;
    eventually(10, "feature 5 drifts", || async {
        feature(&s.get_json("/v2/models/fraud_mlp/monitoring").await, "5")["state"] == "drift"
    })
    .await;
    for (body, why) in [
        (json!({"windows": 0}), "'windows' and 'seconds' must be positive"),
        (
            json!({"variant": "canary"}),
            "version 1 has no window of variant 'canary'",
        ),
        (json!({"hours": 1}), "unknown field `hours`"),
        (json!({"version": "7"}), "version"),
    ] {
        let r = freeze(body.clone()).await;
        let status = r.status().as_u16();
        assert!(status == 400 || status == 404, "{body}: {status}");
        expect_error(r, status, why).await;
    }
    // That traffic becomes the reference: the same shift is now normal.
    let r = freeze(json!({"windows": 1})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let report = s.get_json("/v2/models/fraud_mlp/versions/1/monitoring").await;
    assert_eq!(
        report["reference"]["source"], "frozen from 1 window(s) of version 1",
        "{report}"
    );
    let mean = feature(&report, "5")["reference"]["mean"].as_f64().unwrap();
    assert!((mean - 1.0).abs() < 0.2, "{mean}");
    send(&s, 6, 600, Some((5, 1.0))).await;
    eventually(10, "a window is judged against the frozen reference", || async {
        feature(&s.get_json("/v2/models/fraud_mlp/monitoring").await, "5")["judged"] == true
    })
    .await;
    let report = s.get_json("/v2/models/fraud_mlp/monitoring").await;
    assert_ne!(feature(&report, "5")["state"], "drift", "{report}");
    s.stop().await;
}
