//! One module per page.

pub mod app_detail;
pub mod apps;
mod layout;
pub mod new_app;
pub mod settings;
pub mod snapshots;
pub mod widgets;

pub use layout::Layout;

use leptos::prelude::*;

/// Shown for any path the router does not know.
#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <Layout>
            <h1 class="text-xl font-semibold">"Page not found"</h1>
            <p class="mt-2"><a class="text-sky-700 underline dark:text-sky-300" href="/">"Back to apps"</a></p>
        </Layout>
    }
}
