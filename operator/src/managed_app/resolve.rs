//! Resolving a ManagedApp: which HelmRelease, chart source, Kustomization and workloads it
//! stands for, what runs now, and where each version is written. Pure: the cluster is read
//! through [`Cluster`] (the controller's watch caches), so this is tested without an API server.

use crate::renovate::split_digest;
use fluxup_api::flux::{HelmRelease, HelmRepository, Kustomization, OCIRepository};
use fluxup_api::{
    ChartSource, ImageVersion, ManagedApp, ResolvedApp, VersionLocation, VersionSet,
    WorkloadHealth, WorkloadReference,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PodSpec};
use serde_json::Value;
use std::sync::Arc;

/// Read access to the objects an app refers to.
pub trait Cluster {
    fn helm_release(&self, namespace: &str, name: &str) -> Option<Arc<HelmRelease>>;
    fn helm_repository(&self, namespace: &str, name: &str) -> Option<Arc<HelmRepository>>;
    fn oci_repository(&self, namespace: &str, name: &str) -> Option<Arc<OCIRepository>>;
    fn kustomization(&self, namespace: &str, name: &str) -> Option<Arc<Kustomization>>;
    fn pvc(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn pvcs(&self, namespace: &str) -> Vec<Arc<PersistentVolumeClaim>>;
    fn deployments(&self, namespace: &str) -> Vec<Arc<Deployment>>;
    fn stateful_sets(&self, namespace: &str) -> Vec<Arc<StatefulSet>>;
}

/// Why an app is not Ready, in the words of its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason, e.g. `HelmReleaseNotFound`.
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

/// What an app resolved to. `problems` is empty when everything it names exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    pub resolved: Option<ResolvedApp>,
    pub current: Option<VersionSet>,
    /// The HelmRelease's own Ready condition, when it is not True (reason, message).
    pub release_not_ready: Option<(String, String)>,
    /// The release's workloads and those that mount the app's volumes, ready or not.
    pub workloads: Vec<WorkloadHealth>,
    pub problems: Vec<Problem>,
}

/// One image found in a HelmRelease's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundImage {
    pub image: ImageVersion,
    /// Dotted path of the field holding the tag, from the HelmRelease's root.
    pub field: String,
}

