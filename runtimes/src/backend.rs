//! What the engine asks of a backend: load one instance of a model version.
//! The engine names no backend; it finds one in the [registry](crate::registry)
//! by the config's `platform` / `backend` and hands it a [`LoadRequest`].
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{ModelIo, Runtime, RuntimeError};

/// Where one instance runs: Triton's `KIND_CPU` / `KIND_GPU` with its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu(u32),
}

/// One entry of Triton's `optimization.execution_accelerators`: a provider
/// the backend should put ahead of its default one (`tensorrt` before CUDA,
/// `openvino` on the CPU) and that provider's options, by Triton's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accelerator {
    pub name: String,
    pub parameters: BTreeMap<String, String>,
}

/// The accelerators a config lists, for GPU and for CPU instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accelerators {
    pub gpu: Vec<Accelerator>,
    pub cpu: Vec<Accelerator>,
}

impl Accelerators {
    pub fn is_empty(&self) -> bool {
        self.gpu.is_empty() && self.cpu.is_empty()
    }
}

/// Everything a backend needs to load one instance of a model version.
pub struct LoadRequest<'a> {
    /// The model's name, for messages.
    pub model: &'a str,
    /// The model file (`<version>/model.onnx`, `<version>/model.pt`, ...).
    pub file: &'a Path,
    /// Inputs and outputs as `config.pbtxt` declares them, batch dimension
    /// included as -1 when the model batches. Empty when the config lists
    /// none (a backend that describes its own interface fills them in).
    pub declared: &'a ModelIo,
    /// The config's `parameters`, by key.
    pub parameters: &'a BTreeMap<String, String>,
    /// Threads inside one operator (0: the backend's default).
    pub intra_op_threads: usize,
    /// Threads across independent operators (0: the backend's default).
    pub inter_op_threads: usize,
    /// Triton's `optimization { graph { level } }`: -1 basic, 0 default, 1 extended.
    pub graph_level: i32,
    pub device: Device,
    /// `optimization.execution_accelerators`.
    pub accelerators: &'a Accelerators,
    /// Server-wide backend settings (GPU fallback, library folders).
    pub settings: &'a Settings,
    /// Reports something the operator should know but that does not fail
    /// the load (e.g. a process-wide setting that a later model cannot change).
    pub warn: &'a (dyn Fn(&str) + Sync),
}

/// Server-wide backend settings: Triton's `--backend-directory` and
/// `--backend-config=<backend>,<key>=<value>`.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Where backends that are shared libraries live (LibTorch's). Unset:
    /// beside the executable, then its parent folder.
    pub directory: Option<PathBuf>,
    /// `--allow-cpu-fallback`: a GPU instance whose provider cannot start
    /// (no driver, no CUDA libraries, a CPU-only build) runs on the CPU with
    /// a warning instead of failing the load.
    pub cpu_fallback: bool,
    /// `--cuda-library-path`: folders holding CUDA, cuDNN and TensorRT
    /// libraries (the `nvidia-*` wheels' `lib` folders, say), searched before
    /// the ones quiver finds itself.
    pub cuda_library_path: Vec<PathBuf>,
    values: BTreeMap<(String, String), String>,
}

impl Settings {
    pub fn set(&mut self, backend: &str, key: &str, value: impl Into<String>) {
        self.values.insert((backend.to_owned(), key.to_owned()), value.into());
    }

    pub fn get(&self, backend: &str, key: &str) -> Option<&str> {
        self.values
            .get(&(backend.to_owned(), key.to_owned()))
            .map(String::as_str)
    }

    /// Parses one `--backend-config` value: `<backend>,<key>=<value>`, or
    /// Triton's backend-agnostic `<key>=<value>` (kept under backend "").
    pub fn parse_into(&mut self, arg: &str) -> Result<(), String> {
        let (backend, kv) = match arg.split_once(',') {
            Some((backend, kv)) if !backend.contains('=') => (backend.trim(), kv),
            _ => ("", arg),
        };
        match kv.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                self.set(backend, key.trim(), value);
                Ok(())
            }
            _ => Err(format!(
                "--backend-config '{arg}' is not <backend>,<setting>=<value> or <setting>=<value> \
                 (e.g. pytorch,libtorch=/opt/libtorch)"
            )),
        }
    }

    /// Every (backend, key) set, backend "" for backend-agnostic ones.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.keys().map(|(b, k)| (b.as_str(), k.as_str()))
    }

    /// A setting for `backend`, or its backend-agnostic value.
    pub fn get_or_shared(&self, backend: &str, key: &str) -> Option<&str> {
        self.get(backend, key).or_else(|| self.get("", key))
    }

    /// The folders a backend library is looked for in, in order.
    pub fn library_dirs(&self) -> Vec<PathBuf> {
        if let Some(dir) = &self.directory {
            return vec![dir.clone()];
        }
        let mut dirs = Vec::new();
        if let Some(exe_dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
        {
            // `cargo test` binaries live one level below the executables.
            if let Some(parent) = exe_dir.parent() {
                dirs.push(exe_dir.clone());
                dirs.push(parent.to_owned());
            } else {
                dirs.push(exe_dir);
            }
        }
        dirs
    }
}

/// A model backend. `init` runs once per process, before the first load;
/// `load` makes one instance (one per instance thread).
pub trait Backend: Send + Sync {
    fn init(&self, settings: &Settings) -> Result<(), RuntimeError>;
    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError>;
}
