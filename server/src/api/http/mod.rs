//! The REST front end (axum on hyper): one module per endpoint group.
mod compression;
mod guard;
mod health;
mod infer;
mod metadata;
mod repository;
pub mod serve;
mod statistics;
mod traffic;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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
}

/// `{model}` and optional `{version}` from the path.
#[derive(Deserialize)]
pub struct ModelPath {
    model: String,
    version: Option<String>,
}

/// The HTTP port: the data plane and, unless moved to an admin listener
/// only, the control routes too.
pub fn router(state: HttpState) -> Router {
    guarded(data_routes().merge(control_routes()), state)
}

/// A separate admin listener (`--admin-port`): the control routes (traffic
/// policies, repository control) and health, apart from the data plane.
pub fn admin_router(state: HttpState) -> Router {
    let health = Router::new()
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready));
    guarded(control_routes().merge(health), state)
}

fn control_routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/v2/models/{model}/traffic",
            get(traffic::get).put(traffic::put).delete(traffic::delete),
        )
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route("/v2/repository/models/{model}/unload", post(repository::unload))
}

fn data_routes() -> Router<HttpState> {
    Router::new()
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2", get(metadata::server))
        .route("/v2/models/{model}", get(metadata::model))
        .route("/v2/models/{model}/versions/{version}", get(metadata::model))
        .route("/v2/models/{model}/ready", get(metadata::model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(metadata::model_ready),
        )
        .route("/v2/models/{model}/config", get(metadata::model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(metadata::model_config),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer::infer))
        .route("/v2/models/stats", get(statistics::all))
        .route("/v2/models/{model}/stats", get(statistics::model))
        .route("/v2/models/{model}/versions/{version}/stats", get(statistics::model))
        .route("/metrics", get(crate::telemetry::render))
}

/// The guards every HTTP listener shares: token check, admission and body
/// limit, JSON errors and per-route metrics.
fn guarded(routes: Router<HttpState>, state: HttpState) -> Router {
    let max_body = state.max_body_bytes;
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            guard::Limits {
                max_body,
                admission: Arc::clone(&state.admission),
                auth: Arc::clone(&state.auth),
            },
            guard::limit_body,
        ))
        // The guard has applied the limit; extractors must not apply axum's 2 MB default.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(observe))
        .with_state(state)
}

/// Records every request in the per-protocol metrics, by route pattern (so
/// model names do not explode the label set) and status, and gives the
/// framework's own errors their JSON body.
async fn observe(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Cheap clones (the URI shares its bytes), kept for an error message.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        response = guard::json_errors(&method, &uri, response).await;
    }
    crate::telemetry::http_request(route, status.as_u16(), started.elapsed());
    response
}

async fn not_found(uri: axum::http::Uri) -> Response {
    HttpError(Error::not_found(format!("no endpoint at {}", uri.path()))).into_response()
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
