//! Liveness and readiness (Kubernetes probes, `tritonclient.is_server_*`).
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::state::HttpState;

pub async fn live() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(serde_json::json!({ "live": true })))
}

/// 200 once every model the repository asks for has loaded or failed, and
/// 503 again as soon as shutdown begins, so traffic drains away.
pub async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    let ready = s.engine.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(serde_json::json!({ "ready": ready })))
}
