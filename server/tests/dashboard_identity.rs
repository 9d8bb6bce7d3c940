//! The dashboard as it ships: its own ServiceAccount (`fluxup-dashboard`, roles from
//! `config/rbac`), serving a tenant with FluxUp's operator role in one namespace. It reads its
//! caches and asks RBAC as itself, and does everything else as the person: the tenant sees and
//! changes only their namespace, and every verb the dashboard's roles grant is one it uses.

use fluxup_app::backend::{Backend, Viewer};
use fluxup_operator::api_requests::ApiRequests;
use fluxup_sandbox::{FLUXUP_NAMESPACE, Sandbox, eventually, seed_demo};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// Grants the calls below do not use, and where they are used.
const ELSEWHERE: &[(&str, &str, &str)] = &[
    (
        "users",
        "impersonate",
        "every request made as the person (the tenant's upgrade here is one)",
    ),
    (
        "groups",
        "impersonate",
        "every request made as the person (the tenant's upgrade here is one)",
    ),
];

#[tokio::test]
async fn the_dashboard_acts_as_the_person_with_only_its_own_roles() -> anyhow::Result<()> {
    // Its settings live in FluxUp's namespace, where its Role lets it read them.
    // SAFETY: set before anything else runs (one test, on one thread).
    unsafe { std::env::set_var("POD_NAMESPACE", FLUXUP_NAMESPACE) };
    let sb = Sandbox::start_full("dashboard-identity").await?;
    seed_demo()?;
    let ns = sb.ns().to_string();
    // A tenant of this run only (namespaces of failed runs are kept, with their bindings).
    let tenant_name = format!("tenant-{}", ns.rsplit('-').next().unwrap_or("b"));
    sb.bind_tenant(&tenant_name, "fluxup-operator").await?;
    sb.apply(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": "team-app"},
        "spec": {"helmReleaseRef": {"name": "team-app"}, "kustomizationRef": {"name": "team-app"}},
    }))
    .await?;
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(sb.client.clone(), FLUXUP_NAMESPACE)
        .patch(
            "fluxup-notifications",
            &kube::api::PatchParams::apply("dashboard-identity").force(),
            &kube::api::Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "fluxup-notifications"},
                "data": {"sinks.yaml": "- {name: team-chat, type: slack, address: \"https://hooks.example/x\"}\n"},
            })),
        )
        .await?;

    let requests = ApiRequests::default();
    let kubeconfig = Kubeconfig::read_from(sb.kubeconfig_of("fluxup-dashboard"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let backend = Backend::start_with(config, Some(requests.clone()))?;
    assert!(backend.ready().await, "the dashboard's caches filled");
    let tenant = Viewer::person(tenant_name.clone(), vec!["system:authenticated".into()]);

    // What the tenant sees: their namespace only.
    let rows = eventually(
        "the tenant's app listed",
        Duration::from_secs(20),
        || async {
            let rows = backend.rows(&tenant).await;
            Ok(if rows.iter().any(|r| r.namespace == ns) {
                Ok(rows)
            } else {
                Err(format!("{} rows", rows.len()))
            })
        },
    )
    .await?;
    assert!(rows.iter().all(|r| r.namespace == ns), "{rows:?}");
    backend
        .detail(&tenant, &ns, "team-app")
        .await
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert_eq!(
        backend
            .detail(&tenant, "webapp", "webapp")
            .await
            .unwrap_err()
            .status,
        404
    );

    // What the tenant asks is asked as them: the API server records them, and refuses them
    // elsewhere.
    let op = backend
        .request_upgrade(&tenant, &ns, "team-app", Some("1.0.1".into()), true)
        .await
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let created = Api::<fluxup_api::UpgradeRequest>::namespaced(sb.client.clone(), &ns)
        .get(&op.name)
        .await?;
    assert_eq!(
        created
            .annotations()
            .get(fluxup_api::REQUESTED_BY_ANNOTATION)
            .map(String::as_str),
        Some(tenant_name.as_str())
    );
    let elsewhere = backend
        .request_upgrade(&tenant, "webapp", "webapp", Some("1.0.1".into()), true)
        .await
        .unwrap_err();
    assert_eq!(elsewhere.status, 403, "{elsewhere}");
    assert!(backend.snapshots(&tenant, &ns).await.is_ok());
    assert!(backend.snapshots(&tenant, "webapp").await.is_err());
    assert!(
        backend
            .all_snapshots(&tenant)
            .await
            .iter()
            .all(|(n, _)| *n == ns)
    );
    let settings = backend.settings(&tenant).await;
    assert_eq!(settings.notifications_error, None);
    assert_eq!(settings.sinks.len(), 1);
    // "Add an app" as a person who may read the release: the default snapshot class comes
    // from the dashboard's own read.
    let admin = Viewer::person("sandbox-admin".into(), vec!["system:masters".into()]);
    let proposal = backend
        .propose(&admin, "webapp", "webapp")
        .await
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    assert_eq!(proposal.snapshot_class.as_deref(), Some("csi-snapclass"));

    fluxup_sandbox::compare_grants(
        "fluxup-dashboard",
        requests.counts().keys(),
        &["dashboard_role.yaml"],
        ELSEWHERE,
    )?;
    Ok(())
}
