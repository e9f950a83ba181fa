//! The monitoring thread's work per request and per window: adding a
//! fraud_mlp request (1 row and 64 rows of 32 FP32 features) to a window,
//! and judging a closed window of 1,000 rows (32 features, every method).
use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_engine::repository::model_config::{IoSpec, ModelSpec};
use quiver_monitor::judge::judge;
use quiver_monitor::profile;
use quiver_monitor::reference::{Array, Values};
use quiver_monitor::settings::Settings;
use quiver_monitor::values::Elements;
use quiver_monitor::window::Window;
use quiver_runtimes::DataType;

const FEATURES: usize = 32;

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed | 1;
    (0..n * FEATURES)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect()
}

fn monitor(c: &mut Criterion) {
    let spec = ModelSpec {
        name: "fraud_mlp".into(),
        platform: "onnxruntime_onnx".into(),
        max_batch_size: 64,
        inputs: vec![IoSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            dims: vec![FEATURES as i64],
            optional: false,
        }],
        outputs: vec![],
        utf8_strings: false,
    };
    let settings = Settings::defaults(Duration::from_secs(60), 500);
    let reference = Array {
        shape: vec![5000, FEATURES],
        values: Values::Numbers {
            values: values(5000, 1),
            integral: false,
        },
    };
    let arrays = BTreeMap::from([("input".to_owned(), reference)]);
    let p = profile::build("reference.npz".into(), &arrays, &spec, &settings).unwrap();
    let tensor = &p.tensors[0];
    let mut g = c.benchmark_group("monitor");
    for rows in [1usize, 64] {
        let bytes: Vec<u8> = values(rows, 7).iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
        // A window past its reservoir's fill: the steady state.
        let mut w = Window::new(&p.tensors, 3);
        let warm: Vec<u8> = values(2000, 9).iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
        w.add(
            0,
            tensor,
            &Elements::new(DataType::Fp32, &warm).unwrap(),
            2000,
            FEATURES,
            settings.reservoir,
        );
        g.bench_function(format!("add {rows} row(s) of 32 features"), |b| {
            b.iter(|| {
                let cells = Elements::new(DataType::Fp32, &bytes).unwrap();
                w.add(0, tensor, &cells, rows, FEATURES, settings.reservoir);
            })
        });
    }
    let mut w = Window::new(&p.tensors, 5);
    let data: Vec<u8> = values(1000, 11)
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    w.add(
        0,
        tensor,
        &Elements::new(DataType::Fp32, &data).unwrap(),
        1000,
        FEATURES,
        settings.reservoir,
    );
    g.bench_function("judge a window of 1000 rows x 32 features", |b| {
        b.iter(|| {
            tensor
                .features
                .iter()
                .zip(&w.tensors[0].features)
                .map(|(f, fw)| judge(f, fw, &settings, p.tests).state as u8)
                .sum::<u8>()
        })
    });
    g.finish();
}

criterion_group!(benches, monitor);
criterion_main!(benches);
