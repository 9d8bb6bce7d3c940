//! The permissions FluxUp's controllers need, as the single source of `config/rbac/`.
//!
//! Least privilege: each rule names the kinds and verbs a controller uses, and why.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

/// The ServiceAccount the controllers run as (no impersonation, no web server's rights).
pub const CONTROLLER_ACCOUNT: &str = "fluxup-controller";
/// The ServiceAccount the dashboard runs as: it reads FluxUp's own resources into its caches,
/// asks RBAC what a person may do, and acts as them (impersonation) for everything else.
pub const DASHBOARD_ACCOUNT: &str = "fluxup-dashboard";
/// Name of the ClusterRole bound to the controllers' ServiceAccount.
pub const CONTROLLER_ROLE: &str = "fluxup-controller";
/// Name of the Role the controllers have in FluxUp's own namespace (leader election, settings).
pub const LEADER_ELECTION_ROLE: &str = "fluxup-leader-election";
/// Name of the ClusterRole bound to the dashboard's ServiceAccount.
pub const DASHBOARD_ROLE: &str = "fluxup-dashboard";
/// The ConfigMap of notification sinks, the only ConfigMap FluxUp reads.
const SETTINGS: &str = fluxup_api::ownership::NOTIFICATIONS_CONFIG_MAP;

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
const READ_PATCH: &[&str] = &["get", "list", "watch", "patch"];

fn labels() -> Option<std::collections::BTreeMap<String, String>> {
    Some([("app.kubernetes.io/name".to_string(), "fluxup".to_string())].into())
}

/// The cluster-wide permissions of FluxUp's controllers.
pub fn controller_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(CONTROLLER_ROLE.into()),
            labels: labels(),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            // Our own resources: reconcile them, write status, hold finalizers, and create
            // RollbackRequests for auto-rollback.
            rule(&["fluxup.dev"], &["managedapps"], READ),
            rule(&["fluxup.dev"], &["upgraderequests"], READ_PATCH),
            rule(
                &["fluxup.dev"],
                &["rollbackrequests"],
                &["get", "list", "watch", "patch", "create"],
            ),
            rule(
                &["fluxup.dev"],
                &[
                    "managedapps/status",
                    "upgraderequests/status",
                    "rollbackrequests/status",
                ],
                &["patch"],
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
                &["get", "patch"],
            ),
            rule(
                &["source.toolkit.fluxcd.io"],
                &["helmrepositories", "ocirepositories"],
                READ,
            ),
            // Snapshots before an upgrade, retention, and restore on rollback.
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshots"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            // PVCs: find the app's volumes; recreate them from a snapshot on rollback.
            rule(
                &[""],
                &["persistentvolumeclaims"],
                &["get", "list", "watch", "create", "delete"],
            ),
            // Workloads that mount the PVCs: marked `fluxup.dev/stopped-by` (a patch of their
            // metadata), then scaled to zero and back through the scale subresource only.
            rule(&["apps"], &["deployments", "statefulsets"], READ_PATCH),
            rule(
                &["apps"],
                &["deployments/scale", "statefulsets/scale"],
                &["patch"],
            ),
            // Which pods mount a claim a rollback replaces (a slim cache).
            rule(&[""], &["pods"], &["list", "watch"]),
            // The app's HTTP health check (`healthCheck.httpGet`): its Service is read by name
            // (an ExternalName one is refused), and, outside the cluster, called through the
            // API server's service proxy, which forwards only to the Service's pods.
            rule(&[""], &["services"], &["get"]),
            rule(&[""], &["services/proxy"], &["get"]),
            // The verification Job (`healthCheck.verification`): created from a CronJob of the
            // app's namespace, only when the ManagedApp's writer may create Jobs there, and read
            // by name.
            rule(&["batch"], &["cronjobs"], &["get"]),
            rule(&["batch"], &["jobs"], &["get", "create"]),
            // Git credentials (the GitRepository's secretRef) and notification secrets, each
            // read by name when used: no list, no watch.
            rule(&[""], &["secrets"], &["get"]),
            // Events for every phase change and user action.
            rule(&[""], &["events"], &["create", "patch"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // References to other namespaces: whether the person who asked may patch the
            // object (a SubjectAccessReview for them); and who FluxUp itself is.
            rule(
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
                &["create"],
            ),
            rule(
                &["authentication.k8s.io"],
                &["selfsubjectreviews"],
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
            labels: labels(),
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
        // "Add an app" finds a release's claims as the ManagedApp controller does: its own and
        // those of its StatefulSets' claim templates.
        rule(&["apps"], &["statefulsets"], READ),
        // The version picker reads the app's chart source as the person.
        rule(
            &["source.toolkit.fluxcd.io"],
            &["helmrepositories", "ocirepositories"],
            &["get"],
        ),
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
    // and the claims in its namespace as the person; "Skip this version" updates its policy.
    rules.push(rule(
        &["fluxup.dev"],
        &["managedapps"],
        &["create", "update"],
    ));
    // The snapshots page: delete one of FluxUp's snapshots.
    rules.push(rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshots"],
        &["delete"],
    ));

    user_role(OPERATOR_ROLE, rules)
}

/// The ClusterRole for people who may have FluxUp hold Flux objects in another namespace than
/// their app's (bind it with a RoleBinding in the Kustomization's namespace, e.g. `flux-system`):
/// what `flux suspend` and `flux resume` need. FluxUp follows a ManagedApp's reference to another
/// namespace only for a person who may `patch` that object.
pub const FLUX_SUSPEND_ROLE: &str = "fluxup-flux-suspend";

/// See [`FLUX_SUSPEND_ROLE`].
pub fn flux_suspend_cluster_role() -> ClusterRole {
    user_role(
        FLUX_SUSPEND_ROLE,
        vec![
            rule(
                &["kustomize.toolkit.fluxcd.io"],
                &["kustomizations"],
                &["get", "list", "watch", "patch"],
            ),
            rule(
                &["helm.toolkit.fluxcd.io"],
                &["helmreleases"],
                &["get", "list", "watch", "patch"],
            ),
        ],
    )
}

/// The controllers' Role in FluxUp's namespace: the leader election Lease, the notification
/// settings, and the Renovate Jobs that run there.
pub fn leader_election_role(namespace: &str) -> Role {
    let mut settings = rule(&[""], &["configmaps"], &["get"]);
    settings.resource_names = Some(vec![SETTINGS.into()]);
    Role {
        metadata: ObjectMeta {
            name: Some(LEADER_ELECTION_ROLE.into()),
            namespace: Some(namespace.into()),
            labels: labels(),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "create", "patch"],
            ),
            settings,
            // Renovate runs here (config/renovate): FluxUp trusts only these Jobs, reads their
            // logs and marks each one read. A CronJob elsewhere (FLUXUP_RENOVATE_CRONJOBS) needs
            // the same and `get` of cronjobs in its namespace (README, Security).
            rule(&["batch"], &["jobs"], READ_PATCH),
            rule(&[""], &["pods/log"], &["get"]),
        ]),
    }
}

