//! What the upgrade scenario tests share: creating UpgradeRequests, following them to their end
//! with a timeline of their phases, and checking what a person would check afterwards.
#![allow(dead_code)] // each test file uses part of it

pub mod radarr;

use anyhow::Context as _;
use fluxup_api::flux::{HelmRelease, Kustomization};
use fluxup_api::{ManagedApp, RollbackPhase, RollbackRequest, UpgradePhase, UpgradeRequest};
use fluxup_operator::managed_app::resolve::without_flux_digest;
use fluxup_operator::{Scope, upgrade};
use fluxup_sandbox::{Sandbox, eventually};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Lets FluxUp fetch from the sandbox's chart repository, registry and Gitea: they listen on
/// 127.0.0.1, which FluxUp refuses unless told (`FLUXUP_OUTBOUND_ALLOW` for `fluxup serve`).
pub fn allow_sandbox_servers(sb: &Sandbox) {
    for key in [
        "HELM_REPO_URL",
        "REGISTRY_HOST",
        "REGISTRY_AUTH_HOST",
        "GITEA_URL",
    ] {
        if let Ok(address) = sb.env(key) {
            fluxup_operator::outbound::allow(address).expect("a sandbox address");
        }
    }
}

/// The upgrade controller, as a task that can be killed (aborted: no clean-up code runs). Every
/// controller here runs as FluxUp's shipped ServiceAccount (`sb.controller`).
pub fn start_upgrader(sb: &Sandbox, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    allow_sandbox_servers(sb);
    let t = stop.clone();
    tokio::spawn(upgrade::controller::run(
        sb.controller.clone(),
        Scope::default(),
        async move { t.cancelled().await },
    ))
}

/// The rollback controller, as a task that can be killed.
pub fn start_rollbacker(sb: &Sandbox, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    allow_sandbox_servers(sb);
    let t = stop.clone();
    tokio::spawn(fluxup_operator::rollback::controller::run(
        sb.controller.clone(),
        Scope::default(),
        async move { t.cancelled().await },
    ))
}

/// The ManagedApp controller, as a task that stops with `stop`.
pub fn start_app_controller(sb: &Sandbox, stop: &CancellationToken) {
    allow_sandbox_servers(sb);
    let t = stop.clone();
    tokio::spawn(fluxup_operator::managed_app::run(
        sb.controller.clone(),
        Scope::default(),
        async move { t.cancelled().await },
    ));
}

/// Waits until the failed UpgradeRequest `namespace/upgrade` links the RollbackRequest its
/// auto-rollback created, and returns that request's name.
pub async fn rollback_linked(
    sb: &Sandbox,
    namespace: &str,
    upgrade: &str,
) -> anyhow::Result<String> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), namespace);
    eventually(
        "a linked RollbackRequest",
        Duration::from_secs(30),
        || async {
            let req = api.get(upgrade).await?;
            Ok(
                match req.status.as_ref().and_then(|s| s.rollback_ref.clone()) {
                    Some(r) => Ok(r.name),
                    None => Err(format!("{:?}", req.status)),
                },
            )
        },
    )
    .await
}

/// The head commit of `main` in Gitea.
pub fn head(sb: &Sandbox, repo: &str) -> anyhow::Result<String> {
    let b = sb
        .gitea()?
        .ok("GET", &format!("/repos/{repo}/branches/main"), None)?;
    Ok(b["commit"]["id"].as_str().unwrap_or_default().to_string())
}

/// How many commits on `main` carry the trailer of `request` (`namespace/name`).
pub fn commits_of(sb: &Sandbox, repo: &str, request: &str) -> anyhow::Result<usize> {
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

/// The lines a commit adds and removes, from Gitea's diff of it.
pub fn changed_lines(sb: &Sandbox, repo: &str, sha: &str) -> anyhow::Result<Vec<String>> {
    let (code, diff) = sb.gitea()?.call(
        "GET",
        &format!("/repos/{repo}/git/commits/{sha}.diff"),
        None,
    )?;
    anyhow::ensure!(code == 200, "no diff of {sha}: HTTP {code}");
    Ok(diff
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .map(String::from)
        .collect())
}

/// The chart version Flux runs now (from the HelmRelease, not the app's status, which follows it).
pub async fn deployed(sb: &Sandbox, name: &str) -> anyhow::Result<String> {
    let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), name)
        .get(name)
        .await?;
    let version = hr
        .status
        .and_then(|s| s.history.first().map(|h| h.chart_version.clone()));
    Ok(without_flux_digest(&version.context("no release yet")?).to_string())
}

