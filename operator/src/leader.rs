//! Runs the controllers while this process holds the `coordination.k8s.io` Lease, so that with
//! several replicas exactly one reconciles; the others wait and take over within the lease's
//! duration when it stops renewing.

use crate::Scope;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;

/// The Lease the replicas compete for (`FLUXUP_LEASE_NAME` names another, so that tests sharing
/// one namespace do not compete).
pub const LEASE_NAME: &str = "fluxup-controllers";

fn lease_name() -> String {
    std::env::var("FLUXUP_LEASE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| LEASE_NAME.into())
}
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;

/// The Lease's duration and renewal grace: 15 s and 5 s, or `FLUXUP_LEASE_SECONDS` (tests
/// that kill FluxUp many times shorten the wait for the dead holder's lease).
fn lease_timing() -> (u64, u64) {
    match std::env::var("FLUXUP_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s >= 2)
    {
        Some(seconds) => (seconds, (seconds / 3).max(1)),
        None => (LEASE_SECONDS, GRACE_SECONDS),
    }
}

/// Where the Lease lives: the pod's namespace when running in a cluster, else `default`.
pub fn lease_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Runs every controller until `shutdown` is cancelled, while holding the Lease; gives the Lease
/// up on the way out so another replica takes over at once.
pub async fn run_controllers(
    client: Client,
    scope: Scope,
    lease_namespace: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (lease_seconds, grace_seconds) = lease_timing();
    // The API server may not answer yet (or for a while): keep trying until it does.
    let manager = loop {
        match LeaseManagerBuilder::new(client.clone(), lease_name())
            .with_namespace(lease_namespace)
            .with_duration(lease_seconds)
            .with_grace(grace_seconds)
            .build()
            .await
        {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the Lease yet; retrying in 5 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tracing::info!(lease = %format!("{lease_namespace}/{LEASE_NAME}"), "waiting to lead");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = until(&mut leader, true) => changed?,
        }
        tracing::info!("leading: controllers start");
        let lost = CancellationToken::new();
        let stop = {
            let (shutdown, lost) = (shutdown.clone(), lost.clone());
            async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = lost.cancelled() => {}
                }
            }
        };
        let stop = futures::future::FutureExt::shared(Box::pin(stop));
        let controllers = futures::future::join4(
            crate::managed_app::run(client.clone(), scope.clone(), stop.clone()),
            crate::renovate_jobs::run(client.clone(), scope.clone(), stop.clone()),
            crate::upgrade::controller::run(client.clone(), scope.clone(), stop.clone()),
            crate::rollback::controller::run(client.clone(), scope.clone(), stop),
        );
        tokio::pin!(controllers);
        tokio::select! {
            _ = &mut controllers => {}
            _ = until(&mut leader, false) => {
                tracing::warn!("lost the lease: controllers stop");
                lost.cancel();
                controllers.await;
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Dropping the receiver makes the lease task release the Lease.
    drop(leader);
    lease_task.await??;
    tracing::info!("controllers stopped; lease released");
    Ok(())
}

/// Waits until leadership is `want`. (The watch guard is not Send: it must not live in a select.)
async fn until(
    leader: &mut tokio::sync::watch::Receiver<bool>,
    want: bool,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    leader.wait_for(|is| *is == want).await.map(|_| ())
}
