//! Minimal views of the Flux kinds FluxUp reads or patches. Fields FluxUp does not use are not
//! named; serde ignores them, so newer Flux versions with more fields still deserialize.

use crate::common::{Condition, Time};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// A reference from one Flux object to another (`sourceRef`, `chartRef`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CrossNamespaceSourceReference {
    /// Kind of the referent, e.g. `HelmRepository` or `OCIRepository`.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; defaults to the referring object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Flux's status conditions and the generation they describe, shared by every Flux kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxStatus {
    /// Generation of the spec last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Flux's conditions (`Ready`, `Reconciling`, `Stalled`, …).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Last `reconcile.fluxcd.io/requestedAt` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// A Flux HelmRelease (`helm.toolkit.fluxcd.io/v2`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    namespaced,
    status = "HelmReleaseStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    /// Chart from a HelmRepository (or GitRepository/Bucket) with a version in this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<HelmChartTemplate>,
    /// Chart from an OCIRepository (or HelmChart) whose version lives in that source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<CrossNamespaceSourceReference>,
    /// Release name in Helm; defaults to `[targetNamespace-]name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Namespace Helm installs into; defaults to the HelmRelease's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Whether Flux is told to leave this release alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Helm values, free-form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

/// `spec.chart` of a HelmRelease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HelmChartTemplate {
    /// The chart's template spec.
    pub spec: HelmChartTemplateSpec,
}

/// `spec.chart.spec` of a HelmRelease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    /// Chart name in the repository.
    pub chart: String,
    /// Version or semver range; `*` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The HelmRepository (or other source) holding the chart.
    pub source_ref: CrossNamespaceSourceReference,
}

/// Status of a HelmRelease.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub flux: FluxStatus,
    /// Releases Flux made, newest first.
    #[serde(default)]
    pub history: Vec<HelmReleaseSnapshot>,
    /// Chart version of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,
}

/// One entry of a HelmRelease's `status.history`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSnapshot {
    /// Chart name.
    #[serde(default)]
    pub chart_name: String,
    /// Chart version installed.
    #[serde(default)]
    pub chart_version: String,
    /// App version of that chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Helm's release status, e.g. `deployed`.
    #[serde(default)]
    pub status: String,
    /// When this release was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deployed: Option<Time>,
}

/// A Flux Kustomization (`kustomize.toolkit.fluxcd.io/v1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kustomize.toolkit.fluxcd.io",
    version = "v1",
    kind = "Kustomization",
    namespaced,
    status = "FluxStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// The source of the manifests, usually a GitRepository.
    pub source_ref: CrossNamespaceSourceReference,
    /// Path inside the source, e.g. `./apps/my-app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether Flux is told to leave this Kustomization alone. FluxUp sets it during upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// A Flux GitRepository (`source.toolkit.fluxcd.io/v1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "GitRepository",
    namespaced,
    status = "GitRepositoryStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositorySpec {
    /// Clone URL, e.g. `https://gitea.example/org/fleet.git`.
    pub url: String,
    /// Branch, tag or commit to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<GitRepositoryRef>,
    /// Secret with the credentials Flux uses (`username`/`password`, or `bearerToken`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "secretRef")]
    pub secret_ref: Option<crate::common::LocalObjectReference>,
}

/// What source-controller reports of a GitRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRepositoryStatus {
    /// Conditions, observed generation and the last reconcile request handled.
    #[serde(flatten)]
    pub flux: FluxStatus,
    /// The revision fetched last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

/// An artifact of a Flux source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// e.g. `main@sha1:3f2a…`.
    #[serde(default)]
    pub revision: String,
}

/// `spec.ref` of a GitRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GitRepositoryRef {
    /// Branch to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Semver range of tags to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Commit to follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Any Git reference to follow (`refs/heads/main`, `refs/pull/1/head`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A Flux HelmRepository (`source.toolkit.fluxcd.io/v1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmRepository",
    namespaced,
    status = "FluxStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmRepositorySpec {
    /// Repository URL: `https://…` for an index.yaml repository, `oci://…` for OCI.
    pub url: String,
    /// `default` (index.yaml) or `oci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Secret with `username` and `password` (or, for OCI, a `.dockerconfigjson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<crate::common::LocalObjectReference>,
    /// Secret with `ca.crt` (and a client certificate, which FluxUp does not use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<crate::common::LocalObjectReference>,
    /// An OCI HelmRepository's registry speaks plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// A Flux OCIRepository (`source.toolkit.fluxcd.io/v1`), the usual source of `chartRef` charts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    namespaced,
    status = "FluxStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// Artifact URL, e.g. `oci://ghcr.io/example/charts/my-app`.
    pub url: String,
    /// Which tag, semver range or digest to pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<OCIRepositoryRef>,
    /// The registry speaks plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Secret with the registry's credentials: a `.dockerconfigjson` (kubernetes.io/dockerconfigjson)
    /// or `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<crate::common::LocalObjectReference>,
    /// Secret with `ca.crt` for a registry with a private certificate authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<crate::common::LocalObjectReference>,
}

/// `spec.ref` of an OCIRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct OCIRepositoryRef {
    /// Tag, e.g. `12.4.0`. This is where a `chartRef` chart's version lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Semver range, e.g. `>=12.0.0 <13.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Digest, e.g. `sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Flux's annotation to request a reconcile now; its value is a timestamp.
pub const RECONCILE_REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
