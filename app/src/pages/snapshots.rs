//! Snapshots: every VolumeSnapshot FluxUp took that the person may see, with the app and upgrade
//! it belongs to; delete one after a confirmation (as the person: RBAC decides).

use super::Layout;
use super::widgets::{Column, DataTable, ErrorNote, Shown};
use crate::api::{delete_snapshot, list_snapshots};
use crate::model::SnapshotLine;
use leptos::prelude::*;

#[component]
pub fn SnapshotsPage() -> impl IntoView {
    let delete = Action::new(|(namespace, name): &(String, String)| {
        let (namespace, name) = (namespace.clone(), name.clone());
        async move {
            delete_snapshot(namespace.clone(), name.clone())
                .await
                .map(|()| (namespace, name))
        }
    });
    // Read again after each deletion; until the cache has caught up, what the API server
    // accepted to delete is left out here.
    let snapshots = Resource::new(move || delete.version().get(), |_| list_snapshots());
    let confirming = RwSignal::new(None::<(String, String)>);
    let deleted = RwSignal::new(Vec::<(String, String)>::new());
    Effect::new(move |_| {
        if let Some(Ok(key)) = delete.value().get() {
            deleted.update(|d| d.push(key));
        }
    });
    view! {
        <Layout>
            <p class="text-sm"><a href="/" class="text-sky-700 hover:underline dark:text-sky-300">"← All apps"</a></p>
            <h1 class="mt-2 text-2xl font-semibold">"Snapshots"</h1>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-300">
                "Taken before each upgrade of an app with volumes; a rollback restores them. Retention deletes old ones on its own."
            </p>
            {move || delete.value().get().and_then(Result::err).map(|e| view! { <ErrorNote error=e.to_string()/> })}
            <Transition fallback=|| view! { <p class="mt-6 text-slate-500 dark:text-slate-400">"Loading…"</p> }>
                {move || snapshots.get().map(|result| match result {
                    Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="mt-6 text-slate-600 dark:text-slate-300" id="no-snapshots">"No snapshots you may see."</p>
                    }.into_any(),
                    Ok(list) => {
                        let gone = deleted.get();
                        let list: Vec<_> = list
                            .into_iter()
                            .filter(|(ns, s)| !gone.contains(&(ns.clone(), s.name.clone())))
                            .collect();
                        view! { <SnapshotTable list confirming delete/> }.into_any()
                    }
                })}
            </Transition>
        </Layout>
    }
}

const SNAPSHOT_COLUMNS: &[Column] = &[
    Column::new("Snapshot", Shown::Always),
    Column::new("Upgrade", Shown::Always),
    Column::new("State", Shown::FromSmall),
    Column::new("Action", Shown::UnlabelledAlways),
];

#[component]
fn SnapshotTable(
    list: Vec<(String, SnapshotLine)>,
    confirming: RwSignal<Option<(String, String)>>,
    delete: Action<(String, String), Result<(String, String), ServerFnError>>,
) -> impl IntoView {
    view! {
        <DataTable label="Snapshots" id="snapshots" columns=SNAPSHOT_COLUMNS>
            {list.into_iter().map(|(namespace, s)| {
                let key = (namespace.clone(), s.name.clone());
                let (ask, confirm, shown) = (key.clone(), key.clone(), key.clone());
                view! {
                    <tr id=format!("snapshot-{}-{}", namespace, s.name) class="border-b border-slate-100 last:border-0 dark:border-slate-700">
                        <td class="px-3 py-2"><span class="font-mono">{s.name.clone()}</span><div class="text-xs text-slate-500 dark:text-slate-400">{namespace.clone()}</div></td>
                        <td class="px-3 py-2 text-xs">{s.upgrade.clone().unwrap_or_default()}</td>
                        <td class="hidden px-3 py-2 sm:table-cell">
                            {if s.ready { "ready" } else { "not ready" }}
                            {s.size.clone().map(|z| format!(", {z}"))}
                            {s.created.clone().map(|c| format!(", taken {c}"))}
                        </td>
                        <td class="px-3 py-2 text-right">
                            <button type="button" class="delete rounded-md border border-slate-300 px-2 py-1 hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-700"
                                on:click=move |_| confirming.set(Some(ask.clone()))>"Delete…"</button>
                            <Show when=move || confirming.get() == Some(shown.clone())>
                                <button type="button" class="confirm-delete ml-2 rounded-md bg-red-700 px-2 py-1 font-medium text-white hover:bg-red-800"
                                    on:click={let c = confirm.clone(); move |_| { confirming.set(None); delete.dispatch(c.clone()); }}>
                                    "Confirm: a rollback to this upgrade will no longer be possible"
                                </button>
                            </Show>
                        </td>
                    </tr>
                }
            }).collect_view()}
        </DataTable>
    }
}
