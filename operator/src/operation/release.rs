//! How a rollout is going: the HelmRelease at the versions of a plan (or failed at them), and
//! the app's workloads ready.

use super::found_workloads;
use super::plan::{Plan, PlannedEdit};
use crate::managed_app::resolve::without_flux_digest;
use crate::workload_health;
use fluxup_api::ManagedApp;
use fluxup_api::flux::HelmRelease;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{Api, Client, ResourceExt};

/// The HelmRelease after the commit, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Release {
    /// Not yet Ready at the target version for its current generation.
    #[default]
    NotYet,
    /// Ready at the target version.
    ReadyAtTarget,
    /// Flux gave up: why (its Ready condition's message).
    Failed(String),
}

/// Where the HelmRelease stands with respect to the versions of `plan`.
pub fn state(hr: &HelmRelease, plan: &Plan) -> Release {
    let hr_status = hr.status.clone().unwrap_or_default();
    let ready = hr_status
        .flux
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready");
    let at = hr_status
        .history
        .first()
        .map(|h| without_flux_digest(&h.chart_version).to_string());
    let current_generation = hr_status.flux.observed_generation == hr.metadata.generation;
    // Until Flux has applied the commit, the HelmRelease still describes the old version
    // and may be Ready (or failed) at it: only the target counts.
    let at_target = match &plan.chart {
        Some(chart) => at.as_ref() == Some(chart),
        None => release_has_values(hr, &plan.edits),
    };
    let attempted_target = plan.chart.is_none()
        || hr_status
            .last_attempted_revision
            .as_deref()
            .map(without_flux_digest)
            == plan.chart.as_deref();
    match ready {
        Some(c)
            if c.status == "False"
                && c.reason.contains("Failed")
                && current_generation
                && attempted_target =>
        {
            Release::Failed(c.message.clone())
        }
        Some(c) if c.status == "True" && current_generation && at_target => Release::ReadyAtTarget,
        _ => Release::NotYet,
    }
}

/// Whether the HelmRelease in the cluster carries the new values of the edits made to it (image
/// tags in `spec.values`), i.e. whether Flux has applied the commit to it.
fn release_has_values(hr: &HelmRelease, edits: &[PlannedEdit]) -> bool {
    let Ok(live) = serde_json::to_value(hr) else {
        return false;
    };
    edits.iter().filter(|e| e.kind == "HelmRelease").all(|e| {
        let pointer = format!("/{}", e.field.replace('.', "/"));
        live.pointer(&pointer).and_then(|v| v.as_str()) == Some(e.value.as_str())
    })
}

/// Whether every workload of the app is ready on its latest spec: those its status lists (the
/// ManagedApp controller finds the ones helm-controller labels as the HelmRelease's) and those
/// that mount the app's volumes. Each is read from the API server by name, not from a cache
/// and without a LIST: this decides an upgrade. `Ok(n)` when all `n` are ready, else the
/// first that is not, in words.
pub async fn workloads_ready(
    client: &Client,
    app: &ManagedApp,
) -> kube::Result<Result<usize, String>> {
    let app_ns = app.namespace().unwrap_or_default();
    let listed = app.status.iter().flat_map(|s| &s.workloads).map(|w| {
        let (ns, name) = w.name.split_once('/').unwrap_or((&app_ns, &w.name));
        (w.kind.clone(), ns.to_string(), name.to_string())
    });
    let mounting = found_workloads(app)
        .into_iter()
        .map(|w| (w.kind, app_ns.clone(), w.name));
    let mut all: Vec<(String, String, String)> = listed.chain(mounting).collect();
    all.sort();
    all.dedup();
    let mut ready = 0;
    for (kind, ns, name) in all {
        let health = match kind.as_str() {
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await?
                .map(|s| workload_health::stateful_set(&s)),
            _ => Api::<Deployment>::namespaced(client.clone(), &ns)
                .get_opt(&name)
                .await?
                .map(|d| workload_health::deployment(&d)),
        };
        // One the new version no longer has is not waited for.
        match health {
            Some(h) if !h.is_ready() => return Ok(Err(h.describe())),
            Some(_) => ready += 1,
            None => {}
        }
    }
    Ok(Ok(ready))
}
