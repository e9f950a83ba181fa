//! Running a batch: lay the requests' inputs end to end along dim 0 (the
//! runtime copies each request's bytes once, into its own buffer), run once,
//! and slice every output back per request without copying.
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_runtimes::{InputBatch, Runtime, Tensor, bytes_elements, element_count};

use super::job::Job;
use crate::error::{Error, Result};

/// Where an execution's time went: laying out inputs, the runtime (which
/// includes its copy of the inputs), slicing the outputs back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

/// Runs `jobs` as one execution and returns each job's outputs, in the order
/// that job asked for them.
pub fn run(runtime: &mut dyn Runtime, jobs: &[Job], timing: &mut Timing) -> Result<Vec<Vec<Tensor>>> {
    let started = Instant::now();
    let [first, rest @ ..] = jobs else {
        return Ok(Vec::new());
    };
    if rest.is_empty() {
        let inputs: Vec<InputBatch<'_>> = first.inputs.iter().map(InputBatch::single).collect();
        let infer_start = Instant::now();
        timing.input += infer_start - started;
        let outputs = runtime.run(&inputs, &first.outputs);
        timing.infer += infer_start.elapsed();
        return Ok(vec![outputs?]);
    }
    let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
    let total: usize = rows.iter().sum();
    let mut inputs = Vec::with_capacity(first.inputs.len());
    for (i, head) in first.inputs.iter().enumerate() {
        let mut parts = Vec::with_capacity(jobs.len());
        for job in jobs {
            // Inputs usually come in the same order; fall back to a name search.
            let t = match job.inputs.get(i) {
                Some(t) if t.name == head.name => t,
                _ => job.inputs.iter().find(|t| t.name == head.name).ok_or_else(|| {
                    Error::internal(format!(
                        "input '{}' is missing from a request joined into the batch",
                        head.name
                    ))
                })?,
            };
            parts.push(&t.data[..]);
        }
        let mut shape = head.shape.clone();
        shape[0] = total as i64;
        inputs.push(InputBatch {
            name: &head.name,
            datatype: head.datatype,
            shape,
            parts,
        });
    }
    // Compute the union of what the requests asked for, once.
    let mut names: Vec<String> = first.outputs.clone();
    for job in rest {
        for o in &job.outputs {
            if !names.contains(o) {
                names.push(o.clone());
            }
        }
    }
    let infer_start = Instant::now();
    timing.input += infer_start - started;
    let outputs = runtime.run(&inputs, &names);
    let output_start = Instant::now();
    timing.infer += output_start - infer_start;
    let outputs = outputs?;
    let mut per_job: Vec<Vec<Tensor>> = jobs.iter().map(|j| Vec::with_capacity(j.outputs.len())).collect();
    for (name, tensor) in names.iter().zip(outputs) {
        let pieces = split_rows(&tensor, &rows).map_err(Error::internal)?;
        for ((job, out), piece) in jobs.iter().zip(per_job.iter_mut()).zip(pieces) {
            if job.outputs.contains(name) {
                out.push(piece);
            }
        }
    }
    // Put each job's outputs in the order it asked for.
    for (job, out) in jobs.iter().zip(per_job.iter_mut()) {
        out.sort_by_key(|t| job.outputs.iter().position(|n| *n == t.name));
    }
    timing.output += output_start.elapsed();
    Ok(per_job)
}

/// Splits a batched tensor along dim 0 into pieces of `rows` rows each;
/// fixed-size data is sliced, never copied.
pub fn split_rows(t: &Tensor, rows: &[usize]) -> std::result::Result<Vec<Tensor>, String> {
    let total: usize = rows.iter().sum();
    if t.shape.first().copied() != Some(total as i64) {
        return Err(format!(
            "output '{}' has shape {:?}; dim 0 should be the batch's {total} rows",
            t.name, t.shape
        ));
    }
    let per_row = element_count(&t.shape[1..]).ok_or_else(|| format!("output '{}' has a bad shape", t.name))?;
    // Byte offset where each row starts (and the end).
    let offsets: Vec<usize> = match t.datatype.size() {
        Some(size) => (0..=total).map(|r| r * per_row * size).collect(),
        None => bytes_row_offsets(&t.data, per_row, total)
            .ok_or_else(|| format!("output '{}' holds malformed BYTES data", t.name))?,
    };
    if offsets.last().copied() != Some(t.data.len()) {
        return Err(format!(
            "output '{}' has {} bytes, not what its shape {:?} needs",
            t.name,
            t.data.len(),
            t.shape
        ));
    }
    let mut start_row = 0;
    Ok(rows
        .iter()
        .map(|&r| {
            let mut shape = t.shape.clone();
            shape[0] = r as i64;
            let data: Bytes = t.data.slice(offsets[start_row]..offsets[start_row + r]);
            start_row += r;
            Tensor {
                name: t.name.clone(),
                datatype: t.datatype,
                shape,
                data,
            }
        })
        .collect())
}

