//! `/healthz` (the process is alive) and `/readyz` (it can serve requests), on the dashboard's
//! port; `/metrics` (Prometheus, OpenMetrics text) on a listener of its own (`--metrics-listen`),
//! so that exposing the dashboard does not expose it.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

/// Routes for the kubelet's probes. The probes carry no state yet: the server is ready as soon
/// as it listens.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(|| async { (StatusCode::OK, "ready") }))
}

/// The metrics listener's only route, for Prometheus' scrapes.
pub fn metrics_routes() -> Router {
    Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(header::CONTENT_TYPE, fluxup_operator::metrics::CONTENT_TYPE)],
                fluxup_operator::metrics::encode(),
            )
        }),
    )
}
