//! The one interface between the engine and a model runtime.
use crate::{DataType, Tensor};

/// One model input for a run: the requests' byte ranges to lay end to end
/// along dim 0 (one part per request), so a runtime copies each request's
/// bytes exactly once, straight into its own input buffer.
#[derive(Clone, Debug)]
pub struct InputBatch<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    /// Shape of the whole batch.
    pub shape: Vec<i64>,
    pub parts: Vec<&'a [u8]>,
}

impl<'a> InputBatch<'a> {
    /// A single tensor as a batch of one.
    pub fn single(t: &'a Tensor) -> InputBatch<'a> {
        InputBatch {
            name: &t.name,
            datatype: t.datatype,
            shape: t.shape.clone(),
            parts: vec![&t.data],
        }
    }

    pub fn byte_len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The batch's byte length, checked against its shape and (fixed-size)
    /// datatype, before a backend allocates a tensor for it.
    pub fn checked_len(&self) -> Result<usize, RuntimeError> {
        let expected = crate::element_count(&self.shape)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.datatype.size().unwrap_or(1));
        if expected != self.byte_len() {
            return Err(RuntimeError::InvalidInput(format!(
                "input '{}': {} bytes of data for shape {:?}, expected {expected}",
                self.name,
                self.byte_len(),
                self.shape
            )));
        }
        Ok(expected)
    }

    /// Lays the requests' bytes end to end at `dest`: the one copy of each
    /// request's data on its way into a backend's tensor.
    ///
    /// # Safety
    /// `dest` must be valid for writes of `self.byte_len()` bytes and must not
    /// overlap the parts.
    pub unsafe fn copy_to(&self, dest: *mut u8) {
        let mut offset = 0;
        for part in &self.parts {
            // SAFETY: the caller vouches for `byte_len()` bytes at `dest`.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), dest.add(offset), part.len()) };
            offset += part.len();
        }
    }
}

/// Name, datatype and shape of one model input or output as the model file
/// declares it; `-1` marks a dimension the model leaves open.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// Everything a runtime knows about a model's interface.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelIo {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file could not be loaded or does not fit what quiver serves.
    #[error("{0}")]
    Load(String),
    /// The inputs were well-formed on the wire but the runtime cannot take them
    /// (e.g. a BYTES element that is not UTF-8 for an ONNX string tensor).
    #[error("{0}")]
    InvalidInput(String),
    /// The runtime failed while executing.
    #[error("{0}")]
    Execution(String),
    /// The model ran, but what it returned does not fit what its config
    /// declares (an output's datatype, a missing output): a fault of the
    /// model or its config whatever the inputs, so a warm-up that meets it
    /// fails the load even where a failed run on made-up inputs would not.
    #[error("{0}")]
    Interface(String),
}

/// A loaded model that runs batches. Each instance thread owns one, so `run`
/// takes `&mut self` (ONNX Runtime's `Session::run` needs it too).
pub trait Runtime: Send {
    /// The model's inputs and outputs as declared by the model file.
    fn io(&self) -> &ModelIo;

    /// Runs the model on `inputs` and returns the outputs named in `outputs`
    /// (all outputs when empty), in the order asked for.
    fn run(&mut self, inputs: &[InputBatch<'_>], outputs: &[String]) -> Result<Vec<Tensor>, RuntimeError>;

    /// Whether BYTES inputs must be valid UTF-8 (ONNX string tensors must).
    /// The engine checks it on each request before the request can join a
    /// batch, so one client's bad string never fails the others'.
    fn utf8_strings(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_checked_against_the_shape_and_laid_end_to_end() {
        let (a, b) = ([1u8, 2, 3, 4], [5u8, 6, 7, 8]);
        let batch = InputBatch {
            name: "x",
            datatype: DataType::Int16,
            shape: vec![2, 2],
            parts: vec![&a, &b],
        };
        assert_eq!(batch.checked_len().unwrap(), 8);
        let mut dest = [0u8; 8];
        // SAFETY: dest holds byte_len() bytes.
        unsafe { batch.copy_to(dest.as_mut_ptr()) };
        assert_eq!(dest, [1, 2, 3, 4, 5, 6, 7, 8]);
        let short = InputBatch {
            shape: vec![3, 2],
            ..batch
        };
        let e = short.checked_len().unwrap_err().to_string();
        assert!(
            e.contains("input 'x': 8 bytes of data for shape [3, 2], expected 12"),
            "{e}"
        );
    }
}
