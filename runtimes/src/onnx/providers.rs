//! Which ONNX Runtime execution providers a session gets, read from Triton's
//! config the way Triton's ONNX Runtime backend reads it:
//! - a `KIND_GPU` instance runs on the CUDA provider, on its device;
//! - `gpu_execution_accelerator { name: "tensorrt" }` puts TensorRT ahead of
//!   CUDA (CUDA takes the nodes TensorRT cannot), with Triton's parameter
//!   names (`precision_mode`, `max_workspace_size_bytes`, `trt_*`);
//! - `gpu_execution_accelerator { name: "cuda" }` passes its parameters to
//!   the CUDA provider as ONNX Runtime names them, as do the older model
//!   parameters `cudnn_conv_algo_search`, `gpu_mem_limit`,
//!   `arena_extend_strategy` and `do_copy_in_default_stream`.
//!
//! Planning is pure (this file); registering the plan is `session.rs`'s job.
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::{Accelerators, Device};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    TensorRt,
    Cuda,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::TensorRt => "TensorRT",
            ProviderKind::Cuda => "CUDA",
        }
    }
}

/// One provider to register, with its options under ONNX Runtime's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub kind: ProviderKind,
    pub options: Vec<(String, String)>,
}

/// The older model parameters Triton still passes to the CUDA provider.
pub const CUDA_MODEL_PARAMETERS: &[&str] = &[
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "do_copy_in_default_stream",
];

/// TensorRT options given under ONNX Runtime's own names whose values are
/// flags (Triton accepts "1"/"true"/"0"/"false").
const TRT_FLAGS: &[&str] = &[
    "trt_dla_enable",
    "trt_engine_cache_enable",
    "trt_dump_subgraphs",
    "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable",
    "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable",
    "trt_force_timing_cache",
    "trt_detailed_build_log",
    "trt_build_heuristics_enable",
    "trt_sparsity_enable",
    "trt_cuda_graph_enable",
    "trt_dump_ep_context_model",
    "trt_weight_stripped_engine_enable",
    "trt_engine_hw_compatible",
];

/// TensorRT options under ONNX Runtime's names whose values pass as given.
const TRT_VALUES: &[&str] = &[
    "trt_max_partition_iterations",
    "trt_min_subgraph_size",
    "trt_dla_core",
    "trt_engine_cache_path",
    "trt_engine_cache_prefix",
    "trt_timing_cache_path",
    "trt_builder_optimization_level",
    "trt_auxiliary_streams",
    "trt_tactic_sources",
    "trt_extra_plugin_lib_paths",
    "trt_profile_min_shapes",
    "trt_profile_max_shapes",
    "trt_profile_opt_shapes",
    "trt_ep_context_file_path",
    "trt_ep_context_embed_mode",
    "trt_onnx_model_folder_path",
];

/// The providers for one instance on `device`, best first. Empty: the CPU
/// provider alone. `engine_cache` gives the TensorRT engine cache folder
/// used when the config names none (called only then).
pub fn plan(
    device: Device,
    accelerators: &Accelerators,
    parameters: &BTreeMap<String, String>,
    engine_cache: &dyn Fn() -> PathBuf,
) -> Result<Vec<Provider>, String> {
    let gpu = match device {
        Device::Cpu => {
            if let Some(a) = accelerators.cpu.first() {
                return Err(format!(
                    "cpu_execution_accelerator '{}' is not available: the ONNX Runtime builds quiver \
                     loads carry the CPU, CUDA and TensorRT providers only",
                    a.name
                ));
            }
            // As in Triton, GPU accelerators do not apply to CPU instances.
            return Ok(Vec::new());
        }
        Device::Gpu(gpu) => gpu,
    };
    if let Some(a) = accelerators.cpu.first() {
        // Triton reads cpu_execution_accelerator for CPU instances only;
        // naming an unknown one is still a mistake worth reporting.
        if a.name != "openvino" {
            return Err(format!("unknown cpu_execution_accelerator '{}'", a.name));
        }
    }
    let mut tensorrt = None;
    let mut cuda: BTreeMap<String, String> = BTreeMap::new();
    for key in CUDA_MODEL_PARAMETERS {
        if let Some(value) = parameters.get(*key) {
            cuda.insert((*key).to_owned(), cuda_value(key, value)?);
        }
    }
    for a in &accelerators.gpu {
        match a.name.as_str() {
            "tensorrt" => {
                if tensorrt.is_some() {
                    return Err("gpu_execution_accelerator 'tensorrt' is listed twice".into());
                }
                tensorrt = Some(tensorrt_options(gpu, &a.parameters, engine_cache)?);
            }
            "cuda" => {
                for (key, value) in &a.parameters {
                    cuda.insert(key.clone(), cuda_value(key, value)?);
                }
            }
            other => {
                return Err(format!(
                    "unknown gpu_execution_accelerator '{other}' (ONNX Runtime models take 'tensorrt' and 'cuda')"
                ));
            }
        }
    }
    cuda.insert("device_id".into(), gpu.to_string());
    let mut providers: Vec<Provider> = tensorrt
        .map(|options| Provider {
            kind: ProviderKind::TensorRt,
            options,
        })
        .into_iter()
        .collect();
    providers.push(Provider {
        kind: ProviderKind::Cuda,
        options: cuda.into_iter().collect(),
    });
    Ok(providers)
}

