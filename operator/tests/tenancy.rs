//! As a tenant would try it: a person bound to `fluxup-operator` in one namespace only (their
//! team's), with FluxUp's controllers running as their shipped ServiceAccount. Whatever they name
//! in another namespace — the demo webapp's HelmRelease, and its Kustomization in `flux-system`
//! — FluxUp neither shows nor touches for them: no status of the other app, no suspension, no
//! commit. A person who may change those objects (the admin here) gets the same requests done.

mod common;

use common::*;
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::ownership::HELD_BY_ANNOTATION;
use fluxup_api::{ManagedApp, RollbackRequest, UpgradePhase, UpgradeRequest};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TENANT: &str = "tenant-a";
const RULE: &str = "references stay in the ManagedApp's namespace";

/// A ManagedApp in the test's namespace for the demo webapp, which lives elsewhere.
fn borrowed_app(name: &str, ns: &str) -> ManagedApp {
    serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "helmReleaseRef": {"name": "webapp", "namespace": "webapp"},
            "kustomizationRef": {"name": "webapp", "namespace": "flux-system"},
            "versionPolicy": {"chart": {"git": {"file": "apps/webapp/helmrelease.yaml"}}},
            "healthCheck": {"timeout": "90s"},
        },
    }))
    .expect("a ManagedApp")
}

fn upgrade(name: &str, app: &str, chart: &str, dry_run: bool) -> UpgradeRequest {
    serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": name},
        "spec": {"managedAppRef": {"name": app}, "targetVersion": {"chart": chart},
                 "dryRun": dry_run},
    }))
    .expect("an UpgradeRequest")
}

fn rollback(name: &str, upgrade: &str) -> RollbackRequest {
    serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": {"upgradeRequestRef": {"name": upgrade}},
    }))
    .expect("a RollbackRequest")
}

/// The `references` preflight check of a request's status.
fn references_check(dry_run: &Option<fluxup_api::DryRunResult>) -> Option<(bool, String)> {
    dry_run
        .as_ref()?
        .checks
        .iter()
        .find(|c| c.name == "references")
        .map(|c| (c.passed, c.message.clone().unwrap_or_default()))
}

/// What a person checks on the other team's app: Flux runs it, nothing of FluxUp is on it.
async fn untouched(sb: &Sandbox) -> anyhow::Result<()> {
    let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
        .get("webapp")
        .await?;
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), "webapp")
        .get("webapp")
        .await?;
    for (what, suspended, marked) in [
        (
            "Kustomization flux-system/webapp",
            ks.spec.suspend == Some(true),
            ks.annotations().contains_key(HELD_BY_ANNOTATION),
        ),
        (
            "HelmRelease webapp/webapp",
            hr.spec.suspend == Some(true),
            hr.annotations().contains_key(HELD_BY_ANNOTATION),
        ),
    ] {
        anyhow::ensure!(!suspended && !marked, "{what} was held for the tenant");
    }
    Ok(())
}

