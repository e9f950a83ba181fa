//! The wire codecs on a fraud_mlp-sized request (32 FP32) and a large one
//! (64 x 3 x 64 x 64 FP32, 3 MiB): JSON in and out, binary framing, gRPC.
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use quiver_codec::{binary, grpc, json};
use quiver_engine::request::InferResponse;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use quiver_runtimes::{DataType, Tensor};

fn floats(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 1000) as f32 / 7.0 - 50.0).collect()
}

fn json_body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32", "data": floats(n)}]
    }))
    .unwrap()
}

fn binary_body(n: usize) -> (Bytes, usize) {
    let header = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32", "parameters": {"binary_data_size": n * 4}}]
    }))
    .unwrap();
    let len = header.len();
    let mut body = header;
    body.extend(floats(n).iter().flat_map(|v| v.to_le_bytes()));
    (body.into(), len)
}

fn response(n: usize) -> InferResponse {
    InferResponse {
        model_name: "m".into(),
        model_version: "1".into(),
        id: String::new(),
        outputs: vec![Tensor {
            name: "y".into(),
            datatype: DataType::Fp32,
            shape: vec![1, n as i64],
            data: floats(n)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        }],
    }
}

fn codecs(c: &mut Criterion) {
    for (label, n) in [("32", 32usize), ("786432", 64 * 3 * 64 * 64)] {
        let mut g = c.benchmark_group(format!("codec/{label}_fp32"));
        g.throughput(Throughput::Bytes((n * 4) as u64));
        let body = json_body(n);
        g.bench_function("json_decode", |b| {
            b.iter(|| json::decode_request(&body, Bytes::new(), "m", None).unwrap())
        });
        let (bin, header_len) = binary_body(n);
        g.bench_function("binary_decode", |b| {
            b.iter(|| {
                let framing = binary::split(bin.clone(), Some(&header_len.to_string())).unwrap();
                match framing {
                    binary::Framing::Json { header, binary } => {
                        json::decode_request(&header, binary, "m", None).unwrap()
                    }
                    binary::Framing::Raw(_) => unreachable!(),
                }
            })
        });
        let msg = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, n as i64],
                ..Default::default()
            }],
            raw_input_contents: vec![
                floats(n)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            ],
            ..Default::default()
        };
        let wire = Bytes::from(msg.encode_to_vec());
        g.bench_function("grpc_decode", |b| {
            b.iter(|| grpc::decode_request(ModelInferRequest::decode(wire.clone()).unwrap()).unwrap())
        });
        let resp = response(n);
        g.bench_function("json_encode", |b| {
            b.iter(|| json::encode_response(&resp, &json::OutputEncoding::default()).unwrap())
        });
        g.bench_function("binary_encode", |b| {
            b.iter(|| json::encode_response(&resp, &json::OutputEncoding::all_binary()).unwrap())
        });
        g.bench_function("grpc_encode", |b| {
            b.iter(|| grpc::encode_response(resp.clone()).encode_to_vec())
        });
        g.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
