//! `config.pbtxt`: parsing Triton's protobuf text format, completing a
//! missing or name-only config from the model file, and turning the result
//! into the [`ModelSpec`] the engine validates requests against.
use prost_reflect::{DynamicMessage, SerializeOptions};
use quiver_proto::inference::model_version_policy::PolicyChoice;
use quiver_proto::inference::{ModelConfig, ModelInput, ModelOutput, ModelVersionPolicy};
use quiver_runtimes::{DataType, ModelIo, TensorSpec};

/// One input or output as requests must send it: dims exclude the batch dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub datatype: DataType,
    pub dims: Vec<i64>,
    pub optional: bool,
}

/// What the engine needs to know about a model version to check a request.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub platform: String,
    /// 0: the model has no batch dimension; requests match `dims` exactly.
    pub max_batch_size: usize,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// BYTES inputs must be valid UTF-8 (the runtime's string tensors need it).
    pub utf8_strings: bool,
}

impl ModelSpec {
    /// Full shape as model metadata reports it: `-1` leads for the batch dimension.
    pub fn metadata_shape(&self, io: &IoSpec) -> Vec<i64> {
        if self.max_batch_size > 0 {
            std::iter::once(-1).chain(io.dims.iter().copied()).collect()
        } else {
            io.dims.clone()
        }
    }
}

fn descriptor() -> prost_reflect::MessageDescriptor {
    quiver_proto::descriptor_pool()
        .get_message_by_name("inference.ModelConfig")
        .expect("ModelConfig is in the descriptor set")
}

/// Parses `config.pbtxt` (protobuf text format against Triton's schema).
pub fn parse(text: &str) -> Result<ModelConfig, String> {
    let text = colon_before_lists(text);
    let message = DynamicMessage::parse_text_format(descriptor(), &text).map_err(|e| format!("config.pbtxt: {e}"))?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|e| format!("config.pbtxt: {e}"))
}

/// Parses Triton's load parameter `config`: a `ModelConfig` as JSON, with
/// proto field names (as the config endpoint prints it) or JSON names.
pub fn from_json(text: &str) -> Result<ModelConfig, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(descriptor(), &mut de).map_err(|e| format!("parameter 'config': {e}"))?;
    de.end().map_err(|e| format!("parameter 'config': {e}"))?;
    message
        .transcode_to::<ModelConfig>()
        .map_err(|e| format!("parameter 'config': {e}"))
}

/// Google's text-format parser (which Triton uses) accepts a list of
/// messages without a colon, `input [ { ... } ]`, and almost every Triton
/// config is written that way; prost-reflect's parser wants `input: [ ... ]`.
/// This inserts the colon between a field name and `[`, outside strings and
/// comments, and changes nothing else.
fn colon_before_lists(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut changed = false;
    let mut last_significant = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
                last_significant = c;
                continue;
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
                continue;
            }
            '[' if last_significant.is_ascii_alphanumeric() || last_significant == '_' => {
                out.push_str(": ");
                changed = true;
            }
            _ => {}
        }
        out.push(c);
        if !c.is_whitespace() {
            last_significant = c;
        }
    }
    if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The configuration as JSON, the way Triton's config endpoint prints it:
