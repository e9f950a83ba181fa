//! Framing of the binary tensor data extension: a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw blobs, and the raw
//! form (`Inference-Header-Content-Length: 0`) where the whole body is the
//! single input's bytes.
use bytes::Bytes;
use quiver_runtimes::{Tensor, bytes_elements};

use quiver_engine::error::{Error, Result};
use quiver_engine::repository::model_config::ModelSpec;
use quiver_engine::request::InferRequest;

/// How a request body is laid out.
#[derive(Debug)]
pub enum Framing {
    /// JSON header, then `binary` holds the blobs (possibly none).
    Json { header: Bytes, binary: Bytes },
    /// The whole body is the raw bytes of the model's single input.
    Raw(Bytes),
}

/// Splits a body according to its `Inference-Header-Content-Length` header value.
pub fn split(body: Bytes, header_length: Option<&str>) -> Result<Framing> {
    let Some(value) = header_length else {
        return Ok(Framing::Json {
            header: body,
            binary: Bytes::new(),
        });
    };
    let n: usize = value.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "Inference-Header-Content-Length is '{value}', not a byte count"
        ))
    })?;
    if n == 0 {
        return Ok(Framing::Raw(body));
    }
    if n > body.len() {
        return Err(Error::invalid(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        )));
    }
    let mut binary = body;
    let header = binary.split_to(n);
    Ok(Framing::Json { header, binary })
}

/// Builds the request for the raw form: one input, batch 1 for a batching
/// model. A single variable dimension is inferred from the byte count.
pub fn raw_request(body: Bytes, spec: &ModelSpec, version: Option<&str>) -> Result<InferRequest> {
    let [input] = spec.inputs.as_slice() else {
        return Err(Error::invalid(format!(
            "a raw binary body (Inference-Header-Content-Length: 0) needs a model with one input; '{}' has {}",
            spec.name,
            spec.inputs.len()
        )));
    };
    let mut dims = input.dims.clone();
    let unknown: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter(|(_, d)| **d < 0)
        .map(|(i, _)| i)
        .collect();
    if unknown.len() > 1 {
        return Err(Error::invalid(format!(
            "input '{}' has {} variable dimensions; a raw binary body can fill in only one",
            input.name,
            unknown.len()
        )));
    }
    if let Some(&i) = unknown.first() {
        let known: i64 = dims.iter().filter(|d| **d >= 0).product();
        let elements = match input.datatype.size() {
            Some(size) => body.len() / size,
            None => bytes_elements(&body).count(),
        } as i64;
        dims[i] = if known == 0 { 0 } else { elements / known };
    }
    let shape = if spec.max_batch_size > 0 {
        std::iter::once(1).chain(dims).collect()
    } else {
        dims
    };
    let tensor = Tensor {
        name: input.name.clone(),
        datatype: input.datatype,
        shape,
        data: body,
    };
    Ok(InferRequest {
        model_name: spec.name.clone(),
        model_version: version.map(str::to_owned),
        inputs: vec![tensor],
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_engine::repository::model_config::IoSpec;
    use quiver_runtimes::DataType;

    #[test]
    fn split_by_header_length() {
        let body = Bytes::from_static(b"{\"a\":1}BLOB");
        match split(body.clone(), Some("7")).unwrap() {
            Framing::Json { header, binary } => {
                assert_eq!(header.as_ref(), b"{\"a\":1}");
                assert_eq!(binary.as_ref(), b"BLOB");
            }
            Framing::Raw(_) => panic!("expected JSON framing"),
        }
        assert!(matches!(split(body.clone(), Some("0")).unwrap(), Framing::Raw(_)));
        assert!(
            split(body.clone(), Some("99"))
                .unwrap_err()
                .message
                .contains("only 11 bytes")
        );
        assert!(split(body, Some("x")).unwrap_err().message.contains("not a byte count"));
    }

    #[test]
    fn raw_body_fills_a_variable_dimension() {
        let spec = ModelSpec {
            name: "m".into(),
            platform: String::new(),
            max_batch_size: 4,
            inputs: vec![IoSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                dims: vec![-1, 2],
                optional: false,
            }],
            outputs: vec![],
            utf8_strings: false,
        };
        let req = raw_request(Bytes::from(vec![0u8; 24]), &spec, None).unwrap();
        assert_eq!(req.inputs[0].shape, vec![1, 3, 2]);
        // 20 bytes do not make whole rows of 2: validation refuses what the codec built.
        let req = raw_request(Bytes::from(vec![0u8; 20]), &spec, None).unwrap();
        let e = quiver_engine::validate::check_data(&req.inputs[0], false).unwrap_err();
        assert!(e.message.contains("20 bytes"), "{}", e.message);
    }
}
