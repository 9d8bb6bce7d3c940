//! One app: its versions, conditions in words, held-back updates, snapshots and history; the
//! upgrade (pick a version, dry run with the exact diff, approve) and the rollback of an upgrade,
//! each followed live.

use super::Layout;
use super::widgets::{ErrorNote, HealthBadge, OperationProgress, StateBadge, UpdateBadge};
use crate::api::{get_app, list_versions, request_rollback, request_upgrade};
use crate::live::use_live;
use crate::model::{AppDetail, Operation, OperationKind, PartPolicy, PolicyChange};
use fluxup_api::Stay;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[component]
pub fn AppPage() -> impl IntoView {
    let params = use_params_map();
    let key = move || {
        params.with(|p| {
            (
                p.get("namespace").unwrap_or_default(),
                p.get("name").unwrap_or_default(),
            )
        })
    };
    let detail = Resource::new(key, |(namespace, name)| get_app(namespace, name));
    view! {
        <Layout>
            <p class="text-sm"><a href="/" class="text-sky-700 hover:underline dark:text-sky-300">"← All apps"</a></p>
            <Transition fallback=|| view! { <p class="mt-6 text-slate-500 dark:text-slate-400">"Loading…"</p> }>
                {move || detail.get().map(|result| match result {
                    Err(e) => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Ok(d) => view! { <AppView detail=d/> }.into_any(),
                })}
            </Transition>
        </Layout>
    }
}

#[component]
fn AppView(detail: AppDetail) -> impl IntoView {
    let row = detail.row.clone();
    let namespace = row.namespace.clone();
    view! {
        <div class="mt-2 flex flex-wrap items-baseline gap-3">
            <h1 class="text-2xl font-semibold">{row.name.clone()}</h1>
            <span class="text-slate-500 dark:text-slate-400">{row.namespace.clone()}</span>
            <HealthBadge words=row.health_words() ready=row.ready/>
            <StateBadge state=row.state.clone()/>
        </div>
        <div class="mt-6 grid gap-6 lg:grid-cols-2">
            <Versions detail=detail.clone()/>
            {if detail.can_upgrade {
                view! { <UpgradePanel detail=detail.clone()/> }.into_any()
            } else {
                view! {
                    <Card title="Upgrade">
                        <p class="text-sm text-slate-600 dark:text-slate-300" id="upgrade-not-allowed">
                            "You may look at this app but not upgrade it: your access to the cluster does not allow upgrades in "
                            {namespace.clone()}"."
                        </p>
                    </Card>
                }.into_any()
            }}
            <Conditions detail=detail.clone()/>
            <Snapshots detail=detail.clone()/>
        </div>
        <History detail/>
    }
}

#[component]
fn Card(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <section class="rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800">
            <h2 class="mb-3 font-semibold">{title}</h2>
            {children()}
        </section>
    }
}

/// A button that changes the part's version policy (skip, unskip, stay on, unpin); the change is
/// stored in the app's spec, and the page reloads to show what the controller then holds back.
#[component]
fn PolicyButton(
    namespace: String,
    app: String,
    part: String,
    change: PolicyChange,
    label: String,
    title: &'static str,
    #[prop(optional)] id: Option<&'static str>,
) -> impl IntoView {
    let action_name = match &change {
        PolicyChange::Skip { .. } => "skip",
        PolicyChange::Unskip { .. } => "unskip",
        PolicyChange::StayOn { on: Stay::Major } => "stay-major",
        PolicyChange::StayOn { on: Stay::Minor } => "stay-minor",
        PolicyChange::Unpin => "unpin",
    };
    let send = Action::new(move |_: &()| {
        let (namespace, app, part) = (namespace.clone(), app.clone(), part.clone());
        let change = serde_json::to_string(&change).unwrap_or_default();
        async move { crate::api::change_version_policy(namespace, app, part, change).await }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = send.value().get() {
            // The controller applies the policy within moments; show it.
            #[cfg(feature = "hydrate")]
            let _ = leptos::prelude::window().location().reload();
        }
    });
    view! {
        <button
            type="button"
            id=id
            data-action=action_name
            class="rounded border border-slate-300 px-2 py-0.5 text-xs hover:bg-slate-100 disabled:opacity-50 dark:border-slate-600 dark:hover:bg-slate-700"
            title=title
            disabled=move || send.pending().get()
            on:click=move |_| { send.dispatch(()); }
        >
            {label}
        </button>
        {move || send.value().get().and_then(Result::err).map(|e| view! { <ErrorNote error=e.to_string()/> })}
    }
}

