//! Triton's classification extension: an output asked for with
//! `"parameters": {"classification": k}` is answered as its k highest
//! values per batch row, each a BYTES element `"<value>:<index>"`, or
//! `"<value>:<index>:<label>"` when the output has a `label_filename` (the
//! label on line `index` of that file, in the model's folder).
//!
//! Triton's formatting is kept: values as C++'s `std::to_string` writes them
//! (six decimals for FP32 and FP64, plain integers otherwise), highest first.
//! Ties keep index order, where Triton's unstable sort leaves them in any.
//! The shape is `[batch, min(k, n)]` for a model that batches, else
//! `[min(k, n)]`, n being the elements of a row.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use quiver_runtimes::{DataType, Tensor};

/// Each output's labels, by output name (from its `label_filename`).
pub type Labels = HashMap<String, Arc<[String]>>;

/// Whether an output of this datatype can be classified (Triton's list).
pub fn classifiable(datatype: DataType) -> bool {
    !matches!(
        datatype,
        DataType::Bool | DataType::Bytes | DataType::Fp16 | DataType::Bf16
    )
}

/// Reads the label files the config's outputs name, from the model folder.
pub fn read_labels(config: &quiver_proto::inference::ModelConfig, model_dir: &Path) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for output in config.output.iter().filter(|o| !o.label_filename.is_empty()) {
        let path = model_dir.join(&output.label_filename);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "output '{}': cannot read its label_filename {}: {e}",
                output.name,
                path.display()
            )
        })?;
        labels.insert(output.name.clone(), text.lines().map(str::to_owned).collect());
    }
    Ok(labels)
}

/// One value as `std::to_string` writes it.
fn value(datatype: DataType, bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    let mut b8 = [0u8; 8];
    b8[..bytes.len()].copy_from_slice(bytes);
    let _ = match datatype {
        DataType::Fp32 => write!(out, "{:.6}", f32::from_le_bytes(b8[..4].try_into().unwrap_or_default())),
        DataType::Fp64 => write!(out, "{:.6}", f64::from_le_bytes(b8)),
        DataType::Int8 => write!(out, "{}", bytes[0] as i8),
        DataType::Int16 => write!(out, "{}", i16::from_le_bytes([b8[0], b8[1]])),
        DataType::Int32 => write!(out, "{}", i32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]])),
        DataType::Int64 => write!(out, "{}", i64::from_le_bytes(b8)),
        _ => write!(out, "{}", u64::from_le_bytes(b8)),
    };
}

/// The element at `i` as f64, for ordering (every classifiable type fits,
/// 64-bit integers up to rounding).
fn key(datatype: DataType, row: &[u8], i: usize) -> f64 {
    let size = datatype.size().unwrap_or(1);
    let b = &row[i * size..(i + 1) * size];
    let mut b8 = [0u8; 8];
    b8[..size].copy_from_slice(b);
    match datatype {
        DataType::Fp32 => f32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]]).into(),
        DataType::Fp64 => f64::from_le_bytes(b8),
        DataType::Int8 => (b[0] as i8).into(),
        DataType::Int16 => i16::from_le_bytes([b8[0], b8[1]]).into(),
        DataType::Int32 => i32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]]).into(),
        DataType::Int64 => i64::from_le_bytes(b8) as f64,
        _ => u64::from_le_bytes(b8) as f64,
    }
}

/// `t` classified: its top `k` per batch row as BYTES.
pub fn classify(t: &Tensor, k: usize, batched: bool, labels: Option<&[String]>) -> Result<Tensor, String> {
    if !classifiable(t.datatype) {
        return Err(format!(
            "output '{}': class results are not available for datatype {}",
            t.name, t.datatype
        ));
    }
    let size = t.datatype.size().unwrap_or(1);
    let elements = t.data.len() / size;
    let rows = match (batched, t.shape.first()) {
        (true, Some(&b)) if b > 0 => b as usize,
        (true, _) => 0,
        (false, _) => 1,
    };
    let per_row = elements.checked_div(rows).unwrap_or(0);
    let take = k.min(per_row);
    let mut data = Vec::with_capacity(rows * take * 24);
    let mut text = String::new();
    let mut order: Vec<usize> = Vec::with_capacity(per_row);
    for row in t.data.chunks(per_row * size).take(rows) {
        order.clear();
        order.extend(0..per_row);
        order.sort_by(|&a, &b| key(t.datatype, row, b).total_cmp(&key(t.datatype, row, a)));
        for &i in &order[..take] {
            text.clear();
            value(t.datatype, &row[i * size..(i + 1) * size], &mut text);
            text.push(':');
            text.push_str(&i.to_string());
            if let Some(label) = labels.and_then(|l| l.get(i)) {
                text.push(':');
                text.push_str(label);
            }
            data.extend_from_slice(&(text.len() as u32).to_le_bytes());
            data.extend_from_slice(text.as_bytes());
        }
    }
    let shape = if batched {
        vec![rows as i64, take as i64]
    } else {
        vec![take as i64]
    };
    Ok(Tensor {
        name: t.name.clone(),
        datatype: DataType::Bytes,
        shape,
        data: Bytes::from(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(t: &Tensor) -> Vec<String> {
        quiver_runtimes::bytes_elements(&t.data)
            .map(|e| String::from_utf8(e.unwrap().to_vec()).unwrap())
            .collect()
    }

    fn fp32(shape: Vec<i64>, values: &[f32]) -> Tensor {
        Tensor {
            name: "probs".into(),
            datatype: DataType::Fp32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        }
    }

    #[test]
    fn top_k_per_row_as_triton_writes_it() {
        let t = fp32(vec![2, 3], &[0.1, 0.7, 0.2, 0.5, 0.25, 0.25]);
        let labels: Vec<String> = vec!["cat".into(), "dog".into()];
        let c = classify(&t, 2, true, Some(&labels)).unwrap();
        assert_eq!((c.datatype, c.shape.clone()), (DataType::Bytes, vec![2, 2]));
        // A row's third class has no label line: value and index only.
        assert_eq!(
            strings(&c),
            ["0.700000:1:dog", "0.200000:2", "0.500000:0:cat", "0.250000:1:dog"]
        );
        // k past the row's width gives the whole row; no batch dimension.
        let c = classify(&fp32(vec![3], &[1.0, 3.0, 2.0]), 10, false, None).unwrap();
        assert_eq!(c.shape, vec![3]);
        assert_eq!(strings(&c), ["3.000000:1", "2.000000:2", "1.000000:0"]);
    }

    #[test]
    fn integers_print_as_integers_and_unclassifiable_types_are_named() {
        let t = Tensor {
            name: "counts".into(),
            datatype: DataType::Int64,
            shape: vec![1, 3],
            data: [-4i64, 9, 2]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        };
        assert_eq!(strings(&classify(&t, 1, true, None).unwrap()), ["9:1"]);
        let t = Tensor {
            name: "half".into(),
            datatype: DataType::Fp16,
            shape: vec![2],
            data: Bytes::from_static(&[0, 0, 0, 0]),
        };
        let e = classify(&t, 1, false, None).unwrap_err();
        assert!(e.contains("'half'") && e.contains("FP16"), "{e}");
    }
}
