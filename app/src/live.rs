//! The live feed: one WebSocket (`/api/ws`) per page, over which the server pushes every
//! upgrade and rollback as it changes (from its watch caches, as the change happens). It
//! reconnects by itself, and on every (re)connect sends the operations the page shows so the
//! server answers with their current versions: nothing that changed between the page's render
//! (or a dropped connection) and the socket opening is missed. Progress views read the newest
//! version of their operation from it.

use crate::model::{Operation, PhaseState, Watched};
use leptos::prelude::*;
use std::collections::HashMap;

/// The newest version of every operation the feed has brought, and whether it is connected.
#[derive(Clone, Copy)]
pub struct Live {
    operations: RwSignal<HashMap<String, Operation>>,
    /// The operations the page shows, by [`Operation::key`].
    watched: StoredValue<HashMap<String, Watched>>,
    pub connected: RwSignal<bool>,
}

impl Live {
    /// Asks for `op`'s current version on every (re)connect from now on.
    pub fn watch(&self, op: &Operation) {
        let watched = Watched {
            kind: op.kind,
            namespace: op.namespace.clone(),
            name: op.name.clone(),
        };
        self.watched.update_value(|w| {
            w.insert(op.key(), watched);
        });
    }

    /// The newest version of the operation with `key` ([`Operation::key`]).
    pub fn latest(&self, key: &str) -> Option<Operation> {
        self.operations.with(|m| m.get(key).cloned())
    }

    /// Records an operation the feed (or a server function) brought.
    pub fn record(&self, op: Operation) {
        self.operations.update(|m| {
            m.insert(op.key(), op);
        });
    }
}

/// Makes the feed available to every page; in the browser, connects.
pub fn provide_live() {
    let live = Live {
        operations: RwSignal::new(HashMap::new()),
        watched: StoredValue::new(HashMap::new()),
        connected: RwSignal::new(false),
    };
    provide_context(live);
    // Effects run only in the browser, once the page is hydrated. Browser-only code is also
    // kept to wasm32: a workspace build enables `hydrate` in the server binary too, where a
    // reconnect loop without a browser's timers would spin on a runtime thread.
    Effect::new(move |_| {
        #[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
        leptos::task::spawn_local(connect(live));
    });
}

/// The feed of the current page.
pub fn use_live() -> Live {
    use_context::<Live>().expect("provide_live() runs in App")
}

#[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
async fn connect(live: Live) {
    use futures::{SinkExt, StreamExt};
    use gloo_net::websocket::Message;
    use gloo_net::websocket::futures::WebSocket;
    let location = web_sys::window().map(|w| w.location());
    let host = location
        .as_ref()
        .and_then(|l| l.host().ok())
        .unwrap_or_default();
    let secure = location
        .as_ref()
        .and_then(|l| l.protocol().ok())
        .is_some_and(|p| p == "https:");
    let url = format!("{}://{host}/api/ws", if secure { "wss" } else { "ws" });
    loop {
        if let Ok(socket) = WebSocket::open(&url) {
            let (mut outgoing, mut incoming) = socket.split();
            let watched: Vec<Watched> = live.watched.with_value(|w| w.values().cloned().collect());
            if !watched.is_empty()
                && let Ok(text) = serde_json::to_string(&watched)
            {
                // Sent once the socket is open; a failure shows up as the end of `incoming`.
                let _ = outgoing.send(Message::Text(text)).await;
            }
            while let Some(Ok(message)) = incoming.next().await {
                live.connected.set(true);
                if let Message::Text(text) = message
                    && let Ok(op) = serde_json::from_str::<Operation>(&text)
                {
                    live.record(op);
                }
            }
        }
        live.connected.set(false);
        // The server restarted or the network dropped: try again shortly.
        gloo_timers::future::TimeoutFuture::new(1_000).await;
    }
}

/// When this browser first saw each phase of one operation running and ended, to show how long
/// each took. The server's status keeps only the current phase's start.
#[derive(Clone, Copy)]
pub struct PhaseClock(StoredValue<HashMap<String, Seen>>);

/// When a phase was first seen running, and first seen ended (ms since the epoch).
type Seen = (Option<f64>, Option<f64>);

impl PhaseClock {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        PhaseClock(StoredValue::new(HashMap::new()))
    }

    /// Notes `state` of phase `name` now, and says how long it took ("1.2 s"), if seen from its
    /// start to its end; "running" while it runs.
    pub fn elapsed(&self, name: &str, state: PhaseState) -> String {
        let now = now_ms();
        let mut text = String::new();
        self.0.update_value(|seen| {
            let entry = seen.entry(name.to_string()).or_default();
            match state {
                PhaseState::Current => {
                    entry.0.get_or_insert(now);
                    text = "running".into();
                }
                PhaseState::Done | PhaseState::Failed => {
                    let end = *entry.1.get_or_insert(now);
                    if let Some(start) = entry.0 {
                        text = format!("{:.1} s", (end - start) / 1000.0);
                    }
                }
                PhaseState::Waiting | PhaseState::Skipped => {}
            }
        });
        text
    }
}

fn now_ms() -> f64 {
    #[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
    return js_sys::Date::now();
    #[cfg(not(all(feature = "hydrate", target_arch = "wasm32")))]
    return 0.0;
}
