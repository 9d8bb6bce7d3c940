//! The steps upgrades and rollbacks take the same way, whatever their kind: recording progress
//! (then passing the step's crash point), waiting in the queue, taking and releasing a hold,
//! starting stopped workloads, waiting. Each controller's `step` dispatches to these.

use super::{Context, Error, crash, fetch_source, holds, queue, workloads};
use crate::Scope;
use crate::caches::changes;
use fluxup_api::flux::HelmRelease;
use fluxup_api::{Hold, ManagedApp, QueuePosition, StoppedWorkload};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

/// A request either controller reconciles, as the shared steps see it.
pub trait Request:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
    /// `UpgradeRequest` or `RollbackRequest`.
    const KIND: &'static str;
    /// The field manager of its status writes.
    const MANAGER: &'static str;
    /// `upgrade` or `rollback`: the controller's name in logs, metrics and crash points.
    const WORD: &'static str;
    /// The message its status shows now.
    fn message(&self) -> Option<&str>;
    /// Its queue position as recorded.
    fn queue(&self) -> Option<&QueuePosition>;
    /// What it recorded it holds.
    fn holds(&self) -> &[Hold];
    /// It has ended and let everything go: FluxUp never acts for it again.
    fn released(&self) -> bool;
}

impl Request for fluxup_api::UpgradeRequest {
    const KIND: &'static str = "UpgradeRequest";
    const MANAGER: &'static str = "fluxup-upgrade";
    const WORD: &'static str = "upgrade";
    fn holds(&self) -> &[Hold] {
        self.status.as_ref().map_or(&[], |s| s.holds.as_slice())
    }
    fn released(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.released_at.is_some())
    }
    fn message(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.message.as_deref())
    }
    fn queue(&self) -> Option<&QueuePosition> {
        self.status.as_ref().and_then(|s| s.queue.as_ref())
    }
}

impl Request for fluxup_api::RollbackRequest {
    const KIND: &'static str = "RollbackRequest";
    const MANAGER: &'static str = "fluxup-rollback";
    const WORD: &'static str = "rollback";
    fn holds(&self) -> &[Hold] {
        self.status.as_ref().map_or(&[], |s| s.holds.as_slice())
    }
    fn released(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.released_at.is_some())
    }
    fn message(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.message.as_deref())
    }
    fn queue(&self) -> Option<&QueuePosition> {
        self.status.as_ref().and_then(|s| s.queue.as_ref())
    }
}

/// The shell of a reconcile: the finalizer, the rule that a released request never acts
/// again, the span every log line of the operation carries, and the crash points' scope.
pub async fn reconcile<K, S, SF, C, CF>(
    req: Arc<K>,
    ctx: &Context,
    finalizer_name: &str,
    step: S,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Request + serde::Serialize + Send + Sync + 'static,
    S: FnOnce(Arc<K>) -> SF,
    SF: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: Future<Output = Result<Action, Error>>,
{
    let ns = req.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let span = super::span(req.as_ref());
    let work = finalizer(&api, finalizer_name, req, |event| async {
        match event {
            // A finished request never acts again: what it held is released, and what is
            // suspended or stopped now is someone else's doing.
            Finalizer::Apply(req) | Finalizer::Cleanup(req) if req.released() => {
                Ok(Action::await_change())
            }
            Finalizer::Apply(req) => step(req).await,
            Finalizer::Cleanup(req) => cleanup(req).await,
        }
    });
    crash::scope(K::WORD, ns, work.instrument(span))
        .await
        .map_err(Error::from)
}

/// A failed step: counted, logged, tried again after 10 s.
pub fn error_policy<K: Request>(req: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(request = %req.name_any(), %error, "{} step failed; retrying in 10 s", K::WORD);
    crate::metrics::reconcile_error(K::WORD, error.category());
    Action::requeue(Duration::from_secs(10))
}

/// The controller for `K`, woken when what its requests wait for changes: the HelmRelease they
/// hold, the workloads (and, with `claims`, the claims) of their namespace. Metadata-only
/// watches: nothing of those objects is kept.
pub fn woken_by_changes<K>(
    controller: Controller<K>,
    client: &Client,
    scope: &Scope,
    claims: bool,
) -> Controller<K>
where
    K: Request + Send + Sync + 'static,
{
    let store = controller.store();
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store);
    let controller = controller
        .watches_stream(changes::<HelmRelease>(client, scope), move |hr| {
            let ns = hr.namespace();
            holding(&s1, ("HelmRelease", ns.as_deref(), &hr.name_any()))
        })
        .watches_stream(changes::<Deployment>(client, scope), move |d| {
            unreleased_in(&s2, d.namespace().as_deref())
        })
        .watches_stream(changes::<StatefulSet>(client, scope), move |s| {
            unreleased_in(&s3, s.namespace().as_deref())
        });
    if claims {
        controller.watches_stream(changes::<PersistentVolumeClaim>(client, scope), move |c| {
            unreleased_in(&s4, c.namespace().as_deref())
        })
    } else {
        controller
    }
}

