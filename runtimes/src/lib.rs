//! "Run this batch of tensors": the model backends quiver serves, behind one
//! synchronous trait. No async runtime and no protocol types live here, so a
//! runtime can be driven from an instance thread, a benchmark or a test alike.
//!
//! Backends are cargo features: `onnx` (ONNX Runtime), `torch` (LibTorch, as
//! a library loaded when a model needs it) and `mock`. The [`registry`] lists
//! them all, so the engine never names one.

pub mod backend;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod registry;
mod runtime;
mod tensor;
#[cfg(feature = "torch")]
pub mod torch;

pub use backend::{Accelerator, Accelerators, Backend, Device, LoadRequest, Settings};
pub use runtime::{InputBatch, ModelIo, Runtime, RuntimeError, TensorSpec};
pub use tensor::{DataType, Tensor, bytes_elements, element_count};

/// The build a backend library must come from to be loaded: quiver's
/// version and the compiler's, since backend libraries share Rust types
/// with the server (see [`torch`]).
pub const ABI: &str = concat!(env!("CARGO_PKG_VERSION"), " ", env!("QUIVER_RUSTC_VERSION"));
