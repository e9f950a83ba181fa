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
    /// How MLflow logs a model this backend serves, if it does.
    pub mlflow: Option<MlflowFlavor>,
    /// The `--backend-config <name>,<key>=<value>` keys this backend reads
    /// (besides [`SHARED_SETTINGS`], which the server reads for every backend).
    pub settings: &'static [&'static str],
    /// Keys Triton's backend of the same name takes and quiver does not act
    /// on, each with why: accepted with a warning, so Triton's command lines work.
    pub triton_settings: &'static [(&'static str, &'static str)],
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

/// An MLflow flavour: its name in an artifact's `MLmodel` file, the key of
/// that flavour which locates the model, and, when the key names a folder,
/// the model file inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlflowFlavor {
    pub name: &'static str,
    pub key: &'static str,
    pub file_in_folder: Option<&'static str>,
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
    ($name:literal, $platform:literal, $file:literal, describes_io: $io:literal, feature: $feature:literal,
     mlflow: $mlflow:expr, settings: $settings:expr, triton_settings: $triton:expr, $imp:expr) => {
        Entry {
            name: $name,
            platform: $platform,
            default_model_filename: $file,
            describes_io: $io,
            feature: $feature,
            mlflow: $mlflow,
            settings: $settings,
            triton_settings: $triton,
            backend: compiled!($feature, $imp),
            ready: OnceLock::new(),
            init: Mutex::new(()),
        }
    };
}

/// `--backend-config` keys the server reads for every backend, given as
/// `<key>=<value>` (Triton's backend-agnostic form) or per backend.
pub const SHARED_SETTINGS: &[&str] = &["default-max-batch-size"];

/// Why quiver does not act on Triton's global thread-pool keys.
const OWN_THREADS: &str = "quiver gives each session its own threads: set intra_op_thread_count in the \
                           model's parameters or --intra-op-threads";

static BACKENDS: [Entry; 3] = [
    // mlflow.onnx: `onnx: {data: model.onnx}`, the file itself.
    entry!("onnxruntime", "onnxruntime_onnx", "model.onnx", describes_io: true, feature: "onnx",
        mlflow: Some(MlflowFlavor { name: "onnx", key: "data", file_in_folder: None }),
        settings: &["library"],
        triton_settings: &[
            ("enable-global-threadpool", OWN_THREADS),
            ("intra_op_thread_count", OWN_THREADS),
            ("inter_op_thread_count", OWN_THREADS),
        ],
        crate::onnx::OnnxBackend),
    // mlflow.pytorch: `pytorch: {model_data: data}`, a folder holding
    // model.pth (torch.jit's format when the logged model was a ScriptModule).
    entry!("pytorch", "pytorch_libtorch", "model.pt", describes_io: false, feature: "torch",
        mlflow: Some(MlflowFlavor { name: "pytorch", key: "model_data", file_in_folder: Some("model.pth") }),
        settings: &["libtorch"], triton_settings: &[], crate::torch::TorchBackend),
    entry!("mock", "", "model.mock", describes_io: false, feature: "mock", mlflow: None,
        settings: &[], triton_settings: &[], crate::mock::MockBackend),
];

/// What quiver makes of one `--backend-config` key: `None` when it acts
/// on it, else why it is ignored (the key named), for a warning.
/// `backend` is empty for Triton's backend-agnostic `<key>=<value>` form.
pub fn review_setting(backend: &str, key: &str) -> Option<String> {
    if SHARED_SETTINGS.contains(&key) {
        return None;
    }
    if backend.is_empty() {
        return Some(format!(
            "'{key}' is not a backend-agnostic setting quiver reads (it reads {})",
            SHARED_SETTINGS.join(", ")
        ));
    }
    let Some(entry) = BACKENDS.iter().find(|e| e.name == backend) else {
        return Some(format!("quiver has no '{backend}' backend"));
    };
    if entry.settings.contains(&key) {
        return None;
    }
    if let Some((_, why)) = entry.triton_settings.iter().find(|(k, _)| *k == key) {
        return Some((*why).to_owned());
    }
    let mut known: Vec<&str> = entry.settings.to_vec();
    known.extend(SHARED_SETTINGS);
    Some(format!(
        "'{key}' is not a setting of quiver's {backend} backend (it reads {})",
        known.join(", ")
    ))
}

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
    fn backend_config_keys_quiver_does_not_read_are_named() {
        assert_eq!(review_setting("pytorch", "libtorch"), None);
        assert_eq!(review_setting("onnxruntime", "library"), None);
        assert_eq!(review_setting("", "default-max-batch-size"), None);
        assert_eq!(review_setting("onnxruntime", "default-max-batch-size"), None);
        let w = review_setting("onnxruntime", "libary").unwrap();
        assert!(
            w.contains("'libary'") && w.contains("reads library, default-max-batch-size"),
            "{w}"
        );
        let w = review_setting("onnxruntime", "enable-global-threadpool").unwrap();
        assert!(w.contains("own threads"), "{w}");
        let w = review_setting("python", "shm-default-byte-size").unwrap();
        assert!(w.contains("no 'python' backend"), "{w}");
        let w = review_setting("", "backend-directory").unwrap();
        assert!(w.contains("'backend-directory'"), "{w}");
    }

    #[test]
    fn a_backend_left_out_of_the_build_says_how_to_build_it() {
        let missing = Entry {
            name: "pytorch",
            platform: "pytorch_libtorch",
            default_model_filename: "model.pt",
            describes_io: false,
            feature: "torch",
            mlflow: None,
            settings: &[],
            triton_settings: &[],
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
