//! What every REST handler shares: the state, the model path, the error
//! answer.
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::Codes as _;
use crate::error::Error;
use quiver_engine::Engine;

#[derive(Clone)]
pub struct HttpState {
    pub engine: Arc<Engine>,
    /// Body limit, applied again after gzip/deflate inflation.
    pub max_body_bytes: usize,
    pub admission: Arc<quiver_engine::admission::Admission>,
    pub auth: Arc<crate::auth::Auth>,
    pub monitoring: Arc<quiver_monitor::Monitoring>,
    /// Request tracing: the trace extension reads and changes its settings.
    pub tracer: Arc<crate::trace::Tracer>,
    /// Registered system shared memory regions.
    pub shm: Arc<crate::shm::Regions>,
}

/// `{model}` and optional `{version}` from the path.
#[derive(Deserialize)]
pub struct ModelPath {
    pub model: String,
    pub version: Option<String>,
}

/// An engine error as an HTTP answer: the status from the one table
/// (`crate::error`), the message as `{"error": ...}`.
#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.0.kind.http_status(),
            axum::Json(serde_json::json!({ "error": self.0.message })),
        )
            .into_response()
    }
}
