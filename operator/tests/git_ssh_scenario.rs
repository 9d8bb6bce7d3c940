//! Scenario: a fleet repository reached only over SSH, as `flux bootstrap` sets it up with a
//! deploy key. Flux's source-controller and FluxUp both use the GitRepository's Secret
//! (`identity` + `known_hosts`). Twice — on Gitea's built-in SSH server and on a plain OpenSSH
//! server with a bare repository — an approved upgrade commits over SSH, Flux pulls it over SSH
//! and rolls it out, and a rollback reverts the commit and brings the old version back.

mod common;

use anyhow::{Context as _, bail};
use common::*;
use fluxup_api::flux::HelmRelease;
use fluxup_api::{RollbackPhase, UpgradePhase};
use fluxup_operator::managed_app::resolve::without_flux_digest;
use fluxup_sandbox::{Sandbox, eventually, git_ssh_command, ssh_keypair};
use kube::Api;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FILE: &str = "app/helmrelease.yaml";

fn git(dir: &Path, ssh: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", ssh)
        .env("GIT_AUTHOR_NAME", "A Person")
        .env("GIT_AUTHOR_EMAIL", "person@example.com")
        .env("GIT_COMMITTER_NAME", "A Person")
        .env("GIT_COMMITTER_EMAIL", "person@example.com")
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The version line of the fleet's HelmRelease at the head of `main`, read over SSH.
fn version_in_git(dir: &Path, ssh: &str, url: &str) -> anyhow::Result<String> {
    git(
        dir,
        ssh,
        &[
            "fetch",
            "-q",
            url,
            "+refs/heads/main:refs/remotes/origin/main",
        ],
    )?;
    let file = git(dir, ssh, &["show", &format!("origin/main:{FILE}")])?;
    file.lines()
        .find_map(|l| l.trim().strip_prefix("version: ").map(str::to_string))
        .context("no version line")
}

async fn running(sb: &Sandbox, name: &str) -> anyhow::Result<Option<String>> {
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), sb.ns())
        .get_opt(name)
        .await?;
    Ok(hr
        .and_then(|h| h.status)
        .and_then(|s| s.history.first().map(|h| h.chart_version.clone()))
        .map(|v| without_flux_digest(&v).to_string()))
}

