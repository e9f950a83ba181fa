//! Every backend quiver knows of, compiled into this build or not, so that a
//! model whose backend is missing fails its load with how to build one that
//! has it. Adding a backend is a module implementing [`Backend`] and one line
//! in [`BACKENDS`].
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::backend::{Backend, LoadRequest, Settings};
use crate::{Runtime, RuntimeError};

/// One backend: Triton's names for it and what the engine must know before
/// it loads anything.
pub struct Entry {
    /// Triton's `backend` name ("onnxruntime", "pytorch").
    pub name: &'static str,
    /// Triton's `platform` name; empty where Triton has none.
    pub platform: &'static str,
    /// The model file in a version folder when the config names none.
    pub default_model_filename: &'static str,
    /// The model file declares its inputs and outputs, so `config.pbtxt` may
    /// leave them out (ONNX); otherwise the config must list them (TorchScript).
    pub describes_io: bool,
    /// The cargo feature of `quiver-runtimes` (and of the server) that builds it in.
    pub feature: &'static str,
    backend: Option<&'static dyn Backend>,
    ready: OnceLock<()>,
    init: Mutex<()>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("platform", &self.platform)
            .field("compiled", &self.compiled())
            .finish()
    }
}

/// The backend behind `$imp` when cargo feature `$feature` is on.
macro_rules! compiled {
    ($feature:literal, $imp:expr) => {{
        #[cfg(feature = $feature)]
        let backend: Option<&'static dyn Backend> = Some(&$imp);
        #[cfg(not(feature = $feature))]
        let backend: Option<&'static dyn Backend> = None;
        backend
    }};
}

macro_rules! entry {
    ($name:literal, $platform:literal, $file:literal, describes_io: $io:literal, feature: $feature:literal, $imp:expr) => {
        Entry {
            name: $name,
            platform: $platform,
            default_model_filename: $file,
            describes_io: $io,
            feature: $feature,
            backend: compiled!($feature, $imp),
            ready: OnceLock::new(),
            init: Mutex::new(()),
        }
    };
}

static BACKENDS: [Entry; 3] = [
    entry!("onnxruntime", "onnxruntime_onnx", "model.onnx", describes_io: true, feature: "onnx", crate::onnx::OnnxBackend),
    entry!("pytorch", "pytorch_libtorch", "model.pt", describes_io: false, feature: "torch", crate::torch::TorchBackend),
    entry!("mock", "", "model.mock", describes_io: false, feature: "mock", crate::mock::MockBackend),
];

/// Every backend quiver knows of.
pub fn all() -> &'static [Entry] {
    &BACKENDS
}

/// The backend a config names by `platform` and/or `backend` (Triton accepts
/// either). Both empty: `None`, the caller looks at the model files instead.
pub fn find(platform: &str, backend: &str) -> Result<Option<&'static Entry>, String> {
    if platform.is_empty() && backend.is_empty() {
        return Ok(None);
    }
    let entry = BACKENDS
        .iter()
        .find(|e| (platform.is_empty() || e.platform == platform) && (backend.is_empty() || e.name == backend));
    match entry {
        Some(e) => Ok(Some(e)),
        None => {
            let known: Vec<String> = BACKENDS
                .iter()
                .map(|e| match e.platform {
                    "" => format!("backend '{}'", e.name),
                    p => format!("platform '{p}' / backend '{}'", e.name),
                })
                .collect();
            Err(format!(
                "platform '{platform}' / backend '{backend}' is not served by quiver (it knows {})",
                known.join(", ")
            ))
        }
    }
}

/// The backend of a version whose config names neither platform nor backend:
/// by the extension of the config's `default_model_filename` when it names
/// one, else by which backend's default model file `version_dir` holds.
pub fn detect(version_dir: &Path, model_filename: &str) -> Option<&'static Entry> {
    let extension = |f: &str| Path::new(f).extension().map(|e| e.to_owned());
    if !model_filename.is_empty() {
        let wanted = extension(model_filename)?;
        return BACKENDS
            .iter()
            .find(|e| extension(e.default_model_filename).as_ref() == Some(&wanted));
    }
    BACKENDS
        .iter()
        .find(|e| version_dir.join(e.default_model_filename).is_file())
}

impl Entry {
    /// Whether this build has the backend.
    pub fn compiled(&self) -> bool {
        self.backend.is_some()
    }

    /// Loads one instance; initialises the backend first if no load has yet
    /// succeeded in this process. A failed init is tried again on the next
    /// load, so installing a missing library needs no restart.
    pub fn load(&self, settings: &Settings, request: &LoadRequest<'_>) -> Result<Box<dyn Runtime>, RuntimeError> {
        let backend = self.backend.ok_or_else(|| {
            RuntimeError::Load(format!(
                "the {} backend is not compiled into this build of quiver: build it with \
                 `cargo build --release --features {}` (the README's build has it)",
                self.name, self.feature
            ))
        })?;
        if self.ready.get().is_none() {
            let _one_at_a_time = self.init.lock().unwrap_or_else(|e| e.into_inner());
            if self.ready.get().is_none() {
                backend.init(settings)?;
                let _ = self.ready.set(());
            }
        }
        backend.load(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_platform_or_backend_and_names_the_known_ones() {
        assert_eq!(find("pytorch_libtorch", "").unwrap().unwrap().name, "pytorch");
        assert_eq!(find("", "onnxruntime").unwrap().unwrap().platform, "onnxruntime_onnx");
        assert_eq!(
            find("onnxruntime_onnx", "onnxruntime").unwrap().unwrap().name,
            "onnxruntime"
        );
        assert!(find("", "").unwrap().is_none());
        let e = find("tensorflow_savedmodel", "").unwrap_err();
        assert!(e.contains("pytorch_libtorch") && e.contains("onnxruntime_onnx"), "{e}");
        // A platform of one backend with the name of another is no backend.
        assert!(find("onnxruntime_onnx", "pytorch").is_err());
    }

    #[test]
    fn a_backend_left_out_of_the_build_says_how_to_build_it() {
        let missing = Entry {
            name: "pytorch",
            platform: "pytorch_libtorch",
            default_model_filename: "model.pt",
            describes_io: false,
            feature: "torch",
            backend: None,
            ready: OnceLock::new(),
            init: Mutex::new(()),
        };
        let io = crate::ModelIo::default();
        let params = Default::default();
        let request = LoadRequest {
            model: "m",
            file: Path::new("/nonexistent"),
            declared: &io,
            parameters: &params,
            intra_op_threads: 1,
            inter_op_threads: 1,
            graph_level: 0,
            device: crate::Device::Cpu,
            accelerators: &Default::default(),
            settings: &Default::default(),
            warn: &|_| {},
        };
        let e = missing.load(&Settings::default(), &request).err().unwrap().to_string();
        assert!(e.contains("--features torch") && e.contains("pytorch backend"), "{e}");
    }
}