pub fn resolve(app: &ManagedApp, cluster: &impl Cluster) -> Resolution {
    let mut out = Resolution::default();
    let app_ns = app.metadata.namespace.clone().unwrap_or_default();
    let hr_ns = app.helm_release_namespace().unwrap_or(&app_ns).to_string();
    let hr_name = &app.spec.helm_release_ref.name;
    let ks_ns = app.kustomization_namespace().to_string();
    let ks_name = &app.spec.kustomization_ref.name;

    let kustomization = cluster.kustomization(&ks_ns, ks_name);
    if kustomization.is_none() {
        out.problems.push(Problem::new(
            "KustomizationNotFound",
            format!("Kustomization {ks_ns}/{ks_name} not found"),
        ));
    }
    for pvc in app
        .spec
        .volume_snapshots
        .iter()
        .filter(|v| v.enabled)
        .flat_map(|v| &v.pvcs)
    {
        if cluster.pvc(&app_ns, &pvc.name).is_none() {
            out.problems.push(Problem::new(
                "VolumeNotFound",
                format!("PersistentVolumeClaim {app_ns}/{} not found", pvc.name),
            ));
        }
    }

    let Some(release) = cluster.helm_release(&hr_ns, hr_name) else {
        out.problems.insert(
            0,
            Problem::new(
                "HelmReleaseNotFound",
                format!("HelmRelease {hr_ns}/{hr_name} not found"),
            ),
        );
        return out;
    };
    let release_object = format!("HelmRelease/{hr_ns}/{hr_name}");
    let policy = app.spec.version_policy.clone().unwrap_or_default();
    let mut resolved = ResolvedApp {
        helm_release: format!("{hr_ns}/{hr_name}"),
        kustomization: format!("{ks_ns}/{ks_name}"),
        // Flux applies the repository's root when the Kustomization names no path.
        kustomization_path: kustomization
            .as_ref()
            .map(|k| k.spec.path.clone().unwrap_or_else(|| "./".into())),
        git_source: kustomization.as_ref().map(|k| {
            let r = &k.spec.source_ref;
            format!(
                "{}/{}/{}",
                r.kind,
                r.namespace.as_deref().unwrap_or(&ks_ns),
                r.name
            )
        }),
        ..Default::default()
    };

    // The chart and where its version lives.
    let mut desired_chart = None;
    let chart_git = policy.chart.as_ref().and_then(|c| c.git.clone());
    if let Some(chart_ref) = &release.spec.chart_ref {
        let ns = chart_ref.namespace.clone().unwrap_or_else(|| hr_ns.clone());
        let source_name = format!("{ns}/{}", chart_ref.name);
        if chart_ref.kind == "OCIRepository" {
            match cluster.oci_repository(&ns, &chart_ref.name) {
                Some(repo) => {
                    resolved.chart = repo.spec.url.rsplit('/').next().map(str::to_string);
                    resolved.chart_source = Some(ChartSource {
                        kind: "OCIRepository".into(),
                        name: source_name.clone(),
                        url: Some(repo.spec.url.clone()),
                    });
                    desired_chart = repo.spec.r#ref.as_ref().and_then(|r| r.tag.clone());
                    resolved.locations.push(VersionLocation {
                        name: "chart".into(),
                        object: format!("OCIRepository/{source_name}"),
                        field: field_or(&chart_git, "spec.ref.tag"),
                        file: chart_git.as_ref().and_then(|g| g.file.clone()),
                    });
                }
                None => out.problems.push(Problem::new(
                    "ChartSourceNotFound",
                    format!("OCIRepository {source_name} (the HelmRelease's chartRef) not found"),
                )),
            }
        } else {
            out.problems.push(Problem::new(
                "UnsupportedChartSource",
                format!(
                    "the HelmRelease's chartRef names a {} ({source_name}); FluxUp follows OCIRepository chart sources",
                    chart_ref.kind
                ),
            ));
        }
    } else if let Some(template) = &release.spec.chart {
        let spec = &template.spec;
        let src = &spec.source_ref;
        let ns = src.namespace.clone().unwrap_or_else(|| hr_ns.clone());
        let source_name = format!("{ns}/{}", src.name);
        resolved.chart = Some(spec.chart.clone());
        desired_chart = spec.version.clone();
        let url = match src.kind.as_str() {
            "HelmRepository" => cluster
                .helm_repository(&ns, &src.name)
                .map(|r| Some(r.spec.url.clone())),
            // A chart from Git or a bucket has no registry version to update.
            _ => Some(None),
        };
        match url {
            Some(url) => {
                resolved.chart_source = Some(ChartSource {
                    kind: src.kind.clone(),
                    name: source_name,
                    url,
                })
            }
            None => out.problems.push(Problem::new(
                "ChartSourceNotFound",
                format!(
                    "{} {source_name} (the HelmRelease's chart source) not found",
                    src.kind
                ),
            )),
        }
        resolved.locations.push(VersionLocation {
            name: "chart".into(),
            object: release_object.clone(),
            field: field_or(&chart_git, "spec.chart.spec.version"),
            file: chart_git.as_ref().and_then(|g| g.file.clone()),
        });
    } else {
        out.problems.push(Problem::new(
            "NoChart",
            format!("HelmRelease {hr_ns}/{hr_name} has neither spec.chart nor spec.chartRef"),
        ));
    }

    // Images in the values, and where their tags live.
    let values = release.spec.values.clone().unwrap_or(Value::Null);
    let mut images = find_images(&values, "spec.values");
    for rule in &policy.images {
        if let Some(path) = &rule.values_path {
            images.retain(|i| {
                i.image.name != rule.name || i.field.starts_with(&format!("spec.values.{path}."))
            });
        }
    }
    let mut current_images: Vec<ImageVersion> = Vec::new();
    for found in &images {
        let git = policy
            .images
            .iter()
            .find(|r| r.name == found.image.name)
            .and_then(|r| r.git.clone());
        resolved.locations.push(VersionLocation {
            name: found.image.name.clone(),
            object: release_object.clone(),
            field: field_or(&git, &found.field),
            file: git.and_then(|g| g.file),
        });
        if !current_images.iter().any(|i| i.name == found.image.name) {
            current_images.push(found.image.clone());
        }
    }

    // What runs now: the newest release in Helm's history, else what the sources ask for.
    let deployed = release
        .status
        .as_ref()
        .and_then(|s| s.history.first())
        .filter(|h| !h.chart_version.is_empty());
    out.current = Some(VersionSet {
        chart: deployed
            .map(|h| without_flux_digest(&h.chart_version).to_string())
            .or(desired_chart),
        app_version: deployed.and_then(|h| h.app_version.clone()),
        images: current_images,
    });
    let ready = release
        .status
        .as_ref()
        .and_then(|s| s.flux.conditions.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => {}
        Some(c) => out.release_not_ready = Some((c.reason.clone(), c.message.clone())),
        None => {
            out.release_not_ready = Some((
                "Progressing".into(),
                "Flux has not reconciled it yet".into(),
            ))
        }
    }

    (resolved.pvcs, resolved.pvcs_found) =
        snapshot_claims(app, &app_ns, (&hr_ns, hr_name), cluster);
    resolved.workloads = workloads(&resolved.pvcs, &app_ns, cluster);
    let target_ns = release.spec.target_namespace.as_deref().unwrap_or(&hr_ns);
    let mut namespaces = vec![target_ns, app_ns.as_str()];
    namespaces.dedup();
    let (deployments, stateful_sets): (Vec<_>, Vec<_>) = (
        namespaces
            .iter()
            .flat_map(|ns| cluster.deployments(ns))
            .collect(),
        namespaces
            .iter()
            .flat_map(|ns| cluster.stateful_sets(ns))
            .collect(),
    );
    out.workloads = crate::workload_health::of_app(
        (&hr_ns, hr_name),
        (&app_ns, &resolved.workloads),
        &deployments,
        &stateful_sets,
    );
    out.resolved = Some(resolved);
    out
}

