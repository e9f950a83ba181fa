//! Property tests of the decoders: nothing a client sends makes them panic,
//! and what the encoders write, the decoders read back unchanged.
use bytes::Bytes;
use proptest::prelude::*;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use quiver_proto::inference::{InferTensorContents, ModelInferRequest};
use quiver_runtimes::{DataType, Tensor};

use crate::{binary, grpc};
use quiver_engine::codec::json;
use quiver_engine::request::InferResponse;

fn datatype() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

/// A tensor with valid data for its datatype and shape.
fn tensor() -> impl Strategy<Value = Tensor> {
    (datatype(), prop::collection::vec(0i64..4, 0..3)).prop_flat_map(|(dt, shape)| {
        let n: usize = shape.iter().product::<i64>() as usize;
        let data = match dt.size() {
            Some(size) => prop::collection::vec(any::<u8>(), n * size)
                .prop_map(move |mut v| {
                    if dt == DataType::Bool {
                        v.iter_mut().for_each(|b| *b &= 1);
                    }
                    // Keep floats finite: JSON has no NaN or infinity.
                    if matches!(dt, DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64) {
                        v.iter_mut().for_each(|b| *b &= 0x3f);
                    }
                    v
                })
                .boxed(),
            None => prop::collection::vec("[a-z ]{0,6}", n)
                .prop_map(|items| {
                    let mut v = Vec::new();
                    for s in items {
                        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        v.extend_from_slice(s.as_bytes());
                    }
                    v
                })
                .boxed(),
        };
        data.prop_map(move |d| Tensor {
            name: "t".into(),
            datatype: dt,
            shape: shape.clone(),
            data: d.into(),
        })
    })
}

proptest! {
    #[test]
    fn json_decoder_never_panics(body in prop::collection::vec(any::<u8>(), 0..256), binary in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = json::decode_request(&body, binary.into(), "m", None);
    }

    #[test]
    fn json_decoder_never_panics_on_near_valid_requests(
        dt in "[A-Z0-9]{2,6}",
        shape in prop::collection::vec(any::<i64>(), 0..4),
        data in prop::collection::vec(any::<i64>(), 0..8),
        nested in any::<bool>(),
    ) {
        let data = if nested { serde_json::json!([data]) } else { serde_json::json!(data) };
        let body = serde_json::json!({"inputs": [{"name": "x", "shape": shape, "datatype": dt, "data": data}]});
        let _ = json::decode_request(body.to_string().as_bytes(), Bytes::new(), "m", None);
    }

    #[test]
    fn binary_split_never_panics(body in prop::collection::vec(any::<u8>(), 0..128), len in prop::option::of(".{0,6}")) {
        let _ = binary::split(body.into(), len.as_deref());
    }

    #[test]
    fn grpc_decoder_never_panics(
        dt in prop::sample::select(vec!["INT8", "UINT16", "FP16", "BYTES", "BOOL", "INT64", "X"]),
        shape in prop::collection::vec(any::<i64>(), 0..4),
        raw in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        ints in prop::collection::vec(any::<i32>(), 0..8),
    ) {
        let msg = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: dt.into(),
                shape,
                contents: Some(InferTensorContents { int_contents: ints, ..Default::default() }),
                ..Default::default()
            }],
            raw_input_contents: raw.map(|r| vec![Bytes::from(r)]).unwrap_or_default(),
            ..Default::default()
        };
        let _ = grpc::decode_request(msg);
    }

    /// A tensor written as a binary output decodes, as a binary input, to the same bytes.
    #[test]
    fn binary_output_round_trips_as_input(t in tensor()) {
        let resp = InferResponse { model_name: "m".into(), model_version: "1".into(), id: String::new(), outputs: vec![t.clone()] };
        let encoded = json::encode_response(&resp, &json::OutputEncoding::all_binary()).unwrap();
        let n = encoded.header_len.expect("binary outputs");
        let header: serde_json::Value = serde_json::from_slice(&encoded.body[..n]).unwrap();
        let out = &header["outputs"][0];
        let request = serde_json::json!({"inputs": [{
            "name": "t", "shape": out["shape"], "datatype": out["datatype"],
            "parameters": {"binary_data_size": out["parameters"]["binary_data_size"]}
        }]});
        let mut body = request.to_string().into_bytes();
        let header_len = body.len();
        body.extend_from_slice(&encoded.body[n..]);
        let body = Bytes::from(body);
        let req = match binary::split(body, Some(&header_len.to_string())).unwrap() {
            binary::Framing::Json { header, binary } => json::decode_request(&header, binary, "m", None).unwrap(),
            binary::Framing::Raw(_) => unreachable!(),
        };
        prop_assert_eq!(&req.inputs[0], &t);
    }

    /// A tensor written as JSON output data decodes, as JSON input data, to the same bytes.
    #[test]
    fn json_output_round_trips_as_input(t in tensor()) {
        let resp = InferResponse { model_name: "m".into(), model_version: "1".into(), id: String::new(), outputs: vec![t.clone()] };
        let encoded = json::encode_response(&resp, &json::OutputEncoding::default()).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&encoded.body).unwrap();
        let out = &header["outputs"][0];
        let request = serde_json::json!({"inputs": [{"name": "t", "shape": out["shape"], "datatype": out["datatype"], "data": out["data"]}]});
        let req = json::decode_request(request.to_string().as_bytes(), Bytes::new(), "m", None).unwrap();
        prop_assert_eq!(&req.inputs[0], &t);
    }

    /// gRPC raw outputs and raw inputs carry the same bytes.
    #[test]
    fn grpc_output_round_trips_as_input(t in tensor()) {
        let resp = InferResponse { model_name: "m".into(), model_version: "1".into(), id: String::new(), outputs: vec![t.clone()] };
        let encoded = grpc::encode_response(resp);
        let msg = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: encoded.outputs[0].name.clone(),
                datatype: encoded.outputs[0].datatype.clone(),
                shape: encoded.outputs[0].shape.clone(),
                ..Default::default()
            }],
            raw_input_contents: encoded.raw_output_contents,
            ..Default::default()
        };
        let req = grpc::decode_request(msg).unwrap();
        prop_assert_eq!(&req.inputs[0], &t);
    }
}
