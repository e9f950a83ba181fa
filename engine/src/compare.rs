//! Comparing a model's outputs with expected ones, element by element within
//! a tolerance: the validation gate's golden cases and deviation check, and
//! the shadow comparison of traffic splitting. Never on the request path.
use quiver_runtimes::{DataType, Tensor};
use serde::Deserialize;

/// How far an element may be from the expected one: `|a - e| <= atol + rtol * |e|`.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default)]
    pub atol: f64,
    #[serde(default)]
    pub rtol: f64,
}

impl Default for Tolerance {
    /// Tight enough to catch a wrong model, loose enough for the last bits
    /// of float32 arithmetic that differ between machines.
    fn default() -> Self {
        Tolerance { atol: 1e-6, rtol: 1e-5 }
    }
}

/// Compares outputs with expected ones by name: same shape, and every
/// element within tolerance (BYTES: equal).
pub fn compare(actual: &[Tensor], expected: &[Tensor], tolerance: Tolerance) -> Result<(), String> {
    for e in expected {
        let a = actual
            .iter()
            .find(|a| a.name == e.name)
            .ok_or_else(|| format!("output '{}' is missing", e.name))?;
        if a.shape != e.shape {
            return Err(format!(
                "output '{}' has shape {:?}, expected {:?}",
                e.name, a.shape, e.shape
            ));
        }
        if (a.datatype == DataType::Bytes) != (e.datatype == DataType::Bytes) {
            return Err(format!(
                "output '{}' is {}, expected {}",
                e.name, a.datatype, e.datatype
            ));
        }
        if e.datatype == DataType::Bytes {
            let (av, ev): (Vec<_>, Vec<_>) = (
                quiver_runtimes::bytes_elements(&a.data).collect(),
                quiver_runtimes::bytes_elements(&e.data).collect(),
            );
            if let Some(i) = (0..av.len().max(ev.len())).find(|&i| av.get(i) != ev.get(i)) {
                return Err(format!("output '{}'[{i}] differs from the expected string", e.name));
            }
            continue;
        }
        let (av, ev) = (numbers(a)?, numbers(e)?);
        let mut bad = (0..ev.len()).filter(|&i| !close(av[i], ev[i], tolerance));
        if let Some(first) = bad.next() {
            let more = bad.count();
            return Err(format!(
                "output '{}'[{first}] is {} where {} was expected (atol {}, rtol {}){}",
                e.name,
                av[first],
                ev[first],
                tolerance.atol,
                tolerance.rtol,
                match more {
                    0 => String::new(),
                    n => format!(", and {n} more element(s) differ"),
                }
            ));
        }
    }
    Ok(())
}

fn close(a: f64, e: f64, t: Tolerance) -> bool {
    if a.is_nan() || e.is_nan() {
        return a.is_nan() && e.is_nan();
    }
    if a == e {
        return true; // equal infinities too
    }
    (a - e).abs() <= t.atol + t.rtol * e.abs()
}

/// A numeric tensor's elements as f64 (validation only: never on the
/// request path).
pub fn numbers(t: &Tensor) -> Result<Vec<f64>, String> {
    let size = t
        .datatype
        .size()
        .ok_or_else(|| format!("output '{}' is not numeric", t.name))?;
    if !t.data.len().is_multiple_of(size) {
        return Err(format!(
            "output '{}' has {} bytes, not whole elements",
            t.name,
            t.data.len()
        ));
    }
    let read = |c: &[u8]| -> f64 {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        match t.datatype {
            DataType::Bool | DataType::Uint8 => c[0] as f64,
            DataType::Int8 => c[0] as i8 as f64,
            DataType::Uint16 => u16::from_le_bytes([c[0], c[1]]) as f64,
            DataType::Int16 => i16::from_le_bytes([c[0], c[1]]) as f64,
            DataType::Fp16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
            DataType::Bf16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            DataType::Uint32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Fp32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Uint64 => u64::from_le_bytes(b) as f64,
            DataType::Int64 => i64::from_le_bytes(b) as f64,
            DataType::Fp64 => f64::from_le_bytes(b),
            DataType::Bytes => f64::NAN,
        }
    };
    Ok(t.data.chunks_exact(size).map(read).collect())
}
