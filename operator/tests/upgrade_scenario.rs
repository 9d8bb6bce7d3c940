//! Scenario: approved upgrades of the demo apps with real Flux, CSI snapshots and Gitea. An
//! UpgradeRequest for the chart of `webapp` (HelmRepository) and of `datastore` (OCIRepository,
//! a StatefulSet on a CSI volume) ends Succeeded: for `datastore` the snapshot was ready before
//! the commit and the StatefulSet runs again; the commit's diff in Gitea is exactly the version
//! line; Flux rolled the new version out; the Kustomization is resumed. Each app is then moved
//! back, so the demo stays as other tests expect it.

use anyhow::Context as _;
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{ManagedApp, UpgradePhase, UpgradeRequest};
use fluxup_operator::managed_app::resolve::without_flux_digest;
use fluxup_operator::sandbox::{Sandbox, demo_script, eventually, seed_demo};
use fluxup_operator::{Scope, ingest, managed_app, renovate, upgrade};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The upgrade controller, as a task that can be killed (aborted: no clean-up code runs).
fn start_upgrader(sb: &Sandbox, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    let t = stop.clone();
    tokio::spawn(upgrade::controller::run(
        sb.client.clone(),
        Scope::default(),
        async move { t.cancelled().await },
    ))
}

/// How many commits on `main` carry the trailer of `request` (`namespace/name`).
fn commits_of(sb: &Sandbox, repo: &str, request: &str) -> anyhow::Result<usize> {
    let gitea = sb.gitea()?;
    let commits = gitea.ok(
        "GET",
        &format!("/repos/{repo}/commits?sha=main&limit=50&stat=false&files=false"),
        None,
    )?;
    let trailer = format!("FluxUp-Request: {request}");
    Ok(commits
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    c["commit"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&trailer))
                })
                .count()
        })
        .unwrap_or(0))
}

/// The chart version Flux runs now (from the HelmRelease, not the app's status, which follows it).
async fn deployed(sb: &Sandbox, name: &str) -> anyhow::Result<String> {
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), name)
        .get(name)
        .await?;
    let version = hr
        .status
        .and_then(|s| s.history.first().map(|h| h.chart_version.clone()));
    Ok(without_flux_digest(&version.context("no release yet")?).to_string())
}

async fn app(sb: &Sandbox, name: &str) -> anyhow::Result<ManagedApp> {
    Ok(Api::<ManagedApp>::namespaced(sb.client.clone(), name)
        .get(name)
        .await?)
}

/// Approves an upgrade of `app` to chart `version` and waits until it ends; returns it.
async fn upgrade_to(
    sb: &Sandbox,
    name: &str,
    request: &str,
    version: &str,
) -> anyhow::Result<UpgradeRequest> {
    run_request(sb, name, request, version, false).await
}

/// Creates an UpgradeRequest (a dry run or not) and waits until it ends; returns it.
async fn run_request(
    sb: &Sandbox,
    name: &str,
    request: &str,
    version: &str,
    dry_run: bool,
) -> anyhow::Result<UpgradeRequest> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), name);
    create_request(&api, name, request, version, dry_run).await?;
    wait_ended(&api, request, Duration::from_secs(240), name).await
}

/// Creates an UpgradeRequest of app `name` (in its namespace) to chart `version`.
async fn create_request(
    api: &Api<UpgradeRequest>,
    name: &str,
    request: &str,
    version: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let req: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": request},
        "spec": {"managedAppRef": {"name": name}, "targetVersion": {"chart": version}, "dryRun": dry_run},
    }))?;
    api.create(&PostParams::default(), &req).await?;
    Ok(())
}

