//! Backends behind the registry: every TorchScript twin answers the golden
//! requests as its ONNX model does, over REST and gRPC; what fails to load a
//! TorchScript model (a file that is not TorchScript, a config that does not
//! match forward, a missing LibTorch) fails that model with the reason while
//! the rest serve; and the mock backend is a backend like the others.
mod common;

use std::time::Duration;

use common::*;
use quiver_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
use serde_json::{Value, json};

/// The twins: models/<name>_pt beside models/<name> (the pipeline with a
/// TorchScript step is an ensemble, tested in `ensembles.rs`).
fn twins() -> Vec<(String, String)> {
    let golden = golden();
    let pairs: Vec<(String, String)> = golden
        .keys()
        .filter(|k| !k.contains("pipeline"))
        .filter_map(|k| k.strip_suffix("_pt").map(|onnx| (onnx.to_owned(), k.clone())))
        .collect();
    assert_eq!(pairs.len(), 6, "{pairs:?}");
    pairs
}

#[tokio::test]
async fn torchscript_twins_answer_the_golden_requests_like_their_onnx_models() {
    let s = TestServer::demo().await;
    let golden = golden();
    for (onnx, twin) in twins() {
        for model in [&onnx, &twin] {
            let case = &golden[model.as_str()];
            let r = s
                .post_json(&format!("/v2/models/{model}/infer"), &json!({"inputs": case["inputs"]}))
                .await;
            assert_eq!(r.status(), 200, "{model}: {}", r.text().await.unwrap());
            let body: Value = r.json().await.unwrap();
            for expected in case["outputs"].as_array().unwrap() {
                let actual = body["outputs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["name"] == expected["name"])
                    .unwrap_or_else(|| panic!("{model}: no output {}", expected["name"]));
                assert_close(model, expected, actual);
            }
        }
        // The twin reports itself as Triton's PyTorch platform.
        let config = s.get_json(&format!("/v2/models/{twin}/config")).await;
        assert_eq!(config["platform"], "pytorch_libtorch", "{twin}");
        assert_eq!(config["backend"], "pytorch", "{twin}");
        let meta = s.get_json(&format!("/v2/models/{twin}")).await;
        assert_eq!(meta["platform"], "pytorch_libtorch");
    }
    s.stop().await;
}

#[tokio::test]
async fn torchscript_over_grpc_with_raw_contents() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    for model in ["add_sub", "add_sub_pt"] {
        let tensor = |name: &str| InferInputTensor {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![2, 16],
            ..Default::default()
        };
        let a: Vec<u8> = (0..32i32).flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = (0..32i32).flat_map(|v| (v * 3).to_le_bytes()).collect();
        let answer = client
            .model_infer(ModelInferRequest {
                model_name: model.into(),
                inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
                raw_input_contents: vec![a.into(), b.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ints = |raw: &[u8]| -> Vec<i32> {
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        assert_eq!(answer.outputs[0].name, "OUTPUT0");
        assert_eq!(answer.outputs[0].shape, vec![2, 16]);
        assert_eq!(
            ints(&answer.raw_output_contents[0]),
            (0..32).map(|v| v * 4).collect::<Vec<_>>(),
            "{model}"
        );
        assert_eq!(
            ints(&answer.raw_output_contents[1]),
            (0..32).map(|v| -2 * v).collect::<Vec<_>>(),
            "{model}"
        );
    }
    s.stop().await;
}

/// add_sub_pt's config with its tensors renamed and `extra` appended.
fn add_sub_pt_config(name: &str, inputs: [&str; 2], outputs: [&str; 2], extra: &str) -> String {
    format!(
        r#"name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  {{ name: "{}" data_type: TYPE_INT32 dims: [ 16 ] }},
  {{ name: "{}" data_type: TYPE_INT32 dims: [ 16 ] }}
]
output [
  {{ name: "{}" data_type: TYPE_INT32 dims: [ 16 ] }},
  {{ name: "{}" data_type: TYPE_INT32 dims: [ 16 ] }}
]
{extra}
"#,
        inputs[0], inputs[1], outputs[0], outputs[1]
    )
}

fn torch_model(repo: &std::path::Path, name: &str, config: Option<&str>) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).unwrap();
    std::fs::copy(root().join("models/add_sub_pt/1/model.pt"), dir.join("1/model.pt")).unwrap();
    if let Some(text) = config {
        std::fs::write(dir.join("config.pbtxt"), text).unwrap();
    }
}

async fn reason(s: &TestServer, model: &str) -> String {
    let row = s.index_row(model, "1").await;
    assert_eq!(row["state"], "UNAVAILABLE", "{model}: {row}");
    row["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_torchscript_models_fail_with_the_reason_and_the_rest_serve() {
    let repo = temp_dir("torch-failures");
    copy_model("add_sub", &repo.join("add_sub"));
    // Triton's positional names: INPUT__0 is forward's first argument.
    torch_model(
        &repo,
        "positional",
        Some(&add_sub_pt_config(
            "positional",
            ["INPUT__0", "INPUT__1"],
            ["OUTPUT__0", "OUTPUT__1"],
            "",
        )),
    );
    // Not TorchScript at all.
    std::fs::create_dir_all(repo.join("not_torchscript/1")).unwrap();
    std::fs::write(
        repo.join("not_torchscript/1/model.pt"),
        b"PK\x03\x04 this is not a model",
    )
    .unwrap();
    std::fs::write(
        repo.join("not_torchscript/config.pbtxt"),
        add_sub_pt_config("not_torchscript", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], ""),
    )
    .unwrap();
    // Inputs forward does not take, a missing argument, no config at all.
    torch_model(
        &repo,
        "wrong_names",
        Some(&add_sub_pt_config(
            "wrong_names",
            ["a", "b"],
            ["OUTPUT0", "OUTPUT1"],
            "",
        )),
    );
    torch_model(
        &repo,
        "wrong_datatype",
        Some(
            &add_sub_pt_config("wrong_datatype", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], "").replace(
                "{ name: \"OUTPUT1\" data_type: TYPE_INT32",
                "{ name: \"OUTPUT1\" data_type: TYPE_FP32",
            ),
        ),
    );
    torch_model(&repo, "no_config", None);
    torch_model(
        &repo,
        "strings",
        Some(
            &add_sub_pt_config("strings", ["INPUT0", "INPUT1"], ["OUTPUT0", "OUTPUT1"], "").replacen(
                "TYPE_INT32",
                "TYPE_STRING",
                1,
            ),
        ),
    );
    let s = TestServer::start(config(&repo)).await;

    let e = reason(&s, "not_torchscript").await;
    assert!(e.contains("not a TorchScript module"), "{e}");
    let e = reason(&s, "wrong_names").await;
    assert!(e.contains("input 'a'") && e.contains("forward(INPUT0, INPUT1)"), "{e}");
    let e = reason(&s, "wrong_datatype").await;
    assert!(
        e.contains("output 'OUTPUT1' is INT32 but config.pbtxt declares FP32"),
        "{e}"
    );
    let e = reason(&s, "no_config").await;
    assert!(e.contains("config.pbtxt must list them"), "{e}");
    let e = reason(&s, "strings").await;
    assert!(e.contains("input 'INPUT0' is BYTES"), "{e}");

    for model in ["add_sub", "positional"] {
        let mut body = add_sub_json();
        if model == "positional" {
            body["inputs"][0]["name"] = json!("INPUT__0");
            body["inputs"][1]["name"] = json!("INPUT__1");
        }
        let r = s.infer_json(model, &body).await;
        let sum: Vec<i64> = serde_json::from_value(r["outputs"][0]["data"].clone()).unwrap_or_default();
        assert_eq!(sum, expected_sum(), "{model}: {r}");
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn gpu_instances_need_a_device_the_backend_can_use() {
    let repo = temp_dir("torch-gpu");
    torch_model(
        &repo,
        "on_gpu",
        Some(&add_sub_pt_config(
            "on_gpu",
            ["INPUT0", "INPUT1"],
            ["OUTPUT0", "OUTPUT1"],
            "instance_group [ { count: 1 kind: KIND_GPU gpus: [ 0 ] } ]",
        )),
    );
    copy_model("add_sub", &repo.join("onnx_on_gpu"));
    let config_path = repo.join("onnx_on_gpu/config.pbtxt");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("add_sub", "onnx_on_gpu").replace("KIND_CPU", "KIND_GPU"),
    )
    .unwrap();
    let s = TestServer::start(config(&repo)).await;
    let row = s.index_row("on_gpu", "1").await;
    if row["state"] == "READY" {
        // A CUDA LibTorch on a GPU machine: the instance answers.
        let r = s.post_json("/v2/models/on_gpu/infer", &add_sub_json()).await;
        assert_eq!(r.status(), 200);
    } else {
        let e = reason(&s, "on_gpu").await;
        assert!(e.contains("KIND_GPU instance on GPU 0") && e.contains("CUDA"), "{e}");
    }
    if !nvidia_driver_present() {
        // No silent fall back: the reason names the provider and what is
        // missing, and how to ask for the CPU instead.
        let e = reason(&s, "onnx_on_gpu").await;
        assert!(
            e.contains("KIND_GPU instance on GPU 0")
                && e.contains("CUDA execution provider")
                && e.contains("--allow-cpu-fallback"),
            "{e}"
        );
    }
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

fn nvidia_driver_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia").exists() || std::path::Path::new("/dev/nvidia0").exists()
}

/// A KIND_GPU ONNX model in a repository, with `extra` appended to its config.
fn onnx_gpu_model(repo: &std::path::Path, name: &str, extra: &str) {
    copy_model("add_sub", &repo.join(name));
    let path = repo.join(name).join("config.pbtxt");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("add_sub", name).replace("KIND_CPU", "KIND_GPU") + extra,
    )
    .unwrap();
}

