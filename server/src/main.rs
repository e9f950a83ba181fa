//! `quiver`: parse the config, set up logging, start, wait for a signal, drain.
use std::time::Duration;

use quiver_server::config::Config;

/// mimalloc, built to override `malloc` itself: the executable exports the
/// C allocation functions, so ONNX Runtime, LibTorch and the torch backend's
/// library (loaded with `dlopen`) allocate from the same heap as the server,
/// and a block may be freed wherever it ends up.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let (config, triton_warnings) = Config::parse_with_triton_flags();
    if let Err(e) = quiver_server::logging::install(&config.log, config.log_settings()) {
        eprintln!("quiver: {}", e.message);
        return std::process::ExitCode::from(2);
    }
    for warning in &triton_warnings {
        tracing::warn!("{warning}");
    }
    if config.check_config {
        return match config.validate() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quiver: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .max_blocking_threads(config.max_blocking_threads)
        .thread_name("quiver-io")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quiver: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = quiver_server::start(&config).await?;
    for (addr, what) in [
        (server.http_addr, "HTTP listening"),
        (server.grpc_addr, "gRPC listening"),
        (server.metrics_addr, "metrics listening"),
    ] {
        match addr {
            Some(addr) => tracing::info!(address = %addr, "{what}"),
            None => tracing::info!("{what}: off"),
        }
    }
    if let Some(addr) = server.admin_addr {
        tracing::info!(address = %addr, "admin listening");
    }
    shutdown_signal().await;
    tracing::info!(
        drain_seconds = config.shutdown_drain_seconds,
        "shutting down: not ready, draining"
    );
    server
        .shutdown(Duration::from_secs(config.shutdown_drain_seconds))
        .await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
