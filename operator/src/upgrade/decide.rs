//! The next step of an upgrade, decided from facts alone.
//!
//! Rules it enforces (DESIGN.md, "Upgrade: a resumable state machine"): no commit before every
//! snapshot is ready (unless the request skips snapshots); one operation at a time per app; a
//! suspended Kustomization is always resumed and stopped workloads always restarted, on success
//! and on failure; every phase has a timeout. Because the decision reads only the request's
//! status and what is observed now, a controller restarted at any instant picks up where the
//! last one stopped.

use fluxup_api::{UpgradePhase, UpgradeRequestSpec, UpgradeRequestStatus};
use std::time::Duration;

/// The snapshots of this request, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Snapshots {
    /// None of this request's VolumeSnapshots exist yet.
    #[default]
    NotCreated,
    /// Created; some are not ReadyToUse yet.
    Pending,
    /// Every one is ReadyToUse.
    Ready,
    /// One failed: why.
    Failed(String),
}

/// The HelmRelease after the commit, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Release {
    /// Not yet Ready at the target version for its current generation.
    #[default]
    NotYet,
    /// Ready at the target version.
    ReadyAtTarget,
    /// Flux gave up: why (its Ready condition's message).
    Failed(String),
}

/// What the controller sees now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Another request that is running for the same app (`namespace/name`).
    pub other_request_running: Option<String>,
    /// The preflight checks, once run: the names and messages of those that failed.
    pub preflight: Option<Vec<(String, String)>>,
    pub kustomization_suspended: bool,
    /// Workloads that mount the app's PVCs and would be stopped.
    pub workloads_to_stop: usize,
    /// Every workload FluxUp stopped is still at zero replicas with no pods left.
    pub workloads_stopped: bool,
    pub snapshots: Snapshots,
    /// A commit with this request's trailer is on the branch.
    pub commit: Option<String>,
    pub release: Release,
    /// The app's workloads (and the optional HTTP check) are healthy.
    pub healthy: bool,
    /// Time spent in the current phase.
    pub in_phase: Duration,
    /// The ManagedApp stops workloads for snapshots (its `stopWorkloads`, default true).
    pub stop_workloads: bool,
    /// The ManagedApp's health check timeout.
    pub health_timeout: Duration,
    /// How long the ManagedApp lets snapshots take.
    pub snapshot_timeout: Duration,
    /// The ManagedApp asks for a rollback when an upgrade fails (its `autoRollback`).
    pub auto_rollback: bool,
    /// Some of this request's VolumeSnapshots exist but will not become ready (after a failure).
    pub unready_snapshots: bool,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Record the new phase (nothing else happens in the same step).
    Enter(UpgradePhase),
    RunPreflight,
    /// Record the checks and the diff; the dry run is over.
    FinishDryRun,
    SuspendKustomization,
    /// Record each workload's replicas, then scale it to zero.
    StopWorkloads,
    CreateSnapshots,
    CommitVersionBump,
    /// Resume the Kustomization and ask Flux to reconcile the source and it now.
    ResumeFlux,
    /// Scale the stopped workloads back to their recorded replicas.
    RestartWorkloads,
    /// Nothing to do until something changes; look again after `recheck`.
    Wait {
        why: String,
        recheck: Duration,
    },
    /// Stop here: record `Failed` with a reason and what a person can do. Clean-up follows.
    Fail {
        reason: &'static str,
        message: String,
    },
    /// Create the RollbackRequest that undoes this failed upgrade, and link it in status.
    RequestRollback,
    /// Delete this failed request's snapshots that are not ready: they restore nothing, and
    /// while one is being taken Kubernetes keeps its claim from being deleted.
    DeleteUnreadySnapshots,
    /// Record `Succeeded`.
    Succeed,
    /// Terminal, and nothing is left suspended or stopped.
    Done,
}

/// How long each phase may take before the upgrade fails.
pub fn timeout(phase: UpgradePhase, seen: &Observed) -> Duration {
    match phase {
        UpgradePhase::Preflight | UpgradePhase::Suspending | UpgradePhase::Committing => {
            Duration::from_secs(120)
        }
        UpgradePhase::Quiescing => Duration::from_secs(300),
        UpgradePhase::Snapshotting => seen.snapshot_timeout,
        UpgradePhase::Reconciling | UpgradePhase::HealthChecking => seen.health_timeout,
        _ => Duration::MAX,
    }
}