/// helm-controller records a chart from an OCI artifact as `1.0.0+<12 hex of its digest>`:
/// the version a person wrote, and Renovate compares, is the part before.
pub fn without_flux_digest(version: &str) -> &str {
    match version.rsplit_once('+') {
        Some((v, meta)) if meta.len() == 12 && meta.bytes().all(|b| b.is_ascii_hexdigit()) => v,
        _ => version,
    }
}

fn field_or(git: &Option<fluxup_api::GitLocation>, default: &str) -> String {
    git.as_ref()
        .and_then(|g| g.field.clone())
        .unwrap_or_else(|| default.to_string())
}

/// Images in Helm values: blocks with `repository` (+ `registry`, `tag`, `digest`), as most
/// charts write them, and `image: repo:tag@digest` strings.
pub fn find_images(values: &Value, path: &str) -> Vec<FoundImage> {
    let mut out = Vec::new();
    walk(values, path, &mut out);
    out
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn walk(value: &Value, path: &str, out: &mut Vec<FoundImage>) {
    match value {
        Value::Object(map) => {
            if let Some(repository) = scalar(map.get("repository")) {
                let name = match scalar(map.get("registry")) {
                    Some(registry) => format!("{}/{repository}", registry.trim_end_matches('/')),
                    None => repository,
                };
                let (tag, mut digest) = match scalar(map.get("tag")) {
                    Some(t) => {
                        let (tag, digest) = split_digest(&t);
                        (Some(tag.to_string()), digest.map(str::to_string))
                    }
                    None => (None, None),
                };
                if digest.is_none() {
                    digest = scalar(map.get("digest"));
                }
                out.push(FoundImage {
                    image: ImageVersion {
                        name,
                        tag: tag.filter(|t| !t.is_empty()),
                        digest,
                    },
                    field: format!("{path}.tag"),
                });
                return;
            }
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if key == "image"
                    && let Value::String(s) = child
                    && let Some(image) = parse_image_string(s)
                {
                    out.push(FoundImage {
                        image,
                        field: child_path,
                    });
                    continue;
                }
                walk(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}.{i}"), out);
            }
        }
        _ => {}
    }
}

