//! `ManagedApp`: one Flux HelmRelease that FluxUp watches for updates and upgrades safely.

use crate::common::{
    AutoUpdate, Condition, GitLocation, ImageVersion, LocalObjectReference,
    NamespacedObjectReference, Time, UpdateType, VersionSet,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// What the API server accepts in the version, tag and link fields of the status: no control
// characters (a newline or escape sequence in a version would rewrite a log line, a message or
// a terminal), and links only to http(s) pages. FluxUp refuses more at ingest (whitespace,
// markup); these are the floor for every writer.
use crate::common::{DIGEST_PATTERN, VERSION_PATTERN};
/// An absolute http(s) link without whitespace, control characters or `"<>|` and backticks.
const LINK_PATTERN: &str = r#"^https?://[^\x00-\x20\x7F-\x9F"<>|`]+$"#;

/// What FluxUp manages for one app: the HelmRelease and the Kustomization that applies it, the
/// volumes to snapshot before an upgrade, the version policy, the health check, and where in Git
/// the versions live.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "fluxup.dev",
    version = "v1alpha1",
    kind = "ManagedApp",
    namespaced,
    status = "ManagedAppStatus",
    shortname = "mapp",
    shortname = "mapps",
    category = "fluxup",
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion.chart",
        description = "Chart version running now"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.availableUpdate.chart",
        description = "Newest chart version the policy allows"
    ),
    printcolumn(
        name = "Chart-Update",
        type_ = "string",
        json_path = ".status.availableUpdate.chartUpdateType",
        description = "Size of the chart's update"
    ),
    printcolumn(
        name = "Largest-Update",
        type_ = "string",
        json_path = ".status.availableUpdate.updateType",
        description = "Largest update of this app, among the chart and its images"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the HelmRelease and its workloads are ready and everything the app needs is found (the Ready condition)"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "What the app is doing"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAppSpec {
    /// The Flux HelmRelease this app is. Its namespace defaults to the ManagedApp's.
    pub helm_release_ref: NamespacedObjectReference,

    /// The Flux Kustomization that applies the HelmRelease; FluxUp suspends it during an upgrade
    /// so Flux cannot roll out before the snapshots are ready. Its namespace defaults to
    /// `flux-system`.
    pub kustomization_ref: NamespacedObjectReference,

    /// PersistentVolumeClaims to snapshot before each upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshots: Option<VolumeSnapshotPolicy>,

    /// Which updates count as available, and how far FluxUp may go on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_policy: Option<VersionPolicy>,

    /// How FluxUp decides an upgrade worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Git settings for commits of this app. Default: the repository and branch of the
    /// Kustomization's GitRepository, with FluxUp's configured credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSettings>,

    /// When an upgrade fails, roll back data and Git to the pre-upgrade snapshot automatically.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_rollback: bool,
}

/// Snapshots taken before an upgrade, and how long they are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.excludePVCs) || size(self.excludePVCs) == 0 || !has(self.pvcs) || size(self.pvcs) == 0").message("volumeSnapshots.excludePVCs leaves out claims FluxUp finds itself: set pvcs or excludePVCs, not both"))]
pub struct VolumeSnapshotPolicy {
    /// Take snapshots before each upgrade. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// VolumeSnapshotClass to snapshot with. Default: the cluster's default class for the
    /// volumes' CSI driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,

    /// The PersistentVolumeClaims to snapshot, in the ManagedApp's namespace. Empty: the
    /// claims of the release, found anew before each upgrade — those helm-controller labels as
    /// the HelmRelease's (`helm.toolkit.fluxcd.io/name` and `/namespace`) and those of its
    /// StatefulSets' `volumeClaimTemplates` — as `status.resolved.pvcs` lists them.
    #[serde(default)]
    pub pvcs: Vec<LocalObjectReference>,

    /// Claims found for the release that are not snapshotted (with `pvcs` empty), e.g. a cache.
    #[serde(default, rename = "excludePVCs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_pvcs: Vec<LocalObjectReference>,

    /// Scale the workloads that mount these PVCs to zero while the snapshots are taken, so each
    /// is a copy of a stopped app. Set to false only for apps that tolerate live snapshots.
    /// Default: true.
    #[serde(default = "default_true")]
    pub stop_workloads: bool,

    /// How many pre-upgrade snapshots to keep, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,