fn wait(why: impl Into<String>, seconds: u64) -> Step {
    Step::Wait {
        why: why.into(),
        recheck: Duration::from_secs(seconds),
    }
}

/// Whether workloads were stopped by this request and are still down.
fn left_stopped(status: &UpgradeRequestStatus, seen: &Observed) -> bool {
    !status.stopped_workloads.is_empty() && seen.workloads_stopped
}

pub fn decide(spec: &UpgradeRequestSpec, status: &UpgradeRequestStatus, seen: &Observed) -> Step {
    use UpgradePhase::*;
    let phase = status.phase.unwrap_or_default();

    if !phase.is_terminal() && phase != Pending && seen.in_phase > timeout(phase, seen) {
        let limit = timeout(phase, seen).as_secs();
        let hint = match phase {
            Snapshotting => "check the VolumeSnapshots' events and the CSI driver",
            Reconciling | HealthChecking => {
                "check the HelmRelease and the app's pods; a rollback restores the data taken before"
            }
            _ => "check the Flux Kustomization and FluxUp's events",
        };
        let committed = if phase < Committing {
            "; nothing was committed"
        } else {
            ""
        };
        return Step::Fail {
            reason: "Timeout",
            message: format!("{phase:?} did not finish within {limit} s: {hint}{committed}"),
        };
    }

    match phase {
        Pending => match &seen.other_request_running {
            Some(other) => wait(
                format!("waiting for {other} to finish: one operation at a time per app"),
                10,
            ),
            None => Step::Enter(Preflight),
        },
        Preflight => match &seen.preflight {
            None => Step::RunPreflight,
            Some(failed) if !failed.is_empty() => Step::Fail {
                reason: "PreflightFailed",
                message: failed
                    .iter()
                    .map(|(name, why)| format!("{name}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            Some(_) if spec.dry_run => Step::FinishDryRun,
            Some(_) => Step::Enter(Suspending),
        },
        Suspending if !seen.kustomization_suspended => Step::SuspendKustomization,
        Suspending if spec.skip_snapshot => Step::Enter(Committing),
        Suspending if seen.stop_workloads && seen.workloads_to_stop > 0 => Step::Enter(Quiescing),
        Suspending => Step::Enter(Snapshotting),
        Quiescing if !seen.workloads_stopped => Step::StopWorkloads,
        Quiescing => Step::Enter(Snapshotting),
        Snapshotting => match &seen.snapshots {
            _ if spec.skip_snapshot => Step::Enter(Committing),
            Snapshots::NotCreated => Step::CreateSnapshots,
            Snapshots::Pending => wait("waiting for the VolumeSnapshots to be ready to use", 2),
            Snapshots::Failed(why) => Step::Fail {
                reason: "SnapshotFailed",
                message: format!("a snapshot failed, so nothing was committed: {why}"),
            },
            Snapshots::Ready => Step::Enter(Committing),
        },
        Committing if seen.commit.is_some() => Step::Enter(Reconciling),
        Committing => Step::CommitVersionBump,
        Reconciling if seen.kustomization_suspended => Step::ResumeFlux,
        Reconciling | HealthChecking if matches!(seen.release, Release::Failed(_)) => {
            let Release::Failed(why) = &seen.release else {
                unreachable!()
            };
            Step::Fail {
                reason: "ReleaseFailed",
                message: format!("Flux could not roll out the new version: {why}"),
            }
        }
        Reconciling => match seen.release {
            Release::ReadyAtTarget if left_stopped(status, seen) => Step::RestartWorkloads,
            Release::ReadyAtTarget => Step::Enter(HealthChecking),
            _ => wait("waiting for Flux to roll out the new version", 5),
        },
        HealthChecking if left_stopped(status, seen) => Step::RestartWorkloads,
        HealthChecking if seen.healthy => Step::Succeed,
        HealthChecking => wait("waiting for the app to be healthy", 5),
        // Whatever ended the request, nothing stays suspended or stopped.
        // First, as it needs nothing but the request: a snapshot still being taken keeps its
        // claim from being deleted, which a rollback may need.
        Failed if seen.unready_snapshots => Step::DeleteUnreadySnapshots,
        Failed | Succeeded | RolledBack if seen.kustomization_suspended => Step::ResumeFlux,
        Failed | Succeeded | RolledBack if left_stopped(status, seen) => Step::RestartWorkloads,
        // Only a commit changed something worth undoing; before it, Git and data are as they were.
        Failed
            if seen.auto_rollback
                && status.rollback_ref.is_none()
                && status
                    .upgrade
                    .as_ref()
                    .is_some_and(|u| u.git_commit.is_some()) =>
        {
            Step::RequestRollback
        }
        Failed | Succeeded | RolledBack => Step::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpgradePhase::*;
    use fluxup_api::StoppedWorkload;

    fn status(phase: UpgradePhase, stopped: bool) -> UpgradeRequestStatus {
        UpgradeRequestStatus {
            phase: Some(phase),
            stopped_workloads: if stopped {
                vec![StoppedWorkload {
                    kind: "StatefulSet".into(),
                    name: "db".into(),
                    replicas: 1,
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    fn seen() -> Observed {
        Observed {
            preflight: Some(vec![]),
            workloads_to_stop: 1,
            stop_workloads: true,
            health_timeout: Duration::from_secs(300),
            snapshot_timeout: Duration::from_secs(900),
            ..Default::default()
        }
    }

    /// (phase, workloads stopped by this request, adjust what is observed, expected step)
    type Row = (UpgradePhase, bool, fn(&mut Observed), Step);

    #[test]
    fn each_phase_moves_on_only_when_its_work_is_done() {
        let spec = UpgradeRequestSpec::default();
        let rows: Vec<Row> = vec![
            (Pending, false, |_| {}, Step::Enter(Preflight)),
            (Preflight, false, |o| o.preflight = None, Step::RunPreflight),
            (Preflight, false, |_| {}, Step::Enter(Suspending)),
            (Suspending, false, |_| {}, Step::SuspendKustomization),
            (
                Suspending,
                false,
                |o| o.kustomization_suspended = true,
                Step::Enter(Quiescing),
            ),
            (
                Suspending,
                false,
                |o| {
                    o.kustomization_suspended = true;
                    o.workloads_to_stop = 0
                },
                Step::Enter(Snapshotting),
            ),
            (
                Suspending,
                false,
                |o| {
                    o.kustomization_suspended = true;
                    o.stop_workloads = false
                },
                Step::Enter(Snapshotting),
            ),
            (
                Quiescing,
                false,
                |o| o.kustomization_suspended = true,
                Step::StopWorkloads,
            ),
            (
                Quiescing,
                true,
                |o| {
                    o.kustomization_suspended = true;
                    o.workloads_stopped = true
                },
                Step::Enter(Snapshotting),
            ),
            (
                Snapshotting,
                true,
                |o| o.workloads_stopped = true,
                Step::CreateSnapshots,
            ),
            (
                Snapshotting,
                true,
                |o| o.snapshots = Snapshots::Ready,
                Step::Enter(Committing),
            ),
            (Committing, true, |_| {}, Step::CommitVersionBump),
            // A restarted operator finds its commit by trailer: no second commit.
            (
                Committing,
                true,
                |o| o.commit = Some("abc".into()),
                Step::Enter(Reconciling),
            ),
            (
                Reconciling,
                true,
                |o| o.kustomization_suspended = true,
                Step::ResumeFlux,
            ),
            // The workloads start again only on the new version.
            (
                Reconciling,
                true,
                |o| o.workloads_stopped = true,
                wait("waiting for Flux to roll out the new version", 5),
            ),
            (
                Reconciling,
                true,
                |o| {
                    o.workloads_stopped = true;
                    o.release = Release::ReadyAtTarget
                },
                Step::RestartWorkloads,
            ),
            (
                Reconciling,
                true,
                |o| o.release = Release::ReadyAtTarget,
                Step::Enter(HealthChecking),
            ),
            (HealthChecking, true, |o| o.healthy = true, Step::Succeed),
            (Succeeded, true, |_| {}, Step::Done),
        ];
        for (phase, stopped, adjust, expected) in rows {
            let mut observed = seen();
            adjust(&mut observed);
            assert_eq!(
                decide(&spec, &status(phase, stopped), &observed),
                expected,
                "{phase:?} {observed:?}"
            );
        }
    }

    #[test]
    fn no_commit_before_every_snapshot_is_ready() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.snapshots = Snapshots::Pending;
        assert!(matches!(
            decide(&spec, &status(Snapshotting, true), &observed),
            Step::Wait { .. }
        ));
        observed.snapshots = Snapshots::Failed("VolumeSnapshotClass missing".into());
        assert_eq!(
            decide(&spec, &status(Snapshotting, true), &observed),
            Step::Fail {
                reason: "SnapshotFailed",
                message: "a snapshot failed, so nothing was committed: VolumeSnapshotClass missing"
                    .into()
            }
        );
        // Skipping snapshots is the one way past, and it is the request's own choice.
        let skip = UpgradeRequestSpec {
            skip_snapshot: true,
            ..Default::default()
        };
        let mut observed = seen();
        observed.kustomization_suspended = true;
        assert_eq!(
            decide(&skip, &status(Suspending, false), &observed),
            Step::Enter(Committing)
        );
    }

    #[test]
    fn a_failed_request_resumes_flux_and_restarts_workloads_before_it_is_done() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.kustomization_suspended = true;
        observed.workloads_stopped = true;
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::ResumeFlux
        );
        observed.kustomization_suspended = false;
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::RestartWorkloads
        );
        observed.workloads_stopped = false;
        observed.unready_snapshots = true;
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::DeleteUnreadySnapshots
        );
        observed.unready_snapshots = false;
        assert_eq!(decide(&spec, &status(Failed, true), &observed), Step::Done);
    }

    #[test]
    fn auto_rollback_is_requested_once_and_only_after_a_commit() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.auto_rollback = true;
        let mut failed = status(Failed, false);
        // Failed before the commit: Git and data are untouched, nothing to roll back.
        assert_eq!(decide(&spec, &failed, &observed), Step::Done);
        failed.upgrade = Some(fluxup_api::UpgradeRecord {
            git_commit: Some("abc123".into()),
            ..Default::default()
        });
        // Flux is resumed first, then the rollback is asked for.
        observed.kustomization_suspended = true;
        assert_eq!(decide(&spec, &failed, &observed), Step::ResumeFlux);
        observed.kustomization_suspended = false;
        assert_eq!(decide(&spec, &failed, &observed), Step::RequestRollback);
        failed.rollback_ref = Some(fluxup_api::LocalObjectReference {
            name: "web-rollback".into(),
        });
        assert_eq!(decide(&spec, &failed, &observed), Step::Done);
        // Off by default.
        failed.rollback_ref = None;
        observed.auto_rollback = false;
        assert_eq!(decide(&spec, &failed, &observed), Step::Done);
    }

    #[test]
    fn timeouts_failures_dry_runs_and_queues() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.snapshot_timeout = Duration::from_secs(30);
        observed.in_phase = Duration::from_secs(31);
        observed.snapshots = Snapshots::Pending;
        let Step::Fail { message, .. } = decide(&spec, &status(Snapshotting, true), &observed)
        else {
            panic!("the app's snapshot timeout applies")
        };
        assert!(message.contains("within 30 s"), "{message}");
        let mut observed = seen();
        observed.in_phase = Duration::from_secs(1000);
        observed.snapshots = Snapshots::Pending;
        let Step::Fail { reason, message } = decide(&spec, &status(Snapshotting, true), &observed)
        else {
            panic!("expected a timeout")
        };
        assert_eq!(reason, "Timeout");
        assert!(
            message.starts_with("Snapshotting did not finish within 900 s"),
            "{message}"
        );

        let mut observed = seen();
        observed.release = Release::Failed("install retries exhausted".into());
        assert!(matches!(
            decide(&spec, &status(HealthChecking, false), &observed),
            Step::Fail {
                reason: "ReleaseFailed",
                ..
            }
        ));

        let mut observed = seen();
        observed.preflight = Some(vec![(
            "git".into(),
            "the token cannot write to fleet".into(),
        )]);
        assert_eq!(
            decide(&spec, &status(Preflight, false), &observed),
            Step::Fail {
                reason: "PreflightFailed",
                message: "git: the token cannot write to fleet".into()
            }
        );

        let dry = UpgradeRequestSpec {
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(
            decide(&dry, &status(Preflight, false), &seen()),
            Step::FinishDryRun
        );

        let mut observed = seen();
        observed.other_request_running = Some("apps/web-1.2.0".into());
        assert!(matches!(
            decide(&spec, &status(Pending, false), &observed),
            Step::Wait { .. }
        ));
    }
}
