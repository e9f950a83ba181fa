//! `ModelStreamInfer` load: each stream sends its requests as fast as the
//! stream takes them and reads the answers as they come, so what is measured
//! is how much a server overlaps the requests of one stream. Each request's
//! latency runs from when it was handed to the stream to when its answer
//! (matched by `id`) arrived.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::run::Measured;

/// `streams` streams at once, each sending `requests` requests; the result
/// spans from the first send to the last answer.
pub async fn run(
    client: &GrpcInferenceServiceClient<Channel>,
    request: &ModelInferRequest,
    streams: usize,
    requests: u64,
) -> Measured {
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams.max(1))
        .map(|_| tokio::spawn(one(client.clone(), request.clone(), requests)))
        .collect();
    let mut total = Measured::new();
    for t in tasks {
        match t.await {
            Ok(m) => total.merge(m),
            Err(e) => *total.errors.entry(format!("stream task: {e}")).or_default() += 1,
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn one(mut client: GrpcInferenceServiceClient<Channel>, request: ModelInferRequest, n: u64) -> Measured {
    let mut m = Measured::new();
    let sent = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    // A small channel: the stream, not the generator's memory, holds the backlog.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let writer = {
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for i in 0..n {
                let mut r = request.clone();
                r.id = i.to_string();
                // Stamped before the send: its answer may come back before
                // this task runs again.
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
                if tx.send(r).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut answers = match client.model_stream_infer(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            m.errors.insert(format!("gRPC {:?}", s.code()), n);
            return m;
        }
    };
    let mut received = 0;
    while received < n {
        match answers.message().await {
            Ok(Some(a)) => {
                received += 1;
                let now = Instant::now();
                let id = a.infer_response.as_ref().and_then(|r| r.id.parse::<usize>().ok());
                let latency = id
                    .and_then(|i| sent.lock().unwrap_or_else(|e| e.into_inner()).get(i).copied())
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                let result = match (a.error_message.is_empty(), id) {
                    (false, _) => Err(format!("stream error: {}", a.error_message)),
                    (true, None) => Err("answer without a known id".to_owned()),
                    (true, Some(_)) => Ok(()),
                };
                m.record(latency, result);
            }
            Ok(None) => break,
            Err(s) => {
                *m.errors.entry(format!("gRPC {:?}", s.code())).or_default() += n - received;
                break;
            }
        }
    }
    if received < n {
        *m.errors.entry("stream ended early".to_owned()).or_default() += n - received;
    }
    let _ = writer.await;
    m
}
