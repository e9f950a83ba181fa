//! The repository extension: the index (every model folder and version with
//! its state) and model control (load, unload).
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::HttpError;
use super::state::HttpState;
use crate::error::Error;
use quiver_codec::repository::load_parameters_from_json;

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

pub async fn index(State(s): State<HttpState>, body: Bytes) -> Result<Json<Value>, HttpError> {
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
            // quiver's addition: where a READY version came from (Triton's
            // clients ignore fields they do not know).
            if !r.provenance.is_empty() {
                row["provenance"] = json!(r.provenance);
            }
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `POST /v2/repository/models/{m}/load`: answers 200 once the model is
/// READY, or the error table's status with the reason it failed.
pub async fn load(
    State(s): State<HttpState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let request = load_parameters_from_json(&body)?;
    s.engine.api_load(&model, request).await?;
    Ok(Json(json!({})))
}

/// `POST /v2/repository/models/{m}/unload`: answers once no new request can
/// reach the model. With `unload_dependents`, an ensemble's step models go
/// too (those no other ensemble still runs).
pub async fn unload(
    State(s): State<HttpState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    let dependents = quiver_codec::repository::unload_dependents_from_json(&body)?;
    s.engine.api_unload(&model, dependents).await?;
    Ok(Json(json!({})))
}
