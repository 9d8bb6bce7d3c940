//! The ManagedApp controller against the sandbox's real API server: each test runs the
//! controller scoped to its own namespace, creates Flux objects the way a fleet repository
//! would, and checks what `kubectl get managedapp -o yaml` would show a person.
//!
//! The core sandbox runs no Flux controllers, so where a test needs a HelmRelease that Flux has
//! installed it writes the HelmRelease's status as helm-controller does (the full-profile
//! scenarios in sandbox_stack.rs and renovate_scenario.rs run the real Flux).

use anyhow::Context as _;
use fluxup_api::{ManagedApp, ManagedAppStatus};
use fluxup_operator::Scope;
use fluxup_operator::managed_app::{self, FIELD_MANAGER};
use fluxup_sandbox::{Sandbox, eventually};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The sandbox namespace of one test, with the controller running on it until dropped.
struct Fixture {
    sb: Sandbox,
    stop: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(name: &str) -> anyhow::Result<Fixture> {
    let sb = Sandbox::start(name).await?;
    let stop = CancellationToken::new();
    let scope = Scope {
        namespace: Some(sb.ns().to_string()),
    };
    let token = stop.clone();
    tokio::spawn(managed_app::run(sb.controller.clone(), scope, async move {
        token.cancelled().await
    }));
    Ok(Fixture { sb, stop })
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

impl Fixture {
    fn ns(&self) -> &str {
        self.sb.ns()
    }

    fn dynamic(&self, api_version: &str, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.sb.client.clone(),
            self.ns(),
            &resource(api_version, kind),
        )
    }

    /// Server-side applies `object` in the test namespace, as a person's `kubectl apply` would.
    async fn apply(&self, object: Value) -> anyhow::Result<()> {
        self.sb.apply(object).await?;
        Ok(())
    }

    /// Waits up to 10 s for an Event in the test namespace that matches.
    async fn event_until(
        &self,
        what: &str,
        matches: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<()> {
        let events: Api<Event> = self.sb.api();
        eventually(what, Duration::from_secs(10), || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(if list.items.iter().any(&matches) {
                Ok(())
            } else {
                Err(format!("{} events, none matching", list.items.len()))
            })
        })
        .await
    }

    /// Writes a HelmRelease's status the way helm-controller does after installing `version`.
    async fn flux_installed(
        &self,
        release: &str,
        chart: &str,
        version: &str,
        app_version: &str,
    ) -> anyhow::Result<()> {
        let now = "2026-11-30T00:00:00Z";
        let status = json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": release, "namespace": self.ns()},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "InstallSucceeded",
                    "message": format!("Helm install succeeded for release {release} with chart {chart}@{version}"),
                    "lastTransitionTime": now}],
                "history": [{"name": release, "namespace": self.ns(), "version": 1, "status": "deployed",
                    "chartName": chart, "chartVersion": version, "appVersion": app_version,
                    "configDigest": "sha256:0", "digest": "sha256:0",
                    "firstDeployed": now, "lastDeployed": now}],
            }
        });
        self.dynamic("helm.toolkit.fluxcd.io/v2", "HelmRelease")
            .patch_status(
                release,
                &PatchParams::apply("helm-controller").force(),
                &Patch::Apply(&status),
            )
            .await?;
        Ok(())
    }

    /// Writes Renovate findings into an app's status, as the ingestion does.
    async fn detected(&self, app: &str, updates: Value) -> anyhow::Result<()> {
        let patch = json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "status": {"detected": {"source": "test/renovate-1", "updates": updates}},
        });
        self.sb
            .api::<ManagedApp>()
            .patch_status(
                app,
                &PatchParams::apply("fluxup-renovate").force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }

    /// Waits until app `name`'s status satisfies `check`; on timeout, shows the last status.
    async fn status_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ManagedAppStatus) -> bool,
    ) -> anyhow::Result<ManagedApp> {
        let api = self.sb.api::<ManagedApp>();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let app = api.get(name).await?;
            if app.status.as_ref().is_some_and(&check) {
                return Ok(app);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "ManagedApp {name}: timed out waiting for {what}; status:\n{}",
                    serde_yaml::to_string(&app.status)?
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn condition<'a>(status: &'a ManagedAppStatus, type_: &str) -> Option<&'a fluxup_api::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn is(status: &ManagedAppStatus, type_: &str, value: &str, reason: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == value && c.reason == reason)
}

