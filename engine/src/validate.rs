//! Checks a decoded request against the model before it is queued. Every
//! message names the input or output at fault and what was wrong.
use quiver_runtimes::{DataType, Tensor, bytes_elements, element_count};

use super::repository::model_config::ModelSpec;
use super::request::InferRequest;
use crate::error::{Error, Result};

/// Most BYTES elements one input may carry. On the wire an element costs 4
/// bytes plus its text, but a runtime holds each as a string object (ONNX
/// Runtime: ~56 bytes with quiver's copy), so 64 MiB of empty strings would
/// take ~900 MiB: this bounds that blow-up at ~56 MiB per input.
pub const MAX_BYTES_ELEMENTS: usize = 1 << 20;

/// Checks that a tensor's bytes match its datatype and shape (and, with
/// `utf8`, that BYTES elements are UTF-8). The codecs only slice or pack
/// bytes; this runs once per input, in [`check_request`], on the one path
/// every front end takes to a runtime, before the request can join a batch.
pub fn check_data(t: &Tensor, utf8: bool) -> Result<()> {
    let count = element_count(&t.shape).ok_or_else(|| {
        Error::invalid(format!(
            "input '{}': shape {:?} has a negative or too large dimension",
            t.name, t.shape
        ))
    })?;
    match t.datatype.size() {
        Some(size) => {
            let expected = count
                .checked_mul(size)
                .ok_or_else(|| Error::invalid(format!("input '{}': shape {:?} is too large", t.name, t.shape)))?;
            if t.data.len() != expected {
                return Err(Error::invalid(format!(
                    "input '{}': {} bytes of {} data for shape {:?}, expected {expected}",
                    t.name,
                    t.data.len(),
                    t.datatype,
                    t.shape
                )));
            }
            if t.datatype == DataType::Bool
                && let Some(i) = t.data.iter().position(|&b| b > 1)
            {
                return Err(Error::invalid(format!(
                    "input '{}': BOOL element {i} is {}, not 0 or 1",
                    t.name, t.data[i]
                )));
            }
        }
        None => {
            if count > MAX_BYTES_ELEMENTS {
                return Err(Error::invalid(format!(
                    "input '{}': {count} BYTES elements for shape {:?}; at most {MAX_BYTES_ELEMENTS} per input",
                    t.name, t.shape
                )));
            }
            let mut n = 0usize;
            for item in bytes_elements(&t.data) {
                let element = item.map_err(|i| {
                    Error::invalid(format!(
                        "input '{}': BYTES element {i} runs past the end of the data",
                        t.name
                    ))
                })?;
                if utf8 && std::str::from_utf8(element).is_err() {
                    return Err(Error::invalid(format!(
                        "input '{}': BYTES element {n} is not valid UTF-8, which this model's string tensors require",
                        t.name
                    )));
                }
                n += 1;
            }
            if n != count {
                return Err(Error::invalid(format!(
                    "input '{}': {n} BYTES elements for shape {:?}, expected {count}",
                    t.name, t.shape
                )));
            }
        }
    }
    Ok(())
}

