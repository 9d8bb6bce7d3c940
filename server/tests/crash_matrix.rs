//! Scenario: the crash matrix. The real `fluxup serve` process (built with its crash points, the
//! `failpoints` feature of test builds) aborts right after a side effect of an upgrade of the
//! demo datastore — each write to the API server and the Git push — and is started again; each
//! run dies at the next point it has not died at before, until a run sees the upgrade to its
//! end. Then the same for a rollback of that upgrade. Every point converges: one commit each,
//! one snapshot, nothing left suspended or stopped, and the data of before the upgrade back in
//! the claim (checksums).

#[path = "../../operator/tests/common/mod.rs"]
mod common;
mod support;

use anyhow::Context as _;
use common::*;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{RollbackPhase, RollbackRequest, UpgradePhase, UpgradeRequest};
use fluxup_operator::snapshots::OPERATION_LABEL;
use fluxup_sandbox::{Sandbox, repo_root, seed_demo};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{sigkill, start_operator};

const NS: &str = "datastore";
const APP: &str = "datastore-crash";
const CLAIM: &str = "data-datastore-0";
/// The CronJob the upgrade's verification Job is made from.
const VERIFY: &str = "datastore-verify";

/// Starts FluxUp again and again with its crash points armed until `done` says the operation
/// has ended and released what it held. Returns the points it died at, in order.
async fn crash_until_done<F, Fut>(
    sb: &Sandbox,
    what: &str,
    points: &Path,
    mut done: F,
) -> anyhow::Result<Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let before = std::fs::read_to_string(points).unwrap_or_default();
    for run in 0..120 {
        let (mut child, _) = start_operator(
            sb,
            &format!("crash-matrix-{what}-{run}.log"),
            &[
                ("FLUXUP_CRASH_LOG", &points.display().to_string()),
                ("FLUXUP_CRASH_NAMESPACE", NS),
                // The dead process's Lease expires quickly, so the next one takes over.
                ("FLUXUP_LEASE_SECONDS", "2"),
            ],
        )?;
        let started = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break; // died at a crash point
            }
            if done().await? {
                // The point after the last write (e.g. `released`) may still be on its way: a
                // process that is about to die at it gets the time to, so the point counts.
                let grace = Instant::now();
                while child.try_wait()?.is_none() && grace.elapsed() < Duration::from_secs(3) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if child.try_wait()?.is_none() {
                    sigkill(child)?;
                }
                let all = std::fs::read_to_string(points).unwrap_or_default();
                return Ok(all[before.len()..].lines().map(String::from).collect());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(240),
                "{what}: run {run} neither crashed nor finished (see target/crash-matrix-{what}-{run}.log)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    anyhow::bail!("{what}: more than 120 crashes")
}