/// The requests in `namespace` that have not released what they hold.
fn unreleased_in<K: Request>(store: &Store<K>, namespace: Option<&str>) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|r| r.meta().namespace.as_deref() == namespace && !r.released())
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// The requests that recorded a hold on `kind` `namespace/name` and have not released it.
fn holding<K: Request>(
    store: &Store<K>,
    (kind, namespace, name): (&str, Option<&str>, &str),
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|r| {
            !r.released()
                && r.holds().iter().any(|h| {
                    h.kind == kind && Some(h.namespace.as_str()) == namespace && h.name == name
                })
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Records part of the request's status, then passes the crash point named after the step.
pub async fn record<K: Request>(
    ctx: &Context,
    req: &K,
    point: &str,
    status: serde_json::Value,
) -> Result<(), Error> {
    ctx.write_status(K::MANAGER, req, status).await?;
    crash::point(point);
    Ok(())
}

/// Shows where the request waits in the queue (only when that changed), and looks again soon.
pub async fn queue<K: Request>(
    ctx: &Context,
    req: &K,
    position: QueuePosition,
) -> Result<Action, Error> {
    let why = format!(
        "waiting for {}: one operation at a time per Flux object (position {} in the queue)",
        position.ahead.first().cloned().unwrap_or_default(),
        position.position
    );
    if req.queue() != Some(&position) || req.message() != Some(why.as_str()) {
        record(
            ctx,
            req,
            "queue",
            serde_json::json!({"queue": position, "message": why}),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(3)))
}

/// Takes one hold for the request; says why not when someone else holds it.
pub async fn take<K: Request>(ctx: &Context, req: &K, hold: &Hold) -> Result<Action, Error> {
    let me = req.uid().unwrap_or_default();
    let holder = holds::take(&ctx.client, hold, &me, &queue::describe(K::KIND, req)).await?;
    if let Some(why) = holder.refusal(hold) {
        record(
            ctx,
            req,
            "take-refused",
            serde_json::json!({"message": format!("waiting: {why}")}),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(3)));
    }
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Releases one hold of the request. Before a Kustomization lets Flux apply a commit again
/// (`fetch_for`), the app's Git source is asked to fetch it.
pub async fn release<K: Request>(
    ctx: &Context,
    req: &K,
    hold: &Hold,
    fetch_for: Option<&ManagedApp>,
) -> Result<Action, Error> {
    if hold.kind == "Kustomization"
        && let Some(app) = fetch_for
    {
        fetch_source(&ctx.client, app).await?;
    }
    holds::release(&ctx.client, hold, &req.uid().unwrap_or_default()).await?;
    Ok(Action::requeue(Duration::from_millis(500)))
}

/// Records what each workload on the app's volumes runs, then marks and stops them. With
/// nothing to stop, the request enters `next` (the phase after stopping) at once.
pub async fn stop_workloads<K: Request>(
    ctx: &Context,
    req: &K,
    found: &[fluxup_api::WorkloadReference],
    recorded: &[StoppedWorkload],
    next: &str,
) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    let now = workloads::record(&ctx.client, &ns, found, recorded).await?;
    if now.is_empty() {
        record(
            ctx,
            req,
            &format!("enter.{next}"),
            serde_json::json!({"phase": next, "phaseStartedAt": crate::events::now_time(),
                "message": "nothing runs on the app's volumes"}),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if now != recorded {
        record(
            ctx,
            req,
            "record-workloads",
            serde_json::json!({"stoppedWorkloads": now}),
        )
        .await?;
    }
    workloads::stop(&ctx.client, &ns, &now, &req.uid().unwrap_or_default()).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Starts the workloads the request stopped.
pub async fn restart<K: Request>(
    ctx: &Context,
    req: &K,
    stopped: &[StoppedWorkload],
) -> Result<Action, Error> {
    let ns = req.namespace().unwrap_or_default();
    workloads::restart(&ctx.client, &ns, stopped, &req.uid().unwrap_or_default()).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// The dry run is over: every check passed and nothing was changed. (`Succeeded` is the word
/// of both kinds' phases.)
pub async fn finish_dry_run<K: Request>(
    ctx: &Context,
    req: &K,
    operation: crate::metrics::Operation,
) -> Result<Action, Error> {
    let message = "dry run: every check passed; nothing was changed";
    ctx.write_status(
        K::MANAGER,
        req,
        serde_json::json!({"phase": "Succeeded", "message": message,
        "releasedAt": crate::events::now_time(),
        "conditions": [super::complete("True", "DryRun", message, req.meta().generation)]}),
    )
    .await?;
    let age = super::since(req.meta().creation_timestamp.as_ref());
    crate::metrics::ended(operation, "dry_run", age);
    Ok(Action::await_change())
}

/// The request has ended and let everything go: from now on FluxUp never acts for it.
pub async fn mark_released<K: Request>(ctx: &Context, req: &K) -> Result<Action, Error> {
    record(
        ctx,
        req,
        "released",
        serde_json::json!({"releasedAt": crate::events::now_time()}),
    )
    .await?;
    Ok(Action::await_change())
}

/// Says what the request waits for (only when that changed), and looks again after `recheck`.
pub async fn wait<K: Request>(
    ctx: &Context,
    req: &K,
    why: String,
    recheck: Duration,
) -> Result<Action, Error> {
    if req.message() != Some(why.as_str()) {
        ctx.write_status(K::MANAGER, req, serde_json::json!({"message": why}))
            .await?;
    }
    Ok(Action::requeue(recheck))
}

/// Deleted mid-way: what the request holds is released, from what it recorded alone.
pub async fn release_all<K: Request>(
    ctx: &Context,
    req: &K,
    held: &[Hold],
    stopped: &[StoppedWorkload],
) -> Result<(), Error> {
    let me = req.uid().unwrap_or_default();
    for hold in held {
        holds::release(&ctx.client, hold, &me).await?;
    }
    let ns = req.namespace().unwrap_or_default();
    workloads::restart(&ctx.client, &ns, stopped, &me).await?;
    Ok(())
}