pub async fn app(sb: &Sandbox, namespace: &str, name: &str) -> anyhow::Result<ManagedApp> {
    Ok(Api::<ManagedApp>::namespaced(sb.client.clone(), namespace)
        .get(name)
        .await?)
}

/// Waits until the ManagedApp `namespace/name` knows its workloads and where its versions live.
pub async fn wait_resolved(sb: &Sandbox, namespace: &str, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while app(sb, namespace, name)
        .await?
        .status
        .and_then(|s| s.resolved)
        .is_none()
    {
        anyhow::ensure!(Instant::now() < deadline, "{name} not resolved");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Creates (server-side applies) a ManagedApp from its JSON.
pub async fn apply_app(sb: &Sandbox, app: Value) -> anyhow::Result<()> {
    let app: ManagedApp = serde_json::from_value(app)?;
    let ns = app.metadata.namespace.clone().context("namespace")?;
    Api::<ManagedApp>::namespaced(sb.client.clone(), &ns)
        .patch(
            &app.metadata.name.clone().context("name")?,
            &kube::api::PatchParams::apply("test").force(),
            &kube::api::Patch::Apply(&app),
        )
        .await?;
    Ok(())
}

/// Deletes every UpgradeRequest in `namespace` (their finalizer resumes Flux) and waits.
pub async fn delete_requests(sb: &Sandbox, namespace: &str) -> anyhow::Result<()> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), namespace);
    api.delete_collection(&Default::default(), &Default::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api.list(&Default::default()).await?.items.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "old UpgradeRequests in {namespace} not deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Creates an UpgradeRequest in `namespace` for ManagedApp `app` with `target` as its
/// `targetVersion`.
pub async fn create_request(
    sb: &Sandbox,
    namespace: &str,
    app: &str,
    request: &str,
    target: Value,
    dry_run: bool,
) -> anyhow::Result<()> {
    let req: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": request},
        "spec": {"managedAppRef": {"name": app}, "targetVersion": target, "dryRun": dry_run},
    }))?;
    Api::<UpgradeRequest>::namespaced(sb.client.clone(), namespace)
        .create(&PostParams::default(), &req)
        .await?;
    Ok(())
}

/// An ended request and when each phase was first seen, from its creation.
pub struct Ended {
    pub request: UpgradeRequest,
    pub timeline: Vec<(UpgradePhase, Duration)>,
}

