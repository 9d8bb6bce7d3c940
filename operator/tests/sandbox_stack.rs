//! Scenario tests of the sandbox's full profile (`sandbox/sandbox up --profile full`): the parts
//! FluxUp's safe upgrade stands on, each exercised end to end against the real upstream components.
//!
//! - Git → Flux → Helm: a commit pushed through Gitea's API is reconciled by source-, kustomize-
//!   and helm-controller, and HelmReleases become Ready at the new chart version, for a chart from
//!   a HelmRepository (`chart.spec.version`) and one from an OCIRepository (`chartRef`).
//! - CSI: a PVC is provisioned by the sandbox CSI driver; data written into its directory survives a
//!   VolumeSnapshot, and a PVC restored from the snapshot has the same content.
//!
//! - OIDC: Dex issues an ID token for the demo user.
//!
//! scripts/test starts the full profile before `cargo test`; run alone, the first test builds
//! what is not cached (cold: about 25 minutes, see sandbox/README.md) and starts it.

mod common;

use anyhow::Context as _;
use common::{bound_volume_dir, checksums};
use fluxup_sandbox::{Sandbox, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn git_repository() -> ApiResource {
    resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
        "gitrepositories",
    )
}
fn helm_release() -> ApiResource {
    resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "HelmRelease",
        "helmreleases",
    )
}
fn volume_snapshot() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}
fn volume_snapshot_content() -> ApiResource {
    resource(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}

/// The Ready condition of a Flux object: (status, reason, message).
fn ready_condition(obj: &DynamicObject) -> Option<(String, String, String)> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Waits until HelmRelease `name` is Ready with its latest release at chart `version`.
async fn wait_release_at(sb: &Sandbox, name: &str, version: &str) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(sb.client.clone(), sb.ns(), &helm_release());
    eventually(
        &format!("HelmRelease {name} Ready at chart {version}"),
        Duration::from_secs(240),
        || async {
            let hr = match api.get_opt(name).await? {
                Some(hr) => hr,
                None => return Ok(Err("not created yet".into())),
            };
            // For OCIRepository sources helm-controller appends the digest: `1.1.0+f79273876aa6`.
            let chart_version = hr.data["status"]["history"][0]["chartVersion"]
                .as_str()
                .unwrap_or_default()
                .split('+')
                .next()
                .unwrap_or_default()
                .to_string();
            let ready = ready_condition(&hr);
            let observed = hr.data["status"]["observedGeneration"].as_i64();
            match ready {
                Some((s, _, _))
                    if s == "True"
                        && chart_version == version
                        && observed == hr.metadata.generation =>
                {
                    Ok(Ok(()))
                }
                other => Ok(Err(format!(
                    "chartVersion={chart_version:?} ready={other:?} observedGeneration={observed:?}"
                ))),
            }
        },
    )
    .await
}

/// The app's files in Git, at one chart version for both apps.
fn app_files(sb: &Sandbox, version: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let ns = sb.ns();
    let helm_repo = sb.env("HELM_REPO_URL")?;
    let registry = sb.env("REGISTRY_HOST")?;
    let sources = format!(
        r#"# Chart sources: the sandbox's Helm repository and its OCI registry.
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: demo-charts
  namespace: {ns}
spec:
  interval: 1m
  url: {helm_repo}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: api
  namespace: {ns}
spec:
  interval: 1m
  url: oci://{registry}/charts/api
  insecure: true
  layerSelector:
    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip
    operation: copy
  ref:
    tag: {version} # chart version of the api (chartRef)
"#
    );
    let web = format!(
        r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: web
  namespace: {ns}
spec:
  interval: 5m
  chart:
    spec:
      chart: webapp
      version: {version}
      sourceRef:
        kind: HelmRepository
        name: demo-charts
  values:
    image:
      repository: &image {registry}/demo/webapp
      tag: "{version}"
    env:
      - name: IMAGE
        value: *image
"#
    );
    let api = format!(
        r#"apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: api
  namespace: {ns}
spec:
  interval: 5m
  chartRef:
    kind: OCIRepository
    name: api
  values:
    image:
      repository: {registry}/demo/api
      tag: "{version}"
"#
    );
    Ok(vec![
        ("app/sources.yaml", sources),
        ("app/web.yaml", web),
        ("app/api.yaml", api),
    ])
}