fn kustomization(name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name},
        "spec": {"interval": "10m", "prune": true, "path": path,
                 "sourceRef": {"kind": "GitRepository", "name": "fleet"}},
    })
}

fn helm_repository(name: &str, url: &str) -> Value {
    json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": name}, "spec": {"interval": "1h", "url": url},
    })
}

fn managed_app(name: &str, release: &str, kustomization: &str, extra: Value) -> Value {
    let mut spec = json!({
        "helmReleaseRef": {"name": release},
        "kustomizationRef": {"name": kustomization},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
           "metadata": {"name": name}, "spec": spec})
}

/// The web app of these tests: a HelmRepository chart with two images, one pinned by digest.
async fn web_app(fx: &Fixture, policy: Value) -> anyhow::Result<()> {
    let ns = fx.ns().to_string();
    fx.apply(helm_repository("charts", "https://charts.example.com"))
        .await?;
    fx.apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "web"},
        "spec": {
            "interval": "10m",
            "chart": {"spec": {"chart": "webapp", "version": "1.2.0",
                               "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
            "values": {
                "image": {"registry": "ghcr.io", "repository": "example/web", "tag": "1.4.2"},
                "proxy": {"image": "nginx:1.27.0@sha256:aaaa"},
            },
        },
    }))
    .await?;
    fx.apply(kustomization("apps", "./apps/web")).await?;
    fx.apply(managed_app(
        "web",
        "web",
        "apps",
        json!({"kustomizationRef": {"name": "apps", "namespace": ns}, "versionPolicy": policy}),
    ))
    .await
}

#[tokio::test]
async fn helm_repository_chart_resolves_with_images_and_where_versions_live() -> anyhow::Result<()>
{
    let fx = start("mapp-helmrepo").await?;
    let ns = fx.ns().to_string();
    web_app(&fx, json!({})).await?;

    // Before Flux installed it: resolved, but not Ready, and nothing scanned yet.
    let app = fx
        .status_until("web", "HelmReleaseNotReady", |s| {
            is(s, "Ready", "False", "HelmReleaseNotReady")
        })
        .await?;
    let status = app.status.unwrap();
    let current = status.current_version.clone().context("currentVersion")?;
    assert_eq!(
        current.chart.as_deref(),
        Some("1.2.0"),
        "the version the HelmRelease asks for"
    );
    let images: Vec<_> = current
        .images
        .iter()
        .map(|i| (i.name.as_str(), i.tag.as_deref(), i.digest.as_deref()))
        .collect();
    assert_eq!(
        images,
        [
            ("ghcr.io/example/web", Some("1.4.2"), None),
            ("nginx", Some("1.27.0"), Some("sha256:aaaa")),
        ]
    );
    let resolved = status.resolved.clone().context("resolved")?;
    let source = resolved.chart_source.clone().context("chartSource")?;
    assert_eq!(
        (
            source.kind.as_str(),
            source.name.clone(),
            source.url.as_deref()
        ),
        (
            "HelmRepository",
            format!("{ns}/charts"),
            Some("https://charts.example.com")
        )
    );
    assert_eq!(resolved.chart.as_deref(), Some("webapp"));
    assert_eq!(resolved.kustomization_path.as_deref(), Some("./apps/web"));
    assert_eq!(
        resolved.git_source,
        Some(format!("GitRepository/{ns}/fleet"))
    );
    let locations: Vec<_> = resolved
        .locations
        .iter()
        .map(|l| (l.name.as_str(), l.object.clone(), l.field.as_str()))
        .collect();
    let hr = format!("HelmRelease/{ns}/web");
    assert_eq!(
        locations,
        [
            ("chart", hr.clone(), "spec.chart.spec.version"),
            ("ghcr.io/example/web", hr.clone(), "spec.values.image.tag"),
            ("nginx", hr.clone(), "spec.values.proxy.image"),
        ]
    );
    assert!(is(&status, "UpdateAvailable", "False", "NotScanned"));

    // Flux installs it: Ready, with the app version from Helm's history.
    fx.flux_installed("web", "webapp", "1.2.0", "1.4.2").await?;
    let app = fx
        .status_until("web", "Ready", |s| is(s, "Ready", "True", "Resolved"))
        .await?;
    let status = app.status.unwrap();
    assert_eq!(
        status
            .current_version
            .and_then(|v| v.app_version)
            .as_deref(),
        Some("1.4.2")
    );
    assert_eq!(
        condition_message(&app.metadata.name, &fx).await?,
        format!("HelmRelease {ns}/web is Ready at chart 1.2.0")
    );
    Ok(())
}

