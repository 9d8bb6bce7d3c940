#![recursion_limit = "256"] // the views of the app page nest deeper than the default
//! FluxUp's web application, rendered on the server (feature `ssr`) and hydrated in the browser
//! (feature `hydrate`). One module per page; server functions sit beside the models they serve.

pub mod api;
#[cfg(feature = "ssr")]
pub mod backend;
pub mod live;
pub mod model;
pub mod pages;
pub mod routes;
pub mod server_info;
pub mod theme;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{Lazy, path};

/// The HTML document around the app: head, hydration scripts, body.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body class="bg-slate-50 text-slate-900 antialiased">
                <App/>
            </body>
        </html>
    }
}

/// The app: routes and the chrome around every page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    live::provide_live();
    view! {
        <Stylesheet id="leptos" href="/pkg/fluxup.css"/>
        <Title text="FluxUp"/>
        <Router>
            <Routes fallback=|| view! { <pages::NotFound/> }>
                <Route path=path!("") view=pages::apps::AppsPage/>
                // The other pages are lazy routes: a wasm chunk each in a split build (see routes).
                <Route path=path!("/apps/new") view={Lazy::<routes::NewAppRoute>::new()}/>
                <Route path=path!("/snapshots") view={Lazy::<routes::SnapshotsRoute>::new()}/>
                <Route path=path!("/settings") view={Lazy::<routes::SettingsRoute>::new()}/>
                <Route path=path!("/apps/:namespace/:name") view={Lazy::<routes::AppRoute>::new()}/>
            </Routes>
        </Router>
    }
}
