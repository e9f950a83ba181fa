//! Tokens with two scopes over REST and gRPC, and TLS on both listeners.
mod common;

use common::*;
use quiver_proto::inference::*;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

fn infer_request() -> ModelInferRequest {
    use quiver_proto::inference::model_infer_request::InferInputTensor;
    let raw = |v: i32| bytes::Bytes::from((0..16).flat_map(|_| v.to_le_bytes()).collect::<Vec<u8>>());
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    ModelInferRequest {
        model_name: "add_sub".into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        raw_input_contents: vec![raw(1), raw(2)],
        ..Default::default()
    }
}

#[tokio::test]
async fn tokens_guard_the_data_and_control_planes() {
    let mut c = explicit(&root().join("models"), &["add_sub"]);
    c.data_token = vec!["data-secret".into()];
    c.control_token = vec!["control-secret".into()];
    let s = TestServer::start(c).await;
    let infer = |token: Option<(&'static str, &'static str)>| {
        let mut r = s.client.post(s.url("/v2/models/add_sub/infer")).json(&add_sub_json());
        if let Some((k, v)) = token {
            r = r.header(k, v);
        }
        r.send()
    };

    // Health and metrics stay open.
    assert_eq!(s.get_status("/v2/health/ready").await, 200);
    assert_eq!(s.get_status("/metrics").await, 200);
    // No token, a wrong one, and a wrong scheme: 401 with the JSON body and a challenge.
    for token in [
        None,
        Some(("authorization", "Bearer nope")),
        Some(("authorization", "Basic data-secret")),
    ] {
        let r = infer(token).await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        expect_error(r, 401, "token").await;
    }
    assert_eq!(
        infer(Some(("authorization", "Bearer data-secret")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(infer(Some(("x-api-key", "data-secret"))).await.unwrap().status(), 200);
    assert_eq!(
        infer(Some(("authorization", "Bearer control-secret")))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = s.client.get(s.url("/v2/models/add_sub")).send().await.unwrap();
    expect_error(r, 401, "needs a token").await;

    // A data-plane token cannot load or unload.
    for action in ["load", "unload"] {
        let r = s
            .client
            .post(s.url(&format!("/v2/repository/models/add_sub/{action}")))
            .header("authorization", "Bearer data-secret")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(r, 403, "control-plane token").await;
    }
    let r = s
        .client
        .post(s.url("/v2/repository/models/fraud_mlp/load"))
        .header("x-api-key", "control-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // gRPC: the same rules on metadata.
    let mut grpc = s.grpc_client().await;
    let e = grpc.model_infer(infer_request()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    grpc.model_infer(with_token(infer_request(), "data-secret"))
        .await
        .unwrap();
    let load = || RepositoryModelLoadRequest {
        model_name: "tanh_nameonly".into(),
        ..Default::default()
    };
    let e = grpc
        .repository_model_load(with_token(load(), "data-secret"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    grpc.repository_model_load(with_token(load(), "control-secret"))
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await;
    assert!(health.is_ok(), "gRPC health stays open: {health:?}");
    s.stop().await;
}
