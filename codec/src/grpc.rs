//! `ModelInferRequest` / `ModelInferResponse` <-> engine requests. Raw input
//! contents are taken as `Bytes` slices of the message buffer; typed contents
//! are packed into little-endian bytes once. Outputs always travel in
//! `raw_output_contents`, the only form `tritonclient.grpc` decodes.
use bytes::Bytes;
use quiver_proto::inference::infer_parameter::ParameterChoice;
use quiver_proto::inference::model_infer_response::InferOutputTensor;
use quiver_proto::inference::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};
use quiver_runtimes::{DataType, Tensor};

use quiver_engine::codec::elements;
use quiver_engine::error::{Error, Result};
use quiver_engine::request::{InferRequest, InferResponse, ParamValue, Parameters, RequestedOutput, ShmRef};

fn parameters(map: std::collections::HashMap<String, InferParameter>) -> Parameters {
    Parameters(
        map.into_iter()
            .filter_map(|(k, v)| {
                let p = match v.parameter_choice? {
                    ParameterChoice::BoolParam(b) => ParamValue::Bool(b),
                    ParameterChoice::Int64Param(i) => ParamValue::Int(i),
                    ParameterChoice::Uint64Param(u) => ParamValue::Uint(u),
                    ParameterChoice::DoubleParam(d) => ParamValue::Double(d),
                    ParameterChoice::StringParam(s) => ParamValue::String(s),
                };
                Some((k, p))
            })
            .collect(),
    )
}

pub fn decode_request(msg: ModelInferRequest) -> Result<InferRequest> {
    let raw = msg.raw_input_contents;
    // Inputs in shared memory have no entry in raw_input_contents: the
    // others take theirs in order.
    let in_memory = msg
        .inputs
        .iter()
        .filter(|i| !i.parameters.contains_key("shared_memory_region"))
        .count();
    if !raw.is_empty() && raw.len() != in_memory {
        return Err(Error::invalid(format!(
            "raw_input_contents has {} entries for {in_memory} inputs not in shared memory; \
             send one per such input, in order",
            raw.len(),
        )));
    }
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    let mut shared_memory = Vec::new();
    let mut next_raw = 0;
    for input in msg.inputs {
        let name = input.name;
        let datatype = DataType::parse(&input.datatype)
            .ok_or_else(|| Error::invalid(format!("input '{name}': unknown datatype '{}'", input.datatype)))?;
        let what = format!("input '{name}'");
        if let Some(shm) = ShmRef::from_parameters(&what, &parameters(input.parameters))? {
            let sent = input.contents.as_ref().is_some_and(has_any);
            shm.push_input((name, datatype, input.shape), sent, &mut inputs, &mut shared_memory)?;
            continue;
        }
        let i = next_raw;
        next_raw += 1;
        let data = match (raw.get(i), input.contents) {
            (Some(_), Some(c)) if has_any(&c) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has both typed contents and raw_input_contents; send one"
                )));
            }
            (Some(bytes), _) => bytes.clone(),
            (None, Some(contents)) => pack(&name, datatype, contents)?,
            (None, None) => return Err(Error::invalid(format!("input '{name}' has no contents"))),
        };
        let tensor = Tensor {
            name,
            datatype,
            shape: input.shape,
            data,
        };
        inputs.push(tensor);
    }
    Ok(InferRequest {
        model_name: msg.model_name,
        model_version: Some(msg.model_version).filter(|v| !v.is_empty()),
        id: msg.id,
        parameters: parameters(msg.parameters),
        inputs,
        outputs: msg
            .outputs
            .into_iter()
            .map(|o| {
                let params = parameters(o.parameters);
                Ok(RequestedOutput {
                    classification: params.get("classification").cloned(),
                    shared_memory: ShmRef::from_parameters(&format!("output '{}'", o.name), &params)?,
                    name: o.name,
                    binary_data: None,
                })
            })
            .collect::<Result<_>>()?,
        shared_memory,
        guards: Vec::new(),
    })
}

fn has_any(c: &InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}

