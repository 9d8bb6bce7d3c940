//! `/api/ws`: the live feed. Every upgrade and rollback is pushed, as JSON, the moment the
//! dashboard's watch cache sees it change, to every connected page that may see it. A feed
//! lasts only as long as the login it was opened with: it is checked again every 30 s, at its
//! expiry and on each logout, and the socket is closed (saying why) once it has ended.

use crate::auth::Login;
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use fluxup_app::backend::{Backend, Viewer};
use fluxup_app::model::{Operation, Watched};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The largest message or frame a page may send: it sends one small JSON list.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often an open feed checks its login again.
const RECHECK: Duration = Duration::from_secs(30);

/// The feed's route.
pub fn routes(backend: Option<Backend>) -> Router {
    Router::new()
        .route("/api/ws", get(upgrade))
        .with_state(backend)
}

async fn upgrade(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    login: Option<Extension<Login>>,
    ws: WebSocketUpgrade,
) -> Response {
    let login = login.map(|Extension(login)| login);
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| feed(socket, backend, viewer, login))
}

/// Pushes every change until the page goes or the login ends (`login` is `None` without
/// logins). Without a cluster there is nothing to push: the socket stays open and quiet (the
/// page shows why), instead of failing and being retried.
async fn feed(
    mut socket: WebSocket,
    backend: Option<Backend>,
    viewer: Viewer,
    login: Option<Login>,
) {
    let mut changes = backend.as_ref().map(Backend::subscribe);
    let mut revocations = login.as_ref().map(Login::revocations);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    let expiry = tokio::time::sleep(login.as_ref().map_or(Duration::MAX, Login::remaining));
    tokio::pin!(expiry);
    // The operations the page shows, as it said on connecting.
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        let check = tokio::select! {
            change = next_change(&mut changes) => {
                let Some(backend) = &backend else { continue };
                match change {
                    Ok(op) => {
                        // Only what the person may see (RBAC, asked once and remembered briefly).
                        if backend.may_see(&viewer, &op).await && !send_op(&mut socket, &op).await {
                            return;
                        }
                    }
                    // A slow page missed some changes: what it shows is sent again, current.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "live feed lagged");
                        if !send_current(&mut socket, backend, &viewer, &watched).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                false
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    // A page asks once, on connecting; more than a page could show is cut.
                    watched = serde_json::from_str(text.as_str()).unwrap_or_default();
                    watched.truncate(MAX_WATCHED);
                    if let Some(backend) = &backend
                        && !send_current(&mut socket, backend, &viewer, &watched).await
                    {
                        return;
                    }
                    false
                }
                Some(Ok(_)) => false,
            },
            _ = recheck.tick(), if login.is_some() => true,
            // (Once elapsed a sleep stays ready: the 30 s check takes over.)
            _ = &mut expiry, if login.is_some() && !expiry.is_elapsed() => true,
            _ = revoked(&mut revocations) => true,
        };
        if check && let Some(why) = login.as_ref().and_then(Login::ended) {
            tracing::info!(user = %viewer.name, %why, "live feed closed: the login ended");
            let frame = CloseFrame {
                code: close_code::POLICY,
                reason: why.into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    }
}

/// The next change from the cluster; never without one.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<Operation>>,
) -> Result<Operation, broadcast::error::RecvError> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}

/// Returns when a login was revoked in this process; never without logins.
async fn revoked(revocations: &mut Option<watch::Receiver<u64>>) {
    if let Some(r) = revocations
        && r.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
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
