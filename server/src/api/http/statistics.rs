//! The statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats`,
//! in Triton's JSON shape.
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::state::{HttpError, HttpState, ModelPath};
use quiver_engine::stats::StatsSnapshot;

fn duration((count, ns): (u64, u64)) -> Value {
    json!({ "count": count, "ns": ns })
}

fn model_json(s: &StatsSnapshot) -> Value {
    json!({
        "name": s.name,
        "version": s.version.to_string(),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": duration(s.success),
            "fail": duration(s.fail),
            "queue": duration(s.queue),
            "compute_input": duration(s.compute_input),
            "compute_infer": duration(s.compute_infer),
            "compute_output": duration(s.compute_output),
            "cache_hit": duration(s.cache_hit),
            "cache_miss": duration(s.cache_miss),
        },
        "batch_stats": s.batches.iter().map(|(size, b)| json!({
            "batch_size": size,
            "compute_input": duration((b.count, b.input_ns)),
            "compute_infer": duration((b.count, b.infer_ns)),
            "compute_output": duration((b.count, b.output_ns)),
        })).collect::<Vec<_>>(),
    })
}

pub async fn all(State(s): State<HttpState>) -> Result<Json<Value>, HttpError> {
    let stats = s.engine.statistics(None, None)?;
    Ok(Json(
        json!({ "model_stats": stats.iter().map(model_json).collect::<Vec<_>>() }),
    ))
}

pub async fn model(State(s): State<HttpState>, Path(p): Path<ModelPath>) -> Result<Json<Value>, HttpError> {
    let stats = s.engine.statistics(Some(&p.model), p.version.as_deref())?;
    Ok(Json(
        json!({ "model_stats": stats.iter().map(model_json).collect::<Vec<_>>() }),
    ))
}
