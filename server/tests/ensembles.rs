//! Triton's ensembles against the real server and real ONNX models: the
//! steps' graph (a chain, parallel branches, an ensemble of ensembles),
//! only the steps an answer needs, the configs refused at load and why,
//! the dependency loads and readiness in explicit mode, and hot swaps of a
//! step's model under a pipeline load.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::versions::*;
use common::*;
use serde_json::{Value, json};

/// The scale model `y = x * k` under `name`.
fn scale_step(repo: &Path, name: &str, k: f32) {
    scale_repo(repo, name);
    write_version(repo, name, 1, k);
}

/// An ensemble's folder: its config and an empty version folder.
fn ensemble(repo: &Path, name: &str, body: &str) {
    write(
        &repo.join(name).join("config.pbtxt"),
        &format!("name: \"{name}\"\nplatform: \"ensemble\"\n{body}"),
    );
    std::fs::create_dir_all(repo.join(name).join("1")).unwrap();
}

/// An FP32 [4] tensor declaration.
fn fp32(name: &str) -> String {
    format!("{{ name: \"{name}\" data_type: TYPE_FP32 dims: [ 4 ] }}")
}

/// A step of `model` reading and writing ensemble tensors (model x -> y).
fn step(model: &str, from: &str, to: &str) -> String {
    format!(
        "{{ model_name: \"{model}\" model_version: -1 input_map {{ key: \"x\" value: \"{from}\" }} output_map {{ key: \"y\" value: \"{to}\" }} }}"
    )
}

/// `x -> double -> t -> triple -> y` and, beside it, `x -> triple -> z`.
fn chain_and_branch(repo: &Path) {
    scale_step(repo, "double", 2.0);
    scale_step(repo, "triple", 3.0);
    ensemble(
        repo,
        "pipe",
        &format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {}, {} ]\nensemble_scheduling {{ step [ {}, {}, {} ] }}",
            fp32("x"),
            fp32("y"),
            fp32("z"),
            step("double", "x", "t"),
            step("triple", "t", "y"),
            step("triple", "x", "z")
        ),
    );
}

fn floats(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn output<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs: {answer}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name}: {answer}"))
}

