//! Scenario: upgrades that fail, with real Flux, CSI snapshots and Gitea. Each ends in a clear
//! `Failed` that says what happened and what to do, with the Flux Kustomization resumed and the
//! app's workloads running again:
//! - a chart release that Flux cannot install (the demo's 2.1.0-rc.1), on an app with
//!   auto-rollback: a RollbackRequest is created and linked;
//! - Gitea refusing the commit (the repository archived while the snapshot is taken): Git is
//!   unchanged; and an archived repository refused already by the preflight;
//! - a snapshot that never becomes ready (a class whose CSI driver is not running): the app's
//!   snapshot timeout ends it, before any commit.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::snapshot::{VolumeSnapshot, VolumeSnapshotClass};
use fluxup_api::{RollbackRequest, UpgradePhase};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Archives or unarchives the demo repository in Gitea.
fn set_archived(sb: &Sandbox, repo: &str, archived: bool) -> anyhow::Result<()> {
    sb.gitea()?.ok(
        "PATCH",
        &format!("/repos/{repo}"),
        Some(&json!({"archived": archived})),
    )?;
    Ok(())
}

/// Waits until the demo app `name` is cleaned up after a failure: nothing of it held.
async fn cleaned_up(sb: &Sandbox, name: &str) -> anyhow::Result<()> {
    // Kustomization and HelmRelease resumed and unmarked, workloads running again.
    nothing_held(sb, name).await
}

fn failure(ended: &Ended) -> (String, String) {
    let status = ended.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Failed),
        "{:?}",
        status.message
    );
    (
        status
            .conditions
            .first()
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        status.message.unwrap_or_default(),
    )
}

