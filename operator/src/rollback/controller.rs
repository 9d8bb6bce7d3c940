//! The RollbackRequest controller: observes, lets [`decide`] pick one step, records it in the
//! request's status, and performs it — as the upgrade controller does. A finalizer recreates any
//! deleted claim, resumes Flux and restarts stopped workloads if the request is deleted mid-way.

use super::claims;
use super::decide::{Claim, Observed, Step, decide};
use crate::git::bump::{BumpError, Outcome, commit_version_bump};
use crate::git::message::{REQUEST_TRAILER, RevertMessage};
use crate::git::{self, GitBackend, GitError};
use crate::metrics::{self, Operation};
use crate::notify::{self, Kind, Notification};
use crate::operation::{
    self, Context, Error, app_of, complete, found_workloads, refetch_if_missed, resume_flux, since,
    who,
};
use crate::upgrade::plan::{self, Plan, version_edits};
use crate::upgrade::{flux, release, workloads};
use crate::{Scope, events, snapshots};
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{
    DryRunResult, LastUpgrade, ManagedApp, PreflightCheck, RestoredFrom, RollbackPhase,
    RollbackRequest, RollbackRequestStatus, UpgradePhase, UpgradeRequest,
};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

pub const FINALIZER: &str = "fluxup.dev/rollback";
const MANAGER: &str = "fluxup-rollback";

pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<RollbackRequest> = scope.api(&client);
    let ctx = Arc::new(Context::new(client));
    Controller::new(api, watcher::Config::default().streaming_lists())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(req: Arc<RollbackRequest>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(rollback = %req.name_any(), %error, "rollback step failed; retrying in 10 s");
    metrics::reconcile_error("rollback", error.category());
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(req: Arc<RollbackRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let api: Api<RollbackRequest> = Api::namespaced(ctx.client.clone(), &ns);
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

/// What a rollback undoes: the upgrade, its app, the claims and snapshots, and the versions to
/// write back.
struct Source {
    upgrade: UpgradeRequest,
    app: ManagedApp,
    /// (claim, snapshot) pairs.
    volumes: Vec<(String, String)>,
    plan: Plan,
}

/// Finds the upgrade (named, or through the snapshot's labels), its app, and what to restore.
async fn source(req: &RollbackRequest, client: &Client) -> Result<Source, String> {
    let ns = req.namespace().unwrap_or_default();
    let upgrade_name = match (&req.spec.upgrade_request_ref, &req.spec.snapshot_ref) {
        (Some(u), _) => u.name.clone(),
        (None, Some(s)) => {
            let snapshot = Api::<VolumeSnapshot>::namespaced(client.clone(), &ns)
                .get_opt(&s.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("VolumeSnapshot {ns}/{} does not exist", s.name))?;
            snapshot
                .labels()
                .get(snapshots::REQUEST_LABEL)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "VolumeSnapshot {} was not taken by a FluxUp upgrade (no {} label)",
                        s.name,
                        snapshots::REQUEST_LABEL
                    )
                })?
        }
        (None, None) => return Err("the request names neither an upgrade nor a snapshot".into()),
    };
    let upgrade = Api::<UpgradeRequest>::namespaced(client.clone(), &ns)
        .get_opt(&upgrade_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("UpgradeRequest {ns}/{upgrade_name} does not exist: the versions to restore are unknown")
        })?;
    let app_name = req
        .spec
        .managed_app_ref
        .as_ref()
        .map(|a| a.name.clone())
        .unwrap_or_else(|| upgrade.spec.managed_app_ref.name.clone());
    let app = Api::<ManagedApp>::namespaced(client.clone(), &ns)
        .get_opt(&app_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("ManagedApp {ns}/{app_name} does not exist"))?;
    let status = upgrade.status.clone().unwrap_or_default();
    let record = status.upgrade.clone().unwrap_or_default();
    let volumes = status
        .snapshot
        .map(|s| {
            s.pvcs
                .into_iter()
                .map(|p| (p.pvc_name, p.snapshot_name))
                .collect()
        })
        .unwrap_or_default();
    let mut plan = plan::to_versions(&app, record.previous_version, record.previous_images);
    if plan.chart.is_none() && plan.images.is_empty() {
        plan.problems.push(format!(
            "UpgradeRequest {upgrade_name} recorded no versions from before it"
        ));
    }
    Ok(Source {
        upgrade,
        app,
        volumes,
        plan,
    })
}

