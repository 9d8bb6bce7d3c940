//! The operation engine: what the upgrade and rollback controllers share — their error, how
//! they write status and Events, the `Complete` condition, the watch caches they read, and the
//! actions both take (hold Flux, stop workloads, queue, crash points), one module each.

pub mod crash;
pub mod flux;
pub mod health;
pub mod holds;
pub mod plan;
pub mod queue;
pub mod release;
pub mod steps;
pub mod verification;
pub mod workloads;

use crate::events;
use crate::git::GitError;
use fluxup_api::object_parts;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{Condition, ManagedApp, RollbackRequest, UpgradeRequest, condition};
use kube::api::{Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Git(String),
    #[error("{0}")]
    Other(String),
}

impl From<GitError> for Error {
    fn from(e: GitError) -> Self {
        Error::Git(e.to_string())
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    /// Keeps the step's own error (and so its category) instead of the finalizer's wrapping.
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as Finalizer;
        match e {
            Finalizer::ApplyFailed(e) | Finalizer::CleanupFailed(e) => e,
            Finalizer::AddFinalizer(e) | Finalizer::RemoveFinalizer(e) => Error::Kube(e),
            other => Error::Other(other.to_string()),
        }
    }
}

/// The span of one reconcile of an UpgradeRequest or RollbackRequest: every log line in it
/// (JSON logs show the span's fields) carries the request's uid as `operation`, the same for
/// every step and across restarts, and `request` as namespace/name.
pub fn span<K: Resource<DynamicType = ()>>(request: &K) -> tracing::Span {
    let meta = request.meta();
    tracing::info_span!(
        "operation",
        kind = %K::kind(&()),
        operation = meta.uid.as_deref().unwrap_or_default(),
        request = %format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        ),
    )
}

impl Error {
    /// The `category` label of `fluxup_reconcile_errors_total`.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(e) => crate::metrics::kube_category(e),
            Error::Git(_) => "git",
            Error::Other(_) => crate::metrics::OTHER,
        }
    }
}

/// A controller's client, Event recorder and the watch caches of both kinds of request (for
/// the queue) and of FluxUp's snapshots (for retention).
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub upgrades: Store<UpgradeRequest>,
    pub rollbacks: Store<RollbackRequest>,
    pub snapshots: Store<VolumeSnapshot>,
    /// Which pods mount which claims (rollbacks only; empty for upgrades).
    pub claim_users: Store<k8s_openapi::api::core::v1::Pod>,
}

impl Context {
    pub fn new(
        client: Client,
        upgrades: Store<UpgradeRequest>,
        rollbacks: Store<RollbackRequest>,
        snapshots: Store<VolumeSnapshot>,
        claim_users: Store<k8s_openapi::api::core::v1::Pod>,
    ) -> Self {
        Context {
            recorder: events::recorder(&client),
            client,
            upgrades,
            rollbacks,
            snapshots,
            claim_users,
        }
    }
}

impl Context {
    /// Every request in the queue, of both kinds, from the caches.
    pub fn queue_members(&self) -> Vec<queue::Member> {
        self.upgrades
            .state()
            .iter()
            .map(|r| queue::Member::of_upgrade(r))
            .chain(
                self.rollbacks
                    .state()
                    .iter()
                    .map(|r| queue::Member::of_rollback(r)),
            )
            .collect()
    }

    /// Records part of `object`'s status. A merge patch, not an apply: each step writes only
    /// what it learned, and an apply would drop the fields the previous step wrote.
    pub async fn write_status<K>(
        &self,
        manager: &str,
        object: &K,
        status: serde_json::Value,
    ) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        Api::<K>::namespaced(self.client.clone(), &object.namespace().unwrap_or_default())
            .patch_status(
                &object.name_any(),
                &PatchParams {
                    field_manager: Some(manager.into()),
                    ..Default::default()
                },
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await?;
        Ok(())
    }

