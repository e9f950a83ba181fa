//! Reading an MLflow model artifact: which file is the ONNX model.
use std::path::Path;

/// The model file an MLflow artifact names: the `onnx` flavour's `data` in
/// `MLmodel`; without an `MLmodel`, `model.onnx`.
pub fn model_file(artifact: &Path) -> Result<String, String> {
    let Ok(text) = std::fs::read_to_string(artifact.join("MLmodel")) else {
        return match artifact.join("model.onnx").is_file() {
            true => Ok("model.onnx".into()),
            false => Err("the artifact has neither an MLmodel file nor a model.onnx".into()),
        };
    };
    let flavors = mlmodel_flavors(&text);
    match flavors.iter().find(|(f, _)| f == "onnx") {
        Some((_, Some(data))) => Ok(data.clone()),
        Some((_, None)) => Ok("model.onnx".into()),
        None => Err(format!(
            "the artifact's MLmodel has no onnx flavour (it has: {})",
            flavors.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The flavours of an `MLmodel` file (YAML) with each one's `data` entry.
/// MLflow writes a fixed shape (`flavors:` then two-space-indented names),
/// so reading that shape needs no YAML library.
fn mlmodel_flavors(text: &str) -> Vec<(String, Option<String>)> {
    let mut flavors: Vec<(String, Option<String>)> = Vec::new();
    let mut inside = false;
    let mut flavor_indent = None;
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
                flavors.push((name.to_owned(), None));
            }
        } else if indent > level
            && let Some(value) = trimmed.strip_prefix("data:")
            && let Some(last) = flavors.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(value.trim().trim_matches(['\'', '"']).to_owned());
        }
    }
    flavors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onnx_flavour_names_the_model_file() {
        let text = "artifact_path: model\nflavors:\n  python_function:\n    data: model.onnx\n    loader_module: mlflow.onnx\n  onnx:\n    code: null\n    data: net.onnx\n    onnx_version: 1.17.0\nmlflow_version: 3.1.0\n";
        let f = mlmodel_flavors(text);
        assert_eq!(f[0], ("python_function".into(), Some("model.onnx".into())));
        assert_eq!(f[1], ("onnx".into(), Some("net.onnx".into())));
        let dir = std::env::temp_dir().join(format!("quiver-mlmodel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("MLmodel"), text).unwrap();
        assert_eq!(model_file(&dir).unwrap(), "net.onnx");
        std::fs::write(
            dir.join("MLmodel"),
            "flavors:\n  sklearn:\n    pickled_model: model.pkl\n",
        )
        .unwrap();
        let e = model_file(&dir).unwrap_err();
        assert!(e.contains("no onnx flavour") && e.contains("sklearn"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
