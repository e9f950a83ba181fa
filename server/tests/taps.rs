//! Taps on the one request path: a tap registered with the server sees
//! every request, from REST, gRPC and gRPC streams alike, with its context,
//! its tensors (the same buffers, not copies), its answer or its error and
//! the batcher's timing; a per-version tap made at load sees only its
//! version's requests.
mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use quiver_engine::request::InferRequest;
use quiver_engine::tap::{Context, Exchange, Kind, Protocol, Tap, TapFactory, Version};
use quiver_runtimes::{DataType, Tensor};
use quiver_server::Observers;
use tokio_stream::StreamExt;

#[derive(Debug, Clone)]
struct Seen {
    kind: Kind,
    variant: Option<String>,
    protocol: Protocol,
    model: String,
    version: u64,
    ok: bool,
    error: String,
    request_id: Option<String>,
    inputs: Vec<String>,
    /// Where the first input's bytes live, and the bytes.
    first_input: Option<(usize, usize)>,
    first_data: Option<Bytes>,
    outputs: usize,
    batch_rows: usize,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Tap for Recorder {
    fn observe(&self, e: &Exchange<'_>) {
        let request = e.request.expect("a tap that wants the request gets it");
        self.seen.lock().unwrap().push(Seen {
            kind: e.kind,
            variant: e.variant.map(str::to_owned),
            protocol: e.context.protocol,
            model: e.model.name.to_owned(),
            version: e.model.version,
            ok: e.result.is_ok(),
            error: e.result.as_ref().err().map(|x| x.message.clone()).unwrap_or_default(),
            request_id: e.context.header("x-request-id").map(str::to_owned),
            inputs: request.inputs.iter().map(|t| t.name.clone()).collect(),
            first_input: request.inputs.first().map(|t| (t.data.as_ptr() as usize, t.data.len())),
            first_data: request.inputs.first().map(|t| t.data.clone()),
            outputs: e.result.as_ref().map_or(0, |r| r.outputs.len()),
            batch_rows: e.timing.batch_rows,
        });
    }
}

/// Makes a recorder for add_sub's versions only.
struct AddSubOnly(Arc<Recorder>);

impl TapFactory for AddSubOnly {
    fn tap(&self, version: &Version<'_>, _: Option<&std::path::Path>) -> Result<Option<Arc<dyn Tap>>, String> {
        Ok((version.name == "add_sub").then(|| Arc::clone(&self.0) as Arc<dyn Tap>))
    }
}

#[tokio::test]
async fn every_front_end_reaches_the_same_taps() {
    let everything = Arc::new(Recorder::default());
    let add_sub = Arc::new(Recorder::default());
    let observers = Observers {
        taps: vec![Arc::clone(&everything) as Arc<dyn Tap>],
        tap_factories: vec![Arc::new(AddSubOnly(Arc::clone(&add_sub)))],
    };
    let server = quiver_server::start_with(&config(&root().join("models")), observers)
        .await
        .expect("server starts");
    let http = format!("http://{}", server.http_addr.unwrap());
    let grpc = format!("http://{}", server.grpc_addr.unwrap());
    let client = http_client();

    // REST, with a request id header.
    let r = client
        .post(format!("{http}/v2/models/add_sub/infer"))
        .header("x-request-id", "rest-1")
        .json(&add_sub_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // REST, refused by validation: the tap sees the error.
    let mut bad = add_sub_json();
    bad["inputs"][0]["name"] = "NOPE".into();
    let r = client
        .post(format!("{http}/v2/models/add_sub/infer"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // gRPC unary, with metadata.
    let mut g = quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::connect(grpc)
        .await
        .unwrap();
    let mut req = tonic::Request::new(add_sub_grpc("add_sub_pt", 2, 3));
    req.metadata_mut().insert("x-request-id", "grpc-1".parse().unwrap());
    g.model_infer(req).await.unwrap();
    // A gRPC stream of two.
    let mut stream = g
        .model_stream_infer(tokio_stream::iter(vec![
            add_sub_grpc("add_sub", 1, 1),
            add_sub_grpc("add_sub", 2, 2),
        ]))
        .await
        .unwrap()
        .into_inner();
    let mut answers = 0;
    while let Some(m) = stream.next().await {
        assert!(m.unwrap().error_message.is_empty());
        answers += 1;
    }
    assert_eq!(answers, 2);

    let seen = everything.seen.lock().unwrap().clone();
    let by = |p: Protocol| seen.iter().filter(|s| s.protocol == p).collect::<Vec<_>>();
    let rest = by(Protocol::Http);
    assert_eq!(rest.len(), 2, "{seen:?}");
    assert!(
        rest[0].ok && rest[0].outputs == 2 && rest[0].batch_rows == 1,
        "{:?}",
        rest[0]
    );
    assert_eq!(rest[0].request_id.as_deref(), Some("rest-1"));
    assert_eq!(rest[0].inputs, ["INPUT0", "INPUT1"]);
    assert!(!rest[1].ok && rest[1].error.contains("NOPE"), "{:?}", rest[1]);
    let unary = by(Protocol::Grpc);
    assert_eq!(unary.len(), 1);
    assert_eq!((unary[0].model.as_str(), unary[0].version), ("add_sub_pt", 1));
    assert_eq!(unary[0].request_id.as_deref(), Some("grpc-1"));
    assert!(unary[0].ok);
    assert_eq!(by(Protocol::GrpcStream).len(), 2);

    // The per-version tap saw add_sub's four and nothing of add_sub_pt.
    let mine = add_sub.seen.lock().unwrap().clone();
    assert_eq!(mine.len(), 4, "{mine:?}");
    assert!(mine.iter().all(|s| s.model == "add_sub"));

    // The request a tap sees holds small tensors in a buffer of its own,
    // equal to the caller's: a kept request must not pin the buffer its
    // message was read into (large tensors stay shared: engine unit tests).
    let data = Bytes::from((0..16).flat_map(|i: i32| i.to_le_bytes()).collect::<Vec<u8>>());
    let tensor = |name: &str| Tensor {
        name: name.into(),
        datatype: DataType::Int32,
        shape: vec![1, 16],
        data: data.clone(),
    };
    let request = InferRequest {
        model_name: "add_sub".into(),
        inputs: vec![tensor("INPUT0"), tensor("INPUT1")],
        ..Default::default()
    };
    server.engine.infer(request, &Context::internal()).await.unwrap();
    let last = everything.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.protocol, Protocol::Internal);
    let (at, len) = last.first_input.unwrap();
    assert_eq!(len, data.len());
    assert_ne!(at, data.as_ptr() as usize);
    assert_eq!(last.first_data.as_ref(), Some(&data));

    // A shadowed request: the client's exchange names its variant, and the
    // shadow's run is an exchange of its own, on the shadow's version.
    let policy = serde_json::json!({
        "variants": [{"name": "onnx", "weight": 1}, {"name": "torch", "model": "add_sub_pt", "weight": 0}],
        "shadow": {"variant": "torch", "percent": 100}
    });
    let r = client
        .put(format!("{http}/v2/models/add_sub/traffic"))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let before = everything.seen.lock().unwrap().len();
    let r = client
        .post(format!("{http}/v2/models/add_sub/infer"))
        .json(&add_sub_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, "the shadow's exchange", || {
        let everything = Arc::clone(&everything);
        async move { everything.seen.lock().unwrap().len() >= before + 2 }
    })
    .await;
    let seen = everything.seen.lock().unwrap()[before..].to_vec();
    let client_side = seen
        .iter()
        .find(|s| s.kind == Kind::Client)
        .expect("the client's exchange");
    assert_eq!(
        (client_side.model.as_str(), client_side.variant.as_deref()),
        ("add_sub", Some("onnx"))
    );
    let shadow = seen
        .iter()
        .find(|s| s.kind == Kind::Shadow)
        .expect("the shadow's exchange");
    assert_eq!(
        (shadow.model.as_str(), shadow.variant.as_deref()),
        ("add_sub_pt", Some("torch"))
    );
    assert!(shadow.ok && shadow.inputs == ["INPUT0", "INPUT1"], "{shadow:?}");
    assert_eq!(shadow.protocol, Protocol::Internal);

    server.shutdown(std::time::Duration::ZERO).await;
}
