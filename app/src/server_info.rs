//! What the server is: its version, shown in the header.

use leptos::prelude::*;

/// FluxUp's version. The page and the server are built from the same workspace, so the wasm
/// knows it too: no request needed.
#[component]
pub fn ServerInfoBadge() -> impl IntoView {
    view! {
        <span id="server-version" class="text-xs text-slate-500 dark:text-slate-400">
            "v" {env!("CARGO_PKG_VERSION")}
        </span>
    }
}
