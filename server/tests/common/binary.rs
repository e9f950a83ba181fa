//! The quiver binary as a process of its own: for what needs a process
//! (LibTorch loads once per process; SIGKILL and restarts).
use std::path::Path;

use super::{eventually, http_client, root};

/// A running quiver; killed (SIGKILL) when dropped.
pub struct Child {
    pub process: std::process::Child,
    /// Its HTTP base URL.
    pub http: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts quiver on `args` with a free HTTP port (gRPC and metrics on port
/// 0, ONNX Runtime from .cache unless `args` name one), its log in `log`
/// (else dropped), and returns once it answers.
pub async fn start(args: &[&str], log: Option<&Path>) -> Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
    command
        .args([
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--http-port",
        ])
        .arg(port.to_string())
        .args(args)
        .stderr(match log {
            Some(path) => std::fs::File::create(path).unwrap().into(),
            None => std::process::Stdio::null(),
        });
    if !args.contains(&"--onnxruntime-lib") {
        command
            .arg("--onnxruntime-lib")
            .arg(root().join(".cache/onnxruntime/libonnxruntime.so"));
    }
    let child = Child {
        process: command.spawn().unwrap(),
        http: format!("http://127.0.0.1:{port}"),
    };
    let live = format!("{}/v2/health/live", child.http);
    eventually(60, "the server answers", || {
        let live = live.clone();
        async move { http_client().get(&live).send().await.is_ok() }
    })
    .await;
    child
}