/// The part's pin: the range it stays in with a way to lift it, or buttons to keep it on the
/// running version's major or minor.
#[component]
fn PinControls(namespace: String, app: String, policy: PartPolicy) -> impl IntoView {
    let part = policy.part.clone();
    let button = {
        let (namespace, app, part) = (namespace.clone(), app.clone(), part.clone());
        move |change: PolicyChange, label: String, title: &'static str| {
            view! {
                <PolicyButton namespace=namespace.clone() app=app.clone() part=part.clone() change label title/>
            }
        }
    };
    view! {
        <span class="inline-flex flex-wrap items-center gap-2" data-pin=policy.part.clone()>
            {match policy.constraint {
                Some(range) => view! {
                    <span>"stays in "<span class="font-mono" data-field="range">{range}</span></span>
                    {button(PolicyChange::Unpin, "Allow any version".into(), "Remove the range from the ManagedApp's versionPolicy")}
                }.into_any(),
                None => view! {
                    {policy.stay_major.map(|r| button(PolicyChange::StayOn { on: Stay::Major }, format!("Stay on {r}"), "Offer only versions of this major (stored in the ManagedApp's versionPolicy)"))}
                    {policy.stay_minor.map(|r| button(PolicyChange::StayOn { on: Stay::Minor }, format!("Stay on {r}"), "Offer only versions of this minor (stored in the ManagedApp's versionPolicy)"))}
                }.into_any(),
            }}
        </span>
    }
}

#[component]
fn Versions(detail: AppDetail) -> impl IntoView {
    let row = detail.row;
    // Mark the app's largest update only where there are several parts to tell apart.
    let parts = usize::from(row.available.is_some()) + row.also.len();
    let largest = row.update_type.clone().filter(|_| parts > 1);
    let available_largest = largest.is_some() && row.available_type == largest;
    let (namespace, app) = (row.namespace.clone(), row.name.clone());
    let policy_of = |part: &str| detail.policy.iter().find(|p| p.part == part).cloned();
    let chart_policy = policy_of("chart");
    let skipped = |part: &str, version: &str| {
        policy_of(part).is_some_and(|p| p.skip.iter().any(|v| v == version))
    };
    let held_back: Vec<_> = detail
        .held_back
        .iter()
        .map(|h| (h.clone(), skipped(&h.name, &h.version)))
        .collect();
    let images: Vec<_> = detail
        .images
        .iter()
        .map(|i| (i.clone(), policy_of(&i.name)))
        .collect();
    view! {
        <Card title="Versions">
            <dl class="grid grid-cols-[auto_1fr] gap-x-4 gap-y-1 text-sm">
                <dt class="text-slate-500 dark:text-slate-400">"Chart"</dt>
                <dd class="font-mono" id="current-version">
                    {row.chart.unwrap_or_default()}" "{row.current.unwrap_or_else(|| "unknown".into())}
                </dd>
                <dt class="text-slate-500 dark:text-slate-400">"Available"</dt>
                <dd id="available-version">
                    {match row.available {
                        Some(v) => view! {
                            <span class="font-mono">{v.clone()}</span>" "<UpdateBadge kind=row.available_type largest=available_largest/>" "
                            <PolicyButton namespace=row.namespace.clone() app=row.name.clone() part="chart".to_string()
                                change=PolicyChange::Skip { version: v.clone() } label=format!("Skip {v}")
                                title="Never offer this version (stored in the ManagedApp's versionPolicy)" id="skip-version"/>
                        }.into_any(),
                        None => view! { "up to date" }.into_any(),
                    }}
                </dd>
                {chart_policy.map(|policy| view! {
                    <dt class="text-slate-500 dark:text-slate-400">"Pinned"</dt>
                    <dd id="chart-pin"><PinControls namespace=namespace.clone() app=app.clone() policy/></dd>
                })}
                {detail.app_version.map(|v| view! {
                    <dt class="text-slate-500 dark:text-slate-400">"App version"</dt>
                    <dd class="font-mono">{v}</dd>
                })}
                {row.released.map(|r| view! {
                    <dt class="text-slate-500 dark:text-slate-400">"Released"</dt>
                    <dd>{row.released_ago.map(|ago| format!("{ago}, "))}{r}</dd>
                })}
            </dl>
            {(!images.is_empty()).then(|| view! {
                <h3 class="mt-4 text-sm font-medium">"Images"</h3>
                <ul class="mt-1 space-y-1 text-sm">
                    {images.into_iter().map(|(i, policy)| {
                        let is_largest = !available_largest && largest.is_some() && i.update_type == largest;
                        let (namespace, app, part) = (namespace.clone(), app.clone(), i.name.clone());
                        view! {
                            <li class="flex flex-wrap items-center gap-2" data-image=i.name.clone()>
                                <span class="font-mono">{i.name.clone()}":"{i.current.unwrap_or_default()}</span>
                                {i.available.map(|a| view! {
                                    <span class="font-mono text-sky-700 dark:text-sky-300">" → "{a.clone()}</span>
                                    <UpdateBadge kind=i.update_type.clone() largest=is_largest/>
                                    <PolicyButton namespace=namespace.clone() app=app.clone() part=part.clone()
                                        change=PolicyChange::Skip { version: a.clone() } label=format!("Skip {a}")
                                        title="Never offer this tag (stored in the ManagedApp's versionPolicy)"/>
                                })}
                                {policy.map(|policy| view! { <PinControls namespace=namespace.clone() app=app.clone() policy/> })}
                            </li>
                        }
                    }).collect_view()}
                </ul>
            })}
            <p class="mt-3 flex gap-4 text-sm">
                // Checked again where it is shown: only web links become links.
                {detail.changelog_url.as_deref().and_then(crate::model::web_link).map(|u| view! { <a class="text-sky-700 underline dark:text-sky-300" href=u rel="noopener noreferrer" target="_blank">"Release notes"</a> })}
                {detail.source_url.as_deref().and_then(crate::model::web_link).map(|u| view! { <a class="text-sky-700 underline dark:text-sky-300" href=u rel="noopener noreferrer" target="_blank">"Source"</a> })}
            </p>
            {(!held_back.is_empty()).then(|| view! {
                <h3 class="mt-4 text-sm font-medium">"Held back"</h3>
                <ul class="mt-1 space-y-1 text-sm" id="held-back">
                    {held_back.into_iter().map(|(h, skipped)| view! {
                        <li data-held=format!("{} {}", h.name, h.version)>
                            <span class="font-mono">{h.name.clone()}" "{h.version.clone()}</span>": "{h.reason}
                            {skipped.then(|| view! {
                                " "<PolicyButton namespace=namespace.clone() app=app.clone() part=h.name.clone()
                                    change=PolicyChange::Unskip { version: h.version.clone() } label="Offer again".to_string()
                                    title="Remove this version from the skipped ones"/>
                            })}
                        </li>
                    }).collect_view()}
                </ul>
            })}
        </Card>
    }
}

