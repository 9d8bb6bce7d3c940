//! The pages other than the apps page, as lazy routes. With the feature `split` and
//! `cargo leptos build --release --split --features split` (what `scripts/demo` and
//! `scripts/measure-site` run), each page's code is a wasm chunk of its own: the browser fetches
//! it when the page is first shown, or together with the main module when the server rendered
//! that page (the server names the chunk in a preload link). The apps page, the first page most
//! people see, does not carry them. Without the feature (the debug build the tests use) these are
//! ordinary routes: the views resolve at once and nothing is split.

use crate::pages;
use leptos::prelude::*;
use leptos_router::LazyRoute;

/// One app (`/apps/<namespace>/<name>`): versions, the upgrade dialog, rollbacks, history.
pub struct AppRoute;

impl LazyRoute for AppRoute {
    fn data() -> Self {
        Self
    }

    async fn view(_: Self) -> AnyView {
        app_page().await
    }

    async fn preload() {
        #[cfg(all(feature = "split", target_arch = "wasm32"))]
        __preload_app_page().await;
    }
}

#[cfg_attr(feature = "split", leptos::lazy)]
async fn app_page() -> AnyView {
    view! { <pages::app_detail::AppPage/> }.into_any()
}

/// Adding an app (`/apps/new`).
pub struct NewAppRoute;

impl LazyRoute for NewAppRoute {
    fn data() -> Self {
        Self
    }

    async fn view(_: Self) -> AnyView {
        new_app_page().await
    }

    async fn preload() {
        #[cfg(all(feature = "split", target_arch = "wasm32"))]
        __preload_new_app_page().await;
    }
}

#[cfg_attr(feature = "split", leptos::lazy)]
async fn new_app_page() -> AnyView {
    view! { <pages::new_app::NewAppPage/> }.into_any()
}

/// FluxUp's snapshots (`/snapshots`).
pub struct SnapshotsRoute;

impl LazyRoute for SnapshotsRoute {
    fn data() -> Self {
        Self
    }

    async fn view(_: Self) -> AnyView {
        snapshots_page().await
    }

    async fn preload() {
        #[cfg(all(feature = "split", target_arch = "wasm32"))]
        __preload_snapshots_page().await;
    }
}

#[cfg_attr(feature = "split", leptos::lazy)]
async fn snapshots_page() -> AnyView {
    view! { <pages::snapshots::SnapshotsPage/> }.into_any()
}

/// Settings (`/settings`).
pub struct SettingsRoute;

impl LazyRoute for SettingsRoute {
    fn data() -> Self {
        Self
    }

    async fn view(_: Self) -> AnyView {
        settings_page().await
    }

    async fn preload() {
        #[cfg(all(feature = "split", target_arch = "wasm32"))]
        __preload_settings_page().await;
    }
}

#[cfg_attr(feature = "split", leptos::lazy)]
async fn settings_page() -> AnyView {
    view! { <pages::settings::SettingsPage/> }.into_any()
}
