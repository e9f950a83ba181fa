//! One request end to end through the engine (validate, queue, instance
//! thread, batch join/split, answer) on the Echo mock runtime: the engine's
//! own overhead, without a model's compute or a network in the way.
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_engine::Engine;
use quiver_engine::load::LoadOptions;
use quiver_engine::repository::model_config::parse;
use quiver_engine::request::InferRequest;
use quiver_engine::tap::Context;
use quiver_runtimes::mock::Echo;
use quiver_runtimes::{DataType, ModelIo, Tensor, TensorSpec};

fn engine(c: &mut Criterion) {
    let options = LoadOptions {
        default_max_batch_size: 64,
        intra_op_threads: 1,
        queue_capacity: 4096,
        delay_policy: Default::default(),
        instance_scheduling: Default::default(),
        model_name: None,
        default_warmup: false,
        control: quiver_engine::repository::ControlMode::None,
        parallel_loads: 1,
        strict_readiness: false,
        backends: Default::default(),
    };
    let engine = Arc::new(Engine::new("unused".into(), options));
    let io = ModelIo {
        inputs: vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 32],
        }],
        outputs: vec![TensorSpec {
            name: "y".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 32],
        }],
    };
    for (name, config) in [
        ("alone", "max_batch_size: 64"),
        (
            "batched",
            "max_batch_size: 64 dynamic_batching { max_queue_delay_microseconds: 0 }",
        ),
    ] {
        engine
            .add_model(name, parse(config).unwrap(), vec![Box::new(Echo::new(io.clone()))])
            .unwrap();
    }
    let request = |model: &str| InferRequest {
        model_name: model.into(),
        inputs: vec![Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 32],
            data: vec![0u8; 128].into(),
        }],
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("engine/echo_32_fp32");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.iter(|| {
            runtime
                .block_on(engine.infer(request("alone"), &Context::internal()))
                .unwrap()
        });
    });
    // 64 requests at once: with dynamic batching they share executions.
    for model in ["alone", "batched"] {
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("concurrent_64_{model}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tasks: Vec<_> = (0..64)
                        .map(|_| {
                            let engine = Arc::clone(&engine);
                            let req = request(model);
                            tokio::spawn(async move { engine.infer(req, &Context::internal()).await.unwrap() })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
