//! Element-wise views of raw little-endian tensor data, shared by the codecs
//! that must write numbers out one by one (JSON) or read them in (gRPC typed
//! contents). Nothing here allocates per element.
use half::{bf16, f16};
use quiver_runtimes::DataType;

/// One element of a tensor, widened to a type JSON can print.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Element<'a> {
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    /// f32-precision floats print shortest as f32 ("0.1", not "0.10000000149011612").
    Float32(f32),
    Bytes(&'a [u8]),
}

/// Calls `f` on every element of `data`. Fails only for malformed BYTES data
/// (which validation rules out before a tensor reaches an encoder).
pub fn for_each<'a, E>(
    datatype: DataType,
    data: &'a [u8],
    mut f: impl FnMut(Element<'a>) -> Result<(), E>,
    malformed: impl Fn() -> E,
) -> Result<(), E> {
    macro_rules! each {
        ($n:literal, $conv:expr) => {
            for c in data.chunks_exact($n) {
                let bytes: [u8; $n] = c.try_into().map_err(|_| malformed())?;
                f($conv(bytes))?;
            }
        };
    }
    match datatype {
        DataType::Bool => each!(1, |b: [u8; 1]| Element::Bool(b[0] != 0)),
        DataType::Uint8 => each!(1, |b: [u8; 1]| Element::Uint(b[0] as u64)),
        DataType::Uint16 => each!(2, |b| Element::Uint(u16::from_le_bytes(b) as u64)),
        DataType::Uint32 => each!(4, |b| Element::Uint(u32::from_le_bytes(b) as u64)),
        DataType::Uint64 => each!(8, |b| Element::Uint(u64::from_le_bytes(b))),
        DataType::Int8 => each!(1, |b: [u8; 1]| Element::Int(b[0] as i8 as i64)),
        DataType::Int16 => each!(2, |b| Element::Int(i16::from_le_bytes(b) as i64)),
        DataType::Int32 => each!(4, |b| Element::Int(i32::from_le_bytes(b) as i64)),
        DataType::Int64 => each!(8, |b| Element::Int(i64::from_le_bytes(b))),
        DataType::Fp16 => each!(2, |b| Element::Float32(f16::from_le_bytes(b).to_f32())),
        DataType::Bf16 => each!(2, |b| Element::Float32(bf16::from_le_bytes(b).to_f32())),
        DataType::Fp32 => each!(4, |b| Element::Float32(f32::from_le_bytes(b))),
        DataType::Fp64 => each!(8, |b| Element::Float(f64::from_le_bytes(b))),
        DataType::Bytes => {
            for item in quiver_runtimes::bytes_elements(data) {
                f(Element::Bytes(item.map_err(|_| malformed())?))?;
            }
        }
    }
    Ok(())
}

/// Appends one number to `out` as `datatype`, checking its range.
/// `Err` holds a description of what was wrong with the value.
pub fn push_int(datatype: DataType, v: i128, out: &mut Vec<u8>) -> Result<(), String> {
    macro_rules! put {
        ($t:ty) => {{
            let x = <$t>::try_from(v).map_err(|_| format!("value {v} is out of range for {datatype}"))?;
            out.extend_from_slice(&x.to_le_bytes());
        }};
    }
    match datatype {
        DataType::Uint8 => put!(u8),
        DataType::Uint16 => put!(u16),
        DataType::Uint32 => put!(u32),
        DataType::Uint64 => put!(u64),
        DataType::Int8 => put!(i8),
        DataType::Int16 => put!(i16),
        DataType::Int32 => put!(i32),
        DataType::Int64 => put!(i64),
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => push_float(datatype, v as f64, out)?,
        DataType::Bool => {
            return Err(format!("value {v} is a number; BOOL takes true or false"));
        }
        DataType::Bytes => return Err(format!("value {v} is a number; BYTES takes strings")),
    }
    Ok(())
}

/// Appends one floating-point value as `datatype` (a float type).
pub fn push_float(datatype: DataType, v: f64, out: &mut Vec<u8>) -> Result<(), String> {
    match datatype {
        DataType::Fp16 => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
        DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
        DataType::Fp32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&v.to_le_bytes()),
        other => {
            return Err(format!("value {v} is not an integer, which {other} requires"));
        }
    }
    Ok(())
}

/// Appends one BYTES element in the length-prefixed encoding.
pub fn push_bytes(item: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let len = u32::try_from(item.len()).map_err(|_| "a BYTES element is longer than 4 GiB".to_string())?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(item);
    Ok(())
}
