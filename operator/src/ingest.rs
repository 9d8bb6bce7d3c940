//! From one Renovate run's findings to each ManagedApp's `status.detected`.
//!
//! A dependency belongs to an app when its package file lies in the path the app's
//! Kustomization applies and it names the app's chart (by chart source: a HelmRepository URL
//! and chart name, or an OCIRepository's address) or one of the images in its values. The
//! mapping reads only the apps' resolved status, so it is pure and tested without a cluster.
//!
//! Output that cannot be used changes no findings: every app keeps its last good result and
//! says why in its `Scanned` condition and an Event.

use crate::renovate::{Dependency, Findings, IngestError, split_digest};
use crate::{Scope, events};
use fluxup_api::condition::SCANNED;
use fluxup_api::{Condition, DetectedUpdate, DetectedUpdates, ManagedApp, UpdateType};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::BTreeMap;

/// The field manager of `status.detected` and the `Scanned` condition.
pub const FIELD_MANAGER: &str = "fluxup-renovate";

/// `namespace/name` of a ManagedApp.
pub type AppKey = String;

/// Which findings belong to which app.
#[derive(Debug, Default, PartialEq)]
pub struct Assignment {
    /// Every app that was considered, with its updates (empty: up to date).
    pub updates: BTreeMap<AppKey, Vec<DetectedUpdate>>,
    /// Dependencies with updates that belong to no app, as `file: name`.
    pub unmatched: Vec<String>,
}

fn key(app: &ManagedApp) -> AppKey {
    format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any())
}

fn normalize(path: &str) -> &str {
    let p = path.trim_start_matches("./").trim_end_matches('/');
    if p == "." { "" } else { p }
}

/// Whether `file` lies under the directory the app's Kustomization applies.
fn in_app_path(app: &ManagedApp, file: &str) -> bool {
    let Some(path) = app
        .status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .and_then(|r| r.kustomization_path.as_deref())
    else {
        return true;
    };
    let (dir, file) = (normalize(path), normalize(file));
    dir.is_empty() || file == dir || file.starts_with(&format!("{dir}/"))
}