fn bytes_row_offsets(data: &[u8], per_row: usize, total: usize) -> Option<Vec<usize>> {
    let mut offsets = Vec::with_capacity(total + 1);
    offsets.push(0);
    let mut pos = 0;
    let mut in_row = 0;
    for item in bytes_elements(data) {
        pos += 4 + item.ok()?.len();
        in_row += 1;
        if in_row == per_row {
            offsets.push(pos);
            in_row = 0;
        }
    }
    if per_row == 0 {
        offsets.resize(total + 1, 0);
    }
    (offsets.len() == total + 1 && in_row == 0).then_some(offsets)
}

/// Identifies which requests may share a batch: the same inputs with the same
/// datatypes and non-batch dims. Hashing is only a fast pre-check; joined
/// requests are compared exactly by [`same_shape`].
pub fn shape_key(inputs: &[Tensor], batching: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut refs: Vec<&Tensor> = inputs.iter().collect();
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    for t in refs {
        t.name.hash(&mut h);
        t.datatype.hash(&mut h);
        t.shape[usize::from(batching).min(t.shape.len())..].hash(&mut h);
    }
    h.finish()
}

/// Exact check behind [`shape_key`]: `b` can join a batch that `a` leads.
pub fn same_shape(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter()
                .any(|y| y.name == x.name && y.datatype == x.datatype && y.shape.get(1..) == x.shape.get(1..))
        })
}

/// Rows a request contributes to a batch (its dim 0), 1 without batching.
pub fn rows(inputs: &[Tensor], batching: bool) -> usize {
    if !batching {
        return 1;
    }
    inputs
        .first()
        .and_then(|t| t.shape.first())
        .map_or(1, |&d| d.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_runtimes::DataType;

    fn fp32(name: &str, shape: Vec<i64>, values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into(),
        }
    }

    #[test]
    fn split_slices_without_copying() {
        let t = fp32("y", vec![3, 2], &[1., 2., 3., 4., 5., 6.]);
        let parts = split_rows(&t, &[1, 2]).unwrap();
        assert_eq!(parts[0].shape, vec![1, 2]);
        assert_eq!(parts[1].shape, vec![2, 2]);
        assert_eq!(parts[1].data.as_ptr(), t.data[8..].as_ptr());
        assert!(split_rows(&t, &[1, 1]).unwrap_err().contains("2 rows"));
    }

    #[test]
    fn split_bytes_by_elements() {
        let mut data = Vec::new();
        for s in ["a", "bb", "", "ccc"] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![2, 2],
            data: data.into(),
        };
        let parts = split_rows(&t, &[1, 1]).unwrap();
        assert_eq!(parts[0].data.as_ref(), &[1, 0, 0, 0, b'a', 2, 0, 0, 0, b'b', b'b']);
        assert_eq!(parts[1].data.len(), 4 + 4 + 3);
    }

    #[test]
    fn keys_ignore_batch_and_input_order() {
        let a = [fp32("x", vec![1, 2], &[0., 0.]), fp32("z", vec![1, 1], &[0.])];
        let b = [fp32("z", vec![3, 1], &[0.; 3]), fp32("x", vec![3, 2], &[0.; 6])];
        let c = [fp32("x", vec![1, 3], &[0.; 3]), fp32("z", vec![1, 1], &[0.])];
        assert_eq!(shape_key(&a, true), shape_key(&b, true));
        assert!(same_shape(&a, &b));
        assert_ne!(shape_key(&a, true), shape_key(&c, true));
        assert!(!same_shape(&a, &c));
        assert_eq!(rows(&b, true), 3);
        assert_eq!(rows(&b, false), 1);
    }
}
