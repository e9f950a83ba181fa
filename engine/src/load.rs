//! Loading one model version: the backend from the runtimes' registry, one
//! `LoadRequest` per instance (device, thread counts), the config completed
//! from what the model declares, warm-up, and the instance threads started.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use quiver_proto::inference::ModelConfig;
use quiver_runtimes::registry::{self, Entry};
use quiver_runtimes::{Accelerator, Accelerators, Device, LoadRequest, Runtime, Settings};

use crate::batcher::policy::{BatchingConfig, DelayPolicy};
use crate::batcher::queue::{QueueConfig, QueuePolicy, TimeoutAction};
use crate::batcher::{InstanceScheduling, Scheduler, SchedulerConfig};
use crate::classify;
use crate::model::ModelVersion;
use crate::repository::model_config::ModelSpec;
use crate::repository::{ControlMode, model_config, unsupported};
use crate::stats::VersionStats;
use crate::tap::Step;
use crate::warmup;

/// Server-wide defaults a model's config can override.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub default_max_batch_size: i32,
    pub intra_op_threads: usize,
    pub queue_capacity: usize,
    /// `--queue-delay-policy`: how batches wait, unless a model's config
    /// sets parameters { key: "queue_delay_policy" }.
    pub delay_policy: DelayPolicy,
    /// `--instance-scheduling`: the OS policy of every instance thread.
    pub instance_scheduling: InstanceScheduling,
    /// `--model-name`: serve a repository folder that is one model under this name.
    pub model_name: Option<String>,
    /// Warm a model that has no `model_warmup` with one run on zeros.
    pub default_warmup: bool,
    pub control: ControlMode,
    /// Model loads that may run at once.
    pub parallel_loads: usize,
    /// Server readiness waits for every model that should serve.
    pub strict_readiness: bool,
    /// `--backend-directory` and `--backend-config`.
    pub backends: Arc<Settings>,
}

impl LoadOptions {
    /// The `max_batch_size` a batching model without one gets: Triton's
    /// `--backend-config=[<backend>,]default-max-batch-size=N` where given
    /// (checked at start-up), else `--default-max-batch-size`.
    pub fn default_max_batch_size_for(&self, backend: &str) -> i32 {
        self.backends
            .get_or_shared(backend, "default-max-batch-size")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(self.default_max_batch_size)
    }
}

/// The model config parameter that picks a model's queue delay policy
/// ("adaptive" or "fixed"), over the server's `--queue-delay-policy`.
pub const DELAY_POLICY_PARAMETER: &str = "queue_delay_policy";

/// Loads one version: its instances' runtimes, the completed config, then
/// warm-up on every instance, and only then its queue and instance threads.
/// Blocking: runs on a loader thread, never on the async runtime.
pub fn load_version(
    name: &str,
    dir: &Path,
    version: u64,
    mut config: ModelConfig,
    fingerprint: u64,
    options: &LoadOptions,
    steps: &mut Vec<Step>,
) -> Result<ModelVersion, String> {
    let started = Instant::now();
    let mut step = |name, start: Instant, result: &Result<(), String>| {
        steps.push(Step {
            name,
            version: Some(version),
            start,
            end: Instant::now(),
            error: result.as_ref().err().cloned(),
        })
    };
    let loaded = load_runtimes(name, dir, version, &mut config, options);
    step("load", started, &loaded.as_ref().map(|_| ()).map_err(Clone::clone));
    let (runtimes, spec, on_gpu) = loaded?;
    let warm_start = Instant::now();
    let version_dir = dir.join(version.to_string());
    let warn = |message: &str| tracing::warn!(model = name, version, "{message}");
    let mut runtimes = runtimes;
    let warmed = warmup::samples(&config, &spec, &version_dir, options.default_warmup, on_gpu, &warn)
        .and_then(|samples| warmup::warm(&mut runtimes, &samples, &warn));
    step("warm-up", warm_start, &warmed);
    warmed?;
    let labels = classify::read_labels(&config, dir)?;
    let mut loaded = start_version(name, version, config, spec, runtimes, options)?;
    loaded.fingerprint = fingerprint;
    loaded.labels = labels;
    Ok(loaded)
}