/// Deleted mid-way: no claim stays deleted, nothing stays suspended or stopped.
async fn cleanup(req: &RollbackRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    for (name, claim) in claims::observe(&ctx.client, &ns, &status.volumes).await? {
        if claim == Claim::Missing
            && let Some(v) = status.volumes.iter().find(|v| v.pvc_name == name)
        {
            claims::create(&ctx.client, &ns, v).await?;
        }
    }
    if let Ok(src) = source(req, &ctx.client).await
        && status.phase.is_some_and(|p| p != RollbackPhase::Pending)
    {
        flux::resume(
            &ctx.client,
            src.app.kustomization_namespace(),
            &src.app.spec.kustomization_ref.name,
        )
        .await?;
    }
    if !status.stopped_workloads.is_empty() {
        workloads::restart(&ctx.client, &ns, &status.stopped_workloads).await?;
    }
    Ok(Action::await_change())
}

async fn observe(req: &RollbackRequest, src: &Source, ctx: &Context) -> Result<Observed, Error> {
    let ns = req.namespace().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let app = &src.app;
    let mut seen = Observed {
        health_timeout: crate::duration::or(
            app.spec
                .health_check
                .as_ref()
                .and_then(|h| h.timeout.as_deref()),
            Duration::from_secs(300),
        ),
        claims_to_record: src.volumes.len(),
        ..Default::default()
    };
    if let Some(started) = &status.phase_started_at {
        let secs = Timestamp::now().as_second() - started.0.as_second();
        seen.in_phase = Duration::from_secs(secs.max(0) as u64);
    }

    // One operation at a time per app: any running upgrade, or an older rollback.
    let app_name = app.name_any();
    let upgrades = Api::<UpgradeRequest>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let rollbacks = Api::<RollbackRequest>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let me = (
        req.metadata.creation_timestamp.clone().map(|t| t.0),
        req.name_any(),
    );
    seen.other_operation_running = upgrades
        .items
        .iter()
        .filter(|u| u.spec.managed_app_ref.name == app_name)
        .filter(|u| {
            let p = u.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            // A pending upgrade goes first only if it is older (it waits for us otherwise).
            !p.is_terminal()
                && (p != UpgradePhase::Pending
                    || (
                        u.metadata.creation_timestamp.clone().map(|t| t.0),
                        u.name_any(),
                    ) < me)
        })
        .map(|u| format!("{ns}/{}", u.name_any()))
        .chain(
            rollbacks
                .items
                .iter()
                .filter(|r| r.name_any() != req.name_any())
                .filter(|r| {
                    let p = r.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
                    let same_app = r.status.as_ref().is_some_and(|s| {
                        s.restored_from
                            .as_ref()
                            .and_then(|f| f.upgrade_request_name.as_ref())
                            .is_some_and(|u| {
                                upgrades.items.iter().any(|x| {
                                    &x.name_any() == u && x.spec.managed_app_ref.name == app_name
                                })
                            })
                    });
                    same_app
                        && !p.is_terminal()
                        && (p != RollbackPhase::Pending
                            || (
                                r.metadata.creation_timestamp.clone().map(|t| t.0),
                                r.name_any(),
                            ) < me)
                })
                .map(|r| format!("{ns}/{}", r.name_any())),
        )
        .next();

    seen.preflight = status.dry_run.as_ref().map(|d| {
        d.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name.clone(), c.message.clone().unwrap_or_default()))
            .collect()
    });

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

    let names: Vec<String> = src.volumes.iter().map(|(_, s)| s.clone()).collect();
    seen.snapshots_unusable = snapshots_ready(&ctx.client, &ns, &names).await?.err();
    seen.claims = claims::observe(&ctx.client, &ns, &status.volumes).await?;

    if phase == RollbackPhase::Reverting {
        let (git, branch) = git::cluster::for_app(&ctx.client, app).await?;
        let request = format!("{ns}/{}", req.name_any());
        seen.commit = git
            .find_commit(&branch, REQUEST_TRAILER, &request, 50)
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .map(|c| c.sha);
    }
    if phase == RollbackPhase::StartingApp {
        let hr_ns = app.helm_release_namespace().unwrap_or(&ns).to_string();
        let hr = Api::<HelmRelease>::namespaced(ctx.client.clone(), &hr_ns)
            .get(&app.spec.helm_release_ref.name)
            .await?;
        seen.release = release::state(&hr, &src.plan);
        seen.healthy = release::workloads_ready(&ctx.client, &ns, &found).await?;
    }
    Ok(seen)
}

