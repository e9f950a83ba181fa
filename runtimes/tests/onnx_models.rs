//! The ONNX runtime against the demo models in `models/`, on the real ONNX
//! Runtime library (fetched by scripts/fetch-onnxruntime.sh).
use std::path::PathBuf;

use bytes::Bytes;
use quiver_runtimes::onnx::{OnnxModel, OnnxOptions, init};
use quiver_runtimes::{DataType, InputBatch, Runtime, Tensor};

fn batch(inputs: &[Tensor]) -> Vec<InputBatch<'_>> {
    inputs.iter().map(InputBatch::single).collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(model: &str) -> OnnxModel {
    try_load(model, &OnnxOptions::default()).expect("model loads")
}

fn try_load(model: &str, options: &OnnxOptions) -> Result<OnnxModel, quiver_runtimes::RuntimeError> {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/onnxruntime/libonnxruntime.so"));
    init(&lib).expect("ONNX Runtime loads");
    OnnxModel::load(&root().join("models").join(model).join("1/model.onnx"), options)
}

fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Bytes {
    values.iter().flat_map(|v| to(*v)).collect::<Vec<u8>>().into()
}

#[test]
fn add_sub_adds_and_subtracts() {
    let mut model = load("add_sub");
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = (0..16).map(|i| 100 - i).collect();
    let inputs = [
        Tensor {
            name: "INPUT0".into(),
            datatype: DataType::Int32,
            shape: vec![1, 16],
            data: le(&a, i32::to_le_bytes),
        },
        Tensor {
            name: "INPUT1".into(),
            datatype: DataType::Int32,
            shape: vec![1, 16],
            data: le(&b, i32::to_le_bytes),
        },
    ];
    let out = model
        .run(&batch(&inputs), &["OUTPUT1".into(), "OUTPUT0".into()])
        .unwrap();
    assert_eq!(out[0].name, "OUTPUT1");
    assert_eq!(out[0].shape, vec![1, 16]);
    let diff: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(out[0].data, le(&diff, i32::to_le_bytes));
    assert_eq!(out[1].data, le(&sum, i32::to_le_bytes));
}

#[test]
fn io_metadata_comes_from_the_model_file() {
    let model = load("linear_noconfig");
    let io = model.io();
    assert_eq!(io.inputs[0].name, "x");
    assert_eq!(io.inputs[0].datatype, DataType::Fp32);
    assert_eq!(io.inputs[0].shape, vec![-1, 4]);
    assert_eq!(io.outputs[0].shape, vec![-1, 3]);
}

#[test]
fn every_datatype_passes_through_identity() {
    for bind_io in [false, true] {
        let options = OnnxOptions {
            bind_io,
            ..Default::default()
        };
        every_datatype_passes_through(try_load("all_types", &options).expect("model loads"));
    }
}

fn every_datatype_passes_through(mut model: OnnxModel) {
    let inputs: Vec<Tensor> = model
        .io()
        .inputs
        .clone()
        .into_iter()
        .map(|spec| {
            let data: Bytes = match spec.datatype.size() {
                Some(size) => (0..4 * size)
                    .map(|i| (i * 37 % 251) as u8 & if spec.datatype == DataType::Bool { 1 } else { 0xff })
                    .collect::<Vec<u8>>()
                    .into(),
                None => {
                    let mut v = Vec::new();
                    for s in ["", "a", "héllo", "xyz"] {
                        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
                        v.extend_from_slice(s.as_bytes());
                    }
                    v.into()
                }
            };
            Tensor {
                name: spec.name,
                datatype: spec.datatype,
                shape: vec![1, 4],
                data,
            }
        })
        .collect();
    let out = model.run(&batch(&inputs), &[]).unwrap();
    assert_eq!(out.len(), 13);
    for (i, o) in inputs.iter().zip(&out) {
        assert_eq!(o.name, i.name.replace("IN_", "OUT_"));
        assert_eq!(o.datatype, i.datatype);
        assert_eq!(o.data, i.data, "{}", o.name);
    }
}

/// A CPU session reads a one-request batch where it lies (aligned or not,
/// lent or copied, the answer is the same), and an identity's output never
/// points into the request's bytes: it must outlive them.
#[test]
fn inputs_read_in_place_answer_as_copied_ones_and_outputs_own_their_bytes() {
    let mut model = load("all_types");
    for offset in [0usize, 1] {
        let inputs: Vec<Tensor> = model
            .io()
            .inputs
            .iter()
            .map(|spec| {
                // A BYTES tensor (always copied) holds 64 one-letter strings.
                let size = spec.datatype.size().unwrap_or(5);
                let byte = |i: usize| match spec.datatype {
                    DataType::Bytes => [1, 0, 0, 0, b'a' + (i / 5 % 26) as u8][i % 5],
                    DataType::Bool => (i * 37 % 251) as u8 & 1,
                    _ => (i * 37 % 251) as u8,
                };
                let mut wire = vec![0u8; offset];
                wire.extend((0..64 * size).map(byte));
                let wire = Bytes::from(wire);
                Tensor {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    shape: vec![16, 4],
                    data: wire.slice(offset..),
                }
            })
            .collect();
        let wanted: Vec<String> = inputs.iter().map(|t| t.name.replace("IN_", "OUT_")).collect();
        let expected: Vec<Vec<u8>> = inputs.iter().map(|t| t.data.to_vec()).collect();
        let out = model.run(&batch(&inputs), &wanted).unwrap();
        for (i, o) in inputs.iter().zip(&out) {
            let input = i.data.as_ptr() as usize..i.data.as_ptr() as usize + i.data.len();
            assert!(
                !input.contains(&(o.data.as_ptr() as usize)),
                "{} aliases its input",
                o.name
            );
        }
        drop(inputs);
        for ((o, e), name) in out.iter().zip(&expected).zip(&wanted) {
            assert_eq!(&o.name, name);
            assert_eq!(o.data.as_ref(), e.as_slice(), "{name} at offset {offset}");
        }
    }
}

