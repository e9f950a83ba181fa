//! The repository index: every model folder and version with its state.
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use crate::error::Error;

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

pub async fn index(State(s): State<HttpState>, body: Bytes) -> Result<Json<Value>, Error> {
    let req: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::invalid(format!("malformed repository index request: {e}")))?
    };
    let rows: Vec<Value> = s
        .engine
        .repository_index()
        .into_iter()
        .filter(|r| !req.ready || r.state == "READY")
        .map(|r| {
            let mut row = json!({ "name": r.name, "version": r.version, "state": r.state });
            if !r.reason.is_empty() {
                row["reason"] = json!(r.reason);
            }
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}
