//! The REST routes, each with the scope a token needs for it, and the
//! layers every route runs under: token check, admission and body limit,
//! per-route metrics and JSON errors.
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use super::state::{HttpError, HttpState};
use super::{
    guard, health, infer, logging, metadata, monitoring, repository, shared_memory, statistics, trace, traffic,
};
use crate::auth::Scope;
use crate::error::Error;

/// A REST endpoint and the scope a caller's token needs for it
/// (`crate::auth`): `read` for GET and HEAD, `write` for the other methods.
/// The routers and the token check both read the tables below, so a route
/// cannot be added without saying who may call it.
struct Endpoint {
    path: &'static str,
    read: Scope,
    write: Scope,
    methods: fn() -> MethodRouter<HttpState>,
}

const fn endpoint(path: &'static str, scope: Scope, methods: fn() -> MethodRouter<HttpState>) -> Endpoint {
    Endpoint {
        path,
        read: scope,
        write: scope,
        methods,
    }
}

/// Probes: open unless `--auth-health`.
const HEALTH: &[Endpoint] = &[
    endpoint("/v2/health/live", Scope::Open, || get(health::live)),
    endpoint("/v2/health/ready", Scope::Open, || get(health::ready)),
];

/// The data plane: inference, metadata, configuration, statistics; and
/// `/metrics`, open like the probes.
const DATA: &[Endpoint] = &[
    endpoint("/v2", Scope::Data, || get(metadata::server)),
    endpoint("/v2/models/{model}", Scope::Data, || get(metadata::model)),
    endpoint("/v2/models/{model}/versions/{version}", Scope::Data, || {
        get(metadata::model)
    }),
    endpoint("/v2/models/{model}/ready", Scope::Data, || get(metadata::model_ready)),
    endpoint("/v2/models/{model}/versions/{version}/ready", Scope::Data, || {
        get(metadata::model_ready)
    }),
    endpoint("/v2/models/{model}/config", Scope::Data, || get(metadata::model_config)),
    endpoint("/v2/models/{model}/versions/{version}/config", Scope::Data, || {
        get(metadata::model_config)
    }),
    endpoint("/v2/models/{model}/infer", Scope::Data, || post(infer::infer)),
    endpoint("/v2/models/{model}/versions/{version}/infer", Scope::Data, || {
        post(infer::infer)
    }),
    endpoint("/v2/models/stats", Scope::Data, || get(statistics::all)),
    endpoint("/v2/models/{model}/stats", Scope::Data, || get(statistics::model)),
    endpoint("/v2/models/{model}/versions/{version}/stats", Scope::Data, || {
        get(statistics::model)
    }),
    endpoint("/v2/models/{model}/monitoring", Scope::Data, || get(monitoring::get)),
    endpoint("/v2/models/{model}/versions/{version}/monitoring", Scope::Data, || {
        get(monitoring::get)
    }),
    endpoint("/metrics", Scope::Open, || get(crate::telemetry::render)),
];

