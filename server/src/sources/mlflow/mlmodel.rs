//! Reading an MLflow model artifact: which file is the model, and for which
//! backend. The flavours quiver serves come from the runtimes' registry
//! (`quiver_runtimes::registry`): each backend says how MLflow logs its models.
use std::path::Path;

use quiver_runtimes::registry::{self, Entry};

/// The model file of an artifact (relative to it) and the backend it is for.
#[derive(Debug)]
pub struct ModelFile {
    pub path: String,
    pub backend: &'static Entry,
}

/// The model file an MLflow artifact names: the first flavour in `MLmodel`
/// that a backend of quiver's logs with (`onnx`'s `data`, `pytorch`'s
/// `model_data` folder and its `model.pth`); without an `MLmodel`, a
/// backend's default model file at the top of the artifact.
pub fn model_file(artifact: &Path) -> Result<ModelFile, String> {
    let served = || registry::all().iter().filter(|e| e.mlflow.is_some());
    let Ok(text) = std::fs::read_to_string(artifact.join("MLmodel")) else {
        return served()
            .find(|e| artifact.join(e.default_model_filename).is_file())
            .map(|backend| ModelFile {
                path: backend.default_model_filename.into(),
                backend,
            })
            .ok_or_else(|| {
                let files: Vec<&str> = served().map(|e| e.default_model_filename).collect();
                format!(
                    "the artifact has neither an MLmodel file nor a model file quiver knows ({})",
                    files.join(", ")
                )
            });
    };
    let flavors = mlmodel_flavors(&text);
    for backend in served() {
        let Some(flavor) = backend.mlflow else { continue };
        let Some((_, keys)) = flavors.iter().find(|(name, _)| name == flavor.name) else {
            continue;
        };
        let located = keys.iter().find(|(k, _)| k == flavor.key).map(|(_, v)| v.as_str());
        let path = match (located, flavor.file_in_folder) {
            (Some(file), None) => file.to_owned(),
            (None, None) => backend.default_model_filename.to_owned(),
            (Some(folder), Some(file)) => format!("{}/{file}", folder.trim_end_matches('/')),
            (None, Some(_)) => {
                return Err(format!(
                    "the artifact's MLmodel has a {} flavour without its '{}' entry",
                    flavor.name, flavor.key
                ));
            }
        };
        return Ok(ModelFile { path, backend });
    }
    let known: Vec<&str> = served().filter_map(|e| e.mlflow.map(|f| f.name)).collect();
    Err(format!(
        "the artifact's MLmodel has no flavour quiver serves ({}); it has: {}",
        known.join(", "),
        flavors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ")
    ))
}

/// The flavours of an `MLmodel` file (YAML) with each one's scalar entries.
/// MLflow writes a fixed shape (`flavors:` then two-space-indented names,
/// their entries indented below), so reading that shape needs no YAML
/// library.
fn mlmodel_flavors(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut flavors: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut inside = false;
    let mut flavor_indent = None;
    let mut entry_indent = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            inside = line.trim_end() == "flavors:";
            flavor_indent = None;
            continue;
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim();
        let level = *flavor_indent.get_or_insert(indent);
        if indent == level {
            if let Some(name) = trimmed.strip_suffix(':') {
                flavors.push((name.to_owned(), Vec::new()));
                entry_indent = None;
            }
        } else if indent > level
            && indent == *entry_indent.get_or_insert(indent)
            && let Some((key, value)) = trimmed.split_once(':')
            && let Some((_, entries)) = flavors.last_mut()
        {
            let value = value.trim().trim_matches(['\'', '"']);
            if !value.is_empty() {
                entries.push((key.trim().to_owned(), value.to_owned()));
            }
        }
    }
    flavors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(tag: &str, mlmodel: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("quiver-mlmodel-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MLmodel"), mlmodel).unwrap();
        dir
    }

    #[test]
    fn the_onnx_flavour_names_the_model_file() {
        let text = "artifact_path: model\nflavors:\n  python_function:\n    data: model.onnx\n    loader_module: mlflow.onnx\n  onnx:\n    code: null\n    data: net.onnx\n    onnx_version: 1.17.0\nmlflow_version: 3.1.0\n";
        let f = mlmodel_flavors(text);
        assert_eq!(f[0].0, "python_function");
        assert_eq!(f[1].0, "onnx");
        assert!(f[1].1.contains(&("data".into(), "net.onnx".into())));
        let dir = artifact("onnx", text);
        let file = model_file(&dir).unwrap();
        assert_eq!((file.path.as_str(), file.backend.name), ("net.onnx", "onnxruntime"));
        std::fs::write(
            dir.join("MLmodel"),
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n",
        )
        .unwrap();
        let e = model_file(&dir).unwrap_err();
        assert!(e.contains("no flavour quiver serves") && e.contains("sklearn"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pytorch_flavour_names_a_folder_holding_model_pth() {
        // What mlflow.pytorch.log_model writes (with a ScriptModule, the
        // file is torch.jit's format, which LibTorch loads).
        let text = "artifact_path: model\nflavors:\n  python_function:\n    data: data\n    loader_module: mlflow.pytorch\n    pickle_module_name: mlflow.pytorch.pickle_module\n  pytorch:\n    code: null\n    model_data: data\n    pytorch_version: 2.11.0\nmlflow_version: 3.1.0\n";
        let dir = artifact("torch", text);
        let file = model_file(&dir).unwrap();
        assert_eq!((file.path.as_str(), file.backend.name), ("data/model.pth", "pytorch"));
        std::fs::write(
            dir.join("MLmodel"),
            "flavors:\n  pytorch:\n    pytorch_version: 2.11.0\n",
        )
        .unwrap();
        let e = model_file(&dir).unwrap_err();
        assert!(e.contains("'model_data'"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_an_mlmodel_a_default_model_file_is_looked_for() {
        let dir = std::env::temp_dir().join(format!("quiver-mlmodel-bare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(model_file(&dir).unwrap_err().contains("model.onnx, model.pt"));
        std::fs::write(dir.join("model.pt"), b"x").unwrap();
        let file = model_file(&dir).unwrap();
        assert_eq!((file.path.as_str(), file.backend.name), ("model.pt", "pytorch"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