async fn inference_count(s: &TestServer, model: &str) -> u64 {
    s.get_json(&format!("/v2/models/{model}/stats")).await["model_stats"][0]["inference_count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_graph_of_steps_answers_as_the_steps_run_one_by_one() {
    let repo = temp_dir("ensemble-graph");
    chain_and_branch(&repo);
    copy_model("add_sub", &repo.join("add_sub"));
    // The classic: add_sub's outputs renamed, its inputs from the ensemble's.
    ensemble(
        &repo,
        "sum_diff",
        r#"max_batch_size: 8
input [ { name: "A" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "B" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "SUM" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "DIFF" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "add_sub" model_version: -1
  input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
  output_map { key: "OUTPUT0" value: "SUM" } output_map { key: "OUTPUT1" value: "DIFF" } } ] }"#,
    );
    // An ensemble of ensembles: pipe's y (6x) through double again.
    ensemble(
        &repo,
        "outer",
        &format!(
            "max_batch_size: 4\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {{ model_name: \"pipe\" model_version: -1 input_map {{ key: \"x\" value: \"in\" }} output_map {{ key: \"y\" value: \"six\" }} }}, {} ] }}",
            fp32("in"),
            fp32("w"),
            step("double", "six", "w")
        ),
    );
    // A step model that does not batch, inside one that does: its full
    // shape [-1, 4] meets the ensemble's batched [4] (Triton's rule).
    scale_step(&repo, "flat", 5.0);
    write(
        &repo.join("flat/config.pbtxt"),
        &scale_config("flat")
            .replace("max_batch_size: 8", "max_batch_size: 0")
            .replace("dims: [ 4 ]", "dims: [ -1, 4 ]")
            .replace("dynamic_batching { max_queue_delay_microseconds: 200 }", ""),
    );
    ensemble(
        &repo,
        "mixed",
        &format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {} ] }}",
            fp32("x"),
            fp32("y"),
            step("flat", "x", "y")
        ),
    );
    // A step whose model fails (the mock backend's `fail`).
    write(
        &repo.join("broken/config.pbtxt"),
        &format!(
            "name: \"broken\"\nbackend: \"mock\"\nmax_batch_size: 8\ninput [ {} ]\noutput [ {} ]",
            fp32("x"),
            fp32("y")
        ),
    );
    write(&repo.join("broken/1/model.mock"), "fail kaboom");
    ensemble(
        &repo,
        "breaks",
        &format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {}, {} ] }}",
            fp32("x"),
            fp32("y"),
            step("double", "x", "t"),
            step("broken", "t", "y")
        ),
    );
    let s = TestServer::start(config(&repo)).await;
    let r = s.post_json("/v2/models/breaks/infer", &infer_body()).await;
    expect_error(r, 500, "ensemble 'breaks' step 2 (model 'broken'): ").await;
    let answer = s.infer_json("mixed", &infer_body()).await;
    assert_eq!(
        floats(output(&answer, "y")),
        X.iter().map(|v| v * 5.0).collect::<Vec<f32>>(),
        "{answer}"
    );
    for m in ["pipe", "sum_diff", "outer"] {
        assert_eq!(
            s.get_status(&format!("/v2/models/{m}/ready")).await,
            200,
            "{m} is not ready"
        );
    }
    let meta = s.get_json("/v2/models/pipe").await;
    assert_eq!(meta["platform"], "ensemble", "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]), "{meta}");

    let x = [1.0f32, -2.0, 0.5, 4.0];
    let body = json!({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [x, x]}]});
    let answer = s.infer_json("pipe", &body).await;
    assert_eq!(answer["model_name"], "pipe", "{answer}");
    let y = floats(output(&answer, "y"));
    let z = floats(output(&answer, "z"));
    let by_hand = |k: f32| x.iter().chain(&x).map(|v| v * k).collect::<Vec<f32>>();
    assert_eq!(y, by_hand(6.0));
    assert_eq!(z, by_hand(3.0));
    assert_eq!(output(&answer, "y")["shape"], json!([2, 4]));

    // Only the steps the asked outputs need run: z needs triple once.
    let (double, triple) = (inference_count(&s, "double").await, inference_count(&s, "triple").await);
    let only_z = json!({"inputs": body["inputs"], "outputs": [{"name": "z"}]});
    let answer = s.infer_json("pipe", &only_z).await;
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(floats(output(&answer, "z")), by_hand(3.0));
    assert_eq!(
        inference_count(&s, "double").await,
        double,
        "double ran for an answer without y"
    );
    assert_eq!(inference_count(&s, "triple").await, triple + 2);

    let answer = s
        .infer_json(
            "sum_diff",
            &json!({"inputs": [
                {"name": "A", "shape": [1, 16], "datatype": "INT32", "data": (0..16).collect::<Vec<i32>>()},
                {"name": "B", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]}
            ]}),
        )
        .await;
    let sum: Vec<i64> = output(&answer, "SUM")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let diff: Vec<i64> = output(&answer, "DIFF")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(sum, expected_sum());
    assert_eq!(diff, (-1..15).collect::<Vec<i64>>());

    let answer = s
        .infer_json(
            "outer",
            &json!({"inputs": [{"name": "in", "shape": [1, 4], "datatype": "FP32", "data": x}]}),
        )
        .await;
    assert_eq!(
        floats(output(&answer, "w")),
        x.iter().map(|v| v * 12.0).collect::<Vec<f32>>()
    );

    // Metrics per ensemble and per step model.
    let metrics = s.metrics().await;
    for (series, at_least) in [
        ("nv_inference_request_success{model=\"pipe\",version=\"1\"}", 2.0),
        ("nv_inference_request_success{model=\"triple\",version=\"1\"}", 3.0),
        (
            "nv_inference_request_failure{model=\"breaks\",version=\"1\",reason=\"BACKEND\"}",
            1.0,
        ),
        (
            "nv_inference_request_failure{model=\"broken\",version=\"1\",reason=\"BACKEND\"}",
            1.0,
        ),
    ] {
        assert!(sample(&metrics, series) >= at_least, "{series} below {at_least}");
    }

    // A bad request fails naming the input, before any step runs.
    let r = s
        .post_json(
            "/v2/models/pipe/infer",
            &json!({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}),
        )
        .await;
    expect_error(r, 400, "'x'").await;
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_ensemble_is_refused_naming_the_step_and_the_rest_serves() {
    let repo = temp_dir("ensemble-bad");
    scale_step(&repo, "double", 2.0);
    copy_model("add_sub", &repo.join("add_sub"));
    let io = format!("max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\n", fp32("x"), fp32("y"));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown_model",
            format!("{io}ensemble_scheduling {{ step [ {} ] }}", step("nowhere", "x", "y")),
            "unknown model 'nowhere'",
        ),
        (
            "unknown_tensor",
            format!(
                "{io}ensemble_scheduling {{ step [ {} ] }}",
                step("double", "nothing", "y")
            ),
            "reads tensor 'nothing'",
        ),
        (
            "unknown_input",
            format!(
                "{io}ensemble_scheduling {{ step [ {{ model_name: \"double\" model_version: -1 input_map {{ key: \"x\" value: \"x\" }} input_map {{ key: \"q\" value: \"x\" }} output_map {{ key: \"y\" value: \"y\" }} }} ] }}"
            ),
            "input 'q'",
        ),
        (
            "wrong_datatype",
            r#"max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "y" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "add_sub" model_version: -1
  input_map { key: "INPUT0" value: "x" } input_map { key: "INPUT1" value: "x" }
  output_map { key: "OUTPUT0" value: "y" } } ] }"#
                .into(),
            "INPUT0' is INT32 but tensor 'x' is FP32",
        ),
        (
            "wrong_shape",
            format!(
                "max_batch_size: 8\ninput [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 5 ] }} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {} ] }}",
                fp32("y"),
                step("double", "x", "y")
            ),
            "has shape [-1, 4] but tensor 'x' has [-1, 5]",
        ),
        (
            "cycle",
            format!(
                "{io}ensemble_scheduling {{ step [ {}, {}, {} ] }}",
                step("double", "b", "a"),
                step("double", "a", "b"),
                step("double", "x", "y")
            ),
            "cycle",
        ),
        (
            "unused_step",
            format!(
                "{io}ensemble_scheduling {{ step [ {}, {} ] }}",
                step("double", "x", "y"),
                step("double", "x", "spare")
            ),
            "step 2 (model 'double'): writes nothing an ensemble output needs",
        ),
        (
            "unwritten_output",
            format!(
                "max_batch_size: 8\ninput [ {} ]\noutput [ {}, {} ]\nensemble_scheduling {{ step [ {} ] }}",
                fp32("x"),
                fp32("y"),
                fp32("never"),
                step("double", "x", "y")
            ),
            "ensemble output 'never' is written by no step",
        ),
        (
            "too_big_batches",
            format!(
                "max_batch_size: 64\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {} ] }}",
                fp32("x"),
                fp32("y"),
                step("double", "x", "y")
            ),
            "the ensemble allows batches of 64 but the model only 8",
        ),
        ("no_steps", format!("{io}ensemble_scheduling {{ }}"), "has no step"),
        (
            "unread_tensor",
            r#"max_batch_size: 8
input [ { name: "a" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "sum" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "add_sub" model_version: -1
  input_map { key: "INPUT0" value: "a" } input_map { key: "INPUT1" value: "a" }
  output_map { key: "OUTPUT0" value: "sum" } output_map { key: "OUTPUT1" value: "spare" } } ] }"#
                .into(),
            "writes tensor 'spare', which no step reads",
        ),
        (
            "unread_input",
            format!(
                "max_batch_size: 8\ninput [ {}, {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {} ] }}",
                fp32("x"),
                fp32("w"),
                fp32("y"),
                step("double", "x", "y")
            ),
            "ensemble input 'w' is read by no step",
        ),
        (
            "instances",
            format!(
                "{io}instance_group [ {{ count: 2 }} ]\nensemble_scheduling {{ step [ {} ] }}",
                step("double", "x", "y")
            ),
            "an ensemble cannot have instance_group",
        ),
    ];
    for (name, body, _) in &cases {
        ensemble(&repo, name, body);
    }
    ensemble(
        &repo,
        "good",
        &format!("{io}ensemble_scheduling {{ step [ {} ] }}", step("double", "x", "y")),
    );
    let s = TestServer::start(config(&repo)).await;
    for (name, _, why) in &cases {
        let row = s.index_row(name, "1").await;
        let row = if row.is_null() {
            s.index_row(name, "").await
        } else {
            row
        };
        assert_eq!(row["state"], "UNAVAILABLE", "{name}: {row}");
        let reason = row["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{name}: '{reason}' does not say '{why}'");
        assert_ne!(
            s.get_status(&format!("/v2/models/{name}/ready")).await,
            200,
            "{name} claims ready"
        );
    }
    let answer = s.infer_json("good", &infer_body()).await;
    assert_eq!(floats(output(&answer, "y")), scaled(2.0));
    s.stop().await;
}