async fn condition_message(name: &Option<String>, fx: &Fixture) -> anyhow::Result<String> {
    let app = fx
        .sb
        .api::<ManagedApp>()
        .get(name.as_deref().unwrap_or_default())
        .await?;
    Ok(app
        .status
        .and_then(|s| condition(&s, "Ready").map(|c| c.message.clone()))
        .unwrap_or_default())
}

#[tokio::test]
async fn policy_decides_what_is_available_and_what_is_held_back() -> anyhow::Result<()> {
    let fx = start("mapp-policy").await?;
    web_app(&fx, json!({"chart": {"autoUpdate": "minor"}})).await?;
    fx.flux_installed("web", "webapp", "1.2.0", "1.4.2").await?;
    fx.status_until("web", "Ready", |s| is(s, "Ready", "True", "Resolved"))
        .await?;

    fx.detected(
        "web",
        json!([
            {"name": "chart", "current": "1.2.0", "version": "1.3.0", "updateType": "minor",
             "releaseTimestamp": "2026-11-20T10:00:00Z", "changelogUrl": "https://example.com/changes"},
            {"name": "chart", "current": "1.2.0", "version": "2.0.0", "updateType": "major"},
            {"name": "ghcr.io/example/web", "current": "1.4.2", "version": "1.4.3", "updateType": "patch"},
            {"name": "nginx", "current": "1.27.0", "version": "1.27.0", "digest": "sha256:bbbb",
             "updateType": "digest"},
        ]),
    )
    .await?;
    let app = fx
        .status_until("web", "an update", |s| s.available_update.is_some())
        .await?;
    let status = app.status.unwrap();
    let update = status.available_update.clone().unwrap();
    assert_eq!(
        update.chart.as_deref(),
        Some("1.3.0"),
        "the newest minor, not the major"
    );
    assert_eq!(update.update_type, Some(fluxup_api::UpdateType::Minor));
    assert_eq!(update.candidates, ["1.3.0"]);
    assert_eq!(
        update.changelog_url.as_deref(),
        Some("https://example.com/changes")
    );
    assert!(update.release_timestamp.is_some() && update.detected_at.is_some());
    let images: Vec<_> = update
        .images
        .iter()
        .map(|i| (i.name.as_str(), i.tag.as_deref(), i.digest.as_deref()))
        .collect();
    assert_eq!(
        images,
        [
            ("ghcr.io/example/web", Some("1.4.3"), None),
            ("nginx", Some("1.27.0"), Some("sha256:bbbb")),
        ]
    );
    let held: Vec<_> = status
        .held_back
        .iter()
        .map(|h| (h.name.as_str(), h.version.as_str(), h.reason.as_str()))
        .collect();
    assert_eq!(
        held,
        [("chart", "2.0.0", "a major update; autoUpdate is minor")]
    );
    let cond = condition(&status, "UpdateAvailable").unwrap();
    assert_eq!(cond.status, "True");
    assert_eq!(
        cond.message,
        "chart 1.3.0 (minor), image ghcr.io/example/web 1.4.3 (patch), image nginx 1.27.0 (digest) available; \
         held back by policy: chart 2.0.0 (a major update; autoUpdate is minor)"
    );
    assert_eq!(status.state, Some(fluxup_api::AppState::UpdateAvailable));

    // A person sees it in the app's events too.
    fx.event_until("an UpdateAvailable event for web", |e| {
        e.involved_object.name.as_deref() == Some("web")
            && e.reason.as_deref() == Some("UpdateAvailable")
    })
    .await?;

    // Tightening the policy holds the chart update back too, and says why.
    let ns = fx.ns().to_string();
    fx.apply(managed_app(
        "web",
        "web",
        "apps",
        json!({"kustomizationRef": {"name": "apps", "namespace": ns},
               "versionPolicy": {"chart": {"autoUpdate": "minor", "constraint": "<1.3.0"}}}),
    ))
    .await?;
    let app = fx
        .status_until("web", "chart update held back", |s| {
            s.available_update
                .as_ref()
                .is_some_and(|u| u.chart.is_none())
        })
        .await?;
    let status = app.status.unwrap();
    assert!(
        status.held_back.iter().any(|h| h.name == "chart"
            && h.version == "1.3.0"
            && h.reason == "outside the constraint \"<1.3.0\""),
        "{:?}",
        status.held_back
    );
    assert_eq!(
        status.available_update.unwrap().update_type,
        Some(fluxup_api::UpdateType::Patch)
    );
    Ok(())
}