/// Pick a version, dry-run it, read the checks and the diff, approve; then follow it live.
#[component]
fn UpgradePanel(detail: AppDetail) -> impl IntoView {
    let (namespace, app) = (detail.row.namespace.clone(), detail.row.name.clone());
    // What FluxUp knows without the chart source (Renovate's findings): offered when the
    // source cannot be listed, so a private source does not block an upgrade.
    let known = crate::model::known_versions(&detail);
    let versions = Resource::new(
        {
            let (namespace, app) = (namespace.clone(), app.clone());
            move || (namespace.clone(), app.clone())
        },
        |(namespace, app)| list_versions(namespace, app),
    );
    view! {
        <Card title="Upgrade">
            <Transition fallback=|| view! { <p class="text-sm text-slate-500 dark:text-slate-400">"Reading the chart's versions…"</p> }>
                {move || versions.get().map(|result| match result {
                    Err(e) if known.is_empty() => view! { <ErrorNote error=e.to_string()/> }.into_any(),
                    Err(e) => view! {
                        <p role="status" id="versions-warning" class="mb-3 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100">
                            {format!(
                                "FluxUp could not list the chart's versions ({}); these are the ones Renovate found. The dry run checks the rest.",
                                crate::pages::widgets::server_message(&e.to_string())
                            )}
                        </p>
                        <UpgradeForm namespace=namespace.clone() app=app.clone() versions=known.clone()/>
                    }.into_any(),
                    Ok(v) if v.is_empty() => view! {
                        <p class="text-sm text-slate-600 dark:text-slate-300">"The chart source offers no other version."</p>
                    }.into_any(),
                    Ok(v) => view! { <UpgradeForm namespace=namespace.clone() app=app.clone() versions=v/> }.into_any(),
                })}
            </Transition>
        </Card>
    }
}

