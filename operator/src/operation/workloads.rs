//! Stopping the workloads that mount an app's volumes before its snapshot, and starting them
//! again — with an owner, as Flux objects are held. What each ran is recorded in the request's
//! status first; the workload is then marked with the request's uid
//! ([`STOPPED_BY_ANNOTATION`]) and scaled to zero through the `scale` subresource. Only the
//! request whose mark it carries starts it again, so a workload a person scales to zero later
//! stays at zero; and one a person scaled up meanwhile keeps their count.

use super::crash;
use fluxup_api::ownership::{STOPPED_BY_ANNOTATION, STOPPED_REPLICAS_ANNOTATION};
use fluxup_api::{StoppedWorkload, WorkloadReference};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// A workload as seen now: its uid, replicas asked for and running, and who stopped it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub uid: Option<String>,
    pub replicas: i32,
    pub running: i32,
    pub stopped_by: Option<String>,
}

async fn get(client: &Client, ns: &str, kind: &str, name: &str) -> kube::Result<Option<Seen>> {
    Ok(match kind {
        "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|s| Seen {
                uid: s.uid(),
                stopped_by: s.annotations().get(STOPPED_BY_ANNOTATION).cloned(),
                replicas: s.spec.and_then(|s| s.replicas).unwrap_or(1),
                running: s.status.map_or(0, |s| s.replicas),
            }),
        _ => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|d| Seen {
                uid: d.uid(),
                stopped_by: d.annotations().get(STOPPED_BY_ANNOTATION).cloned(),
                replicas: d.spec.and_then(|s| s.replicas).unwrap_or(1),
                running: d.status.and_then(|s| s.replicas).unwrap_or(0),
            }),
    })
}

async fn patch(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    body: serde_json::Value,
    scale: bool,
) -> kube::Result<()> {
    let params = PatchParams::default();
    let body = Patch::Merge(body);
    match (kind, scale) {
        ("StatefulSet", true) => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &params, &body)
                .await?;
        }
        ("StatefulSet", false) => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(name, &params, &body)
                .await?;
        }
        (_, true) => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch_scale(name, &params, &body)
                .await?;
        }
        (_, false) => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &params, &body)
                .await?;
        }
    }
    Ok(())
}

/// What each workload runs now: the records to write to status before stopping them. A
/// workload already recorded keeps its record (after a restart it reads 0, FluxUp's doing); a
/// workload already at zero that FluxUp did not stop is left out: there is nothing to stop, and
/// it is not FluxUp's to start later.
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
        let Some(seen) = get(client, ns, &w.kind, &w.name).await? else {
            continue;
        };
        if seen.replicas == 0 && seen.stopped_by.is_none() {
            continue;
        }
        out.push(StoppedWorkload {
            kind: w.kind.clone(),
            name: w.name.clone(),
            replicas: seen.replicas,
            uid: seen.uid,
        });
    }
    Ok(out)
}

/// Marks each recorded workload as stopped by `me` and scales it to zero. Idempotent; a
/// workload recreated under its name (another uid) is not touched.
pub async fn stop(
    client: &Client,
    ns: &str,
    recorded: &[StoppedWorkload],
    me: &str,
) -> kube::Result<()> {
    for w in recorded {
        let Some(seen) = get(client, ns, &w.kind, &w.name).await? else {
            continue;
        };
        if w.uid.is_some() && seen.uid != w.uid {
            continue;
        }
        if seen.stopped_by.as_deref() != Some(me) {
            let mark = json!({"metadata": {"annotations": {
                STOPPED_BY_ANNOTATION: me,
                STOPPED_REPLICAS_ANNOTATION: w.replicas.to_string(),
            }}});
            patch(client, ns, &w.kind, &w.name, mark, false).await?;
            crash::point("workload.mark");
        }
        if seen.replicas != 0 {
            patch(
                client,
                ns,
                &w.kind,
                &w.name,
                json!({"spec": {"replicas": 0}}),
                true,
            )
            .await?;
            crash::point("workload.scale-down");
        }
    }
    Ok(())
}

/// Whether every recorded workload is at zero replicas with no pods left (a workload that is
/// gone counts as stopped).
pub async fn all_stopped(
    client: &Client,
    ns: &str,
    recorded: &[StoppedWorkload],
) -> kube::Result<bool> {
    for w in recorded {
        if let Some(seen) = get(client, ns, &w.kind, &w.name).await?
            && (seen.replicas, seen.running) != (0, 0)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether any recorded workload still carries `me`'s mark: something left to start.
pub async fn any_held(
    client: &Client,
    ns: &str,
    recorded: &[StoppedWorkload],
    me: &str,
) -> kube::Result<bool> {
    for w in recorded {
        if let Some(seen) = get(client, ns, &w.kind, &w.name).await?
            && seen.stopped_by.as_deref() == Some(me)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Starts the workloads `me` stopped: each still at zero gets its recorded replicas back, then
/// loses the mark. One a person scaled meanwhile keeps their count (only the mark goes); one
/// without `me`'s mark is not touched. Idempotent.
pub async fn restart(
    client: &Client,
    ns: &str,
    recorded: &[StoppedWorkload],
    me: &str,
) -> kube::Result<()> {
    for w in recorded {
        let Some(seen) = get(client, ns, &w.kind, &w.name).await? else {
            continue;
        };
        if seen.stopped_by.as_deref() != Some(me) {
            continue;
        }
        if seen.replicas == 0 {
            let body = json!({"spec": {"replicas": w.replicas}});
            patch(client, ns, &w.kind, &w.name, body, true).await?;
            crash::point("workload.scale-up");
        }
        let unmark = json!({"metadata": {"annotations": {
            STOPPED_BY_ANNOTATION: null,
            STOPPED_REPLICAS_ANNOTATION: null,
        }}});
        patch(client, ns, &w.kind, &w.name, unmark, false).await?;
        crash::point("workload.unmark");
    }
    Ok(())
}
