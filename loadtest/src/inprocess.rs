//! The compute ceiling: the same model on ONNX Runtime, called directly in a
//! loop at a fixed batch size, with no server in between.
use std::path::Path;
use std::time::{Duration, Instant};

use quiver_runtimes::onnx::{OnnxModel, OnnxOptions};
use quiver_runtimes::{InputBatch, Runtime};

use crate::run::Measured;
use crate::workload::{InputSpec, raw_data};

pub fn run(
    library: &Path,
    model: &Path,
    batch: usize,
    intra_op_threads: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Measured> {
    quiver_runtimes::onnx::init(library)?;
    let options = OnnxOptions {
        intra_op_threads,
        inter_op_threads: 1,
        graph_level: 0,
    };
    let mut session = OnnxModel::load(model, &options)?;
    let specs: Vec<InputSpec> = session
        .io()
        .inputs
        .iter()
        .map(|t| InputSpec {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_owned(),
            shape: t
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d >= 0 {
                        d
                    } else if i == 0 {
                        batch as i64
                    } else {
                        1
                    }
                })
                .collect(),
        })
        .collect();
    let data: Vec<bytes::Bytes> = specs.iter().enumerate().map(|(i, s)| raw_data(s, i as u64)).collect();
    let inputs: Vec<InputBatch<'_>> = specs
        .iter()
        .zip(&data)
        .map(|(s, d)| InputBatch {
            name: &s.name,
            datatype: quiver_runtimes::DataType::parse(&s.datatype).expect("datatype from the model"),
            shape: s.shape.clone(),
            parts: vec![d],
        })
        .collect();
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut m = Measured::new();
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let result = session.run(&inputs, &[]).map(|_| ()).map_err(|e| e.to_string());
        if t0 >= measure_from {
            m.record(t0.elapsed(), result);
        }
    }
    m.elapsed = duration;
    Ok(m)
}