fn flag(key: &str, value: &str) -> Result<String, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok("1".into()),
        "0" | "false" => Ok("0".into()),
        _ => Err(format!(
            "TensorRT parameter '{key}' is '{value}', not 1/true or 0/false"
        )),
    }
}

fn tensorrt_options(
    gpu: u32,
    parameters: &BTreeMap<String, String>,
    engine_cache: &dyn Fn() -> PathBuf,
) -> Result<Vec<(String, String)>, String> {
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in parameters {
        let (name, value) = match key.as_str() {
            "precision_mode" => match value.trim().to_ascii_uppercase().as_str() {
                "FP32" => continue,
                "FP16" => ("trt_fp16_enable", "1".to_owned()),
                "INT8" => ("trt_int8_enable", "1".to_owned()),
                _ => {
                    return Err(format!(
                        "TensorRT parameter 'precision_mode' is '{value}'; Triton's values are FP32, FP16 and INT8"
                    ));
                }
            },
            "max_workspace_size_bytes" => {
                let bytes: u64 = value.trim().parse().map_err(|_| {
                    format!("TensorRT parameter 'max_workspace_size_bytes' is '{value}', not a byte count")
                })?;
                ("trt_max_workspace_size", bytes.to_string())
            }
            "int8_calibration_table_name" => ("trt_int8_calibration_table_name", value.clone()),
            "int8_use_native_calibration_table" => ("trt_int8_use_native_calibration_table", flag(key, value)?),
            k if TRT_FLAGS.contains(&k) => (k, flag(key, value)?),
            k if TRT_VALUES.contains(&k) => (k, value.clone()),
            other => {
                return Err(format!(
                    "unknown TensorRT parameter '{other}' (Triton's names: precision_mode, \
                     max_workspace_size_bytes, int8_calibration_table_name, \
                     int8_use_native_calibration_table and ONNX Runtime's trt_* options)"
                ));
            }
        };
        options.insert(name.to_owned(), value);
    }
    options.insert("device_id".into(), gpu.to_string());
    // Cache engines by default so a restart does not rebuild them: building
    // takes seconds to minutes, and the cache key covers the model, the
    // shapes, the GPU and the TensorRT version.
    options
        .entry("trt_engine_cache_enable".into())
        .or_insert_with(|| "1".into());
    if options["trt_engine_cache_enable"] == "1" {
        options
            .entry("trt_engine_cache_path".into())
            .or_insert_with(|| engine_cache().display().to_string());
    }
    Ok(options.into_iter().collect())
}