/// The dashboard's cluster-wide permissions: its watch caches of FluxUp's resources and
/// snapshots, RBAC questions, and acting as the logged-in person. It cannot suspend Flux, scale,
/// delete claims or read Secrets: what a person does through it, the API server checks as them.
pub fn dashboard_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(DASHBOARD_ROLE.into()),
            labels: labels(),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(
                &["fluxup.dev"],
                &["managedapps", "upgraderequests", "rollbackrequests"],
                &["list", "watch"],
            ),
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshots"],
                &["list", "watch"],
            ),
            // "Add an app" proposes the default class.
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshotclasses"],
                &["list"],
            ),
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

/// The dashboard's Role in FluxUp's namespace: the settings page shows the notification sinks.
pub fn dashboard_role(namespace: &str) -> Role {
    let mut settings = rule(&[""], &["configmaps"], &["get"]);
    settings.resource_names = Some(vec![SETTINGS.into()]);
    Role {
        metadata: ObjectMeta {
            name: Some(DASHBOARD_ROLE.into()),
            namespace: Some(namespace.into()),
            labels: labels(),
            ..ObjectMeta::default()
        },
        rules: Some(vec![settings]),
    }
}

/// The two ServiceAccounts and what binds each to its roles, in `namespace`, as objects to
/// serialize (so names cannot drift between roles and bindings).
pub fn bindings(namespace: &str) -> Vec<serde_json::Value> {
    let meta = |name: &str, ns: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(String::from),
        labels: labels(),
        ..ObjectMeta::default()
    };
    let subject = |account: &str| {
        Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }])
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    };
    let mut out = Vec::new();
    for account in [CONTROLLER_ACCOUNT, DASHBOARD_ACCOUNT] {
        out.push(object(
            "v1",
            "ServiceAccount",
            &ServiceAccount {
                metadata: meta(account, Some(namespace)),
                ..ServiceAccount::default()
            },
        ));
    }
    for (account, cluster_role, role) in [
        (CONTROLLER_ACCOUNT, CONTROLLER_ROLE, LEADER_ELECTION_ROLE),
        (DASHBOARD_ACCOUNT, DASHBOARD_ROLE, DASHBOARD_ROLE),
    ] {
        out.push(object(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            &ClusterRoleBinding {
                metadata: meta(account, None),
                role_ref: role_ref("ClusterRole", cluster_role),
                subjects: subject(account),
            },
        ));
        out.push(object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            &RoleBinding {
                metadata: meta(account, Some(namespace)),
                role_ref: role_ref("Role", role),
                subjects: subject(account),
            },
        ));
    }
    out
}

/// `value` with its apiVersion and kind first, as a person writes a manifest.
fn object(api_version: &str, kind: &str, value: &impl serde::Serialize) -> serde_json::Value {
    let mut out = serde_json::json!({"apiVersion": api_version, "kind": kind});
    if let (Some(map), Ok(serde_json::Value::Object(rest))) =
        (out.as_object_mut(), serde_json::to_value(value))
    {
        map.extend(rest);
    }
    out
}
