//! "Run this batch of tensors": the model runtimes quiver serves, behind one
//! synchronous trait. No async runtime and no protocol types live here, so a
//! runtime can be driven from an instance thread, a benchmark or a test alike.

pub mod mock;
pub mod onnx;
mod runtime;
mod tensor;

pub use runtime::{InputBatch, ModelIo, Runtime, RuntimeError, TensorSpec};
pub use tensor::{DataType, Tensor, bytes_elements, element_count};