/// proto field names, every field present, 64-bit integers as numbers.
pub fn to_json(config: &ModelConfig) -> Result<serde_json::Value, String> {
    let mut message = DynamicMessage::new(descriptor());
    message
        .transcode_from(config)
        .expect("ModelConfig transcodes to its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("cannot write the config as JSON: {e}"))
}

/// The inputs and outputs `config.pbtxt` declares, shaped as a backend sees
/// them: the batch dimension leads as -1 when the model batches.
pub fn declared_io(config: &ModelConfig) -> Result<ModelIo, String> {
    let shape = |dims: &[i64]| -> Vec<i64> {
        if config.max_batch_size > 0 {
            std::iter::once(-1).chain(dims.iter().copied()).collect()
        } else {
            dims.to_vec()
        }
    };
    let spec = |name: &str, code: i32, dims: &[i64], what: &str| -> Result<TensorSpec, String> {
        Ok(TensorSpec {
            name: name.to_owned(),
            datatype: datatype_of(code, &format!("{what} '{name}'"))?,
            shape: shape(dims),
        })
    };
    Ok(ModelIo {
        inputs: config
            .input
            .iter()
            .map(|i| spec(&i.name, i.data_type, &i.dims, "input"))
            .collect::<Result<_, _>>()?,
        outputs: config
            .output
            .iter()
            .map(|o| spec(&o.name, o.data_type, &o.dims, "output"))
            .collect::<Result<_, _>>()?,
    })
}

fn datatype_of(code: i32, what: &str) -> Result<DataType, String> {
    DataType::from_config_code(code).ok_or_else(|| format!("{what}: data_type {code} is not a datatype quiver serves"))
}

/// Completes `config` from the model file's declared inputs and outputs and
/// checks that the two agree; the error says which tensor disagrees and how.
///
/// A config with no inputs and outputs (no `config.pbtxt`, or one holding only
/// a name, as Seldon Core 2 writes) takes them from the model. Its batch
/// dimension is then inferred: when every input and output starts with a
/// variable dimension, dim 0 is the batch and `max_batch_size` becomes
/// `default_max_batch_size`; otherwise the model does not batch.
pub fn complete(
    config: &mut ModelConfig,
    dir_name: &str,
    (platform, backend): (&str, &str),
    io: &ModelIo,
    default_max_batch_size: i32,
) -> Result<ModelSpec, String> {
    if config.name.is_empty() {
        config.name = dir_name.to_owned();
    } else if config.name != dir_name {
        return Err(format!(
            "config.pbtxt names the model '{}' but its folder is '{dir_name}'",
            config.name
        ));
    }
    // The backend was chosen by these names or by the model file: record
    // both names, as Triton's completed config does.
    config.platform = platform.into();
    config.backend = backend.into();
    if config.max_batch_size < 0 {
        return Err(format!(
            "max_batch_size is {}, it must be 0 or more",
            config.max_batch_size
        ));
    }
    let auto_io = config.input.is_empty() && config.output.is_empty();
    if auto_io && config.max_batch_size == 0 {
        let batchable = io
            .inputs
            .iter()
            .chain(&io.outputs)
            .all(|t| t.shape.first() == Some(&-1));
        if batchable {
            config.max_batch_size = default_max_batch_size;
        }
    }
    let batch = config.max_batch_size > 0;
    let max_batch = config.max_batch_size;
    let strip = |spec: &TensorSpec| -> Vec<i64> {
        if batch {
            spec.shape.iter().skip(1).copied().collect()
        } else {
            spec.shape.clone()
        }
    };
    if config.input.is_empty() {
        config.input = io
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.config_code(),
                dims: strip(t),
                ..Default::default()
            })
            .collect();
    }
    if config.output.is_empty() {
        config.output = io
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.config_code(),
                dims: strip(t),
                ..Default::default()
            })
            .collect();
    }
    if config.version_policy.is_none() {
        config.version_policy = Some(ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(Default::default())),
        });
    }
    if config.instance_group.is_empty() {
        config.instance_group.push(quiver_proto::inference::ModelInstanceGroup {
            name: config.name.clone(),
            count: 1,
            kind: 2, // KIND_CPU: the only kind this build runs
            ..Default::default()
        });
    }

    let inputs = config
        .input
        .iter()
        .map(|c| {
            let what = format!("input '{}'", c.name);
            let spec = IoSpec {
                name: c.name.clone(),
                datatype: datatype_of(c.data_type, &what)?,
                dims: c.dims.clone(),
                optional: c.optional,
            };
            check_against_model(&spec, io.inputs.iter().find(|t| t.name == c.name), max_batch, &what)?;
            Ok(spec)
        })
        .collect::<Result<Vec<_>, String>>()?;
    for t in &io.inputs {
        if !inputs.iter().any(|i| i.name == t.name) {
            return Err(format!("the model's input '{}' is missing from config.pbtxt", t.name));
        }
    }
    let outputs = config
        .output
        .iter()
        .map(|c| {
            let what = format!("output '{}'", c.name);
            let spec = IoSpec {
                name: c.name.clone(),
                datatype: datatype_of(c.data_type, &what)?,
                dims: c.dims.clone(),
                optional: false,
            };
            check_against_model(&spec, io.outputs.iter().find(|t| t.name == c.name), max_batch, &what)?;
            Ok(spec)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ModelSpec {
        name: config.name.clone(),
        platform: config.platform.clone(),
        max_batch_size: config.max_batch_size as usize,
        inputs,
        outputs,
        utf8_strings: false,
    })
}

