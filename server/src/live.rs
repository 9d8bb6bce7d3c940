//! `/api/ws`: the live feed. Every upgrade and rollback is pushed, as JSON, the moment the
//! dashboard's watch cache sees it change, to every connected page that may see it.

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use fluxup_app::backend::{Backend, Viewer};
use fluxup_app::model::{Operation, Watched};
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
    // The operations the page shows, as it said on connecting.
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(op) => {
                    // Only what the person may see (RBAC, asked once and remembered briefly).
                    if !backend.may_see(&viewer, &op).await {
                        continue;
                    }
                    if !send_op(&mut socket, &op).await {
                        return;
                    }
                }
                // A slow page missed some changes: what it shows is sent again, current.
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "live feed lagged");
                    if !send_current(&mut socket, &backend, &viewer, &watched).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    // A page asks once, on connecting; more than a page could show is cut.
                    watched = serde_json::from_str(text.as_str()).unwrap_or_default();
                    watched.truncate(MAX_WATCHED);
                    if !send_current(&mut socket, &backend, &viewer, &watched).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The most operations one page may ask for.
const MAX_WATCHED: usize = 100;

/// Sends the current version of each watched operation the person may see (those gone or
/// hidden from them are left out). False when the page has gone.
async fn send_current(
    socket: &mut WebSocket,
    backend: &Backend,
    viewer: &Viewer,
    watched: &[Watched],
) -> bool {
    for w in watched {
        let Ok(op) = backend
            .operation(viewer, w.kind, &w.namespace, &w.name)
            .await
        else {
            continue;
        };
        if !send_op(socket, &op).await {
            return false;
        }
    }
    true
}

/// Sends one operation as JSON. False when the page has gone.
async fn send_op(socket: &mut WebSocket, op: &Operation) -> bool {
    let Ok(text) = serde_json::to_string(op) else {
        return true;
    };
    socket.send(Message::Text(text.into())).await.is_ok()
}