#[tokio::test]
async fn a_tenant_reaches_nothing_outside_their_namespace() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("tenancy").await?;
    let repo = seed_demo()?;
    let ns = sb.ns().to_string();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    start_upgrader(&sb, &stop);
    start_rollbacker(&sb, &stop);
    delete_requests(&sb, "webapp").await?;
    nothing_held(&sb, "webapp").await?;
    wait_resolved(&sb, "webapp", "webapp").await?;

    // The tenant: FluxUp's operator role in their namespace, nothing elsewhere.
    sb.bind_tenant(TENANT, "fluxup-operator").await?;
    let tenant = as_person(&sb, TENANT).await?;
    let tenant_apps: Api<ManagedApp> = Api::namespaced(tenant.clone(), &ns);
    let tenant_upgrades: Api<UpgradeRequest> = Api::namespaced(tenant.clone(), &ns);
    let tenant_rollbacks: Api<RollbackRequest> = Api::namespaced(tenant.clone(), &ns);
    let apps: Api<ManagedApp> = Api::namespaced(sb.client.clone(), &ns);
    let upgrades: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), &ns);
    let rollbacks: Api<RollbackRequest> = Api::namespaced(sb.client.clone(), &ns);
    let before = deployed(&sb, "webapp").await?;
    let target = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };

    // 1. The tenant's own ManagedApp naming the other team's objects: refused in its status,
    //    which shows nothing of them.
    tenant_apps
        .create(&PostParams::default(), &borrowed_app("borrowed", &ns))
        .await?;
    let refused = eventually(
        "the tenant's ManagedApp refused",
        Duration::from_secs(30),
        || async {
            let status = apps.get("borrowed").await?.status.unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned();
            Ok(match ready {
                Some(c) if c.reason == "ReferenceRefused" => Ok(status),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    let message = &refused.conditions[0].message;
    assert!(
        message.contains("tenant-a may not patch") && message.contains(RULE),
        "{message}"
    );
    assert!(refused.resolved.is_none(), "{:?}", refused.resolved);
    assert!(
        refused.current_version.is_none(),
        "{:?}",
        refused.current_version
    );
    assert!(refused.available_update.is_none());

    // 2. An upgrade of it: refused before anything happens.
    let git_before = head(&sb, &repo)?;
    let asked = tenant_upgrades
        .create(
            &PostParams::default(),
            &upgrade("tenant-upgrade", "borrowed", target, false),
        )
        .await?;
    let ended = follow(&sb, &ns, "tenant-upgrade", Duration::from_secs(60)).await?;
    assert_eq!(ended.phase(), UpgradePhase::Failed, "{:?}", ended.status());

    // 3. The admin's ManagedApp for the same objects (the admin may change them): it resolves,
    //    and the tenant still cannot have FluxUp act on them through it, not even a dry run's
    //    diff of the other team's file.
    apps.create(&PostParams::default(), &borrowed_app("admin-app", &ns))
        .await?;
    wait_resolved(&sb, &ns, "admin-app").await?;
    for (name, dry_run) in [("tenant-dry-run", true), ("tenant-upgrade-2", false)] {
        tenant_upgrades
            .create(
                &PostParams::default(),
                &upgrade(name, "admin-app", target, dry_run),
            )
            .await?;
        let ended = follow(&sb, &ns, name, Duration::from_secs(60)).await?;
        assert_eq!(
            ended.phase(),
            UpgradePhase::Failed,
            "{name}: {:?}",
            ended.status()
        );
        let dry = ended.status().dry_run;
        let (passed, message) = references_check(&dry).expect("a references check");
        assert!(!passed);
        assert!(
            message.contains("tenant-a may not patch Kustomization flux-system/webapp")
                && message.contains(RULE),
            "{message}"
        );
        assert!(
            dry.as_ref().and_then(|d| d.diff.clone()).is_none(),
            "{name} showed the other team's file"
        );
    }
    assert_eq!(
        head(&sb, &repo)?,
        git_before,
        "a tenant's request changed Git"
    );
    assert_eq!(
        commits_of_operation(&sb, &repo, &asked.uid().unwrap_or_default())?,
        0
    );
    untouched(&sb).await?;
    assert_eq!(deployed(&sb, "webapp").await?, before);

    // 4. The admin's upgrade goes through; the tenant's rollback of it does not; the admin's does.
    let admin_upgrade = "admin-upgrade";
    upgrades
        .create(
            &PostParams::default(),
            &upgrade(admin_upgrade, "admin-app", target, false),
        )
        .await?;
    let ended = follow(&sb, &ns, admin_upgrade, Duration::from_secs(240)).await?;
    check_rolled_out(&sb, "webapp", &ended, target).await?;
    let after_upgrade = head(&sb, &repo)?;
    tenant_rollbacks
        .create(
            &PostParams::default(),
            &rollback("tenant-rollback", admin_upgrade),
        )
        .await?;
    let status = eventually(
        "the tenant's rollback refused",
        Duration::from_secs(60),
        || async {
            let s = rollbacks
                .get("tenant-rollback")
                .await?
                .status
                .unwrap_or_default();
            Ok(match s.phase {
                Some(fluxup_api::RollbackPhase::Failed) => Ok(s),
                other => Err(format!("{other:?} {:?}", s.message)),
            })
        },
    )
    .await?;
    let (passed, message) = references_check(&status.dry_run).expect("a references check");
    assert!(
        !passed && message.contains("tenant-a may not patch"),
        "{message}"
    );
    assert_eq!(
        head(&sb, &repo)?,
        after_upgrade,
        "the tenant's rollback changed Git"
    );
    untouched(&sb).await?;
    assert_eq!(deployed(&sb, "webapp").await?, target);

    rollbacks
        .create(
            &PostParams::default(),
            &rollback("admin-rollback", admin_upgrade),
        )
        .await?;
    eventually(
        "the admin's rollback done",
        Duration::from_secs(240),
        || async {
            let s = rollbacks
                .get("admin-rollback")
                .await?
                .status
                .unwrap_or_default();
            Ok(if s.released_at.is_some() {
                Ok(s)
            } else {
                Err(format!("{:?} {:?}", s.phase, s.message))
            })
        },
    )
    .await?;
    assert_eq!(deployed(&sb, "webapp").await?, before);
    nothing_held(&sb, "webapp").await?;
    Ok(())
}