    /// How long the snapshots may take to become ready to use before the upgrade fails, as a
    /// duration such as `15m`. Default: 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message("volumeSnapshots.timeout must be a duration such as 15m or 90s"))]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,
}

fn default_true() -> bool {
    true
}

/// How many pre-upgrade snapshots are kept. The snapshot the last successful upgrade would roll
/// back to is never deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Keep at most this many upgrades' snapshots. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("retentionPolicy.keepLast must be at least 1: keeping no snapshots would delete the one a rollback needs"))]
    pub keep_last: Option<i32>,

    /// Delete snapshots older than this, as a duration such as `168h` (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message("retentionPolicy.maxAge must be a duration such as 168h or 90m (write days as hours: 7 days is 168h)"))]
    #[schemars(length(max = 32))]
    pub max_age: Option<String>,
}

/// Version rules for the chart and for each image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionPolicy {
    /// Rules for the Helm chart version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartPolicy>,

    /// Rules for container images set in the HelmRelease's values, one entry per image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub images: Vec<ImagePolicy>,
}

/// Rules for the chart version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartPolicy {
    /// How far FluxUp may upgrade on its own: `none` (approval only), `patch`, `minor` or
    /// `major`. Default: `none`.
    #[serde(default)]
    pub auto_update: AutoUpdate,

    /// A semver range the version must satisfy to be offered, e.g. `>=12.0.0 <13.0.0`.
    /// Versions outside it stay visible as held back by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub constraint: Option<String>,

    /// Versions a person chose to skip (the dashboard's "Skip this version"): never offered,
    /// shown as held back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub skip: Vec<String>,

    /// Where the chart version is written in Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitLocation>,
}

/// How far a person pins a part from the dashboard ("stay on this major/minor").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Stay {
    Major,
    Minor,
}

/// The constraint that keeps a part on the major or minor of `current`, in Helm's wildcard form
/// (`12.x`, `12.4.x`), or `None` when `current` does not start with a version (`latest`).
pub fn stay_on(current: &str, stay: Stay) -> Option<String> {
    let core = current.trim().trim_start_matches(['v', 'V']);
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.');
    let number = |p: Option<&str>| {
        p.filter(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
    };
    let major = number(parts.next())?;
    let minor = number(parts.next()).unwrap_or(0);
    Some(match stay {
        Stay::Major => format!("{major}.x"),
        Stay::Minor => format!("{major}.{minor}.x"),
    })
}

/// Rules for one container image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicy {
    /// Image repository as written in the values, e.g. `ghcr.io/example/app`.
    #[schemars(length(min = 1, max = 512))]
    pub name: String,

    /// How far FluxUp may upgrade this image on its own. Default: `none`.
    #[serde(default)]
    pub auto_update: AutoUpdate,

    /// A semver range the tag must satisfy to be offered, e.g. `>=1.21.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub constraint: Option<String>,

    /// Tags a person chose to skip: never offered, shown as held back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub skip: Vec<String>,

    /// Dotted path of the image's block in the HelmRelease values, e.g. `image` or
    /// `postgresql.image`. Default: found by matching `name` against the values' `repository`
    /// fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_path: Option<String>,

    /// Where the tag is written in Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitLocation>,
}

/// How FluxUp checks health after an upgrade or rollback.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Once the HelmRelease is Ready at the new version, also wait for the app's Deployments
    /// and StatefulSets to be rolled out and ready, as `kubectl rollout status` does (those
    /// `status.workloads` lists). Default: true. With false, the HelmRelease's Ready (and the
    /// HTTP check, when set) decides.
    #[serde(default = "default_true")]
    pub wait_for_ready: bool,

    /// How long to wait for health before the upgrade fails, e.g. `5m`. Default: `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message("healthCheck.timeout must be a duration such as 5m or 90s"))]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,

    /// How long the app must stay healthy before the upgrade (or rollback) counts as done,
    /// e.g. `2m`. A check that fails during it fails the upgrade at once. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message("healthCheck.soak must be a duration such as 2m or 90s"))]
    #[schemars(length(max = 32))]
    pub soak: Option<String>,

    /// An HTTP GET that must answer 2xx once the app is up. FluxUp calls the Service at its
    /// cluster IP when it runs in the cluster, and through the API server's service proxy
    /// when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheck>,

    /// A Job that verifies the app after the rollout, made from a CronJob of the ManagedApp's
    /// namespace (as `kubectl create job --from=cronjob/<name>` makes one) once every other
    /// check passes and the soak is over. The upgrade succeeds only when the Job completes; a
    /// Job that fails fails the upgrade (and `autoRollback` rolls it back). It must finish
    /// within `timeout` too. Not run after a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// Where the verification Job comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// CronJob in the ManagedApp's namespace whose job template verifies the app; keep it
    /// `suspend: true` so it runs only for upgrades. FluxUp creates the Job only when the person
    /// who last wrote the ManagedApp may create Jobs in that namespace.
    #[schemars(
        length(min = 1, max = 52),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub cron_job: String,
}

