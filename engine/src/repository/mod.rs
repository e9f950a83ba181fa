//! The model repository in Triton's layout:
//! `<repo>/<model>/config.pbtxt` (optional) and numeric version folders
//! holding the model file: the backend's default (`model.onnx`, `model.pt`)
//! or the config's `default_model_filename`.
//!
//! This module is the layout only: finding model and version folders and
//! reading configs. Loading a version is `load.rs`.
pub mod fingerprint;
pub mod model_config;
pub mod unsupported;

use std::path::{Path, PathBuf};

use quiver_proto::inference::ModelConfig;

/// Triton's model control modes: how the set of served models may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMode {
    /// Load every model at start-up; the repository API cannot change them.
    None,
    /// Load every model at start-up, then follow the repository's changes.
    Poll,
    /// Load what `--load-model` names; then load and unload through the API.
    Explicit,
}

impl ControlMode {
    /// Triton's names of the modes (`--model-control-mode`).
    pub const NAMES: [&str; 3] = ["none", "poll", "explicit"];

    pub fn from_name(name: &str) -> Option<ControlMode> {
        match name {
            "none" => Some(ControlMode::None),
            "poll" => Some(ControlMode::Poll),
            "explicit" => Some(ControlMode::Explicit),
            _ => None,
        }
    }
}

/// The model folders of a repository, sorted by name. Hidden folders are skipped.
/// With `single_model`, a root that is itself a model folder (it holds numeric
/// version folders) is served as that one model.
pub fn model_dirs(root: &Path, single_model: Option<&str>) -> std::io::Result<Vec<(String, PathBuf)>> {
    if let Some(name) = single_model
        && !version_dirs(root)?.is_empty()
    {
        return Ok(vec![(name.to_owned(), root.to_owned())]);
    }
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !name.starts_with('.') {
            dirs.push((name, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// A model's `config.pbtxt` (the default config when there is none) and its
/// text, which is part of every version's fingerprint.
pub fn read_config(dir: &Path) -> Result<(ModelConfig, String), String> {
    let path = dir.join("config.pbtxt");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((model_config::parse(&text)?, text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((ModelConfig::default(), String::new())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The numeric version folders of a model folder, in no particular order.
pub fn version_dirs(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir()
            && let Some(v) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok())
        {
            versions.push(v);
        }
    }
    Ok(versions)
}