#[tokio::test]
async fn failed_upgrades_say_why_and_leave_flux_resumed() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("upgrade-failures").await?;
    let repo = seed_demo()?;
    // A run that died half-way may have left the repository archived.
    set_archived(&sb, &repo, false)?;

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    for name in ["api", "datastore", "webapp"] {
        delete_requests(&sb, name).await?;
        Api::<RollbackRequest>::namespaced(sb.client.clone(), name)
            .delete_collection(&Default::default(), &Default::default())
            .await?;
    }
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    // 1. A release Flux cannot install. The app asks for auto-rollback: a RollbackRequest for
    //    this upgrade is created and linked from its status.
    apply_app(
        &sb,
        app_copy(
            "api-failing",
            "api",
            "apps/api/ocirepository.yaml",
            json!({"autoRollback": true}),
        ),
    )
    .await?;
    wait_resolved(&sb, "api", "api-failing").await?;
    let before = deployed(&sb, "api").await?;
    let request = format!("api-{run}-rc");
    let ended = run_request(
        &sb,
        "api",
        "api-failing",
        &request,
        chart("2.1.0-rc.1"),
        false,
    )
    .await?;
    let (reason, message) = failure(&ended);
    println!("failing release: {message} [{}]", ended.timeline_text());
    assert_eq!(reason, "ReleaseFailed", "{message}");
    assert!(
        message.starts_with("Flux could not roll out the new version")
            && message.contains("changes the data format"),
        "Flux's own words are passed on: {message}"
    );
    assert!(
        ended.status().upgrade.and_then(|u| u.git_commit).is_some(),
        "the bump was committed before Flux failed"
    );
    cleaned_up(&sb, "api").await?;
    let rollback_name = rollback_linked(&sb, "api", &request).await?;
    let rollback = Api::<RollbackRequest>::namespaced(sb.client.clone(), "api")
        .get(&rollback_name)
        .await?;
    assert_eq!(
        rollback.spec.upgrade_request_ref.map(|r| r.name),
        Some(request.clone()),
        "the RollbackRequest undoes this upgrade"
    );
    // The app's lastUpgrade says so once the request's clean-up steps are done.
    eventually("lastUpgrade Failed", Duration::from_secs(30), || async {
        let last = app(&sb, "api", "api-failing")
            .await?
            .status
            .and_then(|s| s.last_upgrade)
            .context("lastUpgrade")?;
        Ok(match last.status.as_deref() {
            Some("Failed") => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })
    .await?;
    // Here the app is moved back with an upgrade instead (rollbacks are rollback_scenario's): a
    // failing release does not block the upgrade that fixes it.
    Api::<RollbackRequest>::namespaced(sb.client.clone(), "api")
        .delete(&rollback_name, &Default::default())
        .await?;
    let back = run_request(
        &sb,
        "api",
        "api-failing",
        &format!("api-{run}-back"),
        chart(&before),
        false,
    )
    .await?;
    check_rolled_out(&sb, "api", &back, &before).await?;

    // 2. Gitea refuses the commit: the repository is archived while the snapshot is taken.
    apply_app(
        &sb,
        app_copy(
            "datastore-git-refused",
            "datastore",
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                       "pvcs": [{"name": "data-datastore-0"}]}}),
        ),
    )
    .await?;
    wait_resolved(&sb, "datastore", "datastore-git-refused").await?;
    let head_before = head(&sb, &repo)?;
    let target = if deployed(&sb, "datastore").await? == "1.0.1" {
        "1.0.0"
    } else {
        "1.0.1"
    };
    let request = format!("datastore-{run}-git-refused");
    create_request(
        &sb,
        "datastore",
        "datastore-git-refused",
        &request,
        chart(target),
        false,
    )
    .await?;
    wait_for_phase(&sb, "datastore", &request, UpgradePhase::Quiescing).await?;
    set_archived(&sb, &repo, true)?;
    let ended = follow(&sb, "datastore", &request, Duration::from_secs(120)).await?;
    let (reason, message) = failure(&ended);
    println!("Git refused: {message}");
    assert_eq!(reason, "GitFailed", "{message}");
    assert!(
        message.contains("Git is unchanged") && message.contains("refused"),
        "{message}"
    );
    cleaned_up(&sb, "datastore").await?;

    // While it is archived, the preflight refuses before anything is stopped or suspended.
    let ended = run_request(
        &sb,
        "webapp",
        "webapp",
        &format!("webapp-{run}-archived"),
        chart("1.0.1"),
        false,
    )
    .await?;
    let (reason, message) = failure(&ended);
    assert_eq!(reason, "PreflightFailed", "{message}");
    assert!(message.contains("is archived"), "{message}");
    assert!(
        ended.at(UpgradePhase::Suspending).is_none(),
        "nothing was suspended: {}",
        ended.timeline_text()
    );
    set_archived(&sb, &repo, false)?;
    assert_eq!(head(&sb, &repo)?, head_before, "Git changed");

    // 3. A snapshot that never becomes ready: its class names a CSI driver nobody runs. The
    //    app's 5 s snapshot timeout ends the upgrade before any commit.
    let classes = ApiResource::erase::<VolumeSnapshotClass>(&());
    Api::<DynamicObject>::all_with(sb.client.clone(), &classes)
        .patch(
            "never-ready",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
                "metadata": {"name": "never-ready"},
                "driver": "nobody.fluxup.dev", "deletionPolicy": "Delete",
            })),
        )
        .await?;
    apply_app(
        &sb,
        app_copy(
            "datastore-slow-snapshots",
            "datastore",
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": {"volumeSnapshotClassName": "never-ready", "timeout": "5s",
                                       "pvcs": [{"name": "data-datastore-0"}]}}),
        ),
    )
    .await?;
    wait_resolved(&sb, "datastore", "datastore-slow-snapshots").await?;
    let slow = format!("datastore-{run}-slow-snapshot");
    let ended = run_request(
        &sb,
        "datastore",
        "datastore-slow-snapshots",
        &slow,
        chart(target),
        false,
    )
    .await?;
    let (reason, message) = failure(&ended);
    println!("snapshot never ready: {message}");
    assert!(
        (reason == "Timeout" && message.starts_with("Snapshotting did not finish within 5 s"))
            || reason == "SnapshotFailed",
        "{reason}: {message}"
    );
    assert!(message.contains("nothing was committed"), "{message}");
    cleaned_up(&sb, "datastore").await?;
    // The snapshot that never became ready is deleted: while it is being taken, Kubernetes keeps
    // its claim from being deleted, which a later rollback needs.
    let snapshot = ended
        .status()
        .snapshot
        .and_then(|s| s.pvcs.first().map(|p| p.snapshot_name.clone()))
        .ok_or_else(|| anyhow::anyhow!("no snapshot recorded"))?;
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(sb.client.clone(), "datastore");
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshots
        .get_opt(&snapshot)
        .await?
        .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
    {
        anyhow::ensure!(Instant::now() < deadline, "{snapshot} was not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    forget_never_ready_snapshots(&sb).await?;
    assert_eq!(head(&sb, &repo)?, head_before, "Git changed");
    Ok(())
}

/// A snapshot of a driver nobody runs cannot finish deleting (its content waits for the
/// driver), and the snapshot controller keeps its claim from being deleted meanwhile. As a
/// person would, drop their finalizers so other tests can replace the claim.
async fn forget_never_ready_snapshots(sb: &Sandbox) -> anyhow::Result<()> {
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(sb.client.clone(), "datastore");
    let contents = ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
    ));
    let contents: Api<DynamicObject> = Api::all_with(sb.client.clone(), &contents);
    for s in snapshots.list(&Default::default()).await?.items {
        if s.spec.volume_snapshot_class_name.as_deref() != Some("never-ready") {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        snapshots.delete(&name, &Default::default()).await.ok();
        if let Some(content) = s
            .status
            .and_then(|st| st.bound_volume_snapshot_content_name)
        {
            contents.delete(&content, &Default::default()).await.ok();
            contents
                .patch(&content, &PatchParams::default(), &no_finalizers)
                .await
                .ok();
        }
        snapshots
            .patch(&name, &PatchParams::default(), &no_finalizers)
            .await
            .ok();
    }
    Ok(())
}
