//! Triton's command line, accepted as it is, so that a platform switches from
//! `tritonserver` to quiver by changing the image and nothing else (KServe's
//! `kserve-tritonserver` runtime, Seldon Core 2's `triton` ServerConfig).
//!
//! Most of Triton's flags are quiver's own flags under the same name (see
//! `config.rs`: `--model-repository`, `--model-store`, the ports,
//! `--allow-http`, `--allow-grpc`, `--allow-metrics`, `--model-control-mode`,
//! `--load-model`, `--repository-poll-secs`, `--strict-readiness`,
//! `--exit-on-error`, `--log-verbose`, `--log-info`, `--log-file`, ...). The flags here are the ones
//! quiver cannot honour: they are taken out of the command line before it is
//! parsed, with or without their value, and each is named in a warning at
//! start-up, so nothing Triton accepts stops quiver from starting.
use std::ffi::OsString;

/// Triton flags quiver accepts and does not act on, and why. Every one of
/// them takes a value in Triton (`--flag=value` or `--flag value`).
pub const IGNORED: &[(&str, &str)] = &[
    (
        "pinned-memory-pool-byte-size",
        "quiver allocates pinned memory per batch",
    ),
    (
        "cuda-memory-pool-byte-size",
        "ONNX Runtime's and LibTorch's own CUDA allocators are used",
    ),
    (
        "cuda-virtual-address-size",
        "ONNX Runtime's and LibTorch's own CUDA allocators are used",
    ),
    (
        "min-supported-compute-capability",
        "every GPU the providers accept is used",
    ),
    ("buffer-manager-thread-count", "no buffer manager"),
    ("model-load-gpu-limit", "no GPU memory limit per load"),
    ("model-load-retry-count", "a failed load is reported, not retried"),
    (
        "rate-limit",
        "no rate limiter: admission budgets bound the work in flight",
    ),
    ("rate-limit-resource", "no rate limiter"),
    (
        "cache-directory",
        "the local cache is built in, and redis is the only other cache",
    ),
    (
        "trace-file",
        "Triton's old trace flag: use --trace-config triton,file=PATH",
    ),
    (
        "trace-level",
        "Triton's old trace flag: use --trace-config level=TIMESTAMPS",
    ),
    ("trace-rate", "Triton's old trace flag: use --trace-config rate=N"),
    ("trace-count", "Triton's old trace flag: use --trace-config count=N"),
    (
        "trace-log-frequency",
        "Triton's old trace flag: use --trace-config triton,log-frequency=N",
    ),
    ("id", "quiver reports its own server metadata"),
    ("http-thread-count", "--worker-threads sizes the I/O threads"),
    ("http-header-forward-pattern", "no header forwarding"),
    ("http-restricted-api", "use --control-token and --data-token"),
    ("grpc-restricted-protocol", "use --control-token and --data-token"),
    ("grpc-infer-allocation-pool-size", "no allocation pool"),
    (
        "grpc-keepalive-permit-without-calls",
        "tonic's HTTP/2 server does not police pings",
    ),
    (
        "grpc-http2-max-pings-without-data",
        "tonic's HTTP/2 server does not police pings",
    ),
    (
        "grpc-http2-min-recv-ping-interval-without-data",
        "tonic's HTTP/2 server does not police pings",
    ),
    (
        "grpc-http2-max-ping-strikes",
        "tonic's HTTP/2 server does not police pings",
    ),
    ("grpc-infer-response-compression-level", "answers are not compressed"),
    ("grpc-address", "--host sets the address of every listener"),
    ("http-address", "--host sets the address of every listener"),
    ("metrics-address", "--host sets the address of every listener"),
    ("metrics-config", "quiver's metrics are fixed"),
    ("allow-cpu-metrics", "process CPU is not exported"),
    ("model-namespacing", "model names are unique in one repository"),
    ("host-policy", "no host policies"),
    ("model-config-name", "the config is config.pbtxt"),
    ("repoagent-directory", "no repository agents"),
    (
        "disable-auto-complete-config",
        "configs are always completed from the model file",
    ),
    (
        "strict-model-config",
        "configs are always completed from the model file",
    ),
    ("allow-sagemaker", "no SageMaker endpoint"),
    ("sagemaker-port", "no SageMaker endpoint"),
    ("sagemaker-safe-port-range", "no SageMaker endpoint"),
    ("sagemaker-thread-count", "no SageMaker endpoint"),
    ("allow-vertex-ai", "no Vertex AI endpoint"),
    ("vertex-ai-port", "no Vertex AI endpoint"),
    ("vertex-ai-thread-count", "no Vertex AI endpoint"),
    ("vertex-ai-default-model", "no Vertex AI endpoint"),
];

/// The command line without the flags in [`IGNORED`], and one warning per
/// flag taken out. Arguments after `--` are left alone.
pub fn strip_ignored(args: impl IntoIterator<Item = OsString>) -> (Vec<OsString>, Vec<String>) {
    let mut kept = Vec::new();
    let mut warnings = Vec::new();
    let mut args = args.into_iter().peekable();
    let mut rest = false;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if rest || text == "--" {
            rest = true;
            kept.push(arg);
            continue;
        }
        let Some(flag) = text.strip_prefix("--") else {
            kept.push(arg);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let Some((_, why)) = IGNORED.iter().find(|(n, _)| *n == name) else {
            kept.push(arg);
            continue;
        };
        let value = match inline {
            Some(v) => v,
            // The value is the next argument unless that is another flag.
            None => match args.peek() {
                Some(next) if !next.to_string_lossy().starts_with("--") => args
                    .next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            },
        };
        warnings.push(format!("Triton flag --{name}={value} is accepted and ignored: {why}"));
    }
    (kept, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (kept, warnings) = strip_ignored(args.iter().map(OsString::from));
        (kept.into_iter().map(|a| a.into_string().unwrap()).collect(), warnings)
    }

    #[test]
    fn ignored_flags_go_with_their_values_and_are_named() {
        let (kept, warnings) = strip(&[
            "tritonserver",
            "--model-repository=/mnt/models",
            "--pinned-memory-pool-byte-size=268435456",
            "--trace-level",
            "TIMESTAMPS",
            "--grpc-port",
            "9000",
            "--strict-model-config=false",
            "--id",
            "--http-port=8080",
        ]);
        assert_eq!(
            kept,
            [
                "tritonserver",
                "--model-repository=/mnt/models",
                "--grpc-port",
                "9000",
                "--http-port=8080"
            ]
        );
        assert_eq!(warnings.len(), 4);
        assert!(
            warnings[0].contains("--pinned-memory-pool-byte-size=268435456"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("--trace-level=TIMESTAMPS"));
        assert!(warnings[2].contains("--strict-model-config=false") && warnings[2].contains("completed"));
        // A flag without a value before the next flag takes nothing with it.
        assert!(warnings[3].contains("--id="));
    }

    #[test]
    fn quivers_own_flags_and_positional_values_pass() {
        let args = ["quiver", "--model-store", "/models", "--log-verbose=1", "--", "--id=x"];
        let (kept, warnings) = strip(&args);
        assert_eq!(kept, args);
        assert!(warnings.is_empty());
    }
}
