//! Types shared by FluxUp's custom resources.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to a namespaced object, possibly in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NamespacedObjectReference {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referenced object. Defaults as documented on the referring field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl NamespacedObjectReference {
    /// The namespace to use, falling back to `default_namespace` when the reference names none.
    pub fn namespace_or<'a>(&'a self, default_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(default_namespace)
    }
}

/// How far FluxUp may move a version on its own, and which updates count as available.
///
/// `none` means updates are shown but only applied when a person approves them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AutoUpdate {
    /// Never upgrade automatically; every update waits for approval.
    #[default]
    None,
    /// Patch updates (1.2.3 → 1.2.4) may be applied automatically.
    Patch,
    /// Minor and patch updates (1.2.3 → 1.3.0) may be applied automatically.
    Minor,
    /// Any update, major included (1.2.3 → 2.0.0), may be applied automatically.
    Major,
}

/// The size of a version jump, as Renovate names it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UpdateType {
    /// Same version, new image digest.
    Digest,
    /// 1.2.3 → 1.2.4
    Patch,
    /// 1.2.3 → 1.3.0
    Minor,
    /// 1.2.3 → 2.0.0
    Major,
}

/// A version or tag: no C0 or C1 control character (a newline or escape sequence in a version
/// would rewrite a log line, a message or a terminal).
pub(crate) const VERSION_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";
/// An OCI digest, `algorithm:encoded`.
pub(crate) const DIGEST_PATTERN: &str = r"^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$";
/// A relative path in a repository: segments of no control characters or backslashes, none of
/// them empty, `.` or `..` (a leading `./` is allowed). RE2 has no lookahead, hence the spelling.
pub(crate) const REPO_PATH_PATTERN: &str = r"^(\./)?([^./\x00-\x1F\x7F\\][^/\x00-\x1F\x7F\\]*|\.[^./\x00-\x1F\x7F\\][^/\x00-\x1F\x7F\\]*|\.\.[^/\x00-\x1F\x7F\\]+)(/([^./\x00-\x1F\x7F\\][^/\x00-\x1F\x7F\\]*|\.[^./\x00-\x1F\x7F\\][^/\x00-\x1F\x7F\\]*|\.\.[^/\x00-\x1F\x7F\\]+))*$";
/// A dotted field path: letters, digits and `_-.`.
pub(crate) const FIELD_PATTERN: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$";

/// One container image at one version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ImageVersion {
    /// Image repository as written in the Helm values, e.g. `ghcr.io/example/app`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Image tag, without any digest, e.g. `1.21.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 128))]
    pub tag: Option<String>,
    /// Image digest pinned next to the tag (`1.21.5@sha256:…`), e.g. `sha256:4f1c…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN), length(max = 256))]
    pub digest: Option<String>,
}

impl ImageVersion {
    /// `name:tag`, or `name:digest` for a digest-only image, as people write it.
    pub fn reference(&self) -> String {
        let version = self.tag.as_ref().or(self.digest.as_ref());
        format!("{}:{}", self.name, version.map_or("", String::as_str))
    }
}

/// A set of versions of one app: its chart, the app version the chart ships, and its images.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSet {
    /// Helm chart version, e.g. `12.4.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 128))]
    pub chart: Option<String>,
    /// Application version the chart declares (`appVersion` in Chart.yaml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub app_version: Option<String>,
    /// Container images set through the HelmRelease's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageVersion>,
}

/// Where one version is written in Git. Both parts are optional: FluxUp finds the file that holds
/// the object in the path of the app's Kustomization, and knows the usual field of each version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct GitLocation {
    /// Path of the YAML file, relative to the root of the Git repository,
    /// e.g. `apps/my-app/helmrelease.yaml`; it must lie inside the path the app's Kustomization
    /// applies. Default: the file that defines the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REPO_PATH_PATTERN), length(min = 1, max = 1024))]
    pub file: Option<String>,
    /// Dotted path of the field inside the object, e.g. `spec.values.image.tag`.
    /// Default: `spec.chart.spec.version` for a HelmRepository chart, `spec.ref.tag` of the
    /// OCIRepository for a `chartRef` chart, and `<values path>.tag` for an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = FIELD_PATTERN), length(min = 1, max = 512))]
    pub field: Option<String>,
}

/// Condition types and reasons FluxUp writes. Conditions are a list-map keyed on `type`.
pub mod condition {
    /// The app is resolved and healthy, or the request finished successfully.
    pub const READY: &str = "Ready";
    /// A newer version than the current one is allowed by the app's policy.
    pub const UPDATE_AVAILABLE: &str = "UpdateAvailable";
    /// An operation on the request finished, successfully or not.
    pub const COMPLETE: &str = "Complete";
    /// The last Renovate output was read; False says what was wrong with it.
    pub const SCANNED: &str = "Scanned";
}

/// A Flux object an operation suspended and holds: FluxUp records it here before it suspends
/// it, and marks the object itself with [`crate::ownership::HELD_BY_ANNOTATION`] naming the
/// request's uid. Only that request resumes it; an object suspended by a person is never
/// resumed by FluxUp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Hold {
    /// `Kustomization` or `HelmRelease`.
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

impl Hold {
    /// `Kustomization flux-system/apps`, as people read it.
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Where a request waits: one operation at a time per held object, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuePosition {
    /// 1 for the next to run.
    pub position: u32,
    /// The operations ahead of this one (`UpgradeRequest namespace/name`), first the one that
    /// runs now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ahead: Vec<String>,
}

/// `Kind/namespace/name`, as status writes object references, in its three parts.
pub fn object_parts(reference: &str) -> (&str, &str, &str) {
    let mut parts = reference.splitn(3, '/');
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}
