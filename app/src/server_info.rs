//! What the server is: its version, shown in the header.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Facts about the running server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServerInfo {
    /// FluxUp's version.
    pub version: String,
}

/// Reads the server's version.
#[server(endpoint = "get_server_info")]
pub async fn get_server_info() -> Result<ServerInfo, ServerFnError> {
    Ok(ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// A small badge with the server's version; loads through a server function.
#[component]
pub fn ServerInfoBadge() -> impl IntoView {
    let info = Resource::new(|| (), |_| get_server_info());
    view! {
        <Transition fallback=|| view! { <span class="text-xs text-slate-500 dark:text-slate-400">"…"</span> }>
            <ErrorBoundary fallback=|_| view! { <span class="text-xs text-red-600">"server unreachable"</span> }>
                {move || info.get().map(|r| r.map(|i| view! {
                    <span id="server-version" class="text-xs text-slate-500 dark:text-slate-400">"v" {i.version}</span>
                }))}
            </ErrorBoundary>
        </Transition>
    }
}