/// The runtimes of every instance and the completed spec: a load before its
/// warm-up. `config` is completed in place.
#[allow(clippy::type_complexity)]
fn load_runtimes(
    name: &str,
    dir: &Path,
    version: u64,
    config: &mut ModelConfig,
    options: &LoadOptions,
) -> Result<(Vec<Box<dyn Runtime>>, ModelSpec, bool), String> {
    let version_dir = dir.join(version.to_string());
    let backend = backend_for(config, &version_dir)?;
    let file = match config.default_model_filename.as_str() {
        "" => backend.default_model_filename,
        named => named,
    };
    let path = version_dir.join(file);
    let ignored = unsupported::review(config)?;
    if !ignored.is_empty() {
        tracing::warn!(
            model = name,
            version,
            ignored = ignored.join("; "),
            "config fields ignored (harmless)"
        );
    }
    let devices = instance_devices(config)?;
    let accelerators = accelerators(config);
    let declared = model_config::declared_io(config)?;
    let parameters: BTreeMap<String, String> = config
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.string_value.clone()))
        .collect();
    let (intra_op_threads, inter_op_threads) = threads(config, options)?;
    let warn = |message: &str| tracing::warn!(model = name, version, "{message}");
    let load = |device: Device| {
        let request = LoadRequest {
            model: name,
            file: &path,
            declared: &declared,
            parameters: &parameters,
            intra_op_threads,
            inter_op_threads,
            graph_level: config
                .optimization
                .as_ref()
                .and_then(|o| o.graph.as_ref())
                .map_or(0, |g| g.level),
            device,
            accelerators: &accelerators,
            settings: &options.backends,
            warn: &warn,
        };
        backend.load(&options.backends, &request).map_err(|e| e.to_string())
    };
    let runtimes = devices
        .iter()
        .map(|&d| load(d))
        .collect::<Result<Vec<Box<dyn Runtime>>, _>>()?;
    let mut spec = model_config::complete(
        config,
        name,
        (backend.platform, backend.name),
        runtimes[0].io(),
        options.default_max_batch_size_for(backend.name),
    )?;
    spec.utf8_strings = runtimes[0].utf8_strings();
    let on_gpu = devices.iter().any(|d| matches!(d, Device::Gpu(_)));
    Ok((runtimes, spec, on_gpu))
}

/// Starts serving a version whose config is complete and whose runtimes are
/// loaded: its statistics, queue and instance threads.
pub fn start_version(
    name: &str,
    version: u64,
    config: ModelConfig,
    spec: model_config::ModelSpec,
    runtimes: Vec<Box<dyn Runtime>>,
    options: &LoadOptions,
) -> Result<ModelVersion, String> {
    let scheduler_config = SchedulerConfig {
        threads: options.instance_scheduling,
        ..scheduler_config(&config, options.queue_capacity, options.delay_policy)?
    };
    let stats = Arc::new(VersionStats::new(name, version));
    let scheduler = Scheduler::start(
        &format!("{name}:{version}"),
        runtimes,
        scheduler_config,
        Arc::clone(&stats),
    )
    .map_err(|e| format!("cannot start instance threads: {e}"))?;
    Ok(ModelVersion {
        version,
        fingerprint: 0,
        config: Arc::new(config),
        spec,
        stats,
        scheduler,
        provenance: Default::default(),
        taps: Default::default(),
        labels: Default::default(),
        composite: None,
    })
}

/// The backend a version loads with: the one the config names by platform
/// or backend, else the one whose model file the version folder holds.
fn backend_for(config: &ModelConfig, version_dir: &Path) -> Result<&'static Entry, String> {
    if let Some(entry) = registry::find(&config.platform, &config.backend)? {
        return Ok(entry);
    }
    registry::detect(version_dir, &config.default_model_filename).ok_or_else(|| {
        let files: Vec<&str> = registry::all().iter().map(|e| e.default_model_filename).collect();
        format!(
            "{} holds no model file quiver recognises ({}); name the backend with platform or backend in config.pbtxt",
            version_dir.display(),
            files.join(", ")
        )
    })
}

