//! Settings: who you are to FluxUp and Kubernetes, how logins work here, and where notifications
//! go (read from the `fluxup-notifications` ConfigMap; addresses and keys are never shown).
//! Everything here is configured in the cluster, so the page says where, instead of editing it.

use super::Layout;
use super::widgets::ErrorNote;
use crate::api::get_settings;
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
                                            <tr><th scope="col">"Sink"</th><th scope="col">"Type"</th><th scope="col">"Events"</th><th scope="col">"Namespaces"</th></tr>
                                        </thead>
                                        <tbody>
                                            {s.sinks.into_iter().map(|sink| view! {
                                                <tr>
                                                    <td class="py-1">{sink.name}</td>
                                                    <td>{sink.kind}</td>
                                                    <td>{if sink.events.is_empty() { "all".to_string() } else { sink.events.join(", ") }}</td>
                                                    <td>{if sink.namespaces.is_empty() { "all".to_string() } else { sink.namespaces.join(", ") }}</td>
                                                </tr>
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