/// Whether every snapshot named exists and is ReadyToUse; why not otherwise.
async fn snapshots_ready(
    client: &Client,
    ns: &str,
    names: &[String],
) -> kube::Result<Result<(), String>> {
    let api = Api::<VolumeSnapshot>::namespaced(client.clone(), ns);
    for name in names {
        let Some(snapshot) = api.get_opt(name).await? else {
            return Ok(Err(format!("VolumeSnapshot {name} does not exist")));
        };
        let status = snapshot.status.unwrap_or_default();
        if let Some(message) = status.error.and_then(|e| e.message) {
            return Ok(Err(format!("VolumeSnapshot {name} failed: {message}")));
        }
        if status.ready_to_use != Some(true) {
            return Ok(Err(format!("VolumeSnapshot {name} is not ready to use")));
        }
    }
    Ok(Ok(()))
}

/// The preflight checks, and the diff of the revert.
async fn preflight(src: &Source, ctx: &Context, ns: &str) -> DryRunResult {
    let record = src.upgrade.status.clone().unwrap_or_default().upgrade;
    let from = record.as_ref().and_then(|r| r.new_version.clone());
    let mut checks = vec![PreflightCheck {
        name: "target".into(),
        passed: src.plan.problems.is_empty(),
        message: Some(if src.plan.problems.is_empty() {
            format!(
                "undoes {}: {} → {}",
                src.upgrade.name_any(),
                from.unwrap_or_else(|| "the new images".into()),
                src.plan
                    .chart
                    .clone()
                    .unwrap_or_else(|| "the previous images".into())
            )
        } else {
            src.plan.problems.join("; ")
        }),
    }];
    let names: Vec<String> = src.volumes.iter().map(|(_, s)| s.clone()).collect();
    let ready = snapshots_ready(&ctx.client, ns, &names)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    checks.push(PreflightCheck {
        name: "snapshots".into(),
        passed: ready.is_ok(),
        message: Some(match ready {
            Ok(()) if names.is_empty() => {
                "the upgrade took no snapshots: no data to restore".into()
            }
            Ok(()) => format!("ready to use: {}", names.join(", ")),
            Err(why) => why,
        }),
    });
    let found = src
        .app
        .status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .map(|r| r.workloads.len());
    checks.push(PreflightCheck {
        name: "workloads".into(),
        passed: found.is_some() || src.volumes.is_empty(),
        message: Some(match found {
            Some(n) => format!("{n} workload(s) mount the app's volumes"),
            None => "the app is not resolved yet".into(),
        }),
    });
    let (git_check, result_diff) = plan::check_git(&ctx.client, &src.app, &src.plan).await;
    checks.push(git_check);
    DryRunResult {
        checks,
        diff: result_diff,
    }
}