/// What a dependency is to an app: its chart, one of its images, or nothing.
fn role(app: &ManagedApp, dep: &Dependency) -> Option<String> {
    let status = app.status.as_ref()?;
    let names: Vec<&str> = [dep.dep_name.as_deref(), dep.package_name.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let datasource = dep.datasource.as_deref().unwrap_or_default();
    if let Some(resolved) = &status.resolved
        && let Some(source) = &resolved.chart_source
    {
        let url = source.url.as_deref().unwrap_or_default();
        let is_chart = match source.kind.as_str() {
            "HelmRepository" => {
                datasource == "helm"
                    && resolved
                        .chart
                        .as_deref()
                        .is_some_and(|c| names.contains(&c))
                    && (dep.registry_urls.is_empty()
                        || dep
                            .registry_urls
                            .iter()
                            .any(|u| u.trim_end_matches('/') == url.trim_end_matches('/')))
            }
            "OCIRepository" => {
                let address = url.trim_start_matches("oci://");
                datasource == "docker" && names.contains(&address)
            }
            _ => false,
        };
        if is_chart {
            return Some("chart".into());
        }
    }
    if datasource == "docker" {
        let images = status.current_version.as_ref().map(|v| &v.images)?;
        return images
            .iter()
            .find(|i| names.contains(&i.name.as_str()))
            .map(|i| i.name.clone());
    }
    None
}

fn update_type(word: Option<&str>) -> Option<UpdateType> {
    match word? {
        "major" => Some(UpdateType::Major),
        "minor" => Some(UpdateType::Minor),
        "patch" => Some(UpdateType::Patch),
        "digest" => Some(UpdateType::Digest),
        _ => None,
    }
}

/// The version updates of one dependency, as the app's status keeps them. Pinning, rollbacks
/// and replacements are not version updates and are left out.
fn detected(name: &str, file: &str, dep: &Dependency) -> Vec<DetectedUpdate> {
    let current_tag = dep
        .current_value
        .as_deref()
        .map(|v| split_digest(v).0.to_string());
    let current = dep.current_version.clone().or(current_tag.clone());
    dep.updates
        .iter()
        .filter_map(|u| {
            let kind = update_type(u.update_type.as_deref())?;
            let version = if kind == UpdateType::Digest {
                current_tag.clone()?
            } else {
                u.new_version.clone().or_else(|| {
                    u.new_value
                        .as_deref()
                        .map(|v| split_digest(v).0.to_string())
                })?
            };
            Some(DetectedUpdate {
                name: name.to_string(),
                current: current.clone(),
                version,
                // A Helm chart's "digest" is its package checksum, not something Git pins.
                digest: if name == "chart" {
                    None
                } else {
                    u.new_digest.clone()
                },
                update_type: Some(kind),
                release_timestamp: u.release_timestamp.clone(),
                changelog_url: dep.changelog_url.clone(),
                source_url: dep.source_url.clone(),
                package_file: Some(file.to_string()),
            })
        })
        .collect()
}

/// Assigns every dependency update to the apps it belongs to. Renovate reports an image once
/// per manager that found it (e.g. `flux` and `helm-values` on the same HelmRelease): the same
/// update is kept once.
pub fn assign(findings: &Findings, apps: &[ManagedApp]) -> Assignment {
    let mut out = Assignment {
        updates: apps.iter().map(|a| (key(a), Vec::new())).collect(),
        unmatched: Vec::new(),
    };
    for file in &findings.package_files {
        for dep in &file.deps {
            let mut matched = false;
            for app in apps.iter().filter(|a| in_app_path(a, &file.package_file)) {
                let Some(name) = role(app, dep) else { continue };
                matched = true;
                let list = out.updates.entry(key(app)).or_default();
                for update in detected(&name, &file.package_file, dep) {
                    let same = |u: &DetectedUpdate| {
                        u.name == update.name
                            && u.version == update.version
                            && u.digest == update.digest
                    };
                    if !list.iter().any(same) {
                        list.push(update);
                    }
                }
            }
            if !matched && !dep.updates.is_empty() {
                let name = dep.dep_name.as_deref().unwrap_or("(unnamed)");
                out.unmatched.push(format!("{}: {name}", file.package_file));
            }
        }
    }
    out.unmatched.dedup();
    out
}

/// What an ingestion did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Apps whose status was written.
    pub apps: usize,
    /// Updates assigned, over all apps.
    pub updates: usize,
    /// Dependencies with updates that belong to no app.
    pub unmatched: Vec<String>,
}

fn scanned_condition(app: &ManagedApp, status: &str, reason: &str, message: String) -> Condition {
    let old = app.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == SCANNED && c.status == status)
    });
    Condition {
        type_: SCANNED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: app.metadata.generation,
        last_transition_time: old.map_or(events::now_time(), |c| c.last_transition_time.clone()),
    }
}

