//! The operations' actions on the real API server, with owners: workloads stopped for a
//! snapshot and started again at their recorded size only by the request that stopped them, and
//! Flux objects held (suspended and marked) and released only by their holder — never what a
//! person suspended or scaled by hand.

use fluxup_api::flux::{GitRepository, HelmRelease, Kustomization, RECONCILE_REQUESTED_AT};
use fluxup_api::ownership::{HELD_BY_ANNOTATION, STOPPED_BY_ANNOTATION};
use fluxup_api::{Hold, StoppedWorkload, WorkloadReference};
use fluxup_operator::operation::holds::{self, Holder};
use fluxup_operator::operation::{flux, workloads};
use fluxup_sandbox::Sandbox;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::ResourceExt;
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
    let uid_web = deployments.get("web").await?.uid();
    let uid_db = stateful_sets.get("db").await?.uid();
    assert_eq!(
        recorded,
        [
            StoppedWorkload {
                kind: "Deployment".into(),
                name: "web".into(),
                replicas: 2,
                uid: uid_web,
            },
            StoppedWorkload {
                kind: "StatefulSet".into(),
                name: "db".into(),
                replicas: 1,
                uid: uid_db,
            },
        ]
    );
    let me = "3f2a9c1e-upgrade";
    workloads::stop(&sb.client, &ns, &recorded, me).await?;
    assert_eq!(
        deployments
            .get("web")
            .await?
            .annotations()
            .get(STOPPED_BY_ANNOTATION),
        Some(&me.to_string()),
        "the workload names who stopped it"
    );
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

    // Another request (or an old one) does not start what it did not stop.
    workloads::restart(&sb.client, &ns, &recorded, "someone-else").await?;
    assert!(workloads::all_stopped(&sb.client, &ns, &recorded).await?);
    assert!(workloads::any_held(&sb.client, &ns, &recorded, me).await?);

    workloads::restart(&sb.client, &ns, &recorded, me).await?;
    assert!(!workloads::all_stopped(&sb.client, &ns, &recorded).await?);
    assert!(!workloads::any_held(&sb.client, &ns, &recorded, me).await?);
    until("both running again", both_running).await?;

    // A person scales web to zero afterwards: the same request, run again (a restart of
    // FluxUp), leaves it at zero.
    deployments
        .patch_scale(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    workloads::restart(&sb.client, &ns, &recorded, me).await?;
    assert_eq!(
        deployments.get("web").await?.spec.and_then(|s| s.replicas),
        Some(0),
        "a person's scale to zero is kept"
    );
    // ... and a new request finds nothing of its own to stop there: web is left out.
    let again = workloads::record(&sb.client, &ns, &found, &[]).await?;
    assert_eq!(
        again.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["db"]
    );

    // Stopped by a request, then scaled up by a person meanwhile: their count stays, the mark
    // goes.
    workloads::stop(&sb.client, &ns, &again, me).await?;
    stateful_sets
        .patch_scale(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    workloads::restart(&sb.client, &ns, &again, me).await?;
    let db = stateful_sets.get("db").await?;
    assert_eq!(db.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert!(db.annotations().get(STOPPED_BY_ANNOTATION).is_none());
    Ok(())
}

#[tokio::test]
async fn flux_objects_are_held_and_released_only_by_their_holder() -> anyhow::Result<()> {
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
    sb.apply(
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "web"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "web",
                 "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}}),
    )
    .await?;
    let kustomizations: Api<Kustomization> = sb.api();
    let releases: Api<HelmRelease> = sb.api();
    let ks = Hold {
        kind: "Kustomization".into(),
        namespace: ns.clone(),
        name: "web".into(),
    };
    let hr = Hold {
        kind: "HelmRelease".into(),
        namespace: ns.clone(),
        name: "web".into(),
    };
    let (a, b) = ("uid-of-upgrade-a", "uid-of-upgrade-b");

    // A takes both; taking again changes nothing.
    for hold in [&ks, &hr] {
        assert_eq!(
            holds::take(&sb.client, hold, a, "UpgradeRequest x/a").await?,
            Holder::Me
        );
        assert_eq!(
            holds::take(&sb.client, hold, a, "UpgradeRequest x/a").await?,
            Holder::Me
        );
    }
    let k = kustomizations.get("web").await?;
    assert_eq!(k.spec.suspend, Some(true));
    assert_eq!(
        k.annotations().get(HELD_BY_ANNOTATION),
        Some(&a.to_string())
    );
    assert_eq!(releases.get("web").await?.spec.suspend, Some(true));

    // B cannot take or release what A holds.
    assert_eq!(
        holds::take(&sb.client, &ks, b, "UpgradeRequest x/b").await?,
        Holder::Operation("UpgradeRequest x/a".into())
    );
    assert!(!holds::release(&sb.client, &ks, b).await?);
    assert_eq!(kustomizations.get("web").await?.spec.suspend, Some(true));

    // A releases: resumed as `flux resume` does (the field removed), mark gone, nudged.
    for hold in [&ks, &hr] {
        assert!(holds::release(&sb.client, hold, a).await?);
        assert!(!holds::release(&sb.client, hold, a).await?, "once");
    }
    let k = kustomizations.get("web").await?;
    assert!(k.annotations().get(HELD_BY_ANNOTATION).is_none());
    assert!(k.annotations().contains_key(RECONCILE_REQUESTED_AT));
    assert_eq!(releases.get("web").await?.spec.suspend, None);
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
        "release removes the field, as flux resume does"
    );

    // A person suspends it (`flux suspend ks web`): FluxUp neither takes nor resumes it.
    kustomizations
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    assert_eq!(holds::observe(&sb.client, &ks, a).await?, Holder::Person);
    assert_eq!(
        holds::take(&sb.client, &ks, b, "UpgradeRequest x/b").await?,
        Holder::Person
    );
    assert!(!holds::release(&sb.client, &ks, a).await?);
    assert_eq!(kustomizations.get("web").await?.spec.suspend, Some(true));

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
