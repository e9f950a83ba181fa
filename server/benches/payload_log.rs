//! What the payload log costs per request, off the request path: the two
//! events (request and answer) of a fraud_mlp-sized exchange (32 FP32 in,
//! 2 out) encoded as a file line / batch member (structured) and as a
//! binary-mode POST body; and, for scale, the REST answer of an
//! embedding model (768 FP32 per row, 8 rows) as V2 JSON, the same tensor
//! writer. `cargo bench -p quiver-server --bench payload_log`.
use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_engine::request::{InferRequest, InferResponse};
use quiver_runtimes::{DataType, Tensor};
use quiver_server::payload_log::{Event, EventId, Framing, Mode, Origin, Record, Settings};

fn tensor(name: &str, n: usize) -> Tensor {
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: vec![1, n as i64],
        data: (0..n)
            .flat_map(|i| (i as f32 * 0.37 - 3.1).to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

fn record() -> Arc<Record> {
    let settings = Settings {
        mode: Some(Mode::All),
        url: None,
        file: true,
        sample_rate: 1.0,
        metadata_headers: Vec::new(),
        redact_inputs: Vec::new(),
        redact_headers: Vec::new(),
        max_event_bytes: 1 << 20,
    };
    Arc::new(Record {
        origin: Arc::new(Origin::new(
            "fraud_mlp".into(),
            1,
            "http://localhost:8080/v2/models/fraud_mlp/versions/1".into(),
            settings,
            ("fraud".into(), "ml".into(), "predictor".into()),
        )),
        id: EventId::new(),
        endpoint: "default".into(),
        shadow: false,
        framing: Framing::Json,
        metadata: String::new(),
        received: SystemTime::now(),
        answered: SystemTime::now(),
        request: Some(Arc::new(InferRequest {
            model_name: "fraud_mlp".into(),
            inputs: vec![tensor("input", 32)],
            ..Default::default()
        })),
        outcome: Ok(InferResponse {
            model_name: "fraud_mlp".into(),
            model_version: "1".into(),
            id: String::new(),
            outputs: vec![tensor("probabilities", 2)],
        }),
    })
}

fn bench(c: &mut Criterion) {
    let r = record();
    let events = [true, false].map(|request| Event {
        record: Arc::clone(&r),
        request,
        recorded: SystemTime::now(),
    });
    let mut out = Vec::with_capacity(4096);
    c.bench_function("payload_log/structured request+answer (fraud_mlp)", |b| {
        b.iter(|| {
            out.clear();
            for e in &events {
                black_box(e.write_structured(&mut out));
            }
        })
    });
    let embedding = InferResponse {
        model_name: "embedder".into(),
        model_version: "1".into(),
        id: String::new(),
        outputs: vec![Tensor {
            shape: vec![8, 768],
            ..tensor("embedding", 8 * 768)
        }],
    };
    c.bench_function("json/answer 8x768 FP32 (an embedding model's REST answer)", |b| {
        b.iter(|| {
            black_box(quiver_engine::codec::json::encode_response(
                &embedding,
                &Default::default(),
            ))
        })
    });
    c.bench_function("payload_log/binary-mode bodies and headers (fraud_mlp)", |b| {
        b.iter(|| {
            for e in &events {
                out.clear();
                let body = e.write_body(&mut out);
                black_box(e.headers(&body));
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
