//! `/healthz` (the process is alive) and `/readyz` (it can serve requests).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Routes for the kubelet's probes. They carry no state yet: the server is ready as soon as it
/// listens; the operator issue adds "watch caches synced" to readiness.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(|| async { (StatusCode::OK, "ready") }))
}