impl Ended {
    pub fn phase(&self) -> UpgradePhase {
        self.request
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    pub fn status(&self) -> fluxup_api::UpgradeRequestStatus {
        self.request.status.clone().unwrap_or_default()
    }

    /// When `phase` was first seen.
    pub fn at(&self, phase: UpgradePhase) -> Option<Duration> {
        self.timeline
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, t)| *t)
    }

    /// The phases as a line: `Preflight 0.1 s, Suspending 0.3 s, …`.
    pub fn timeline_text(&self) -> String {
        self.timeline
            .iter()
            .map(|(p, t)| format!("{p:?} {:.1} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Follows a request until it has ended (Succeeded, Failed or RolledBack), noting when each
/// phase is first seen (polled every 50 ms, so a phase shorter than that may be missed).
pub async fn follow(
    sb: &Sandbox,
    namespace: &str,
    request: &str,
    timeout: Duration,
) -> anyhow::Result<Ended> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), namespace);
    let started = Instant::now();
    let mut timeline: Vec<(UpgradePhase, Duration)> = Vec::new();
    loop {
        let req = api.get(request).await?;
        let phase = req
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default();
        if timeline.last().map(|(p, _)| *p) != Some(phase) {
            timeline.push((phase, started.elapsed()));
        }
        if phase.is_terminal() {
            return Ok(Ended {
                request: req,
                timeline,
            });
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{namespace}/{request} stuck in {phase:?}: {:?}",
            req.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates an UpgradeRequest and follows it to its end.
pub async fn run_request(
    sb: &Sandbox,
    namespace: &str,
    app: &str,
    request: &str,
    target: Value,
    dry_run: bool,
) -> anyhow::Result<Ended> {
    create_request(sb, namespace, app, request, target, dry_run).await?;
    follow(sb, namespace, request, Duration::from_secs(240)).await
}

/// Waits until the upgrade `request` of the demo app `name` reaches `phase` (or a later one).
pub async fn wait_for_phase(
    sb: &Sandbox,
    name: &str,
    request: &str,
    phase: UpgradePhase,
) -> anyhow::Result<()> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = api
            .get(request)
            .await?
            .status
            .and_then(|s| s.phase)
            .unwrap_or_default();
        if now >= phase {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{request} never reached {phase:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the Flux Kustomization of demo app `name` is suspended.
pub async fn suspended(sb: &Sandbox, name: &str) -> anyhow::Result<bool> {
    let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
        .get(name)
        .await?;
    Ok(ks.spec.suspend == Some(true))
}

/// What a person checks after an upgrade of demo app `name`: it Succeeded, its commit changed
/// only the version line(s), Flux runs `version`, the Kustomization is resumed.
pub async fn check_rolled_out(
    sb: &Sandbox,
    name: &str,
    ended: &Ended,
    version: &str,
) -> anyhow::Result<()> {
    let status = ended.status();
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
    let repo = format!("{}/fleet", sb.gitea()?.user);
    let changed = changed_lines(sb, &repo, &sha)?;
    assert_eq!(
        changed.len(),
        2,
        "{name}: the diff is the version line only: {changed:?}"
    );
    assert!(changed[1].contains(version), "{changed:?}");
    assert_eq!(deployed(sb, name).await?, version, "{name}: what Flux runs");
    assert!(
        !suspended(sb, name).await?,
        "{name}: the Kustomization was left suspended"
    );
    Ok(())
}

/// `targetVersion` for a chart version.
pub fn chart(version: &str) -> Value {
    json!({"chart": version})
}

/// Every regular file under `dir`, by relative path, with its SHA-256 (from `sha256sum`).
pub fn checksums(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut sums = BTreeMap::new();
    for file in files {
        let out = std::process::Command::new("sha256sum")
            .arg(&file)
            .output()?;
        if !out.status.success() {
            anyhow::bail!("sha256sum {} failed", file.display());
        }
        let sum = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        sums.insert(file.strip_prefix(dir)?.display().to_string(), sum);
    }
    Ok(sums)
}

/// Waits until PVC `ns/name` is Bound and returns the directory of its volume in the driver's state.
pub async fn bound_volume_dir(sb: &Sandbox, ns: &str, name: &str) -> anyhow::Result<PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sb.client.clone(), ns);
    let pv_name = eventually(
        &format!("PVC {name} Bound"),
        Duration::from_secs(90),
        || async {
            let pvc = pvcs.get(name).await?;
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
            let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
            Ok(match (phase.as_deref(), volume) {
                (Some("Bound"), Some(v)) => Ok(v),
                (p, _) => Err(format!("phase {p:?}")),
            })
        },
    )
    .await?;
    let pvs: Api<PersistentVolume> = Api::all(sb.client.clone());
    let pv = pvs.get(&pv_name).await?;
    let csi = pv
        .spec
        .and_then(|s| s.csi)
        .context("PV without a CSI source")?;
    assert_eq!(csi.driver, sb.env("CSI_DRIVER")?);
    let dir = Path::new(sb.env("CSI_STATE_DIR")?).join(&csi.volume_handle);
    assert!(dir.is_dir(), "no volume directory {}", dir.display());
    Ok(dir)
}

/// A ManagedApp `name` for demo app `of` (same namespace, HelmRelease and Kustomization), whose
/// chart version lives in `chart_file`; `extra` adds to its spec.
pub fn app_copy(name: &str, of: &str, chart_file: &str, extra: Value) -> Value {
    let mut spec = json!({
        "helmReleaseRef": {"name": of},
        "kustomizationRef": {"name": of, "namespace": "flux-system"},
        "versionPolicy": {"chart": {"git": {"file": chart_file}}},
        "healthCheck": {"timeout": "90s"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
        "metadata": {"name": name, "namespace": of},
        "spec": spec,
    })
}

/// What a person checks once every operation on demo app `name` has ended: Flux reconciles its
/// Kustomization and HelmRelease again, neither carries FluxUp's mark, and no workload of the
/// app is left stopped or marked.
pub async fn nothing_held(sb: &Sandbox, name: &str) -> anyhow::Result<()> {
    use fluxup_api::ownership::{HELD_BY_ANNOTATION, STOPPED_BY_ANNOTATION};
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use kube::ResourceExt;
    eventually(
        &format!("nothing of {name} held"),
        Duration::from_secs(60),
        || async {
            let ks = Api::<Kustomization>::namespaced(sb.client.clone(), "flux-system")
                .get(name)
                .await?;
            let hr = Api::<HelmRelease>::namespaced(sb.client.clone(), name)
                .get(name)
                .await?;
            let mut held = Vec::new();
            if ks.spec.suspend == Some(true) || ks.annotations().contains_key(HELD_BY_ANNOTATION) {
                held.push(format!("Kustomization {name}: {:?}", ks.annotations()));
            }
            if hr.spec.suspend == Some(true) || hr.annotations().contains_key(HELD_BY_ANNOTATION) {
                held.push(format!("HelmRelease {name}: {:?}", hr.annotations()));
            }
            for s in Api::<StatefulSet>::namespaced(sb.client.clone(), name)
                .list(&Default::default())
                .await?
            {
                if s.annotations().contains_key(STOPPED_BY_ANNOTATION)
                    || s.spec.as_ref().and_then(|s| s.replicas) == Some(0)
                {
                    held.push(format!("StatefulSet {}", s.name_any()));
                }
            }
            for d in Api::<Deployment>::namespaced(sb.client.clone(), name)
                .list(&Default::default())
                .await?
            {
                if d.annotations().contains_key(STOPPED_BY_ANNOTATION)
                    || d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
                {
                    held.push(format!("Deployment {}", d.name_any()));
                }
            }
            Ok(if held.is_empty() {
                Ok(())
            } else {
                Err(held.join("; "))
            })
        },
    )
    .await
}

/// How many commits on `main` carry the trailer of the request with uid `uid`.
pub fn commits_of_operation(sb: &Sandbox, repo: &str, uid: &str) -> anyhow::Result<usize> {
    let commits = sb.gitea()?.ok(
        "GET",
        &format!("/repos/{repo}/commits?sha=main&limit=50&stat=false&files=false"),
        None,
    )?;
    let trailer = format!("FluxUp-Operation: {uid}");
    Ok(commits.as_array().map_or(0, |a| {
        a.iter()
            .filter(|c| {
                c["commit"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&trailer))
            })
            .count()
    }))
}

/// Writes `text` as the datastore's rows into its volume directory `dir` (as the app would).
pub fn write_data(dir: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("db"))?;
    std::fs::write(dir.join("db/rows.txt"), text)?;
    Ok(())
}

/// Creates RollbackRequest `namespace/name` undoing UpgradeRequest `upgrade`.
pub async fn create_rollback(
    sb: &Sandbox,
    namespace: &str,
    name: &str,
    upgrade: &str,
) -> anyhow::Result<()> {
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": name},
        "spec": {"upgradeRequestRef": {"name": upgrade}},
    }))?;
    Api::<RollbackRequest>::namespaced(sb.client.clone(), namespace)
        .create(&PostParams::default(), &req)
        .await?;
    Ok(())
}