fn scaled(k: f32) -> Vec<f32> {
    X.iter().map(|x| x * k).collect()
}

#[tokio::test]
async fn explicit_mode_loads_the_steps_and_an_unloaded_step_makes_the_ensemble_unavailable() {
    let repo = temp_dir("ensemble-explicit");
    chain_and_branch(&repo);
    let s = TestServer::start(explicit(&repo, &["pipe"])).await;
    for m in ["pipe", "double", "triple"] {
        assert_eq!(
            s.get_status(&format!("/v2/models/{m}/ready")).await,
            200,
            "{m} was not loaded with pipe"
        );
    }
    let r = s.post_json("/v2/repository/models/triple/unload", &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_ne!(s.get_status("/v2/models/pipe/ready").await, 200);
    let row = s.index_row("pipe", "1").await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"].as_str().unwrap().contains("step 2 (model 'triple')"),
        "{row}"
    );
    let r = s.post_json("/v2/models/pipe/infer", &infer_body()).await;
    expect_error(r, 503, "(model 'triple'): model 'triple' has no ready version").await;
    let r = s.post_json("/v2/repository/models/triple/load", &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.get_status("/v2/models/pipe/ready").await, 200);
    let answer = s.infer_json("pipe", &infer_body()).await;
    assert_eq!(floats(output(&answer, "y")), scaled(6.0));

    // Triton's unload_dependents: the steps go with the ensemble, except
    // one another loaded ensemble still runs.
    ensemble(
        &repo,
        "solo",
        &format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {} ] }}",
            fp32("x"),
            fp32("y"),
            step("double", "x", "y")
        ),
    );
    assert_eq!(
        s.post_json("/v2/repository/models/solo/load", &json!({}))
            .await
            .status(),
        200
    );
    let r = s
        .post_json(
            "/v2/repository/models/pipe/unload",
            &json!({"parameters": {"unload_dependents": true}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_ne!(s.get_status("/v2/models/pipe/ready").await, 200);
    assert_ne!(
        s.get_status("/v2/models/triple/ready").await,
        200,
        "triple stayed loaded"
    );
    assert_eq!(
        s.get_status("/v2/models/double/ready").await,
        200,
        "double went though solo runs it"
    );
    assert_eq!(s.get_status("/v2/models/solo/ready").await, 200);
    let r = s
        .post_json(
            "/v2/repository/models/solo/unload",
            &json!({"parameters": {"unload_dependents": "yes"}}),
        )
        .await;
    expect_error(r, 400, "unload_dependents").await;
    s.stop().await;
}

/// 200 new versions of a middle step published under a pipeline load from
/// several clients: no request fails, and each answer is x * 2 * k for a
/// k some version of the step computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_swaps_of_a_step_fail_no_pipeline_request() {
    const SWAPS: u64 = 200;
    let repo = temp_dir("ensemble-swaps");
    scale_step(&repo, "double", 2.0);
    scale_repo(&repo, "scale");
    write_version(&repo, "scale", 1, 1.0);
    ensemble(
        &repo,
        "pipe",
        &format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\nensemble_scheduling {{ step [ {}, {} ] }}",
            fp32("x"),
            fp32("y"),
            step("scale", "x", "t"),
            step("double", "t", "y")
        ),
    );
    let s = Arc::new(TestServer::start(explicit(&repo, &["pipe"])).await);
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (s, done) = (Arc::clone(&s), Arc::clone(&done));
        clients.spawn(async move {
            let mut ks = std::collections::BTreeSet::new();
            let mut answers = 0u64;
            while !done.load(Ordering::Relaxed) {
                let r = s.post_json("/v2/models/pipe/infer", &infer_body()).await;
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                assert_eq!(status, 200, "a pipeline request failed during a swap: {body}");
                let y = floats(output(&body, "y"));
                let k = y[0] / (X[0] * 2.0);
                assert!(k >= 1.0 && k <= (SWAPS + 1) as f32 && k.fract() == 0.0, "y = {y:?}");
                assert_eq!(y, scaled(2.0 * k), "one answer mixes versions");
                ks.insert(k as u64);
                answers += 1;
            }
            (answers, ks)
        });
    }
    for v in 2..=SWAPS + 1 {
        write_version(&repo, "scale", 1, v as f32);
        let r = s.post_json("/v2/repository/models/scale/load", &json!({})).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let (mut answers, mut ks) = (0, std::collections::BTreeSet::new());
    while let Some(r) = clients.join_next().await {
        let (n, seen) = r.expect("a client failed");
        answers += n;
        ks.extend(seen);
    }
    eprintln!(
        "{answers} pipeline answers from {} versions of the step over {SWAPS} swaps",
        ks.len()
    );
    assert!(answers > 100, "only {answers} answers");
    assert!(ks.len() > 10, "answers came from only {ks:?}");
    let last = s.infer_json("pipe", &infer_body()).await;
    assert_eq!(floats(output(&last, "y")), scaled(2.0 * (SWAPS + 1) as f32));
    Arc::into_inner(s).unwrap().stop().await;
}