#[tokio::test]
async fn every_crash_point_of_an_upgrade_and_its_rollback_converges() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("crash-matrix").await?;
    let repo = seed_demo()?;
    // A FluxUp without crash points first: old requests' finalizers need it.
    let (calm, _) = start_operator(
        &sb,
        "crash-matrix-calm.log",
        &[("FLUXUP_LEASE_SECONDS", "2")],
    )?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    delete_requests(&sb, NS).await?;
    // The upgrade ends with a verification Job (kwok completes its pod), so that creating it
    // is a crash point too.
    Api::<CronJob>::namespaced(sb.client.clone(), NS)
        .patch(
            VERIFY,
            &PatchParams::apply("crash-matrix").force(),
            &Patch::Apply(json!({
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": VERIFY},
                "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {"spec": {
                    "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "verify", "image": "verify.invalid/verify:1"}]}}}}},
            })),
        )
        .await?;
    apply_app(
        &sb,
        app_copy(
            APP,
            NS,
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                       "pvcs": [{"name": CLAIM}]},
                   "healthCheck": {"timeout": "90s", "verification": {"cronJob": VERIFY}}}),
        ),
    )
    .await?;
    wait_resolved(&sb, NS, APP).await?;
    nothing_held(&sb, NS).await?;
    sigkill(calm)?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    let points = repo_root().join("target/crash-matrix.points");
    let _ = std::fs::remove_file(&points);

    let dir = bound_volume_dir(&sb, NS, CLAIM).await?;
    write_data(&dir, &format!("rows before the upgrade ({run})\n"))?;
    let data_before = checksums(&dir)?;
    let before = deployed(&sb, NS).await?;
    let target = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };

    // The upgrade.
    let up = format!("datastore-{run}-crash");
    create_request(&sb, NS, APP, &up, chart(target), false).await?;
    let upgrades: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);
    let upgrade_points = crash_until_done(&sb, "upgrade", &points, || async {
        let r = upgrades.get(&up).await?;
        Ok(r.status.is_some_and(|s| s.released_at.is_some()))
    })
    .await?;
    println!(
        "upgrade: {} crash points, each converged: {}",
        upgrade_points.len(),
        upgrade_points.join(", ")
    );
    let ended = upgrades.get(&up).await?;
    let uid = ended.uid().context("uid")?;
    let status = ended.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(deployed(&sb, NS).await?, target);
    assert_eq!(commits_of_operation(&sb, &repo, &uid)?, 1, "one commit");
    let snapshots = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), NS)
        .list(&ListParams::default().labels(&format!("{OPERATION_LABEL}={uid}")))
        .await?;
    assert_eq!(snapshots.items.len(), 1, "one snapshot");
    let verifications = Api::<Job>::namespaced(sb.client.clone(), NS)
        .list(&ListParams::default().labels(&format!(
            "{}={up}",
            fluxup_operator::operation::verification::UPGRADE_LABEL
        )))
        .await?;
    assert_eq!(verifications.items.len(), 1, "one verification Job");
    nothing_held(&sb, NS).await?;

    // The new version "migrates" the data; the rollback brings back what was there before.
    write_data(&dir, &format!("rows migrated by {target} ({run})\n"))?;
    let rb = format!("{up}-rollback");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": rb},
        "spec": {"upgradeRequestRef": {"name": up}},
    }))?;
    let rollbacks: Api<RollbackRequest> = Api::namespaced(sb.client.clone(), NS);
    rollbacks.create(&PostParams::default(), &req).await?;
    let rollback_points = crash_until_done(&sb, "rollback", &points, || async {
        let r = rollbacks.get(&rb).await?;
        Ok(r.status.is_some_and(|s| s.released_at.is_some()))
    })
    .await?;
    println!(
        "rollback: {} crash points, each converged: {}",
        rollback_points.len(),
        rollback_points.join(", ")
    );
    let done = rollbacks.get(&rb).await?;
    let rollback_uid = done.uid().context("uid")?;
    let status = done.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(
        deployed(&sb, NS).await?,
        before,
        "the previous version runs"
    );
    assert_eq!(
        commits_of_operation(&sb, &repo, &rollback_uid)?,
        1,
        "one revert"
    );
    let restored = bound_volume_dir(&sb, NS, CLAIM).await?;
    assert_eq!(
        checksums(&restored)?,
        data_before,
        "the data is as before the upgrade"
    );
    assert_eq!(
        upgrades.get(&up).await?.status.and_then(|s| s.phase),
        Some(UpgradePhase::RolledBack)
    );
    nothing_held(&sb, NS).await?;

    let covered = upgrade_points.len() + rollback_points.len();
    println!("crash matrix: {covered} points covered");
    for point in [
        "upgrade.take.Kustomization",
        "upgrade.take.HelmRelease",
        "upgrade.workload.scale-down",
        "upgrade.snapshot.create",
        "upgrade.push",
        "upgrade.release.HelmRelease",
        "upgrade.record-health",
        "upgrade.start-verification",
        "upgrade.workload.unmark",
        "rollback.delete-claim",
        "rollback.create-claim",
        "rollback.push",
        "rollback.released",
    ] {
        assert!(
            upgrade_points
                .iter()
                .chain(&rollback_points)
                .any(|p| p == point),
            "{point} was not crashed at"
        );
    }
    assert!(covered > 30, "only {covered} crash points");

    // The same app in pull-request mode: every point of opening the pull request, waiting for
    // the merge (the reviewer merges as soon as it is open) and rolling the merge out converges
    // too, with one pull request, one snapshot taken after the merge, and the merge rolled out.
    let snapshot_settings = json!({"volumeSnapshotClassName": "csi-snapclass",
                                   "pvcs": [{"name": CLAIM}]});
    apply_app(
        &sb,
        app_copy(
            APP,
            NS,
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": snapshot_settings, "git": {"pullRequest": {}}}),
        ),
    )
    .await?;
    let gitea = sb.gitea()?;
    let by_pr = format!("datastore-{run}-pr");
    let back_to = deployed(&sb, NS).await?;
    let pr_target = if back_to == "1.0.1" { "1.0.0" } else { "1.0.1" };
    create_request(&sb, NS, APP, &by_pr, chart(pr_target), false).await?;
    let merged_at = std::cell::Cell::new(None::<Instant>);
    let pr_points = crash_until_done(&sb, "upgrade-by-pull-request", &points, || async {
        let r = upgrades.get(&by_pr).await?;
        let status = r.status.unwrap_or_default();
        if let Some(pr) = &status.pull_request
            && merged_at.get().is_none()
        {
            // As a reviewer: merge it once it is open.
            let (code, answer) = gitea.call(
                "POST",
                &format!("/repos/{repo}/pulls/{}/merge", pr.number),
                Some(&json!({"Do": "merge"})),
            )?;
            anyhow::ensure!(code < 300, "merge: HTTP {code}: {answer}");
            merged_at.set(Some(Instant::now()));
        }
        Ok(status.released_at.is_some())
    })
    .await?;
    println!(
        "upgrade by pull request: {} crash points, each converged: {}",
        pr_points.len(),
        pr_points.join(", ")
    );
    let ended = upgrades.get(&by_pr).await?;
    let uid = ended.uid().context("uid")?;
    let status = ended.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(deployed(&sb, NS).await?, pr_target);
    let pulls = gitea.ok(
        "GET",
        &format!("/repos/{repo}/pulls?state=all&limit=50"),
        None,
    )?;
    let mine: Vec<_> = pulls
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["head"]["ref"]
                .as_str()
                .is_some_and(|h| h.ends_with(&uid[..8]))
        })
        .collect();
    assert_eq!(mine.len(), 1, "one pull request: {pulls}");
    let merge_commit = mine[0]["merge_commit_sha"].as_str().unwrap_or_default();
    assert_eq!(
        status.upgrade.and_then(|u| u.git_commit).as_deref(),
        Some(merge_commit),
        "the merge is the upgrade's commit"
    );
    let snapshots = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), NS)
        .list(&ListParams::default().labels(&format!("{OPERATION_LABEL}={uid}")))
        .await?;
    assert_eq!(snapshots.items.len(), 1, "one snapshot");
    let merged: k8s_openapi::jiff::Timestamp =
        mine[0]["merged_at"].as_str().unwrap_or_default().parse()?;
    let taken = snapshots.items[0]
        .metadata
        .creation_timestamp
        .as_ref()
        .context("no creation time")?
        .0;
    assert!(
        merged <= taken,
        "the snapshot ({taken}) was taken after the merge ({merged}), before Flux acted"
    );
    nothing_held(&sb, NS).await?;
    for point in [
        "upgrade.push-branch",
        "upgrade.open-pull-request",
        "upgrade.record-pull-request",
        "upgrade.record-merge",
    ] {
        assert!(
            pr_points.iter().any(|p| p == point),
            "{point} was not crashed at"
        );
    }

    // Rolled back (every rollback point was crashed at above, so this run ends without one):
    // the demo runs what it ran before, for the tests after this one.
    let pr_back = format!("{by_pr}-rollback");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": pr_back},
        "spec": {"upgradeRequestRef": {"name": by_pr}},
    }))?;
    rollbacks.create(&PostParams::default(), &req).await?;
    crash_until_done(&sb, "rollback-of-pull-request", &points, || async {
        let r = rollbacks.get(&pr_back).await?;
        Ok(r.status.is_some_and(|s| s.released_at.is_some()))
    })
    .await?;
    let status = rollbacks.get(&pr_back).await?.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(
        deployed(&sb, NS).await?,
        back_to,
        "the previous version runs"
    );
    nothing_held(&sb, NS).await?;
    Ok(())
}
