//! Settings: who you are to FluxUp and Kubernetes, how logins work here, and where notifications
//! go (read from the `fluxup-notifications` ConfigMap; addresses and keys are never shown).
//! A sink's events and namespaces can be changed here, as the person (RBAC on the ConfigMap
//! decides); its type, address and keys are only ever changed in the cluster.

use super::Layout;
use super::widgets::ErrorNote;
use crate::api::{change_sink, get_settings};
use crate::model::SinkLine;
use leptos::prelude::*;

#[component]
pub fn SettingsPage() -> impl IntoView {
    let settings = Resource::new(|| (), |_| get_settings());
    view! {
        <Layout>
            <h1 class="text-2xl font-semibold">"Settings"</h1>
            <Transition fallback=|| view! { <p class="mt-6 text-slate-500 dark:text-slate-400">"Loading…"</p> }>
                {move || settings.get().map(|result| match result {
                    Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Ok(s) => view! {
                        <section class="mt-6 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800">
                            <h2 class="font-semibold">"You"</h2>
                            <dl class="mt-2 grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
                                <dt class="text-slate-500 dark:text-slate-400">"User"</dt><dd id="settings-user">{s.user.clone()}</dd>
                                <dt class="text-slate-500 dark:text-slate-400">"Groups"</dt><dd>{if s.groups.is_empty() { "none".to_string() } else { s.groups.join(", ") }}</dd>
                                <dt class="text-slate-500 dark:text-slate-400">"Logins"</dt><dd id="settings-auth">{s.auth.clone()}</dd>
                            </dl>
                            <p class="mt-2 text-sm text-slate-600 dark:text-slate-300">
                                "What you may see and do is the cluster's RBAC for this user: bind the fluxup-viewer or fluxup-operator ClusterRole (config/rbac)."
                            </p>
                        </section>
                        <section class="mt-6 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800">
                            <h2 class="font-semibold">"Notifications"</h2>
                            <p class="mt-1 text-sm text-slate-600 dark:text-slate-300">
                                {format!("From the ConfigMap {}, key sinks.yaml; addresses and signing keys live in Secrets.", s.notifications_source)}
                            </p>
                            {s.notifications_error.clone().map(|e| view! { <ErrorNote error=e/> })}
                            {if s.sinks.is_empty() {
                                view! { <p class="mt-2 text-sm" id="no-sinks">"No sinks: FluxUp sends no notifications."</p> }.into_any()
                            } else {
                                view! {
                                    <table class="mt-2 w-full text-left text-sm" id="sinks">
                                        <thead class="text-xs uppercase text-slate-500 dark:text-slate-400">
                                            <tr><th scope="col">"Sink"</th><th scope="col">"Type"</th><th scope="col">"Events"</th><th scope="col">"Namespaces"</th><th scope="col">"Change"</th></tr>
                                        </thead>
                                        <tbody>
                                            {s.sinks.into_iter().map(|sink| {
                                                let editor = view! { <SinkEditor sink=sink.clone() events=s.events.clone()/> };
                                                let row = sink.name.clone();
                                                view! {
                                                    <tr data-sink=row>
                                                        <td class="py-1">{sink.name}</td>
                                                        <td>{sink.kind}</td>
                                                        <td data-field="events">{if sink.events.is_empty() { "all".to_string() } else { sink.events.join(", ") }}</td>
                                                        <td data-field="namespaces">{if sink.namespaces.is_empty() { "all".to_string() } else { sink.namespaces.join(", ") }}</td>
                                                        <td>{editor}</td>
                                                    </tr>
                                                }
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                }.into_any()
                            }}
                        </section>
                    }.into_any(),
                })}
            </Transition>
        </Layout>
    }
}

/// Which events and namespaces one sink gets, changed as the person; the page reloads to show
/// the ConfigMap as it then stands.
#[component]
fn SinkEditor(sink: SinkLine, events: Vec<String>) -> impl IntoView {
    let chosen = RwSignal::new(sink.events.clone());
    let namespaces = RwSignal::new(sink.namespaces.join(", "));
    let name = sink.name.clone();
    let save = Action::new(move |_: &()| {
        let (name, events, namespaces) = (
            name.clone(),
            chosen.get_untracked().join(","),
            namespaces.get_untracked(),
        );
        async move { change_sink(name, events, namespaces).await }
    });
    Effect::new(move |_| {
        if let Some(Ok(_)) = save.value().get() {
            #[cfg(feature = "hydrate")]
            let _ = leptos::prelude::window().location().reload();
        }
    });
    view! {
        <details>
            <summary class="cursor-pointer text-sky-700 underline dark:text-sky-300">"Change"</summary>
            <fieldset class="mt-2 space-y-1">
                <legend class="text-xs text-slate-500 dark:text-slate-400">"Events (none checked: all)"</legend>
                {events.into_iter().map(|event| {
                    let (on, toggle) = (event.clone(), event.clone());
                    view! {
                        <label class="mr-3 inline-flex items-center gap-1">
                            <input type="checkbox" data-event=event.clone()
                                prop:checked=move || chosen.with(|c| c.contains(&on))
                                on:change=move |_| chosen.update(|c| {
                                    if let Some(i) = c.iter().position(|e| *e == toggle) { c.remove(i); } else { c.push(toggle.clone()); }
                                })/>
                            {event}
                        </label>
                    }
                }).collect_view()}
            </fieldset>
            <label class="mt-2 block text-xs text-slate-500 dark:text-slate-400">
                "Namespaces, comma-separated (empty: all)"
                <input type="text" name="namespaces" class="mt-1 block w-full rounded border border-slate-300 px-2 py-1 text-sm text-slate-900 dark:border-slate-600 dark:bg-slate-900 dark:text-slate-100"
                    prop:value=move || namespaces.get()
                    on:input=move |ev| namespaces.set(event_target_value(&ev))/>
            </label>
            <button type="button" class="save-sink mt-2 rounded bg-sky-700 px-3 py-1 text-sm text-white hover:bg-sky-800 disabled:opacity-50"
                disabled=move || save.pending().get()
                on:click=move |_| { save.dispatch(()); }>
                "Save"
            </button>
            {move || save.value().get().and_then(Result::err).map(|e| view! { <ErrorNote error=e.to_string()/> })}
        </details>
    }
}