/// Seeds the fleet at `url`, points Flux at it over SSH, and runs an upgrade and a rollback.
async fn upgrade_and_roll_back(
    sb: &Sandbox,
    label: &str,
    url: &str,
    key: &Path,
    known_hosts: &str,
) -> anyhow::Result<()> {
    let ns = sb.ns().to_string();
    let release = format!("web-{label}");
    let work = tempfile::tempdir()?;
    let hosts_file = work.path().join("known_hosts");
    std::fs::write(&hosts_file, known_hosts)?;
    let ssh = git_ssh_command(key, &hosts_file);
    let dir = work.path().join("fleet");
    std::fs::create_dir_all(dir.join("app"))?;
    std::fs::write(
        dir.join("app/helmrepository.yaml"),
        format!(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts-{label}\n  namespace: {ns}\nspec:\n  interval: 5m\n  url: {}\n",
            sb.env("HELM_REPO_URL")?
        ),
    )?;
    std::fs::write(
        dir.join(FILE),
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {release}\n  namespace: {ns}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: webapp\n      version: 1.0.0\n      sourceRef:\n        kind: HelmRepository\n        name: charts-{label}\n"
        ),
    )?;
    git(&dir, &ssh, &["init", "-q", "-b", "main"])?;
    git(&dir, &ssh, &["add", "-A"])?;
    git(&dir, &ssh, &["commit", "-q", "-m", "the fleet"])?;
    git(
        &dir,
        &ssh,
        &["push", "-q", "--force", url, "HEAD:refs/heads/main"],
    )?;

    // Flux, as `flux bootstrap` with a deploy key leaves it: a Secret with the key and the host's
    // key, a GitRepository over SSH, a Kustomization of the app.
    sb.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("fleet-{label}")},
        "stringData": {
            "identity": std::fs::read_to_string(key)?,
            "known_hosts": known_hosts,
        },
    }))
    .await?;
    sb.apply(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": format!("fleet-{label}")},
        "spec": {"interval": "1m", "url": url, "ref": {"branch": "main"},
                 "secretRef": {"name": format!("fleet-{label}")}},
    }))
    .await?;
    sb.apply(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": format!("fleet-{label}")},
        "spec": {"interval": "5m", "path": "./app", "prune": true, "wait": false,
                 "timeout": "3m",
                 "sourceRef": {"kind": "GitRepository", "name": format!("fleet-{label}")}},
    }))
    .await?;
    eventually(
        &format!("{release} installed by Flux over SSH"),
        Duration::from_secs(180),
        || async {
            Ok(match running(sb, &release).await? {
                Some(v) if v == "1.0.0" => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;

    apply_app(
        sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": release, "namespace": ns},
            "spec": {"helmReleaseRef": {"name": release},
                     "kustomizationRef": {"name": format!("fleet-{label}"), "namespace": ns},
                     "versionPolicy": {"chart": {"git": {"file": FILE}}},
                     "healthCheck": {"timeout": "2m"}},
        }),
    )
    .await?;
    wait_resolved(sb, &ns, &release).await?;

    let up = format!("{release}-1.0.1");
    let ended = run_request(sb, &ns, &release, &up, chart("1.0.1"), false).await?;
    let status = ended.status();
    assert_eq!(
        status.phase,
        Some(UpgradePhase::Succeeded),
        "{label}: {:?} [{}]",
        status.message,
        ended.timeline_text()
    );
    println!("{label}: upgrade over SSH [{}]", ended.timeline_text());
    let sha = status
        .upgrade
        .and_then(|u| u.git_commit)
        .context("no commit recorded")?;
    assert_eq!(version_in_git(&dir, &ssh, url)?, "1.0.1", "{label}: Git");
    assert_eq!(
        git(&dir, &ssh, &["rev-parse", "origin/main"])?.trim(),
        sha,
        "{label}: the recorded commit is the branch's head"
    );
    assert_eq!(running(sb, &release).await?.as_deref(), Some("1.0.1"));

    let back = format!("{up}-back");
    create_rollback(sb, &ns, &back, &up).await?;
    let (ended, _) = follow_rollback(sb, &ns, &back).await?;
    let status = ended.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{label}: {:?}",
        status.message
    );
    assert_eq!(version_in_git(&dir, &ssh, url)?, "1.0.0", "{label}: Git");
    let revert = git(&dir, &ssh, &["log", "-1", "--format=%B", "origin/main"])?;
    assert!(
        revert.contains(&sha),
        "{label}: the revert names {sha}: {revert}"
    );
    eventually(
        &format!("{release} back on 1.0.0"),
        Duration::from_secs(120),
        || async {
            Ok(match running(sb, &release).await? {
                Some(v) if v == "1.0.0" => Ok(()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn upgrades_and_rollbacks_over_ssh_on_gitea_and_a_plain_server() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("ssh-scenario").await?;
    let gitea = sb.gitea()?;
    let plain = sb.plain_git()?;
    fluxup_operator::outbound::allow(&format!(
        "127.0.0.1:{},127.0.0.1:{}",
        gitea.ssh_port, plain.port
    ))
    .map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);
    let keys = tempfile::tempdir()?;

    let repo = gitea.create_repo(&format!("{}-fleet", sb.ns()))?;
    let (key, public) = ssh_keypair(keys.path(), "gitea")?;
    gitea.add_deploy_key(&repo, "flux", &public, true)?;
    upgrade_and_roll_back(
        &sb,
        "gitea",
        &gitea.ssh_url(&repo),
        &key,
        &gitea.ssh_known_hosts()?,
    )
    .await?;

    let url = plain.create_repo(&format!("{}-fleet", sb.ns()))?;
    let (key, public) = ssh_keypair(keys.path(), "plain")?;
    plain.authorize(&public)?;
    upgrade_and_roll_back(&sb, "plain", &url, &key, &plain.known_hosts()?).await?;
    Ok(())
}