#[tokio::test]
async fn without_a_gpu_a_kind_gpu_model_runs_on_the_cpu_only_when_asked() {
    if nvidia_driver_present() {
        // On a GPU machine the providers start; scripts/gpu-check.sh covers it.
        return;
    }
    let repo = temp_dir("gpu-fallback");
    onnx_gpu_model(&repo, "on_gpu", "");
    onnx_gpu_model(
        &repo,
        "on_tensorrt",
        r#"optimization { execution_accelerators { gpu_execution_accelerator : [ {
             name : "tensorrt"
             parameters { key: "precision_mode" value: "FP16" }
             parameters { key: "max_workspace_size_bytes" value: "1073741824" } } ] } }"#,
    );
    onnx_gpu_model(
        &repo,
        "bad_precision",
        r#"optimization { execution_accelerators { gpu_execution_accelerator : [ {
             name : "tensorrt" parameters { key: "precision_mode" value: "FP8" } } ] } }"#,
    );
    let gpu_build = root().join(".cache/onnxruntime-gpu/libonnxruntime.so");
    assert!(
        gpu_build.is_file(),
        "the GPU build of ONNX Runtime is missing: ORT_PACKAGE=onnxruntime-gpu \
         ORT_DEST=.cache/onnxruntime-gpu scripts/fetch-onnxruntime.sh (scripts/test.sh does this)"
    );
    let gpu_lib = gpu_build.to_str().unwrap();
    let cpu_lib = root().join(".cache/onnxruntime/libonnxruntime.so");
    let cpu_lib = cpu_lib.to_str().unwrap();
    for (lib, missing) in [
        // The CPU build lacks the provider; the GPU build lacks CUDA here.
        (cpu_lib, "CPU-only build"),
        (gpu_lib, "cannot open shared object file"),
    ] {
        let child = start_binary(&repo, &["--onnxruntime-lib", lib]).await;
        for model in ["on_gpu", "on_tensorrt"] {
            let r = row(&child.http, model).await;
            assert_eq!(r["state"], "UNAVAILABLE", "{r}");
            let reason = r["reason"].as_str().unwrap();
            assert!(
                reason.contains(missing) && reason.contains("--allow-cpu-fallback"),
                "{reason}"
            );
        }
        let reason = row(&child.http, "on_tensorrt").await["reason"].to_string();
        assert!(reason.contains("TensorRT execution provider"), "{reason}");
        let reason = row(&child.http, "bad_precision").await["reason"].to_string();
        assert!(reason.contains("precision_mode") && reason.contains("FP8"), "{reason}");
        drop(child);

        let child = start_binary(&repo, &["--onnxruntime-lib", lib, "--allow-cpu-fallback"]).await;
        for model in ["on_gpu", "on_tensorrt"] {
            assert_eq!(row(&child.http, model).await["state"], "READY", "{model}");
            let r = infer_add_sub(&child.http, model).await;
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            let sum = body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == "OUTPUT0")
                .unwrap();
            assert_eq!(sum["data"], json!(expected_sum()), "{body}");
        }
        // A bad setting is still refused: fall back covers a missing GPU only.
        assert_eq!(row(&child.http, "bad_precision").await["state"], "UNAVAILABLE");
    }
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn the_mock_backend_is_one_module_and_one_registry_line() {
    let repo = temp_dir("mock-backend");
    let config = r#"backend: "mock"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
"#;
    write(&repo.join("echo/config.pbtxt"), config);
    write(&repo.join("echo/1/model.mock"), "echo");
    write(&repo.join("broken/config.pbtxt"), config);
    write(&repo.join("broken/1/model.mock"), "fail always broken");
    let warmup = "model_warmup [ { name: \"w\" batch_size: 1 \
                  inputs { key: \"x\" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } } } ]";
    write(&repo.join("broken_warmed/config.pbtxt"), &format!("{config}{warmup}\n"));
    write(&repo.join("broken_warmed/1/model.mock"), "fail always broken");
    let s = TestServer::start(common::config(&repo)).await;
    let body = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.5, 2.5, 3.5]}]});
    let r = s.infer_json("echo", &body).await;
    assert_eq!(r["outputs"][0]["name"], "y");
    assert_eq!(r["outputs"][0]["data"], json!([1.5, 2.5, 3.5]));
    let meta = s.get_json("/v2/models/echo/config").await;
    assert_eq!(meta["backend"], "mock");
    // The default warm-up (zeros) is quiver's guess: its failure is a
    // warning and the model serves, as in Triton, which runs no warm-up it
    // was not given; its requests then fail with the runtime's message.
    assert_eq!(s.index_row("broken", "1").await["state"], "READY");
    let r = s.post_json("/v2/models/broken/infer", &body).await;
    assert_eq!(r.status(), 500);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("always broken"), "{e}");
    // A configured model_warmup that fails fails the load, with the message.
    let e = reason(&s, "broken_warmed").await;
    assert!(e.contains("always broken") && e.contains("warm-up 'w'"), "{e}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

/// Starts the quiver binary on `repo` (LibTorch's loading is once per
/// process, so these cases each get their own).
async fn start_binary(repo: &std::path::Path, args: &[&str]) -> common::binary::Child {
    let repo = repo.to_str().unwrap();
    let all: Vec<&str> = ["--model-repository", repo]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    common::binary::start(&all, None).await
}

async fn row(http: &str, model: &str) -> Value {
    index_row_at(&http_client(), http, model, "1").await
}

#[tokio::test]
async fn a_missing_libtorch_fails_only_the_torchscript_models() {
    let repo = temp_dir("no-libtorch");
    copy_model("add_sub", &repo.join("add_sub"));
    copy_model("add_sub_pt", &repo.join("add_sub_pt"));
    let empty = temp_dir("no-libtorch-backends");
    for (args, needle) in [
        (
            vec!["--backend-config", "pytorch,libtorch=/nonexistent/libtorch"],
            "LibTorch not found: /nonexistent/libtorch has no libc10.so",
        ),
        (
            vec!["--backend-directory", empty.to_str().unwrap()],
            "libquiver_torch.so is not in",
        ),
    ] {
        let child = start_binary(&repo, &args).await;
        let torch = row(&child.http, "add_sub_pt").await;
        assert_eq!(torch["state"], "UNAVAILABLE", "{torch}");
        let reason = torch["reason"].as_str().unwrap();
        assert!(reason.contains(needle), "{reason}");
        assert!(
            reason.contains("fetch-libtorch.sh") || reason.contains("cargo build -p quiver-torch"),
            "{reason}"
        );
        assert_eq!(row(&child.http, "add_sub").await["state"], "READY");
        let r = infer_add_sub(&child.http, "add_sub").await;
        assert_eq!(r.status(), 200);
    }
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test]
async fn a_missing_onnxruntime_fails_only_the_onnx_models_saying_how_to_get_it() {
    let repo = temp_dir("no-onnxruntime");
    copy_model("add_sub", &repo.join("add_sub"));
    copy_model("add_sub_pt", &repo.join("add_sub_pt"));
    let child = start_binary(&repo, &["--onnxruntime-lib", "/nonexistent/libonnxruntime.so"]).await;
    let onnx = row(&child.http, "add_sub").await;
    assert_eq!(onnx["state"], "UNAVAILABLE", "{onnx}");
    let reason = onnx["reason"].as_str().unwrap();
    assert!(
        reason.contains("/nonexistent/libonnxruntime.so") && reason.contains("fetch-onnxruntime.sh"),
        "{reason}"
    );
    assert_eq!(row(&child.http, "add_sub_pt").await["state"], "READY");
    let _ = std::fs::remove_dir_all(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_torchscript_instances_answer_concurrent_requests() {
    let repo = temp_dir("torch-instances");
    for (source, name) in [("fraud_mlp", "onnx2"), ("fraud_mlp_pt", "torch2")] {
        copy_model(source, &repo.join(name));
        let path = repo.join(name).join("config.pbtxt");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(source, name).replace("count: 1", "count: 2")).unwrap();
    }
    let s = std::sync::Arc::new(TestServer::start(config(&repo)).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let s = std::sync::Arc::clone(&s);
        tasks.spawn(async move {
            let row: Vec<f32> = (0..32).map(|j| ((i * 31 + j * 7) % 19) as f32 / 9.0 - 1.0).collect();
            let body = json!({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": row}]});
            let mut answers = Vec::new();
            for model in ["onnx2", "torch2"] {
                let r = s.infer_json(model, &body).await;
                answers.push(r["outputs"][0].clone());
            }
            answers
        });
    }
    while let Some(answers) = tasks.join_next().await {
        let answers = answers.unwrap();
        let mut expected = answers[0].clone();
        expected["name"] = json!("probabilities");
        assert_close("torch2", &expected, &answers[1]);
    }
    let config = s.get_json("/v2/models/torch2/config").await;
    assert_eq!(config["instance_group"][0]["count"], 2);
    std::sync::Arc::into_inner(s).unwrap().stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}

/// add_sub's JSON request to `model` on a server started by `start_binary`.
async fn infer_add_sub(http: &str, model: &str) -> reqwest::Response {
    http_client()
        .post(format!("{http}/v2/models/{model}/infer"))
        .json(&add_sub_json())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
}

/// The value of the sample `name{labels}` in an exposition, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// Triton's GPU metrics from NVML, with a stand-in NVML library built from
/// tests/fixtures/fake_nvml.c: names, units, the gpu_uuid label, a reading a
/// GPU does not support left out, and energy counted from start.
#[tokio::test]
async fn gpu_metrics_carry_tritons_names_units_and_labels() {
    let dir = temp_dir("fake-nvml");
    let lib = dir.join("libnvidia-ml.so.1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = std::process::Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(root().join("server/tests/fixtures/fake_nvml.c"))
        .status()
        .unwrap_or_else(|e| panic!("{cc} (a C compiler) is needed to build the stand-in NVML: {e}"));
    assert!(built.success());
    let repo = temp_dir("fake-nvml-repo");
    copy_model("add_sub", &repo.join("add_sub"));
    let child = start_binary(
        &repo,
        &["--nvml-library", lib.to_str().unwrap(), "--metrics-interval-ms", "100"],
    )
    .await;
    let gpu0 = |m: &str| format!("{m}{{gpu_uuid=\"GPU-fake-0000\"}}");
    let gpu1 = |m: &str| format!("{m}{{gpu_uuid=\"GPU-fake-0001\"}}");
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics_at(&http_client(), &child.http).await;
        if sample(&text, &gpu0("nv_energy_consumption")).is_some_and(|j| j >= 10.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sample(&text, &gpu0("nv_gpu_utilization")), Some(0.42), "{text}");
    assert_eq!(sample(&text, &gpu1("nv_gpu_utilization")), Some(0.07));
    assert_eq!(
        sample(&text, &gpu0("nv_gpu_memory_total_bytes")),
        Some(80.0 * (1u64 << 30) as f64)
    );
    assert_eq!(
        sample(&text, &gpu0("nv_gpu_memory_used_bytes")),
        Some(3.0 * (1u64 << 30) as f64)
    );
    assert_eq!(
        sample(&text, &gpu1("nv_gpu_memory_used_bytes")),
        Some((1u64 << 20) as f64)
    );
    assert_eq!(sample(&text, &gpu0("nv_gpu_power_usage")), Some(123.456));
    assert_eq!(sample(&text, &gpu0("nv_gpu_power_limit")), Some(700.0));
    // The second board reports no power: its series are absent, not zero.
    assert_eq!(sample(&text, &gpu1("nv_gpu_power_usage")), None, "{text}");
    assert_eq!(sample(&text, &gpu1("nv_gpu_power_limit")), None);
    // Energy is joules since quiver started: 5 J per reading here.
    let joules = sample(&text, &gpu0("nv_energy_consumption")).unwrap();
    assert!(joules >= 10.0 && joules % 5.0 == 0.0, "{joules}");
    assert!(text.contains("# TYPE nv_energy_consumption counter"), "{text}");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&repo);
}

/// Without NVML (no NVIDIA driver), the GPU metrics are absent and the
/// server serves as ever.
#[tokio::test]
async fn gpu_metrics_are_absent_without_nvml() {
    let repo = temp_dir("no-nvml");
    copy_model("add_sub", &repo.join("add_sub"));
    let mut runs = vec![vec![
        "--nvml-library",
        "/nonexistent/libnvidia-ml.so.1",
        "--metrics-interval-ms",
        "100",
    ]];
    if !nvidia_driver_present() {
        // The default library, on a machine without the driver.
        runs.push(vec!["--metrics-interval-ms", "100"]);
    }
    for args in runs {
        let child = start_binary(&repo, &args).await;
        let r = infer_add_sub(&child.http, "add_sub").await;
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let text = metrics_at(&http_client(), &child.http).await;
        assert!(text.contains("nv_inference_request_success"), "{text}");
        assert!(
            !text.contains("nv_gpu_") && !text.contains("nv_energy"),
            "{args:?}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&repo);
}

/// Triton's `--backend-config=[<backend>,]default-max-batch-size=N` is
/// honoured, per backend before the backend-agnostic value.
#[tokio::test]
async fn backend_config_default_max_batch_size_completes_configs() {
    let repo = temp_dir("default-mbs");
    copy_model("linear_noconfig", &repo.join("linear_noconfig"));
    let mut config = common::config(&repo);
    config.backend_config = vec![
        "default-max-batch-size=8".into(),
        "onnxruntime,default-max-batch-size=16".into(),
    ];
    let s = TestServer::start(config).await;
    let c = s.get_json("/v2/models/linear_noconfig/config").await;
    assert_eq!(c["max_batch_size"], 16, "{c}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&repo);
}
