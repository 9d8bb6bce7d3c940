//! The RollbackRequest controller: observes, lets [`decide`] pick one step, records it in the
//! request's status, and performs it — as the upgrade controller does. A finalizer recreates any
//! claim it deleted, and releases what it holds, from what it recorded, if the request is
//! deleted mid-way.

use super::claims;
use super::decide::{Claim, Observed, Step, decide};
use crate::git::bump::{BumpError, HISTORY_DEPTH, Outcome, commit_version_bump};
use crate::git::message::{OPERATION_TRAILER, RevertMessage};
use crate::git::{self, GitBackend, GitError};
use crate::metrics::{self, Operation};
use crate::notify::{self, Kind, Notification};
use crate::operation::health;
use crate::operation::holds;
use crate::operation::plan::{self, Plan, version_edits};
use crate::operation::queue::{self, Member};
use crate::operation::release::{self, Release};
use crate::operation::{
    self, Context, Error, app_of, complete, crash, found_workloads, refetch_if_missed, since,
    steps, who, workloads,
};
use crate::upgrade::controller::flux_check;
use crate::{Scope, events, snapshots};
use fluxup_api::flux::HelmRelease;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{
    DryRunResult, LastUpgrade, ManagedApp, PreflightCheck, RestoredFrom, RollbackPhase,
    RollbackRequest, RollbackRequestStatus, UpgradePhase, UpgradeRequest,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "fluxup.dev/rollback";
const MANAGER: &str = <RollbackRequest as steps::Request>::MANAGER;

pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(
        scope.api::<RollbackRequest>(&client),
        watcher::Config::default().streaming_lists(),
    );
    let rollbacks = controller.store();
    let (upgrades, upgrade_events) =
        crate::caches::reflect::<UpgradeRequest>(scope.api(&client), true);
    // Retention is the upgrades' business: no snapshot cache here.
    let (snapshots, _) = reflector::store::<VolumeSnapshot>();
    // Which pods mount which claims: none FluxUp did not stop may use a claim it replaces.
    let (claim_users, pod_events) = crate::caches::reflect_claim_users(scope.api(&client));
    let ctx = Arc::new(Context::new(
        client.clone(),
        upgrades,
        rollbacks.clone(),
        snapshots,
        claim_users,
    ));
    let r5 = rollbacks.clone();
    steps::woken_by_changes(controller, &client, &scope, true)
        // A pod that goes may be the one a claim waits for.
        .watches_stream(pod_events, move |p: Pod| {
            let ns = p.namespace();
            r5.state()
                .iter()
                .filter(|r| r.namespace() == ns && !steps::Request::released(r.as_ref()))
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        // An upgrade that changes may be what a rollback waits for, or what it undoes.
        .watches_stream(upgrade_events, move |u: UpgradeRequest| {
            let ns = u.namespace();
            rollbacks
                .state()
                .iter()
                .filter(|r| r.namespace() == ns && !steps::Request::released(r.as_ref()))
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, steps::error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(req: Arc<RollbackRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
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
/// Identity is the uid: an upgrade recreated under the name the rollback recorded, or other
/// than the one that took the snapshot, is not the one to undo.
async fn source(req: &RollbackRequest, client: &Client) -> Result<Source, String> {
    let ns = req.namespace().unwrap_or_default();
    let recorded_uid = req
        .status
        .as_ref()
        .and_then(|s| s.restored_from.as_ref())
        .and_then(|r| r.upgrade_request_uid.clone());
    let (upgrade_name, snapshot_uid) = match (&req.spec.upgrade_request_ref, &req.spec.snapshot_ref)
    {
        (Some(u), _) => (u.name.clone(), None),
        (None, Some(s)) => {
            let snapshot = Api::<VolumeSnapshot>::namespaced(client.clone(), &ns)
                .get_opt(&s.name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("VolumeSnapshot {ns}/{} does not exist", s.name))?;
            let name = snapshot
                .labels()
                .get(snapshots::REQUEST_LABEL)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "VolumeSnapshot {} was not taken by a FluxUp upgrade (no {} label)",
                        s.name,
                        snapshots::REQUEST_LABEL
                    )
                })?;
            (
                name,
                snapshot.labels().get(snapshots::OPERATION_LABEL).cloned(),
            )
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
    let uid = upgrade.uid();
    if let Some(expected) = recorded_uid.or(snapshot_uid)
        && uid.as_deref() != Some(expected.as_str())
    {
        return Err(format!(
            "UpgradeRequest {ns}/{upgrade_name} is not the upgrade this rollback undoes (it was \
             deleted and created again)"
        ));
    }
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

/// Deleted mid-way: every claim it deleted comes back, what it holds is released — from what
/// it recorded alone; nothing else is touched.
async fn cleanup(req: &RollbackRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let me = req.uid().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    for (name, claim) in claims::observe(&ctx.client, &ns, &status.volumes).await? {
        let Some(v) = status
            .volumes
            .iter()
            .find(|v| v.pvc_name == name && !v.recreated)
        else {
            continue;
        };
        match claim {
            Claim::Missing => claims::create(&ctx.client, &ns, v, &me).await?,
            // Still going: letting go now would start the app (and a StatefulSet would make
            // an empty claim of that name) before the data is back. The finalizer stays until
            // the claim is gone and recreated.
            Claim::Deleting | Claim::HeldBySnapshot => {
                return Err(Error::Other(format!(
                    "claim {name} is still being deleted; it is recreated from {} once gone",
                    v.snapshot_name
                )));
            }
            Claim::Original | Claim::Restoring | Claim::Restored => {}
        }
    }
    steps::release_all(ctx, req, &status.holds, &status.stopped_workloads).await?;
    Ok(Action::await_change())
}

async fn observe(
    req: &RollbackRequest,
    src: Option<&Source>,
    ctx: &Context,
) -> Result<Observed, Error> {
    let ns = req.namespace().unwrap_or_default();
    let me = req.uid().unwrap_or_default();
    let status = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let app = src.map(|s| &s.app);
    let mut seen = Observed {
        health_timeout: crate::duration::or(
            app.and_then(|a| a.spec.health_check.as_ref())
                .and_then(|h| h.timeout.as_deref()),
            Duration::from_secs(300),
        ),
        claims_to_record: src.map_or(status.volumes.len(), |s| s.volumes.len()),
        in_phase: since(status.phase_started_at.as_ref()),
        ..Default::default()
    };

    if phase == RollbackPhase::Pending {
        seen.holds_to_record = app.map(holds::of_app).unwrap_or_default();
        seen.queue = queue::position(&Member::of_rollback(req), &ctx.queue_members());
    }
    seen.preflight = status.dry_run.as_ref().map(|d| {
        d.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| (c.name.clone(), c.message.clone().unwrap_or_default()))
            .collect()
    });

    if phase > RollbackPhase::Pending {
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

    if let Some(src) = src
        && !phase.is_terminal()
    {
        let names: Vec<String> = src.volumes.iter().map(|(_, s)| s.clone()).collect();
        seen.snapshots_unusable = snapshots_ready(&ctx.client, &ns, &names).await?.err();
    }
    seen.claims = claims::observe(&ctx.client, &ns, &status.volumes).await?;
    if phase == RollbackPhase::RestoringVolumes
        && seen.claims.iter().any(|(_, c)| *c == Claim::Original)
    {
        // A cache that has not seen every pod yet could miss one: wait for it first.
        ctx.claim_users
            .wait_until_ready()
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        seen.claim_users = claim_users(ctx, &ns, &status.volumes);
    }

    if phase == RollbackPhase::Reverting
        && let Some(src) = src
    {
        let (git, branch) = git::cluster::for_app(&ctx.client, &src.app).await?;
        seen.commit = git
            .find_commit(&branch, OPERATION_TRAILER, &me, HISTORY_DEPTH)
            .await
            .map_err(|e| Error::Other(e.to_string()))?
            .map(|c| c.sha);
    }
    if phase == RollbackPhase::StartingApp
        && let Some(src) = src
    {
        let hr_ns = src.app.helm_release_namespace().unwrap_or(&ns).to_string();
        let hr = Api::<HelmRelease>::namespaced(ctx.client.clone(), &hr_ns)
            .get(&src.app.spec.helm_release_ref.name)
            .await?;
        seen.release = release::state(&hr, &src.plan);
        if seen.release == Release::ReadyAtTarget {
            let checks = health::of_app(&ctx.client, &src.app).await?;
            seen.unhealthy = health::failed(&checks);
            seen.healthy = seen.unhealthy.is_empty();
        }
    }
    Ok(seen)
}

/// Pods that mount one of the claims and are not being deleted, from the pod cache: FluxUp
/// stopped the app's own workloads already, so these are someone else's, and their claim must
/// not be replaced.
fn claim_users(
    ctx: &Context,
    ns: &str,
    volumes: &[fluxup_api::RestoredVolume],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pod in ctx.claim_users.state() {
        if pod.namespace().as_deref() != Some(ns) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(claim) = &volume.persistent_volume_claim
                && volumes.iter().any(|v| v.pvc_name == claim.claim_name)
            {
                out.push((claim.claim_name.clone(), pod.name_any()));
            }
        }
    }
    out
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

/// Whether this upgrade was rolled back already: restoring its snapshots again would write old
/// data over what was written since.
fn already_rolled_back(req: &RollbackRequest, src: &Source, ctx: &Context) -> Option<String> {
    let upgrade_status = src.upgrade.status.clone().unwrap_or_default();
    if upgrade_status.phase == Some(UpgradePhase::RolledBack) {
        let by = upgrade_status
            .rollback_ref
            .map(|r| format!(" by RollbackRequest {}", r.name))
            .unwrap_or_default();
        return Some(format!(
            "UpgradeRequest {} was already rolled back{by}; its snapshots are older than what \
             the app has written since, so restoring them again would lose data",
            src.upgrade.name_any()
        ));
    }
    let uid = src.upgrade.uid();
    ctx.rollbacks
        .state()
        .iter()
        .filter(|r| r.uid() != req.uid() && !r.spec.dry_run)
        .find(|r| {
            let s = r.status.clone().unwrap_or_default();
            s.phase == Some(RollbackPhase::Succeeded)
                && s.restored_from.and_then(|f| f.upgrade_request_uid) == uid
        })
        .map(|r| {
            format!(
                "UpgradeRequest {} was already rolled back by RollbackRequest {}; restoring its \
                 snapshots again would lose what the app wrote since",
                src.upgrade.name_any(),
                r.name_any()
            )
        })
}

/// Who a rollback is done for: the person who asked, or, for the auto-rollback FluxUp created
/// itself (owned by the upgrade), the person who asked for that upgrade.
async fn requester(
    req: &RollbackRequest,
    src: &Source,
    client: &Client,
) -> Option<crate::references::Person> {
    let person = crate::references::person_of(&req.metadata);
    let by_fluxup = match (&person, crate::references::own_name(client).await) {
        (Some(p), Some(me)) => p.name == me,
        _ => false,
    };
    let owned = req
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == src.upgrade.metadata.uid.as_ref());
    if by_fluxup && owned {
        crate::references::person_of(&src.upgrade.metadata)
    } else {
        person
    }
}

/// The preflight checks, and the diff of the revert.
async fn preflight(req: &RollbackRequest, src: &Source, ctx: &Context, ns: &str) -> DryRunResult {
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
    let person = requester(req, src, &ctx.client).await;
    let references = crate::references::preflight(&ctx.client, &src.app, person.as_ref()).await;
    let refused = !references.passed;
    checks.push(references);
    if refused {
        return DryRunResult { checks, diff: None };
    }
    let again = already_rolled_back(req, src, ctx);
    checks.push(PreflightCheck {
        name: "once".into(),
        passed: again.is_none(),
        message: Some(again.unwrap_or_else(|| "the upgrade has not been rolled back".into())),
    });
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
    checks.push(
        flux_check(
            &ctx.client,
            &holds::of_app(&src.app),
            &req.uid().unwrap_or_default(),
        )
        .await,
    );
    let (git_check, result_diff) = plan::check_git(&ctx.client, &src.app, &src.plan).await;
    checks.push(git_check);
    DryRunResult {
        checks,
        diff: result_diff,
    }
}

async fn step(req: &RollbackRequest, ctx: &Context) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let me = req.uid().unwrap_or_default();
    let status: RollbackRequestStatus = req.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let gen_ = req.metadata.generation;
    let src = match source(req, &ctx.client).await {
        Ok(src) => Some(src),
        // Nothing to undo, or no longer known what: refuse before touching anything; once
        // started, the recorded status is enough to finish the clean-up.
        Err(why) if phase == RollbackPhase::Pending => {
            let message = format!("refused; nothing was changed: {why}");
            steps::record(ctx,
                req,
                "refuse",
                serde_json::json!({"phase": RollbackPhase::Failed, "message": message,
                    "releasedAt": if status.holds.is_empty() { Some(events::now_time()) } else { None },
                    "conditions": [complete("False", "PreflightFailed", &message, gen_)]}),
            )
            .await?;
            notify_failed(ctx, req, &message).await;
            ctx.event(req, "Rollback", true, "PreflightFailed", message)
                .await;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Rollback, "failed", age);
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        Err(why) => {
            tracing::info!(rollback = %req.name_any(), %why, "the upgrade or app it restores is gone");
            None
        }
    };
    let mut seen = observe(req, src.as_ref(), ctx).await?;
    if src.is_none() {
        seen.source_lost = Some(
            "the UpgradeRequest or ManagedApp this rollback restores was deleted (or replaced)"
                .into(),
        );
    }
    let next = decide(&req.spec, &status, &seen);
    tracing::info!(rollback = %format!("{ns}/{}", req.name_any()), phase = ?status.phase, step = ?next, "rollback step");
    let request = format!("{ns}/{}", req.name_any());
    if !req.spec.dry_run
        && phase != RollbackPhase::Pending
        && !phase.is_terminal()
        && let Some(src) = &src
    {
        mark_app(ctx, src, LastUpgrade::ROLLING_BACK).await?;
    }

    if status.phase.is_none()
        && let Some(src) = &src
    {
        let what = format!(
            "roll back {} (upgrade {})",
            src.app.name_any(),
            src.upgrade.name_any()
        );
        operation::requested(ctx, req, req.spec.dry_run, what).await;
    }

    match next {
        Step::RecordHolds(to_hold) => {
            let Some(src) = &src else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let from = RestoredFrom {
                snapshot_name: src.volumes.first().map(|(_, s)| s.clone()),
                snapshot_names: src.volumes.iter().map(|(_, s)| s.clone()).collect(),
                chart_version: src.plan.chart.clone(),
                upgrade_request_name: Some(src.upgrade.name_any()),
                upgrade_request_uid: src.upgrade.uid(),
            };
            steps::record(
                ctx,
                req,
                "record-holds",
                serde_json::json!({"holds": to_hold, "restoredFrom": from,
                "phase": RollbackPhase::Pending, "message": "queued"}),
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Queue(position) => steps::queue(ctx, req, position).await,
        Step::Enter(next_phase) => {
            if next_phase == RollbackPhase::Suspending
                && let Some(src) = &src
            {
                let message = format!(
                    "{} asked to roll back {}; FluxUp pauses Flux, restores the \
                    volumes and reverts the upgrade's commit",
                    who(&req.metadata),
                    src.app.name_any()
                );
                notify::send(
                    &ctx.client,
                    rollback_notification(Kind::RollbackStarted, req, src, message),
                );
            }
            let mut s = serde_json::json!({"phase": next_phase, "phaseStartedAt": events::now_time(),
                "observedGeneration": gen_, "message": format!("{next_phase:?}"), "queue": null});
            if next_phase == RollbackPhase::Suspending {
                s["startedAt"] = serde_json::to_value(events::now_time()).unwrap_or_default();
            }
            steps::record(ctx, req, &format!("enter.{next_phase:?}"), s).await?;
            ctx.event(
                req,
                "Rollback",
                false,
                &format!("{next_phase:?}"),
                format!(
                    "rollback of {} entered {next_phase:?}",
                    app_name(req, src.as_ref())
                ),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::RunPreflight => {
            let Some(src) = &src else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let result = preflight(req, src, ctx, &ns).await;
            steps::record(ctx, req, "preflight", serde_json::json!({"dryRun": result})).await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::FinishDryRun => steps::finish_dry_run(ctx, req, Operation::Rollback).await,
        Step::Take(hold) => steps::take(ctx, req, &hold).await,
        Step::StopWorkloads => {
            let found = src
                .as_ref()
                .map(|s| found_workloads(&s.app))
                .unwrap_or_default();
            steps::stop_workloads(
                ctx,
                req,
                &found,
                &status.stopped_workloads,
                "RestoringVolumes",
            )
            .await
        }
        Step::RecordClaims => {
            let Some(src) = &src else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
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
            steps::record(
                ctx,
                req,
                "record-claims",
                serde_json::json!({"volumes": volumes}),
            )
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::DeleteClaim(name) => {
            claims::delete(&ctx.client, &ns, &name).await?;
            crash::point("delete-claim");
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
                claims::create(&ctx.client, &ns, v, &me).await?;
                crash::point("create-claim");
                let volumes: Vec<_> = status
                    .volumes
                    .iter()
                    .cloned()
                    .map(|mut x| {
                        x.recreated |= x.pvc_name == name;
                        x
                    })
                    .collect();
                steps::record(
                    ctx,
                    req,
                    "record-recreated",
                    serde_json::json!({"volumes": volumes}),
                )
                .await?;
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
            let Some(src) = &src else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
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
                operation: me.clone(),
            }
            .render();
            let outcome = match commit_version_bump(
                &git,
                &branch,
                &version_edits(&src.plan),
                &message,
                &me,
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
            crash::point("push");
            let sha = match &outcome {
                Outcome::Committed(c) | Outcome::AlreadyCommitted(c) => Some(c.sha.clone()),
                Outcome::NothingToChange => None,
            };
            record_commit(ctx, req, sha).await
        }
        Step::RecordCommit(sha) => record_commit(ctx, req, Some(sha)).await,
        Step::Release(hold) => {
            let fetch_for = src
                .as_ref()
                .map(|s| &s.app)
                .filter(|_| phase == RollbackPhase::StartingApp);
            steps::release(ctx, req, &hold, fetch_for).await
        }
        Step::RestartWorkloads => steps::restart(ctx, req, &status.stopped_workloads).await,
        Step::Wait { why, recheck } => {
            if phase == RollbackPhase::StartingApp
                && let Some(src) = &src
            {
                refetch_if_missed(&ctx.client, &src.app, status.git_commit.as_deref()).await?;
            }
            steps::wait(ctx, req, why, recheck).await
        }
        Step::Fail { reason, message } => fail(ctx, req, reason, message).await,
        Step::Succeed => {
            let Some(src) = &src else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
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
            steps::record(
                ctx,
                req,
                "succeed",
                serde_json::json!({"phase": RollbackPhase::Succeeded, "message": message,
                "completedAt": events::now_time(),
                "conditions": [complete("True", "Succeeded", &message, gen_)]}),
            )
            .await?;
            notify::send(
                &ctx.client,
                rollback_notification(Kind::RollbackSucceeded, req, src, message.clone()),
            );
            ctx.event(req, "Rollback", false, "Succeeded", message)
                .await;
            let age = since(req.metadata.creation_timestamp.as_ref());
            metrics::ended(Operation::Rollback, "succeeded", age);
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Step::Done => {
            if let Some(src) = &src {
                finish(ctx, req, src, &status).await?;
            }
            steps::mark_released(ctx, req).await
        }
    }
}

fn app_name(req: &RollbackRequest, src: Option<&Source>) -> String {
    src.map(|s| s.app.name_any())
        .or_else(|| req.spec.managed_app_ref.as_ref().map(|a| a.name.clone()))
        .unwrap_or_else(|| "the app".into())
}

/// Records the revert commit (found after a crash, or made now) and enters StartingApp.
async fn record_commit(
    ctx: &Context,
    req: &RollbackRequest,
    sha: Option<String>,
) -> Result<Action, Error> {
    steps::record(
        ctx,
        req,
        "record-commit",
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
    steps::record(
        ctx,
        req,
        "fail",
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
    crash::point(&format!("mark-app-{word}"));
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
        crash::point("mark-upgrade-rolled-back");
    }
    let word = if succeeded {
        LastUpgrade::ROLLED_BACK
    } else {
        "RollbackFailed"
    };
    mark_app(ctx, src, word).await
}
