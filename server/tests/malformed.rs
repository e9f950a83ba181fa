//! Malformed requests over both protocols: each gets the right 4xx / gRPC
//! code with a message naming the problem, and the server keeps serving.
mod common;

use common::*;
use quiver_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use quiver_proto::inference::{InferTensorContents, ModelInferRequest};
use serde_json::{Value, json};

/// (what, path, headers, body, expected status, expected message part)
type HttpCase<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, String, u16, &'a str);

fn i32s(n: usize) -> Vec<i32> {
    vec![1; n]
}

#[tokio::test]
async fn malformed_http_requests() {
    let s = TestServer::demo().await;
    let add = "/v2/models/add_sub/infer";
    let good1 = json!({"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": i32s(16)});
    let with = |input0: Value| json!({"inputs": [input0, good1.clone()]}).to_string();
    let cases: Vec<HttpCase> = vec![
        (
            "not JSON",
            add,
            vec![],
            "{nope".into(),
            400,
            "malformed inference request JSON",
        ),
        (
            "inputs missing",
            add,
            vec![],
            "{}".into(),
            400,
            "missing field `inputs`",
        ),
        (
            "unknown model",
            "/v2/models/nope/infer",
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":i32s(16)})),
            404,
            "unknown model 'nope'",
        ),
        (
            "unknown version",
            "/v2/models/add_sub/versions/9/infer",
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":i32s(16)})),
            404,
            "unknown version '9'",
        ),
        (
            "non-numeric version",
            "/v2/models/add_sub/versions/latest/infer",
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":i32s(16)})),
            404,
            "unknown version 'latest'",
        ),
        (
            "unknown input",
            add,
            vec![],
            with(json!({"name":"INPUTX","shape":[1,16],"datatype":"INT32","data":i32s(16)})),
            400,
            "unknown input 'INPUTX'",
        ),
        (
            "missing input",
            add,
            vec![],
            json!({"inputs": [good1.clone()]}).to_string(),
            400,
            "'INPUT0' of model 'add_sub' is missing",
        ),
        (
            "duplicate input",
            add,
            vec![],
            json!({"inputs": [good1.clone(), good1.clone()]}).to_string(),
            400,
            "'INPUT1' is given more than once",
        ),
        (
            "wrong datatype",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"FP32","data":vec![1.0;16]})),
            400,
            "FP32 does not match the model's INT32",
        ),
        (
            "unknown datatype",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT33","data":i32s(16)})),
            400,
            "unknown datatype 'INT33'",
        ),
        (
            "wrong shape",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,8],"datatype":"INT32","data":i32s(8)})),
            400,
            "shape [1, 8] does not match the model's [-1, 16]",
        ),
        (
            "data short of shape",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":i32s(15)})),
            400,
            "15 data elements",
        ),
        (
            "batch over max",
            add,
            vec![],
            json!({"inputs": [
            {"name":"INPUT0","shape":[9,16],"datatype":"INT32","data":i32s(144)},
            {"name":"INPUT1","shape":[9,16],"datatype":"INT32","data":i32s(144)}]})
            .to_string(),
            400,
            "max_batch_size",
        ),
        (
            "out of range",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":vec![4294967296i64; 16]})),
            400,
            "out of range for INT32",
        ),
        (
            "string for number",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":vec!["a"; 16]})),
            400,
            "INPUT0",
        ),
        (
            "unknown output",
            add,
            vec![],
            json!({"inputs": [
            {"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":i32s(16)}, good1.clone()],
            "outputs": [{"name": "OUTPUT9"}]})
            .to_string(),
            400,
            "unknown output 'OUTPUT9'",
        ),
        (
            "huge shape",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,4611686018427387904i64],"datatype":"INT32","data":[1]})),
            400,
            "INPUT0",
        ),
        (
            "negative dim",
            add,
            vec![],
            with(json!({"name":"INPUT0","shape":[1,-16],"datatype":"INT32","data":i32s(16)})),
            400,
            "negative",
        ),
        (
            "binary size past body",
            add,
            vec![("Inference-Header-Content-Length", "0".into())],
            String::new(),
            400,
            "one input",
        ),
        (
            "header length past body",
            add,
            vec![("Inference-Header-Content-Length", "999".into())],
            "{}".into(),
            400,
            "Inference-Header-Content-Length is 999",
        ),
        (
            "header length not a number",
            add,
            vec![("Inference-Header-Content-Length", "ten".into())],
            "{}".into(),
            400,
            "not a byte count",
        ),
        (
            "blob shorter than declared",
            add,
            vec![],
            String::new(),
            400,
            "binary_data_size is 64 but only 3 bytes",
        ),
        (
            "bad gzip",
            add,
            vec![("Content-Encoding", "gzip".into())],
            "plain".into(),
            400,
            "not valid gzip",
        ),
        (
            "unsupported encoding",
            add,
            vec![("Content-Encoding", "br".into())],
            "{}".into(),
            400,
            "Content-Encoding 'br'",
        ),
        (
            "no such endpoint",
            "/v2/models/add_sub/explain",
            vec![],
            "{}".into(),
            404,
            "no endpoint",
        ),
        (
            "bad index body",
            "/v2/repository/index",
            vec![],
            "[".into(),
            400,
            "malformed repository index request",
        ),
    ];
    for (what, path, headers, mut body, status, needle) in cases {
        if what == "blob shorter than declared" {
            let header = json!({"inputs": [
                {"name":"INPUT0","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}}, good1.clone()]})
            .to_string();
            let mut b = header.clone();
            b.push_str("abc");
            let r = s
                .client
                .post(s.url(path))
                .header("Inference-Header-Content-Length", header.len())
                .body(b)
                .send()
                .await
                .unwrap();
            let status_got = r.status().as_u16();
            let err: Value = r.json().await.unwrap();
            assert_eq!(status_got, status, "{what}: {err}");
            assert!(err["error"].as_str().unwrap().contains(needle), "{what}: {err}");
            continue;
        }
        if body.is_empty() && what != "binary size past body" {
            body = "{}".into();
        }
        let mut req = s.client.post(s.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        let status_got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status_got, status, "{what}: {text}");
        let err: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not a JSON error body: {text}"));
        let msg = err["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field: {text}"));
        assert!(msg.contains(needle), "{what}: '{msg}' does not mention '{needle}'");
        // The server keeps serving everyone else.
        let ok = s.post_json("/v2/models/add_sub/infer", &add_sub_json()).await;
        assert_eq!(ok.status(), 200, "after {what}");
    }
    s.stop().await;
}

fn grpc_input(name: &str, datatype: &str, shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        contents,
        ..Default::default()
    }
}

fn int_contents(n: usize) -> Option<InferTensorContents> {
    Some(InferTensorContents {
        int_contents: vec![1; n],
        ..Default::default()
    })
}

fn good_grpc() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "add_sub".into(),
        inputs: vec![
            grpc_input("INPUT0", "INT32", vec![1, 16], int_contents(16)),
            grpc_input("INPUT1", "INT32", vec![1, 16], int_contents(16)),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_grpc_requests() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    let mut cases: Vec<(&str, ModelInferRequest, tonic::Code, &str)> = Vec::new();
    let mut r = good_grpc();
    r.model_name = "nope".into();
    cases.push(("unknown model", r, tonic::Code::NotFound, "unknown model 'nope'"));
    let mut r = good_grpc();
    r.model_version = "3".into();
    cases.push(("unknown version", r, tonic::Code::NotFound, "unknown version '3'"));
    let mut r = good_grpc();
    r.inputs[0].datatype = "FP32".into();
    cases.push(("wrong datatype", r, tonic::Code::InvalidArgument, "INPUT0"));
    let mut r = good_grpc();
    r.inputs[0].contents = int_contents(3);
    cases.push(("short contents", r, tonic::Code::InvalidArgument, "12 bytes"));
    let mut r = good_grpc();
    r.raw_input_contents = vec![bytes::Bytes::from(vec![0u8; 64])];
    cases.push((
        "raw count mismatch",
        r,
        tonic::Code::InvalidArgument,
        "raw_input_contents has 1 entries for 2 inputs",
    ));
    let mut r = good_grpc();
    r.inputs[0].contents = None;
    r.inputs[1].contents = None;
    r.raw_input_contents = vec![bytes::Bytes::from(vec![0u8; 64]), bytes::Bytes::from(vec![0u8; 63])];
    cases.push(("raw wrong size", r, tonic::Code::InvalidArgument, "63 bytes"));
    let mut r = good_grpc();
    r.inputs.pop();
    cases.push((
        "missing input",
        r,
        tonic::Code::InvalidArgument,
        "'INPUT1' of model 'add_sub' is missing",
    ));
    let mut r = good_grpc();
    r.outputs.push(InferRequestedOutputTensor {
        name: "nope".into(),
        ..Default::default()
    });
    cases.push((
        "unknown output",
        r,
        tonic::Code::InvalidArgument,
        "unknown output 'nope'",
    ));
    let mut r = good_grpc();
    r.inputs[0].contents = Some(InferTensorContents {
        int_contents: vec![1; 16],
        fp32_contents: vec![1.0],
        ..Default::default()
    });
    r.inputs[1].contents = None;
    r.raw_input_contents = vec![bytes::Bytes::new(), bytes::Bytes::from(vec![0u8; 64])];
    cases.push((
        "typed and raw",
        r,
        tonic::Code::InvalidArgument,
        "both typed contents and raw_input_contents",
    ));
    let mut r = good_grpc();
    r.inputs[0].shape = vec![1, -16];
    cases.push(("negative dim", r, tonic::Code::InvalidArgument, "negative"));
    for (what, req, code, needle) in cases {
        let status = client.model_infer(req).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{what}: '{}' does not mention '{needle}'",
            status.message()
        );
        let ok = client.model_infer(good_grpc()).await.unwrap().into_inner();
        assert_eq!(ok.raw_output_contents.len(), 2, "after {what}");
    }
    s.stop().await;
}
