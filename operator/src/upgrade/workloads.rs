//! Stopping the workloads that mount an app's volumes before its snapshot, and starting them
//! again. Replica counts are read and written through the `scale` subresource; what they were
//! is returned so the caller records it in the request's status before anything is stopped.

use fluxup_api::{StoppedWorkload, WorkloadReference};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

fn scale_patch(replicas: i32) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"spec": {"replicas": replicas}}))
}

async fn set_replicas(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    replicas: i32,
) -> kube::Result<()> {
    let params = PatchParams::default();
    match kind {
        "StatefulSet" => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &params, &scale_patch(replicas))
                .await?;
        }
        _ => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch_scale(name, &params, &scale_patch(replicas))
                .await?;
        }
    }
    Ok(())
}

async fn replicas(client: &Client, ns: &str, kind: &str, name: &str) -> kube::Result<(i32, i32)> {
    let (spec, running) = match kind {
        "StatefulSet" => {
            let s = Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get(name)
                .await?;
            (
                s.spec.and_then(|s| s.replicas).unwrap_or(1),
                s.status.map_or(0, |s| s.replicas),
            )
        }
        _ => {
            let d = Api::<Deployment>::namespaced(client.clone(), ns)
                .get(name)
                .await?;
            (
                d.spec.and_then(|s| s.replicas).unwrap_or(1),
                d.status.and_then(|s| s.replicas).unwrap_or(0),
            )
        }
    };
    Ok((spec, running))
}

/// What each workload runs now: the records to keep before stopping them. A workload already
/// recorded keeps its recorded count (after a restart it reads 0, which is FluxUp's doing).
pub async fn record(
    client: &Client,
    ns: &str,
    workloads: &[WorkloadReference],
    recorded: &[StoppedWorkload],
) -> kube::Result<Vec<StoppedWorkload>> {
    let mut out = Vec::new();
    for w in workloads {
        if let Some(r) = recorded
            .iter()
            .find(|r| r.kind == w.kind && r.name == w.name)
        {
            out.push(r.clone());
            continue;
        }
        let (spec, _) = replicas(client, ns, &w.kind, &w.name).await?;
        out.push(StoppedWorkload {
            kind: w.kind.clone(),
            name: w.name.clone(),
            replicas: spec,
        });
    }
    Ok(out)
}

/// Scales the recorded workloads to zero. Idempotent.
pub async fn stop(client: &Client, ns: &str, recorded: &[StoppedWorkload]) -> kube::Result<()> {
    for w in recorded {
        set_replicas(client, ns, &w.kind, &w.name, 0).await?;
    }
    Ok(())
}

/// Whether every recorded workload is at zero replicas with no pods left.
pub async fn all_stopped(
    client: &Client,
    ns: &str,
    recorded: &[StoppedWorkload],
) -> kube::Result<bool> {
    for w in recorded {
        if replicas(client, ns, &w.kind, &w.name).await? != (0, 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Scales the recorded workloads back to the replicas they had. Idempotent.
pub async fn restart(client: &Client, ns: &str, recorded: &[StoppedWorkload]) -> kube::Result<()> {
    for w in recorded {
        set_replicas(client, ns, &w.kind, &w.name, w.replicas).await?;
    }
    Ok(())
}
