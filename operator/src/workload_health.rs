//! How an app's Deployments and StatefulSets are doing: the ones Flux's helm-controller marks as
//! the HelmRelease's (it labels every object it applies with the release's name and namespace),
//! and the ones that mount the app's volumes. Ready means what `kubectl rollout status` waits
//! for: the controller has seen the latest spec, every replica is updated and ready. Pure.

use fluxup_api::{WorkloadHealth, WorkloadReference};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::ResourceExt;
use std::sync::Arc;

/// Labels helm-controller puts on every object of a release.
pub const RELEASE_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const RELEASE_NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";

/// Whether an object with these labels belongs to the HelmRelease `namespace/name`.
pub fn of_release(
    labels: &std::collections::BTreeMap<String, String>,
    ns: &str,
    name: &str,
) -> bool {
    labels.get(RELEASE_NAME_LABEL).map(String::as_str) == Some(name)
        && labels.get(RELEASE_NAMESPACE_LABEL).map(String::as_str) == Some(ns)
}

fn rolled_out(generation: Option<i64>, observed: Option<i64>) -> bool {
    observed.unwrap_or(0) >= generation.unwrap_or(0)
}

pub fn deployment(d: &Deployment) -> WorkloadHealth {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    WorkloadHealth {
        kind: "Deployment".into(),
        name: format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any()),
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        rolled_out: rolled_out(d.metadata.generation, status.observed_generation)
            && status.updated_replicas.unwrap_or(0) >= replicas,
    }
}

pub fn stateful_set(s: &StatefulSet) -> WorkloadHealth {
    let spec = s.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    // Pods of an OnDelete StatefulSet are updated only when a person deletes them; a rolling
    // update with a partition updates only the ordinals at or above it.
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete");
    let partition = strategy
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let status = s.status.clone().unwrap_or_default();
    let updated = on_delete || status.updated_replicas.unwrap_or(0) >= replicas - partition;
    WorkloadHealth {
        kind: "StatefulSet".into(),
        name: format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        rolled_out: rolled_out(s.metadata.generation, status.observed_generation) && updated,
    }
}

/// The app's workloads, by kind and name: those of the HelmRelease `release_ns/release` among
/// `deployments` and `stateful_sets` (read from the release's target namespace), and those in
/// `mounting` (the ones that mount the app's volumes, in `app_ns`).
pub fn of_app(
    (release_ns, release): (&str, &str),
    (app_ns, mounting): (&str, &[WorkloadReference]),
    deployments: &[Arc<Deployment>],
    stateful_sets: &[Arc<StatefulSet>],
) -> Vec<WorkloadHealth> {
    let wanted = |kind: &str, ns: Option<String>, name: String, labels: &_| {
        of_release(labels, release_ns, release)
            || (ns.as_deref() == Some(app_ns)
                && mounting.iter().any(|w| w.kind == kind && w.name == name))
    };
    let mut out: Vec<WorkloadHealth> = deployments
        .iter()
        .filter(|d| wanted("Deployment", d.namespace(), d.name_any(), d.labels()))
        .map(|d| deployment(d))
        .chain(
            stateful_sets
                .iter()
                .filter(|s| wanted("StatefulSet", s.namespace(), s.name_any(), s.labels()))
                .map(|s| stateful_set(s)),
        )
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(
        labels: serde_json::Value,
        spec: serde_json::Value,
        status: serde_json::Value,
    ) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "apps", "generation": 2, "labels": labels},
                "spec": spec, "status": status,
            }))
            .unwrap(),
        )
    }

    fn release_labels() -> serde_json::Value {
        json!({RELEASE_NAME_LABEL: "web", RELEASE_NAMESPACE_LABEL: "flux-apps"})
    }

    #[test]
    fn a_deployment_is_ready_when_every_replica_is_updated_and_ready() {
        let ready = deploy(
            release_labels(),
            json!({"replicas": 2, "selector": {}, "template": {}}),
            json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2}),
        );
        let w = deployment(&ready);
        assert!(w.is_ready());
        assert_eq!(w.describe(), "Deployment apps/web: 2 of 2 replicas ready");

        let one_down = deploy(
            release_labels(),
            json!({"replicas": 2, "selector": {}, "template": {}}),
            json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 1}),
        );
        assert!(!deployment(&one_down).is_ready());
        assert_eq!(
            deployment(&one_down).describe(),
            "Deployment apps/web: 1 of 2 replicas ready"
        );

        // Ready replicas of the old spec do not count as the new one rolled out.
        let stale = deploy(
            release_labels(),
            json!({"replicas": 1, "selector": {}, "template": {}}),
            json!({"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1}),
        );
        assert!(!deployment(&stale).is_ready());
        assert_eq!(
            deployment(&stale).describe(),
            "Deployment apps/web: its latest change is not rolled out yet"
        );

        // Scaled to zero (by a person, or by FluxUp for a snapshot): nothing is asked for.
        let zero = deploy(
            release_labels(),
            json!({"replicas": 0, "selector": {}, "template": {}}),
            json!({"observedGeneration": 2}),
        );
        assert!(deployment(&zero).is_ready());
    }

    #[test]
    fn a_stateful_set_with_a_partition_or_on_delete_waits_only_for_what_it_updates() {
        let sts = |strategy: serde_json::Value, updated: i32| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "db", "namespace": "apps", "generation": 3},
                "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "db",
                         "updateStrategy": strategy},
                "status": {"replicas": 3, "observedGeneration": 3, "updatedReplicas": updated,
                           "readyReplicas": 3},
            }))
            .unwrap()
        };
        assert!(!stateful_set(&sts(json!({"type": "RollingUpdate"}), 1)).is_ready());
        assert!(stateful_set(&sts(json!({"type": "RollingUpdate"}), 3)).is_ready());
        assert!(
            stateful_set(&sts(
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}),
                1
            ))
            .is_ready()
        );
        assert!(stateful_set(&sts(json!({"type": "OnDelete"}), 0)).is_ready());
    }

    #[test]
    fn the_apps_workloads_are_the_releases_and_those_mounting_its_volumes() {
        let spec = json!({"replicas": 1, "selector": {}, "template": {}});
        let status = json!({"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 1});
        let of_release = deploy(release_labels(), spec.clone(), status.clone());
        // Same name, another release: not the app's.
        let other_release = Arc::new({
            let mut d = (*deploy(
                json!({RELEASE_NAME_LABEL: "web", RELEASE_NAMESPACE_LABEL: "elsewhere"}),
                spec.clone(),
                status.clone(),
            ))
            .clone();
            d.metadata.name = Some("other".into());
            d
        });
        let unlabelled = Arc::new({
            let mut d = (*deploy(json!({}), spec, status)).clone();
            d.metadata.name = Some("worker".into());
            d
        });
        let mounting = [WorkloadReference {
            kind: "Deployment".into(),
            name: "worker".into(),
            pvcs: vec!["data".into()],
        }];
        let found = of_app(
            ("flux-apps", "web"),
            ("apps", &mounting),
            &[of_release, other_release, unlabelled],
            &[],
        );
        let names: Vec<&str> = found.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["apps/web", "apps/worker"]);
    }
}
