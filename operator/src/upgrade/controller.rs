//! The UpgradeRequest controller: observes, lets [`decide`] pick one step, records it in the
//! request's status, and performs it. A finalizer resumes Flux and restarts stopped workloads
//! if the request is deleted mid-way.

use super::decide::{Observed, Release, Step, decide};
use super::plan::{self, Plan, version_edits};
use super::{flux, preflight, release, workloads};
use crate::git::bump::{BumpError, Outcome, commit_version_bump};
use crate::git::message::{BumpMessage, REQUEST_TRAILER};
use crate::git::{self, GitBackend, GitError};
use crate::metrics::{self, Operation};
use crate::notify::{self, Kind, Notification};
use crate::operation::{
    self, Context, Error, app_of, complete, found_workloads, refetch_if_missed, resume_flux, since,
    who,
};
use crate::snapshots;
use crate::{Scope, events};
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::{
    DryRunResult, LastUpgrade, ManagedApp, PreflightCheck, RollbackPhase, RollbackRequest,
    SnapshotRecord, Time, UpgradePhase, UpgradeRecord, UpgradeRequest, UpgradeRequestStatus,
    condition,
};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

pub const FINALIZER: &str = "fluxup.dev/upgrade";
const MANAGER: &str = "fluxup-upgrade";

pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<UpgradeRequest> = scope.api(&client);
    let ctx = Arc::new(Context::new(client));
    Controller::new(api, watcher::Config::default().streaming_lists())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(req: Arc<UpgradeRequest>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(request = %req.name_any(), %error, "upgrade step failed; retrying in 10 s");
    metrics::reconcile_error("upgrade", error.category());
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(req: Arc<UpgradeRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let api: Api<UpgradeRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let span = operation::span(req.as_ref());
    finalizer(&api, FINALIZER, req, |event| async {
        match event {
            Finalizer::Apply(req) => step(&req, &ctx).await,
            Finalizer::Cleanup(req) => cleanup(&req, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(Error::from)
}

/// Deleted mid-way: nothing stays suspended or stopped.
async fn cleanup(req: &UpgradeRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    if let Ok(app) = Api::<ManagedApp>::namespaced(ctx.client.clone(), &ns)
        .get(&req.spec.managed_app_ref.name)
        .await
        && status.phase.is_some_and(|p| p != UpgradePhase::Pending)
    {
        let ks_ns = app.kustomization_namespace().to_string();
        flux::resume(&ctx.client, &ks_ns, &app.spec.kustomization_ref.name).await?;
    }
    if !status.stopped_workloads.is_empty() {
        workloads::restart(&ctx.client, &ns, &status.stopped_workloads).await?;
    }
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
        Err(why) => check(false, why),
    }
}

async fn observe(
    req: &UpgradeRequest,
    app: &ManagedApp,
    plan: &Plan,
    ctx: &Context,
) -> Result<Observed, Error> {
    let ns = req.namespace().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let mut seen = Observed {
        health_timeout: crate::duration::or(
            app.spec
                .health_check
                .as_ref()
                .and_then(|h| h.timeout.as_deref()),
            Duration::from_secs(300),
        ),
        stop_workloads: app
            .spec
            .volume_snapshots
            .as_ref()
            .is_none_or(|v| v.stop_workloads),
        auto_rollback: app.spec.auto_rollback,
        snapshot_timeout: crate::duration::or(
            app.spec
                .volume_snapshots
                .as_ref()
                .and_then(|v| v.timeout.as_deref()),
            Duration::from_secs(900),
        ),
        ..Default::default()
    };
    if let Some(started) = &status.phase_started_at {
        let secs = Timestamp::now().as_second() - started.0.as_second();
        seen.in_phase = Duration::from_secs(secs.max(0) as u64);
    }

    // One operation at a time per app: the older request goes first.
    let others = Api::<UpgradeRequest>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let me = (
        req.metadata.creation_timestamp.clone().map(|t| t.0),
        req.name_any(),
    );
    seen.other_request_running = others
        .items
        .iter()
        .filter(|o| {
            o.spec.managed_app_ref.name == req.spec.managed_app_ref.name
                && o.name_any() != req.name_any()
        })
        .filter(|o| {
            let p = o.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            !p.is_terminal()
                && (p != UpgradePhase::Pending
                    || (
                        o.metadata.creation_timestamp.clone().map(|t| t.0),
                        o.name_any(),
                    ) < me)
        })
        .map(|o| format!("{ns}/{}", o.name_any()))
        .next();
    if seen.other_request_running.is_none() && !status.phase.is_some_and(|p| p.is_terminal()) {
        // A rollback of one of this app's upgrades that has not ended.
        let of_this_app: Vec<String> = others
            .items
            .iter()
            .filter(|o| o.spec.managed_app_ref.name == req.spec.managed_app_ref.name)
            .map(|o| o.name_any())
            .collect();
        seen.other_request_running = Api::<RollbackRequest>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|r| {
                let p = r.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
                // A pending rollback goes first only if it is older (it waits for us otherwise).
                let ahead = p != RollbackPhase::Pending
                    || (
                        r.metadata.creation_timestamp.clone().map(|t| t.0),
                        r.name_any(),
                    ) < me;
                !p.is_terminal()
                    && ahead
                    && r.spec
                        .upgrade_request_ref
                        .as_ref()
                        .is_some_and(|u| of_this_app.contains(&u.name))
            })
            .map(|r| format!("rollback {ns}/{}", r.name_any()))
            .next();
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

    let ks = Api::<Kustomization>::namespaced(ctx.client.clone(), app.kustomization_namespace())
        .get(&app.spec.kustomization_ref.name)
        .await?;
    seen.kustomization_suspended = flux::is_suspended(&ks);

    let found = found_workloads(app);
    seen.workloads_to_stop = found.len();
    if !status.stopped_workloads.is_empty() {
        seen.workloads_stopped =
            workloads::all_stopped(&ctx.client, &ns, &status.stopped_workloads).await?;
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

    if phase == UpgradePhase::Committing {
        let (git, branch) = git::cluster::for_app(&ctx.client, app).await?;
        let request = format!("{ns}/{}", req.name_any());
        seen.commit = git
            .find_commit(&branch, REQUEST_TRAILER, &request, 50)
            .await?
            .map(|c| c.sha);
    }

    if matches!(
        phase,
        UpgradePhase::Reconciling | UpgradePhase::HealthChecking
    ) {
        let hr_ns = app.helm_release_namespace().unwrap_or(&ns).to_string();
        let hr = Api::<HelmRelease>::namespaced(ctx.client.clone(), &hr_ns)
            .get(&app.spec.helm_release_ref.name)
            .await?;
        seen.release = release::state(&hr, plan);
        seen.healthy = seen.release == Release::ReadyAtTarget
            && release::workloads_ready(&ctx.client, &ns, &found).await?;
    }
    Ok(seen)
}

async fn step(req: &UpgradeRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let app = Api::<ManagedApp>::namespaced(ctx.client.clone(), &ns)
        .get(&req.spec.managed_app_ref.name)
        .await?;
    let status: UpgradeRequestStatus = req.status.clone().unwrap_or_default();
    let plan = plan::for_request(req, &app);
    let seen = observe(req, &app, &plan, ctx).await?;
    let pvcs: Vec<String> = app
        .spec
        .volume_snapshots
        .as_ref()
        .filter(|v| v.enabled)
        .map(|v| v.pvcs.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    let mut spec = req.spec.clone();
    spec.skip_snapshot |= pvcs.is_empty();
    let next = decide(&spec, &status, &seen);
    let phase = status.phase.unwrap_or_default();
    if !req.spec.dry_run && phase != UpgradePhase::Pending && !phase.is_terminal() {
        mark_running(ctx, &app, req, &plan).await?;
    }
    tracing::info!(request = %format!("{ns}/{}", req.name_any()), phase = ?status.phase, step = ?next, "upgrade step");
    let request = format!("{ns}/{}", req.name_any());
    let gen_ = req.metadata.generation;
    if status.phase.is_none() {
        let target = plan.chart.clone().unwrap_or_else(|| "new images".into());
        let what = format!("upgrade {} to {target}", app.name_any());
        operation::requested(ctx, req, req.spec.dry_run, what).await;
    }

    match next {
        Step::Enter(phase) => {
            leave_phase(&status);
            if phase == UpgradePhase::Suspending {
                let versions =
                    notify::upgrade_versions(&status.upgrade.clone().unwrap_or_default());
                let message = format!(
                    "{} asked to upgrade {}; FluxUp pauses Flux and takes snapshots first",
                    who(&req.metadata),
                    app.name_any()
                );
                notify::send(
                    &ctx.client,
                    Notification::about(Kind::UpgradeStarted, req, &app, message)
                        .versions(versions.0, versions.1),
                );
            }
            let mut s = serde_json::json!({"phase": phase, "phaseStartedAt": events::now_time(), "observedGeneration": gen_,
                "message": format!("{phase:?}")});
            if phase == UpgradePhase::Preflight {
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
            ctx.write_status(MANAGER, req, s).await?;
            ctx.event(
                req,
                "Upgrade",
                false,
                &format!("{phase:?}"),
                format!("upgrade of {} entered {phase:?}", app.name_any()),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::RunPreflight => {
            let mut checks = vec![PreflightCheck {
                name: "target".into(),
                passed: plan.problems.is_empty(),
                message: Some(if plan.problems.is_empty() {
                    format!("{} change(s) planned", plan.edits.len())
                } else {
                    plan.problems.join("; ")
                }),
            }];
            let ready = app
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY))
                .cloned();
            // A failing release does not block: moving to another version is how it is fixed.
            let release_failing = ready
                .as_ref()
                .is_some_and(|c| c.reason == "HelmReleaseNotReady");
            checks.push(PreflightCheck {
                name: "app".into(),
                passed: ready
                    .as_ref()
                    .is_some_and(|c| c.status == "True" || release_failing),
                message: ready.map(|c| c.message),
            });
            if let Some(target) = &plan.chart {
                checks.push(version_exists(&ctx.client, &app, target).await);
            }
            checks.push(preflight::policy(&app, plan.chart.as_deref(), &plan.images));
            let (git_check, diff_text) = plan::check_git(&ctx.client, &app, &plan).await;
            checks.push(git_check);
            let result = DryRunResult {
                checks,
                diff: diff_text,
            };
            ctx.write_status(MANAGER, req, serde_json::json!({"dryRun": result}))
                .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::FinishDryRun => {
            let message =
                "dry run: every check passed; nothing was changed (the diff is in status.dryRun)";
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"phase": UpgradePhase::Succeeded, "message": message,
                "conditions": [complete("True", "DryRun", message, gen_)]}),
            )
            .await?;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Upgrade, "dry_run", age);
            Ok(Action::await_change())
        }
        Step::SuspendKustomization => {
            flux::suspend(
                &ctx.client,
                app.kustomization_namespace(),
                &app.spec.kustomization_ref.name,
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::StopWorkloads => {
            let found = found_workloads(&app);
            let recorded =
                workloads::record(&ctx.client, &ns, &found, &status.stopped_workloads).await?;
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"stoppedWorkloads": recorded}),
            )
            .await?;
            workloads::stop(&ctx.client, &ns, &recorded).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::CreateSnapshots => {
            let class = app
                .spec
                .volume_snapshots
                .as_ref()
                .and_then(|v| v.volume_snapshot_class_name.clone());
            let taken = snapshots::create(
                &ctx.client,
                &ns,
                &app.name_any(),
                &req.name_any(),
                &pvcs,
                class.as_deref(),
            )
            .await?;
            let record = SnapshotRecord {
                pvcs: taken,
                created_at: Some(events::now_time()),
                ..Default::default()
            };
            ctx.write_status(MANAGER, req, serde_json::json!({"snapshot": record}))
                .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::CommitVersionBump => {
            let (git, branch) = git::cluster::for_app(&ctx.client, &app).await?;
            let current = app
                .status
                .as_ref()
                .and_then(|s| s.current_version.clone())
                .unwrap_or_default();
            let message = BumpMessage {
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
                request: request.clone(),
            }
            .render();
            let outcome =
                match commit_version_bump(&git, &branch, &version_edits(&plan), &message, &request)
                    .await
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
            let sha = match &outcome {
                Outcome::Committed(c) | Outcome::AlreadyCommitted(c) => Some(c.sha.clone()),
                Outcome::NothingToChange => None,
            };
            let mut upgrade = status.upgrade.clone().unwrap_or_default();
            upgrade.git_commit = sha.clone();
            leave_phase(&status);
            ctx.write_status(MANAGER, req, serde_json::json!({"upgrade": upgrade, "phase": UpgradePhase::Reconciling,
                "phaseStartedAt": events::now_time(), "message": match &sha { Some(s) => format!("committed {s}"), None => "the versions were already in Git".into() }}))
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
        Step::ResumeFlux => {
            resume_flux(&ctx.client, &app).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::RestartWorkloads => {
            workloads::restart(&ctx.client, &ns, &status.stopped_workloads).await?;
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
            if phase == UpgradePhase::Reconciling {
                let commit = status
                    .upgrade
                    .as_ref()
                    .and_then(|u| u.git_commit.as_deref());
                refetch_if_missed(&ctx.client, &app, commit).await?;
            }
            if status.message.as_deref() != Some(why.as_str()) {
                ctx.write_status(MANAGER, req, serde_json::json!({"message": why}))
                    .await?;
            }
            Ok(Action::requeue(recheck))
        }
        Step::Fail { reason, message } => fail(ctx, req, reason, message).await,
        Step::RequestRollback => {
            let name = format!("{}-rollback", req.name_any());
            let rollback: RollbackRequest = serde_json::from_value(serde_json::json!({
                "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"upgradeRequestRef": {"name": req.name_any()}},
            }))
            .map_err(|e| Error::Other(e.to_string()))?;
            match Api::<RollbackRequest>::namespaced(ctx.client.clone(), &ns)
                .create(&PostParams::default(), &rollback)
                .await
            {
                Ok(_) => {}
                // Created before a restart.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            let message = format!(
                "{}; auto-rollback requested: RollbackRequest {name}",
                status.message.clone().unwrap_or_default()
            );
            ctx.write_status(
                MANAGER,
                req,
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
        Step::Succeed => {
            let mut upgrade = status.upgrade.clone().unwrap_or_default();
            upgrade.completed_at = Some(events::now_time());
            let message = format!(
                "{} runs {}",
                app.name_any(),
                plan.chart
                    .clone()
                    .unwrap_or_else(|| "the new images".into())
            );
            ctx.write_status(MANAGER, req, serde_json::json!({"phase": UpgradePhase::Succeeded, "message": message, "upgrade": upgrade,
                "healthCheck": {"status": "Healthy", "checkedAt": events::now_time()},
                "conditions": [complete("True", "Succeeded", &message, gen_)]}))
            .await?;
            let versions = notify::upgrade_versions(&upgrade);
            notify::send(
                &ctx.client,
                Notification::about(Kind::UpgradeSucceeded, req, &app, message.clone())
                    .versions(versions.0, versions.1),
            );
            ctx.event(req, "Upgrade", false, "Succeeded", message).await;
            leave_phase(&status);
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Upgrade, "succeeded", age);
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Done => {
            finish(ctx, &app, req, &status).await?;
            Ok(Action::await_change())
        }
    }
}

/// Records `Failed` with a reason and what a person can do; the clean-up steps follow.
async fn fail(
    ctx: &Context,
    req: &UpgradeRequest,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    ctx.write_status(
        MANAGER,
        req,
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
    .await
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
        let deleted = snapshots::apply_retention(
            &ctx.client,
            &ns,
            &app.name_any(),
            keep_last,
            max_age,
            &req.name_any(),
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
    .await
}