/// Waits until the request has ended (Succeeded, Failed or RolledBack) and returns it.
async fn wait_ended(
    api: &Api<UpgradeRequest>,
    request: &str,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<UpgradeRequest> {
    eventually(what, timeout, || async {
        let req = api.get(request).await?;
        let phase = req
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default();
        Ok(if phase.is_terminal() {
            Ok(req)
        } else {
            Err(format!("stuck in {phase:?}: {:?}", req.status))
        })
    })
    .await
}

async fn check_rolled_out(
    sb: &Sandbox,
    name: &str,
    req: &UpgradeRequest,
    version: &str,
) -> anyhow::Result<()> {
    let status = req.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{name}: {:?}",
        status.message
    );
    let sha = status
        .upgrade
        .and_then(|u| u.git_commit)
        .context("no commit recorded")?;
    let gitea = sb.gitea()?;
    let repo = format!("{}/fleet", gitea.user);
    let (code, diff) = gitea.call(
        "GET",
        &format!("/repos/{repo}/git/commits/{sha}.diff"),
        None,
    )?;
    assert_eq!(code, 200);
    let diff = diff.as_str().unwrap_or_default().to_string();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "{name}: the diff is the version line only:\n{diff}"
    );
    assert!(changed[1].contains(version), "{diff}");
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), name)
        .get(name)
        .await?;
    let deployed = hr
        .status
        .and_then(|s| s.history.first().map(|h| h.chart_version.clone()))
        .unwrap_or_default();
    assert!(
        deployed.starts_with(version),
        "{name}: Flux runs {deployed}"
    );
    let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
        .get(name)
        .await?;
    assert_ne!(
        ks.spec.suspend,
        Some(true),
        "{name}: the Kustomization was left suspended"
    );
    Ok(())
}