/// An app without `healthCheck` gets what `healthCheck: {}` gives: its workloads are waited for.
impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            wait_for_ready: true,
            timeout: None,
            soak: None,
            http_get: None,
            verification: None,
        }
    }
}

#[cfg(test)]
mod health_check_tests {
    #[test]
    fn no_health_check_is_the_same_as_an_empty_one() {
        let empty: super::HealthCheck = serde_json::from_str("{}").unwrap();
        assert_eq!(super::HealthCheck::default(), empty);
        assert!(empty.wait_for_ready);
    }
}

/// An HTTP health probe against a Service of the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthCheck {
    /// Service to call, in the ManagedApp's namespace. Default: the HelmRelease's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Port of the Service.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("healthCheck.httpGet.port must be between 1 and 65535"))]
    pub port: i32,
    /// Path to request, e.g. `/healthz` (a query may follow). Default: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*$') && !self.contains('..')").message("healthCheck.httpGet.path must start with / and hold only URL path characters, without .."))]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
}

/// Git settings for this app's commits. FluxUp commits to the branch the Kustomization's
/// GitRepository follows (a GitRepository that follows a tag or a commit takes no commits),
/// to `branch`, or to a pull request's branch (`pullRequest`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.branch) || !has(self.pullRequest)").message("git.branch and git.pullRequest cannot both be set: each pull request comes from a branch of its own"))]
pub struct GitSettings {
    /// Push the version bumps to this branch instead of the one Flux follows, e.g. a branch a
    /// person or CI promotes. An upgrade then waits, with Flux held, until its commit reaches
    /// the branch Flux follows; only then are the snapshots taken and Flux resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,
    /// Secret in the ManagedApp's namespace with the credentials FluxUp pushes with, in the
    /// format of Flux's GitRepository Secret: `username` and `password` (a token as the
    /// password), `bearerToken`, or `identity` and `known_hosts` for SSH; `ca.crt` for a
    /// private certificate authority. The person who writes the ManagedApp must be allowed to
    /// read it. Default: the Secret of the GitRepository the Kustomization follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Secret in the ManagedApp's namespace with a key that signs FluxUp's commits: `git.asc`
    /// (an armored OpenPGP private key, as Flux's image automation takes it, with `passphrase`
    /// if it is encrypted) or `identity` (an unencrypted OpenSSH private key: an SSH signature).
    /// The person who writes the ManagedApp must be allowed to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<LocalObjectReference>,
    /// Who FluxUp's commits are by. Default: `FluxUp <fluxup@users.noreply.local>`. A forge shows
    /// a signed commit as verified only when this email belongs to the key's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<CommitAuthor>,
    /// Propose each upgrade as a pull request instead of pushing to the branch Flux follows.
    /// FluxUp holds Flux, opens the pull request and waits for a person to merge it; only then
    /// does it stop the workloads, take the snapshots and let Flux roll the merge out. Closing
    /// the pull request unmerged fails the upgrade with nothing changed. Gitea and Forgejo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestSettings>,
}

/// How FluxUp opens pull requests for an app's upgrades.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestSettings {
    /// The forge's web address, e.g. `https://gitea.example.com`. Default: the scheme, host and
    /// port of the GitRepository's URL when it is http(s); required for a repository over SSH.
    #[serde(default, rename = "apiURL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("git.pullRequest.apiURL must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub api_url: Option<String>,
    /// Secret in the ManagedApp's namespace with `token`, an API token that may open pull
    /// requests. The person who writes the ManagedApp must be allowed to read it. Default: the
    /// Git credentials (`username` and `password`, or `bearerToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<LocalObjectReference>,
    /// How long to wait for the merge before the upgrade fails (FluxUp then closes the pull
    /// request and resumes Flux), as a duration such as `24h`. Flux stays suspended for the
    /// app's Kustomization while it waits. Default: 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message("git.pullRequest.timeout must be a duration such as 24h or 30m"))]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,
}

