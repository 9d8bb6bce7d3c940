//! The permissions FluxUp's controllers need, as the single source of `config/rbac/`.
//!
//! Least privilege: each rule names the kinds and verbs a controller uses, and why.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::ObjectMeta;

/// Name of the ClusterRole bound to FluxUp's ServiceAccount.
pub const CONTROLLER_ROLE: &str = "fluxup-controller";
/// Name of the Role FluxUp uses for leader election in its own namespace.
pub const LEADER_ELECTION_ROLE: &str = "fluxup-leader-election";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const READ_PATCH: &[&str] = &["get", "list", "watch", "patch", "update"];

/// The cluster-wide permissions of FluxUp's controllers and server.
pub fn controller_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(CONTROLLER_ROLE.into()),
            labels: Some([("app.kubernetes.io/name".to_string(), "fluxup".to_string())].into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            // Our own resources: reconcile them, write status, hold finalizers, and create
            // RollbackRequests for auto-rollback.
            rule(
                &["fluxup.dev"],
                &["managedapps", "upgraderequests", "rollbackrequests"],
                &["get", "list", "watch", "create", "patch", "update"],
            ),
            rule(
                &["fluxup.dev"],
                &[
                    "managedapps/status",
                    "upgraderequests/status",
                    "rollbackrequests/status",
                    "upgraderequests/finalizers",
                    "rollbackrequests/finalizers",
                ],
                &["get", "patch", "update"],
            ),
            // Flux: read releases and sources; hold (suspend, mark, resume) Kustomizations and
            // HelmReleases, and nudge sources with `reconcile.fluxcd.io/requestedAt`.
            rule(&["helm.toolkit.fluxcd.io"], &["helmreleases"], READ_PATCH),
            rule(
                &["kustomize.toolkit.fluxcd.io"],
                &["kustomizations"],
                READ_PATCH,
            ),
            rule(
                &["source.toolkit.fluxcd.io"],
                &["gitrepositories"],
                READ_PATCH,
            ),
            rule(
                &["source.toolkit.fluxcd.io"],
                &["helmrepositories", "ocirepositories", "helmcharts"],
                READ,
            ),
            // Snapshots before an upgrade, retention, and restore on rollback.
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshots"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshotclasses"],
                READ,
            ),
            // PVCs: find the app's volumes; recreate them from a snapshot on rollback.
            rule(
                &[""],
                &["persistentvolumeclaims"],
                &["get", "list", "watch", "create", "delete", "patch"],
            ),
            // Workloads that mount the PVCs: scale to zero for a consistent snapshot and back.
            rule(&["apps"], &["deployments", "statefulsets"], READ_PATCH),
            rule(
                &["apps"],
                &["deployments/scale", "statefulsets/scale"],
                &["get", "patch", "update"],
            ),
            rule(&[""], &["pods"], READ),
            // Renovate's finished Jobs and their logs are the source of available updates; a Job
            // read is annotated fluxup.dev/ingested.
            rule(&["batch"], &["jobs"], READ_PATCH),
            rule(&[""], &["pods/log"], &["get"]),
            // Git credentials and notification settings.
            rule(&[""], &["secrets", "configmaps"], READ),
            // Events for every phase change and user action.
            rule(&[""], &["events"], &["create", "patch"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // The UI acts as the logged-in user: impersonate them, and ask the API server what
            // they may do before showing a button.
            rule(&[""], &["users", "groups"], &["impersonate"]),
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
        ]),
        ..ClusterRole::default()
    }
}

/// The ClusterRole for people who may look at apps, their upgrades, rollbacks and snapshots
/// (bind it cluster-wide, or per namespace with a RoleBinding).
pub const VIEWER_ROLE: &str = "fluxup-viewer";
/// The ClusterRole for people who may also upgrade and roll back.
pub const OPERATOR_ROLE: &str = "fluxup-operator";

fn user_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app.kubernetes.io/name".to_string(), "fluxup".to_string())].into()),
            ..ObjectMeta::default()
        },
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

fn viewer_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["fluxup.dev"],
            &["managedapps", "upgraderequests", "rollbackrequests"],
            READ,
        ),
        rule(&["snapshot.storage.k8s.io"], &["volumesnapshots"], READ),
        rule(&["helm.toolkit.fluxcd.io"], &["helmreleases"], READ),
        rule(&[""], &["persistentvolumeclaims"], READ),
    ]
}

/// What the dashboard's viewers may do: read FluxUp's resources and snapshots.
pub fn viewer_cluster_role() -> ClusterRole {
    user_role(VIEWER_ROLE, viewer_rules())
}

/// What the dashboard's operators may do: read, ask for upgrades and rollbacks (the controllers
/// do the rest with their own permissions), and add apps.
pub fn operator_cluster_role() -> ClusterRole {
    let mut rules = viewer_rules();
    rules.push(rule(
        &["fluxup.dev"],
        &["upgraderequests", "rollbackrequests"],
        &["create", "delete"],
    ));
    // "Add an app": the dashboard proposes a ManagedApp for a HelmRelease, reading the release
    // and the claims in its namespace as the person.
    rules.push(rule(&["fluxup.dev"], &["managedapps"], &["create"]));
    // The snapshots page: delete one of FluxUp's snapshots.
    rules.push(rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshots"],
        &["delete"],
    ));

    user_role(OPERATOR_ROLE, rules)
}

/// The Role for leader election: one Lease in FluxUp's namespace.
pub fn leader_election_role(namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(LEADER_ELECTION_ROLE.into()),
            namespace: Some(namespace.into()),
            labels: Some([("app.kubernetes.io/name".to_string(), "fluxup".to_string())].into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "list", "watch", "create", "update", "patch"],
        )]),
    }
}