#[component]
fn UpgradeForm(namespace: String, app: String, versions: Vec<String>) -> impl IntoView {
    let live = use_live();
    let version = RwSignal::new(versions.first().cloned().unwrap_or_default());
    let request = Action::new(move |dry_run: &bool| {
        let (namespace, app, version, dry_run) = (
            namespace.clone(),
            app.clone(),
            version.get_untracked(),
            *dry_run,
        );
        async move { request_upgrade(namespace, app, Some(version), dry_run).await }
    });
    // The dry run and the upgrade asked for here, as created; the feed brings their progress.
    let dry_run = RwSignal::new(None::<Operation>);
    let upgrade = RwSignal::new(None::<Operation>);
    Effect::new(move |_| {
        if let Some(Ok(op)) = request.value().get() {
            live.record(op.clone());
            if op.dry_run {
                dry_run.set(Some(op));
            } else {
                upgrade.set(Some(op));
            }
        }
    });
    // Approve only what a dry run of this very version passed.
    let dry_run_passed = move || {
        dry_run
            .get()
            .and_then(|d| live.latest(&d.key()).or(Some(d)))
            .is_some_and(|d| {
                d.ended && d.succeeded && d.target.as_deref() == Some(version.get().as_str())
            })
    };
    view! {
        <div class="flex flex-wrap items-center gap-2 text-sm">
            <label for="version-picker">"Version"</label>
            <select
                id="version-picker"
                class="rounded-md border border-slate-300 bg-white px-2 py-1.5 font-mono dark:border-slate-600 dark:bg-slate-900"
                on:change=move |ev| version.set(event_target_value(&ev))
            >
                {versions.into_iter().enumerate().map(|(i, v)| view! {
                    <option value=v.clone() selected=i == 0>{v.clone()}</option>
                }).collect_view()}
            </select>
            <button
                type="button"
                id="dry-run"
                class="rounded-md border border-slate-300 px-3 py-1.5 hover:bg-slate-100 disabled:opacity-50 dark:border-slate-600 dark:hover:bg-slate-700"
                disabled=move || request.pending().get()
                on:click=move |_| { request.dispatch(true); }
            >
                "Dry run"
            </button>
            <button
                type="button"
                id="approve"
                class="rounded-md bg-sky-700 px-3 py-1.5 font-medium text-white hover:bg-sky-800 disabled:opacity-50"
                title="Approve after a dry run of this version passed"
                disabled=move || request.pending().get() || !dry_run_passed()
                on:click=move |_| { request.dispatch(false); }
            >
                {move || format!("Approve upgrade to {}", version.get())}
            </button>
        </div>
        {move || request.value().get().and_then(Result::err).map(|e| view! { <ErrorNote error=e.to_string()/> })}
        {move || dry_run.get().map(|d| view! { <DryRunResult start=d/> })}
        {move || upgrade.get().map(|u| view! { <OperationProgress start=u/> })}
    }
}

/// A dry run's progress, then its checks and the exact diff.
#[component]
fn DryRunResult(start: Operation) -> impl IntoView {
    let live = use_live();
    let key = start.key();
    let op = {
        let start = start.clone();
        Memo::new(move |_| live.latest(&key).unwrap_or_else(|| start.clone()))
    };
    view! {
        <OperationProgress start/>
        {move || {
            let o = op.get();
            o.ended.then(|| view! {
                <ul class="mt-3 space-y-1 text-sm" id="preflight-checks">
                    {o.checks.into_iter().map(|c| view! {
                        <li class=if c.passed { "text-emerald-700 dark:text-emerald-300" } else { "text-red-700 dark:text-red-300" }>
                            {if c.passed { "✓ " } else { "✗ " }}<span class="font-medium">{c.name}</span>": "{c.message}
                        </li>
                    }).collect_view()}
                </ul>
                {o.diff.map(|d| view! {
                    <pre id="dry-run-diff" tabindex="0" aria-label="Git diff" class="mt-3 overflow-x-auto rounded bg-slate-100 p-3 text-xs dark:bg-slate-900">{d}</pre>
                })}
            })
        }}
    }
}

#[component]
fn Conditions(detail: AppDetail) -> impl IntoView {
    view! {
        <Card title="Conditions">
            <ul class="space-y-2 text-sm">
                {detail.conditions.into_iter().map(|c| view! {
                    <li>
                        // The condition's type and reason are kubectl's words; the page says what they mean.
                        <span class=if c.ok { "font-medium text-emerald-700 dark:text-emerald-300" } else { "font-medium text-amber-700 dark:text-amber-300" } data-condition=c.kind.clone()>
                            {crate::model::condition_words(&c.kind)}": "{if c.ok { "yes" } else { "no" }}
                        </span>
                        <p class="text-slate-600 dark:text-slate-300">{c.message}</p>
                    </li>
                }).collect_view()}
            </ul>
            {(!detail.workloads.is_empty()).then(|| view! {
                <h3 class="mt-4 text-sm font-medium">"Workloads"</h3>
                <ul class="mt-1 space-y-1 text-sm" id="workloads">
                    {detail.workloads.into_iter().map(|w| view! {
                        <li class=if w.ready { "text-slate-700 dark:text-slate-200" } else { "text-amber-700 dark:text-amber-300" } data-ready=w.ready.to_string()>
                            {w.words}
                        </li>
                    }).collect_view()}
                </ul>
            })}
        </Card>
    }
}

