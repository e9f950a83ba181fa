//! What the fuzz targets (`fuzz/`) drive, in one place so the regression
//! tests (`server/tests/fuzz_regressions.rs`) replay the very same code on
//! every input a fuzzer ever found. Each entry takes arbitrary bytes, runs a
//! decoder as a request would, and must return (an error is fine) without
//! panicking, hanging, or allocating out of proportion to its input.
use bytes::Bytes;
use prost::Message;
use quiver_proto::inference::ModelInferRequest;
use quiver_runtimes::DataType;

use crate::{binary, grpc};
use quiver_engine::codec::json;
use quiver_engine::repository::model_config::{self, IoSpec, ModelSpec};
use quiver_engine::validate;

/// The model the decoders check requests against: one input of each kind
/// that matters to them (fixed and variable dims, BYTES, BOOL).
fn spec() -> ModelSpec {
    let io = |name: &str, datatype, dims: Vec<i64>| IoSpec {
        name: name.into(),
        datatype,
        dims,
        optional: false,
    };
    ModelSpec {
        name: "m".into(),
        platform: "onnxruntime_onnx".into(),
        max_batch_size: 8,
        inputs: vec![
            io("x", DataType::Fp32, vec![4]),
            io("s", DataType::Bytes, vec![-1]),
            io("b", DataType::Bool, vec![2]),
        ],
        outputs: vec![io("y", DataType::Fp32, vec![4])],
        utf8_strings: true,
    }
}

/// The JSON body of `/infer` (with blobs after it when the first two bytes,
/// read as a length, fall inside the input: the binary extension).
pub fn http_json(data: &[u8]) {
    let (header_len, body) = match data {
        [a, b, rest @ ..] => (Some(usize::from(u16::from_le_bytes([*a, *b]))), rest),
        _ => (None, data),
    };
    let body = Bytes::copy_from_slice(body);
    let header_len = header_len.filter(|n| *n <= body.len()).map(|n| n.to_string());
    let Ok(framing) = binary::split(body, header_len.as_deref()) else {
        return;
    };
    let request = match framing {
        binary::Framing::Json { header, binary } => json::decode_request(&header, binary, "m", None),
        binary::Framing::Raw(raw) => binary::raw_request(raw, &spec(), None),
    };
    if let Ok(request) = request {
        let _ = validate::check_request(&spec(), &request);
    }
}

/// The raw binary form (`Inference-Header-Content-Length: 0`).
pub fn http_raw(data: &[u8]) {
    let mut spec = spec();
    spec.inputs.truncate(1);
    spec.inputs[0].dims = vec![-1, 2];
    if let Ok(request) = binary::raw_request(Bytes::copy_from_slice(data), &spec, None) {
        let _ = validate::check_request(&spec, &request);
    }
}

/// A `ModelInferRequest` message as gRPC delivers it.
pub fn grpc_infer(data: &[u8]) {
    let Ok(message) = ModelInferRequest::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    if let Ok(request) = grpc::decode_request(message) {
        let _ = validate::check_request(&spec(), &request);
    }
}

/// `config.pbtxt`, then the completion against a model's inputs and outputs,
/// and the load-time checks.
pub fn config_pbtxt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut config) = model_config::parse(text) else {
        return;
    };
    let _ = quiver_engine::repository::unsupported::review(&config);
    let spec = |name: &str, shape: Vec<i64>| quiver_runtimes::TensorSpec {
        name: name.into(),
        datatype: DataType::Fp32,
        shape,
    };
    let io = quiver_runtimes::ModelIo {
        inputs: vec![spec("x", vec![-1, 4])],
        outputs: vec![spec("y", vec![-1, 4])],
    };
    // Warm-up samples are left out: they allocate what the config asks for
    // (up to warmup::MAX_SAMPLE_BYTES), which is the operator's call.
    let _ = model_config::complete(&mut config, "m", ("onnxruntime_onnx", "onnxruntime"), &io, 4);
    let _ = model_config::to_json(&config);
}
