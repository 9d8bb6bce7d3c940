//! The upgrade's actions on the real API server: workloads stopped for a snapshot and started
//! again at their recorded size, and a Kustomization suspended, resumed and nudged the way the
//! `flux` CLI does it.

use fluxup_api::flux::{GitRepository, Kustomization, RECONCILE_REQUESTED_AT};
use fluxup_api::{StoppedWorkload, WorkloadReference};
use fluxup_operator::sandbox::Sandbox;
use fluxup_operator::upgrade::{flux, workloads};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn pod_template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": app, "image": format!("{app}:1.0.0")}]}})
}

async fn until(
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[tokio::test]
async fn workloads_stop_for_the_snapshot_and_come_back_at_their_size() -> anyhow::Result<()> {
    let sb = Sandbox::start("upgrade-workloads").await?;
    let ns = sb.ns().to_string();
    sb.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template("web")}}))
    .await?;
    sb.apply(
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": pod_template("db")}}),
    )
    .await?;
    let deployments: Api<Deployment> = sb.api();
    let stateful_sets: Api<StatefulSet> = sb.api();
    // web runs 2 pods and db 1, all ready.
    let both_running = async || {
        let d = deployments
            .get("web")
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let s = stateful_sets
            .get("db")
            .await?
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok(d == 2 && s == 1)
    };
    until("both running", both_running).await?;

    let found = [
        WorkloadReference {
            kind: "Deployment".into(),
            name: "web".into(),
            pvcs: vec![],
        },
        WorkloadReference {
            kind: "StatefulSet".into(),
            name: "db".into(),
            pvcs: vec![],
        },
    ];
    let recorded = workloads::record(&sb.client, &ns, &found, &[]).await?;
    assert_eq!(
        recorded,
        [
            StoppedWorkload {
                kind: "Deployment".into(),
                name: "web".into(),
                replicas: 2
            },
            StoppedWorkload {
                kind: "StatefulSet".into(),
                name: "db".into(),
                replicas: 1
            },
        ]
    );
    workloads::stop(&sb.client, &ns, &recorded).await?;
    until("no pods left", async || {
        workloads::all_stopped(&sb.client, &ns, &recorded)
            .await
            .map_err(Into::into)
    })
    .await?;

    // A restarted operator reads zero replicas now; the record it kept still says 2 and 1.
    assert_eq!(
        workloads::record(&sb.client, &ns, &found, &recorded).await?,
        recorded
    );

    workloads::restart(&sb.client, &ns, &recorded).await?;
    assert!(!workloads::all_stopped(&sb.client, &ns, &recorded).await?);
    until("both running again", both_running).await?;
    Ok(())
}

#[tokio::test]
async fn a_kustomization_is_suspended_resumed_and_nudged() -> anyhow::Result<()> {
    let sb = Sandbox::start("upgrade-flux").await?;
    let ns = sb.ns().to_string();
    sb.apply(
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "web"},
        "spec": {"interval": "10m", "prune": true, "path": "./apps/web",
                 "sourceRef": {"kind": "GitRepository", "name": "fleet"}}}),
    )
    .await?;
    sb.apply(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "fleet"}, "spec": {"interval": "10m", "url": "https://git.example.com/fleet"}}))
    .await?;
    let kustomizations: Api<Kustomization> = sb.api();

    flux::suspend(&sb.client, &ns, "web").await?;
    flux::suspend(&sb.client, &ns, "web").await?; // again: nothing changes
    assert!(flux::is_suspended(&kustomizations.get("web").await?));

    flux::resume(&sb.client, &ns, "web").await?;
    let k = kustomizations.get("web").await?;
    assert!(!flux::is_suspended(&k));
    let raw = Api::<DynamicObject>::namespaced_with(
        sb.client.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
        )),
    )
    .get("web")
    .await?;
    assert!(
        raw.data["spec"].get("suspend").is_none(),
        "resume removes the field, as flux resume does"
    );
    assert!(
        k.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT)
    );

    flux::fetch_now(&sb.client, &ns, "fleet").await?;
    let repo = Api::<GitRepository>::namespaced(sb.client.clone(), &ns)
        .get("fleet")
        .await?;
    assert!(
        repo.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(RECONCILE_REQUESTED_AT)
    );
    Ok(())
}
