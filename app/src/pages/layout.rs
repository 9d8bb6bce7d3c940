//! The frame around every page: skip link, header, theme switch, content.

use crate::api::whoami;
use crate::server_info::ServerInfoBadge;
use crate::theme::Theme;
use leptos::prelude::*;
use leptos_router::hooks::use_location;

/// Skip link, header and main area. The theme button only works once the wasm has hydrated the
/// page, which is what the browser test checks.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    let theme = RwSignal::new(Theme::current());
    let hydrated = RwSignal::new(false);
    // Effects run only in the browser, after hydration.
    Effect::new(move |_| hydrated.set(true));
    let nav_link =
        "text-sm hover:underline aria-[current=page]:font-semibold aria-[current=page]:underline";
    // Plain links marked by hand: the router's <A> costs ~7 KB of gzipped wasm.
    let path = use_location().pathname;
    let current = move |href: &'static str| move || (path.get() == href).then_some("page");
    view! {
        <div class=move || theme.get().class() data-hydrated=move || hydrated.get().to_string()>
            <div class="min-h-screen bg-slate-50 text-slate-900 dark:bg-slate-900 dark:text-slate-100">
                // rel=external: the browser, not the router, follows it, and so moves the focus.
                <a
                    href="#main"
                    rel="external"
                    class="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-10 focus:rounded-md focus:bg-white focus:px-3 focus:py-2 focus:text-sky-800 focus:shadow"
                >
                    "Skip to content"
                </a>
                <header class="border-b border-slate-200 bg-white dark:border-slate-700 dark:bg-slate-800">
                    <div class="mx-auto flex max-w-6xl flex-wrap items-center justify-between gap-x-4 gap-y-2 px-4 py-3">
                        <nav class="flex flex-wrap items-baseline gap-x-4 gap-y-1" aria-label="Main">
                            <a href="/" class="text-lg font-bold tracking-tight">"FluxUp"</a>
                            <a href="/" class=nav_link aria-current=current("/")>"Apps"</a>
                            <a href="/snapshots" class=nav_link aria-current=current("/snapshots")>"Snapshots"</a>
                            <a href="/settings" class=nav_link aria-current=current("/settings")>"Settings"</a>
                        </nav>
                        <div class="flex flex-wrap items-center gap-3">
                            <span class="hidden sm:inline"><ServerInfoBadge/></span>
                            <Who/>
                            <button
                                type="button"
                                id="theme-toggle"
                                class="rounded-md border border-slate-300 px-3 py-1 text-sm hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-700"
                                on:click=move |_| {
                                    let next = theme.get_untracked().next();
                                    next.remember();
                                    theme.set(next);
                                }
                            >
                                {move || theme.get().label()}
                            </button>
                        </div>
                    </div>
                </header>
                <main id="main" tabindex="-1" class="mx-auto max-w-6xl px-4 py-6 focus:outline-none">
                    {children()}
                </main>
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
