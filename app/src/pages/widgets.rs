//! Small pieces the pages share: badges, error notes, an operation's live progress.

use crate::live::use_live;
use crate::model::{Operation, PhaseState};
use leptos::prelude::*;

/// `major` / `minor` / `patch` / `digest`, coloured by how careful one should be. `largest`
/// marks, in words too, the badge of the app's largest update when it has several parts.
#[component]
pub fn UpdateBadge(kind: Option<String>, #[prop(optional)] largest: bool) -> impl IntoView {
    let kind = kind.unwrap_or_else(|| "update".into());
    let colour = match kind.as_str() {
        "major" => "bg-red-100 text-red-800 dark:bg-red-900 dark:text-red-100",
        "minor" => "bg-amber-100 text-amber-800 dark:bg-amber-900 dark:text-amber-100",
        "patch" => "bg-emerald-100 text-emerald-800 dark:bg-emerald-900 dark:text-emerald-100",
        _ => "bg-slate-100 text-slate-700 dark:bg-slate-700 dark:text-slate-100",
    };
    view! {
        <span class=format!("rounded px-1.5 py-0.5 text-xs font-medium {colour}") data-update-type=kind.clone() data-largest=largest.then_some("true")>{kind.clone()}</span>
        {largest.then(|| view! {
            <span class="ml-1 text-xs text-slate-600 dark:text-slate-300" title="The largest update of this app, among its chart and images">"(largest of this app)"</span>
        })}
    }
}

/// The app's health in words, from its Ready condition; red and with a ✗ when not healthy.
#[component]
pub fn HealthBadge(words: &'static str, ready: bool) -> impl IntoView {
    let (icon, colour) = if ready {
        ("✓", "text-emerald-700 dark:text-emerald-300")
    } else {
        ("✗", "text-red-700 dark:text-red-300")
    };
    view! {
        <span class=format!("text-sm font-medium {colour}") data-health=words>
            <span aria-hidden="true">{icon}" "</span>{words}
        </span>
    }
}

/// What the app is doing, in words ("update available"); red when it is degraded.
#[component]
pub fn StateBadge(state: String) -> impl IntoView {
    let colour = match state.as_str() {
        "Degraded" => "text-red-700 dark:text-red-300",
        "UpToDate" => "text-emerald-700 dark:text-emerald-300",
        _ => "text-sky-700 dark:text-sky-300",
    };
    let words = crate::model::state_words(&state);
    view! { <span class=format!("text-sm font-medium {colour}") data-state=state>{words}</span> }
}

/// A column of a [`DataTable`]: its heading and from which screen width it is shown.
pub struct Column {
    pub title: &'static str,
    pub shown: Shown,
}

impl Column {
    pub const fn new(title: &'static str, shown: Shown) -> Column {
        Column { title, shown }
    }
}

/// From which screen width a column is shown: phones get the columns that matter most.
pub enum Shown {
    Always,
    FromSmall,
    FromMedium,
    /// Always, with its heading only for screen readers (a column of buttons).
    UnlabelledAlways,
}

impl Shown {
    fn class(&self) -> &'static str {
        match self {
            Shown::Always | Shown::UnlabelledAlways => "px-3 py-2",
            Shown::FromSmall => "hidden px-3 py-2 sm:table-cell",
            Shown::FromMedium => "hidden px-3 py-2 md:table-cell",
        }
    }

    fn title_class(&self) -> &'static str {
        match self {
            Shown::UnlabelledAlways => "sr-only",
            _ => "",
        }
    }
}

/// A table of the dashboard: a labelled region that scrolls sideways on a narrow screen and
/// can then be reached by keyboard; `children` are its rows.
#[component]
pub fn DataTable(
    label: &'static str,
    #[prop(optional)] id: Option<&'static str>,
    columns: &'static [Column],
    children: Children,
) -> impl IntoView {
    view! {
        <div tabindex="0" role="region" aria-label=label class="mt-4 overflow-x-auto rounded-lg border border-slate-200 bg-white dark:border-slate-700 dark:bg-slate-800">
            <table class="w-full text-left text-sm" id=id>
                <thead class="border-b border-slate-200 text-xs uppercase text-slate-500 dark:border-slate-700 dark:text-slate-400">
                    <tr>
                        {columns.iter().map(|c| view! {
                            <th scope="col" class=c.shown.class()><span class=c.shown.title_class()>{c.title}</span></th>
                        }).collect_view()}
                    </tr>
                </thead>
                <tbody>{children()}</tbody>
            </table>
        </div>
    }
}

/// An error, where it happened, in words.
/// A server function's error without its prefix: they arrive as "error running server function:
/// <message>".
pub fn server_message(error: &str) -> String {
    error
        .rsplit_once(": ")
        .filter(|_| error.starts_with("error running server function"))
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| error.to_string())
}

