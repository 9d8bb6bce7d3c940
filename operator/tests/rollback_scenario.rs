//! Scenario: rollback with data, with real Flux, CSI snapshots and Gitea. Known data is written
//! into the demo datastore's volume, the app is upgraded, the data is changed (as a migration
//! would), and a RollbackRequest — its controller killed at every phase on the way — brings back
//! the data (checksums), the Git file (byte for byte), the previous chart version (HelmRelease
//! Ready) and the StatefulSet at its replica count. Then: a rollback whose snapshot is missing is
//! refused with nothing touched; and a failing upgrade of an app with auto-rollback is rolled
//! back on its own.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{RollbackPhase, RollbackRequest, UpgradePhase, UpgradeRequest};
use fluxup_operator::snapshots;
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const NS: &str = "datastore";
const APP: &str = "datastore-rollback";
const CLAIM: &str = "data-datastore-0";
const FILE: &str = "apps/datastore/ocirepository.yaml";

/// The demo repository's file as it is on `main`.
fn git_file(sb: &Sandbox, repo: &str) -> anyhow::Result<String> {
    let (code, body) =
        sb.gitea()?
            .call("GET", &format!("/repos/{repo}/raw/{FILE}?ref=main"), None)?;
    anyhow::ensure!(code == 200, "reading {FILE}: HTTP {code}");
    Ok(match body {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

async fn replicas(sb: &Sandbox) -> anyhow::Result<Option<i32>> {
    Ok(Api::<StatefulSet>::namespaced(sb.client.clone(), NS)
        .get("datastore")
        .await?
        .spec
        .and_then(|s| s.replicas))
}

async fn claim_uid(sb: &Sandbox) -> anyhow::Result<Option<String>> {
    Ok(
        Api::<PersistentVolumeClaim>::namespaced(sb.client.clone(), NS)
            .get(CLAIM)
            .await?
            .metadata
            .uid,
    )
}

async fn upgrade(sb: &Sandbox, name: &str, version: &str) -> anyhow::Result<Ended> {
    run_request(sb, NS, APP, name, chart(version), false).await
}

#[tokio::test]
async fn a_rollback_restores_data_git_and_version_together() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("rollback-scenario").await?;
    let repo = seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let mut rollbacker = start_rollbacker(&sb, &stop);
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    delete_requests(&sb, NS).await?;
    apply_app(
        &sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": APP, "namespace": NS},
            "spec": {"helmReleaseRef": {"name": "datastore"},
                     "kustomizationRef": {"name": "datastore", "namespace": "flux-system"},
                     "volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                         "pvcs": [{"name": CLAIM}]},
                     "versionPolicy": {"chart": {"git": {"file": FILE}}},
                     "healthCheck": {"timeout": "2m"},
                     "autoRollback": true},
        }),
    )
    .await?;
    wait_resolved(&sb, NS, APP).await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    // Known data, the version and the Git file before the upgrade.
    let dir = bound_volume_dir(&sb, NS, CLAIM).await?;
    write_data(&dir, &format!("rows before the upgrade ({run})\n"))?;
    let data_before = checksums(&dir)?;
    let version_before = deployed(&sb, NS).await?;
    let file_before = git_file(&sb, &repo)?;
    let replicas_before = replicas(&sb).await?;
    let target = if version_before == "1.0.1" {
        "1.1.0"
    } else {
        "1.0.1"
    };

    let up = format!("datastore-{run}-up");
    let ended = upgrade(&sb, &up, target).await?;
    check_rolled_out(&sb, NS, &ended, target).await?;
    // The new version "migrates" the data.
    write_data(&dir, &format!("rows migrated by {target} ({run})\n"))?;
    assert_ne!(checksums(&dir)?, data_before);

    // A dry run shows the revert's exact diff and touches nothing.
    let uid_before_dry = claim_uid(&sb).await?;
    let dry = format!("{up}-dry-run");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": dry},
        "spec": {"upgradeRequestRef": {"name": up}, "dryRun": true},
    }))?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .create(&PostParams::default(), &req)
        .await?;
    let (done, _) = follow_rollback(&sb, NS, &dry).await?;
    let status = done.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );
    let result = status.dry_run.context("dry run result")?;
    assert!(
        result.checks.iter().all(|c| c.passed),
        "{:?}",
        result.checks
    );
    let diff = result.diff.unwrap_or_default();
    assert!(
        diff.contains(&format!("-    tag: {target}"))
            && diff.contains(&format!("+    tag: {version_before}")),
        "{diff}"
    );
    assert_eq!(
        claim_uid(&sb).await?,
        uid_before_dry,
        "a dry run touched the claim"
    );
    assert!(!suspended(&sb, NS).await?, "a dry run suspended Flux");
    assert_ne!(checksums(&dir)?, data_before, "a dry run restored data");

    // Roll back; the controller is killed once each phase is reached and started again.
    let rb = format!("{up}-rollback");
    create_rollback(&sb, NS, &rb, &up).await?;
    for kill_at in [
        RollbackPhase::Suspending,
        RollbackPhase::StoppingApp,
        RollbackPhase::RestoringVolumes,
        RollbackPhase::Reverting,
        RollbackPhase::StartingApp,
    ] {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let phase = rollback_phase(&sb, NS, &rb)
                .await?
                .status
                .and_then(|s| s.phase)
                .unwrap_or_default();
            if phase >= kill_at {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "never reached {kill_at:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rollbacker.abort();
        let _ = (&mut rollbacker).await;
        rollbacker = start_rollbacker(&sb, &stop);
        println!("rollback controller killed in {kill_at:?}");
    }
    let (done, timeline) = follow_rollback(&sb, NS, &rb).await?;
    let status = done.status.clone().unwrap_or_default();
    println!("rollback: [{}]", rollback_timeline_text(&timeline));
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );

    // What a person checks: the data of before the upgrade, in the claim of the same name.
    let restored = bound_volume_dir(&sb, NS, CLAIM).await?;
    assert_ne!(restored, dir, "the claim was recreated from the snapshot");
    assert_eq!(checksums(&restored)?, data_before, "the data is as before");
    assert!(
        !dir.exists(),
        "the migrated volume was deleted with its claim"
    );
    // Git's file is the pre-upgrade file, byte for byte, in one revert commit.
    assert_eq!(git_file(&sb, &repo)?, file_before);
    assert_eq!(commits_of(&sb, &repo, &format!("{NS}/{rb}"))?, 1);
    // Flux runs the old version, the app its old replica count, nothing is left suspended.
    assert_eq!(deployed(&sb, NS).await?, version_before);
    assert_eq!(replicas(&sb).await?, replicas_before);
    assert!(!suspended(&sb, NS).await?);
    // The upgrade says it was rolled back, and by which request (once the rollback is done).
    let upgrade_status = rolled_back(&sb, &up).await?;
    assert_eq!(
        upgrade_status.rollback_ref.map(|r| r.name),
        Some(rb.clone())
    );
    // The ManagedApp's controller writes its lastUpgrade on its own time, after the upgrade's.
    eventually(
        "the app's lastUpgrade to say RolledBack",
        Duration::from_secs(30),
        || async {
            let last = app(&sb, NS, APP)
                .await?
                .status
                .and_then(|s| s.last_upgrade)
                .context("lastUpgrade")?;
            Ok(match last.status.as_deref() {
                Some("RolledBack") => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;

    // A rollback may name a snapshot instead: FluxUp finds the upgrade that took it from its
    // labels (shown here as a dry run). A snapshot FluxUp did not take is refused.
    let snapshot = ended_snapshot(&sb, &up).await?;
    let by_snapshot = format!("{up}-by-snapshot");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": by_snapshot},
        "spec": {"snapshotRef": {"name": snapshot}, "managedAppRef": {"name": APP}, "dryRun": true},
    }))?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .create(&PostParams::default(), &req)
        .await?;
    let (done, _) = follow_rollback(&sb, NS, &by_snapshot).await?;
    let checks = done
        .status
        .and_then(|s| s.dry_run)
        .context("dry run")?
        .checks;
    assert!(
        checks[0]
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with(&format!("undoes {up}:"))),
        "{checks:?}"
    );
    // That upgrade was rolled back already: restoring its snapshot again would write old data
    // over what the app wrote since, so a second rollback of it is refused, saying why.
    let once = checks
        .iter()
        .find(|c| c.name == "once")
        .context("no `once` check")?;
    assert!(!once.passed, "{once:?}");
    assert!(
        once.message
            .as_deref()
            .is_some_and(|m| m.contains("was already rolled back")),
        "{once:?}"
    );
    sb.apply(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "hand-made"},
        "spec": {"source": {"persistentVolumeClaimName": "gone"}},
    }))
    .await?;
    let foreign: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": "foreign-snapshot"},
        "spec": {"snapshotRef": {"name": "hand-made"}, "managedAppRef": {"name": APP}},
    }))?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), sb.ns())
        .create(&PostParams::default(), &foreign)
        .await?;
    let refused = eventually(
        "the foreign snapshot refused",
        Duration::from_secs(30),
        || async {
            let r = Api::<RollbackRequest>::namespaced(sb.client.clone(), sb.ns())
                .get("foreign-snapshot")
                .await?;
            let status = r.status.unwrap_or_default();
            Ok(match status.phase {
                Some(RollbackPhase::Failed) => Ok(status.message.unwrap_or_default()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    assert!(
        refused.contains("hand-made was not taken by a FluxUp upgrade"),
        "{refused}"
    );

    // A rollback whose snapshot is gone is refused, and nothing is touched.
    let up2 = format!("datastore-{run}-up-again");
    let ended = upgrade(&sb, &up2, target).await?;
    check_rolled_out(&sb, NS, &ended, target).await?;
    let snapshot = ended
        .status()
        .snapshot
        .context("snapshot")?
        .pvcs
        .remove(0)
        .snapshot_name;
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(sb.client.clone(), NS);
    snapshots.delete(&snapshot, &Default::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while snapshots.get_opt(&snapshot).await?.is_some() {
        anyhow::ensure!(Instant::now() < deadline, "snapshot {snapshot} not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let uid_before = claim_uid(&sb).await?;
    let refused = format!("{up2}-rollback");
    create_rollback(&sb, NS, &refused, &up2).await?;
    let (done, _) = follow_rollback(&sb, NS, &refused).await?;
    let status = done.status.unwrap_or_default();
    assert_eq!(status.phase, Some(RollbackPhase::Failed));
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with("refused; nothing was changed")
            && message.contains(&format!("VolumeSnapshot {snapshot} does not exist")),
        "{message}"
    );
    assert_eq!(
        claim_uid(&sb).await?,
        uid_before,
        "the claim was not touched"
    );
    assert!(!suspended(&sb, NS).await?);
    assert_eq!(deployed(&sb, NS).await?, target, "the app was not touched");

    // Auto-rollback: an upgrade to a release Flux cannot install fails, and the app, which
    // asks for auto-rollback, is rolled back to the version and data of before it.
    let dir = bound_volume_dir(&sb, NS, CLAIM).await?;
    write_data(&dir, &format!("rows before the failing upgrade ({run})\n"))?;
    let data_before = checksums(&dir)?;
    let failing = format!("datastore-{run}-rc");
    let ended = upgrade(&sb, &failing, "2.1.0-rc.1").await?;
    assert_eq!(ended.phase(), UpgradePhase::Failed);
    write_data(&dir, "half-migrated rows\n")?;
    let auto = rollback_linked(&sb, NS, &failing).await?;
    let (done, timeline) = follow_rollback(&sb, NS, &auto).await?;
    println!("auto-rollback: [{}]", rollback_timeline_text(&timeline));
    let status = done.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(deployed(&sb, NS).await?, target);
    let restored = bound_volume_dir(&sb, NS, CLAIM).await?;
    assert_eq!(checksums(&restored)?, data_before);
    rolled_back(&sb, &failing).await?;

    // Leave the demo at the version it had.
    let back = upgrade(&sb, &format!("datastore-{run}-back"), &version_before).await?;
    check_rolled_out(&sb, NS, &back, &version_before).await?;

    // What Prometheus would read from this process (the controllers ran in it).
    let metrics = fluxup_operator::metrics::encode();
    for line in [
        "fluxup_upgrades_total{result=\"succeeded\"} 3",
        "fluxup_upgrades_total{result=\"failed\"} 1",
        "fluxup_rollbacks_total{result=\"succeeded\"} 2",
        // The foreign snapshot, the missing one, and the dry run by snapshot (refused: that
        // upgrade was rolled back already); the dry run by upgrade.
        "fluxup_rollbacks_total{result=\"failed\"} 3",
        "fluxup_rollbacks_total{result=\"dry_run\"} 1",
        "fluxup_rollback_duration_seconds_count{result=\"succeeded\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // The snapshots FluxUp keeps for the app, as `kubectl get volumesnapshots` counts them: at
    // most `keepLast` (3) once retention has run after the last upgrade.
    let snapshots = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), NS);
    let of_app = ListParams::default().labels(&format!("{}={APP}", snapshots::APP_LABEL));
    eventually(
        "retention, and its count in /metrics",
        Duration::from_secs(30),
        || async {
            let kept = snapshots
                .list(&of_app)
                .await?
                .items
                .iter()
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .count();
            let line = format!("fluxup_snapshots{{namespace=\"{NS}\",app=\"{APP}\"}} {kept}");
            let metrics = fluxup_operator::metrics::encode();
            Ok(if (1..=3).contains(&kept) && metrics.contains(&line) {
                Ok(())
            } else {
                Err(format!("{kept} kept; {line} not in:\n{metrics}"))
            })
        },
    )
    .await?;
    Ok(())
}

/// The snapshot the upgrade `upgrade` took.
async fn ended_snapshot(sb: &Sandbox, upgrade: &str) -> anyhow::Result<String> {
    let status = Api::<UpgradeRequest>::namespaced(sb.client.clone(), NS)
        .get(upgrade)
        .await?
        .status
        .unwrap_or_default();
    Ok(status
        .snapshot
        .context("no snapshot")?
        .pvcs
        .first()
        .context("no snapshot")?
        .snapshot_name
        .clone())
}

/// Waits until the UpgradeRequest `upgrade` is marked RolledBack, and returns its status.
async fn rolled_back(
    sb: &Sandbox,
    upgrade: &str,
) -> anyhow::Result<fluxup_api::UpgradeRequestStatus> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);
    eventually(
        &format!("{upgrade} RolledBack"),
        Duration::from_secs(20),
        || async {
            let status = api.get(upgrade).await?.status.unwrap_or_default();
            Ok(if status.phase == Some(UpgradePhase::RolledBack) {
                Ok(status)
            } else {
                Err(format!("{:?}", status.phase))
            })
        },
    )
    .await
}