/// Validates `req` against `spec` and returns the output names to compute,
/// in the order they will be answered.
pub fn check_request(spec: &ModelSpec, req: &InferRequest) -> Result<Vec<String>> {
    let model = &spec.name;
    let mut batch: Option<i64> = None;
    for (i, input) in req.inputs.iter().enumerate() {
        if req.inputs[..i].iter().any(|other| other.name == input.name) {
            return Err(Error::invalid(format!(
                "input '{}' is given more than once",
                input.name
            )));
        }
        let Some(io) = spec.inputs.iter().find(|s| s.name == input.name) else {
            let expected: Vec<&str> = spec.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown input '{}' for model '{model}' (its inputs: {})",
                input.name,
                expected.join(", ")
            )));
        };
        if input.shape.iter().any(|&d| d < 0) {
            return Err(Error::invalid(format!(
                "input '{}': shape {:?} has a negative dimension",
                input.name, input.shape
            )));
        }
        if input.datatype != io.datatype {
            return Err(Error::invalid(format!(
                "input '{}': datatype {} does not match the model's {}",
                input.name, input.datatype, io.datatype
            )));
        }
        let dims = if spec.max_batch_size > 0 {
            let Some(&b) = input.shape.first() else {
                return Err(Error::invalid(format!(
                    "input '{}': shape [] has no batch dimension; expected {:?}",
                    input.name,
                    spec.metadata_shape(io)
                )));
            };
            if b < 1 || b as u64 > spec.max_batch_size as u64 {
                return Err(Error::invalid(format!(
                    "input '{}': batch size {b} is outside 1..={} (the model's max_batch_size)",
                    input.name, spec.max_batch_size
                )));
            }
            if let Some(first) = batch
                && first != b
            {
                return Err(Error::invalid(format!(
                    "input '{}': batch size {b} differs from the other inputs' {first}",
                    input.name
                )));
            }
            batch = Some(b);
            &input.shape[1..]
        } else {
            &input.shape[..]
        };
        let fits = dims.len() == io.dims.len() && dims.iter().zip(&io.dims).all(|(&d, &m)| d >= 0 && (m < 0 || d == m));
        if !fits {
            return Err(Error::invalid(format!(
                "input '{}': shape {:?} does not match the model's {:?}",
                input.name,
                input.shape,
                spec.metadata_shape(io)
            )));
        }
        check_data(input, spec.utf8_strings)?;
    }
    if let Some(missing) = spec
        .inputs
        .iter()
        .find(|s| !s.optional && !req.inputs.iter().any(|i| i.name == s.name))
    {
        return Err(Error::invalid(format!(
            "input '{}' of model '{model}' is missing",
            missing.name
        )));
    }
    if req.outputs.is_empty() {
        return Ok(spec.outputs.iter().map(|o| o.name.clone()).collect());
    }
    let mut names = Vec::with_capacity(req.outputs.len());
    for (i, out) in req.outputs.iter().enumerate() {
        let Some(io) = spec.outputs.iter().find(|o| o.name == out.name) else {
            let expected: Vec<&str> = spec.outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(format!(
                "unknown output '{}' requested from model '{model}' (its outputs: {})",
                out.name,
                expected.join(", ")
            )));
        };
        if let Some(k) = &out.classification {
            if k.as_i64().is_none_or(|k| k <= 0) {
                return Err(Error::invalid(format!(
                    "output '{}': parameter 'classification' must be a positive integer, got {k:?}",
                    out.name
                )));
            }
            if !crate::classify::classifiable(io.datatype) {
                return Err(Error::invalid(format!(
                    "output '{}': class results are not available for datatype {}; \
                     'classification' needs a numeric output",
                    out.name, io.datatype
                )));
            }
        }
        if req.outputs[..i].iter().any(|o| o.name == out.name) {
            return Err(Error::invalid(format!(
                "output '{}' is requested more than once",
                out.name
            )));
        }
        names.push(out.name.clone());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::model_config::IoSpec;

    fn spec() -> ModelSpec {
        let io = |name: &str| IoSpec {
            name: name.into(),
            datatype: DataType::Int32,
            dims: vec![16],
            optional: false,
        };
        ModelSpec {
            name: "add_sub".into(),
            platform: "onnxruntime_onnx".into(),
            max_batch_size: 8,
            inputs: vec![io("INPUT0"), io("INPUT1")],
            outputs: vec![io("OUTPUT0"), io("OUTPUT1")],
            utf8_strings: false,
        }
    }

    fn input(name: &str, shape: Vec<i64>) -> Tensor {
        let n = element_count(&shape).unwrap_or(0);
        Tensor {
            name: name.into(),
            datatype: DataType::Int32,
            shape,
            data: vec![0u8; n * 4].into(),
        }
    }

    fn req(inputs: Vec<Tensor>) -> InferRequest {
        InferRequest {
            model_name: "add_sub".into(),
            inputs,
            ..Default::default()
        }
    }

    fn err(r: InferRequest) -> String {
        let e = check_request(&spec(), &r).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        e.message
    }

    #[test]
    fn accepts_a_good_request_and_defaults_to_all_outputs() {
        let names = check_request(
            &spec(),
            &req(vec![input("INPUT0", vec![2, 16]), input("INPUT1", vec![2, 16])]),
        );
        assert_eq!(names.unwrap(), vec!["OUTPUT0", "OUTPUT1"]);
    }

    #[test]
    fn names_the_problem() {
        assert!(err(req(vec![input("INPUT0", vec![1, 16])])).contains("'INPUT1' of model 'add_sub' is missing"));
        assert!(err(req(vec![input("INPUT0", vec![1, 16]), input("INPUT0", vec![1, 16])])).contains("more than once"));
        assert!(err(req(vec![input("NOPE", vec![1, 16])])).contains("unknown input 'NOPE'"));
        assert!(err(req(vec![input("INPUT0", vec![1, 15]), input("INPUT1", vec![1, 16])])).contains("[1, 15]"));
        assert!(err(req(vec![input("INPUT0", vec![9, 16]), input("INPUT1", vec![9, 16])])).contains("max_batch_size"));
        assert!(err(req(vec![input("INPUT0", vec![1, 16]), input("INPUT1", vec![2, 16])])).contains("differs"));
        let mut wrong_type = input("INPUT0", vec![1, 16]);
        wrong_type.datatype = DataType::Fp32;
        assert!(err(req(vec![wrong_type, input("INPUT1", vec![1, 16])])).contains("FP32 does not match"));
        let mut short = input("INPUT0", vec![1, 16]);
        short.data = short.data.slice(..60);
        assert!(err(req(vec![short, input("INPUT1", vec![1, 16])])).contains("60 bytes"));
        let mut r = req(vec![input("INPUT0", vec![1, 16]), input("INPUT1", vec![1, 16])]);
        r.outputs.push(crate::request::RequestedOutput {
            name: "OUT".into(),
            ..Default::default()
        });
        assert!(err(r).contains("unknown output 'OUT'"));
    }

    #[test]
    fn bytes_and_bool_data_are_checked() {
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            data: vec![1, 0, 0, 0, b'a'].into(),
        };
        assert!(check_data(&t, false).unwrap_err().message.contains("1 BYTES elements"));
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![1],
            data: vec![9, 0, 0, 0, b'a'].into(),
        };
        assert!(check_data(&t, false).unwrap_err().message.contains("past the end"));
        let t = Tensor {
            name: "b".into(),
            datatype: DataType::Bool,
            shape: vec![2],
            data: vec![1, 2].into(),
        };
        assert!(check_data(&t, false).unwrap_err().message.contains("not 0 or 1"));
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            data: vec![1, 0, 0, 0, b'a', 1, 0, 0, 0, 0xff].into(),
        };
        assert!(
            check_data(&t, false).is_ok(),
            "bytes are bytes unless the model needs strings"
        );
        let e = check_data(&t, true).unwrap_err().message;
        assert!(e.contains("input 's': BYTES element 1 is not valid UTF-8"), "{e}");
        let many = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![MAX_BYTES_ELEMENTS as i64 + 1],
            data: vec![0; 4 * (MAX_BYTES_ELEMENTS + 1)].into(),
        };
        let e = check_data(&many, false).unwrap_err().message;
        assert!(e.contains("at most 1048576 per input"), "{e}");
    }
}