fn check_against_model(spec: &IoSpec, model: Option<&TensorSpec>, max_batch: i32, what: &str) -> Result<(), String> {
    let model = model.ok_or_else(|| format!("{what} in config.pbtxt is not in the model file"))?;
    let batch = max_batch > 0;
    // A batch dimension the model file fixes would fail whole batches at run
    // time; refuse it at load instead (a fixed 1 is fine with batches of 1).
    if batch
        && let Some(&d0) = model.shape.first()
        && d0 >= 0
        && !(d0 == 1 && max_batch == 1)
    {
        return Err(format!(
            "{what}: the model file fixes the first dimension at {d0}, so it cannot be a batch dimension \
             (max_batch_size {max_batch}); set max_batch_size: 0 and give the full shape in dims"
        ));
    }
    if model.datatype != spec.datatype {
        return Err(format!(
            "{what}: config.pbtxt says {}, the model file says {}",
            spec.datatype, model.datatype
        ));
    }
    let expected_rank = spec.dims.len() + usize::from(batch);
    if model.shape.len() != expected_rank {
        return Err(format!(
            "{what}: the model file has shape {:?} (rank {}), config.pbtxt dims {:?}{} make rank {expected_rank}",
            model.shape,
            model.shape.len(),
            spec.dims,
            if batch { " plus the batch dimension" } else { "" }
        ));
    }
    let model_dims = &model.shape[usize::from(batch)..];
    for (i, (&c, &m)) in spec.dims.iter().zip(model_dims).enumerate() {
        if m >= 0 && c >= 0 && c != m {
            return Err(format!(
                "{what}: dim {i} is {c} in config.pbtxt but {m} in the model file"
            ));
        }
    }
    Ok(())
}

/// Which of the versions found on disk the policy serves.
pub fn select_versions(policy: Option<&ModelVersionPolicy>, mut available: Vec<u64>) -> Vec<u64> {
    available.sort_unstable();
    match policy.and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => available,
        Some(PolicyChoice::Specific(s)) => available
            .into_iter()
            .filter(|v| s.versions.iter().any(|w| u64::try_from(*w) == Ok(*v)))
            .collect(),
        Some(PolicyChoice::Latest(l)) => {
            let n = (l.num_versions.max(1)) as usize;
            available.split_off(available.len().saturating_sub(n))
        }
        None => available.split_off(available.len().saturating_sub(1)),
    }
}