/// The author and committer of FluxUp's commits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CommitAuthor {
    /// The name, e.g. `FluxUp Bot`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The email, e.g. `fluxup@example.com`.
    #[schemars(length(min = 3, max = 256))]
    pub email: String,
}

/// What FluxUp observed about the app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedAppStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One word for what the app is doing, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AppState>,

    /// Versions running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<VersionSet>,

    /// The best update the version policy allows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_update: Option<AvailableUpdate>,

    /// Updates that exist but that the version policy holds back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBackUpdate>,

    /// The most recent upgrade of this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<LastUpgrade>,

    /// What the app's references resolved to: chart source, Kustomization, where each version
    /// is written, and the workloads that mount the app's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedApp>,

    /// The release's Deployments and StatefulSets (those Flux's helm-controller labels as the
    /// HelmRelease's, and those that mount the app's volumes), and how many replicas are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadHealth>,

    /// Updates Renovate found for this app in its last usable run, before the version policy.
    /// A run whose output cannot be used leaves these as they were (see the `Scanned` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<DetectedUpdates>,

    /// The conditions `Ready`, `UpdateAvailable` and `Scanned`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One word for what an app is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AppState {
    /// Running, no update the policy allows.
    UpToDate,
    /// Running, an update is available.
    UpdateAvailable,
    /// An UpgradeRequest is in progress.
    Upgrading,
    /// A RollbackRequest is in progress.
    RollingBack,
    /// Something the app needs is missing or unhealthy; see the Ready condition.
    Degraded,
}

/// An update the version policy allows.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AvailableUpdate {
    /// Newest chart version allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub chart: Option<String>,
    /// App version of that chart, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub app_version: Option<String>,
    /// Images with a newer allowed tag or digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageVersion>,
    /// The largest jump among the updates above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<UpdateType>,
    /// The size of the chart's jump, when the chart has an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_update_type: Option<UpdateType>,
    /// The size of each image's jump, one entry per image in `images`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_update_types: Vec<ImageUpdateType>,
    /// When the newest version was released, where the registry says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_timestamp: Option<Time>,
    /// Release notes of the new version, where Renovate found them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LINK_PATTERN), length(max = 2048))]
    pub changelog_url: Option<String>,
    /// Source repository of the chart or image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LINK_PATTERN), length(max = 2048))]
    pub source_url: Option<String>,
    /// Every version a person may pick, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = VERSION_PATTERN), length(max = 256)))]
    pub candidates: Vec<String>,
    /// When FluxUp first saw this update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<Time>,
}

/// The size of one image's available update. Beside `ImageVersion` rather than in it, which
/// also says what runs now.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateType {
    /// The image's name, as in `images`.
    pub name: String,
    /// Size of its jump.
    pub update_type: UpdateType,
}

/// An update that exists but that the policy does not allow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeldBackUpdate {
    /// `chart`, or the image's name.
    pub name: String,
    /// The version held back.
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub version: String,
    /// Size of the jump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<UpdateType>,
    /// Why it is held back, in words.
    pub reason: String,
}

/// What a ManagedApp's references resolved to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedApp {
    /// The HelmRelease, as `namespace/name`.
    pub helm_release: String,
    /// The chart's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// Where the chart comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_source: Option<ChartSource>,
    /// The Kustomization that applies the HelmRelease, as `namespace/name`.
    pub kustomization: String,
    /// The path in Git the Kustomization applies, e.g. `./apps/webapp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomization_path: Option<String>,
    /// The Kustomization's source, as `Kind/namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_source: Option<String>,
    /// Where each version is written in Git.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<VersionLocation>,
    /// Deployments and StatefulSets in the app's namespace that mount its snapshotted PVCs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadReference>,
    /// The claims snapshotted before each upgrade: `volumeSnapshots.pvcs`, or the ones found
    /// for the release when that is empty (`pvcsFound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pvcs: Vec<String>,
    /// `pvcs` were found from the release, not listed in the spec.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pvcs_found: bool,
}

