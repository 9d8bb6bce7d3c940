//! `RollbackRequest`: restore an app's data and Git to the state before an upgrade.

use crate::common::{Condition, Hold, LocalObjectReference, QueuePosition, Time};
use crate::upgrade_request::{DryRunResult, StoppedWorkload};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Roll a ManagedApp back: stop it, restore its volumes from the pre-upgrade snapshots, commit
/// the previous version to Git, and start it again at its old replica counts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "fluxup.dev",
    version = "v1alpha1",
    kind = "RollbackRequest",
    namespaced,
    status = "RollbackRequestStatus",
    shortname = "rollback",
    shortname = "rbr",
    category = "fluxup",
    printcolumn(name = "Upgrade", type_ = "string", json_path = ".spec.upgradeRequestRef.name", description = "The upgrade undone"),
    printcolumn(name = "Snapshot", type_ = "string", json_path = ".status.restoredFrom.snapshotName", description = "Snapshot restored"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Where the rollback is"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || self.spec == oldSelf.spec").message("the spec of a RollbackRequest cannot change once the rollback has started; create a new RollbackRequest instead")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.upgradeRequestRef) != has(self.snapshotRef)").message("set exactly one of upgradeRequestRef (undo that upgrade) or snapshotRef (restore that snapshot)"))]
#[x_kube(validation = Rule::new("!has(self.snapshotRef) || has(self.managedAppRef)").message("a rollback to a snapshotRef must name the managedAppRef to restore"))]
pub struct RollbackRequestSpec {
    /// The UpgradeRequest to undo, in the same namespace: its snapshots are restored and its
    /// commit reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_request_ref: Option<LocalObjectReference>,

    /// A pre-upgrade VolumeSnapshot to restore instead, in the same namespace. FluxUp finds the
    /// upgrade that took it from its labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ref: Option<LocalObjectReference>,

    /// The ManagedApp to roll back. Default: the UpgradeRequest's app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_app_ref: Option<LocalObjectReference>,

    /// Run every check and show the Git diff of the revert, but change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// Where a rollback is.
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
pub enum RollbackPhase {
    /// Accepted, not started.
    #[default]
    Pending,
    /// Suspending the Flux Kustomization.
    Suspending,
    /// Scaling the app's workloads to zero.
    StoppingApp,
    /// Recreating the PersistentVolumeClaims from the snapshots.
    RestoringVolumes,
    /// Committing the previous version to Git.
    Reverting,
    /// Resuming Flux and scaling the app back up.
    StartingApp,
    /// Done: data and Git are back at the snapshot's state.
    Succeeded,
    /// Stopped on an error; status says what failed and what to do.
    Failed,
}

impl RollbackPhase {
    /// The phases a rollback works through, in order, before it ends.
    pub const STEPS: [RollbackPhase; 6] = [
        Self::Pending,
        Self::Suspending,
        Self::StoppingApp,
        Self::RestoringVolumes,
        Self::Reverting,
        Self::StartingApp,
    ];

    /// Whether the rollback has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What happened to a rollback so far.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRequestStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the rollback is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RollbackPhase>,
    /// What is happening now, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the current phase started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// What the app was restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
    /// Each PersistentVolumeClaim to restore: how to recreate it, recorded before it is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pvcName".into()]))]
    pub volumes: Vec<RestoredVolume>,

    /// Where the request waits for other operations on the objects it will hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePosition>,
    /// The Flux objects this rollback suspends, recorded before it suspends them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
    /// Workloads scaled to zero, with the replica counts to restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_workloads: Vec<StoppedWorkload>,
    /// When the rollback had ended and released everything it held (Flux resumed, workloads
    /// started, claims recreated). From then on FluxUp never acts on its behalf again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Time>,
    /// The Git commit that restored the previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Result of a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunResult>,
    /// When the rollback started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the rollback ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The condition `Complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The snapshot and version a rollback restores.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// The snapshot restored (the first, when the app has several volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Every snapshot restored, one per PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_names: Vec<String>,
    /// The chart version restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_version: Option<String>,
    /// The UpgradeRequest undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_request_name: Option<String>,
    /// Its uid: an UpgradeRequest recreated under that name is another upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_request_uid: Option<String>,
}

/// A PersistentVolumeClaim a rollback recreates from a snapshot, as it was before: FluxUp records
/// this before deleting the claim, so a restarted operator can always recreate it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoredVolume {
    /// The claim's name (kept: the workloads mount it by name).
    pub pvc_name: String,
    /// The VolumeSnapshot its data comes from.
    pub snapshot_name: String,
    /// Requested size, e.g. `1Gi`.
    pub storage: String,
    /// StorageClass of the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes of the claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// The claim's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The claim's annotations, without those Kubernetes sets on binding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The claim was deleted by this rollback and created again from the snapshot: what
    /// happens to it afterwards is not this rollback's to undo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recreated: bool,
}
