//! Scenario: pull-request mode on Gitea (`spec.git.pullRequest`), with the real Flux. An
//! approved upgrade holds Flux and opens a pull request; nothing rolls out while it is open; the
//! test merges it as a reviewer would; FluxUp then takes the snapshot, records the merge commit
//! and lets Flux roll it out. A rollback brings the old version back. A second upgrade whose pull
//! request the reviewer closes fails with nothing committed and Flux resumed. In branch mode
//! (`spec.git.branch`) the bump goes to `staging` and rolls out once it reaches `main`.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::{RollbackPhase, UpgradePhase, UpgradeRequest};
use fluxup_operator::managed_app::resolve::without_flux_digest;
use fluxup_sandbox::{Gitea, Sandbox, eventually};
use kube::Api;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FILE: &str = "app/helmrelease.yaml";
const APP: &str = "web-pr";

async fn running(sb: &Sandbox, app: &str) -> anyhow::Result<Option<String>> {
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), sb.ns())
        .get_opt(app)
        .await?;
    Ok(hr
        .and_then(|h| h.status)
        .and_then(|s| s.history.first().map(|h| h.chart_version.clone()))
        .map(|v| without_flux_digest(&v).to_string()))
}

async fn running_is(sb: &Sandbox, app: &str, version: &str) -> anyhow::Result<()> {
    eventually(
        &format!("Flux runs {app} {version}"),
        Duration::from_secs(180),
        || async {
            Ok(match running(sb, app).await? {
                Some(v) if v == version => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await
}

/// The chart version in the fleet's HelmRelease at the head of `branch`.
fn version_on(gitea: &Gitea, repo: &str, branch: &str) -> anyhow::Result<String> {
    let file = gitea.ok(
        "GET",
        &format!("/repos/{repo}/raw/{FILE}?ref={branch}"),
        None,
    )?;
    let text = file
        .as_str()
        .map(str::to_string)
        .unwrap_or(file.to_string());
    text.lines()
        .find_map(|l| l.trim().strip_prefix("version: ").map(str::to_string))
        .context("no version line")
}

async fn kustomization_suspended(sb: &Sandbox, app: &str) -> anyhow::Result<bool> {
    let ks = Api::<Kustomization>::namespaced(sb.client.clone(), sb.ns())
        .get(app)
        .await?;
    Ok(ks.spec.suspend == Some(true))
}

/// A fleet repository on Gitea with app `app` (chart 1.0.0), reached over HTTP with a user and
/// a token as Flux and FluxUp share it; Flux installs it, and a ManagedApp with `git` manages
/// it. Returns the repository.
async fn fleet(
    sb: &Sandbox,
    gitea: &Gitea,
    app: &str,
    git: serde_json::Value,
) -> anyhow::Result<String> {
    let ns = sb.ns().to_string();
    let repo = gitea.create_repo(&format!("{ns}-{app}"))?;
    gitea.commit_files(
        &repo,
        "main",
        "the fleet",
        &[
            (
                "app/helmrepository.yaml",
                &format!(
                    "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts-{app}\n  namespace: {ns}\nspec:\n  interval: 5m\n  url: {}\n",
                    sb.env("HELM_REPO_URL")?
                ),
            ),
            (
                FILE,
                &format!(
                    "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {app}\n  namespace: {ns}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: webapp\n      version: 1.0.0\n      sourceRef:\n        kind: HelmRepository\n        name: charts-{app}\n"
                ),
            ),
        ],
    )?;
    sb.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": app},
        "stringData": {"username": gitea.user, "password": gitea.token},
    }))
    .await?;
    sb.apply(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": app},
        "spec": {"interval": "1m", "url": gitea.clone_url(&repo), "ref": {"branch": "main"},
                 "secretRef": {"name": app}},
    }))
    .await?;
    sb.apply(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": app},
        "spec": {"interval": "5m", "path": "./app", "prune": true, "wait": false, "timeout": "3m",
                 "sourceRef": {"kind": "GitRepository", "name": app}},
    }))
    .await?;
    running_is(sb, app, "1.0.0").await?;
    apply_app(
        sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": app, "namespace": ns},
            "spec": {"helmReleaseRef": {"name": app},
                     "kustomizationRef": {"name": app, "namespace": ns},
                     "versionPolicy": {"chart": {"git": {"file": FILE}}},
                     "git": git,
                     "healthCheck": {"timeout": "2m"}},
        }),
    )
    .await?;
    wait_resolved(sb, &ns, app).await?;
    Ok(repo)
}