/// A CUDA option's value: Triton's numeric spellings of the two enumerations
/// become ONNX Runtime's names; everything else passes as given, and ONNX
/// Runtime rejects what it does not know.
fn cuda_value(key: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    Ok(match (key, v) {
        ("cudnn_conv_algo_search", "0") => "EXHAUSTIVE".into(),
        ("cudnn_conv_algo_search", "1") => "HEURISTIC".into(),
        ("cudnn_conv_algo_search", "2") => "DEFAULT".into(),
        ("cudnn_conv_algo_search", "EXHAUSTIVE" | "HEURISTIC" | "DEFAULT") => v.into(),
        ("cudnn_conv_algo_search", _) => {
            return Err(format!(
                "parameter 'cudnn_conv_algo_search' is '{value}': 0 (exhaustive), 1 (heuristic) or 2 (default)"
            ));
        }
        ("arena_extend_strategy", "0") => "kNextPowerOfTwo".into(),
        ("arena_extend_strategy", "1") => "kSameAsRequested".into(),
        ("arena_extend_strategy", "kNextPowerOfTwo" | "kSameAsRequested") => v.into(),
        ("arena_extend_strategy", _) => {
            return Err(format!(
                "parameter 'arena_extend_strategy' is '{value}': 0 (next power of two) or 1 (same as requested)"
            ));
        }
        ("gpu_mem_limit", _) => v
            .parse::<u64>()
            .map_err(|_| format!("parameter 'gpu_mem_limit' is '{value}', not a byte count"))?
            .to_string(),
        _ => v.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Accelerator;

    fn accel(name: &str, params: &[(&str, &str)]) -> Accelerator {
        Accelerator {
            name: name.into(),
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn gpu(list: Vec<Accelerator>) -> Accelerators {
        Accelerators {
            gpu: list,
            cpu: Vec::new(),
        }
    }

    fn option<'a>(p: &'a Provider, key: &str) -> Option<&'a str> {
        p.options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    const CACHE: &str = "/models/m/.quiver-trt-cache/1";

    fn cache() -> PathBuf {
        PathBuf::from(CACHE)
    }

    #[test]
    fn cpu_instances_get_the_cpu_provider_alone() {
        let tensorrt = gpu(vec![accel("tensorrt", &[])]);
        assert!(
            plan(Device::Cpu, &tensorrt, &BTreeMap::new(), &cache)
                .unwrap()
                .is_empty()
        );
        let openvino = Accelerators {
            gpu: Vec::new(),
            cpu: vec![accel("openvino", &[])],
        };
        let e = plan(Device::Cpu, &openvino, &BTreeMap::new(), &cache).unwrap_err();
        assert!(e.contains("'openvino'"), "{e}");
    }

    #[test]
    fn a_gpu_instance_runs_on_cuda_on_its_device() {
        let p = plan(Device::Gpu(3), &Accelerators::default(), &BTreeMap::new(), &cache).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].kind, ProviderKind::Cuda);
        assert_eq!(option(&p[0], "device_id"), Some("3"));
    }

    #[test]
    fn tensorrt_comes_first_with_tritons_names_mapped() {
        let a = gpu(vec![accel(
            "tensorrt",
            &[
                ("precision_mode", "FP16"),
                ("max_workspace_size_bytes", "1073741824"),
                ("trt_timing_cache_enable", "true"),
                ("trt_builder_optimization_level", "4"),
            ],
        )]);
        let p = plan(Device::Gpu(1), &a, &BTreeMap::new(), &cache).unwrap();
        assert_eq!(
            p.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProviderKind::TensorRt, ProviderKind::Cuda]
        );
        let trt = &p[0];
        assert_eq!(option(trt, "trt_fp16_enable"), Some("1"));
        assert_eq!(option(trt, "trt_int8_enable"), None);
        assert_eq!(option(trt, "trt_max_workspace_size"), Some("1073741824"));
        assert_eq!(option(trt, "trt_timing_cache_enable"), Some("1"));
        assert_eq!(option(trt, "trt_builder_optimization_level"), Some("4"));
        assert_eq!(option(trt, "device_id"), Some("1"));
        // The engine cache is on, beside the model, unless the config says otherwise.
        assert_eq!(option(trt, "trt_engine_cache_enable"), Some("1"));
        assert_eq!(option(trt, "trt_engine_cache_path"), Some(CACHE));
        let own = gpu(vec![accel("tensorrt", &[("trt_engine_cache_path", "/cache")])]);
        let p = plan(Device::Gpu(0), &own, &BTreeMap::new(), &cache).unwrap();
        assert_eq!(option(&p[0], "trt_engine_cache_path"), Some("/cache"));
        let off = gpu(vec![accel("tensorrt", &[("trt_engine_cache_enable", "false")])]);
        let p = plan(Device::Gpu(0), &off, &BTreeMap::new(), &cache).unwrap();
        assert_eq!(option(&p[0], "trt_engine_cache_enable"), Some("0"));
        assert_eq!(option(&p[0], "trt_engine_cache_path"), None);
    }

    #[test]
    fn bad_accelerator_settings_are_named() {
        let cases = [
            (accel("tensorrt", &[("precision_mode", "FP8")]), "precision_mode"),
            (
                accel("tensorrt", &[("max_workspace_size_bytes", "1G")]),
                "max_workspace_size_bytes",
            ),
            (accel("tensorrt", &[("trt_fp16", "1")]), "'trt_fp16'"),
            (
                accel("tensorrt", &[("trt_dump_subgraphs", "yes")]),
                "trt_dump_subgraphs",
            ),
            (
                accel("cuda", &[("cudnn_conv_algo_search", "7")]),
                "cudnn_conv_algo_search",
            ),
            (accel("rocm", &[]), "'rocm'"),
        ];
        for (a, needle) in cases {
            let e = plan(Device::Gpu(0), &gpu(vec![a.clone()]), &BTreeMap::new(), &cache).unwrap_err();
            assert!(e.contains(needle), "{a:?}: {e}");
        }
    }

    #[test]
    fn cuda_options_come_from_the_accelerator_and_the_older_parameters() {
        let parameters: BTreeMap<String, String> = [
            ("cudnn_conv_algo_search", "1"),
            ("gpu_mem_limit", "4294967296"),
            ("arena_extend_strategy", "1"),
            ("intra_op_thread_count", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = gpu(vec![accel(
            "cuda",
            &[("cudnn_conv_use_max_workspace", "0"), ("gpu_mem_limit", "1024")],
        )]);
        let p = plan(Device::Gpu(0), &a, &parameters, &cache).unwrap();
        assert_eq!(p.len(), 1);
        let cuda = &p[0];
        assert_eq!(option(cuda, "cudnn_conv_algo_search"), Some("HEURISTIC"));
        assert_eq!(option(cuda, "arena_extend_strategy"), Some("kSameAsRequested"));
        assert_eq!(option(cuda, "cudnn_conv_use_max_workspace"), Some("0"));
        // The accelerator's own setting wins over the older parameter.
        assert_eq!(option(cuda, "gpu_mem_limit"), Some("1024"));
        assert_eq!(option(cuda, "intra_op_thread_count"), None);
    }
}