#[tokio::test]
async fn gitea_commit_is_rolled_out_by_flux_for_helm_and_oci_charts() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("flux-gitea-rollout").await?;
    let gitea = sb.gitea()?;
    let ns = sb.ns().to_string();

    // A repository of the test's own, seeded at chart 1.0.0 through Gitea's API.
    let repo = gitea.create_repo(&ns)?;
    let files = app_files(&sb, "1.0.0")?;
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let first = gitea.commit_files(&repo, "main", "Apps at chart 1.0.0", &refs)?;

    // Flux on it: credentials, GitRepository, Kustomization.
    let secrets: Api<Secret> = sb.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "gitea"},
                "stringData": {"username": gitea.user, "password": gitea.token},
            }))?,
        )
        .await?;
    sb.apply(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "apps", "namespace": ns},
        "spec": {"interval": "1m", "url": gitea.clone_url(&repo), "ref": {"branch": "main"},
                 "secretRef": {"name": "gitea"}},
    }))
    .await?;
    sb.apply(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": ns},
        "spec": {"interval": "1m", "path": "./app", "prune": true, "targetNamespace": ns,
                 "sourceRef": {"kind": "GitRepository", "name": "apps"}},
    }))
    .await?;

    let git_repos: Api<DynamicObject> =
        Api::namespaced_with(sb.client.clone(), &ns, &git_repository());
    wait_artifact(
        &git_repos,
        &first,
        "GitRepository artifact of the first commit",
    )
    .await?;
    wait_release_at(&sb, "web", "1.0.0").await?;
    wait_release_at(&sb, "api", "1.0.0").await?;

    // The update: one commit through the API moves both charts to 1.1.0.
    let files = app_files(&sb, "1.1.0")?;
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let second = gitea.commit_files(&repo, "main", "Update web and api to chart 1.1.0", &refs)?;
    assert_ne!(first, second);
    // Ask Flux not to wait for the next interval, as a Gitea webhook → Receiver would.
    git_repos
        .patch(
            "apps",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "reconcile.fluxcd.io/requestedAt": format!("{:?}", std::time::SystemTime::now())}}})),
        )
        .await?;
    wait_artifact(&git_repos, &second, "GitRepository artifact of the update").await?;
    wait_release_at(&sb, "web", "1.1.0").await?;
    wait_release_at(&sb, "api", "1.1.0").await?;

    // What Helm rendered is really the new chart and image.
    let deployments: Api<Deployment> = sb.api();
    for (name, chart, image) in [("web", "webapp", "demo/webapp"), ("api", "api", "demo/api")] {
        let d = deployments.get(name).await?;
        let labels = d.metadata.labels.clone().unwrap_or_default();
        // `webapp-1.1.0`, or `api-1.1.0_<digest>` for the chart from the OCIRepository.
        let chart_label = labels.get("helm.sh/chart").cloned().unwrap_or_default();
        assert!(
            chart_label == format!("{chart}-1.1.0")
                || chart_label.starts_with(&format!("{chart}-1.1.0_")),
            "deployment {name} labels: {labels:?}"
        );
        assert_eq!(
            labels.get("app.kubernetes.io/version").map(String::as_str),
            Some("1.1.0"),
            "deployment {name} labels: {labels:?}"
        );
        let container_image = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(
            container_image,
            format!("{}/{image}:1.1.0", sb.env("REGISTRY_HOST")?)
        );
    }
    Ok(())
}

fn pvc(
    name: &str,
    storage_class: &str,
    data_source: Option<&str>,
) -> anyhow::Result<PersistentVolumeClaim> {
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": storage_class,
        "resources": {"requests": {"storage": "64Mi"}},
    });
    if let Some(snapshot) = data_source {
        spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot});
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

