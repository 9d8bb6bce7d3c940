//! The UpgradeRequest controller: observes, lets [`decide`] pick one step, records it in the
//! request's status, and performs it. A finalizer releases what the request holds (from what it
//! recorded, so it works with the ManagedApp gone) if the request is deleted mid-way.

use super::decide::{Observed, Release, Step, decide};
use super::preflight;
use crate::git::bump::{BumpError, HISTORY_DEPTH, Outcome, commit_version_bump};
use crate::git::message::{BumpMessage, OPERATION_TRAILER};
use crate::git::{self, GitBackend, GitError};
use crate::metrics::{self, Operation};
use crate::notify::{self, Kind, Notification};
use crate::operation::holds::{self, Holder};
use crate::operation::plan::{self, Plan, version_edits};
use crate::operation::queue::{self, Member};
use crate::operation::{
    self, Context, Error, app_of, complete, crash, found_workloads, refetch_if_missed, since,
    steps, who, workloads,
};
use crate::operation::{health, release, verification};
use crate::snapshots;
use crate::{Scope, events};
use fluxup_api::flux::HelmRelease;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{
    DryRunResult, HealthCheckResult, Hold, LastUpgrade, ManagedApp, PreflightCheck,
    RollbackRequest, SnapshotRecord, Time, UpgradePhase, UpgradeRecord, UpgradeRequest,
    UpgradeRequestStatus, condition,
};
use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "fluxup.dev/upgrade";
const MANAGER: &str = <UpgradeRequest as steps::Request>::MANAGER;

pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(
        scope.api::<UpgradeRequest>(&client),
        watcher::Config::default().streaming_lists(),
    );
    let upgrades = controller.store();
    let (rollbacks, rollback_events) =
        crate::caches::reflect::<RollbackRequest>(scope.api(&client), true);
    let (snapshots, snapshot_events) =
        crate::caches::reflect_labelled::<VolumeSnapshot>(scope.api(&client), snapshots::APP_LABEL);
    let ctx = Arc::new(Context::new(
        client.clone(),
        upgrades,
        rollbacks,
        snapshots,
        kube::runtime::reflector::store().0,
    ));
    steps::woken_by_changes(controller, &client, &scope, false)
        // A rollback that changes may be what an upgrade waits for (the queue), or mark it
        // rolled back.
        .watches_stream(rollback_events, |r: RollbackRequest| {
            r.spec
                .upgrade_request_ref
                .as_ref()
                .map(|u| ObjectRef::new(&u.name).within(&r.namespace().unwrap_or_default()))
        })
        // A snapshot that becomes ready wakes the upgrade that took it.
        .watches_stream(snapshot_events, |s: VolumeSnapshot| {
            s.labels()
                .get(snapshots::REQUEST_LABEL)
                .map(|name| ObjectRef::new(name).within(&s.namespace().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, steps::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(req: Arc<UpgradeRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx: &Context = &ctx;
    steps::reconcile(
        req,
        ctx,
        FINALIZER,
        move |req| async move { step(&req, ctx).await },
        move |req| async move { cleanup(&req, ctx).await },
    )
    .await
}

/// Deleted mid-way: what the request holds is released, from what it recorded alone (the
/// ManagedApp may be gone too), and its open pull request is closed; nothing else is touched.
async fn cleanup(req: &UpgradeRequest, ctx: &Context) -> Result<Action, Error> {
    let status = req.status.clone().unwrap_or_default();
    // A pull request left open would roll out, unsnapshotted, whenever someone merged it.
    if status
        .pull_request
        .as_ref()
        .is_some_and(|p| p.state == "open" && p.merge_commit.is_none())
        && let Some(app) =
            Api::<ManagedApp>::namespaced(ctx.client.clone(), &req.namespace().unwrap_or_default())
                .get_opt(&req.spec.managed_app_ref.name)
                .await?
    {
        super::pull_request::close(ctx, req, &app, &status).await?;
    }
    steps::release_all(ctx, req, &status.holds, &status.stopped_workloads).await?;
    Ok(Action::await_change())
}

/// Whether the chart source offers the target version: a typo or a withdrawn version is caught
/// before anything changes, instead of as a HelmRelease that cannot install.
async fn version_exists(client: &Client, app: &ManagedApp, target: &str) -> PreflightCheck {
    let check = |passed: bool, message: String| PreflightCheck {
        name: "version".into(),
        passed,
        message: Some(message),
    };
    match crate::chart_versions::of_app(client, app).await {
        Ok(found) if found.versions.iter().any(|v| v == target) => check(
            true,
            format!("{} {target} is in {}", found.chart, found.url),
        ),
        Ok(found) => check(
            false,
            format!(
                "{} has no version {target} in {} (newest: {})",
                found.chart,
                found.url,
                found
                    .versions
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        // A source FluxUp cannot list (a private registry whose Secret it may not read, a
        // registry it cannot reach) does not block a version someone chose: Flux reports a
        // version that does not exist, and the upgrade fails then with everything released.
        Err(why) => check(
            true,
            format!(
                "not checked: the chart's versions could not be listed ({why}); Flux will say if {target} does not exist"
            ),
        ),
    }
}

async fn observe(
    req: &UpgradeRequest,
    app: Option<&ManagedApp>,
    plan: Option<&Plan>,
    ctx: &Context,
) -> Result<Observed, Error> {
    let ns = req.namespace().unwrap_or_default();
    let me = req.uid().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let volume_snapshots = app.and_then(|a| a.spec.volume_snapshots.as_ref());
    let mut seen = Observed {
        app_missing: app.is_none(),
        health_timeout: crate::duration::or(
            app.and_then(|a| a.spec.health_check.as_ref())
                .and_then(|h| h.timeout.as_deref()),
            Duration::from_secs(300),
        ),
        stop_workloads: volume_snapshots.is_none_or(|v| v.stop_workloads),
        auto_rollback: app.is_some_and(|a| a.spec.auto_rollback),
        snapshot_timeout: crate::duration::or(
            volume_snapshots.and_then(|v| v.timeout.as_deref()),
            Duration::from_secs(900),
        ),
        in_phase: since(status.phase_started_at.as_ref()),
        ..Default::default()
    };
    let pull_request = app
        .and_then(|a| a.spec.git.as_ref())
        .and_then(|g| g.pull_request.as_ref());
    seen.pull_request_mode = pull_request.is_some();
    seen.branch_mode = app
        .and_then(|a| a.spec.git.as_ref())
        .is_some_and(|g| g.branch.is_some());
    seen.merge_timeout = crate::duration::or(
        pull_request.and_then(|p| p.timeout.as_deref()),
        Duration::from_secs(24 * 3600),
    );
    // The forge is asked only while the answer can change what happens: waiting for the merge,
    // or cleaning up after a failure with the pull request still open.
    if let (Some(record), Some(app)) = (&status.pull_request, app)
        && record.state == "open"
        && matches!(phase, UpgradePhase::AwaitingMerge | UpgradePhase::Failed)
    {
        seen.pull_request = Some(super::pull_request::observe(ctx, app, record).await?);
    }
    // Branch mode: whether the pushed commit reached the branch Flux follows.
    if let (Some(pushed), Some(app)) = (&status.pushed, app)
        && pushed.reached_as.is_none()
        && pushed.revert_commit.is_none()
        && matches!(phase, UpgradePhase::AwaitingMerge | UpgradePhase::Failed)
    {
        seen.reached = super::pull_request::reached(ctx, req, app).await?;
    }

    if phase == UpgradePhase::Pending {
        seen.holds_to_record = app.map(holds::of_app).unwrap_or_default();
        seen.queue = queue::position(&Member::of_upgrade(req), &ctx.queue_members());
    }

    seen.preflight = status.dry_run.as_ref().map(|d| {
        d.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name.clone(), c.message.clone().unwrap_or_default()))
            .collect()
    });
    if phase == UpgradePhase::Preflight && status.dry_run.is_none() {
        seen.preflight = None;
    }

    // Only once it may hold something: before, the objects are not its to look at.
    if phase > UpgradePhase::Preflight {
        for hold in &status.holds {
            let holder = holds::observe(&ctx.client, hold, &me).await?;
            seen.holders.push((hold.clone(), holder));
        }
    }

    seen.workloads_to_stop = app.map(found_workloads).map_or(0, |w| w.len());
    if !status.stopped_workloads.is_empty() {
        seen.workloads_stopped =
            workloads::all_stopped(&ctx.client, &ns, &status.stopped_workloads).await?;
        seen.workloads_held =
            workloads::any_held(&ctx.client, &ns, &status.stopped_workloads, &me).await?;
    }

    let names: Vec<String> = status
        .snapshot
        .as_ref()
        .map(|s| s.pvcs.iter().map(|p| p.snapshot_name.clone()).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        seen.snapshots = snapshots::observe(&ctx.client, &ns, &names).await?;
        if phase == UpgradePhase::Failed {
            seen.unready_snapshots = !snapshots::unready(&ctx.client, &ns, &names)
                .await?
                .is_empty();
        }
    }

    if phase == UpgradePhase::Committing
        && let Some(app) = app
    {
        let (git, branch) = git::cluster::for_app(&ctx.client, app).await?;
        seen.commit = git
            .find_commit(&branch, OPERATION_TRAILER, &me, HISTORY_DEPTH)
            .await?
            .map(|c| c.sha);
    }

    if matches!(
        phase,
        UpgradePhase::Reconciling | UpgradePhase::HealthChecking
    ) && let (Some(app), Some(plan)) = (app, plan)
    {
        let hr_ns = app.helm_release_namespace().unwrap_or(&ns).to_string();
        let hr = Api::<HelmRelease>::namespaced(ctx.client.clone(), &hr_ns)
            .get(&app.spec.helm_release_ref.name)
            .await?;
        seen.release = release::state(&hr, plan);
        if phase == UpgradePhase::HealthChecking {
            let version = plan.chart.as_deref().unwrap_or("the new images");
            let ready = seen.release == Release::ReadyAtTarget;
            let words = if ready {
                "is Ready at"
            } else {
                "is not Ready at"
            };
            seen.health = vec![health::check(
                health::RELEASE,
                ready,
                format!("HelmRelease {hr_ns}/{} {words} {version}", hr.name_any()),
            )];
            // The others only once the new version is Ready: before, they would check the old.
            if ready {
                seen.health.extend(health::of_app(&ctx.client, app).await?);
            }
            seen.healthy = seen.health.iter().all(|c| c.passed);
            if ready && verification::cron_job(app).is_some() {
                let state = verification::observe(&ctx.client, app, req).await?;
                seen.health.push(state.check());
                seen.verification = Some(state);
            }
            seen.soak = crate::duration::or(
                app.spec
                    .health_check
                    .as_ref()
                    .and_then(|h| h.soak.as_deref()),
                Duration::ZERO,
            );
            seen.healthy_for = status
                .health_check
                .as_ref()
                .and_then(|h| h.healthy_since.as_ref())
                .map(|t| since(Some(t)));
        }
    }
    Ok(seen)
}

/// `status.healthCheck` for the checks as seen now: the soak counts from the first time all
/// passed, and a failure during it keeps that time (the next step fails the upgrade on it).
fn health_record(
    status: &UpgradeRequestStatus,
    seen: &Observed,
    app: Option<&ManagedApp>,
) -> HealthCheckResult {
    let since = status
        .health_check
        .as_ref()
        .and_then(|h| h.healthy_since.clone());
    let healthy_since = match since {
        Some(t) => Some(t),
        None if seen.healthy => Some(events::now_time()),
        None => None,
    };
    let failed = health::failed(&seen.health);
    let soaked = seen.soak.is_zero() || seen.healthy_for.is_some_and(|h| h >= seen.soak);
    let (state, message) = match () {
        // The verification Job waits for the others and the soak: until then, it is soaking.
        _ if !seen.healthy => ("Pending", failed.join("; ")),
        _ if !soaked => ("Soaking", "every check passes; soaking".to_string()),
        _ if !failed.is_empty() => ("Pending", failed.join("; ")),
        _ => ("Passed", "every check passes".to_string()),
    };
    HealthCheckResult {
        status: state.into(),
        checked_at: Some(events::now_time()),
        message: Some(message),
        healthy_since,
        soak: app
            .and_then(|a| a.spec.health_check.as_ref())
            .and_then(|h| h.soak.clone()),
        checks: seen.health.clone(),
    }
}

/// The commit message of the request's version bump (the pull request's title and text in
/// pull-request mode).
pub(super) fn bump_message(
    app: &ManagedApp,
    plan: &Plan,
    status: &UpgradeRequestStatus,
    request: &str,
    me: &str,
) -> String {
    let current = app
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .unwrap_or_default();
    BumpMessage {
        app: app.name_any(),
        changes: plan
            .edits
            .iter()
            .map(|e| (e.what.clone(), e.value.clone()))
            .collect(),
        previous_version: current.chart,
        snapshots: status
            .snapshot
            .as_ref()
            .map(|s| s.pvcs.iter().map(|p| p.snapshot_name.clone()).collect())
            .unwrap_or_default(),
        request: request.to_string(),
        operation: me.to_string(),
    }
    .render()
}

/// The preflight checks, and the diff of the version bump.
async fn preflight(
    req: &UpgradeRequest,
    app: &ManagedApp,
    plan: &Plan,
    ctx: &Context,
) -> DryRunResult {
    let mut checks = vec![PreflightCheck {
        name: "target".into(),
        passed: plan.problems.is_empty(),
        message: Some(if plan.problems.is_empty() {
            format!("{} change(s) planned", plan.edits.len())
        } else {
            plan.problems.join("; ")
        }),
    }];
    let person = crate::references::person_of(&req.metadata);
    let references = crate::references::preflight(&ctx.client, app, person.as_ref()).await;
    let refused = !references.passed;
    checks.push(references);
    if refused {
        // Nothing of the other namespace is read for them: no versions, no holds, no diff.
        return DryRunResult { checks, diff: None };
    }
    let ready = app
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY))
        .cloned();
    // A failing release (or workload) does not block: moving to another version is how it is
    // fixed.
    let release_failing = ready
        .as_ref()
        .is_some_and(|c| c.reason == "HelmReleaseNotReady" || c.reason == "WorkloadsNotReady");
    checks.push(PreflightCheck {
        name: "app".into(),
        passed: ready
            .as_ref()
            .is_some_and(|c| c.status == "True" || release_failing),
        message: ready.map(|c| c.message),
    });
    if let Some(target) = &plan.chart {
        checks.push(version_exists(&ctx.client, app, target).await);
    }
    checks.push(preflight::policy(app, plan.chart.as_deref(), &plan.images));
    checks.push(
        flux_check(
            &ctx.client,
            &holds::of_app(app),
            &req.uid().unwrap_or_default(),
        )
        .await,
    );
    let (git_check, diff_text) = plan::check_git(&ctx.client, app, plan).await;
    checks.push(git_check);
    DryRunResult {
        checks,
        diff: diff_text,
    }
}

/// Whether FluxUp may hold the app's Flux objects: one a person suspended is theirs, and the
/// upgrade would wait for them (another operation's hold is the queue's business).
pub async fn flux_check(client: &Client, to_hold: &[Hold], me: &str) -> PreflightCheck {
    let mut problems = Vec::new();
    for hold in to_hold {
        match holds::observe(client, hold, me).await {
            Ok(h @ (Holder::Person | Holder::Gone)) => {
                problems.push(h.refusal(hold).unwrap_or_default())
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{} cannot be read: {e}", hold.describe())),
        }
    }
    PreflightCheck {
        name: "flux".into(),
        passed: problems.is_empty(),
        message: Some(if problems.is_empty() {
            format!(
                "FluxUp can hold {}",
                to_hold
                    .iter()
                    .map(Hold::describe)
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        } else {
            problems.join("; ")
        }),
    }
}

async fn step(req: &UpgradeRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let me = req.uid().unwrap_or_default();
    let app = Api::<ManagedApp>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&req.spec.managed_app_ref.name)
        .await?;
    let status: UpgradeRequestStatus = req.status.clone().unwrap_or_default();
    let plan = app.as_ref().map(|a| plan::for_request(req, a));
    let seen = observe(req, app.as_ref(), plan.as_ref(), ctx).await?;
    let pvcs = app
        .as_ref()
        .map(operation::snapshot_claims)
        .unwrap_or_default();
    let mut spec = req.spec.clone();
    spec.skip_snapshot |= pvcs.is_empty();
    let next = decide(&spec, &status, &seen);
    let phase = status.phase.unwrap_or_default();
    let request = format!("{ns}/{}", req.name_any());
    let app_name = req.spec.managed_app_ref.name.clone();
    if !req.spec.dry_run
        && phase != UpgradePhase::Pending
        && !phase.is_terminal()
        && let (Some(app), Some(plan)) = (&app, &plan)
    {
        mark_running(ctx, app, req, plan).await?;
    }
    tracing::info!(request = %request, phase = ?status.phase, step = ?next, "upgrade step");
    let gen_ = req.metadata.generation;
    if status.phase.is_none()
        && let Some(plan) = &plan
    {
        let target = plan.chart.clone().unwrap_or_else(|| "new images".into());
        let what = format!("upgrade {app_name} to {target}");
        operation::requested(ctx, req, req.spec.dry_run, what).await;
    }

    match next {
        Step::RecordHolds(to_hold) => {
            steps::record(
                ctx,
                req,
                "record-holds",
                serde_json::json!({"holds": to_hold,
                "phase": UpgradePhase::Pending, "message": "queued"}),
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Queue(position) => steps::queue(ctx, req, position).await,
        Step::Enter(phase) => {
            leave_phase(&status);
            if phase == UpgradePhase::Suspending
                && let Some(app) = &app
            {
                let versions =
                    notify::upgrade_versions(&status.upgrade.clone().unwrap_or_default());
                let message = format!(
                    "{} asked to upgrade {app_name}; FluxUp pauses Flux and takes snapshots first",
                    who(&req.metadata),
                );
                notify::send(
                    &ctx.client,
                    Notification::about(Kind::UpgradeStarted, req, app, message)
                        .versions(versions.0, versions.1),
                );
            }
            let mut s = serde_json::json!({"phase": phase, "phaseStartedAt": events::now_time(), "observedGeneration": gen_,
                "message": format!("{phase:?}"), "queue": null});
            // Leaving Snapshotting means every snapshot is ready: since when, for the record.
            if status.phase == Some(UpgradePhase::Snapshotting) && status.snapshot.is_some() {
                s["snapshot"] = serde_json::json!({"readyAt": events::now_time()});
            }
            if phase == UpgradePhase::Preflight
                && let (Some(app), Some(plan)) = (&app, &plan)
            {
                let current = app
                    .status
                    .as_ref()
                    .and_then(|s| s.current_version.clone())
                    .unwrap_or_default();
                // What a rollback writes back: the versions before, of what changes.
                let previous_images = current
                    .images
                    .iter()
                    .filter(|i| plan.images.iter().any(|p| p.name == i.name))
                    .cloned()
                    .collect();
                s["upgrade"] = serde_json::to_value(UpgradeRecord {
                    started_at: Some(events::now_time()),
                    previous_version: plan.chart.as_ref().and(current.chart),
                    new_version: plan.chart.clone(),
                    previous_images,
                    new_images: plan.images.clone(),
                    ..Default::default()
                })
                .unwrap_or_default();
            }
            steps::record(ctx, req, &format!("enter.{phase:?}"), s).await?;
            ctx.event(
                req,
                "Upgrade",
                false,
                &format!("{phase:?}"),
                format!("upgrade of {app_name} entered {phase:?}"),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::RunPreflight => {
            let (Some(app), Some(plan)) = (&app, &plan) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let result = preflight(req, app, plan, ctx).await;
            steps::record(ctx, req, "preflight", serde_json::json!({"dryRun": result})).await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::FinishDryRun => steps::finish_dry_run(ctx, req, Operation::Upgrade).await,
        Step::Take(hold) => steps::take(ctx, req, &hold).await,
        Step::StopWorkloads => {
            let found = app.as_ref().map(found_workloads).unwrap_or_default();
            steps::stop_workloads(ctx, req, &found, &status.stopped_workloads, "Snapshotting").await
        }
        Step::CreateSnapshots => {
            let class = app
                .as_ref()
                .and_then(|a| a.spec.volume_snapshots.as_ref())
                .and_then(|v| v.volume_snapshot_class_name.clone());
            let taken = snapshots::create(
                &ctx.client,
                &ns,
                &app_name,
                (&req.name_any(), &me),
                &pvcs,
                class.as_deref(),
            )
            .await?;
            let record_ = SnapshotRecord {
                pvcs: taken,
                created_at: Some(events::now_time()),
                ..Default::default()
            };
            steps::record(
                ctx,
                req,
                "record-snapshots",
                serde_json::json!({"snapshot": record_}),
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::CommitVersionBump => {
            let (Some(app), Some(plan)) = (&app, &plan) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let (git, branch) = git::cluster::for_app(&ctx.client, app).await?;
            let message = bump_message(app, plan, &status, &request, &me);
            let outcome =
                match commit_version_bump(&git, &branch, &version_edits(plan), &message, &me).await
                {
                    Ok(outcome) => outcome,
                    // The server may come back: try again until the phase times out.
                    Err(BumpError::Git(GitError::Unreachable(e))) => {
                        let why = format!("the Git server could not be reached; retrying: {e}");
                        ctx.write_status(MANAGER, req, serde_json::json!({"message": why}))
                            .await?;
                        return Ok(Action::requeue(Duration::from_secs(10)));
                    }
                    Err(e) => {
                        let message = format!(
                            "the version bump could not be committed, so Git is unchanged: {e}; \
                         fix the repository or the token, then create a new UpgradeRequest"
                        );
                        return fail(ctx, req, "GitFailed", message).await;
                    }
                };
            crash::point("push");
            let sha = match &outcome {
                Outcome::Committed(c) | Outcome::AlreadyCommitted(c) => Some(c.sha.clone()),
                Outcome::NothingToChange => None,
            };
            record_commit(ctx, req, &status, sha).await
        }
        Step::RecordCommit(sha) => record_commit(ctx, req, &status, Some(sha)).await,
        Step::OpenPullRequest => {
            let (Some(app), Some(plan)) = (&app, &plan) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            super::pull_request::open(ctx, req, app, plan, &status).await
        }
        Step::PushToBranch => {
            let (Some(app), Some(plan)) = (&app, &plan) else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let branch = app
                .spec
                .git
                .as_ref()
                .and_then(|g| g.branch.clone())
                .unwrap_or_default();
            super::pull_request::push_to_branch(ctx, req, app, plan, &status, &branch).await
        }
        Step::RecordMerge(sha) => super::pull_request::record_merge(ctx, req, &status, sha).await,
        Step::ClosePullRequest => match &app {
            Some(app) => super::pull_request::close(ctx, req, app, &status).await,
            None => Ok(Action::requeue(Duration::from_secs(1))),
        },
        Step::RevertMerge => match &app {
            Some(app) => super::pull_request::revert(ctx, req, app, &status).await,
            None => Ok(Action::requeue(Duration::from_secs(1))),
        },
        // Before Flux applies again, its source fetches the commit.
        Step::Release(hold) => {
            let fetch_for = app.as_ref().filter(|_| phase == UpgradePhase::Reconciling);
            steps::release(ctx, req, &hold, fetch_for).await
        }
        Step::RestartWorkloads => steps::restart(ctx, req, &status.stopped_workloads).await,
        Step::RecordHealth => {
            let record = health_record(&status, &seen, app.as_ref());
            steps::record(
                ctx,
                req,
                "record-health",
                serde_json::json!({"healthCheck": record}),
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::StartVerification => {
            let refused = match &app {
                Some(app) => verification::start(&ctx.client, app, req).await?,
                None => None,
            };
            if let Some(why) = refused {
                return fail(
                    ctx,
                    req,
                    "HealthCheckFailed",
                    format!("the verification could not start: {why}"),
                )
                .await;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::DeleteUnreadySnapshots => {
            let names: Vec<String> = status
                .snapshot
                .as_ref()
                .map(|s| s.pvcs.iter().map(|p| p.snapshot_name.clone()).collect())
                .unwrap_or_default();
            let unready = snapshots::unready(&ctx.client, &ns, &names).await?;
            snapshots::delete(&ctx.client, &ns, &unready).await?;
            crash::point("delete-unready-snapshots");
            ctx.event(
                req,
                "Upgrade",
                false,
                "SnapshotsDeleted",
                format!(
                    "deleted the snapshots that will not become ready: {}",
                    unready.join(", ")
                ),
            )
            .await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Wait { why, recheck } => {
            if phase == UpgradePhase::Reconciling
                && let Some(app) = &app
            {
                let commit = status
                    .upgrade
                    .as_ref()
                    .and_then(|u| u.git_commit.as_deref());
                refetch_if_missed(&ctx.client, app, commit).await?;
            }
            steps::wait(ctx, req, why, recheck).await
        }
        Step::Fail { reason, message } => {
            if reason == "HealthCheckFailed" {
                let mut record = health_record(&status, &seen, app.as_ref());
                record.status = "Failed".into();
                record.message = Some(message.clone());
                steps::record(
                    ctx,
                    req,
                    "record-health",
                    serde_json::json!({"healthCheck": record}),
                )
                .await?;
            }
            fail(ctx, req, reason, message).await
        }
        Step::RequestRollback => request_rollback(ctx, req, &status).await,
        Step::Succeed => {
            let mut upgrade = status.upgrade.clone().unwrap_or_default();
            upgrade.completed_at = Some(events::now_time());
            let message = format!(
                "{app_name} runs {}",
                plan.as_ref()
                    .and_then(|p| p.chart.clone())
                    .unwrap_or_else(|| "the new images".into())
            );
            steps::record(ctx, req, "succeed", serde_json::json!({"phase": UpgradePhase::Succeeded, "message": message, "upgrade": upgrade,
                "healthCheck": {"status": "Passed", "checkedAt": events::now_time()},
                "conditions": [complete("True", "Succeeded", &message, gen_)]}))
            .await?;
            if let Some(app) = &app {
                let versions = notify::upgrade_versions(&upgrade);
                notify::send(
                    &ctx.client,
                    Notification::about(Kind::UpgradeSucceeded, req, app, message.clone())
                        .versions(versions.0, versions.1),
                );
            }
            ctx.event(req, "Upgrade", false, "Succeeded", message).await;
            leave_phase(&status);
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Upgrade, "succeeded", age);
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Done => {
            if let Some(app) = &app {
                finish(ctx, app, req, &status).await?;
            }
            steps::mark_released(ctx, req).await
        }
    }
}

/// Records the commit (found after a crash, pushed late, or made now) and enters Reconciling.
pub(super) async fn record_commit(
    ctx: &Context,
    req: &UpgradeRequest,
    status: &UpgradeRequestStatus,
    sha: Option<String>,
) -> Result<Action, Error> {
    let mut upgrade = status.upgrade.clone().unwrap_or_default();
    upgrade.git_commit = sha.clone();
    leave_phase(status);
    let message = match &sha {
        Some(s) => format!("committed {s}"),
        None => "the versions were already in Git".into(),
    };
    steps::record(
        ctx,
        req,
        "record-commit",
        serde_json::json!({"upgrade": upgrade, "phase": UpgradePhase::Reconciling,
        "phaseStartedAt": events::now_time(), "message": message}),
    )
    .await?;
    ctx.event(
        req,
        "Upgrade",
        false,
        "Committed",
        format!("version bump committed: {sha:?}"),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Creates the RollbackRequest that undoes this failed upgrade and links it. Its name carries
/// part of the upgrade's uid and it is owned by the upgrade, so a retry after a crash finds the
/// one it made, and an upgrade recreated under the same name gets its own.
async fn request_rollback(
    ctx: &Context,
    req: &UpgradeRequest,
    status: &UpgradeRequestStatus,
) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let uid = req.uid().unwrap_or_default();
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let base: String = req.name_any().chars().take(253 - 16).collect();
    let name = format!("{base}-rollback-{short}");
    let rollback: RollbackRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [{
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
            "name": req.name_any(), "uid": uid, "controller": true}]},
        "spec": {"upgradeRequestRef": {"name": req.name_any()}},
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    let api = Api::<RollbackRequest>::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &rollback).await {
        Ok(_) => crash::point("create-rollback"),
        // Created before a restart — if it is ours.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            let ours = existing.owner_references().iter().any(|o| o.uid == uid);
            if !ours {
                return Err(Error::Other(format!(
                    "the auto-rollback cannot be created: a RollbackRequest {name} that is not \
                     this upgrade's exists"
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let message = format!(
        "{}; auto-rollback requested: RollbackRequest {name}",
        status.message.clone().unwrap_or_default()
    );
    steps::record(
        ctx,
        req,
        "link-rollback",
        serde_json::json!({"rollbackRef": {"name": name}, "message": message}),
    )
    .await?;
    ctx.event(
        req,
        "Upgrade",
        true,
        "RollbackRequested",
        format!("the upgrade failed; RollbackRequest {name} created"),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Records `Failed` with a reason and what a person can do; the clean-up steps follow.
pub(super) async fn fail(
    ctx: &Context,
    req: &UpgradeRequest,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    steps::record(
        ctx,
        req,
        "fail",
        serde_json::json!({"phase": UpgradePhase::Failed, "message": message,
        "conditions": [complete("False", reason, &message, req.metadata.generation)]}),
    )
    .await?;
    if !req.spec.dry_run
        && let Some(app) = app_of(
            &ctx.client,
            &req.namespace().unwrap_or_default(),
            &req.spec.managed_app_ref.name,
        )
        .await
    {
        let record = req
            .status
            .as_ref()
            .and_then(|s| s.upgrade.clone())
            .unwrap_or_default();
        let versions = notify::upgrade_versions(&record);
        notify::send(
            &ctx.client,
            Notification::about(Kind::UpgradeFailed, req, &app, message.clone())
                .versions(versions.0, versions.1),
        );
    }
    ctx.event(req, "Upgrade", true, reason, message).await;
    let age = since(req.metadata.creation_timestamp.as_ref());
    metrics::ended(Operation::Upgrade, "failed", age);
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Records the time spent in the phase the request is leaving.
fn leave_phase(status: &UpgradeRequestStatus) {
    if let Some(phase) = status.phase.filter(|p| *p != UpgradePhase::Pending) {
        metrics::upgrade_phase(
            &format!("{phase:?}"),
            since(status.phase_started_at.as_ref()),
        );
    }
}

/// `lastUpgrade` of the ManagedApp, as this request has it now.
fn last_upgrade(
    req: &UpgradeRequest,
    plan_chart: Option<String>,
    outcome: &str,
    completed: Option<Time>,
) -> serde_json::Value {
    let status = req.status.clone().unwrap_or_default();
    let record = status.upgrade.unwrap_or_default();
    // Every key is written, absent ones as null: this is a merge patch over the previous upgrade.
    serde_json::json!({
        "requestName": req.name_any(),
        "fromVersion": record.previous_version,
        "toVersion": record.new_version.or(plan_chart),
        "startedAt": record.started_at.unwrap_or_else(events::now_time),
        "completedAt": completed,
        "status": outcome,
        "snapshotName": status.snapshot.and_then(|s| s.pvcs.first().map(|p| p.snapshot_name.clone())),
    })
}

async fn patch_last_upgrade(
    ctx: &Context,
    app: &ManagedApp,
    last: serde_json::Value,
) -> Result<(), Error> {
    Api::<ManagedApp>::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default())
        .patch_status(
            &app.name_any(),
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"status": {"lastUpgrade": last}})),
        )
        .await?;
    Ok(())
}

/// While the upgrade runs, the ManagedApp says so (its state becomes `Upgrading`).
async fn mark_running(
    ctx: &Context,
    app: &ManagedApp,
    req: &UpgradeRequest,
    plan: &Plan,
) -> Result<(), Error> {
    let last = app.status.as_ref().and_then(|s| s.last_upgrade.as_ref());
    if last.is_some_and(|l| {
        l.request_name.as_deref() == Some(req.name_any().as_str())
            && l.status.as_deref() == Some(LastUpgrade::RUNNING)
    }) {
        return Ok(());
    }
    patch_last_upgrade(
        ctx,
        app,
        last_upgrade(req, plan.chart.clone(), LastUpgrade::RUNNING, None),
    )
    .await?;
    crash::point("mark-app-running");
    Ok(())
}

/// After the request has ended and nothing is left suspended or stopped: snapshot retention
/// (after a success, never touching this upgrade's snapshots, which a rollback would restore),
/// then the ManagedApp's `lastUpgrade`. Both are repeated if a restart interrupts them.
async fn finish(
    ctx: &Context,
    app: &ManagedApp,
    req: &UpgradeRequest,
    status: &UpgradeRequestStatus,
) -> Result<(), Error> {
    let last = app.status.as_ref().and_then(|s| s.last_upgrade.as_ref());
    let mine_running = last.is_some_and(|l| {
        l.request_name.as_deref() == Some(req.name_any().as_str())
            && l.status.as_deref() == Some(LastUpgrade::RUNNING)
    });
    if !mine_running {
        return Ok(());
    }
    let phase = status.phase.unwrap_or_default();
    if phase == UpgradePhase::Succeeded {
        let policy = app
            .spec
            .volume_snapshots
            .as_ref()
            .and_then(|v| v.retention_policy.clone())
            .unwrap_or_default();
        let keep_last = policy.keep_last.unwrap_or(3).max(1) as usize;
        let max_age = policy
            .max_age
            .as_deref()
            .map(|a| crate::duration::or(Some(a), Duration::MAX));
        let ns = req.namespace().unwrap_or_default();
        // This upgrade's snapshots are what a rollback would restore now; those a rollback is
        // restoring are in use.
        let mut protected = vec![req.uid().unwrap_or_default(), req.name_any()];
        protected.extend(in_use_by_rollbacks(ctx, &ns));
        let deleted = snapshots::apply_retention(
            &ctx.client,
            &ctx.snapshots,
            (&ns, &app.name_any()),
            keep_last,
            max_age,
            &protected,
        )
        .await?;
        if !deleted.is_empty() {
            ctx.event(
                req,
                "Upgrade",
                false,
                "SnapshotsPruned",
                format!("retention deleted the snapshots of {}", deleted.join(", ")),
            )
            .await;
        }
    }
    let completed = status
        .upgrade
        .as_ref()
        .and_then(|u| u.completed_at.clone())
        .unwrap_or_else(events::now_time);
    patch_last_upgrade(
        ctx,
        app,
        last_upgrade(req, None, &format!("{phase:?}"), Some(completed)),
    )
    .await?;
    crash::point("mark-app-done");
    Ok(())
}

/// The upgrades (uids and names) whose snapshots a rollback in `ns` restores and has not
/// released: retention and the dashboard leave their snapshots alone.
pub fn in_use_by_rollbacks(ctx: &Context, ns: &str) -> Vec<String> {
    ctx.rollbacks
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns) && !r.spec.dry_run)
        .filter(|r| r.status.as_ref().is_none_or(|s| s.released_at.is_none()))
        .flat_map(|r| {
            let from = r.status.as_ref().and_then(|s| s.restored_from.clone());
            [
                from.as_ref().and_then(|f| f.upgrade_request_uid.clone()),
                from.and_then(|f| f.upgrade_request_name)
                    .or_else(|| r.spec.upgrade_request_ref.as_ref().map(|u| u.name.clone())),
            ]
        })
        .flatten()
        .collect()
}
