//! One client's bad input never fails the requests batched with it.
mod common;

use common::*;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use serde_json::Value;

/// text_greet (ONNX string tensors) served with a batch dimension; a batch
/// runs once 15 rows are queued (or after 10 s: Triton's fixed delay).
fn greet_batched(repo: &std::path::Path) {
    copy_model("text_greet", &repo.join("greet"));
    write(
        &repo.join("greet/config.pbtxt"),
        r#"name: "greet" max_batch_size: 16
           input [ { name: "name" data_type: TYPE_STRING dims: [ ] } ]
           output [ { name: "greeting" data_type: TYPE_STRING dims: [ ] } ]
           dynamic_batching { preferred_batch_size: [ 15 ] max_queue_delay_microseconds: 10000000 }
           parameters { key: "queue_delay_policy" value: { string_value: "fixed" } }"#,
    );
}

fn bytes_element(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_one_of_16_fails_only_that_request() {
    let repo = temp_dir("isolation");
    greet_batched(&repo);
    let s = TestServer::start(config(&repo)).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let mut client = s.grpc_client().await;
        let name: Vec<u8> = if i == 7 {
            vec![b'x', 0xff, 0xfe]
        } else {
            format!("client{i}").into_bytes()
        };
        calls.spawn(async move {
            let r = client
                .model_infer(ModelInferRequest {
                    model_name: "greet".into(),
                    inputs: vec![InferInputTensor {
                        name: "name".into(),
                        datatype: "BYTES".into(),
                        shape: vec![1],
                        ..Default::default()
                    }],
                    raw_input_contents: vec![bytes_element(&name).into()],
                    ..Default::default()
                })
                .await;
            (i, r)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(done) = calls.join_next().await {
        let (i, r) = done.unwrap();
        match r {
            Ok(r) => {
                let out = r.into_inner().raw_output_contents[0].clone();
                assert_eq!(&out[4..], format!("Hello, client{i}").as_bytes());
                ok += 1;
            }
            Err(status) => {
                assert_eq!(i, 7, "request {i} failed: {status:?}");
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert!(
                    status
                        .message()
                        .contains("input 'name': BYTES element 0 is not valid UTF-8"),
                    "{status:?}"
                );
                failed += 1;
            }
        }
    }
    assert_eq!((ok, failed), (15, 1));
    // The 15 good requests ran together, as one batch.
    let stats: Value = s.get_json("/v2/models/greet/stats").await;
    let batches = &stats["model_stats"][0]["batch_stats"];
    assert_eq!(batches.as_array().unwrap().len(), 1, "{batches}");
    assert_eq!(batches[0]["batch_size"], 15, "{batches}");
    s.stop().await;
}