/// Packs typed contents into little-endian bytes, checking each value's range.
fn pack(name: &str, datatype: DataType, c: InferTensorContents) -> Result<Bytes> {
    let err = |m: String| Error::invalid(format!("input '{name}': {m}"));
    let mut out = Vec::new();
    // Narrow each value straight into the output, range-checked.
    let ints = |values: &mut dyn ExactSizeIterator<Item = i128>, out: &mut Vec<u8>| -> Result<()> {
        out.reserve(values.len() * datatype.size().unwrap_or(1));
        for v in values {
            elements::push_int(datatype, v, out).map_err(err)?;
        }
        Ok(())
    };
    match datatype {
        DataType::Bool => out.extend(c.bool_contents.iter().map(|&b| b as u8)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            ints(&mut c.int_contents.iter().map(|&v| v as i128), &mut out)?
        }
        DataType::Int64 => out.extend(c.int64_contents.iter().flat_map(|v| v.to_le_bytes())),
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => {
            ints(&mut c.uint_contents.iter().map(|&v| v as i128), &mut out)?
        }
        DataType::Uint64 => out.extend(c.uint64_contents.iter().flat_map(|v| v.to_le_bytes())),
        DataType::Fp32 => out.extend(c.fp32_contents.iter().flat_map(|v| v.to_le_bytes())),
        DataType::Fp64 => out.extend(c.fp64_contents.iter().flat_map(|v| v.to_le_bytes())),
        DataType::Bytes => {
            out.reserve(c.bytes_contents.iter().map(|b| b.len() + 4).sum());
            for b in &c.bytes_contents {
                elements::push_bytes(b, &mut out).map_err(err)?;
            }
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(err(format!(
                "{datatype} has no typed contents field; send it in raw_input_contents"
            )));
        }
    }
    Ok(out.into())
}

pub fn encode_response(resp: InferResponse) -> ModelInferResponse {
    encode_response_placed(resp, &[])
}

/// Encodes a response whose outputs named in `placed` were written into
/// shared memory regions: those carry the region's parameters and an empty
/// raw entry (raw contents stay one per output, as clients index them).
pub fn encode_response_placed(resp: InferResponse, placed: &[(String, ShmRef)]) -> ModelInferResponse {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for t in resp.outputs {
        let mut parameters = std::collections::HashMap::new();
        let data = match placed.iter().find(|(n, _)| *n == t.name) {
            Some((_, r)) => {
                let p = |c| InferParameter {
                    parameter_choice: Some(c),
                };
                parameters.insert(
                    "shared_memory_region".to_owned(),
                    p(ParameterChoice::StringParam(r.region.clone())),
                );
                parameters.insert(
                    "shared_memory_byte_size".to_owned(),
                    p(ParameterChoice::Int64Param(r.byte_size as i64)),
                );
                if r.offset != 0 {
                    parameters.insert(
                        "shared_memory_offset".to_owned(),
                        p(ParameterChoice::Int64Param(r.offset as i64)),
                    );
                }
                Bytes::new()
            }
            None => t.data,
        };
        outputs.push(InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_owned(),
            shape: t.shape,
            parameters,
            ..Default::default()
        });
        raw.push(data);
    }
    ModelInferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version,
        id: resp.id,
        outputs,
        raw_output_contents: raw,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::inference::model_infer_request::InferInputTensor;

    fn request(datatype: &str, contents: InferTensorContents, shape: Vec<i64>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: datatype.into(),
                shape,
                contents: Some(contents),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn typed_contents_are_packed_and_range_checked() {
        let req = decode_request(request(
            "INT16",
            InferTensorContents {
                int_contents: vec![-2, 7],
                ..Default::default()
            },
            vec![2],
        ))
        .unwrap();
        assert_eq!(req.inputs[0].data.as_ref(), &[0xfe, 0xff, 7, 0]);
        let e = decode_request(request(
            "INT8",
            InferTensorContents {
                int_contents: vec![200],
                ..Default::default()
            },
            vec![1],
        ))
        .unwrap_err();
        assert!(e.message.contains("out of range for INT8"), "{}", e.message);
        let e = decode_request(request("FP16", InferTensorContents::default(), vec![1])).unwrap_err();
        assert!(e.message.contains("raw_input_contents"), "{}", e.message);
        let e = decode_request(request(
            "FP32",
            InferTensorContents {
                fp32_contents: vec![1.0],
                ..Default::default()
            },
            vec![2],
        ))
        .map(|r| quiver_engine::validate::check_data(&r.inputs[0], false))
        .unwrap()
        .unwrap_err();
        assert!(e.message.contains("4 bytes"), "{}", e.message);
    }

    #[test]
    fn raw_contents_are_shared_not_copied() {
        let blob = Bytes::from(vec![1u8, 0, 0, 0]);
        let mut req = request("INT32", InferTensorContents::default(), vec![1]);
        req.inputs[0].contents = None;
        req.raw_input_contents = vec![blob.clone()];
        let decoded = decode_request(req).unwrap();
        assert_eq!(decoded.inputs[0].data.as_ptr(), blob.as_ptr());
        let mut bad = request("INT32", InferTensorContents::default(), vec![1]);
        bad.raw_input_contents = vec![blob.clone(), blob];
        assert!(
            decode_request(bad)
                .unwrap_err()
                .message
                .contains("2 entries for 1 inputs")
        );
    }
}
