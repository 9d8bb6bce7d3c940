//! The apps page: every ManagedApp with its current and available version, the size of the
//! update, health and the last upgrade; search, filter and sort.

use super::Layout;
use super::widgets::{Column, DataTable, ErrorNote, HealthBadge, Shown, StateBadge, UpdateBadge};
use crate::api::list_apps;
use crate::model::{AppRow, Summary};
use leptos::prelude::*;

/// How the table is ordered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Order {
    Name,
    /// Biggest update first, then by name.
    Update,
    /// Apps that need a look (not ready, failed upgrade) first.
    Health,
}

fn update_rank(row: &AppRow) -> u8 {
    match row.update_type.as_deref() {
        Some("major") => 0,
        Some("minor") => 1,
        Some("patch") => 2,
        Some("digest") => 3,
        _ => 4,
    }
}

fn health_rank(row: &AppRow) -> u8 {
    let failed = row
        .last_upgrade
        .as_ref()
        .is_some_and(|l| l.status.contains("Failed"));
    match (row.ready, failed) {
        (false, _) => 0,
        (true, true) => 1,
        _ => 2,
    }
}

/// What a button of the summary narrows the list to.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
enum Only {
    #[default]
    All,
    /// Apps whose largest update is of this size.
    Updates(&'static str),
    Running,
    Failed,
}

impl Only {
    fn keeps(&self, row: &AppRow) -> bool {
        match self {
            Only::All => true,
            Only::Updates(kind) => row.update_type.as_deref() == Some(kind),
            Only::Running => row.operation_running(),
            Only::Failed => row.last_failed(),
        }
    }
}

/// The rows to show: those matching `query` (and with an update when `updates_only`, and what
/// `only` keeps), in `order`.
fn shown(
    mut rows: Vec<AppRow>,
    query: &str,
    updates_only: bool,
    only: &Only,
    order: Order,
) -> Vec<AppRow> {
    rows.retain(|r| r.matches(query) && (!updates_only || r.available.is_some()) && only.keeps(r));
    match order {
        Order::Name => {}
        Order::Update => {
            rows.sort_by_key(|r| (update_rank(r), r.namespace.clone(), r.name.clone()))
        }
        Order::Health => {
            rows.sort_by_key(|r| (health_rank(r), r.namespace.clone(), r.name.clone()))
        }
    }
    rows
}

/// The landing page.
#[component]
pub fn AppsPage() -> impl IntoView {
    let apps = Resource::new(|| (), |_| list_apps());
    let query = RwSignal::new(String::new());
    let updates_only = RwSignal::new(false);
    let order = RwSignal::new(Order::Name);
    let only = RwSignal::new(Only::All);
    view! {
        <Layout>
            <div class="flex flex-wrap items-end justify-between gap-3">
                <div class="flex items-baseline gap-4">
                    <h1 class="text-2xl font-semibold">"Apps"</h1>
                    <a href="/apps/new" id="add-app" class="text-sm text-sky-700 hover:underline dark:text-sky-300">"Add an app"</a>
                </div>
                <div class="flex flex-wrap items-center gap-3 text-sm">
                    <label class="flex items-center gap-2">
                        <span class="sr-only">"Search apps"</span>
                        <input
                            id="app-search"
                            type="search"
                            placeholder="Search name, chart, version"
                            class="w-56 rounded-md border border-slate-300 bg-white px-3 py-1.5 dark:border-slate-600 dark:bg-slate-800"
                            prop:value=move || query.get()
                            on:input=move |ev| query.set(event_target_value(&ev))
                        />
                    </label>
                    <label class="flex items-center gap-2">
                        <input
                            id="updates-only"
                            type="checkbox"
                            prop:checked=move || updates_only.get()
                            on:change=move |ev| updates_only.set(event_target_checked(&ev))
                        />
                        "With updates only"
                    </label>
                    <label class="flex items-center gap-2">
                        "Sort"
                        <select
                            id="app-order"
                            class="rounded-md border border-slate-300 bg-white px-2 py-1.5 dark:border-slate-600 dark:bg-slate-800"
                            on:change=move |ev| {
                                order.set(match event_target_value(&ev).as_str() {
                                    "update" => Order::Update,
                                    "health" => Order::Health,
                                    _ => Order::Name,
                                })
                            }
                        >
                            <option value="name">"by name"</option>
                            <option value="update">"biggest update first"</option>
                            <option value="health">"needs attention first"</option>
                        </select>
                    </label>
                </div>
            </div>
            <Transition fallback=|| view! { <p class="mt-6 text-slate-500 dark:text-slate-400">"Loading apps…"</p> }>
                {move || apps.get().map(|result| match result {
                    Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Ok(rows) if rows.is_empty() => view! { <NoApps/> }.into_any(),
                    Ok(rows) => {
                        let total = rows.len();
                        let summary = Summary::of(&rows);
                        let visible = Memo::new(move |_| shown(rows.clone(), &query.get(), updates_only.get(), &only.get(), order.get()));
                        view! { <SummaryBar summary only/><AppsTable rows=visible total/> }.into_any()
                    }
                })}
            </Transition>
        </Layout>
    }
}

#[component]
fn NoApps() -> impl IntoView {
    view! {
        <section class="mt-6 rounded-lg border border-dashed border-slate-300 p-8 text-center dark:border-slate-600">
            <h2 class="text-lg font-medium">"No managed apps yet"</h2>
            <p class="mt-2 text-slate-600 dark:text-slate-300">
                "Create a ManagedApp for a Flux HelmRelease and FluxUp will show its updates here."
            </p>
            <pre class="mt-4 inline-block rounded bg-slate-100 px-3 py-2 text-left text-sm dark:bg-slate-800">
                "kubectl apply -f config/samples/managedapp.yaml"
            </pre>
        </section>
    }
}

/// The top of the page: updates by size, operations running, the last failure; each a button
/// that narrows the list to those apps (pressed again, or "Show all", it shows every app).
#[component]
fn SummaryBar(summary: Summary, only: RwSignal<Only>) -> impl IntoView {
    let button = move |id: String, label: String, what: Only| {
        let pressed = {
            let what = what.clone();
            move || only.get() == what
        };
        let pressed_attr = {
            let pressed = pressed.clone();
            move || if pressed() { "true" } else { "false" }
        };
        view! {
            <button
                type="button"
                id=id
                class="rounded-md border border-slate-300 px-2 py-1 hover:bg-slate-100 aria-pressed:bg-sky-100 aria-pressed:font-medium dark:border-slate-600 dark:hover:bg-slate-700 dark:aria-pressed:bg-sky-900"
                aria-pressed=pressed_attr
                on:click=move |_| only.set(if pressed() { Only::All } else { what.clone() })
            >
                {label}
            </button>
        }
    };
    let kinds = ["major", "minor", "patch", "digest"];
    let with_updates = kinds.iter().map(|k| summary.count(k)).sum::<usize>();
    view! {
        <section aria-label="Summary of the apps" id="summary" class="mt-4 flex flex-wrap items-center gap-2 text-sm">
            <span class="text-slate-600 dark:text-slate-300" data-field="with-updates">
                {format!("{with_updates} {} with updates:", if with_updates == 1 { "app" } else { "apps" })}
            </span>
            {kinds.into_iter().filter(|k| summary.count(k) > 0).map(|k| {
                button(format!("summary-{k}"), format!("{} {k}", summary.count(k)), Only::Updates(k))
            }).collect_view()}
            {(with_updates == 0).then(|| view! { <span class="text-slate-600 dark:text-slate-300">"none"</span> })}
            {button(
                "summary-running".into(),
                format!("{} {} running", summary.running, if summary.running == 1 { "operation" } else { "operations" }),
                Only::Running,
            )}
            {match summary.last_failure.clone() {
                Some(app) => button(
                    "summary-failed".into(),
                    format!("last failure: {app}{}", if summary.failed > 1 { format!(" ({} failed)", summary.failed) } else { String::new() }),
                    Only::Failed,
                ).into_any(),
                None => view! { <span class="text-slate-600 dark:text-slate-300" id="summary-failed">"no failed upgrades"</span> }.into_any(),
            }}
            <Show when=move || only.get() != Only::All>
                <button type="button" id="summary-all" class="text-sky-700 underline dark:text-sky-300" on:click=move |_| only.set(Only::All)>
                    "Show all"
                </button>
            </Show>
        </section>
    }
}

const APP_COLUMNS: &[Column] = &[
    Column::new("App", Shown::Always),
    Column::new("Version", Shown::Always),
    Column::new("Update", Shown::Always),
    Column::new("Health", Shown::FromSmall),
    Column::new("State", Shown::FromSmall),
    Column::new("Last upgrade", Shown::FromMedium),
];

#[component]
fn AppsTable(rows: Memo<Vec<AppRow>>, total: usize) -> impl IntoView {
    view! {
        <p class="mt-4 text-sm text-slate-500 dark:text-slate-400" aria-live="polite">
            {move || format!("{} of {total} apps", rows.get().len())}
        </p>
        <DataTable label="Apps" id="apps" columns=APP_COLUMNS>
            <For each=move || rows.get() key=|r| (r.namespace.clone(), r.name.clone(), r.clone().available, r.state.clone()) let:row>
                <AppLine row/>
            </For>
        </DataTable>
    }
}

#[component]
fn AppLine(row: AppRow) -> impl IntoView {
    let href = format!("/apps/{}/{}", row.namespace, row.name);
    let id = format!("app-{}-{}", row.namespace, row.name);
    let last = row.last_upgrade.clone().map(|l| {
        format!(
            "{} → {}: {}",
            l.from.unwrap_or_else(|| "?".into()),
            l.to.unwrap_or_else(|| "?".into()),
            crate::model::state_words(&l.status)
        )
    });
    // Mark the app's largest update only where there are several parts to tell apart.
    let parts = usize::from(row.available.is_some()) + row.also.len();
    let largest = row.update_type.clone().filter(|_| parts > 1);
    let available_largest = largest.is_some() && row.available_type == largest;
    let largest_image = row
        .also
        .iter()
        .position(|p| largest.is_some() && p.update_type == largest)
        .filter(|_| !available_largest);
    view! {
        <tr id=id class="border-b border-slate-100 last:border-0 dark:border-slate-700">
            <td class="px-3 py-2">
                <a href=href class="font-medium text-sky-700 hover:underline dark:text-sky-300">{row.name.clone()}</a>
                <div class="text-xs text-slate-500 dark:text-slate-400">{row.namespace.clone()}</div>
            </td>
            <td class="px-3 py-2 font-mono" data-field="current">
                {row.chart.clone().map(|c| view! { <span class="text-slate-500 dark:text-slate-400">{c}" "</span> })}
                {row.current.clone().unwrap_or_else(|| "—".into())}
            </td>
            <td class="px-3 py-2" data-field="available">
                {match row.available.clone() {
                    Some(v) => view! {
                        <div data-field="available-part">
                            <span class="font-mono">"→ "{v}</span>" "
                            <UpdateBadge kind=row.available_type.clone() largest=available_largest/>
                        </div>
                        {row.also.iter().enumerate().map(|(i, image)| view! {
                            <div class="break-all text-xs" data-field="also">
                                <span class="font-mono">"+ "{image.reference.clone()}</span>" "
                                <UpdateBadge kind=image.update_type.clone() largest=largest_image == Some(i)/>
                            </div>
                        }).collect_view()}
                        {row.released_ago.clone().map(|ago| view! {
                            <div class="text-xs text-slate-500 dark:text-slate-400" title=row.released.clone() data-field="released">
                                "released " {ago}
                            </div>
                        })}
                    }.into_any(),
                    None => view! { <span class="text-slate-500 dark:text-slate-400">"up to date"</span> }.into_any(),
                }}
            </td>
            <td class="hidden px-3 py-2 sm:table-cell" title=row.ready_message.clone() data-field="health">
                <HealthBadge words=row.health_words() ready=row.ready/>
            </td>
            <td class="hidden px-3 py-2 sm:table-cell" data-field="state">
                <StateBadge state=row.state.clone()/>
            </td>
            <td class="hidden px-3 py-2 text-xs md:table-cell">{last.unwrap_or_else(|| "—".into())}</td>
        </tr>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, update: Option<&str>, ready: bool) -> AppRow {
        AppRow {
            namespace: "ns".into(),
            name: name.into(),
            available: update.map(|_| "2.0.0".into()),
            update_type: update.map(String::from),
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn filters_and_orders() {
        let rows = vec![
            row("a", Some("patch"), true),
            row("b", Some("major"), true),
            row("c", None, false),
        ];
        let names = |rows: Vec<AppRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        let all = &Only::All;
        assert_eq!(
            names(shown(rows.clone(), "", false, all, Order::Update)),
            ["b", "a", "c"]
        );
        assert_eq!(
            names(shown(rows.clone(), "", false, all, Order::Health)),
            ["c", "a", "b"]
        );
        assert_eq!(
            names(shown(rows.clone(), "", true, all, Order::Name)),
            ["a", "b"]
        );
        assert_eq!(
            names(shown(rows.clone(), "b", false, all, Order::Name)),
            ["b"]
        );
        // The summary's buttons narrow the list.
        assert_eq!(
            names(shown(rows, "", false, &Only::Updates("major"), Order::Name)),
            ["b"]
        );
    }

    #[test]
    fn the_summary_buttons_keep_running_and_failed_apps() {
        let mut running = row("r", None, true);
        running.state = "Upgrading".into();
        let mut failed = row("f", None, true);
        failed.last_upgrade = Some(crate::model::LastOperation {
            status: "Failed".into(),
            ..Default::default()
        });
        let rows = vec![running, failed, row("x", Some("minor"), true)];
        let names = |rows: Vec<AppRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(shown(rows.clone(), "", false, &Only::Running, Order::Name)),
            ["r"]
        );
        assert_eq!(
            names(shown(rows, "", false, &Only::Failed, Order::Name)),
            ["f"]
        );
    }
}