/// `registry/repo:tag@sha256:…` → name, tag, digest. A colon after the last slash starts the
/// tag (a colon before it is a registry port).
fn parse_image_string(s: &str) -> Option<ImageVersion> {
    let (rest, digest) = split_digest(s.trim());
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return None;
    }
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
        None => (rest, None),
    };
    Some(ImageVersion {
        name: name.to_string(),
        tag,
        digest: digest.map(str::to_string),
    })
}

/// The claims an app snapshots before an upgrade, and whether they were found rather than
/// listed: `volumeSnapshots.pvcs`, or when that is empty, the release's claims in the app's
/// namespace ([`found_claims`]) without `excludePVCs`. None when snapshots are off.
fn snapshot_claims(
    app: &ManagedApp,
    app_ns: &str,
    release: (&str, &str),
    cluster: &impl Cluster,
) -> (Vec<String>, bool) {
    let Some(policy) = app.spec.volume_snapshots.as_ref().filter(|v| v.enabled) else {
        return (Vec::new(), false);
    };
    if !policy.pvcs.is_empty() {
        return (policy.pvcs.iter().map(|p| p.name.clone()).collect(), false);
    }
    let mut found = found_claims(
        release,
        &cluster.pvcs(app_ns),
        &cluster.stateful_sets(app_ns),
    );
    found.retain(|c| !policy.exclude_pvcs.iter().any(|e| &e.name == c));
    (found, true)
}

