//! Triton's command lines, as KServe's `kserve-tritonserver` runtime and
//! Seldon Core 2's `triton` ServerConfig write them, start quiver through a
//! `tritonserver` link with nothing changed but the paths and ports those
//! platforms fill in. Then a Seldon-agent sequence runs against it.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use quiver_proto::inference::{ModelReadyRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest};

struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tritonserver` in a folder of its own: a link to quiver, as the image ships it.
fn tritonserver_dir(test: &str) -> PathBuf {
    let dir = temp_dir(&format!("{test}-bin"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_quiver"), dir.join("tritonserver")).unwrap();
    dir
}

/// Runs `command` (a shell command line) with `tritonserver` on PATH. The
/// environment only points quiver at ONNX Runtime and moves the metrics
/// port off its default, so parallel runs do not collide.
fn spawn(test: &str, shell: &str, env: &[(&str, String)]) -> Server {
    let bin = tritonserver_dir(test);
    let log = bin.join("server.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command
        .args(["-c", shell])
        .env("PATH", path)
        .env(
            "QUIVER_ONNXRUNTIME_LIB",
            root().join(".cache/onnxruntime/libonnxruntime.so"),
        )
        .env("QUIVER_METRICS_PORT", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    Server {
        child: command.spawn().unwrap(),
        log,
    }
}

async fn ready(http: &str, server: &mut Server) {
    for _ in 0..300 {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "quiver exited ({status}): {}",
                std::fs::read_to_string(&server.log).unwrap()
            );
        }
        if let Ok(r) = http_client().get(format!("{http}/v2/health/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready: {}", std::fs::read_to_string(&server.log).unwrap());
}

async fn grpc_sum(grpc: &str, model: &str) -> Vec<i32> {
    let mut client = GrpcInferenceServiceClient::connect(grpc.to_owned()).await.unwrap();
    let answer = client
        .model_infer(add_sub_grpc(model, 1, 1))
        .await
        .unwrap()
        .into_inner();
    let at = answer.outputs.iter().position(|o| o.name == "OUTPUT0").unwrap();
    answer.raw_output_contents[at]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

async fn http_ok(http: &str, model: &str) {
    let r = http_client()
        .post(format!("{http}/v2/models/{model}/infer"))
        .json(&add_sub_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn sum() -> Vec<i32> {
    vec![2; 16]
}

async fn model_ready(client: &mut GrpcInferenceServiceClient<tonic::transport::Channel>, name: &str) -> bool {
    client
        .model_ready(ModelReadyRequest {
            name: name.into(),
            version: String::new(),
        })
        .await
        .map(|r| r.into_inner().ready)
        .unwrap_or(false)
}

#[tokio::test]
async fn kserves_tritonserver_command_line_serves() {
    let repo = temp_dir("kserve-triton");
    copy_model("add_sub", &repo.join("add_sub"));
    let (http, grpc) = (free_port(), free_port());
    // kserve-tritonserver: tritonserver --model-store=/mnt/models --grpc-port=9000
    //   --http-port=8080 --allow-grpc=true --allow-http=true
    let mut server = spawn(
        "kserve",
        &format!(
            "exec tritonserver --model-store={} --grpc-port={grpc} --http-port={http} --allow-grpc=true --allow-http=true",
            repo.display()
        ),
        &[],
    );
    let (http, grpc) = (format!("http://127.0.0.1:{http}"), format!("http://127.0.0.1:{grpc}"));
    ready(&http, &mut server).await;
    http_ok(&http, "add_sub").await;
    assert_eq!(grpc_sum(&grpc, "add_sub").await, sum());
    let _ = std::fs::remove_dir_all(&repo);
}

/// Writes a model folder as Seldon Core 2's agent does: the files copied
/// under `<model>_<version>` and the config's name rewritten to match.
fn seldon_agent_writes(repo: &Path, model: &str, version: u32) -> String {
    let served = format!("{model}_{version}");
    copy_model(model, &repo.join(&served));
    let path = repo.join(&served).join("config.pbtxt");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(&format!("name: \"{model}\""), &format!("name: \"{served}\""), 1),
    )
    .unwrap();
    served
}

#[tokio::test]
async fn seldons_triton_server_command_line_serves_the_agents_sequence() {
    let models = temp_dir("seldon-triton");
    let (http, grpc) = (free_port(), free_port());
    // Seldon Core 2's `triton` ServerConfig: bash -c "tritonserver ..." with
    // Kubernetes' $(VAR) references expanded from its env.
    let env = [
        ("SERVER_HTTP_PORT", http.to_string()),
        ("SERVER_GRPC_PORT", grpc.to_string()),
        ("SERVER_MODELS_DIR", models.display().to_string()),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4".to_string()),
    ];
    let command = "tritonserver --model-repository=$(SERVER_MODELS_DIR) --http-port=$(SERVER_HTTP_PORT) \
        --grpc-port=$(SERVER_GRPC_PORT) --log-verbose=1 --model-control-mode=explicit \
        --backend-config=python,shm-default-byte-size=16777216";
    let expanded = env
        .iter()
        .fold(command.to_owned(), |c, (k, v)| c.replace(&format!("$({k})"), v));
    let mut server = spawn("seldon", &expanded, &env);
    let (http, grpc) = (format!("http://127.0.0.1:{http}"), format!("http://127.0.0.1:{grpc}"));
    ready(&http, &mut server).await;

    // The agent's sequence, over gRPC.
    let served = seldon_agent_writes(&models, "add_sub", 1);
    let mut client = GrpcInferenceServiceClient::connect(grpc.clone()).await.unwrap();
    client
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: served.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(model_ready(&mut client, &served).await);
    assert_eq!(grpc_sum(&grpc, &served).await, sum());
    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            model_name: served.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!model_ready(&mut client, &served).await);

    // --log-verbose=1 turned quiver's logs to debug; the python backend
    // setting was named as ignored.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("DEBUG"), "{log}");
    assert!(
        log.contains("--backend-config=python,shm-default-byte-size=16777216 is accepted and ignored"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&models);
}

#[tokio::test]
async fn tritons_other_flags_are_honoured_or_named() {
    let repo = temp_dir("triton-flags");
    copy_model("add_sub", &repo.join("add_sub"));
    let http = free_port();
    // gRPC and the metrics port off; flags quiver cannot honour are named.
    let mut server = spawn(
        "flags",
        &format!(
            "exec tritonserver --model-repository {} --http-port {http} --allow-grpc=false --allow-metrics=false \
             --pinned-memory-pool-byte-size=268435456 --strict-model-config=false --exit-timeout-secs=5 \
             --model-load-thread-count=1 --allow-gpu-metrics=false",
            repo.display()
        ),
        &[],
    );
    let http = format!("http://127.0.0.1:{http}");
    ready(&http, &mut server).await;
    http_ok(&http, "add_sub").await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("gRPC listening: off") && log.contains("metrics listening: off"),
        "{log}"
    );
    assert!(
        log.contains("--pinned-memory-pool-byte-size=268435456 is accepted and ignored"),
        "{log}"
    );
    assert!(
        log.contains("--strict-model-config=false is accepted and ignored"),
        "{log}"
    );
    drop(server);

    // --exit-on-error=true: a model that fails to load stops start-up.
    std::fs::write(repo.join("add_sub/1/model.onnx"), b"not a model").unwrap();
    let mut server = spawn(
        "exit-on-error",
        &format!(
            "exec tritonserver --model-repository={} --http-port=0 --grpc-port=0 --exit-on-error=true",
            repo.display()
        ),
        &[],
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        (status, std::fs::read_to_string(&server.log).unwrap())
    })
    .await
    .unwrap();
    assert!(!status.0.success());
    assert!(
        status.1.contains("--exit-on-error") && status.1.contains("add_sub"),
        "{}",
        status.1
    );
    let _ = std::fs::remove_dir_all(&repo);
}
