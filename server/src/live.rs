//! `/api/ws`: the live feed. Every upgrade and rollback is pushed, as JSON, the moment the
//! dashboard's watch cache sees it change, to every connected page that may see it.

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use fluxup_app::backend::{Backend, Viewer};
use tokio::sync::broadcast::error::RecvError;

/// The feed's route.
pub fn routes(backend: Option<Backend>) -> Router {
    Router::new()
        .route("/api/ws", get(upgrade))
        .with_state(backend)
}

async fn upgrade(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| feed(socket, backend, viewer))
}

/// Pushes every change until the page goes. Without a cluster there is nothing to push: the
/// socket stays open and quiet (the page shows why), instead of failing and being retried.
async fn feed(mut socket: WebSocket, backend: Option<Backend>, viewer: Viewer) {
    let Some(backend) = backend else {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
        return;
    };
    let mut changes = backend.subscribe();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(op) => {
                    // Only what the person may see (RBAC, asked once and remembered briefly).
                    if !backend.may_see(&viewer, &op).await {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&op) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // A slow page missed some changes; the next ones still come.
                Err(RecvError::Lagged(missed)) => tracing::debug!(missed, "live feed lagged"),
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
