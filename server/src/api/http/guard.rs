//! Two middlewares that keep every HTTP answer honest.
//!
//! - [`limit_body`] admits the request against the server-wide budgets
//!   (`engine::admission`) and buffers its body under `--http-max-body-bytes`
//!   before any handler runs: 429 when the budget has no room (checked on the
//!   declared length before a byte is read, then on every chunk), 413 when the
//!   body is over the limit, both with the JSON error body. A client that writes its whole body before reading (Python's
//!   `http.client`, `requests`) would see a broken pipe if the server closed
//!   on it, so the rest of the body is read and thrown away first, for a
//!   bounded time and size, as nginx's lingering close does.
//! - [`json_errors`] gives every error the framework answers by itself (405,
//!   a path that does not decode, ...) the `{"error": "..."}` body that
//!   quiver's own errors have (called by the metrics middleware, which sees
//!   every answer: one middleware less on the request path).
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::state::HttpError;
use crate::error::{Error, ErrorKind};
use quiver_engine::admission::Admission;

/// What [`limit_body`] needs.
#[derive(Clone)]
pub struct Limits {
    pub max_body: usize,
    pub admission: std::sync::Arc<Admission>,
    pub auth: std::sync::Arc<crate::auth::Auth>,
    /// The scope a route needs (`routes.rs`), by the pattern it matched and
    /// whether the method only reads.
    pub scope: fn(Option<&str>, bool) -> crate::auth::Scope,
}

/// The token check, before anything else is done for a request: a caller
/// without a valid token costs no admission and no buffering.
/// `Some(answer)` refuses the request.
fn authorize(limits: &Limits, request: &Request) -> Option<Response> {
    // Without tokens every call is allowed: not even the scope is looked up.
    if !limits.auth.enabled() {
        return None;
    }
    let headers = request.headers();
    // The guard wraps each route, so the route it matched is known here.
    let route = request.extensions().get::<axum::extract::MatchedPath>();
    let checked = limits.auth.check(
        (limits.scope)(
            route.map(|r| r.as_str()),
            matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD),
        ),
        headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes),
        headers.get("x-api-key").map(HeaderValue::as_bytes),
    );
    checked.err().map(|e| {
        let challenge = e.kind == ErrorKind::Unauthenticated;
        let mut response = HttpError(e).into_response();
        if challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    })
}

/// How long an over-limit body is read and discarded before the answer.
const LINGER: Duration = Duration::from_secs(5);
/// How much of an over-limit body is read and discarded: at least this, and
/// at least four limits. Discarding costs bandwidth, not memory.
const LINGER_BYTES: u64 = 1 << 30;

fn too_large(max: usize) -> Response {
    HttpError(Error::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is over the limit of {max} bytes (--http-max-body-bytes)"),
    ))
    .into_response()
}

/// Answers `response` after reading and discarding what is left of `body`,
/// up to `bytes` (none: answer at once) or [`LINGER`].
async fn refuse(mut body: Body, bytes: u64, response: Response) -> Response {
    if bytes == 0 {
        return response;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut left = bytes;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            if n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
    response
}

pub async fn limit_body(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    if let Some(refused) = authorize(&limits, &request) {
        return refused;
    }
    let max = limits.max_body;
    let (parts, mut body) = request.into_parts();
    let linger = (max as u64).saturating_mul(4).max(LINGER_BYTES);
    // A client waiting for `100 Continue` has sent nothing yet: answer at once.
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared: Option<u64> = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    // How much of a refused body to read first (none for a client that waits).
    let lingering = |rest: u64| if expects_continue { 0 } else { rest.min(linger) };
    if let Some(n) = declared.filter(|&n| n > max as u64) {
        return refuse(body, lingering(n), too_large(max)).await;
    }
    // Held until the handler has answered: queued and running requests keep
    // their bytes counted.
    let ticket = match limits.admission.admit(declared.unwrap_or(0) as usize) {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                body,
                lingering(declared.unwrap_or(linger)),
                HttpError(e).into_response(),
            )
            .await;
        }
    };
    let granted = declared.unwrap_or(0) as usize;
    // Chunks are kept as they come (memory grows with what was received, not
    // with what was declared) and joined once at the end.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return HttpError(Error::invalid(format!("cannot read the request body: {e}"))).into_response(),
        };
        let Ok(chunk) = frame.into_data() else { continue };
        total += chunk.len();
        if total > max {
            return refuse(body, linger, too_large(max)).await;
        }
        // A body without a declared length is admitted as it arrives.
        if total > granted
            && let Err(e) = ticket.grow(total - granted.max(total - chunk.len()))
        {
            return refuse(body, linger, HttpError(e).into_response()).await;
        }
        chunks.push(chunk);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = Vec::with_capacity(total);
            for c in &chunks {
                joined.extend_from_slice(c);
            }
            Bytes::from(joined)
        }
    };
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(ticket);
    response
}

/// The largest framework error body kept as the message.
const MESSAGE_LIMIT: usize = 4096;

/// Gives an error response the framework made by itself (no JSON body) the
/// `{"error": ...}` body. `method` and `uri` are the request's.
pub async fn json_errors(method: &axum::http::Method, uri: &axum::http::Uri, response: Response) -> Response {
    let path = uri.path();
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MESSAGE_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match (status, text.trim()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!("method {method} is not allowed on {path}"),
        (_, "") => format!("{path}: {}", status.canonical_reason().unwrap_or("error")),
        (_, t) => format!("{path}: {t}"),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}