/// The control routes, also served on the admin listener: reading a
/// traffic policy or the index is data, changing what serves is control.
const CONTROL: &[Endpoint] = &[
    Endpoint {
        path: "/v2/models/{model}/traffic",
        read: Scope::Data,
        write: Scope::Control,
        methods: || get(traffic::get).put(traffic::put).delete(traffic::delete),
    },
    endpoint("/v2/repository/index", Scope::Data, || post(repository::index)),
    // Triton's logging extension: reading the settings is control too, as
    // Triton's restricted API groups it.
    endpoint("/v2/logging", Scope::Control, || get(logging::get).post(logging::post)),
    // Triton's trace extension: control, like logging.
    endpoint("/v2/trace/setting", Scope::Control, || {
        get(trace::get).post(trace::post)
    }),
    endpoint("/v2/models/{model}/trace/setting", Scope::Control, || {
        get(trace::get_model).post(trace::post_model)
    }),
    endpoint("/v2/models/{model}/monitoring/reference", Scope::Control, || {
        post(monitoring::freeze)
    }),
    endpoint(
        "/v2/models/{model}/versions/{version}/monitoring/reference",
        Scope::Control,
        || post(monitoring::freeze),
    ),
    endpoint("/v2/repository/models/{model}/load", Scope::Control, || {
        post(repository::load)
    }),
    endpoint("/v2/repository/models/{model}/unload", Scope::Control, || {
        post(repository::unload)
    }),
    // Triton's shared memory extensions: registering memory is control, as
    // its restricted "shared-memory" API group has it; so is the status,
    // which lists keys.
    endpoint("/v2/systemsharedmemory/status", Scope::Control, || {
        get(shared_memory::status_all)
    }),
    endpoint("/v2/systemsharedmemory/region/{name}/status", Scope::Control, || {
        get(shared_memory::status)
    }),
    endpoint("/v2/systemsharedmemory/region/{name}/register", Scope::Control, || {
        post(shared_memory::register)
    }),
    endpoint("/v2/systemsharedmemory/unregister", Scope::Control, || {
        post(shared_memory::unregister_all)
    }),
    endpoint(
        "/v2/systemsharedmemory/region/{name}/unregister",
        Scope::Control,
        || post(shared_memory::unregister),
    ),
    endpoint("/v2/cudasharedmemory/status", Scope::Control, || {
        get(shared_memory::cuda_status_all)
    }),
    endpoint("/v2/cudasharedmemory/region/{name}/status", Scope::Control, || {
        get(shared_memory::cuda_status)
    }),
    endpoint("/v2/cudasharedmemory/region/{name}/register", Scope::Control, || {
        post(shared_memory::cuda_register)
    }),
    endpoint("/v2/cudasharedmemory/unregister", Scope::Control, || {
        post(shared_memory::cuda_unregister_all)
    }),
    endpoint("/v2/cudasharedmemory/region/{name}/unregister", Scope::Control, || {
        post(shared_memory::cuda_unregister)
    }),
];

fn routes(groups: &[&[Endpoint]]) -> Router<HttpState> {
    groups
        .iter()
        .flat_map(|g| g.iter())
        .fold(Router::new(), |r, e| r.route(e.path, (e.methods)()))
}

/// The scope a request needs, by the route pattern it matched; a path that
/// matched none (a 404 to be) needs the data plane's, like Triton's.
pub fn scope(route: Option<&str>, read_only: bool) -> Scope {
    let found = [HEALTH, DATA, CONTROL]
        .iter()
        .flat_map(|g| g.iter())
        .find(|e| Some(e.path) == route);
    match (found, read_only) {
        (Some(e), true) => e.read,
        (Some(e), false) => e.write,
        (None, _) => Scope::Data,
    }
}

/// The HTTP port: the data plane and, unless moved to an admin listener
/// only, the control routes too.
pub fn router(state: HttpState) -> Router {
    guarded(routes(&[HEALTH, DATA, CONTROL]), state)
}

/// A separate admin listener (`--admin-port`): the control routes (traffic
/// policies, repository control) and health, apart from the data plane.
pub fn admin_router(state: HttpState) -> Router {
    guarded(routes(&[CONTROL, HEALTH]), state)
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
                scope,
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
    // A reference count, not a copy of the pattern.
    let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    // Cheap clones (the URI shares its bytes), kept for an error message.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        response = guard::json_errors(&method, &uri, response).await;
    }
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    crate::telemetry::http_request(route, status.as_u16(), started.elapsed());
    response
}

async fn not_found(uri: axum::http::Uri) -> Response {
    HttpError(Error::not_found(format!("no endpoint at {}", uri.path()))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_scope() {
        assert_eq!(scope(Some("/v2/health/ready"), true), Scope::Open);
        assert_eq!(scope(Some("/metrics"), true), Scope::Open);
        assert_eq!(scope(Some("/v2/repository/models/{model}/load"), false), Scope::Control);
        assert_eq!(scope(Some("/v2/repository/index"), false), Scope::Data);
        assert_eq!(scope(Some("/v2/models/{model}/infer"), false), Scope::Data);
        assert_eq!(scope(Some("/v2/models/{model}/traffic"), false), Scope::Control);
        assert_eq!(scope(Some("/v2/models/{model}/traffic"), true), Scope::Data);
        assert_eq!(scope(None, true), Scope::Data, "unmatched paths need a data token");
        // A model named like a control path is still data.
        assert_eq!(scope(Some("/v2/models/{model}/infer"), true), Scope::Data);
    }
}