/// The claims a HelmRelease made, among `pvcs`: those helm-controller labels as the release's
/// (a chart's own PersistentVolumeClaim templates), and those of the release's StatefulSets'
/// `volumeClaimTemplates` (named `<template>-<statefulset>-<ordinal>`; helm-controller labels
/// the StatefulSet, not the claims its controller makes). Sorted, each once. The add-an-app
/// page proposes the same.
pub fn found_claims(
    (release_ns, release): (&str, &str),
    pvcs: &[Arc<PersistentVolumeClaim>],
    stateful_sets: &[Arc<StatefulSet>],
) -> Vec<String> {
    use crate::workload_health::of_release;
    use kube::ResourceExt;
    let from_templates: Vec<String> = stateful_sets
        .iter()
        .filter(|s| of_release(s.labels(), release_ns, release))
        .flat_map(|s| {
            let name = s.name_any();
            s.spec
                .iter()
                .flat_map(|spec| spec.volume_claim_templates.iter().flatten())
                .filter_map(|t| t.metadata.name.clone())
                .map(move |t| format!("{t}-{name}-"))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut claims: Vec<String> = pvcs
        .iter()
        .filter(|c| {
            let name = c.name_any();
            of_release(c.labels(), release_ns, release)
                || from_templates.iter().any(|prefix| {
                    name.strip_prefix(prefix.as_str())
                        .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .map(|c| c.name_any())
        .collect();
    claims.sort();
    claims.dedup();
    claims
}

/// Deployments and StatefulSets in the app's namespace that mount one of its snapshotted PVCs.
fn workloads(pvcs: &[String], ns: &str, cluster: &impl Cluster) -> Vec<WorkloadReference> {
    let pvcs: Vec<&str> = pvcs.iter().map(String::as_str).collect();
    if pvcs.is_empty() {
        return Vec::new();
    }
    let mounted = |spec: Option<&PodSpec>, extra: &[String]| -> Vec<String> {
        let mut claims: Vec<String> = spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone())
            })
            .chain(extra.iter().cloned())
            .filter(|c| pvcs.contains(&c.as_str()))
            .collect();
        claims.sort();
        claims.dedup();
        claims
    };
    let mut out = Vec::new();
    for d in cluster.deployments(ns) {
        let spec = d.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let claims = mounted(spec, &[]);
        if !claims.is_empty() {
            out.push(WorkloadReference {
                kind: "Deployment".into(),
                name: d.metadata.name.clone().unwrap_or_default(),
                pvcs: claims,
            });
        }
    }
    for s in cluster.stateful_sets(ns) {
        let name = s.metadata.name.clone().unwrap_or_default();
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        // A StatefulSet's claims are named <template>-<statefulset>-<ordinal>.
        let replicas = spec.replicas.unwrap_or(1).max(1);
        let from_templates: Vec<String> = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .filter_map(|t| t.metadata.name.clone())
            .flat_map(|t| {
                let name = name.clone();
                (0..replicas).map(move |i| format!("{t}-{name}-{i}"))
            })
            .collect();
        let claims = mounted(spec.template.spec.as_ref(), &from_templates);
        if !claims.is_empty() {
            out.push(WorkloadReference {
                kind: "StatefulSet".into(),
                name,
                pvcs: claims,
            });
        }
    }
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_in_blocks_and_strings_with_and_without_digests() {
        let values = json!({
            "image": {"registry": "ghcr.io", "repository": "example/web", "tag": "1.4.2"},
            "sidecar": {"image": {"repository": "nginx", "tag": "1.27.0@sha256:abc"}},
            "worker": {"image": "127.0.0.1:16032/images/worker:2.0.1@sha256:def"},
            "init": [{"image": "busybox"}],
            "exporter": {"image": {"repository": "prom/exporter", "tag": 3, "digest": "sha256:123"}},
        });
        let mut found = find_images(&values, "spec.values");
        found.sort_by(|a, b| a.field.cmp(&b.field));
        let got: Vec<_> = found
            .iter()
            .map(|f| {
                (
                    f.field.as_str(),
                    f.image.name.as_str(),
                    f.image.tag.as_deref(),
                    f.image.digest.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.values.exporter.image.tag",
                    "prom/exporter",
                    Some("3"),
                    Some("sha256:123")
                ),
                (
                    "spec.values.image.tag",
                    "ghcr.io/example/web",
                    Some("1.4.2"),
                    None
                ),
                ("spec.values.init.0.image", "busybox", None, None),
                (
                    "spec.values.sidecar.image.tag",
                    "nginx",
                    Some("1.27.0"),
                    Some("sha256:abc")
                ),
                (
                    "spec.values.worker.image",
                    "127.0.0.1:16032/images/worker",
                    Some("2.0.1"),
                    Some("sha256:def")
                ),
            ]
        );
    }

    #[test]
    fn the_claims_a_release_made_are_its_own_and_its_stateful_sets() {
        let helm = |name: &str| json!({"helm.toolkit.fluxcd.io/name": name, "helm.toolkit.fluxcd.io/namespace": "apps"});
        let claim = |name: &str, labels: Value| {
            Arc::new(
                serde_json::from_value::<PersistentVolumeClaim>(
                    json!({"metadata": {"name": name, "namespace": "apps", "labels": labels}}),
                )
                .unwrap(),
            )
        };
        let pvcs = vec![
            claim("data-db-0", json!({})),
            claim("data-db-1", json!({})),
            claim("data-db-old", json!({})),
            claim("data-dbx-0", json!({})),
            claim("uploads", helm("web")),
            claim("other-uploads", helm("other")),
            claim("scratch", json!({"app.kubernetes.io/instance": "web"})),
        ];
        let sts = |name: &str, labels: Value| {
            Arc::new(
                serde_json::from_value::<StatefulSet>(json!({
                    "metadata": {"name": name, "namespace": "apps", "labels": labels},
                    "spec": {"selector": {}, "serviceName": name, "template": {},
                             "volumeClaimTemplates": [{"metadata": {"name": "data"}}]},
                }))
                .unwrap(),
            )
        };
        let found = found_claims(
            ("apps", "web"),
            &pvcs,
            &[sts("db", helm("web")), sts("dbx", helm("other"))],
        );
        assert_eq!(found, ["data-db-0", "data-db-1", "uploads"]);
        assert!(found_claims(("apps", "none"), &pvcs, &[]).is_empty());
    }

    #[test]
    fn flux_digest_metadata_is_not_part_of_the_version() {
        assert_eq!(without_flux_digest("1.0.0+7194336d5f44"), "1.0.0");
        assert_eq!(without_flux_digest("1.0.0+build.5"), "1.0.0+build.5");
        assert_eq!(without_flux_digest("2.1.0"), "2.1.0");
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        let image = parse_image_string("127.0.0.1:5000/app").unwrap();
        assert_eq!(image.name, "127.0.0.1:5000/app");
        assert_eq!(image.tag, None);
    }
}