#[tokio::test]
async fn oci_chart_ref_resolves_and_follows_the_source() -> anyhow::Result<()> {
    let fx = start("mapp-oci").await?;
    let ns = fx.ns().to_string();
    let oci = |tag: &str| {
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "api"},
            "spec": {"interval": "1h", "url": "oci://registry.example.com/charts/api", "ref": {"tag": tag}},
        })
    };
    fx.apply(oci("0.3.1")).await?;
    fx.apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "api"},
        "spec": {"interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "api"},
                 "values": {"image": {"repository": "registry.example.com/images/api",
                                      "tag": "2.1.0@sha256:cccc"}}},
    }))
    .await?;
    fx.apply(kustomization("api", "./apps/api")).await?;
    fx.apply(managed_app(
        "api",
        "api",
        "api",
        json!({"kustomizationRef": {"name": "api", "namespace": ns}}),
    ))
    .await?;

    let app = fx
        .status_until("api", "resolved", |s| s.resolved.is_some())
        .await?;
    let status = app.status.unwrap();
    let resolved = status.resolved.unwrap();
    assert_eq!(resolved.chart.as_deref(), Some("api"));
    let source = resolved.chart_source.unwrap();
    assert_eq!(source.kind, "OCIRepository");
    assert_eq!(
        source.url.as_deref(),
        Some("oci://registry.example.com/charts/api")
    );
    assert_eq!(
        (
            resolved.locations[0].object.clone(),
            resolved.locations[0].field.as_str()
        ),
        (format!("OCIRepository/{ns}/api"), "spec.ref.tag")
    );
    let current = status.current_version.unwrap();
    assert_eq!(current.chart.as_deref(), Some("0.3.1"));
    assert_eq!(current.images[0].tag.as_deref(), Some("2.1.0"));
    assert_eq!(current.images[0].digest.as_deref(), Some("sha256:cccc"));

    // A change to the source reaches the app through the watch, within seconds.
    fx.apply(oci("0.4.0")).await?;
    fx.status_until("api", "chart 0.4.0", |s| {
        s.current_version.as_ref().and_then(|v| v.chart.as_deref()) == Some("0.4.0")
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn missing_references_are_named_and_heal_when_created() -> anyhow::Result<()> {
    let fx = start("mapp-missing").await?;
    let ns = fx.ns().to_string();
    fx.apply(managed_app(
        "db",
        "db",
        "db",
        json!({"kustomizationRef": {"name": "db", "namespace": ns},
               "volumeSnapshots": {"pvcs": [{"name": "data-db-0"}]}}),
    ))
    .await?;
    let app = fx
        .status_until("db", "HelmReleaseNotFound", |s| {
            is(s, "Ready", "False", "HelmReleaseNotFound")
        })
        .await?;
    let status = app.status.unwrap();
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        ready.message,
        format!(
            "HelmRelease {ns}/db not found; Kustomization {ns}/db not found; \
             PersistentVolumeClaim {ns}/data-db-0 not found"
        )
    );
    assert_eq!(status.state, Some(fluxup_api::AppState::Degraded));

    // Creating what was missing resolves the app without a restart or a retry loop.
    fx.apply(helm_repository("charts", "https://charts.example.com"))
        .await?;
    fx.apply(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "db"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "datastore", "version": "3.0.0",
                 "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}},
    }))
    .await?;
    fx.apply(kustomization("db", "./apps/db")).await?;
    fx.status_until("db", "only the volume missing", |s| {
        is(s, "Ready", "False", "VolumeNotFound")
    })
    .await?;
    // The StatefulSet controller creates the claim from the template: the app finds both.
    fx.apply(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                         "spec": {"containers": [{"name": "db", "image": "datastore:3.0.0"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    }))
    .await?;
    let app = fx
        .status_until("db", "the volume and its workload", |s| {
            is(s, "Ready", "False", "HelmReleaseNotReady")
                && s.resolved.as_ref().is_some_and(|r| !r.workloads.is_empty())
        })
        .await?;
    let workloads = app.status.unwrap().resolved.unwrap().workloads;
    assert_eq!(workloads.len(), 1);
    assert_eq!(
        (
            workloads[0].kind.as_str(),
            workloads[0].name.as_str(),
            workloads[0].pvcs.clone()
        ),
        ("StatefulSet", "db", vec!["data-db-0".to_string()])
    );
    Ok(())
}

