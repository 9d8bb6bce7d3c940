//! `UpgradeRequest`: a person's approval to move one ManagedApp to a new version.

use crate::common::{Condition, Hold, ImageVersion, LocalObjectReference, QueuePosition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Approval to upgrade a ManagedApp. FluxUp snapshots the app's volumes, commits the version
/// bump to Git, lets Flux roll it out and checks health; the request's status tells each step.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "fluxup.dev",
    version = "v1alpha1",
    kind = "UpgradeRequest",
    namespaced,
    status = "UpgradeRequestStatus",
    shortname = "upgrade",
    shortname = "upr",
    category = "fluxup",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.managedAppRef.name", description = "The ManagedApp to upgrade"),
    printcolumn(name = "From", type_ = "string", json_path = ".status.upgrade.previousVersion", description = "Chart version before"),
    printcolumn(name = "To", type_ = "string", json_path = ".status.upgrade.newVersion", description = "Chart version after"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Where the upgrade is"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || self.spec == oldSelf.spec").message("the spec of an UpgradeRequest cannot change once the upgrade has started; create a new UpgradeRequest instead")
)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRequestSpec {
    /// The ManagedApp to upgrade, in the same namespace.
    pub managed_app_ref: LocalObjectReference,

    /// Versions to move to. Empty: the app's available update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<TargetVersion>,

    /// Upgrade without snapshots first. Not recommended: a rollback then cannot restore data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_snapshot: bool,

    /// Run every check and show the Git diff, but change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Versions an upgrade moves to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.chart) || (has(self.images) && size(self.images) > 0)").message("targetVersion must name a chart version or at least one image"))]
pub struct TargetVersion {
    /// Chart version to move to, e.g. `12.5.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::VERSION_PATTERN), length(min = 1, max = 128))]
    pub chart: Option<String>,

    /// Image tags (and digests) to move to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub images: Vec<ImageVersion>,
}

/// Where an upgrade is. It moves forward through these in order and ends in `Succeeded`,
/// `Failed` or `RolledBack`.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum UpgradePhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Checking references, volumes, Git and policy.
    Preflight,
    /// Suspending the Flux Kustomization.
    Suspending,
    /// Pull-request or branch mode: the bump is proposed as a pull request (or pushed to
    /// `spec.git.branch`), and the upgrade waits for it to be merged into the branch Flux
    /// follows (Flux stays suspended, so the merge rolls nothing out yet).
    AwaitingMerge,
    /// Scaling the workloads that mount the volumes to zero.
    Quiescing,
    /// Taking VolumeSnapshots and waiting until they are ready to use.
    Snapshotting,
    /// Committing the version bump to Git.
    Committing,
    /// Flux is rolling out the new version.
    Reconciling,
    /// Waiting for the release and workloads to be healthy.
    HealthChecking,
    /// Done: the app runs the new version.
    Succeeded,
    /// Stopped on an error; status says what failed and what to do.
    Failed,
    /// Failed, then rolled back to the pre-upgrade snapshot.
    RolledBack,
}

impl UpgradePhase {
    /// The phases an upgrade works through, in order, before it ends.
    pub const STEPS: [UpgradePhase; 8] = [
        Self::Preflight,
        Self::Suspending,
        Self::AwaitingMerge,
        Self::Quiescing,
        Self::Snapshotting,
        Self::Committing,
        Self::Reconciling,
        Self::HealthChecking,
    ];

    /// Whether the upgrade has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::RolledBack)
    }
}

/// What happened to an upgrade so far.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRequestStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the upgrade is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UpgradePhase>,

    /// What is happening now, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// When the current phase started (each phase has a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,

    /// Where the request waits for other operations on the objects it will hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePosition>,

    /// The Flux objects this upgrade suspends, recorded before it suspends them. It resumes
    /// only those still marked as held by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,

    /// Workloads scaled to zero for the snapshot, with the replica counts to restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_workloads: Vec<StoppedWorkload>,

    /// When the upgrade had ended and released everything it held. From then on FluxUp never
    /// acts on its behalf again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,

    /// Snapshots taken for this upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRecord>,

    /// The version change and its Git commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,

    /// The pull request of an upgrade in pull-request mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRecord>,

    /// Branch mode (`spec.git.branch`): the commit pushed there, until it reaches the branch
    /// Flux follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<PushedCommit>,

    /// Result of the health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckResult>,

    /// Result of a dry run: each check and the exact Git diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunResult>,

    /// The RollbackRequest created when this upgrade failed and auto-rollback is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_ref: Option<LocalObjectReference>,

    /// The condition `Complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The pull request that proposes an upgrade's version bump.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRecord {
    /// Its number on the forge.
    pub number: i64,
    /// Its web page.
    pub url: String,
    /// The branch FluxUp pushed the bump to (`fluxup/<request>-<uid>`).
    pub branch: String,
    /// `open`, `merged` or `closed`, as last seen.
    pub state: String,
    /// The commit the merge made on the branch Flux follows: what Flux rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    /// The commit that put the previous versions back, when the upgrade failed after the merge
    /// and before Flux rolled it out (so Flux never runs a version without its snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
}

/// The commit of an upgrade in branch mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PushedCommit {
    /// The branch it was pushed to (`spec.git.branch`).
    pub branch: String,
    /// The commit.
    pub commit: String,
    /// The head of the branch Flux follows once the commit had reached it: what Flux rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_as: Option<String>,
    /// The commit that put the previous versions back, when the upgrade failed after the commit
    /// reached the branch Flux follows and before Flux rolled it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_commit: Option<String>,
}

/// A workload scaled down by FluxUp, and the replica count it had.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoppedWorkload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Name of the workload, in the ManagedApp's namespace.
    pub name: String,
    /// Replicas before FluxUp scaled it to zero.
    pub replicas: i32,
    /// The workload's uid when it was stopped: a workload recreated under the name is not
    /// FluxUp's to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The snapshots of one upgrade.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// One VolumeSnapshot per PersistentVolumeClaim.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pvcName".into()]))]
    pub pvcs: Vec<PvcSnapshot>,
    /// When the first snapshot was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// When the last snapshot became ready to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
}

/// The snapshot of one PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcSnapshot {
    /// The PersistentVolumeClaim.
    pub pvc_name: String,
    /// The VolumeSnapshot taken of it.
    pub snapshot_name: String,
    /// Whether the CSI driver reports the snapshot ready to use.
    #[serde(default)]
    pub ready_to_use: bool,
}

/// The version change of an upgrade.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    /// When the upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the upgrade ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Chart version before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// Chart version after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
    /// Image versions before, where images change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_images: Vec<ImageVersion>,
    /// Image versions after, where images change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_images: Vec<ImageVersion>,
    /// The Git commit that bumped the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

/// Result of a health check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckResult {
    /// `Pending` (not yet healthy), `Soaking` (healthy, for less than the soak time),
    /// `Passed` or `Failed`.
    pub status: String,
    /// When it was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// What was seen, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When every check first passed (the soak time counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
    /// The soak time the app asked for, e.g. `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Each check (`release`, `workloads`, `http`) as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<PreflightCheck>,
}

/// Result of a dry run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DryRunResult {
    /// Each preflight check and its outcome.
    #[serde(default)]
    pub checks: Vec<PreflightCheck>,
    /// The unified diff the upgrade would commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// One preflight check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreflightCheck {
    /// What was checked, e.g. `GitWritable`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
