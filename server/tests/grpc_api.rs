//! The gRPC front end of the real server, driven by a tonic client.
mod common;

use common::*;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use quiver_proto::inference::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Sends `requests` on one ModelStreamInfer stream; every answer, in order.
async fn stream_all(
    client: &mut grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>,
    requests: Vec<ModelInferRequest>,
) -> Vec<ModelStreamInferResponse> {
    let mut stream = client
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    while let Some(msg) = stream.message().await.unwrap() {
        answers.push(msg);
    }
    answers
}

#[tokio::test]
async fn infer_with_raw_and_typed_inputs_answers_raw() {
    let s = TestServer::demo().await;
    for model in ["add_sub", "add_sub_pt"] {
        raw_and_typed_inputs(&s, model).await;
    }
    s.stop().await;
}

async fn raw_and_typed_inputs(s: &TestServer, model: &str) {
    let mut client = s.grpc_client().await;
    let a: Vec<i32> = (0..16).collect();
    let raw = |v: &[i32]| bytes::Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let input = |name: &str, contents| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        contents,
        ..Default::default()
    };
    let raw_req = ModelInferRequest {
        model_name: model.into(),
        id: "r1".into(),
        inputs: vec![input("INPUT0", None), input("INPUT1", None)],
        raw_input_contents: vec![raw(&a), raw(&[1; 16])],
        ..Default::default()
    };
    let typed_req = ModelInferRequest {
        model_name: model.into(),
        model_version: "1".into(),
        inputs: vec![
            input(
                "INPUT0",
                Some(InferTensorContents {
                    int_contents: a.clone(),
                    ..Default::default()
                }),
            ),
            input(
                "INPUT1",
                Some(InferTensorContents {
                    int_contents: vec![1; 16],
                    ..Default::default()
                }),
            ),
        ],
        ..Default::default()
    };
    for req in [raw_req, typed_req] {
        let resp = client.model_infer(req).await.unwrap().into_inner();
        assert_eq!(resp.model_name, model);
        assert_eq!(resp.model_version, "1");
        assert_eq!(resp.outputs.len(), 2);
        assert!(resp.outputs.iter().all(|o| o.contents.is_none()));
        let sum: Vec<i32> = resp.raw_output_contents[0]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(sum, (1..17).collect::<Vec<i32>>());
    }
}

#[tokio::test]
async fn metadata_config_index_and_health() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(meta.extensions.contains(&"binary_tensor_data".to_string()));
    let m = client
        .model_metadata(ModelMetadataRequest {
            name: "text_greet".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.inputs[0].datatype, "BYTES");
    assert_eq!(m.inputs[0].shape, vec![-1]);
    let c = client
        .model_config(ModelConfigRequest {
            name: "linear_noconfig".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(c.max_batch_size, 4);
    assert_eq!(c.platform, "onnxruntime_onnx");
    assert_eq!(c.output[0].dims, vec![3]);
    let index = client
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), DEMO_MODELS);
    let not_ready = client
        .model_ready(ModelReadyRequest {
            name: "add_sub".into(),
            version: "2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!not_ready.ready);
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service}");
    }
    s.stop().await;
}

#[tokio::test]
async fn stream_infer_answers_in_order_and_survives_errors() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    let good = |id: &str| ModelInferRequest {
        model_name: "text_greet".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "name".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            contents: Some(InferTensorContents {
                bytes_contents: vec![id.as_bytes().to_vec()],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut bad = good("bad");
    bad.inputs[0].datatype = "INT32".into();
    let requests = vec![good("a"), bad, good("c")];
    let answers = stream_all(&mut client, requests).await;
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].infer_response.as_ref().unwrap().id, "a");
    assert!(
        answers[1].error_message.contains("'name'"),
        "{}",
        answers[1].error_message
    );
    let last = answers[2].infer_response.as_ref().unwrap();
    assert_eq!(&last.raw_output_contents[0][4..], b"Hello, c");
    s.stop().await;
}

