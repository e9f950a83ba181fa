//! `GET`/`PUT`/`DELETE /v2/models/{m}/traffic`: a model's traffic policy,
//! changed atomically while requests flow; `GET` adds live per-variant counts.
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::state::HttpError;
use super::state::HttpState;
use crate::error::{Error, Result};
use quiver_engine::traffic::Origin;

pub async fn get(State(s): State<HttpState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    s.engine.model_known(&model)?;
    let t = s
        .engine
        .traffic(&model)
        .ok_or_else(|| Error::not_found(format!("model '{model}' has no traffic policy")))?;
    let mut policy = serde_json::to_value(&t.spec).map_err(|e| Error::internal(e.to_string()))?;
    let (since, starts) = &t.window_start;
    let ms = |s: Option<f64>| s.map(|v| v * 1e3);
    let stats: Vec<Value> = t
        .spec
        .variants
        .iter()
        .zip(&t.stats)
        .zip(starts)
        .map(|((v, stats), start)| {
            let now = stats.snapshot();
            let window = now.since(start);
            json!({
                "name": v.name,
                "requests": now.requests,
                "errors": now.errors,
                "window": {
                    "requests": window.requests,
                    "errors": window.errors,
                    "p50_ms": ms(window.quantile(0.5)),
                    "p99_ms": ms(window.quantile(0.99)),
                },
            })
        })
        .collect();
    policy["origin"] = json!(t.origin);
    policy["window_seconds"] = json!(since.elapsed().as_secs_f64());
    policy["stats"] = Value::Array(stats);
    if let Some(sh) = &t.shadow {
        policy["shadow_stats"] = json!({
            "compared": sh.compared.load(Ordering::Relaxed),
            "mismatches": sh.mismatches.load(Ordering::Relaxed),
            "failed": sh.failed.load(Ordering::Relaxed),
            "dropped": sh.dropped.load(Ordering::Relaxed),
            "max_abs_difference": sh.max_abs_difference(),
        });
    }
    if let Some(r) = &t.rollout {
        policy["rollout_state"] = json!(r.status());
    }
    Ok(Json(policy))
}

pub async fn put(State(s): State<HttpState>, Path(model): Path<String>, body: Bytes) -> Result<Json<Value>, HttpError> {
    let spec = s.engine.parse_traffic(&model, &body)?;
    s.engine.set_traffic(&model, spec, Origin::Api);
    Ok(Json(json!({})))
}

pub async fn delete(State(s): State<HttpState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    match s.engine.clear_traffic(&model) {
        true => Ok(Json(json!({}))),
        false => Err(Error::not_found(format!("model '{model}' has no traffic policy")).into()),
    }
}