/// A string parameter of the config (`parameters { key: ... value: { string_value: ... } }`).
pub fn parameter<'a>(config: &'a ModelConfig, key: &str) -> Option<&'a str> {
    config.parameters.get(key).map(|p| p.string_value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn onnx() -> (&'static str, &'static str) {
        ("onnxruntime_onnx", "onnxruntime")
    }

    #[test]
    fn declared_io_leads_with_the_batch_dimension() {
        let c = parse(
            r#"name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP16 dims: [ 4 ] } ] output [ { name: "y" data_type: TYPE_BOOL dims: [ 2, 2 ] } ]"#,
        )
        .unwrap();
        let io = declared_io(&c).unwrap();
        assert_eq!(io.inputs[0].shape, vec![-1, 4]);
        assert_eq!(io.inputs[0].datatype, DataType::Fp16);
        assert_eq!(io.outputs[0].shape, vec![-1, 2, 2]);
        let mut c = c;
        c.max_batch_size = 0;
        assert_eq!(declared_io(&c).unwrap().inputs[0].shape, vec![4]);
        c.input[0].data_type = 99;
        assert!(declared_io(&c).unwrap_err().contains("input 'x'"));
    }

    fn io() -> ModelIo {
        ModelIo {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 4],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 3],
            }],
        }
    }

    #[test]
    fn parses_triton_text_format() {
        let c = parse(
            r#"name: "m" platform: "onnxruntime_onnx" max_batch_size: 8
               input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
               output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
               version_policy: { specific: { versions: [1, 3] } }
               instance_group [ { count: 2 kind: KIND_CPU } ]
               dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
               parameters { key: "intra_op_thread_count" value: { string_value: "2" } }"#,
        )
        .unwrap();
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input[0].dims, vec![4]);
        assert_eq!(c.instance_group[0].count, 2);
        assert_eq!(parameter(&c, "intra_op_thread_count"), Some("2"));
        assert_eq!(select_versions(c.version_policy.as_ref(), vec![3, 2, 1]), vec![1, 3]);
    }

    #[test]
    fn colon_is_optional_before_lists_but_strings_are_untouched() {
        let c = parse("name: \"a[b\" # comment input [\n input [ { name: \"x\" dims [ 4 ] } ]").unwrap();
        assert_eq!(c.name, "a[b");
        assert_eq!(c.input[0].dims, vec![4]);
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let err = parse("name: \"m\" sequence_batching { }").unwrap_err();
        assert!(err.contains("sequence_batching"), "{err}");
    }

    #[test]
    fn name_only_config_is_completed_with_a_batch_dimension() {
        let mut c = parse("name: \"m\"").unwrap();
        let spec = complete(&mut c, "m", onnx(), &io(), 4).unwrap();
        assert_eq!(spec.max_batch_size, 4);
        assert_eq!(spec.inputs[0].dims, vec![4]);
        assert_eq!(spec.outputs[0].dims, vec![3]);
        assert_eq!(
            (c.platform.as_str(), c.backend.as_str()),
            ("onnxruntime_onnx", "onnxruntime")
        );
    }

    #[test]
    fn fixed_leading_dim_means_no_batching() {
        let mut io = io();
        io.inputs[0].shape = vec![2, 4];
        let spec = complete(&mut ModelConfig::default(), "m", onnx(), &io, 4).unwrap();
        assert_eq!(spec.max_batch_size, 0);
        assert_eq!(spec.inputs[0].dims, vec![2, 4]);
    }

    #[test]
    fn config_disagreeing_with_model_is_rejected() {
        let mut c =
            parse(r#"name: "m" max_batch_size: 2 input [ { name: "x" data_type: TYPE_INT32 dims: [ 4 ] } ]"#).unwrap();
        let err = complete(&mut c, "m", onnx(), &io(), 4).unwrap_err();
        assert!(err.contains("input 'x'") && err.contains("INT32"), "{err}");
        let mut c = parse(r#"name: "other""#).unwrap();
        assert!(complete(&mut c, "m", onnx(), &io(), 4).unwrap_err().contains("'other'"));
    }

    #[test]
    fn json_override_round_trips_the_config_endpoint() {
        let c =
            parse(r#"name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]"#).unwrap();
        let back = from_json(&to_json(&c).unwrap().to_string()).unwrap();
        assert_eq!(back, c);
        let e = from_json(r#"{"name": "m", "max_batch_sise": 1}"#).unwrap_err();
        assert!(e.contains("max_batch_sise"), "{e}");
    }

    #[test]
    fn a_fixed_first_dimension_cannot_batch() {
        let mut io = io();
        io.inputs[0].shape = vec![2, 4];
        let mut c =
            parse(r#"name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]"#).unwrap();
        let e = complete(&mut c, "m", onnx(), &io, 4).unwrap_err();
        assert!(
            e.contains("input 'x'") && e.contains("fixes the first dimension at 2"),
            "{e}"
        );
        io.inputs[0].shape = vec![1, 4];
        io.outputs[0].shape = vec![1, 3];
        let mut c = parse(r#"name: "m" max_batch_size: 1"#).unwrap();
        c.input = vec![ModelInput {
            name: "x".into(),
            data_type: 11,
            dims: vec![4],
            ..Default::default()
        }];
        assert!(
            complete(&mut c, "m", onnx(), &io, 4).is_ok(),
            "a fixed 1 with batches of 1"
        );
    }

    #[test]
    fn version_policies() {
        let latest2 = parse("version_policy: { latest: { num_versions: 2 } }").unwrap();
        assert_eq!(
            select_versions(latest2.version_policy.as_ref(), vec![1, 5, 3]),
            vec![3, 5]
        );
        let all = parse("version_policy: { all: {} }").unwrap();
        assert_eq!(select_versions(all.version_policy.as_ref(), vec![2, 1]), vec![1, 2]);
        assert_eq!(select_versions(None, vec![2, 7, 1]), vec![7]);
        assert_eq!(select_versions(None, vec![]), Vec::<u64>::new());
    }

    #[test]
    fn json_uses_proto_names_and_numbers() {
        let c =
            parse(r#"name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]"#).unwrap();
        let j = to_json(&c).unwrap();
        assert_eq!(j["max_batch_size"], 8);
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["input"][0]["dims"][0], 4);
    }
}