/// Waits until the upgrade `name` has opened its pull request; returns its number.
async fn pull_request_opened(sb: &Sandbox, name: &str) -> anyhow::Result<(i64, String)> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), sb.ns());
    eventually(
        &format!("{name} to open its pull request"),
        Duration::from_secs(90),
        || async {
            let status = api.get(name).await?.status.unwrap_or_default();
            Ok(match (&status.pull_request, status.phase) {
                (Some(pr), Some(UpgradePhase::AwaitingMerge)) => Ok((pr.number, pr.branch.clone())),
                _ => Err(format!("{:?}: {:?}", status.phase, status.message)),
            })
        },
    )
    .await
}

#[tokio::test]
async fn an_upgrade_proposed_as_a_pull_request_or_on_a_branch_rolls_out_once_merged()
-> anyhow::Result<()> {
    let sb = Sandbox::start_full("pr-scenario").await?;
    let ns = sb.ns().to_string();
    let gitea = sb.gitea()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);

    let repo = fleet(&sb, &gitea, APP, json!({"pullRequest": {}})).await?;

    // Approved: Flux is held and the pull request opened; nothing else changes until a
    // reviewer merges it.
    let up = "web-pr-1.0.1";
    create_request(&sb, &ns, APP, up, chart("1.0.1"), false).await?;
    let (number, branch) = pull_request_opened(&sb, up).await?;
    assert!(
        kustomization_suspended(&sb, APP).await?,
        "Flux is held while the pull request is open"
    );
    assert_eq!(
        version_on(&gitea, &repo, "main")?,
        "1.0.0",
        "main is as it was"
    );
    assert_eq!(
        version_on(&gitea, &repo, &branch)?,
        "1.0.1",
        "the pull request's branch has the bump"
    );
    let pr = gitea.ok("GET", &format!("/repos/{repo}/pulls/{number}"), None)?;
    assert_eq!(pr["state"], "open");
    assert_eq!(pr["base"]["ref"], "main");
    assert!(
        pr["title"].as_str().unwrap_or_default().contains("1.0.1"),
        "the title names the version: {}",
        pr["title"]
    );
    // Open pull requests are not opened twice (the controller looks again every few seconds).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let open = gitea.ok("GET", &format!("/repos/{repo}/pulls?state=all"), None)?;
    assert_eq!(
        open.as_array().map(Vec::len),
        Some(1),
        "one pull request: {open}"
    );
    assert_eq!(running(&sb, APP).await?.as_deref(), Some("1.0.0"));

    // The reviewer merges it: FluxUp takes over, and Flux rolls the merge out.
    gitea.ok(
        "POST",
        &format!("/repos/{repo}/pulls/{number}/merge"),
        Some(&json!({"Do": "merge"})),
    )?;
    let ended = follow(&sb, &ns, up, Duration::from_secs(240)).await?;
    let status = ended.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?} [{}]",
        status.message,
        ended.timeline_text()
    );
    println!("pull request #{number}: [{}]", ended.timeline_text());
    let merged = gitea.ok("GET", &format!("/repos/{repo}/pulls/{number}"), None)?;
    let merge_commit = merged["merge_commit_sha"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let recorded = status
        .upgrade
        .and_then(|u| u.git_commit)
        .context("no commit")?;
    assert_eq!(recorded, merge_commit, "the upgrade's commit is the merge");
    assert_eq!(head(&sb, &repo)?, merge_commit, "the merge is main's head");
    let record = status.pull_request.context("no pull request recorded")?;
    assert_eq!(
        (record.state.as_str(), record.merge_commit.as_deref()),
        ("merged", Some(merge_commit.as_str()))
    );
    assert!(!kustomization_suspended(&sb, APP).await?, "Flux resumed");
    running_is(&sb, APP, "1.0.1").await?;

    // A rollback reverts it on main and brings the old version back.
    let back = "web-pr-back";
    create_rollback(&sb, &ns, back, up).await?;
    let (ended_back, _) = follow_rollback(&sb, &ns, back).await?;
    let back_status = ended_back.status.unwrap_or_default();
    assert_eq!(
        back_status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        back_status.message
    );
    assert_eq!(version_on(&gitea, &repo, "main")?, "1.0.0");
    running_is(&sb, APP, "1.0.0").await?;

    // A reviewer closes the next pull request unmerged: the upgrade fails, nothing is
    // committed to main, and Flux is resumed.
    let main_before = head(&sb, &repo)?;
    let again = "web-pr-again";
    create_request(&sb, &ns, APP, again, chart("1.0.1"), false).await?;
    let (number, _) = pull_request_opened(&sb, again).await?;
    gitea.ok(
        "PATCH",
        &format!("/repos/{repo}/pulls/{number}"),
        Some(&json!({"state": "closed"})),
    )?;
    let ended = follow(&sb, &ns, again, Duration::from_secs(120)).await?;
    let status = ended.status();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "pull request #{number} was closed without being merged"
        )),
        "{message}"
    );
    assert_eq!(head(&sb, &repo)?, main_before, "nothing committed to main");
    eventually("Flux resumed", Duration::from_secs(30), || async {
        Ok(if kustomization_suspended(&sb, APP).await? {
            Err("still suspended".to_string())
        } else {
            Ok(())
        })
    })
    .await?;
    assert_eq!(running(&sb, APP).await?.as_deref(), Some("1.0.0"));

    // Branch mode: the bump goes to `staging`, and rolls out once it reaches `main` (here a
    // person promotes staging by merging it); until then Flux is held and main is untouched.
    let other = "web-branch";
    let repo = fleet(&sb, &gitea, other, json!({"branch": "staging"})).await?;
    gitea.ok(
        "POST",
        &format!("/repos/{repo}/branches"),
        Some(&json!({"new_branch_name": "staging", "old_branch_name": "main"})),
    )?;
    let staged = "web-branch-1.0.1";
    create_request(&sb, &ns, other, staged, chart("1.0.1"), false).await?;
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), &ns);
    let pushed = eventually("the bump on staging", Duration::from_secs(90), || async {
        let status = api.get(staged).await?.status.unwrap_or_default();
        Ok(match (&status.pushed, status.phase) {
            (Some(p), Some(UpgradePhase::AwaitingMerge)) => Ok(p.commit.clone()),
            _ => Err(format!("{:?}: {:?}", status.phase, status.message)),
        })
    })
    .await?;
    assert_eq!(version_on(&gitea, &repo, "staging")?, "1.0.1");
    assert_eq!(
        version_on(&gitea, &repo, "main")?,
        "1.0.0",
        "main is untouched"
    );
    assert!(
        kustomization_suspended(&sb, other).await?,
        "Flux is held until it reaches main"
    );
    // The promotion: staging merged into main.
    let pr = gitea.ok(
        "POST",
        &format!("/repos/{repo}/pulls"),
        Some(&json!({"base": "main", "head": "staging", "title": "promote staging"})),
    )?;
    gitea.ok(
        "POST",
        &format!("/repos/{repo}/pulls/{}/merge", pr["number"]),
        Some(&json!({"Do": "merge"})),
    )?;
    let ended = follow(&sb, &ns, staged, Duration::from_secs(240)).await?;
    let status = ended.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{:?} [{}]",
        status.message,
        ended.timeline_text()
    );
    let record = status.pushed.context("no pushed commit recorded")?;
    assert_eq!(
        (record.branch.as_str(), record.commit.as_str()),
        ("staging", pushed.as_str())
    );
    assert_eq!(
        status.upgrade.and_then(|u| u.git_commit),
        Some(head(&sb, &repo)?),
        "what rolled out is main's head once the commit reached it"
    );
    running_is(&sb, other, "1.0.1").await?;
    Ok(())
}