/// A graph output that is its input: ONNX Runtime may hand back the buffer
/// it was lent; the answer must still own its bytes once the request is gone.
#[test]
fn an_input_handed_back_as_an_output_is_copied_out_of_the_request() {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/onnxruntime/libonnxruntime.so"));
    init(&lib).expect("ONNX Runtime loads");
    let mut model =
        OnnxModel::load(&root().join("tests/fixtures/passthrough.onnx"), &OnnxOptions::default()).expect("model loads");
    let values: Vec<f32> = (0..32).map(|i| i as f32 * 0.5).collect();
    let inputs = vec![Tensor {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![8, 4],
        data: le(&values, f32::to_le_bytes),
    }];
    let at = inputs[0].data.as_ptr() as usize;
    let span = at..at + inputs[0].data.len();
    let out = model.run(&batch(&inputs), &["x".into(), "y".into()]).unwrap();
    drop(inputs);
    let expected = le(&values, f32::to_le_bytes);
    for o in &out {
        assert!(
            !span.contains(&(o.data.as_ptr() as usize)),
            "{} points into the request",
            o.name
        );
        assert_eq!(o.data, expected, "{}", o.name);
    }
}

#[test]
fn non_utf8_bytes_for_a_string_tensor_is_invalid_input() {
    let mut model = load("text_greet");
    let mut v = 2u32.to_le_bytes().to_vec();
    v.extend_from_slice(&[0xff, 0xfe]);
    let input = Tensor {
        name: "name".into(),
        datatype: DataType::Bytes,
        shape: vec![1],
        data: v.into(),
    };
    let err = model.run(&batch(&[input]), &[]).unwrap_err();
    assert!(matches!(err, quiver_runtimes::RuntimeError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn parts_are_laid_end_to_end_along_dim_0() {
    let mut model = load("fraud_mlp");
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|r| (0..32).map(|i| (r * 32 + i) as f32 / 50.0).collect())
        .collect();
    let bytes: Vec<Bytes> = rows.iter().map(|r| le(r, f32::to_le_bytes)).collect();
    let alone: Vec<Bytes> = bytes
        .iter()
        .map(|b| {
            let input = InputBatch {
                name: "input",
                datatype: DataType::Fp32,
                shape: vec![1, 32],
                parts: vec![b],
            };
            model.run(&[input], &[]).unwrap().remove(0).data
        })
        .collect();
    let joined = InputBatch {
        name: "input",
        datatype: DataType::Fp32,
        shape: vec![3, 32],
        parts: bytes.iter().map(|b| &b[..]).collect(),
    };
    let out = model.run(&[joined], &[]).unwrap().remove(0);
    assert_eq!(out.shape, vec![3, 2]);
    for (i, a) in alone.iter().enumerate() {
        let got: Vec<f32> = out.data[i * 8..i * 8 + 8]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let want: Vec<f32> = a
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "row {i}: {got:?} vs {want:?}");
        }
    }
}

/// The I/O-binding path (what GPU instances run, here on the CPU allocator)
/// computes what the plain path computes, output by output.
#[test]
fn io_binding_answers_as_the_plain_run_does() {
    let mut plain = load("conv_net");
    let mut bound = try_load(
        "conv_net",
        &OnnxOptions {
            bind_io: true,
            ..Default::default()
        },
    )
    .unwrap();
    let spec = plain.io().inputs[0].clone();
    let shape: Vec<i64> = spec.shape.iter().map(|&d| if d < 0 { 3 } else { d }).collect();
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let input = [Tensor {
        name: spec.name.clone(),
        datatype: DataType::Fp32,
        shape,
        data: le(&values, f32::to_le_bytes),
    }];
    let a = plain.run(&batch(&input), &[]).unwrap();
    let b = bound.run(&batch(&input), &[]).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.name, &x.shape, x.datatype), (&y.name, &y.shape, y.datatype));
        assert!(!x.data.is_empty());
        assert_eq!(x.data, y.data, "{}", x.name);
    }
    // Only the outputs asked for are bound and returned.
    let name = a[0].name.clone();
    let one = bound.run(&batch(&input), std::slice::from_ref(&name)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].data, a[0].data);
}

/// No silent fall back: a GPU provider that cannot start fails the load and
/// says which provider and what is missing.
#[test]
fn a_gpu_provider_that_cannot_start_fails_the_load_with_the_reason() {
    use quiver_runtimes::onnx::providers::{Provider, ProviderKind};
    for kind in [ProviderKind::Cuda, ProviderKind::TensorRt] {
        let options = OnnxOptions {
            providers: vec![Provider {
                kind,
                options: vec![("device_id".into(), "0".into())],
            }],
            ..Default::default()
        };
        let e = try_load("add_sub", &options).err().expect("no GPU here").to_string();
        eprintln!("{e}");
        assert!(
            e.contains(&format!("ONNX Runtime's {} execution provider", kind.name())),
            "{e}"
        );
        // Either the build lacks the provider, or a library it needs is
        // missing: both are named.
        assert!(e.contains("CPU-only build") || e.contains(".so"), "{e}");
    }
}