    /// Publishes an Event about `object`.
    pub async fn event<K>(
        &self,
        object: &K,
        action: &str,
        warning: bool,
        reason: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        events::publish(
            &self.recorder,
            &object.object_ref(&()),
            warning,
            action,
            reason,
            &note,
        )
        .await;
    }
}

/// Who asked for an operation, for Events: the user the API server recorded on the request
/// (`config/admission`), else "someone".
pub fn who(meta: &kube::api::ObjectMeta) -> String {
    crate::notify::requested_by(meta).unwrap_or_else(|| "someone".into())
}

/// Reads the ManagedApp an operation is about, for a notification sent where the caller does
/// not have it at hand. `None` when it cannot be read: the notification is skipped, not the
/// operation.
pub async fn app_of(client: &Client, namespace: &str, name: &str) -> Option<ManagedApp> {
    Api::<ManagedApp>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .ok()
}

/// Records the Event of a person's action: "alice asked to <what>", noting a dry run. Sent on
/// a request's first step.
pub async fn requested<K>(ctx: &Context, request: &K, dry_run: bool, what: String)
where
    K: Resource<DynamicType = ()>,
{
    let dry = if dry_run { " (dry run)" } else { "" };
    let note = format!("{} asked to {what}{dry}", who(request.meta()));
    ctx.event(request, "Request", false, "Requested", note)
        .await;
}

/// Time since `at` (a creation or phase start); zero when unknown.
pub fn since(at: Option<&fluxup_api::Time>) -> std::time::Duration {
    let secs = at.map_or(0, |t| {
        k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second()
    });
    std::time::Duration::from_secs(secs.max(0) as u64)
}

/// The `Complete` condition of a request.
pub fn complete(status: &str, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: condition::COMPLETE.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: events::now_time(),
    }
}

/// `GitRepository/namespace/name` of the Flux source the app's Kustomization follows.
pub fn git_source(app: &ManagedApp) -> Option<String> {
    app.status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .and_then(|r| r.git_source.clone())
}

/// The workloads that mount the app's volumes, as the ManagedApp controller found them.
pub fn found_workloads(app: &ManagedApp) -> Vec<fluxup_api::WorkloadReference> {
    app.status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .map(|r| r.workloads.clone())
        .unwrap_or_default()
}

/// The claims an upgrade of `app` snapshots: `volumeSnapshots.pvcs`, or when that is empty,
/// the ones the ManagedApp controller found for the release (`status.resolved.pvcs`). None
/// when snapshots are off.
pub fn snapshot_claims(app: &ManagedApp) -> Vec<String> {
    let Some(policy) = app.spec.volume_snapshots.as_ref().filter(|v| v.enabled) else {
        return Vec::new();
    };
    if !policy.pvcs.is_empty() {
        return policy.pvcs.iter().map(|p| p.name.clone()).collect();
    }
    app.status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .filter(|r| r.pvcs_found)
        .map(|r| r.pvcs.clone())
        .unwrap_or_default()
}

/// Asks Flux to fetch the app's Git source now, before its Kustomization is released, so the
/// rollout of a commit does not wait for the source's interval.
pub async fn fetch_source(client: &Client, app: &ManagedApp) -> kube::Result<()> {
    if let Some(source) = git_source(app) {
        let (_, ns, name) = object_parts(&source);
        flux::fetch_now(client, ns, name).await?;
    }
    Ok(())
}

/// While waiting for Flux to roll `commit` out: asks for the fetch again if Flux handled the
/// last request without getting the commit.
pub async fn refetch_if_missed(
    client: &Client,
    app: &ManagedApp,
    commit: Option<&str>,
) -> kube::Result<()> {
    if let (Some(commit), Some(source)) = (commit, git_source(app)) {
        let (_, ns, name) = object_parts(&source);
        flux::refetch_if_missed(client, ns, name, commit).await?;
    }
    Ok(())
}
