//! Server and model metadata, model readiness and model configuration.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{HttpError, HttpState, ModelPath};
use crate::error::Error;
use quiver_engine::repository::model_config;
use quiver_engine::{EXTENSIONS, SERVER_NAME, SERVER_VERSION, TensorMetadata};

pub async fn server() -> Json<Value> {
    Json(json!({ "name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS }))
}

fn tensors(list: &[TensorMetadata]) -> Vec<Value> {
    list.iter()
        .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
        .collect()
}

pub async fn model(State(s): State<HttpState>, Path(p): Path<ModelPath>) -> Result<Json<Value>, HttpError> {
    let m = s.engine.model_metadata(&p.model, p.version.as_deref())?;
    Ok(Json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })))
}

pub async fn model_ready(State(s): State<HttpState>, Path(p): Path<ModelPath>) -> Response {
    match s.engine.ready_version(&p.model, p.version.as_deref()) {
        Ok(_) => (StatusCode::OK, Json(json!({ "name": p.model, "ready": true }))).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

pub async fn model_config(State(s): State<HttpState>, Path(p): Path<ModelPath>) -> Result<Json<Value>, HttpError> {
    let config = s.engine.model_config(&p.model, p.version.as_deref())?;
    Ok(Json(model_config::to_json(&config).map_err(Error::internal)?))
}