#[tokio::test]
async fn approved_upgrades_of_the_demo_apps_succeed_with_snapshots_first() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("upgrade-scenario").await?;
    let repo = seed_demo()?;

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let t = stop.clone();
    tokio::spawn(managed_app::run(
        sb.client.clone(),
        Scope::default(),
        async move { t.cancelled().await },
    ));
    let mut upgrader = start_upgrader(&sb, &stop);

    // Requests of an earlier run in this sandbox are deleted first (their finalizer resumes Flux).
    for name in ["webapp", "datastore"] {
        let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), name);
        api.delete_collection(&Default::default(), &Default::default())
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api.list(&Default::default()).await?.items.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "old UpgradeRequests in {name} not deleted"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    // Renovate tells where each version is written.
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in ["webapp", "datastore"] {
        while app(&sb, name)
            .await?
            .status
            .and_then(|s| s.resolved)
            .is_none()
        {
            anyhow::ensure!(Instant::now() < deadline, "{name} not resolved");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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

    // A dry run shows the exact diff and changes nothing: not Git, not Flux.
    let gitea = sb.gitea()?;
    let head = || -> anyhow::Result<String> {
        let b = gitea.ok("GET", &format!("/repos/{repo}/branches/main"), None)?;
        Ok(b["commit"]["id"].as_str().unwrap_or_default().to_string())
    };
    let head_before = head()?;
    let dry = run_request(
        &sb,
        "webapp",
        &format!("webapp-{run}-dry-run"),
        "2.0.0",
        true,
    )
    .await?;
    let status = dry.status.clone().unwrap_or_default();
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
    let diff = result.diff.context("diff")?;
    assert!(diff.contains("+      version: 2.0.0"), "{diff}");
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        1,
        "{diff}"
    );
    assert_eq!(head()?, head_before, "a dry run committed");
    let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
        .get("webapp")
        .await?;
    assert_ne!(ks.spec.suspend, Some(true), "a dry run suspended Flux");

    // A version the chart source does not have is refused before anything changes.
    let typo = run_request(&sb, "webapp", &format!("webapp-{run}-typo"), "9.9.9", false).await?;
    let status = typo.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    assert_eq!(status.conditions[0].reason, "PreflightFailed");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("webapp has no version 9.9.9 in http://"),
        "{message}"
    );
    assert_eq!(head()?, head_before, "a refused upgrade committed");

    for name in ["webapp", "datastore"] {
        let before = app(&sb, name)
            .await?
            .status
            .and_then(|s| s.current_version)
            .and_then(|v| v.chart)
            .context("current chart")?;
        let target = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };
        let started = Instant::now();
        let req = upgrade_to(&sb, name, &format!("{name}-{run}-to-{target}"), target).await?;
        println!(
            "{name}: {before} → {target} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        check_rolled_out(&sb, name, &req, target).await?;

        if name == "datastore" {
            let status = req.status.clone().unwrap_or_default();
            let snap = status.snapshot.context("no snapshot recorded")?;
            let snapshot = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), name)
                .get(&snap.pvcs[0].snapshot_name)
                .await?;
            assert_eq!(snapshot.status.and_then(|s| s.ready_to_use), Some(true));
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
        let back = upgrade_to(
            &sb,
            name,
            &format!("{name}-{run}-back-to-{before}"),
            &before,
        )
        .await?;
        check_rolled_out(&sb, name, &back, &before).await?;
    }

    // A snapshot that cannot be taken (its class does not exist): the upgrade fails before any
    // commit, says why, and leaves Flux resumed and the StatefulSet running again.
    let broken: ManagedApp = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": "datastore-broken-snapshots", "namespace": "datastore"},
        "spec": {"helmReleaseRef": {"name": "datastore"},
                 "kustomizationRef": {"name": "datastore", "namespace": "flux-system"},
                 "volumeSnapshots": {"volumeSnapshotClassName": "no-such-class",
                                     "pvcs": [{"name": "data-datastore-0"}]},
                 // No Renovate findings for this app: where the version lives is said here.
                 "versionPolicy": {"chart": {"git": {"file": "apps/datastore/ocirepository.yaml"}}}},
    }))?;
    let apps: Api<ManagedApp> = Api::namespaced(sb.client.clone(), "datastore");
    apps.patch(
        "datastore-broken-snapshots",
        &kube::api::PatchParams::apply("test").force(),
        &kube::api::Patch::Apply(&broken),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
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
    let head_before = head()?;
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), "datastore");
    let request = format!("datastore-{run}-no-snapshot");
    let req: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest", "metadata": {"name": request},
        "spec": {"managedAppRef": {"name": "datastore-broken-snapshots"}, "targetVersion": {"chart": "1.0.1"}},
    }))?;
    api.create(&PostParams::default(), &req).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let failed = loop {
        let req = api.get(&request).await?;
        if req.status.as_ref().and_then(|s| s.phase) == Some(UpgradePhase::Failed) {
            // Failed, and the clean-up after it done.
            let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
                .get("datastore")
                .await?;
            let sts = Api::<StatefulSet>::namespaced(sb.client.clone(), "datastore")
                .get("datastore")
                .await?;
            if ks.spec.suspend != Some(true) && sts.spec.and_then(|s| s.replicas) == Some(1) {
                break req;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no clean failure: {:?}",
            req.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = failed.status.unwrap_or_default();
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("no-such-class") && message.contains("nothing was committed"),
        "{message}"
    );
    assert_eq!(status.conditions[0].reason, "SnapshotFailed");
    assert_eq!(head()?, head_before, "a failed upgrade committed");
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
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), "webapp");
    let original = deployed(&sb, "webapp").await?;
    for (i, kill_at) in phases.iter().enumerate() {
        let before = deployed(&sb, "webapp").await?;
        let target = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };
        let request = format!("webapp-{run}-kill-{i}");
        create_request(&api, "webapp", &request, target, false).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let phase = api
                .get(&request)
                .await?
                .status
                .and_then(|s| s.phase)
                .unwrap_or_default();
            if phase >= *kill_at {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "never reached {kill_at:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        upgrader.abort();
        let _ = (&mut upgrader).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        upgrader = start_upgrader(&sb, &stop);
        let done = wait_ended(
            &api,
            &request,
            Duration::from_secs(180),
            &format!("killed at {kill_at:?}"),
        )
        .await?;
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
        let back = upgrade_to(&sb, "webapp", &format!("webapp-{run}-restore"), &original).await?;
        check_rolled_out(&sb, "webapp", &back, &original).await?;
    }
    upgrader.abort();
    Ok(())
}
