//! The frame around every page: header, theme switch, content.

use crate::api::whoami;
use crate::server_info::ServerInfoBadge;
use leptos::prelude::*;

/// Header and main area. The theme switch only works once the wasm has hydrated the page, which
/// is what the browser test checks.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    let (dark, set_dark) = signal(false);
    let hydrated = RwSignal::new(false);
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| hydrated.set(true));
    view! {
        <div
            class="min-h-screen"
            class:dark=move || dark.get()
            data-hydrated=move || hydrated.get().to_string()
        >
            <div class="min-h-screen bg-slate-50 text-slate-900 dark:bg-slate-900 dark:text-slate-100">
                <header class="border-b border-slate-200 bg-white dark:border-slate-700 dark:bg-slate-800">
                    <div class="mx-auto flex max-w-6xl items-center justify-between gap-4 px-4 py-3">
                        <nav class="flex items-baseline gap-4" aria-label="Main">
                            <a href="/" class="text-lg font-bold tracking-tight">"FluxUp"</a>
                            <a href="/" class="text-sm hover:underline">"Apps"</a>
                            <a href="/snapshots" class="text-sm hover:underline">"Snapshots"</a>
                            <a href="/settings" class="text-sm hover:underline">"Settings"</a>
                        </nav>
                        <div class="flex items-center gap-3">
                            <ServerInfoBadge/>
                            <Who/>
                            <button
                                type="button"
                                id="theme-toggle"
                                class="rounded-md border border-slate-300 px-3 py-1 text-sm hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-700"
                                aria-pressed=move || dark.get().to_string()
                                on:click=move |_| set_dark.update(|d| *d = !*d)
                            >
                                {move || if dark.get() { "Light mode" } else { "Dark mode" }}
                            </button>
                        </div>
                    </div>
                </header>
                <main class="mx-auto max-w-6xl px-4 py-6">{children()}</main>
            </div>
        </div>
    }
}

/// The logged-in user and the logout button.
#[component]
fn Who() -> impl IntoView {
    let who = Resource::new(|| (), |_| whoami());
    view! {
        <Transition fallback=|| ()>
            {move || who.get().and_then(Result::ok).map(|name| view! {
                <span id="user" class="text-sm text-slate-600 dark:text-slate-300">{name}</span>
                <form method="post" action="/auth/logout">
                    <button type="submit" class="text-sm text-sky-700 hover:underline dark:text-sky-300">"Log out"</button>
                </form>
            })}
        </Transition>
    }
}