/// The Flux source of a chart.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartSource {
    /// `HelmRepository` (with `chart.spec`) or `OCIRepository` (with `chartRef`).
    pub kind: String,
    /// The source object, as `namespace/name`.
    pub name: String,
    /// Its URL, e.g. `https://charts.example.com` or `oci://ghcr.io/example/charts/app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Where one version is written: the object and field, and the file when known.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionLocation {
    /// `chart`, or the image's name.
    pub name: String,
    /// The object holding the version, as `Kind/namespace/name`.
    pub object: String,
    /// Dotted path of the field, e.g. `spec.chart.spec.version`.
    pub field: String,
    /// The file in Git: from the version policy's `git.file`, or where Renovate found the
    /// version. Unknown until one of them says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A workload that mounts one of the app's PVCs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReference {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Its name, in the ManagedApp's namespace.
    pub name: String,
    /// The PVCs it mounts (for a StatefulSet: the claims its templates create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pvcs: Vec<String>,
}

/// How one of the app's workloads is doing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadHealth {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// As `namespace/name`.
    pub name: String,
    /// Replicas asked for.
    pub replicas: i32,
    /// Replicas ready now.
    pub ready_replicas: i32,
    /// Whether its controller has acted on its latest spec (`status.observedGeneration`).
    pub rolled_out: bool,
}

impl WorkloadHealth {
    /// Ready: every replica asked for is ready, on the latest spec.
    pub fn is_ready(&self) -> bool {
        self.rolled_out && self.ready_replicas >= self.replicas
    }

    /// In a person's words: `Deployment web/api: 1 of 2 replicas ready`.
    pub fn describe(&self) -> String {
        let Self { kind, name, .. } = self;
        if !self.rolled_out {
            format!("{kind} {name}: its latest change is not rolled out yet")
        } else {
            let (ready, asked) = (self.ready_replicas, self.replicas);
            format!("{kind} {name}: {ready} of {asked} replicas ready")
        }
    }
}

/// Updates one Renovate run found for an app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DetectedUpdates {
    /// Where the findings came from: the Renovate Job (`namespace/name`) or report file.
    pub source: String,
    /// When they were ingested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<Time>,
    /// Renovate's version, where its log says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub renovate_version: Option<String>,
    /// Every update found, one per version Renovate offered (it offers the newest of each
    /// bucket: e.g. the newest minor and the newest major), de-duplicated across managers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<DetectedUpdate>,
}

/// One update Renovate found.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DetectedUpdate {
    /// `chart`, or the image's name.
    pub name: String,
    /// The version in Git now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub current: Option<String>,
    /// The new version (for a digest update: the same tag).
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub version: String,
    /// The new digest, for images pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST_PATTERN), length(max = 256))]
    pub digest: Option<String>,
    /// Size of the jump, as Renovate judged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<UpdateType>,
    /// When the version was released, as the registry says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_timestamp: Option<String>,
    /// Release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LINK_PATTERN), length(max = 2048))]
    pub changelog_url: Option<String>,
    /// Source repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = LINK_PATTERN), length(max = 2048))]
    pub source_url: Option<String>,
    /// The file Renovate found the version in, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_file: Option<String>,
}

/// Summary of the most recent upgrade.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastUpgrade {
    /// The UpgradeRequest, in the ManagedApp's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_name: Option<String>,
    /// Chart version before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub from_version: Option<String>,
    /// Chart version after the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 256))]
    pub to_version: Option<String>,
    /// When the upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the upgrade ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// `Running` while it runs, then how it ended: `Succeeded` or `Failed`; `RollingBack` and
    /// `RolledBack` (or `RollbackFailed`) when a rollback undoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The pre-upgrade snapshot a rollback would restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
}

impl LastUpgrade {
    /// `status` of an upgrade that has not ended.
    pub const RUNNING: &str = "Running";
    /// `status` while a RollbackRequest undoes the upgrade.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// `status` once a RollbackRequest has undone the upgrade.
    pub const ROLLED_BACK: &str = "RolledBack";
}

impl ManagedApp {
    /// The HelmRelease's namespace: the reference's, or the ManagedApp's own.
    pub fn helm_release_namespace(&self) -> Option<&str> {
        self.spec
            .helm_release_ref
            .namespace
            .as_deref()
            .or(self.metadata.namespace.as_deref())
    }

    /// The Kustomization's namespace: the reference's, or `flux-system`.
    pub fn kustomization_namespace(&self) -> &str {
        self.spec.kustomization_ref.namespace_or("flux-system")
    }
}
