//! Scenario: approved upgrades of the demo apps with real Flux, CSI snapshots and Gitea. An
//! UpgradeRequest for the chart of `webapp` (HelmRepository) and of `datastore` (OCIRepository,
//! a StatefulSet on a CSI volume), and for an image tag of `webapp`, ends Succeeded: for
//! `datastore` the snapshot was ready before the commit and the StatefulSet runs again; the
//! commit's diff in Gitea is exactly the version line; Flux rolled the new version out; the
//! Kustomization is resumed. Each app is then moved back, so the demo stays as other tests expect
//! it. The operator killed at each phase converges. Each upgrade prints its phase timeline.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{LastUpgrade, ManagedApp, UpgradePhase};
use fluxup_operator::{Scope, ingest, renovate};
use fluxup_sandbox::{Sandbox, demo_script, eventually, seed_demo};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Prints an upgrade's timeline and its two latencies: approval (creation) → commit (the phase
/// after Committing is entered once the commit is recorded) and commit → Ready (Succeeded).
fn report(what: &str, ended: &Ended) {
    let commit = ended.at(UpgradePhase::Reconciling);
    let done = ended.at(UpgradePhase::Succeeded);
    if let (Some(c), Some(d)) = (commit, done) {
        println!(
            "{what}: approval→commit {:.1} s, commit→Ready {:.1} s [{}]",
            c.as_secs_f64(),
            (d - c).as_secs_f64(),
            ended.timeline_text()
        );
    } else {
        println!("{what}: [{}]", ended.timeline_text());
    }
}

