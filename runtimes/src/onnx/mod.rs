//! The ONNX Runtime backend (Triton's `onnxruntime_onnx` / `onnxruntime`).
mod session;

use std::path::PathBuf;

pub use session::{OnnxModel, OnnxOptions, init};

use crate::backend::{Backend, Device, LoadRequest, Settings};
use crate::{Runtime, RuntimeError};

pub struct OnnxBackend;

impl Backend for OnnxBackend {
    /// Loads `libonnxruntime.so` from the `onnxruntime,library` setting.
    fn init(&self, settings: &Settings) -> Result<(), RuntimeError> {
        let library = settings
            .get("onnxruntime", "library")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".cache/onnxruntime/libonnxruntime.so"));
        init(&library)
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        if let Device::Gpu(gpu) = request.device {
            return Err(RuntimeError::Load(format!(
                "model '{}' asks for a KIND_GPU instance on GPU {gpu}, but this build runs ONNX \
                 models on the CPU execution provider only",
                request.model
            )));
        }
        let options = OnnxOptions {
            intra_op_threads: request.intra_op_threads,
            inter_op_threads: request.inter_op_threads,
            graph_level: request.graph_level,
        };
        Ok(Box::new(OnnxModel::load(request.file, &options)?))
    }
}