#[component]
fn Snapshots(detail: AppDetail) -> impl IntoView {
    view! {
        <Card title="Snapshots">
            {if detail.snapshots.is_empty() {
                view! { <p class="text-sm text-slate-600 dark:text-slate-300">"No snapshots: FluxUp takes them before each upgrade of an app with volumes."</p> }.into_any()
            } else {
                view! {
                    <ul class="space-y-1 text-sm" id="snapshots">
                        {detail.snapshots.into_iter().map(|s| view! {
                            <li>
                                <span class="font-mono">{s.name}</span>
                                {if s.ready { " ready" } else { " not ready" }}
                                {s.size.map(|z| format!(", {z}"))}
                                {s.created.map(|c| format!(", taken {c}"))}
                            </li>
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </Card>
    }
}

/// Upgrades and rollbacks, newest first; an upgrade that changed something can be rolled back
/// (after a confirmation).
#[component]
fn History(detail: AppDetail) -> impl IntoView {
    let live = use_live();
    let (namespace, app) = (detail.row.namespace.clone(), detail.row.name.clone());
    let rollback = Action::new(move |upgrade: &String| {
        let (namespace, app, upgrade) = (namespace.clone(), app.clone(), upgrade.clone());
        async move { request_rollback(namespace, app, upgrade, false).await }
    });
    let started = RwSignal::new(None::<Operation>);
    Effect::new(move |_| {
        if let Some(Ok(op)) = rollback.value().get() {
            live.record(op.clone());
            started.set(Some(op));
        }
    });
    let confirming = RwSignal::new(None::<String>);
    let may_roll_back = detail.can_roll_back;
    let history: Vec<Operation> = detail.history.into_iter().filter(|o| !o.dry_run).collect();
    view! {
        <section class="mt-6 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800">
            <h2 class="mb-3 font-semibold">"History"</h2>
            {move || rollback.value().get().and_then(Result::err).map(|e| view! { <ErrorNote error=e.to_string()/> })}
            {move || started.get().map(|r| view! { <OperationProgress start=r/> })}
            {if history.is_empty() {
                view! { <p class="text-sm text-slate-600 dark:text-slate-300">"No upgrades yet."</p> }.into_any()
            } else {
                view! {
                    <ol class="space-y-2 text-sm" id="history">
                        {history.into_iter().map(|op| {
                            let name = op.name.clone();
                            let can_roll_back = may_roll_back && op.kind == OperationKind::Upgrade && op.ended && op.can_roll_back;
                            let (ask, confirm) = (name.clone(), name.clone());
                            view! {
                                <li class="flex flex-wrap items-center gap-2" data-request=name.clone()>
                                    <span class="font-medium">{format!("{:?}", op.kind)}</span>
                                    <span class="font-mono">{op.target.clone().unwrap_or_default()}</span>
                                    <span data-phase=op.phase.clone()>{crate::model::state_words(&op.phase)}</span>
                                    <span class="text-slate-500 dark:text-slate-400">{op.created.clone()}</span>
                                    <span class="text-slate-500 dark:text-slate-400">{op.requested_by.clone().map(|u| format!("by {u}"))}</span>
                                    <span class="text-xs text-slate-500 dark:text-slate-400">{name.clone()}</span>
                                    {can_roll_back.then(|| view! {
                                        <span class="ml-auto flex gap-2">
                                            <button type="button" class="rollback rounded-md border border-slate-300 px-2 py-1 hover:bg-slate-100 dark:border-slate-600 dark:hover:bg-slate-700"
                                                on:click=move |_| confirming.set(Some(ask.clone()))>
                                                "Roll back…"
                                            </button>
                                            <Show when={let n = name.clone(); move || confirming.get().as_deref() == Some(n.as_str())}>
                                                <button type="button" class="confirm-rollback rounded-md bg-red-700 px-2 py-1 font-medium text-white hover:bg-red-800"
                                                    on:click={let c = confirm.clone(); move |_| { confirming.set(None); rollback.dispatch(c.clone()); }}>
                                                    "Confirm: restore data and version from before"
                                                </button>
                                            </Show>
                                        </span>
                                    })}
                                </li>
                            }
                        }).collect_view()}
                    </ol>
                }.into_any()
            }}
        </section>
    }
}
