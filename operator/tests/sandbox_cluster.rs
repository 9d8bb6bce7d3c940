//! The sandbox is a working cluster, not only an API server: controller-manager, scheduler and
//! kwok make Deployments available, scale StatefulSets and finish namespace deletion.

use fluxup_sandbox::Sandbox;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn pod_template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "registry.invalid/app:1.0.0"}]
        }
    })
}

async fn wait_for<K, C>(api: Api<K>, name: &str, what: &str, condition: C)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    tokio::time::timeout(WAIT, await_condition(api, name, condition))
        .await
        .unwrap_or_else(|_| panic!("{name}: {what} not reached within {WAIT:?}"))
        .unwrap();
}

#[tokio::test]
async fn deployment_becomes_available() {
    let sandbox = Sandbox::start("deployment-available").await.unwrap();
    let deployments: Api<Deployment> = sandbox.api();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": pod_template("web")}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let available = |d: Option<&Deployment>| {
        let status = d.and_then(|d| d.status.as_ref());
        let is_available = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
            });
        is_available && status.and_then(|s| s.ready_replicas) == Some(2)
    };
    wait_for(
        deployments,
        "web",
        "Available with 2 ready replicas",
        available,
    )
    .await;

    let pods: Api<Pod> = sandbox.api();
    let pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for pod in pods.items {
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
        assert!(
            pod.spec.unwrap().node_name.is_some(),
            "the scheduler bound the pod to a node"
        );
    }
}

#[tokio::test]
async fn statefulset_scales_up() {
    let sandbox = Sandbox::start("statefulset-scales").await.unwrap();
    let sets: Api<StatefulSet> = sandbox.api();
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": pod_template("db")}
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let ready = |n: i32| {
        move |s: Option<&StatefulSet>| s.and_then(|s| s.status.as_ref()?.ready_replicas) == Some(n)
    };
    wait_for(sets.clone(), "db", "1 ready replica", ready(1)).await;

    let scale = json!({"spec": {"replicas": 3}});
    sets.patch_scale("db", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    wait_for(sets.clone(), "db", "3 ready replicas", ready(3)).await;

    let pods: Api<Pod> = sandbox.api();
    for ordinal in 0..3 {
        pods.get(&format!("db-{ordinal}")).await.unwrap();
    }
}

#[tokio::test]
async fn namespace_deletion_completes() {
    let sandbox = Sandbox::start("namespace-deletion").await.unwrap();
    let namespaces: Api<Namespace> = Api::all(sandbox.client.clone());
    let name = format!("{}-doomed", sandbox.ns());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // The ServiceAccount admission plugin wants the namespace's default ServiceAccount first.
    let accounts: Api<ServiceAccount> = Api::namespaced(sandbox.client.clone(), &name);
    wait_for(
        accounts,
        "default",
        "default ServiceAccount",
        |s: Option<&ServiceAccount>| s.is_some(),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(sandbox.client.clone(), &name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main", "image": "registry.invalid/w:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        namespaces,
        &name,
        "namespace gone",
        |n: Option<&Namespace>| n.is_none(),
    )
    .await;
}

/// Flux's and the CSI snapshot CRDs from their upstream modules are served, so FluxUp's typed
/// views of those kinds work against them.
#[tokio::test]
async fn flux_and_snapshot_kinds_are_served() {
    use fluxup_api::flux::{
        GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository,
    };
    use fluxup_api::snapshot::{VolumeSnapshot, VolumeSnapshotClass};
    use kube::api::ListParams;

    let sandbox = Sandbox::start("upstream-crds").await.unwrap();
    let lp = ListParams::default();
    sandbox.api::<HelmRelease>().list(&lp).await.unwrap();
    sandbox.api::<Kustomization>().list(&lp).await.unwrap();
    sandbox.api::<GitRepository>().list(&lp).await.unwrap();
    sandbox.api::<HelmRepository>().list(&lp).await.unwrap();
    sandbox.api::<OCIRepository>().list(&lp).await.unwrap();
    sandbox.api::<VolumeSnapshot>().list(&lp).await.unwrap();
    Api::<VolumeSnapshotClass>::all(sandbox.client.clone())
        .list(&lp)
        .await
        .unwrap();

    // A HelmRelease written the common way (chartRef to an OCIRepository), with fields FluxUp's
    // view does not name (interval), reads back typed.
    let release: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "podinfo"},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "podinfo"},
                 "values": {"image": {"tag": "6.7.1@sha256:0123"}}}
    }))
    .unwrap();
    let resource = kube::api::ApiResource::erase::<HelmRelease>(&());
    Api::<kube::api::DynamicObject>::namespaced_with(
        sandbox.client.clone(),
        sandbox.ns(),
        &resource,
    )
    .create(&PostParams::default(), &release)
    .await
    .unwrap();
    let releases = sandbox.api::<HelmRelease>();
    let stored = releases.get("podinfo").await.unwrap();
    assert_eq!(stored.spec.chart_ref.unwrap().kind, "OCIRepository");
    assert_eq!(
        stored.spec.values.unwrap()["image"]["tag"],
        "6.7.1@sha256:0123"
    );
}
