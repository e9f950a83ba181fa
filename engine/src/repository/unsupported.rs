//! No silent config. Every field of Triton's `ModelConfig` that quiver parses
//! but does not act on is either **refused** (the model fails to load with a
//! reason naming the field), because ignoring it would change what the model
//! computes or how it is served, or **ignored and said so** (logged once at
//! load), because results and serving are the same without it. The lists
//! here and in `docs/compatibility.md` are the same lists.
use quiver_proto::inference::ModelConfig;

/// Model parameters quiver acts on (the last four: the CUDA provider's
/// options under Triton's older names, for GPU instances).
pub const KNOWN_PARAMETERS: &[&str] = &[
    "intra_op_thread_count",
    "inter_op_thread_count",
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "do_copy_in_default_stream",
];

/// `Ok`: the fields set in `config` that are harmless to ignore, by name.
/// `Err`: the first field set that quiver cannot honour, and why.
pub fn review(config: &ModelConfig) -> Result<Vec<String>, String> {
    let refuse = |field: String, why: &str| Err(format!("config field {field} is not supported: {why}"));
    let mut ignored = Vec::new();
    if !config.runtime.is_empty() {
        return refuse(
            format!("runtime '{}'", config.runtime),
            "quiver runs models on its own runtimes, not on Triton backend libraries",
        );
    }
    for input in &config.input {
        let what = format!("input '{}'", input.name);
        if input.reshape.is_some() {
            return refuse(
                format!("{what} reshape"),
                "requests would reach the model in another shape",
            );
        }
        if input.is_shape_tensor {
            return refuse(
                format!("{what} is_shape_tensor"),
                "shape tensors are a TensorRT feature",
            );
        }
        if input.allow_ragged_batch {
            return refuse(format!("{what} allow_ragged_batch"), "quiver batches equal shapes only");
        }
        if input.format != 0 {
            ignored.push(format!("{what} format (informational)"));
        }
    }
    for output in &config.output {
        let what = format!("output '{}'", output.name);
        if output.reshape.is_some() {
            return refuse(format!("{what} reshape"), "answers would have another shape");
        }
        if output.is_shape_tensor {
            return refuse(
                format!("{what} is_shape_tensor"),
                "shape tensors are a TensorRT feature",
            );
        }
    }
    for group in &config.instance_group {
        let what = format!("instance_group '{}'", group.name);
        // KIND_GPU and `gpus` are the backend's to accept or refuse: it
        // knows whether it has a GPU.
        if group.kind == 3 {
            return refuse(format!("{what} kind KIND_MODEL"), "quiver places instances itself");
        }
        if !group.profile.is_empty() {
            return refuse(
                format!("{what} profile"),
                "TensorRT optimization profiles need TensorRT",
            );
        }
        if group.passive {
            return refuse(format!("{what} passive"), "every quiver instance takes requests");
        }
        if !group.host_policy.is_empty() {
            ignored.push(format!("{what} host_policy"));
        }
    }
    if let Some(o) = &config.optimization {
        // execution_accelerators are the backend's to apply or refuse: ONNX
        // Runtime maps them to its providers, LibTorch refuses them.
        if o.priority != 0 {
            ignored.push("optimization.priority".into());
        }
        if o.input_pinned_memory.is_some() {
            ignored.push("optimization.input_pinned_memory (GPU instances always use pinned memory)".into());
        }
        if o.output_pinned_memory.is_some() {
            ignored.push("optimization.output_pinned_memory (GPU instances always use pinned memory)".into());
        }
    }
    if config.model_transaction_policy.as_ref().is_some_and(|p| p.decoupled) {
        return refuse(
            "model_transaction_policy.decoupled".into(),
            "quiver answers each request with exactly one response",
        );
    }
    if !config.cc_model_filenames.is_empty() {
        ignored.push("cc_model_filenames (the default model file is loaded on every GPU)".into());
    }
    if !config.metric_tags.is_empty() {
        ignored.push("metric_tags".into());
    }
    let mut unknown: Vec<&String> = config
        .parameters
        .keys()
        .filter(|k| !KNOWN_PARAMETERS.contains(&k.as_str()))
        .collect();
    unknown.sort();
    for key in unknown {
        ignored.push(format!("parameters '{key}'"));
    }
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::model_config::parse;

    #[test]
    fn refused_fields_are_named() {
        let cases = [
            (
                r#"input [ { name: "x" reshape: { shape: [ 2 ] } } ]"#,
                "input 'x' reshape",
            ),
            (
                r#"input [ { name: "x" allow_ragged_batch: true } ]"#,
                "allow_ragged_batch",
            ),
            (
                r#"output [ { name: "y" is_shape_tensor: true } ]"#,
                "output 'y' is_shape_tensor",
            ),
            (r#"instance_group [ { name: "g" kind: KIND_MODEL } ]"#, "KIND_MODEL"),
            (r#"model_transaction_policy { decoupled: true }"#, "decoupled"),
            (r#"runtime: "model.py""#, "runtime 'model.py'"),
        ];
        for (text, needle) in cases {
            let e = review(&parse(text).unwrap()).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn harmless_fields_are_listed() {
        let c = parse(
            r#"response_cache { enable: true } metric_tags { key: "team" value: "a" }
               optimization { input_pinned_memory { enable: true } }
               parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
               parameters { key: "enable_mem_pattern" value: { string_value: "0" } }"#,
        )
        .unwrap();
        let ignored = review(&c).unwrap();
        assert_eq!(
            ignored,
            vec![
                "optimization.input_pinned_memory (GPU instances always use pinned memory)",
                "metric_tags",
                "parameters 'enable_mem_pattern'"
            ]
        );
        assert!(
            review(&parse(r#"name: "m" max_batch_size: 4"#).unwrap())
                .unwrap()
                .is_empty()
        );
    }
}
