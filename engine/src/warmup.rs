//! Warm-up: the runs a version gets on every instance before it becomes
//! READY, so its first real requests do not pay for a backend's lazy
//! allocations, and a model that loads but cannot run never takes traffic.
//!
//! Triton's `model_warmup` samples are honoured (zero, random or file data,
//! `batch_size`, `count`), and one that fails fails the load, as in Triton.
//! A model without any gets one run on zeros of every declared input shape
//! (variable dims as 1, batch 1), unless `--no-default-warmup` turns that off.
//! On a GPU it gets a second run at `max_batch_size`, so that TensorRT builds
//! its engine for the batch sizes the batcher will send and cuDNN's algorithm
//! search happens here, not on a client's request.
//!
//! The default run is quiver's guess, not the operator's request: zeros are
//! not a valid input to every model (a shape, index or length input, ONNX's
//! `Expand` with a zero target shape), and Triton, which runs no warm-up it
//! was not given, serves such models. So a default run that fails is a
//! warning with the reason and the version loads anyway.
use std::path::Path;

use bytes::Bytes;
use quiver_proto::inference::ModelConfig;
use quiver_proto::inference::model_warmup::input::InputDataType;
use quiver_runtimes::{DataType, InputBatch, Runtime, RuntimeError, Tensor, element_count};

use super::repository::model_config::ModelSpec;

/// One warm-up request and how many times to run it.
pub struct Sample {
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub runs: u32,
    /// quiver's default zeros rather than the config's `model_warmup`: its
    /// failure does not fail the load.
    pub default: bool,
}

