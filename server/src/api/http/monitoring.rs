//! `GET /v2/models/{m}[/versions/{v}]/monitoring`: drift and data quality
//! per feature, per version and traffic variant (quiver_monitor::report).
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::state::{HttpError, HttpState, ModelPath};
use crate::error::Error;

pub async fn get(State(s): State<HttpState>, Path(p): Path<ModelPath>) -> Result<Json<Value>, HttpError> {
    if p.version.is_some() {
        let version = s.engine.resolve(&p.model, p.version.as_deref())?;
        let report = match s.monitoring.find(&p.model, version.version) {
            Some(m) => quiver_monitor::report::version(&m),
            None => unmonitored(&p.model, &[version.version]),
        };
        return Ok(Json(report));
    }
    let mut monitors: Vec<_> = s
        .monitoring
        .monitors()
        .into_iter()
        .filter(|m| m.model == p.model)
        .collect();
    if monitors.is_empty() {
        // Unknown (404) or not ready (503), as the other model endpoints say.
        let version = s.engine.resolve(&p.model, None)?;
        return Ok(Json(unmonitored(&p.model, &[version.version])));
    }
    monitors.sort_by_key(|m| m.version);
    monitors.dedup_by_key(|m| m.version);
    let versions: Vec<Value> = monitors.iter().map(|m| quiver_monitor::report::version(m)).collect();
    let features: Vec<Value> = versions
        .iter()
        .flat_map(|v| v["features"].as_array().cloned().unwrap_or_default())
        .collect();
    Ok(Json(json!({
        "model": p.model,
        "monitored": true,
        "versions": versions,
        "features": features,
    })))
}

/// A model without a reference: nothing is watched.
fn unmonitored(model: &str, versions: &[u64]) -> Value {
    json!({
        "model": model,
        "monitored": false,
        "reason": "no reference.npz (or reference.json) in the version or model folder",
        "versions": versions.iter().map(u64::to_string).collect::<Vec<_>>(),
        "features": [],
    })
}

/// The body of a freeze: where the new reference comes from.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    /// The version whose traffic it is (default: the one in the path).
    version: Option<String>,
    /// One traffic variant's windows (default: every variant's).
    variant: Option<String>,
    /// The last N closed windows...
    windows: Option<usize>,
    /// ...or the windows closed in the last N seconds (default: all kept).
    seconds: Option<f64>,
}

/// `POST /v2/models/{m}[/versions/{v}]/monitoring/reference`: live traffic
/// becomes the version's reference ("the last hour of stable"). Kept in
/// memory: a reload goes back to the reference file.
pub async fn freeze(
    State(s): State<HttpState>,
    Path(p): Path<ModelPath>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, HttpError> {
    let invalid = |m: String| HttpError(Error::invalid(m));
    let body: FreezeBody = if body.iter().all(u8::is_ascii_whitespace) {
        FreezeBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| invalid(format!("the freeze request: {e}")))?
    };
    if body.windows == Some(0) || body.seconds.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
        return Err(invalid(
            "the freeze request: 'windows' and 'seconds' must be positive".into(),
        ));
    }
    let target = s.engine.resolve(&p.model, p.version.as_deref())?;
    let monitored = |version: u64| {
        s.monitoring.find(&p.model, version).ok_or_else(|| {
            invalid(format!(
                "version {version} of model '{}' is not monitored: monitoring starts from a reference.npz",
                p.model
            ))
        })
    };
    let to = monitored(target.version)?;
    let from = match &body.version {
        Some(v) => monitored(s.engine.resolve(&p.model, Some(v))?.version)?,
        None => std::sync::Arc::clone(&to),
    };
    let source = to
        .freeze(&quiver_monitor::monitor::Freeze {
            source: &from,
            variant: body.variant.as_deref(),
            windows: body.windows,
            seconds: body.seconds,
        })
        .map_err(invalid)?;
    Ok(Json(json!({
        "model": p.model,
        "version": target.version.to_string(),
        "reference": source,
    })))
}