/// `optimization.execution_accelerators`, for the backend to apply.
pub fn accelerators(config: &ModelConfig) -> Accelerators {
    let list = |l: &[quiver_proto::inference::model_optimization_policy::execution_accelerators::Accelerator]| {
        l.iter()
            .map(|a| Accelerator {
                name: a.name.clone(),
                parameters: a.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect()
    };
    match config
        .optimization
        .as_ref()
        .and_then(|o| o.execution_accelerators.as_ref())
    {
        Some(a) => Accelerators {
            gpu: list(&a.gpu_execution_accelerator),
            cpu: list(&a.cpu_execution_accelerator),
        },
        None => Accelerators::default(),
    }
}

/// One device per instance: `count` instances on the CPU, or on each GPU of
/// a KIND_GPU group (GPU 0 when it lists none), as Triton places them.
pub fn instance_devices(config: &ModelConfig) -> Result<Vec<Device>, String> {
    const KIND_GPU: i32 = 1;
    let mut devices = Vec::new();
    for group in &config.instance_group {
        if group.count < 0 {
            return Err(format!("instance_group '{}' has count {}", group.name, group.count));
        }
        let count = group.count.max(1) as usize;
        if group.kind == KIND_GPU || !group.gpus.is_empty() {
            let gpus = if group.gpus.is_empty() {
                vec![0]
            } else {
                group.gpus.clone()
            };
            for gpu in gpus {
                let gpu = u32::try_from(gpu).map_err(|_| format!("instance_group '{}' names GPU {gpu}", group.name))?;
                devices.extend(std::iter::repeat_n(Device::Gpu(gpu), count));
            }
        } else {
            devices.extend(std::iter::repeat_n(Device::Cpu, count));
        }
    }
    if devices.is_empty() {
        devices.push(Device::Cpu);
    }
    Ok(devices)
}

/// Intra- and inter-op threads: the config's parameters (quiver's and
/// Triton's ONNX names in lower case, Triton's PyTorch names in upper case),
/// else `--intra-op-threads` and 1.
fn threads(config: &ModelConfig, options: &LoadOptions) -> Result<(usize, usize), String> {
    let count = |keys: [&str; 2], default: usize| -> Result<usize, String> {
        match keys
            .iter()
            .find_map(|k| model_config::parameter(config, k).map(|v| (k, v)))
        {
            None => Ok(default),
            Some((key, v)) => v
                .trim()
                .parse()
                .map_err(|_| format!("parameter '{key}' is '{v}', not a thread count")),
        }
    };
    Ok((
        count(
            ["intra_op_thread_count", "INTRA_OP_THREAD_COUNT"],
            options.intra_op_threads,
        )?,
        count(["inter_op_thread_count", "INTER_OP_THREAD_COUNT"], 1)?,
    ))
}

/// Triton's `dynamic_batching` block as the scheduler's settings. Without the
/// block (or with `max_batch_size: 0`) every request runs alone.
fn scheduler_config(
    config: &ModelConfig,
    capacity: usize,
    server_delay_policy: DelayPolicy,
) -> Result<SchedulerConfig, String> {
    use quiver_proto::inference::model_config::SchedulingChoice;
    use quiver_proto::inference::{ModelQueuePolicy, model_queue_policy};
    let delay_policy = match model_config::parameter(config, DELAY_POLICY_PARAMETER) {
        Some(v) => v
            .parse()
            .map_err(|e| format!("parameter '{DELAY_POLICY_PARAMETER}': {e}"))?,
        None => server_delay_policy,
    };
    let queue_policy = |p: Option<&ModelQueuePolicy>| -> QueuePolicy {
        let Some(p) = p else { return QueuePolicy::default() };
        QueuePolicy {
            timeout_action: if p.timeout_action == model_queue_policy::TimeoutAction::Delay as i32 {
                TimeoutAction::Delay
            } else {
                TimeoutAction::Reject
            },
            default_timeout: (p.default_timeout_microseconds > 0)
                .then(|| std::time::Duration::from_micros(p.default_timeout_microseconds)),
            allow_timeout_override: p.allow_timeout_override,
            max_queue_size: p.max_queue_size as usize,
        }
    };
    let Some(SchedulingChoice::DynamicBatching(db)) = &config.scheduling_choice else {
        return Ok(SchedulerConfig {
            queue: QueueConfig {
                capacity,
                levels: vec![QueuePolicy::default()],
                default_level: 0,
                batching: None,
            },
            preserve_ordering: false,
            threads: InstanceScheduling::default(),
        });
    };
    let max = config.max_batch_size.max(0) as usize;
    let mut preferred = Vec::new();
    for &p in &db.preferred_batch_size {
        if p < 1 || (max > 0 && p as usize > max) {
            return Err(format!(
                "preferred_batch_size {p} is outside 1..={max} (max_batch_size)"
            ));
        }
        preferred.push(p as usize);
    }
    preferred.sort_unstable();
    let default_policy = queue_policy(db.default_queue_policy.as_ref());
    let levels = db.priority_levels.max(1) as usize;
    if levels > 1024 {
        return Err(format!("priority_levels is {levels}; quiver supports up to 1024"));
    }
    let default_level = match db.default_priority_level {
        0 => 0,
        l if (l as usize) <= levels => l as usize - 1,
        l => return Err(format!("default_priority_level {l} is outside 1..={levels}")),
    };
    let mut policies = vec![default_policy; levels];
    for (&level, policy) in &db.priority_queue_policy {
        if level == 0 || level as usize > levels {
            return Err(format!("priority_queue_policy for level {level}, outside 1..={levels}"));
        }
        policies[level as usize - 1] = queue_policy(Some(policy));
    }
    Ok(SchedulerConfig {
        queue: QueueConfig {
            capacity,
            levels: policies,
            default_level,
            batching: (max > 0).then(|| BatchingConfig {
                max_batch_size: max,
                preferred,
                max_queue_delay: std::time::Duration::from_micros(db.max_queue_delay_microseconds),
                delay_policy,
            }),
        },
        preserve_ordering: db.preserve_ordering,
        threads: InstanceScheduling::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batching(text: &str, server: DelayPolicy) -> Result<Option<BatchingConfig>, String> {
        let config = model_config::parse(text).expect("a valid config");
        scheduler_config(&config, 16, server).map(|c| c.queue.batching)
    }

    #[test]
    fn gpu_groups_and_accelerators_read_as_triton_writes_them() {
        let config = model_config::parse(
            r#"name: "m" platform: "onnxruntime_onnx" max_batch_size: 8
               instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] },
                                { count: 1 kind: KIND_CPU },
                                { kind: KIND_GPU } ]
               optimization { execution_accelerators {
                 gpu_execution_accelerator : [ {
                   name : "tensorrt"
                   parameters { key: "precision_mode" value: "FP16" }
                   parameters { key: "max_workspace_size_bytes" value: "1073741824" }
                   parameters { key: "trt_engine_cache_enable" value: "1" } },
                   { name : "cuda" parameters { key: "cudnn_conv_use_max_workspace" value: "0" } } ]
                 cpu_execution_accelerator : [ { name : "openvino" } ] } }"#,
        )
        .unwrap();
        assert_eq!(
            instance_devices(&config).unwrap(),
            [
                Device::Gpu(0),
                Device::Gpu(0),
                Device::Gpu(1),
                Device::Gpu(1),
                Device::Cpu,
                Device::Gpu(0)
            ]
        );
        let a = accelerators(&config);
        assert_eq!(a.gpu.len(), 2);
        assert_eq!(a.gpu[0].name, "tensorrt");
        assert_eq!(a.gpu[0].parameters["precision_mode"], "FP16");
        assert_eq!(a.gpu[0].parameters["max_workspace_size_bytes"], "1073741824");
        assert_eq!(a.gpu[0].parameters["trt_engine_cache_enable"], "1");
        assert_eq!(a.gpu[1].name, "cuda");
        assert_eq!(a.gpu[1].parameters["cudnn_conv_use_max_workspace"], "0");
        assert_eq!(a.cpu[0].name, "openvino");
        // Accelerators are the backend's to take or refuse, not a config error.
        assert!(unsupported::review(&config).unwrap().is_empty());
        let bad = model_config::parse(r#"instance_group [ { kind: KIND_GPU gpus: [ -1 ] } ]"#).unwrap();
        assert!(instance_devices(&bad).unwrap_err().contains("GPU -1"));
    }

    #[test]
    fn the_delay_policy_is_the_servers_unless_the_model_picks_one() {
        let base = r#"name: "m" max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 500 }"#;
        let policy = |text: &str, server| batching(text, server).unwrap().unwrap().delay_policy;
        assert_eq!(policy(base, DelayPolicy::Adaptive), DelayPolicy::Adaptive);
        assert_eq!(policy(base, DelayPolicy::Fixed), DelayPolicy::Fixed);
        let fixed = format!(r#"{base} parameters {{ key: "queue_delay_policy" value: {{ string_value: "fixed" }} }}"#);
        assert_eq!(policy(&fixed, DelayPolicy::Adaptive), DelayPolicy::Fixed);
        let bad = format!(r#"{base} parameters {{ key: "queue_delay_policy" value: {{ string_value: "soon" }} }}"#);
        let e = batching(&bad, DelayPolicy::Adaptive).unwrap_err();
        assert!(e.contains("queue_delay_policy") && e.contains("'soon'"), "{e}");
    }
}
