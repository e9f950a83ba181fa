//! Tensors as they travel through quiver: a name, a V2 datatype, a shape and
//! the raw little-endian bytes, row-major. BYTES tensors use the encoding of the
//! binary extension and of gRPC raw contents (a 4-byte little-endian length
//! before each element), so every wire format can hand its buffer over as is.
use bytes::Bytes;

/// The fourteen datatypes of the Open Inference Protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
    Bf16,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// The protocol's name for the datatype ("FP32", "BYTES", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    /// Parses a protocol datatype name; `None` for anything else.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Bytes per element, `None` for BYTES (variable length).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// Triton's `DataType` enum value in `config.pbtxt` (`TYPE_FP32` = 11, ...).
    pub fn config_code(self) -> i32 {
        match self {
            DataType::Bool => 1,
            DataType::Uint8 => 2,
            DataType::Uint16 => 3,
            DataType::Uint32 => 4,
            DataType::Uint64 => 5,
            DataType::Int8 => 6,
            DataType::Int16 => 7,
            DataType::Int32 => 8,
            DataType::Int64 => 9,
            DataType::Fp16 => 10,
            DataType::Fp32 => 11,
            DataType::Fp64 => 12,
            DataType::Bytes => 13,
            DataType::Bf16 => 14,
        }
    }

    /// Inverse of [`DataType::config_code`]; `None` for `TYPE_INVALID` and unknown codes.
    pub fn from_config_code(code: i32) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.config_code() == code)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named tensor. `data` is shared, never copied when sliced or cloned.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

impl Tensor {
    /// Number of elements the shape describes.
    pub fn element_count(&self) -> Option<usize> {
        element_count(&self.shape)
    }
}

/// Elements in a shape: `None` for a negative dimension or an overflowing product.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).ok()?;
        acc.checked_mul(d)
    })
}

/// Splits length-prefixed BYTES data into its elements. `Err` carries the index
/// of the element whose length prefix or body runs past the end of `data`.
pub fn bytes_elements(data: &[u8]) -> impl Iterator<Item = Result<&[u8], usize>> {
    let mut rest = data;
    let mut index = 0usize;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = (|| {
            let len_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let body = rest.get(4..4usize.checked_add(len)?)?;
            rest = &rest[4 + len..];
            Some(body)
        })();
        let i = index;
        index += 1;
        match item {
            Some(body) => Some(Ok(body)),
            None => {
                rest = &[];
                Some(Err(i))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_and_codes_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
            assert_eq!(DataType::from_config_code(d.config_code()), Some(d));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
        assert_eq!(DataType::from_config_code(0), None);
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn bytes_elements_splits_and_reports_truncation() {
        let mut data = Vec::new();
        for s in [&b"ab"[..], b"", b"xyz"] {
            data.extend_from_slice(&(s.len() as u32).to_le_bytes());
            data.extend_from_slice(s);
        }
        let items: Vec<_> = bytes_elements(&data).collect();
        assert_eq!(items, vec![Ok(&b"ab"[..]), Ok(&b""[..]), Ok(&b"xyz"[..])]);
        data.truncate(data.len() - 1);
        let items: Vec<_> = bytes_elements(&data).collect();
        assert_eq!(items.last(), Some(&Err(2)));
    }
}
