//! What each request carries: inputs generated from the model's metadata
//! (deterministic pseudo-random data), encoded once per protocol and reused.
use bytes::Bytes;
use quiver_proto::inference::ModelInferRequest;
use quiver_proto::inference::model_infer_request::InferInputTensor;
use serde_json::{Value, json};

/// One input as the model's metadata describes it.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub datatype: String,
    /// With -1 dims replaced: the batch by `--batch`, others by 1.
    pub shape: Vec<i64>,
}

impl InputSpec {
    pub fn elements(&self) -> usize {
        self.shape.iter().product::<i64>().max(0) as usize
    }
}

/// Reads `/v2/models/{m}` metadata JSON into input specs for `batch` rows.
pub fn inputs_from_metadata(metadata: &Value, batch: usize) -> anyhow::Result<Vec<InputSpec>> {
    let inputs = metadata["inputs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("metadata has no inputs"))?;
    inputs
        .iter()
        .map(|i| {
            let shape: Vec<i64> = i["shape"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("input without shape"))?
                .iter()
                .enumerate()
                .map(|(d, v)| match v.as_i64().unwrap_or(1) {
                    -1 if d == 0 => batch as i64,
                    -1 => 1,
                    n => n,
                })
                .collect();
            Ok(InputSpec {
                name: i["name"].as_str().unwrap_or_default().to_owned(),
                datatype: i["datatype"].as_str().unwrap_or_default().to_owned(),
                shape,
            })
        })
        .collect()
}

/// Deterministic data for one input, as raw little-endian bytes.
pub fn raw_data(spec: &InputSpec, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let n = spec.elements();
    let mut out = Vec::with_capacity(n * 8);
    for _ in 0..n {
        let r = next();
        match spec.datatype.as_str() {
            "FP32" => out.extend_from_slice(&((r % 2000) as f32 / 1000.0 - 1.0).to_le_bytes()),
            "FP64" => out.extend_from_slice(&((r % 2000) as f64 / 1000.0 - 1.0).to_le_bytes()),
            "INT32" => out.extend_from_slice(&((r % 1000) as i32).to_le_bytes()),
            "INT64" => out.extend_from_slice(&((r % 1000) as i64).to_le_bytes()),
            "UINT8" | "INT8" => out.push((r % 100) as u8),
            "BOOL" => out.push((r % 2) as u8),
            "BYTES" => {
                let s = format!("item{}", r % 1000);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            // Other datatypes get zeros of the right width.
            "FP16" | "BF16" | "INT16" | "UINT16" => out.extend_from_slice(&[0, 0]),
            "UINT32" => out.extend_from_slice(&[0; 4]),
            _ => out.extend_from_slice(&[0; 8]),
        }
    }
    out.into()
}

fn json_data(spec: &InputSpec, raw: &[u8]) -> Value {
    let nums: Vec<Value> = match spec.datatype.as_str() {
        "FP32" => raw
            .chunks_exact(4)
            .map(|c| json!(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "FP64" => raw
            .chunks_exact(8)
            .map(|c| json!(f64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "INT32" => raw
            .chunks_exact(4)
            .map(|c| json!(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "INT64" => raw
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        "UINT8" | "INT8" => raw.iter().map(|&b| json!(b)).collect(),
        "BOOL" => raw.iter().map(|&b| json!(b != 0)).collect(),
        "BYTES" => quiver_runtimes::bytes_elements(raw)
            .map(|e| json!(String::from_utf8_lossy(e.unwrap_or_default())))
            .collect(),
        _ => Vec::new(),
    };
    Value::Array(nums)
}

/// A V2 JSON body with the data inline.
pub fn http_json_body(specs: &[InputSpec]) -> Bytes {
    let inputs: Vec<Value> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let raw = raw_data(s, i as u64);
            json!({ "name": s.name, "shape": s.shape, "datatype": s.datatype, "data": json_data(s, &raw) })
        })
        .collect();
    serde_json::to_vec(&json!({ "inputs": inputs }))
        .unwrap_or_default()
        .into()
}

/// A binary-extension body (inputs as blobs, outputs asked for as blobs)
/// and its JSON header length.
pub fn http_binary_body(specs: &[InputSpec]) -> (Bytes, usize) {
    let raws: Vec<Bytes> = specs.iter().enumerate().map(|(i, s)| raw_data(s, i as u64)).collect();
    let inputs: Vec<Value> = specs
        .iter()
        .zip(&raws)
        .map(|(s, r)| {
            json!({ "name": s.name, "shape": s.shape, "datatype": s.datatype,
                    "parameters": { "binary_data_size": r.len() } })
        })
        .collect();
    let header = serde_json::to_vec(&json!({ "inputs": inputs, "parameters": { "binary_data_output": true } }))
        .unwrap_or_default();
    let header_len = header.len();
    let mut body = header;
    for r in &raws {
        body.extend_from_slice(r);
    }
    (body.into(), header_len)
}

/// A gRPC request with raw input contents (what tritonclient.grpc sends).
pub fn grpc_request(model: &str, specs: &[InputSpec]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.to_owned(),
        inputs: specs
            .iter()
            .map(|s| InferInputTensor {
                name: s.name.clone(),
                datatype: s.datatype.clone(),
                shape: s.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: specs.iter().enumerate().map(|(i, s)| raw_data(s, i as u64)).collect(),
        ..Default::default()
    }
}