/// One stream's requests run concurrently, so they batch with each other,
/// and still come back in the order sent, each with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_pipelines_its_requests_into_batches() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await;
    let n = 400;
    let requests: Vec<ModelInferRequest> = (0..n)
        .map(|i| ModelInferRequest {
            model_name: "fraud_mlp".into(),
            id: format!("r{i}"),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 32],
                ..Default::default()
            }],
            raw_input_contents: vec![(0..32).flat_map(|j| ((i * j) as f32).to_le_bytes()).collect()],
            ..Default::default()
        })
        .collect();
    let mut ids = Vec::new();
    for msg in stream_all(&mut client, requests).await {
        assert!(msg.error_message.is_empty(), "{}", msg.error_message);
        ids.push(msg.infer_response.unwrap().id);
    }
    let expected: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected);
    let engine = &s.server.as_ref().unwrap().engine;
    let stats = engine.statistics(Some("fraud_mlp"), None).unwrap().remove(0);
    assert_eq!(stats.inference_count, n as u64);
    assert!(
        stats.execution_count < n as u64 / 2,
        "{} executions for {n} requests: the stream did not overlap them",
        stats.execution_count
    );
    s.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = TestServer::demo().await;
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService".to_string()),
        "{names:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn messages_over_the_limit_are_refused_and_the_server_keeps_serving() {
    let mut config = config(&root().join("models"));
    config.grpc_max_message_bytes = 1024;
    let s = TestServer::start(config).await;
    let mut client = s.grpc_client().await.max_encoding_message_size(usize::MAX);
    let big = ModelInferRequest {
        model_name: "fraud_mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![16, 32],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 16 * 32 * 4])],
        ..Default::default()
    };
    let status = client.model_infer(big).await.unwrap_err();
    // gRPC's code for a message over the limit (and Triton's), not tonic's OUT_OF_RANGE.
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("over the limit of 1024 bytes"), "{status:?}");
    // An answer over the limit: 120 empty names (480 bytes of request) come
    // back as 120 "Hello, " (1,320 bytes).
    let greet = ModelInferRequest {
        model_name: "text_greet".into(),
        inputs: vec![InferInputTensor {
            name: "name".into(),
            datatype: "BYTES".into(),
            shape: vec![120],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 120 * 4])],
        ..Default::default()
    };
    let status = client.model_infer(greet.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("answer of model 'text_greet'"), "{status:?}");
    // On a stream, the same answer is that request's error and the stream goes on.
    let mut small_greet = greet.clone();
    small_greet.inputs[0].shape = vec![2];
    small_greet.raw_input_contents = vec![bytes::Bytes::from(vec![0u8; 2 * 4])];
    let answers = stream_all(&mut client, vec![greet, small_greet]).await;
    assert!(answers[0].error_message.contains("over the limit"), "{answers:?}");
    assert!(answers[1].infer_response.is_some(), "{answers:?}");
    let small = ModelInferRequest {
        model_name: "fraud_mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 32],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 32 * 4])],
        ..Default::default()
    };
    assert_eq!(
        client
            .model_infer(small)
            .await
            .unwrap()
            .into_inner()
            .raw_output_contents[0]
            .len(),
        8
    );
    s.stop().await;
}

#[tokio::test]
async fn a_100_mib_request_is_resource_exhausted_at_the_default_limit() {
    let s = TestServer::demo().await;
    let mut client = s.grpc_client().await.max_encoding_message_size(usize::MAX);
    let rows = 100 * 1024 * 1024 / (32 * 4);
    let big = ModelInferRequest {
        model_name: "fraud_mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 32],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; rows * 32 * 4])],
        ..Default::default()
    };
    let status = client.model_infer(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--grpc-max-message-bytes"), "{status:?}");
    // The same connection keeps serving.
    assert!(
        client
            .model_ready(ModelReadyRequest {
                name: "fraud_mlp".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    s.stop().await;
}
