//! Add an app: pick a Flux HelmRelease the person may see; FluxUp proposes the ManagedApp (its
//! Kustomization, the release's volumes, the snapshot class) to read and confirm.

use super::Layout;
use super::widgets::{Column, DataTable, ErrorNote, Shown};
use crate::api::{create_app, list_candidates, propose_app};
use crate::model::Candidate;
use leptos::prelude::*;

#[component]
pub fn NewAppPage() -> impl IntoView {
    let candidates = Resource::new(|| (), |_| list_candidates());
    let propose = Action::new(|(namespace, name): &(String, String)| {
        let (namespace, name) = (namespace.clone(), name.clone());
        async move { propose_app(namespace, name).await }
    });
    let create = Action::new(|(namespace, name): &(String, String)| {
        let (namespace, name) = (namespace.clone(), name.clone());
        async move { create_app(namespace, name).await }
    });
    view! {
        <Layout>
            <p class="text-sm"><a href="/" class="text-sky-700 hover:underline dark:text-sky-300">"← All apps"</a></p>
            <h1 class="mt-2 text-2xl font-semibold">"Add an app"</h1>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-300">
                "Pick a Flux HelmRelease. FluxUp proposes the ManagedApp for it; nothing is created until you confirm."
            </p>
            <Transition fallback=|| view! { <p class="mt-6 text-slate-500 dark:text-slate-400">"Reading HelmReleases…"</p> }>
                {move || candidates.get().map(|result| match result {
                    Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="mt-6 text-slate-600 dark:text-slate-300">"No HelmReleases you may see."</p>
                    }.into_any(),
                    Ok(list) => view! { <Candidates list propose/> }.into_any(),
                })}
            </Transition>
            {move || propose.value().get().map(|result| match result {
                Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                Ok(p) => {
                    let key = (p.namespace.clone(), p.name.clone());
                    view! {
                        <section class="mt-6 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800">
                            <h2 class="font-semibold">{format!("ManagedApp {}/{}", p.namespace, p.name)}</h2>
                            <pre id="proposal" tabindex="0" aria-label="Proposed ManagedApp" class="mt-3 overflow-x-auto rounded bg-slate-100 p-3 text-xs dark:bg-slate-900">{p.manifest.clone()}</pre>
                            <button type="button" id="create-app"
                                class="mt-3 rounded-md bg-sky-700 px-3 py-1.5 text-sm font-medium text-white hover:bg-sky-800 disabled:opacity-50"
                                disabled=move || create.pending().get()
                                on:click=move |_| { create.dispatch(key.clone()); }>
                                "Create ManagedApp"
                            </button>
                        </section>
                    }.into_any()
                }
            })}
            {move || create.value().get().map(|result| match result {
                Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                Ok(row) => view! {
                    <p class="mt-4 text-sm" role="status">
                        "Created. "
                        <a id="created-app" class="text-sky-700 underline dark:text-sky-300"
                            href=format!("/apps/{}/{}", row.namespace, row.name)>{format!("Open {}", row.name)}</a>
                    </p>
                }.into_any(),
            })}
        </Layout>
    }
}

const CANDIDATE_COLUMNS: &[Column] = &[
    Column::new("HelmRelease", Shown::Always),
    Column::new("Chart", Shown::Always),
    Column::new("Kustomization", Shown::FromSmall),
    Column::new("Action", Shown::UnlabelledAlways),
];

#[component]
fn Candidates(
    list: Vec<Candidate>,
    propose: Action<(String, String), Result<crate::model::Proposal, ServerFnError>>,
) -> impl IntoView {
    view! {
        <DataTable label="HelmReleases" columns=CANDIDATE_COLUMNS>
            {list.into_iter().map(|c| {
                let key = (c.namespace.clone(), c.name.clone());
                view! {
                    <tr id=format!("candidate-{}-{}", c.namespace, c.name) class="border-b border-slate-100 last:border-0 dark:border-slate-700">
                        <td class="px-3 py-2">{c.name.clone()}<div class="text-xs text-slate-500 dark:text-slate-400">{c.namespace.clone()}</div></td>
                        <td class="px-3 py-2 font-mono">{c.chart.clone().unwrap_or_default()}" "{c.version.clone().unwrap_or_default()}</td>
                        <td class="hidden px-3 py-2 sm:table-cell">{c.kustomization.clone().unwrap_or_else(|| "none".into())}</td>
                        <td class="px-3 py-2 text-right">
                            {match c.managed_by.clone() {
                                Some(app) => view! { <span class="text-xs text-slate-500 dark:text-slate-400">{format!("managed as {app}")}</span> }.into_any(),
                                None => view! {
                                    <button type="button" class="propose rounded-md border border-slate-300 px-2 py-1 hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-700"
                                        on:click=move |_| { propose.dispatch(key.clone()); }>
                                        "Propose"
                                    </button>
                                }.into_any(),
                            }}
                        </td>
                    </tr>
                }
            }).collect_view()}
        </DataTable>
    }
}
