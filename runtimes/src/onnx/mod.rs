//! The ONNX Runtime backend (Triton's `onnxruntime_onnx` / `onnxruntime`).
pub mod cuda_libs;
pub mod providers;
mod session;

use std::path::{Path, PathBuf};

pub use session::{OnnxModel, OnnxOptions, init};

use crate::backend::{Backend, Device, LoadRequest, Settings};
use crate::{Runtime, RuntimeError};

pub struct OnnxBackend;

/// Where ONNX Runtime is looked for when no path is given: what
/// `scripts/fetch-onnxruntime.sh` leaves under the working directory, beside
/// the executable, then the usual system folders. None there: the first,
/// so the error names where the fetch script would put it.
pub fn default_library() -> PathBuf {
    let mut candidates = vec![PathBuf::from(".cache/onnxruntime/libonnxruntime.so")];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
    {
        candidates.push(dir.join("libonnxruntime.so"));
    }
    candidates.push(PathBuf::from("/usr/local/lib/libonnxruntime.so"));
    candidates.push(PathBuf::from("/usr/lib/libonnxruntime.so"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

impl Backend for OnnxBackend {
    /// Loads `libonnxruntime.so` from the `onnxruntime,library` setting
    /// (`--onnxruntime-lib`, `ORT_DYLIB_PATH`), else from where it usually is.
    fn init(&self, settings: &Settings) -> Result<(), RuntimeError> {
        let library = settings
            .get("onnxruntime", "library")
            .map(PathBuf::from)
            .unwrap_or_else(default_library);
        init(&library)
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        let plan = providers::plan(request.device, request.accelerators, request.parameters, &|| {
            engine_cache(request.file)
        })
        .map_err(|e| RuntimeError::Load(format!("model '{}': {e}", request.model)))?;
        if request.device == Device::Cpu && !request.accelerators.gpu.is_empty() {
            (request.warn)("gpu_execution_accelerator applies to KIND_GPU instances; this instance runs on the CPU");
        }
        let mut options = OnnxOptions {
            intra_op_threads: request.intra_op_threads,
            inter_op_threads: request.inter_op_threads,
            graph_level: request.graph_level,
            providers: plan,
            bind_io: false,
        };
        // Only GPU instances touch CUDA's libraries.
        let libs = (!options.providers.is_empty()).then(|| cuda_libs::preload(&request.settings.cuda_library_path));
        if let Some(libs) = libs.as_ref().filter(|l| !l.failed.is_empty()) {
            (request.warn)(&format!("CUDA libraries that did not load: {}", libs.failed.join("; ")));
        }
        let model = match OnnxModel::load(request.file, &options) {
            Err(e) if !options.providers.is_empty() => {
                let Device::Gpu(gpu) = request.device else {
                    return Err(e);
                };
                let searched = libs.map(|l| l.dirs).unwrap_or_default();
                let searched = if searched.is_empty() {
                    "no CUDA library folder was found (--cuda-library-path names one)".to_owned()
                } else {
                    let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
                    format!("CUDA libraries were looked for in {}", dirs.join(", "))
                };
                let reason = format!(
                    "model '{}' KIND_GPU instance on GPU {gpu}: {e}; {searched}",
                    request.model
                );
                if !request.settings.cpu_fallback {
                    return Err(RuntimeError::Load(format!(
                        "{reason}. quiver does not fall back to the CPU unless --allow-cpu-fallback is set"
                    )));
                }
                (request.warn)(&format!(
                    "{reason}; running this instance on the CPU (--allow-cpu-fallback)"
                ));
                options.providers.clear();
                OnnxModel::load(request.file, &options)?
            }
            other => other?,
        };
        for note in &model.notes {
            (request.warn)(note);
        }
        Ok(Box::new(model))
    }
}

/// Hidden folder of a model folder where TensorRT engines are cached, one
/// subfolder per version, unless the config names a path: beside the model,
/// so a restart does not rebuild them. The repository's change detection
/// skips hidden folders.
pub const ENGINE_CACHE_DIR: &str = ".quiver-trt-cache";

/// `<model>/.quiver-trt-cache/<version>` for `<model>/<version>/model.onnx`
/// when that can be created (a read-only repository cannot), else a folder
/// under `$XDG_CACHE_HOME` (or `~/.cache`) named for the model file's path.
fn engine_cache(file: &Path) -> PathBuf {
    let version_dir = file.parent().unwrap_or(Path::new("."));
    let version = version_dir.file_name().map(|v| v.to_os_string()).unwrap_or_default();
    let model_dir = version_dir.parent().unwrap_or(Path::new("."));
    let beside = model_dir.join(ENGINE_CACHE_DIR).join(&version);
    if std::fs::create_dir_all(&beside).is_ok() {
        return beside;
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let name: String = file
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    base.join("quiver").join("tensorrt").join(name)
}
