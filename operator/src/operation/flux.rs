//! Nudging Flux the way the `flux` CLI does: a reconcile is requested with Flux's own
//! `reconcile.fluxcd.io/requestedAt` annotation instead of waiting for its interval. (Suspending
//! and resuming is [`super::holds`]: with an owner.)

use fluxup_api::flux::{GitRepository, RECONCILE_REQUESTED_AT};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Asks Flux to fetch a GitRepository now (after a commit, so the rollout does not wait for
/// its interval).
pub async fn fetch_now(client: &Client, namespace: &str, name: &str) -> kube::Result<()> {
    let patch = json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: Timestamp::now().to_string()}}});
    Api::<GitRepository>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// Asks Flux to fetch the GitRepository again if it handled the last request without getting
/// `commit` (a fetch can race the Git server's own update). Returns whether it asked.
pub async fn refetch_if_missed(
    client: &Client,
    namespace: &str,
    name: &str,
    commit: &str,
) -> kube::Result<bool> {
    let repo = Api::<GitRepository>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let status = repo.status.clone().unwrap_or_default();
    let has_commit = status
        .artifact
        .as_ref()
        .is_some_and(|a| a.revision.ends_with(commit));
    let requested = repo.annotations().get(RECONCILE_REQUESTED_AT);
    let handled =
        requested.is_some() && status.flux.last_handled_reconcile_at.as_ref() == requested;
    if has_commit || !handled {
        return Ok(false);
    }
    fetch_now(client, namespace, name).await?;
    Ok(true)
}