pub async fn rollback_phase(
    sb: &Sandbox,
    namespace: &str,
    name: &str,
) -> anyhow::Result<RollbackRequest> {
    Ok(
        Api::<RollbackRequest>::namespaced(sb.client.clone(), namespace)
            .get(name)
            .await?,
    )
}

/// Follows RollbackRequest `namespace/name` to its end; returns it and its phase timeline.
pub async fn follow_rollback(
    sb: &Sandbox,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(RollbackRequest, Vec<(RollbackPhase, Duration)>)> {
    let started = Instant::now();
    let mut timeline: Vec<(RollbackPhase, Duration)> = Vec::new();
    loop {
        let req = rollback_phase(sb, namespace, name).await?;
        let phase = req
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default();
        if timeline.last().map(|(p, _)| *p) != Some(phase) {
            timeline.push((phase, started.elapsed()));
        }
        if phase.is_terminal() {
            return Ok((req, timeline));
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "rollback {name} stuck in {phase:?}: {:?}",
            req.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn rollback_timeline_text(timeline: &[(RollbackPhase, Duration)]) -> String {
    timeline
        .iter()
        .map(|(p, t)| format!("{p:?} {:.1} s", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A client acting as `user` (impersonated by the harness's admin), as the API server sees a
/// person who logged in.
pub async fn as_person(sb: &Sandbox, user: &str) -> anyhow::Result<kube::Client> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let kubeconfig = Kubeconfig::read_from(sb.env("KUBECONFIG")?)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(vec!["system:authenticated".into()]);
    Ok(kube::Client::try_from(config)?)
}
