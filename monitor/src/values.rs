//! Reading elements out of a live tensor's bytes (little-endian, as the
//! wire and the runtimes have them, possibly unaligned), without copying
//! the tensor.
use quiver_runtimes::{DataType, bytes_elements};

/// A tensor's elements, read in place.
pub enum Elements<'a> {
    Numbers { datatype: DataType, data: &'a [u8] },
    Strings(Vec<&'a [u8]>),
}

impl<'a> Elements<'a> {
    /// `None` when the bytes do not hold whole elements of the type.
    pub fn new(datatype: DataType, data: &'a [u8]) -> Option<Elements<'a>> {
        match datatype.size() {
            Some(size) if data.len().is_multiple_of(size) => Some(Elements::Numbers { datatype, data }),
            Some(_) => None,
            None => bytes_elements(data)
                .collect::<Result<_, _>>()
                .ok()
                .map(Elements::Strings),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            Elements::Numbers { datatype, data } => data.len() / datatype.size().unwrap_or(1),
            Elements::Strings(s) => s.len(),
        }
    }

    /// Element `i` as a number (`None` for a string tensor).
    pub fn number(&self, i: usize) -> Option<f64> {
        let Elements::Numbers { datatype, data } = self else {
            return None;
        };
        let size = datatype.size()?;
        let b = data.get(i * size..(i + 1) * size)?;
        Some(match datatype {
            DataType::Bool => (b[0] != 0) as u8 as f64,
            DataType::Uint8 => b[0] as f64,
            DataType::Int8 => b[0] as i8 as f64,
            DataType::Uint16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            DataType::Int16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            DataType::Fp16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            DataType::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            DataType::Uint32 => u32::from_le_bytes(b.try_into().ok()?) as f64,
            DataType::Int32 => i32::from_le_bytes(b.try_into().ok()?) as f64,
            DataType::Fp32 => f32::from_le_bytes(b.try_into().ok()?) as f64,
            DataType::Uint64 => u64::from_le_bytes(b.try_into().ok()?) as f64,
            DataType::Int64 => i64::from_le_bytes(b.try_into().ok()?) as f64,
            DataType::Fp64 => f64::from_le_bytes(b.try_into().ok()?),
            DataType::Bytes => return None,
        })
    }

    pub fn string(&self, i: usize) -> Option<&'a [u8]> {
        match self {
            Elements::Strings(s) => s.get(i).copied(),
            Elements::Numbers { .. } => None,
        }
    }
}

/// A category's key: an integral number or a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Code(i64),
    Text(Vec<u8>),
}

impl Category {
    /// The category of a number, when it is one (finite and integral).
    pub fn of_number(v: f64) -> Option<i64> {
        (v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
    }

    pub fn label(&self) -> String {
        match self {
            Category::Code(c) => c.to_string(),
            Category::Text(t) => String::from_utf8_lossy(t).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_in_place_and_strings_by_their_prefixes() {
        let data: Vec<u8> = [1.5f32, f32::NAN].iter().flat_map(|f| f.to_le_bytes()).collect();
        let e = Elements::new(DataType::Fp32, &data).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.number(0), Some(1.5));
        assert!(e.number(1).unwrap().is_nan());
        assert!(Elements::new(DataType::Fp32, &data[..3]).is_none());
        let mut s = Vec::new();
        for w in [&b"ab"[..], b"c"] {
            s.extend((w.len() as u32).to_le_bytes());
            s.extend(w);
        }
        let e = Elements::new(DataType::Bytes, &s).unwrap();
        assert_eq!(e.string(1), Some(&b"c"[..]));
        assert_eq!(Category::of_number(3.0), Some(3));
        assert_eq!(Category::of_number(3.5), None);
    }
}