#[tokio::test]
async fn csi_snapshot_and_restore_keep_the_data() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("csi-snapshot-restore").await?;
    let class = sb.env("CSI_STORAGE_CLASS")?.to_string();
    let pvcs: Api<PersistentVolumeClaim> = sb.api();

    pvcs.create(&PostParams::default(), &pvc("data", &class, None)?)
        .await?;
    let dir = bound_volume_dir(&sb, sb.ns(), "data").await?;

    // Data as an app would have written it (no kubelet mounts anything here).
    let payload: Vec<u8> = (0u32..300_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("payload.bin"), &payload)?;
    std::fs::create_dir_all(dir.join("nested/deeper"))?;
    std::fs::write(
        dir.join("nested/deeper/hello.txt"),
        "hello from before the upgrade\n",
    )?;
    let before = checksums(&dir)?;
    assert_eq!(before.len(), 2, "{before:?}");

    let snapshots: Api<DynamicObject> =
        Api::namespaced_with(sb.client.clone(), sb.ns(), &volume_snapshot());
    sb.apply(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "before-upgrade", "namespace": sb.ns()},
        "spec": {"volumeSnapshotClassName": sb.env("CSI_SNAPSHOT_CLASS")?,
                 "source": {"persistentVolumeClaimName": "data"}},
    }))
    .await?;
    let content_name = eventually(
        "VolumeSnapshot readyToUse",
        Duration::from_secs(90),
        || async {
            let snap = snapshots.get("before-upgrade").await?;
            let status = &snap.data["status"];
            Ok(
                match (
                    status["readyToUse"].as_bool(),
                    status["boundVolumeSnapshotContentName"].as_str(),
                ) {
                    (Some(true), Some(content)) => Ok(content.to_string()),
                    _ => Err(status.to_string()),
                },
            )
        },
    )
    .await?;
    let contents: Api<DynamicObject> = Api::all_with(sb.client.clone(), &volume_snapshot_content());
    let content = contents.get(&content_name).await?;
    let handle = content.data["status"]["snapshotHandle"]
        .as_str()
        .context("VolumeSnapshotContent without snapshotHandle")?;
    // The driver keeps a snapshot as a full copy of the volume, beside it.
    let copy = Path::new(sb.env("CSI_STATE_DIR")?).join(format!("{handle}.snap"));
    assert_eq!(
        checksums(&copy)?,
        before,
        "snapshot copy {}",
        copy.display()
    );

    // The app changes its data after the snapshot (the "upgrade" that goes wrong).
    std::fs::write(dir.join("payload.bin"), b"corrupted by the upgrade")?;
    std::fs::remove_file(dir.join("nested/deeper/hello.txt"))?;
    assert_ne!(checksums(&dir)?, before);

    // Restore: a new PVC from the snapshot has exactly the data of snapshot time.
    pvcs.create(
        &PostParams::default(),
        &pvc("data-restored", &class, Some("before-upgrade"))?,
    )
    .await?;
    let restored = bound_volume_dir(&sb, sb.ns(), "data-restored").await?;
    assert_ne!(restored, dir);
    assert_eq!(checksums(&restored)?, before);
    assert_eq!(std::fs::read(restored.join("payload.bin"))?, payload);
    Ok(())
}

/// Decodes unpadded base64url (JWT segments).
fn base64url_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))?)
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn dex_issues_tokens_for_the_demo_user() -> anyhow::Result<()> {
    use fluxup_sandbox::{base64, http};
    let sb = Sandbox::start_full("dex-tokens").await?;
    let issuer = sb.env("OIDC_ISSUER")?;
    let client_id = sb.env("OIDC_CLIENT_ID")?;
    let secret = sb.env("OIDC_CLIENT_SECRET")?;
    let user = sb.env("DEMO_USER")?;
    let password = sb.env("DEMO_PASSWORD")?;

    let (status, discovery) = http(
        "GET",
        &format!("{issuer}/.well-known/openid-configuration"),
        &[],
        None,
    )?;
    assert_eq!(status, 200, "{discovery}");
    let discovery: Value = serde_json::from_str(&discovery)?;
    assert_eq!(discovery["issuer"], issuer);
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .context("no token_endpoint")?
        .to_string();

    let basic = format!(
        "Basic {}",
        base64(format!("{client_id}:{secret}").as_bytes())
    );
    let headers = [
        ("Authorization", basic.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let token = |password: &str| {
        http(
            "POST",
            &token_endpoint,
            &headers,
            Some(&form_encode(&[
                ("grant_type", "password"),
                ("scope", "openid email profile"),
                ("username", user),
                ("password", password),
            ])),
        )
    };

    let (status, body) = token(password)?;
    assert_eq!(status, 200, "token endpoint: {body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["token_type"], "bearer", "{answer}");
    assert!(
        answer["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let id_token = answer["id_token"].as_str().context("no id_token")?;
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {id_token}");
    let claims: Value = serde_json::from_slice(&base64url_decode(parts[1])?)?;
    assert_eq!(claims["iss"], issuer, "{claims}");
    assert_eq!(claims["aud"], client_id, "{claims}");
    assert_eq!(claims["email"], user, "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    let header: Value = serde_json::from_slice(&base64url_decode(parts[0])?)?;
    assert_eq!(header["alg"], "RS256", "{header}");

    // A wrong password gets no token.
    let (status, body) = token("not-the-password")?;
    assert!(
        status == 401 || status == 400,
        "wrong password gave HTTP {status}: {body}"
    );
    assert!(!body.contains("id_token"), "{body}");
    Ok(())
}

/// Waits until the GitRepository `apps` has fetched `commit`.
async fn wait_artifact(
    git_repos: &Api<DynamicObject>,
    commit: &str,
    what: &str,
) -> anyhow::Result<()> {
    eventually(what, Duration::from_secs(120), || async {
        let repo = git_repos.get("apps").await?;
        let rev = repo.data["status"]["artifact"]["revision"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(if rev.ends_with(commit) {
            Ok(())
        } else {
            Err(rev)
        })
    })
    .await
}
