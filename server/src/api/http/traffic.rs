//! `GET`/`PUT`/`DELETE /v2/models/{m}/traffic`: a model's traffic policy,
//! changed atomically while requests flow; `GET` adds live per-variant counts.
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::HttpState;
use crate::engine::traffic::Origin;
use crate::error::{Error, Result};

pub async fn get(State(s): State<HttpState>, Path(model): Path<String>) -> Result<Json<Value>> {
    s.engine.model_known(&model)?;
    let t = s
        .engine
        .traffic(&model)
        .ok_or_else(|| Error::not_found(format!("model '{model}' has no traffic policy")))?;
    let mut policy = serde_json::to_value(&t.spec).map_err(|e| Error::internal(e.to_string()))?;
    let stats: Vec<Value> = t
        .spec
        .variants
        .iter()
        .zip(&t.counts)
        .map(|(v, c)| {
            json!({
                "name": v.name,
                "requests": c.requests.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
            })
        })
        .collect();
    policy["origin"] = json!(t.origin);
    policy["stats"] = Value::Array(stats);
    Ok(Json(policy))
}

pub async fn put(State(s): State<HttpState>, Path(model): Path<String>, body: Bytes) -> Result<Json<Value>> {
    let spec = s.engine.parse_traffic(&model, &body)?;
    s.engine.set_traffic(&model, spec, Origin::Api);
    Ok(Json(json!({})))
}

pub async fn delete(State(s): State<HttpState>, Path(model): Path<String>) -> Result<Json<Value>> {
    match s.engine.clear_traffic(&model) {
        true => Ok(Json(json!({}))),
        false => Err(Error::not_found(format!("model '{model}' has no traffic policy"))),
    }
}