#[tokio::test]
async fn approved_upgrades_of_the_demo_apps_succeed_with_snapshots_first() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("upgrade-scenario").await?;
    let repo = seed_demo()?;

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let mut upgrader = start_upgrader(&sb, &stop);

    // Requests of an earlier run in this sandbox are deleted first (their finalizer resumes Flux).
    for name in ["webapp", "datastore"] {
        delete_requests(&sb, name).await?;
    }
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    // Renovate tells where each version is written.
    for name in ["webapp", "datastore"] {
        wait_resolved(&sb, name, name).await?;
    }
    let log = demo_script("renovate", &[&repo])?;
    let findings = renovate::parse_log(&std::fs::read(log.trim())?)?;
    ingest::record(
        &sb.client,
        &Scope::default(),
        "upgrade-scenario",
        &Ok(findings),
    )
    .await?;

    // Prometheus sees which apps have an update, read from the controller's cache at scrape time.
    eventually(
        "webapp's update in /metrics",
        Duration::from_secs(30),
        || async {
            let metrics = fluxup_operator::metrics::encode();
            Ok(
                match metrics.lines().find(|l| {
                    l.starts_with("fluxup_updates_available{namespace=\"webapp\",app=\"webapp\",")
                }) {
                    Some(line) if line.ends_with("} 1") => Ok(()),
                    _ => Err(metrics),
                },
            )
        },
    )
    .await?;

    // A dry run shows the exact diff and changes nothing: not Git, not Flux.
    let head_before = head(&sb, &repo)?;
    let dry = run_request(
        &sb,
        "webapp",
        "webapp",
        &format!("webapp-{run}-dry-run"),
        chart("2.0.0"),
        true,
    )
    .await?;
    let status = dry.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(status.conditions[0].reason, "DryRun");
    let result = status.dry_run.context("dry run result")?;
    assert!(
        result.checks.iter().all(|c| c.passed),
        "{:?}",
        result.checks
    );
    let names: Vec<&str> = result.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "target",
            "references",
            "app",
            "version",
            "policy",
            "flux",
            "git"
        ]
    );
    let diff = result.diff.context("diff")?;
    assert!(diff.contains("+      version: 2.0.0"), "{diff}");
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        1,
        "{diff}"
    );
    assert_eq!(head(&sb, &repo)?, head_before, "a dry run committed");
    assert!(!suspended(&sb, "webapp").await?, "a dry run suspended Flux");
    let last = app(&sb, "webapp", "webapp")
        .await?
        .status
        .and_then(|s| s.last_upgrade);
    assert!(
        last.is_none_or(|l| l.request_name != Some(format!("webapp-{run}-dry-run"))),
        "a dry run is not an upgrade of the app"
    );

    // A version the chart source does not have is refused before anything changes.
    let typo = run_request(
        &sb,
        "webapp",
        "webapp",
        &format!("webapp-{run}-typo"),
        chart("9.9.9"),
        false,
    )
    .await?;
    let status = typo.status();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    assert_eq!(status.conditions[0].reason, "PreflightFailed");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("webapp has no version 9.9.9 in http://"),
        "{message}"
    );
    assert_eq!(
        head(&sb, &repo)?,
        head_before,
        "a refused upgrade committed"
    );

    for name in ["webapp", "datastore"] {
        let before = deployed(&sb, name).await?;
        let target = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };
        let request = format!("{name}-{run}-to-{target}");
        let ended = run_request(&sb, name, name, &request, chart(target), false).await?;
        report(&format!("{name} {before} → {target}"), &ended);
        check_rolled_out(&sb, name, &ended, target).await?;

        // The app tells how its last upgrade went (once the request's clean-up is done), and is
        // no longer Upgrading (its own controller derives that from lastUpgrade a moment later).
        let last = eventually("lastUpgrade", Duration::from_secs(20), || async {
            let status = app(&sb, name, name).await?.status.unwrap_or_default();
            Ok(match status.last_upgrade {
                Some(l)
                    if l.status.as_deref() != Some(LastUpgrade::RUNNING)
                        && status.state != Some(fluxup_api::AppState::Upgrading) =>
                {
                    Ok(l)
                }
                other => Err(format!("{other:?}, state {:?}", status.state)),
            })
        })
        .await?;
        assert_eq!(last.request_name.as_deref(), Some(request.as_str()));
        assert_eq!(last.status.as_deref(), Some("Succeeded"));
        assert_eq!(last.to_version.as_deref(), Some(target));

        if name == "datastore" {
            // The demo's datastore lists no claims: FluxUp found its StatefulSet's.
            let resolved = app(&sb, name, name)
                .await?
                .status
                .and_then(|s| s.resolved)
                .context("not resolved")?;
            assert_eq!(resolved.pvcs, ["data-datastore-0"]);
            assert!(resolved.pvcs_found, "the claims were found, not listed");
            let status = ended.status();
            let snap = status.snapshot.context("no snapshot recorded")?;
            let (created, ready) = (snap.created_at.clone(), snap.ready_at.clone());
            assert!(
                matches!((&created, &ready), (Some(c), Some(r)) if r.0 >= c.0),
                "the snapshots' createdAt {created:?} and readyAt {ready:?}"
            );
            let snapshot = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), name)
                .get(&snap.pvcs[0].snapshot_name)
                .await?;
            assert_eq!(snapshot.status.and_then(|s| s.ready_to_use), Some(true));
            assert_eq!(
                last.snapshot_name.as_deref(),
                Some(snap.pvcs[0].snapshot_name.as_str()),
                "the app names the snapshot a rollback would restore"
            );
            assert_eq!(
                status.stopped_workloads.len(),
                1,
                "the StatefulSet was stopped for the snapshot"
            );
            let sts = Api::<StatefulSet>::namespaced(sb.client.clone(), name)
                .get(name)
                .await?;
            assert_eq!(sts.spec.and_then(|s| s.replicas), Some(1), "and runs again");
        }

        // And back, leaving the demo as it was.
        let back = run_request(
            &sb,
            name,
            name,
            &format!("{name}-{run}-back-to-{before}"),
            chart(&before),
            false,
        )
        .await?;
        report(&format!("{name} {target} → {before}"), &back);
        check_rolled_out(&sb, name, &back, &before).await?;
    }

    // An image-only update: webapp's image tag 1.0.0 → 1.2.0. Only the tag line changes in Git
    // (the YAML anchor that repeats the repository stays), and the Deployment runs the new image.
    let image = format!("{}/demo/webapp", sb.env("REGISTRY_HOST")?);
    let running_image = || async {
        let d = Api::<Deployment>::namespaced(sb.client.clone(), "webapp")
            .get("webapp")
            .await?;
        anyhow::Ok(
            d.spec
                .and_then(|s| s.template.spec)
                .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
                .unwrap_or_default(),
        )
    };
    // Back at the demo's 1.0.0 at the end, whatever an interrupted run left.
    let current = running_image().await?;
    let current_tag = current.rsplit(':').next().unwrap_or_default().to_string();
    let mut tags = if current_tag == "1.0.0" {
        vec![]
    } else {
        vec!["1.0.0"]
    };
    tags.extend(["1.2.0", "1.0.0"]);
    let mut old_tag = current_tag;
    for (i, tag) in tags.into_iter().enumerate() {
        let request = format!("webapp-{run}-image-{i}-{tag}");
        let ended = run_request(
            &sb,
            "webapp",
            "webapp",
            &request,
            json!({"images": [{"name": image, "tag": tag}]}),
            false,
        )
        .await?;
        report(&format!("webapp image → {tag}"), &ended);
        let status = ended.status();
        assert_eq!(
            status.phase,
            Some(UpgradePhase::Succeeded),
            "{:?}",
            status.message
        );
        let sha = status
            .upgrade
            .and_then(|u| u.git_commit)
            .context("commit")?;
        let changed = changed_lines(&sb, &repo, &sha)?;
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(
            changed[1],
            changed[0].replacen('-', "+", 1).replacen(&old_tag, tag, 1),
            "only the tag changes; quotes and comment stay"
        );
        assert_eq!(running_image().await?, format!("{image}:{tag}"));
        assert!(!suspended(&sb, "webapp").await?);
        old_tag = tag.to_string();
    }

    // A snapshot that cannot be taken (its class does not exist): the upgrade fails before any
    // commit, says why, and leaves Flux resumed and the StatefulSet running again.
    apply_app(
        &sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "datastore-broken-snapshots", "namespace": "datastore"},
            "spec": {"helmReleaseRef": {"name": "datastore"},
                     "kustomizationRef": {"name": "datastore", "namespace": "flux-system"},
                     "volumeSnapshots": {"volumeSnapshotClassName": "no-such-class",
                                         "pvcs": [{"name": "data-datastore-0"}]},
                     // No Renovate findings for this app: where the version lives is said here.
                     "versionPolicy": {"chart": {"git": {"file": "apps/datastore/ocirepository.yaml"}}}},
        }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let apps: Api<ManagedApp> = Api::namespaced(sb.client.clone(), "datastore");
    while apps
        .get("datastore-broken-snapshots")
        .await?
        .status
        .and_then(|s| s.resolved)
        .is_none_or(|r| r.workloads.is_empty())
    {
        anyhow::ensure!(Instant::now() < deadline, "the broken app was not resolved");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let head_before = head(&sb, &repo)?;
    let request = format!("datastore-{run}-no-snapshot");
    create_request(
        &sb,
        "datastore",
        "datastore-broken-snapshots",
        &request,
        chart("1.0.1"),
        false,
    )
    .await?;
    let failed = follow(&sb, "datastore", &request, Duration::from_secs(120)).await?;
    // Failed, and the clean-up after it done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sts = Api::<StatefulSet>::namespaced(sb.client.clone(), "datastore")
            .get("datastore")
            .await?;
        if !suspended(&sb, "datastore").await? && sts.spec.and_then(|s| s.replicas) == Some(1) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no clean-up after the failure");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = failed.status();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("no-such-class") && message.contains("nothing was committed"),
        "{message}"
    );
    assert_eq!(status.conditions[0].reason, "SnapshotFailed");
    assert_eq!(head(&sb, &repo)?, head_before, "a failed upgrade committed");
    // Its snapshot, which will never be ready, is deleted.
    let snapshot = failed
        .status()
        .snapshot
        .and_then(|s| s.pvcs.first().map(|p| p.snapshot_name.clone()))
        .context("no snapshot recorded")?;
    let snapshots: Api<VolumeSnapshot> = Api::namespaced(sb.client.clone(), "datastore");
    eventually(
        "the unready snapshot deleted",
        Duration::from_secs(30),
        || async {
            Ok(match snapshots.get_opt(&snapshot).await? {
                None => Ok(()),
                Some(_) => Err(format!("{snapshot} still exists")),
            })
        },
    )
    .await?;
    apps.delete("datastore-broken-snapshots", &Default::default())
        .await?;

    // The operator killed at each phase, then started again: every upgrade still ends
    // Succeeded, with one commit, and Flux resumed.
    let phases = [
        UpgradePhase::Preflight,
        UpgradePhase::Suspending,
        UpgradePhase::Committing,
        UpgradePhase::Reconciling,
        UpgradePhase::HealthChecking,
    ];
    let original = deployed(&sb, "webapp").await?;
    for (i, kill_at) in phases.iter().enumerate() {
        let before = deployed(&sb, "webapp").await?;
        let target = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };
        let request = format!("webapp-{run}-kill-{i}");
        create_request(&sb, "webapp", "webapp", &request, chart(target), false).await?;
        wait_for_phase(&sb, "webapp", &request, *kill_at).await?;
        upgrader.abort();
        let _ = (&mut upgrader).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        upgrader = start_upgrader(&sb, &stop);
        let done = follow(&sb, "webapp", &request, Duration::from_secs(180)).await?;
        check_rolled_out(&sb, "webapp", &done, target).await?;
        assert_eq!(
            commits_of(&sb, &repo, &format!("webapp/{request}"))?,
            1,
            "killed at {kill_at:?}: commits"
        );
        println!("killed at {kill_at:?}: converged to {target}");
    }
    let last = deployed(&sb, "webapp").await?;
    if last != original {
        let back = run_request(
            &sb,
            "webapp",
            "webapp",
            &format!("webapp-{run}-restore"),
            chart(&original),
            false,
        )
        .await?;
        check_rolled_out(&sb, "webapp", &back, &original).await?;
    }
    upgrader.abort();
    Ok(())
}
