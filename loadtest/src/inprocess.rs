//! The compute ceiling: the same model on its backend (ONNX Runtime or
//! LibTorch), called directly in a loop at a fixed batch size, with no
//! server in between.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quiver_engine::load::{accelerators, instance_devices};
use quiver_engine::repository::{model_config, read_config};
use quiver_runtimes::registry;
use quiver_runtimes::{InputBatch, LoadRequest, Settings};

use crate::run::Measured;
use crate::workload::{InputSpec, raw_data};

/// Loads `model` (a model file in a Triton-layout version folder, whose
/// model folder may hold a config.pbtxt) the way the server would: the
/// backend the config names or the file's extension says, the config's
/// inputs and outputs, `intra_op_threads` threads.
pub fn run(
    settings: &Settings,
    model: &Path,
    batch: usize,
    intra_op_threads: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let version_dir = model.parent().unwrap_or(Path::new("."));
    let model_dir = version_dir.parent().unwrap_or(Path::new("."));
    let (config, _) = read_config(model_dir).map_err(anyhow::Error::msg)?;
    let file_name = model.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let backend = match registry::find(&config.platform, &config.backend).map_err(anyhow::Error::msg)? {
        Some(b) => b,
        None => registry::detect(version_dir, file_name)
            .ok_or_else(|| anyhow::anyhow!("no backend takes {}", model.display()))?,
    };
    let declared = model_config::declared_io(&config).map_err(anyhow::Error::msg)?;
    let parameters: BTreeMap<String, String> = config
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.string_value.clone()))
        .collect();
    // The device and providers of the config's first instance, as the
    // server would place it: the ceiling of the same provider.
    let device = instance_devices(&config).map_err(anyhow::Error::msg)?[0];
    let accelerators = accelerators(&config);
    eprintln!("in-process: {} on {device:?}", config.name);
    let warn = |m: &str| eprintln!("warning: {m}");
    let request = LoadRequest {
        model: &config.name,
        file: model,
        declared: &declared,
        parameters: &parameters,
        intra_op_threads,
        inter_op_threads: 1,
        graph_level: 0,
        device,
        accelerators: &accelerators,
        settings,
        warn: &warn,
    };
    let mut session = backend.load(settings, &request)?;
    let specs: Vec<InputSpec> = session
        .io()
        .inputs
        .iter()
        .map(|t| InputSpec {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_owned(),
            shape: t
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d >= 0 {
                        d
                    } else if i == 0 {
                        batch as i64
                    } else {
                        1
                    }
                })
                .collect(),
        })
        .collect();
    let data: Vec<bytes::Bytes> = specs.iter().enumerate().map(|(i, s)| raw_data(s, i as u64)).collect();
    let inputs: Vec<InputBatch<'_>> = specs
        .iter()
        .zip(&data)
        .map(|(s, d)| InputBatch {
            name: &s.name,
            datatype: quiver_runtimes::DataType::parse(&s.datatype).expect("datatype from the model"),
            shape: s.shape.clone(),
            parts: vec![d],
        })
        .collect();
    // On a thread of its own, as the server's instance threads run a model:
    // LibTorch keeps per-thread state (its thread-pool settings, its
    // allocator caches), so the ceiling is measured where the server runs.
    let m = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let measure_from = Instant::now() + warmup;
                let end = measure_from + duration;
                let mut m = Measured::new();
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let result = session.run(&inputs, &[]).map(|_| ()).map_err(|e| e.to_string());
                    if t0 >= measure_from {
                        m.record(t0.elapsed(), result);
                    }
                }
                m
            })
            .join()
            .expect("the measuring thread does not panic")
    });
    let mut m = m;
    m.elapsed = duration;
    Ok(m)
}