/// The warm-up samples of a version; `version_dir` holds the `warmup/`
/// folder that `input_data_file` names are relative to, as in Triton.
/// `on_gpu`: some instance runs on a GPU. A default sample that cannot be
/// made (an input too large to fill) is left out with a warning.
pub fn samples(
    config: &ModelConfig,
    spec: &ModelSpec,
    version_dir: &Path,
    default: bool,
    on_gpu: bool,
    warn: &dyn Fn(&str),
) -> Result<Vec<Sample>, String> {
    let batching = spec.max_batch_size > 0;
    if config.model_warmup.is_empty() {
        if !default {
            return Ok(Vec::new());
        }
        let zeros_at = |batch: usize| {
            spec.inputs
                .iter()
                .filter(|i| !i.optional)
                .map(|i| {
                    let dims = i.dims.iter().map(|&d| if d < 0 { 1 } else { d });
                    let shape: Vec<i64> = if batching {
                        std::iter::once(batch as i64).chain(dims).collect()
                    } else {
                        dims.collect()
                    };
                    zeros(&i.name, i.datatype, shape)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut batches = vec![1];
        if on_gpu && spec.max_batch_size > 1 {
            batches.push(spec.max_batch_size);
        }
        let samples = batches
            .into_iter()
            .filter_map(|batch| match zeros_at(batch) {
                Ok(inputs) => Some(Sample {
                    name: match batch {
                        1 => "default (zeros)".into(),
                        n => format!("default (zeros, batch {n})"),
                    },
                    inputs,
                    runs: 1,
                    default: true,
                }),
                Err(e) => {
                    warn(&format!("default warm-up left out: {e}"));
                    None
                }
            })
            .collect();
        return Ok(samples);
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    config
        .model_warmup
        .iter()
        .map(|w| {
            let what = |input: &str| format!("model_warmup '{}' input '{input}'", w.name);
            if batching && w.batch_size as usize > spec.max_batch_size {
                return Err(format!(
                    "model_warmup '{}': batch_size {} is over max_batch_size {}",
                    w.name, w.batch_size, spec.max_batch_size
                ));
            }
            // Inputs in the model's order, so every run sees the same layout.
            let mut names: Vec<&String> = w.inputs.keys().collect();
            names.sort_by_key(|n| spec.inputs.iter().position(|i| &i.name == *n));
            let mut inputs = Vec::with_capacity(names.len());
            for name in names {
                let input = &w.inputs[name];
                let io = spec
                    .inputs
                    .iter()
                    .find(|i| &i.name == name)
                    .ok_or_else(|| format!("{}: the model has no such input", what(name)))?;
                let datatype = DataType::from_config_code(input.data_type)
                    .ok_or_else(|| format!("{}: data_type {} is not a datatype", what(name), input.data_type))?;
                if datatype != io.datatype {
                    return Err(format!(
                        "{}: {datatype}, but the model takes {}",
                        what(name),
                        io.datatype
                    ));
                }
                if input.dims.iter().any(|&d| d < 0) {
                    return Err(format!("{}: dims {:?} must all be fixed", what(name), input.dims));
                }
                let shape: Vec<i64> = if batching {
                    std::iter::once(i64::from(w.batch_size.max(1)))
                        .chain(input.dims.iter().copied())
                        .collect()
                } else {
                    input.dims.clone()
                };
                let tensor = match &input.input_data_type {
                    None | Some(InputDataType::ZeroData(_)) => zeros(name, datatype, shape)?,
                    Some(InputDataType::RandomData(_)) => random(name, datatype, shape, &mut seed)?,
                    Some(InputDataType::InputDataFile(file)) => {
                        from_file(name, datatype, shape, &version_dir.join("warmup").join(file))
                            .map_err(|e| format!("{}: {e}", what(name)))?
                    }
                };
                inputs.push(tensor);
            }
            Ok(Sample {
                name: w.name.clone(),
                inputs,
                runs: w.count.max(1),
                default: false,
            })
        })
        .collect()
}

/// Warms every instance with every sample. A configured sample that fails
/// fails the load. A default one that fails is reported through `warn` and
/// skipped on the remaining instances (they hold the same model: it would
/// fail again), unless the model's answer did not fit its config, which no
/// input would change.
pub fn warm(runtimes: &mut [Box<dyn Runtime>], samples: &[Sample], warn: &dyn Fn(&str)) -> Result<(), String> {
    let mut skipped = vec![false; samples.len()];
    for runtime in runtimes {
        for (s, skip) in samples.iter().zip(skipped.iter_mut()) {
            if *skip {
                continue;
            }
            match run(runtime.as_mut(), s) {
                Ok(()) => {}
                Err(e) if s.default && !matches!(e, RuntimeError::Interface(_)) => {
                    warn(&format!(
                        "warm-up '{}' failed: {e}; the version serves without it (zeros are not a valid \
                         input to every model; give it a model_warmup, or turn the default off with \
                         --no-default-warmup)",
                        s.name
                    ));
                    *skip = true;
                }
                Err(e) => return Err(format!("warm-up '{}' failed: {e}", s.name)),
            }
        }
    }
    Ok(())
}

/// Runs one sample on one instance's runtime.
fn run(runtime: &mut dyn Runtime, s: &Sample) -> Result<(), RuntimeError> {
    let batch: Vec<InputBatch<'_>> = s.inputs.iter().map(InputBatch::single).collect();
    for _ in 0..s.runs {
        runtime.run(&batch, &[])?;
    }
    Ok(())
}

/// The largest warm-up input, in bytes: a config asking for more is a mistake.
pub const MAX_SAMPLE_BYTES: usize = 1 << 30;

fn elements(name: &str, shape: &[i64]) -> Result<usize, String> {
    element_count(shape)
        .filter(|n| n.saturating_mul(8) <= MAX_SAMPLE_BYTES)
        .ok_or_else(|| format!("warm-up input '{name}': shape {shape:?} is too large"))
}

fn tensor(name: &str, datatype: DataType, shape: Vec<i64>, data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.to_owned(),
        datatype,
        shape,
        data: Bytes::from(data),
    }
}

/// Zeros; for BYTES, empty strings (a 4-byte length of 0 each).
fn zeros(name: &str, datatype: DataType, shape: Vec<i64>) -> Result<Tensor, String> {
    let n = elements(name, &shape)?;
    let len = n * datatype.size().unwrap_or(4);
    Ok(tensor(name, datatype, shape, vec![0; len]))
}

/// Random values that every model can take: floats in [0, 1), booleans 0 or
/// 1, integers of any bit pattern, and (as Triton does) empty strings for BYTES.
fn random(name: &str, datatype: DataType, shape: Vec<i64>, seed: &mut u64) -> Result<Tensor, String> {
    let n = elements(name, &shape)?;
    let mut next = || {
        // xorshift64*: deterministic, so a warm-up failure reproduces.
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let unit = |r: u64| (r >> 11) as f64 / (1u64 << 53) as f64;
    let mut data = Vec::with_capacity(n * datatype.size().unwrap_or(4));
    for _ in 0..n {
        let r = next();
        match datatype {
            DataType::Bytes => data.extend_from_slice(&0u32.to_le_bytes()),
            DataType::Bool => data.push((r & 1) as u8),
            DataType::Fp16 => data.extend_from_slice(&half::f16::from_f64(unit(r)).to_le_bytes()),
            DataType::Bf16 => data.extend_from_slice(&half::bf16::from_f64(unit(r)).to_le_bytes()),
            DataType::Fp32 => data.extend_from_slice(&(unit(r) as f32).to_le_bytes()),
            DataType::Fp64 => data.extend_from_slice(&unit(r).to_le_bytes()),
            other => data.extend_from_slice(&r.to_le_bytes()[..other.size().unwrap_or(8)]),
        }
    }
    Ok(tensor(name, datatype, shape, data))
}

/// The file's bytes as the tensor's raw data; for BYTES, the whole file is
/// every element.
fn from_file(name: &str, datatype: DataType, shape: Vec<i64>, path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let n = elements(name, &shape)?;
    let data = match datatype.size() {
        None => {
            let len = u32::try_from(bytes.len()).map_err(|_| format!("{} is over 4 GiB", path.display()))?;
            let mut data = Vec::with_capacity(n * (4 + bytes.len()));
            for _ in 0..n {
                data.extend_from_slice(&len.to_le_bytes());
                data.extend_from_slice(&bytes);
            }
            data
        }
        Some(size) => {
            let want = n * size;
            if bytes.len() < want {
                return Err(format!(
                    "{} holds {} bytes; shape {shape:?} of {datatype} needs {want}",
                    path.display(),
                    bytes.len()
                ));
            }
            bytes[..want].to_vec()
        }
    };
    Ok(tensor(name, datatype, shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::model_config;
    use quiver_runtimes::{ModelIo, TensorSpec};

    fn spec_and_config(extra: &str) -> (ModelSpec, ModelConfig) {
        let mut config = model_config::parse(&format!(
            r#"name: "m" max_batch_size: 4
               input [ {{ name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] }},
                       {{ name: "s" data_type: TYPE_STRING dims: [ 1 ] }} ]
               output [ {{ name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] }} ]
               {extra}"#
        ))
        .unwrap();
        let t = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype,
            shape,
        };
        let io = ModelIo {
            inputs: vec![
                t("x", DataType::Fp32, vec![-1, -1, 3]),
                t("s", DataType::Bytes, vec![-1, 1]),
            ],
            outputs: vec![t("y", DataType::Fp32, vec![-1, -1, 3])],
        };
        let spec = model_config::complete(&mut config, "m", ("onnxruntime_onnx", "onnxruntime"), &io, 4).unwrap();
        (spec, config)
    }

    #[test]
    fn default_sample_is_zeros_of_every_input_with_variable_dims_as_one() {
        let (spec, config) = spec_and_config("");
        let s = samples(&config, &spec, Path::new("."), true, false, &|_| {}).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].inputs[0].shape, vec![1, 1, 3]);
        assert_eq!(s[0].inputs[0].data.len(), 12);
        assert_eq!(s[0].inputs[1].data.as_ref(), &[0, 0, 0, 0]);
        assert!(
            samples(&config, &spec, Path::new("."), false, false, &|_| {})
                .unwrap()
                .is_empty()
        );
        // On a GPU, a second run at the largest batch the batcher will form.
        let s = samples(&config, &spec, Path::new("."), true, true, &|_| {}).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].inputs[0].shape, vec![4, 1, 3]);
        assert_eq!(s[1].inputs[1].shape, vec![4, 1]);
    }

    #[test]
    fn configured_samples_follow_batch_size_count_and_data_kind() {
        let (spec, config) = spec_and_config(
            r#"model_warmup [ { name: "w" batch_size: 2 count: 3
                 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 5, 3 ] random_data: true } }
                 inputs { key: "s" value: { data_type: TYPE_STRING dims: [ 1 ] zero_data: true } } } ]"#,
        );
        let s = samples(&config, &spec, Path::new("."), true, false, &|_| {}).unwrap();
        assert_eq!(s[0].runs, 3);
        let x = &s[0].inputs[0];
        assert_eq!(x.shape, vec![2, 5, 3]);
        let values: Vec<f32> = x
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)), "{values:?}");
        assert_eq!(s[0].inputs[1].shape, vec![2, 1]);
    }

    #[test]
    fn a_failed_default_run_warns_once_and_a_failed_configured_run_fails_the_load() {
        use quiver_runtimes::mock::{Echo, Fail};
        let (spec, config) = spec_and_config("");
        let defaults = samples(&config, &spec, Path::new("."), true, false, &|_| {}).unwrap();
        let io = || ModelIo {
            inputs: vec![],
            outputs: vec![],
        };
        let mut runtimes: Vec<Box<dyn Runtime>> = vec![
            Box::new(Fail::new(io(), "invalid expand shape")),
            Box::new(Fail::new(io(), "again")),
        ];
        let warnings = std::cell::RefCell::new(Vec::new());
        let warn = |m: &str| warnings.borrow_mut().push(m.to_owned());
        warm(&mut runtimes, &defaults, &warn).unwrap();
        // Once, with the reason; the second instance is not tried.
        let warnings = warnings.into_inner();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("invalid expand shape"), "{warnings:?}");

        let (spec, config) = spec_and_config(
            r#"model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1, 3 ] zero_data: true } } } ]"#,
        );
        let configured = samples(&config, &spec, Path::new("."), true, false, &|_| {}).unwrap();
        let mut runtimes: Vec<Box<dyn Runtime>> = vec![Box::new(Echo::new(io())), Box::new(Fail::new(io(), "boom"))];
        let e = warm(&mut runtimes, &configured, &|_| {}).unwrap_err();
        assert!(e.contains("warm-up 'w' failed: ") && e.contains("boom"), "{e}");
    }

    #[test]
    fn bad_samples_name_what_is_wrong() {
        let (spec, config) = spec_and_config(
            r#"model_warmup [ { name: "w" batch_size: 9 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1, 3 ] zero_data: true } } } ]"#,
        );
        let e = samples(&config, &spec, Path::new("."), true, false, &|_| {})
            .err()
            .unwrap();
        assert!(e.contains("batch_size 9"), "{e}");
        let (spec, config) = spec_and_config(
            r#"model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1, 3 ] input_data_file: "nope" } } } ]"#,
        );
        let e = samples(&config, &spec, Path::new("/nonexistent"), true, false, &|_| {})
            .err()
            .unwrap();
        assert!(e.contains("'x'") && e.contains("warmup/nope"), "{e}");
    }
}