#[component]
pub fn ErrorNote(error: String) -> impl IntoView {
    let message = server_message(&error);
    view! {
        <p role="alert" class="mt-4 rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800 dark:border-red-700 dark:bg-red-950 dark:text-red-200">
            {message}
        </p>
    }
}

/// An operation's phases, updated live from the feed: each phase's state, the time spent in the
/// current one, and what is happening in words. `start` is the operation as it was created or
/// first read; later versions come from the live feed.
#[component]
pub fn OperationProgress(start: Operation) -> impl IntoView {
    let live = use_live();
    live.watch(&start);
    let key = start.key();
    let op = Memo::new(move |_| live.latest(&key).unwrap_or_else(|| start.clone()));
    let seen = crate::live::PhaseClock::new();
    view! {
        <section
            class="mt-4 rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-800"
            data-operation=move || op.get().name
            data-phase=move || op.get().phase
            aria-live="polite"
        >
            <h3 class="font-medium">
                {move || {
                    let o = op.get();
                    format!("{:?}{} {}", o.kind, if o.dry_run { " dry run" } else { "" }, o.name)
                }}
            </h3>
            <ol class="mt-3 space-y-1 text-sm">
                <For each=move || op.get().phases key=|p| (p.name.clone(), p.state) let:phase>
                    <PhaseItem name=phase.name.clone() state=phase.state clock=seen/>
                </For>
            </ol>
            <p class="mt-3 text-sm text-slate-600 dark:text-slate-300" data-field="message">
                {move || {
                    let o = op.get();
                    let result = if !o.ended {
                        String::new()
                    } else if o.succeeded {
                        "Succeeded: ".into()
                    } else {
                        "Failed: ".into()
                    };
                    format!("{result}{}", o.message)
                }}
            </p>
            {move || {
                let o = op.get();
                (!o.health.is_empty()).then(|| view! { <HealthChecks op=o/> })
            }}
            {move || op.get().pull_request.map(|(number, url)| view! {
                <p class="mt-1 text-sm">
                    <a href=url class="text-sky-700 hover:underline dark:text-sky-300" data-field="pull-request" rel="noopener noreferrer">
                        {format!("Pull request #{number}")}
                    </a>
                </p>
            })}
        </section>
    }
}

/// The health checks after the rollout, each with its result, and the soak time.
#[component]
fn HealthChecks(op: Operation) -> impl IntoView {
    let state = op.health_state.clone().unwrap_or_default();
    let soak = op.soak.clone().map(|s| match s.since {
        Some(since) => format!("Soak {}: healthy since {since}", s.duration),
        None => format!("Soak {}: starts once every check passes", s.duration),
    });
    view! {
        <div class="mt-3" data-field="health" data-state=state.clone()>
            <h4 class="text-xs font-medium uppercase text-slate-500 dark:text-slate-400">
                {format!("Health checks: {}", state.to_lowercase())}
            </h4>
            <ul class="mt-1 space-y-1 text-sm">
                {op.health.into_iter().map(|c| {
                    let (icon, colour) = if c.passed {
                        ("✓", "text-emerald-700 dark:text-emerald-300")
                    } else {
                        ("✗", "text-red-700 dark:text-red-300")
                    };
                    let check = c.name.clone();
                    view! {
                        <li class=format!("flex gap-2 {colour}") data-check=check data-passed=c.passed.to_string()>
                            <span aria-hidden="true" class="w-4">{icon}</span>
                            <span class="font-medium">{c.name}</span>
                            <span class="sr-only">{if c.passed { "passed" } else { "failed" }}</span>
                            <span class="text-slate-600 dark:text-slate-300">{c.message}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
            {soak.map(|s| view! { <p class="mt-1 text-xs text-slate-500 dark:text-slate-400" data-field="soak">{s}</p> })}
        </div>
    }
}

#[component]
fn PhaseItem(name: String, state: PhaseState, clock: crate::live::PhaseClock) -> impl IntoView {
    let (icon, colour) = match state {
        PhaseState::Done => ("✓", "text-emerald-700 dark:text-emerald-300"),
        PhaseState::Current => ("●", "text-sky-700 dark:text-sky-300 font-medium"),
        PhaseState::Failed => ("✗", "text-red-700 dark:text-red-300 font-medium"),
        PhaseState::Waiting => ("○", "text-slate-500 dark:text-slate-400"),
        PhaseState::Skipped => ("–", "italic text-slate-500 dark:text-slate-400"),
    };
    let elapsed = clock.elapsed(&name, state);
    let state_word = format!("{state:?}").to_lowercase();
    let state_attr = state_word.clone();
    view! {
        <li class=format!("flex gap-2 {colour}") data-phase=name.clone() data-state=state_attr>
            <span aria-hidden="true" class="w-4">{icon}</span>
            <span>{name.clone()}</span>
            <span class="sr-only">{state_word}</span>
            <span class="ml-auto tabular-nums text-xs text-slate-500 dark:text-slate-400">{elapsed}</span>
        </li>
    }
}