#[tokio::test]
async fn status_is_written_only_when_it_changes() -> anyhow::Result<()> {
    let fx = start("mapp-quiet").await?;
    web_app(&fx, json!({})).await?;
    fx.flux_installed("web", "webapp", "1.2.0", "1.4.2").await?;
    let app = fx
        .status_until("web", "Ready", |s| is(s, "Ready", "True", "Resolved"))
        .await?;
    let managers: Vec<_> = app
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == FIELD_MANAGER), "{managers:?}");

    // Changes that do not alter what the app's status says write nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = fx
        .sb
        .api::<ManagedApp>()
        .get("web")
        .await?
        .metadata
        .resource_version;
    fx.apply(helm_repository("charts", "https://charts.example.com"))
        .await?;
    fx.dynamic("helm.toolkit.fluxcd.io/v2", "HelmRelease")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = fx
        .sb
        .api::<ManagedApp>()
        .get("web")
        .await?
        .metadata
        .resource_version;
    assert_eq!(before, after, "the status was rewritten without a change");
    Ok(())
}

/// A Renovate log as Renovate writes it (one JSON record per line) with findings for the web app.
fn renovate_log() -> String {
    let findings = json!({
        "name": "renovate", "level": 20, "repository": "fleet/apps", "msg": "packageFiles with updates",
        "config": {"flux": [{"packageFile": "apps/web/helmrelease.yaml", "deps": [
            {"depName": "webapp", "datasource": "helm", "currentValue": "1.2.0",
             "registryUrls": ["https://charts.example.com"],
             "updates": [{"updateType": "minor", "newVersion": "1.3.0", "newValue": "1.3.0"}]},
            {"depName": "ghcr.io/example/web", "datasource": "docker", "currentValue": "1.4.2",
             "updates": [{"updateType": "patch", "newVersion": "1.4.3", "newValue": "1.4.3"}]}]}]},
    });
    let start =
        r#"{"name":"renovate","level":30,"msg":"Repository started","renovateVersion":"39.264.1"}"#;
    format!("{start}\n{findings}\n")
}