/// The demo repository's pipelines answer their golden requests, equal the
/// steps called one by one, and classify with the labels of the step that
/// writes the output (calibrate's labels.txt).
#[tokio::test]
async fn the_demo_pipelines_answer_as_their_steps_called_in_turn() {
    let s = TestServer::demo().await;
    let golden = golden();
    for pipeline in ["image_pipeline", "fraud_pipeline", "fraud_pipeline_pt"] {
        let case = &golden[pipeline];
        let answer = s.infer_json(pipeline, &json!({"inputs": case["inputs"]})).await;
        for expected in case["outputs"].as_array().unwrap() {
            assert_close(pipeline, expected, output(&answer, expected["name"].as_str().unwrap()));
        }
    }
    // A canary of a whole pipeline: a policy on the ensemble's name splits
    // between the ONNX pipeline and the one with the TorchScript step.
    let policy = json!({"variants": [{"name": "onnx", "weight": 1}, {"name": "torch", "model": "fraud_pipeline_pt", "weight": 1}], "default": "onnx"});
    let r = s
        .client
        .put(s.url("/v2/models/fraud_pipeline/traffic"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let case = &golden["fraud_pipeline"];
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let answer = s.infer_json("fraud_pipeline", &json!({"inputs": case["inputs"]})).await;
        assert_close("fraud_pipeline", &case["outputs"][0], output(&answer, "probabilities"));
        served.insert(answer["model_name"].as_str().unwrap().to_owned());
    }
    assert_eq!(served.len(), 2, "the split sent every request to {served:?}");
    let forced = s
        .client
        .post(s.url("/v2/models/fraud_pipeline/infer"))
        .header("x-quiver-variant", "torch")
        .json(&json!({"inputs": case["inputs"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(forced["model_name"], "fraud_pipeline_pt", "{forced}");

    // image_pipeline by hand: three calls, each answer the next one's input.
    let case = &golden["image_pipeline"];
    let image = s
        .infer_json("image_preprocess", &json!({"inputs": case["inputs"]}))
        .await;
    let mut tensor = output(&image, "image").clone();
    tensor["name"] = json!("image");
    let probabilities = s.infer_json("conv_net", &json!({"inputs": [tensor]})).await;
    let mut tensor = output(&probabilities, "probabilities").clone();
    tensor["name"] = json!("probabilities");
    let by_hand = s.infer_json("calibrate", &json!({"inputs": [tensor]})).await;
    let piped = s.infer_json("image_pipeline", &json!({"inputs": case["inputs"]})).await;
    assert_close("image_pipeline", output(&by_hand, "scores"), output(&piped, "scores"));

    let top = s
        .infer_json(
            "image_pipeline",
            &json!({"inputs": case["inputs"], "outputs": [{"name": "scores", "parameters": {"classification": 3}}]}),
        )
        .await;
    let classes: Vec<String> = std::fs::read_to_string(root().join("models/calibrate/labels.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let scores = floats(output(&piped, "scores"));
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let got = output(&top, "scores");
    assert_eq!(got["datatype"], "BYTES", "{top}");
    assert_eq!(got["shape"], json!([1, 3]), "{top}");
    for (k, entry) in got["data"].as_array().unwrap().iter().enumerate() {
        let parts: Vec<&str> = entry.as_str().unwrap().split(':').collect();
        assert_eq!(parts[1], order[k].to_string(), "{entry}");
        assert_eq!(parts[2], classes[order[k]], "{entry}");
        assert!(
            (parts[0].parse::<f32>().unwrap() - scores[order[k]]).abs() < 1e-5,
            "{entry}"
        );
    }
    s.stop().await;
}

/// `max_inflight_requests` on an ensemble: a request beyond it is refused
/// at once with 429 naming the bound, the ones running finish; a bad value
/// fails the load naming the parameter.
#[tokio::test]
async fn max_inflight_requests_bounds_an_ensemble() {
    let repo = temp_dir("ensemble-inflight");
    write(
        &repo.join("slow/config.pbtxt"),
        &format!(
            "name: \"slow\"\nbackend: \"mock\"\nmax_batch_size: 8\ninput [ {} ]\noutput [ {} ]",
            fp32("x"),
            fp32("y")
        ),
    );
    write(&repo.join("slow/1/model.mock"), "sleep 2000");
    let body = |value: &str| {
        format!(
            "max_batch_size: 8\ninput [ {} ]\noutput [ {} ]\nparameters {{ key: \"max_inflight_requests\" value: {{ string_value: \"{value}\" }} }}\nensemble_scheduling {{ step [ {} ] }}",
            fp32("x"),
            fp32("y"),
            step("slow", "x", "y")
        )
    };
    ensemble(&repo, "one_at_a_time", &body("1"));
    ensemble(&repo, "bad_bound", &body("zero"));
    let s = Arc::new(TestServer::start(config(&repo)).await);
    let row = s.index_row("bad_bound", "1").await;
    assert!(
        row["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("parameter 'max_inflight_requests' is 'zero'"),
        "{row}"
    );
    let first = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.post_json("/v2/models/one_at_a_time/infer", &infer_body())
                .await
                .status()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = s.post_json("/v2/models/one_at_a_time/infer", &infer_body()).await;
    expect_error(r, 429, "already runs 1 requests (max_inflight_requests)").await;
    assert!(!first.is_finished(), "the refusal waited for the running request");
    assert_eq!(first.await.unwrap(), 200);
    // Its place is given back: the next one runs.
    assert_eq!(
        s.post_json("/v2/models/one_at_a_time/infer", &infer_body())
            .await
            .status(),
        200
    );
    Arc::into_inner(s).unwrap().stop().await;
}
