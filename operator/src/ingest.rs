//! From one Renovate run's findings to each ManagedApp's `status.detected`.
//!
//! A dependency belongs to an app when its package file lies in the path the app's
//! Kustomization applies and it names the app's chart (by chart source: a HelmRepository URL
//! and chart name, or an OCIRepository's address) or one of the images in its values. The
//! mapping reads only the apps' resolved status, so it is pure and tested without a cluster.
//!
//! Output that cannot be used changes no findings: every app keeps its last good result and
//! says why in its `Scanned` condition and an Event.
//!
//! Renovate's text is checked here, before it reaches a status, a dashboard link, a
//! notification or a Git commit: links are kept only when they are http(s) ([`safe_link`]);
//! an update whose version, tag or digest is not a plain value ([`plain_value`],
//! [`valid_digest`]) is refused; a package file must be a plain path inside the app's
//! Kustomization ([`repo_path`]). The Git file FluxUp commits to is the one the ManagedApp's
//! spec names (`versionPolicy.*.git.file`); Renovate's `packageFile` is only a fallback, and only
//! ever a file inside the path the app's own Kustomization applies.

use crate::renovate::{Dependency, Findings, IngestError, LOG_LIMIT_ENV, split_digest};
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
    /// What was refused from Renovate's output and why, with the app it was for when known.
    pub refused: Vec<(Option<AppKey>, String)>,
}

/// Characters Slack and Markdown read as markup: a version holding one could rewrite the
/// message or page it is shown in.
const MARKUP: &[char] = &['<', '>', '|', '`', '*'];
/// The longest version, tag or timestamp kept (an OCI tag is at most 128 characters).
const MAX_VALUE_LEN: usize = 128;
/// The longest link kept.
const MAX_LINK_LEN: usize = 2048;
/// The longest package file path kept.
const MAX_PATH_LEN: usize = 1024;

/// Invisible Unicode format characters (Cf) that reorder or hide text: bidirectional controls,
/// zero-width characters, the soft hyphen, the byte-order mark.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Whether `value` may be kept as a version, tag or timestamp: not empty, at most 128
/// characters, with no control or format character, no whitespace (newlines included) and none
/// of `<`, `>`, `|`, `` ` ``, `*`.
pub fn plain_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE_LEN
        && !value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_format(c) || MARKUP.contains(&c))
}

/// Whether `digest` is an OCI digest, `algorithm:encoded` (e.g. `sha256:4f1c…`).
pub fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let component = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    digest.len() <= 256
        && algorithm.split(['+', '.', '_', '-']).all(component)
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

/// `link` as it may be shown and followed: an absolute http or https URL with a host and no
/// user name or password, as the URL parser writes it, with `|` and `` ` `` percent-encoded
/// (Slack ends a link at `|`). Anything else — `javascript:`, `data:`, `vbscript:`, `file:`, a
/// relative link, control characters — is `None`.
pub fn safe_link(link: &str) -> Option<String> {
    if link.len() > MAX_LINK_LEN || link.chars().any(|c| c.is_control() || is_format(c)) {
        return None;
    }
    let url = reqwest::Url::parse(link.trim()).ok()?;
    let kept = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none();
    kept.then(|| url.as_str().replace('|', "%7C").replace('`', "%60"))
        .filter(|l| l.len() <= MAX_LINK_LEN)
}