#[tokio::test]
async fn unusable_renovate_output_keeps_the_last_findings_and_says_why() -> anyhow::Result<()> {
    use fluxup_operator::{ingest, renovate};
    let fx = start("mapp-ingest").await?;
    web_app(&fx, json!({})).await?;
    fx.flux_installed("web", "webapp", "1.2.0", "1.4.2").await?;
    fx.status_until("web", "Ready", |s| is(s, "Ready", "True", "Resolved"))
        .await?;
    let scope = Scope {
        namespace: Some(fx.ns().to_string()),
    };

    let log = renovate_log();
    let summary = ingest::record(
        &fx.sb.client,
        &scope,
        "run-1",
        &renovate::parse_log(log.as_bytes()),
    )
    .await?;
    assert_eq!((summary.apps, summary.updates), (1, 2));
    let good = fx
        .status_until("web", "the update", |s| {
            s.available_update
                .as_ref()
                .is_some_and(|u| u.chart.as_deref() == Some("1.3.0"))
        })
        .await?
        .status
        .unwrap();
    assert!(is(&good, "Scanned", "True", "Scanned"));

    // The next run's log is cut off mid-record: nothing the person saw is lost, and they are told why.
    let cut = &log[..log.len() - 40];
    let result = renovate::parse_log(cut.as_bytes());
    assert!(
        matches!(result, Err(renovate::IngestError::Malformed { .. })),
        "{result:?}"
    );
    ingest::record(&fx.sb.client, &scope, "run-2", &result).await?;
    let app = fx
        .status_until("web", "Scanned=False", |s| {
            is(s, "Scanned", "False", "MalformedOutput")
        })
        .await?;
    let status = app.status.unwrap();
    let scanned = condition(&status, "Scanned").unwrap();
    assert!(
        scanned
            .message
            .starts_with("the output of Renovate run run-2 could not be used: ")
            && scanned.message.contains("(truncated output?)")
            && scanned
                .message
                .contains("the updates shown are still those of run-1"),
        "{}",
        scanned.message
    );
    assert_eq!(
        status.detected, good.detected,
        "the last good findings are kept"
    );
    assert_eq!(status.available_update, good.available_update);

    fx.event_until("a Warning event MalformedOutput", |e| {
        e.reason.as_deref() == Some("MalformedOutput") && e.type_.as_deref() == Some("Warning")
    })
    .await?;
    Ok(())
}

/// A Deployment of the HelmRelease `web`, labelled as helm-controller labels what it applies.
fn release_deployment(ns: &str, node_selector: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {
            "helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": ns}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"nodeSelector": node_selector,
                                  "containers": [{"name": "web", "image": "ghcr.io/example/web:1.4.2"}]}},
        },
    })
}

#[tokio::test]
async fn health_is_the_releases_and_its_workloads() -> anyhow::Result<()> {
    let fx = start("mapp-health").await?;
    let ns = fx.ns().to_string();
    web_app(&fx, json!({})).await?;
    fx.flux_installed("web", "webapp", "1.2.0", "1.4.2").await?;
    fx.status_until("web", "Ready, with no workloads yet", |s| {
        is(s, "Ready", "True", "Resolved")
    })
    .await?;

    // Flux installed the release, but its pod cannot be scheduled: the HelmRelease is Ready,
    // the app is not healthy, and the condition says which workload and why.
    fx.apply(release_deployment(
        &ns,
        json!({"fluxup.dev/no-such-node": "true"}),
    ))
    .await?;
    // (First the Deployment controller has not seen the new spec; then it counts replicas.)
    let app = fx
        .status_until("web", "WorkloadsNotReady", |s| {
            is(s, "Ready", "False", "WorkloadsNotReady")
                && condition(s, "Ready").is_some_and(|c| c.message.contains("replicas ready"))
        })
        .await?;
    let status = app.status.unwrap();
    assert_eq!(
        condition(&status, "Ready").unwrap().message,
        format!(
            "HelmRelease {ns}/web is Ready at chart 1.2.0, but not its workloads: \
             Deployment {ns}/web: 0 of 1 replicas ready"
        )
    );
    assert_eq!(status.state, Some(fluxup_api::AppState::Degraded));
    assert_eq!(status.workloads.len(), 1);
    assert_eq!(status.workloads[0].name, format!("{ns}/web"));

    // A Deployment of another release in the namespace is not the app's.
    let mut other = release_deployment("elsewhere", json!({"fluxup.dev/no-such-node": "true"}));
    other["metadata"]["name"] = json!("other");
    fx.apply(other).await?;

    // The person fixes the Deployment; the scheduler places the pod on kwok's node, and the
    // app is healthy again without anything else happening.
    fx.apply(release_deployment(&ns, json!({}))).await?;
    let app = fx
        .status_until("web", "healthy again", |s| {
            is(s, "Ready", "True", "Resolved")
        })
        .await?;
    let status = app.status.unwrap();
    assert_eq!(
        condition(&status, "Ready").unwrap().message,
        format!("HelmRelease {ns}/web is Ready at chart 1.2.0; its workload is ready")
    );
    assert_eq!(
        status.workloads,
        vec![fluxup_api::WorkloadHealth {
            kind: "Deployment".into(),
            name: format!("{ns}/web"),
            replicas: 1,
            ready_replicas: 1,
            rolled_out: true,
        }]
    );
    Ok(())
}