async fn step(req: &RollbackRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let status: RollbackRequestStatus = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let gen_ = req.metadata.generation;
    let src = match source(req, &ctx.client).await {
        Ok(src) => src,
        // Nothing to undo, or no longer known what: refuse before touching anything; once
        // started, the recorded status is enough to finish the clean-up.
        Err(why) if phase == RollbackPhase::Pending => {
            let message = format!("refused; nothing was changed: {why}");
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"phase": RollbackPhase::Failed, "message": message,
                    "conditions": [complete("False", "PreflightFailed", &message, gen_)]}),
            )
            .await?;
            notify_failed(ctx, req, &message).await;
            ctx.event(req, "Rollback", true, "PreflightFailed", message)
                .await;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Rollback, "failed", age);
            return Ok(Action::await_change());
        }
        Err(why) if phase.is_terminal() => {
            tracing::debug!(rollback = %req.name_any(), %why, "ended; its upgrade is gone");
            return Ok(Action::await_change());
        }
        Err(why) => return Err(Error::Other(why)),
    };
    let seen = observe(req, &src, ctx).await?;
    let next = decide(&req.spec, &status, &seen);
    tracing::info!(rollback = %format!("{ns}/{}", req.name_any()), phase = ?status.phase, step = ?next, "rollback step");
    let request = format!("{ns}/{}", req.name_any());
    if !req.spec.dry_run && phase != RollbackPhase::Pending && !phase.is_terminal() {
        mark_app(ctx, &src, LastUpgrade::ROLLING_BACK).await?;
    }

    if status.phase.is_none() {
        let what = format!(
            "roll back {} (upgrade {})",
            src.app.name_any(),
            src.upgrade.name_any()
        );
        operation::requested(ctx, req, req.spec.dry_run, what).await;
    }

    match next {
        Step::Enter(next_phase) => {
            if next_phase == RollbackPhase::Suspending {
                let message = format!(
                    "{} asked to roll back {}; FluxUp pauses Flux, restores the \
                    volumes and reverts the upgrade's commit",
                    who(&req.metadata),
                    src.app.name_any()
                );
                notify::send(
                    &ctx.client,
                    rollback_notification(Kind::RollbackStarted, req, &src, message),
                );
            }
            let mut s = serde_json::json!({"phase": next_phase, "phaseStartedAt": events::now_time(),
                "observedGeneration": gen_, "message": format!("{next_phase:?}")});
            if next_phase == RollbackPhase::Suspending {
                s["startedAt"] = serde_json::to_value(events::now_time()).unwrap_or_default();
                s["restoredFrom"] = serde_json::to_value(RestoredFrom {
                    snapshot_name: src.volumes.first().map(|(_, s)| s.clone()),
                    snapshot_names: src.volumes.iter().map(|(_, s)| s.clone()).collect(),
                    chart_version: src.plan.chart.clone(),
                    upgrade_request_name: Some(src.upgrade.name_any()),
                })
                .unwrap_or_default();
            }
            ctx.write_status(MANAGER, req, s).await?;
            ctx.event(
                req,
                "Rollback",
                false,
                &format!("{next_phase:?}"),
                format!("rollback of {} entered {next_phase:?}", src.app.name_any()),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::RunPreflight => {
            let result = preflight(&src, ctx, &ns).await;
            ctx.write_status(MANAGER, req, serde_json::json!({"dryRun": result}))
                .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::FinishDryRun => {
            let message = "dry run: every check passed; nothing was changed (the revert's diff is in status.dryRun)";
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"phase": RollbackPhase::Succeeded, "message": message,
                "conditions": [complete("True", "DryRun", message, gen_)]}),
            )
            .await?;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Rollback, "dry_run", age);
            Ok(Action::await_change())
        }
        Step::SuspendKustomization => {
            flux::suspend(
                &ctx.client,
                src.app.kustomization_namespace(),
                &src.app.spec.kustomization_ref.name,
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::StopWorkloads => {
            let found = found_workloads(&src.app);
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
        Step::RecordClaims => {
            let mut volumes = Vec::new();
            for (pvc, snapshot) in &src.volumes {
                match status.volumes.iter().find(|v| &v.pvc_name == pvc) {
                    Some(v) => volumes.push(v.clone()),
                    None => match claims::record(&ctx.client, &ns, pvc, snapshot).await {
                        Ok(v) => volumes.push(v),
                        Err(why) => {
                            return fail(ctx, req, "VolumeNotFound", why).await;
                        }
                    },
                }
            }
            ctx.write_status(MANAGER, req, serde_json::json!({"volumes": volumes}))
                .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::DeleteClaim(name) => {
            claims::delete(&ctx.client, &ns, &name).await?;
            ctx.event(
                req,
                "Rollback",
                false,
                "ClaimDeleted",
                format!("claim {name} deleted; it is recreated from its snapshot next"),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Step::CreateClaim(name) => {
            if let Some(v) = status.volumes.iter().find(|v| v.pvc_name == name) {
                claims::create(&ctx.client, &ns, v).await?;
                ctx.event(
                    req,
                    "Rollback",
                    false,
                    "ClaimRestored",
                    format!("claim {name} created from snapshot {}", v.snapshot_name),
                )
                .await;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::CommitRevert => {
            let (git, branch) = git::cluster::for_app(&ctx.client, &src.app).await?;
            let upgrade_status = src.upgrade.status.clone().unwrap_or_default();
            let message = RevertMessage {
                app: src.app.name_any(),
                changes: src
                    .plan
                    .edits
                    .iter()
                    .map(|e| (e.what.clone(), e.value.clone()))
                    .collect(),
                upgrade: format!("{ns}/{}", src.upgrade.name_any()),
                reverts: upgrade_status.upgrade.and_then(|u| u.git_commit),
                snapshots: src.volumes.iter().map(|(_, s)| s.clone()).collect(),
                request: request.clone(),
            }
            .render();
            let outcome = match commit_version_bump(
                &git,
                &branch,
                &version_edits(&src.plan),
                &message,
                &request,
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(BumpError::Git(GitError::Unreachable(e))) => {
                    let why = format!("the Git server could not be reached; retrying: {e}");
                    ctx.write_status(MANAGER, req, serde_json::json!({"message": why}))
                        .await?;
                    return Ok(Action::requeue(Duration::from_secs(10)));
                }
                Err(e) => {
                    let message = format!(
                        "the data is restored, but the previous version could not be committed: \
                         {e}; Flux will roll the app forward again once resumed, so fix Git and \
                         commit the previous version yourself"
                    );
                    return fail(ctx, req, "GitFailed", message).await;
                }
            };
            let sha = match &outcome {
                Outcome::Committed(c) | Outcome::AlreadyCommitted(c) => Some(c.sha.clone()),
                Outcome::NothingToChange => None,
            };
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"gitCommit": sha, "phase": RollbackPhase::StartingApp,
                "phaseStartedAt": events::now_time(), "message": match &sha {
                    Some(s) => format!("committed the previous version: {s}"),
                    None => "Git already holds the previous version".into() }}),
            )
            .await?;
            ctx.event(
                req,
                "Rollback",
                false,
                "Reverted",
                format!("revert committed: {sha:?}"),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::ResumeFlux => {
            resume_flux(&ctx.client, &src.app).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::RestartWorkloads => {
            workloads::restart(&ctx.client, &ns, &status.stopped_workloads).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Step::Wait { why, recheck } => {
            if phase == RollbackPhase::StartingApp {
                refetch_if_missed(&ctx.client, &src.app, status.git_commit.as_deref()).await?;
            }
            if status.message.as_deref() != Some(why.as_str()) {
                ctx.write_status(MANAGER, req, serde_json::json!({"message": why}))
                    .await?;
            }
            Ok(Action::requeue(recheck))
        }
        Step::Fail { reason, message } => fail(ctx, req, reason, message).await,
        Step::Succeed => {
            let message = format!(
                "{} is back at {}, its data restored from {}",
                src.app.name_any(),
                src.plan
                    .chart
                    .clone()
                    .unwrap_or_else(|| "the previous images".into()),
                if src.volumes.is_empty() {
                    "nothing (it has no snapshots)".to_string()
                } else {
                    src.volumes
                        .iter()
                        .map(|(_, s)| s.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            ctx.write_status(
                MANAGER,
                req,
                serde_json::json!({"phase": RollbackPhase::Succeeded, "message": message,
                "completedAt": events::now_time(),
                "conditions": [complete("True", "Succeeded", &message, gen_)]}),
            )
            .await?;
            notify::send(
                &ctx.client,
                rollback_notification(Kind::RollbackSucceeded, req, &src, message.clone()),
            );
            ctx.event(req, "Rollback", false, "Succeeded", message)
                .await;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Rollback, "succeeded", age);
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Done => {
            finish(ctx, req, &src, &status).await?;
            Ok(Action::await_change())
        }
    }
}

/// A notification about this rollback: from the upgrade's new version back to its previous one.
fn rollback_notification(
    kind: Kind,
    req: &RollbackRequest,
    src: &Source,
    message: String,
) -> Notification {
    let record = src
        .upgrade
        .status
        .as_ref()
        .and_then(|s| s.upgrade.clone())
        .unwrap_or_default();
    let (previous, new) = notify::upgrade_versions(&record);
    Notification::about(kind, req, &src.app, message).versions(new, previous)
}

/// Tells the sinks a rollback failed (not for dry runs); the app is read here, since a rollback
/// may fail before it knows its source.
async fn notify_failed(ctx: &Context, req: &RollbackRequest, message: &str) {
    if req.spec.dry_run {
        return;
    }
    let ns = req.namespace().unwrap_or_default();
    let Some(app_ref) = &req.spec.managed_app_ref else {
        return;
    };
    if let Some(app) = app_of(&ctx.client, &ns, &app_ref.name).await {
        let to = req
            .status
            .as_ref()
            .and_then(|s| s.restored_from.as_ref())
            .and_then(|r| r.chart_version.clone());
        notify::send(
            &ctx.client,
            Notification::about(Kind::RollbackFailed, req, &app, message.to_string())
                .versions(None, to),
        );
    }
}

/// Records `Failed` with a reason and what a person can do; the clean-up steps follow.
async fn fail(
    ctx: &Context,
    req: &RollbackRequest,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    ctx.write_status(
        MANAGER,
        req,
        serde_json::json!({"phase": RollbackPhase::Failed, "message": message,
        "completedAt": events::now_time(),
        "conditions": [complete("False", reason, &message, req.metadata.generation)]}),
    )
    .await?;
    notify_failed(ctx, req, &message).await;
    ctx.event(req, "Rollback", true, reason, message).await;
    let age = since(req.metadata.creation_timestamp.as_ref());
    metrics::ended(Operation::Rollback, "failed", age);
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// The app's `lastUpgrade.status`, while this rollback undoes that upgrade.
async fn mark_app(ctx: &Context, src: &Source, word: &str) -> Result<(), Error> {
    let last = src
        .app
        .status
        .as_ref()
        .and_then(|s| s.last_upgrade.as_ref());
    let about_it = last.is_some_and(|l| {
        l.request_name.as_deref() == Some(src.upgrade.name_any().as_str())
            && l.status.as_deref() != Some(word)
    });
    if !about_it {
        return Ok(());
    }
    Api::<ManagedApp>::namespaced(ctx.client.clone(), &src.app.namespace().unwrap_or_default())
        .patch_status(
            &src.app.name_any(),
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(serde_json::json!({"status": {"lastUpgrade": {"status": word}}})),
        )
        .await?;
    Ok(())
}

/// After the rollback has ended and nothing is left deleted, suspended or stopped: the upgrade
/// says it was rolled back, and the app how its last upgrade ended.
async fn finish(
    ctx: &Context,
    req: &RollbackRequest,
    src: &Source,
    status: &RollbackRequestStatus,
) -> Result<(), Error> {
    if req.spec.dry_run {
        return Ok(());
    }
    let succeeded = status.phase == Some(RollbackPhase::Succeeded);
    let upgrade_phase = src
        .upgrade
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    if succeeded && upgrade_phase != UpgradePhase::RolledBack {
        let message = format!("rolled back by RollbackRequest {}", req.name_any());
        Api::<UpgradeRequest>::namespaced(ctx.client.clone(), &req.namespace().unwrap_or_default())
            .patch_status(
                &src.upgrade.name_any(),
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(
                    serde_json::json!({"status": {"phase": UpgradePhase::RolledBack,
                    "message": message, "rollbackRef": {"name": req.name_any()}}}),
                ),
            )
            .await?;
    }
    let word = if succeeded {
        LastUpgrade::ROLLED_BACK
    } else {
        "RollbackFailed"
    };
    mark_app(ctx, src, word).await
}