/// `path` when it is a plain path relative to the repository root (`apps/web/release.yaml`):
/// not absolute, no `.` or `..` segment, no empty segment, no backslash, no control or format
/// character.
pub fn repo_path(path: &str) -> Option<&str> {
    let path = path.strip_prefix("./").unwrap_or(path);
    let plain = !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || is_format(c))
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    plain.then_some(path)
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
/// and replacements are not version updates and are left out. An update whose version or digest
/// is not a plain value is refused (said in `refused`); a link that is not http(s) is dropped.
fn detected(
    name: &str,
    file: &str,
    dep: &Dependency,
    refused: &mut Vec<String>,
) -> Vec<DetectedUpdate> {
    let current_tag = dep
        .current_value
        .as_deref()
        .map(|v| split_digest(v).0.to_string());
    let current = dep
        .current_version
        .clone()
        .or(current_tag.clone())
        .filter(|v| plain_value(v));
    let changelog_url = dep.changelog_url.as_deref().and_then(safe_link);
    let source_url = dep.source_url.as_deref().and_then(safe_link);
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
            // A Helm chart's "digest" is its package checksum, not something Git pins.
            let digest = if name == "chart" {
                None
            } else {
                u.new_digest.clone()
            };
            if !plain_value(&version) {
                refused.push(format!(
                    "{file}: an update of {name} whose version has control characters, \
                     whitespace or markup (or is over {MAX_VALUE_LEN} characters)"
                ));
                return None;
            }
            if digest.as_deref().is_some_and(|d| !valid_digest(d)) {
                refused.push(format!(
                    "{file}: an update of {name} to {version} whose digest is not an OCI digest"
                ));
                return None;
            }
            Some(DetectedUpdate {
                name: name.to_string(),
                current: current.clone(),
                version,
                digest,
                update_type: Some(kind),
                release_timestamp: u.release_timestamp.clone().filter(|t| plain_value(t)),
                changelog_url: changelog_url.clone(),
                source_url: source_url.clone(),
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
        refused: Vec::new(),
    };
    for file in &findings.package_files {
        let Some(path) = repo_path(&file.package_file) else {
            if file.deps.iter().any(|d| !d.updates.is_empty()) {
                out.refused.push((
                    None,
                    format!(
                        "package file {:?} is not a plain path inside the repository",
                        file.package_file.chars().take(200).collect::<String>()
                    ),
                ));
            }
            continue;
        };
        for dep in &file.deps {
            let mut matched = false;
            for app in apps.iter().filter(|a| in_app_path(a, path)) {
                let Some(name) = role(app, dep) else { continue };
                matched = true;
                let mut refused = Vec::new();
                let updates = detected(&name, path, dep, &mut refused);
                out.refused
                    .extend(refused.into_iter().map(|r| (Some(key(app)), r)));
                let list = out.updates.entry(key(app)).or_default();
                for update in updates {
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
                let name = dep
                    .dep_name
                    .as_deref()
                    .filter(|n| repo_path(n).is_some())
                    .unwrap_or("(unnamed)");
                out.unmatched.push(format!("{path}: {name}"));
            }
        }
    }
    out.unmatched.dedup();
    out.refused.dedup();
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
    /// What was refused from Renovate's output, and why.
    pub refused: Vec<String>,
    /// The log was read only up to this many bytes.
    pub truncated_at: Option<usize>,
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
                let mut message = match updates.len() {
                    0 => format!("Renovate run {source} found no updates for this app"),
                    1 => format!("Renovate run {source} found 1 update for this app"),
                    n => format!("Renovate run {source} found {n} updates for this app"),
                };
                let refused = assignment.as_ref().map_or(0, |a| {
                    a.refused
                        .iter()
                        .filter(|(k, _)| k.as_deref() == Some(key(app).as_str()))
                        .count()
                });
                if refused > 0 {
                    message.push_str(&format!(
                        "; {refused} of its updates were refused (a version or digest with \
                         control characters, whitespace or markup; see FluxUp's log)"
                    ));
                }
                if let Some(limit) = findings.truncated_at {
                    message.push_str(&format!(
                        "; the run's log is longer than FluxUp's limit of {limit} bytes \
                         ({LOG_LIMIT_ENV}) and was read up to it"
                    ));
                }
                let detected = DetectedUpdates {
                    source: source.to_string(),
                    scanned_at: Some(events::now_time()),
                    renovate_version: findings.renovate_version.clone().filter(|v| plain_value(v)),
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
        summary.refused = a
            .refused
            .into_iter()
            .map(|(app, why)| match app {
                Some(app) => format!("{app}: {why}"),
                None => why,
            })
            .collect();
    }
    summary.truncated_at = result.as_ref().ok().and_then(|f| f.truncated_at);
    for why in summary.refused.iter().take(20) {
        tracing::warn!(%source, refused = %why, "refused part of Renovate's output");
    }
    tracing::info!(%source, apps = summary.apps, updates = summary.updates,
        unmatched = summary.unmatched.len(), refused = summary.refused.len(),
        truncated_at = summary.truncated_at, ok = result.is_ok(), "Renovate findings recorded");
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
    fn only_http_links_are_kept() {
        assert_eq!(
            safe_link("https://github.com/x/y/releases").as_deref(),
            Some("https://github.com/x/y/releases")
        );
        assert_eq!(
            safe_link(" http://charts.local/a b").as_deref(),
            Some("http://charts.local/a%20b")
        );
        // Slack ends a link at `|`; Markdown code at a backtick.
        assert_eq!(
            safe_link("https://x.example/a|b?q=`c`").as_deref(),
            Some("https://x.example/a%7Cb?q=%60c%60")
        );
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(document.cookie)",
            " javascript:alert(1)",
            "java\nscript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "vbscript:msgbox(1)",
            "file:///etc/passwd",
            "ftp://x.example/",
            "/relative/path",
            "//evil.example/x",
            "releases",
            "https://github.com@evil.example/",
            "https://user:pw@x.example/",
            "https://x.example/\u{202E}txt.exe",
            "https://x.example/a\nb",
            "",
        ] {
            assert_eq!(safe_link(bad), None, "{bad:?}");
        }
        assert_eq!(
            safe_link(&format!("https://x.example/{}", "a".repeat(3000))),
            None
        );
    }

    #[test]
    fn versions_are_plain_values() {
        for good in [
            "1.2.3",
            "v1.2.3-rc.1+build.5",
            "2024.01.02",
            "1.27.0-alpine3.20",
            "latest",
        ] {
            assert!(plain_value(good), "{good}");
        }
        for bad in [
            "",
            "1.2.3\n",
            "1.2.3\r",
            "1 2",
            "1.2.3\t",
            "<https://evil.example|1.2.3>",
            "1.2.3|x",
            "`1.2.3`",
            "*1.2.3*",
            "1.2\u{0}",
            "1.2\u{7f}",
            "1.2\u{85}",
            "1.2.3\u{202E}",
            "1.2\u{200B}.3",
            "1.2\u{3000}",
        ] {
            assert!(!plain_value(bad), "{bad:?}");
        }
        assert!(!plain_value(&"1".repeat(129)));
        assert!(valid_digest(
            "sha256:4f1c0a3ad2e9d0d5b0e1e2b8d2f7c6e5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9"
        ));
        assert!(valid_digest("sha512+b64u:abc_-="));
        for bad in [
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256:ab c",
            "sha256:a|b",
            "sha256:a\nb",
        ] {
            assert!(!valid_digest(bad), "{bad:?}");
        }
    }

    #[test]
    fn package_files_are_plain_paths_in_the_repository() {
        assert_eq!(
            repo_path("apps/web/helmrelease.yaml"),
            Some("apps/web/helmrelease.yaml")
        );
        assert_eq!(repo_path("./apps/web.yaml"), Some("apps/web.yaml"));
        for bad in [
            "",
            "/etc/passwd",
            "../other/x.yaml",
            "apps/web/../../other/x.yaml",
            "apps/./web.yaml",
            "apps//web.yaml",
            "apps\\web.yaml",
            "apps/web.yaml\n",
            "apps/\u{202E}lmay.yaml",
        ] {
            assert_eq!(repo_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unsafe_links_versions_and_files_never_reach_an_app() {
        let web = app(
            "web",
            "./apps/web",
            helm_repo("http://charts.local"),
            "webapp",
            &["ghcr.io/x/web"],
        );
        let mut chart = dep(
            "webapp",
            "helm",
            "1.2.0",
            &[
                ("minor", "1.3.0"),
                ("major", "<https://evil.example|2.0.0>"),
            ],
        );
        chart.changelog_url = Some("javascript:alert(1)".into());
        chart.source_url = Some("https://github.com/x/webapp".into());
        let mut image = dep("ghcr.io/x/web", "docker", "1.4.2", &[("patch", "1.4.3")]);
        image.updates[0].new_digest = Some("sha256:ab\ncd".into());
        image.updates[0].release_timestamp = Some("2026-01-01T00:00:00Z\n*bold*".into());
        let escaped = dep("webapp", "helm", "1.2.0", &[("patch", "1.2.1")]);
        let findings = Findings {
            package_files: vec![
                file("flux", "apps/web/helmrelease.yaml", vec![chart, image]),
                // Inside the app's path by prefix only: refused, never matched.
                file("flux", "apps/web/../other/helmrelease.yaml", vec![escaped]),
            ],
            ..Default::default()
        };
        let got = assign(&findings, &[web]);
        let updates = &got.updates["apps/web"];
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert_eq!(updates[0].version, "1.3.0");
        assert_eq!(updates[0].changelog_url, None);
        assert_eq!(
            updates[0].source_url.as_deref(),
            Some("https://github.com/x/webapp")
        );
        assert_eq!(got.refused.len(), 3, "{:?}", got.refused);
        assert_eq!(
            got.refused
                .iter()
                .filter(|(app, _)| app.as_deref() == Some("apps/web"))
                .count(),
            2
        );
        assert!(got.unmatched.is_empty());
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
