//! A chart registry that requires credentials (full profile: `registry-auth`, htpasswd), as a
//! Flux user with a private registry has it: the demo's `api` app pulls its chart from it with an
//! OCIRepository `secretRef` (a kubernetes.io/dockerconfigjson Secret). FluxUp lists every
//! version with those credentials, says what is missing when there are none, never lists for a
//! person who may not read the Secret, warns without blocking when the registry refuses it, and
//! upgrades and rolls the app back through Flux.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::{ChartSource, RollbackPhase, RollbackRequest, UpgradePhase};
use fluxup_operator::chart_versions::{self, Access, list, of_app};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "api";
/// A ManagedApp of the demo's api release that names the file its chart version lives in.
const APP: &str = "api-private";

#[tokio::test]
async fn a_chart_behind_credentials_is_listed_upgraded_and_rolled_back() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("private-charts").await?;
    seed_demo()?;
    let private = sb.env("OCI_CHARTS_AUTH")?.to_string();
    fluxup_operator::outbound::allow(sb.env("REGISTRY_AUTH_HOST")?).map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);
    delete_requests(&sb, NS).await?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    wait_resolved(&sb, NS, "api").await?;
    let app = app(&sb, NS, "api").await?;
    let source = app
        .status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .and_then(|r| r.chart_source.clone())
        .context("chart source")?;
    assert!(
        source
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with(&private)),
        "the demo's api chart comes from the registry that requires credentials: {source:?}"
    );

    // Without credentials the registry refuses, and FluxUp says what to do.
    let bare = ChartSource {
        url: source.url.clone(),
        ..source.clone()
    };
    let refused = list(
        &bare,
        "",
        &Access {
            insecure: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused,
        chart_versions::Error::NeedsCredentials,
        "{refused}"
    );

    // With the OCIRepository's Secret, read as FluxUp's controller: every version.
    let found = of_app(&sb.controller, &app)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        found.versions,
        ["2.1.0-rc.1", "2.0.0", "1.1.0", "1.0.1", "1.0.0"]
    );

    // A person who may see the app but not read the Secret gets no listing made with it.
    let viewer = format!("viewer-{}", sb.ns());
    Api::<RoleBinding>::namespaced(sb.client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": viewer},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "fluxup-viewer"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": viewer}],
            }))?,
        )
        .await?;
    let person = as_person(&sb, &viewer).await?;
    let denied = of_app(&person, &app).await.unwrap_err();
    assert!(
        denied.contains("which you may not read"),
        "the listing as a person without the Secret: {denied}"
    );
    Api::<RoleBinding>::namespaced(sb.client.clone(), NS)
        .delete(&viewer, &Default::default())
        .await?;

    // An upgrade through the private registry, then a rollback: Flux pulls with the Secret.
    let before = deployed(&sb, NS).await?;
    let target = if before == "1.0.1" { "1.1.0" } else { "1.0.1" };
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    // The version lives in the OCIRepository's file (Renovate would say so; here the policy does).
    apply_app(
        &sb,
        app_copy(APP, NS, "apps/api/ocirepository.yaml", json!({})),
    )
    .await?;
    wait_resolved(&sb, NS, APP).await?;
    // The dry run's version check read the private registry.
    let dry = run_request(
        &sb,
        NS,
        "api",
        &format!("api-{run}-private-dry"),
        chart(target),
        true,
    )
    .await?;
    let checks = dry.status().dry_run.context("dry run result")?.checks;
    let version_check = checks
        .iter()
        .find(|c| c.name == "version")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        version_check.contains(&format!("{target} is in")),
        "the preflight checked the version in the private registry: {version_check}"
    );
    // Credentials the registry refuses: the version is not checked, and says so, but the
    // upgrade is not blocked (Flux will say if the version does not exist).
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sb.client.clone(), NS);
    let original = secrets.get("api-registry").await?;
    let mut auths = serde_json::Map::new();
    auths.insert(
        sb.env("REGISTRY_AUTH_HOST")?.to_string(),
        json!({"username": sb.env("REGISTRY_AUTH_USER")?, "password": "not-the-password"}),
    );
    let wrong = json!({ "auths": auths });
    secrets
        .patch(
            "api-registry",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"stringData": {".dockerconfigjson": wrong.to_string()}}),
            ),
        )
        .await?;
    let unlisted = run_request(
        &sb,
        NS,
        APP,
        &format!("api-{run}-unlisted-dry"),
        chart(target),
        true,
    )
    .await;
    secrets
        .patch(
            "api-registry",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": original.data})),
        )
        .await?;
    let unlisted = unlisted?.status();
    assert_eq!(
        unlisted.phase,
        Some(UpgradePhase::Succeeded),
        "{:?}",
        unlisted.message
    );
    let checks = unlisted.dry_run.context("dry run result")?.checks;
    let version_check = checks
        .iter()
        .find(|c| c.name == "version")
        .context("a version check")?;
    assert!(
        version_check.passed
            && version_check
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not checked") && m.contains("refused the credentials")),
        "{version_check:?}"
    );

    let up = format!("api-{run}-private");
    let ended = run_request(&sb, NS, APP, &up, chart(target), false).await?;
    let status = ended.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?} [{}]",
        status.message,
        ended.timeline_text()
    );
    assert_eq!(deployed(&sb, NS).await?, target);

    let back = format!("{up}-back");
    create_rollback(&sb, NS, &back, &up).await?;
    let (ended, _) = follow_rollback(&sb, NS, &back).await?;
    assert_eq!(
        ended.status.as_ref().and_then(|s| s.phase),
        Some(RollbackPhase::Succeeded),
        "{} {:?}",
        ended.name_any(),
        ended.status
    );
    eventually(
        "api back on its version",
        Duration::from_secs(120),
        || async {
            let now = deployed(&sb, NS).await?;
            Ok(if now == before { Ok(()) } else { Err(now) })
        },
    )
    .await?;
    // The demo is left as other tests expect it: its own ManagedApps only.
    delete_requests(&sb, NS).await?;
    Api::<fluxup_api::ManagedApp>::namespaced(sb.client.clone(), NS)
        .delete(APP, &Default::default())
        .await?;
    Ok(())
}
