//! A model whose every version computes something different: `y = x * k`,
//! made from `tests/fixtures/scale.onnx` by replacing its constant. An
//! answer's values then tell which version computed it, whatever version
//! number the answer claims.
use std::path::Path;

use super::root;

/// The constant stored in the fixture (see `tests/fixtures/generate.py`).
const TEMPLATE_K: f32 = 12345.678;

pub const SCALE_CONFIG: &str = r#"
name: "scale"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
"#;

/// The ONNX bytes of `y = x * k`.
pub fn scale_model(k: f32) -> Vec<u8> {
    let mut bytes = std::fs::read(root().join("tests/fixtures/scale.onnx")).expect("fixture");
    let marker = TEMPLATE_K.to_le_bytes();
    let at = bytes
        .windows(4)
        .position(|w| w == marker)
        .expect("the fixture holds its constant");
    bytes[at..at + 4].copy_from_slice(&k.to_le_bytes());
    bytes
}

/// Writes `<repo>/<name>/<version>/model.onnx` computing `x * k`, through a
/// rename so a reader never sees half a file.
pub fn write_version(repo: &Path, name: &str, version: u64, k: f32) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = repo.join(format!(".{name}-{version}.tmp"));
    std::fs::write(&tmp, scale_model(k)).unwrap();
    std::fs::rename(&tmp, dir.join("model.onnx")).unwrap();
}

/// The scale model's config under another name.
pub fn scale_config(name: &str) -> String {
    SCALE_CONFIG.replace("\"scale\"", &format!("\"{name}\""))
}

/// A repository folder for the scale model with its config.
pub fn scale_repo(repo: &Path, name: &str) {
    std::fs::create_dir_all(repo.join(name)).unwrap();
    std::fs::write(repo.join(name).join("config.pbtxt"), scale_config(name)).unwrap();
}

pub const X: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

pub fn infer_body() -> serde_json::Value {
    serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]})
}

/// The TorchScript scale model's config: SCALE_CONFIG on LibTorch.
pub fn scale_config_torch(name: &str) -> String {
    scale_config(name).replace("max_batch_size", "platform: \"pytorch_libtorch\"\nmax_batch_size")
}

/// Writes `<repo>/<name>/<version>/model.pt` computing `x * k` for k in
/// 1..=8 (the fixtures in tests/fixtures/scale_pt), through a rename.
pub fn write_torch_version(repo: &Path, name: &str, version: u64, k: u32) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = repo.join(format!(".{name}-{version}.tmp"));
    std::fs::copy(root().join(format!("tests/fixtures/scale_pt/k{k}.pt")), &tmp).expect("a fixture for k in 1..=8");
    std::fs::rename(&tmp, dir.join("model.pt")).unwrap();
}