/// Records one Renovate run's result on every ManagedApp in `scope`: the findings that belong
/// to each, or, for output that cannot be used, why — keeping each app's last findings.
/// `source` names the run for people: the Job (`namespace/name`) or the file.
pub async fn record(
    client: &Client,
    scope: &Scope,
    source: &str,
    result: &Result<Findings, IngestError>,
) -> anyhow::Result<Summary> {
    let api: Api<ManagedApp> = scope.api(client);
    let apps = api.list(&ListParams::default()).await?.items;
    let recorder = events::recorder(client);
    let mut summary = Summary::default();
    let assignment = result.as_ref().ok().map(|f| assign(f, &apps));
    for app in &apps {
        let ns = app.namespace().unwrap_or_default();
        let (detected, condition) = match result {
            Ok(findings) => {
                let updates = assignment
                    .as_ref()
                    .and_then(|a| a.updates.get(&key(app)))
                    .cloned()
                    .unwrap_or_default();
                summary.updates += updates.len();
                let message = match updates.len() {
                    0 => format!("Renovate run {source} found no updates for this app"),
                    1 => format!("Renovate run {source} found 1 update for this app"),
                    n => format!("Renovate run {source} found {n} updates for this app"),
                };
                let detected = DetectedUpdates {
                    source: source.to_string(),
                    scanned_at: Some(events::now_time()),
                    renovate_version: findings.renovate_version.clone(),
                    updates,
                };
                (
                    Some(detected),
                    scanned_condition(app, "True", "Scanned", message),
                )
            }
            Err(error) => {
                let reason = error.reason();
                let previous = app.status.as_ref().and_then(|s| s.detected.clone());
                let kept = match &previous {
                    Some(d) => format!(
                        "the updates shown are still those of {}{}",
                        d.source,
                        d.scanned_at
                            .as_ref()
                            .map(|t| format!(" ({})", t.0))
                            .unwrap_or_default()
                    ),
                    None => "no earlier findings to show".to_string(),
                };
                let message = format!(
                    "the output of Renovate run {source} could not be used: {error}; {kept}"
                );
                let object = app.object_ref(&());
                events::publish(
                    &recorder,
                    &object,
                    true,
                    "IngestRenovateOutput",
                    reason,
                    &message,
                )
                .await;
                // Re-sent as they are: a server-side apply without them would delete them.
                (previous, scanned_condition(app, "False", reason, message))
            }
        };
        let patch = serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1",
            "kind": "ManagedApp",
            "status": {"detected": detected, "conditions": [condition]},
        });
        Api::<ManagedApp>::namespaced(client.clone(), &ns)
            .patch_status(
                &app.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        summary.apps += 1;
    }
    if let Some(a) = assignment {
        summary.unmatched = a.unmatched;
    }
    tracing::info!(%source, apps = summary.apps, updates = summary.updates,
        unmatched = summary.unmatched.len(), ok = result.is_ok(), "Renovate findings recorded");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::renovate::{PackageFile, Update};
    use fluxup_api::{ChartSource, ImageVersion, ManagedAppStatus, ResolvedApp, VersionSet};

    fn app(
        name: &str,
        path: &str,
        source: ChartSource,
        chart: &str,
        images: &[&str],
    ) -> ManagedApp {
        let mut app = ManagedApp::new(name, Default::default());
        app.metadata.namespace = Some("apps".into());
        app.status = Some(ManagedAppStatus {
            resolved: Some(ResolvedApp {
                chart: Some(chart.into()),
                chart_source: Some(source),
                kustomization_path: Some(path.into()),
                ..Default::default()
            }),
            current_version: Some(VersionSet {
                images: images
                    .iter()
                    .map(|i| ImageVersion {
                        name: i.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        });
        app
    }

    fn helm_repo(url: &str) -> ChartSource {
        ChartSource {
            kind: "HelmRepository".into(),
            name: "flux-system/charts".into(),
            url: Some(url.into()),
        }
    }

    fn dep(name: &str, datasource: &str, current: &str, updates: &[(&str, &str)]) -> Dependency {
        Dependency {
            dep_name: Some(name.into()),
            datasource: Some(datasource.into()),
            current_value: Some(current.into()),
            updates: updates
                .iter()
                .map(|(kind, version)| Update {
                    update_type: Some(kind.to_string()),
                    new_version: Some(version.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn file(manager: &str, path: &str, deps: Vec<Dependency>) -> PackageFile {
        PackageFile {
            manager: manager.into(),
            package_file: path.into(),
            deps,
        }
    }

    #[test]
    fn charts_and_images_go_to_the_app_whose_path_holds_them() {
        let web = app(
            "web",
            "./apps/web",
            helm_repo("http://charts.local/"),
            "webapp",
            &["ghcr.io/x/web"],
        );
        let api = app(
            "api",
            "./apps/api",
            ChartSource {
                kind: "OCIRepository".into(),
                name: "apps/api".into(),
                url: Some("oci://registry.local/charts/api".into()),
            },
            "api",
            &["ghcr.io/x/web"],
        );
        let mut chart = dep(
            "webapp",
            "helm",
            "1.2.0",
            &[("minor", "1.3.0"), ("major", "2.0.0")],
        );
        chart.registry_urls = vec!["http://charts.local".into()];
        let mut pinned = dep(
            "ghcr.io/x/web",
            "docker",
            "1.4.2@sha256:aaa",
            &[("digest", "")],
        );
        pinned.updates[0].new_digest = Some("sha256:bbb".into());
        let findings = Findings {
            package_files: vec![
                file(
                    "flux",
                    "apps/web/helmrelease.yaml",
                    vec![chart, pinned.clone()],
                ),
                // The same image again from another manager: kept once.
                file("helm-values", "apps/web/helmrelease.yaml", vec![pinned]),
                file(
                    "flux",
                    "apps/api/ocirepository.yaml",
                    vec![dep(
                        "registry.local/charts/api",
                        "docker",
                        "0.3.1",
                        &[("patch", "0.3.2")],
                    )],
                ),
                file(
                    "flux",
                    "infra/other.yaml",
                    vec![dep("other", "helm", "1.0.0", &[("major", "2.0.0")])],
                ),
            ],
            ..Default::default()
        };
        let got = assign(&findings, &[web, api]);
        let summary = |k: &str| -> Vec<(String, String, Option<String>)> {
            got.updates[k]
                .iter()
                .map(|u| (u.name.clone(), u.version.clone(), u.digest.clone()))
                .collect()
        };
        assert_eq!(
            summary("apps/web"),
            [
                ("chart".into(), "1.3.0".into(), None),
                ("chart".into(), "2.0.0".into(), None),
                (
                    "ghcr.io/x/web".into(),
                    "1.4.2".into(),
                    Some("sha256:bbb".into())
                ),
            ]
        );
        assert_eq!(
            summary("apps/api"),
            [("chart".into(), "0.3.2".into(), None)]
        );
        assert_eq!(got.updates["apps/web"][0].current.as_deref(), Some("1.2.0"));
        assert_eq!(
            got.updates["apps/web"][0].package_file.as_deref(),
            Some("apps/web/helmrelease.yaml")
        );
        assert_eq!(got.unmatched, ["infra/other.yaml: other"]);
    }

    #[test]
    fn a_chart_from_another_repository_is_not_the_apps() {
        let web = app(
            "web",
            "apps",
            helm_repo("http://charts.local"),
            "webapp",
            &[],
        );
        let mut chart = dep("webapp", "helm", "1.2.0", &[("minor", "1.3.0")]);
        chart.registry_urls = vec!["https://elsewhere.example".into()];
        let findings = Findings {
            package_files: vec![file("flux", "apps/web.yaml", vec![chart])],
            ..Default::default()
        };
        let got = assign(&findings, &[web]);
        assert!(got.updates["apps/web"].is_empty());
        assert_eq!(got.unmatched, ["apps/web.yaml: webapp"]);
    }

    #[test]
    fn pins_and_rollbacks_are_not_updates() {
        let web = app("web", "", helm_repo("http://c"), "webapp", &["nginx"]);
        let findings = Findings {
            package_files: vec![file(
                "helm-values",
                "values.yaml",
                vec![dep(
                    "nginx",
                    "docker",
                    "1.27.0",
                    &[("pinDigest", "1.27.0"), ("rollback", "1.26.0")],
                )],
            )],
            ..Default::default()
        };
        assert!(assign(&findings, &[web]).updates["apps/web"].is_empty());
    }
}
