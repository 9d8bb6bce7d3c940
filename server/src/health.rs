//! `/healthz` (the process is alive), `/readyz` (it can serve requests) and `/metrics`
//! (Prometheus, OpenMetrics text).

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;

/// Routes for the kubelet's probes and Prometheus' scrapes. The probes carry no state yet: the
/// server is ready as soon as it listens.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(|| async { (StatusCode::OK, "ready") }))
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, fluxup_operator::metrics::CONTENT_TYPE)],
                    fluxup_operator::metrics::encode(),
                )
            }),
        )
}
