//! The next step of an upgrade, decided from facts alone.
//!
//! Rules it enforces (DESIGN.md, "Upgrade: a resumable state machine"): no commit before every
//! snapshot is ready (unless the request skips snapshots); one operation at a time per app; a
//! suspended Kustomization is always resumed and stopped workloads always restarted, on success
//! and on failure; every phase has a timeout. Because the decision reads only the request's
//! status and what is observed now, a controller restarted at any instant picks up where the
//! last one stopped.

use crate::operation::holds::{self, Holder};
use fluxup_api::{Hold, QueuePosition, UpgradePhase, UpgradeRequestSpec, UpgradeRequestStatus};
use std::time::Duration;

pub use crate::operation::release::Release;
pub use crate::snapshots::Snapshots;

/// What the controller sees now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The ManagedApp is gone (deleted mid-way): what the request recorded is all there is.
    pub app_missing: bool,
    /// The Flux objects to hold, from the app (recorded into status by the first step).
    pub holds_to_record: Vec<Hold>,
    /// Where the request stands in the queue of the objects it holds.
    pub queue: QueuePosition,
    /// The preflight checks, once run: the names and messages of those that failed.
    pub preflight: Option<Vec<(String, String)>>,
    /// Who holds each object recorded in `status.holds`, in that order.
    pub holders: Vec<(Hold, Holder)>,
    /// Workloads that mount the app's PVCs and would be stopped.
    pub workloads_to_stop: usize,
    /// Every workload recorded is at zero replicas with no pods left.
    pub workloads_stopped: bool,
    /// Some recorded workload still carries this request's mark: it is FluxUp's to start.
    pub workloads_held: bool,
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
    /// Record in status the Flux objects this upgrade will hold: it joins their queue.
    RecordHolds(Vec<Hold>),
    /// Record the queue position and look again later.
    Queue(QueuePosition),
    RunPreflight,
    /// Record the checks and the diff; the dry run is over.
    FinishDryRun,
    /// Suspend and mark one Flux object.
    Take(Hold),
    /// Record each workload's replicas, then mark it and scale it to zero.
    StopWorkloads,
    CreateSnapshots,
    CommitVersionBump,
    /// A commit of this request is on the branch (made before a crash, or pushed late): record
    /// it, then roll it out.
    RecordCommit(String),
    /// Resume one Flux object this request holds (before the Kustomization, the Git source is
    /// asked to fetch the commit).
    Release(Hold),
    /// Scale the workloads this request stopped back to their recorded replicas.
    RestartWorkloads,
    /// Nothing to do until something changes (the controllers watch what the steps wait for);
    /// look again after `recheck` at the latest.
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
    /// Terminal and nothing is held any more: the last bookkeeping, then `releasedAt`.
    Done,
}

impl Step {
    /// Whether this step moves the request on with evidence that the phase's work is done: it
    /// is taken even when the phase has run out of time.
    fn is_progress(&self) -> bool {
        matches!(
            self,
            Step::Enter(_) | Step::RecordCommit(_) | Step::Succeed | Step::Fail { .. }
        )
    }
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

pub fn decide(spec: &UpgradeRequestSpec, status: &UpgradeRequestStatus, seen: &Observed) -> Step {
    use UpgradePhase::*;
    let phase = status.phase.unwrap_or_default();
    let step = next(spec, status, seen);
    // Evidence before timeouts: a phase whose work is seen done moves on, however late.
    if !phase.is_terminal()
        && phase != Pending
        && seen.in_phase > timeout(phase, seen)
        && !step.is_progress()
    {
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
    step
}

fn next(spec: &UpgradeRequestSpec, status: &UpgradeRequestStatus, seen: &Observed) -> Step {
    use UpgradePhase::*;
    let phase = status.phase.unwrap_or_default();
    let skip_snapshot = spec.skip_snapshot;

    if seen.app_missing && !phase.is_terminal() {
        let message = if phase == Pending || phase == Preflight {
            "the ManagedApp does not exist; nothing was changed".to_string()
        } else {
            "the ManagedApp was deleted during the upgrade; FluxUp resumes what it suspended \
             and restarts what it stopped"
                .to_string()
        };
        return Step::Fail {
            reason: if phase <= Preflight {
                "PreflightFailed"
            } else {
                "AppDeleted"
            },
            message,
        };
    }

    match phase {
        // A dry run changes nothing, so it holds nothing and waits for nobody.
        Pending if spec.dry_run => Step::Enter(Preflight),
        Pending if status.holds.is_empty() => Step::RecordHolds(seen.holds_to_record.clone()),
        Pending if seen.queue.position > 1 => Step::Queue(seen.queue.clone()),
        Pending => Step::Enter(Preflight),
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
        Suspending => match holds::next_to_take(&seen.holders) {
            Some(Ok(hold)) => Step::Take(hold),
            Some(Err(why)) => wait(format!("waiting: {why}"), 3),
            None if skip_snapshot => Step::Enter(Committing),
            None if seen.stop_workloads && seen.workloads_to_stop > 0 => Step::Enter(Quiescing),
            None => Step::Enter(Snapshotting),
        },
        // Idempotent: records what is not recorded yet, marks and scales what is not at zero.
        // (With nothing left to stop it enters Snapshotting itself.)
        Quiescing if !seen.workloads_stopped => Step::StopWorkloads,
        Quiescing => Step::Enter(Snapshotting),
        Snapshotting => match &seen.snapshots {
            _ if skip_snapshot => Step::Enter(Committing),
            Snapshots::NotCreated => Step::CreateSnapshots,
            Snapshots::Pending => wait("waiting for the VolumeSnapshots to be ready to use", 10),
            Snapshots::Failed(why) => Step::Fail {
                reason: "SnapshotFailed",
                message: format!("a snapshot failed, so nothing was committed: {why}"),
            },
            Snapshots::Ready => Step::Enter(Committing),
        },
        Committing => match &seen.commit {
            Some(sha) => Step::RecordCommit(sha.clone()),
            None => Step::CommitVersionBump,
        },
        _ if !phase.is_terminal() && holds::next_to_release(&seen.holders).is_some() => {
            Step::Release(holds::next_to_release(&seen.holders).unwrap_or_default())
        }
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
            Release::ReadyAtTarget if seen.workloads_held => Step::RestartWorkloads,
            Release::ReadyAtTarget => Step::Enter(HealthChecking),
            _ => wait("waiting for Flux to roll out the new version", 10),
        },
        HealthChecking if seen.workloads_held => Step::RestartWorkloads,
        HealthChecking if seen.healthy => Step::Succeed,
        HealthChecking => wait("waiting for the app to be healthy", 10),
        // Whatever ended the request, nothing it holds stays held — and nothing else is
        // touched. First, as it needs nothing but the request: a snapshot still being taken
        // keeps its claim from being deleted, which a rollback may need.
        Failed if seen.unready_snapshots => Step::DeleteUnreadySnapshots,
        Failed | Succeeded | RolledBack if holds::next_to_release(&seen.holders).is_some() => {
            Step::Release(holds::next_to_release(&seen.holders).unwrap_or_default())
        }
        Failed | Succeeded | RolledBack if seen.workloads_held => Step::RestartWorkloads,
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

    fn hold(kind: &str) -> Hold {
        Hold {
            kind: kind.into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
        }
    }

    fn status(phase: UpgradePhase, stopped: bool) -> UpgradeRequestStatus {
        UpgradeRequestStatus {
            phase: Some(phase),
            holds: vec![hold("Kustomization"), hold("HelmRelease")],
            stopped_workloads: if stopped {
                vec![StoppedWorkload {
                    kind: "StatefulSet".into(),
                    name: "db".into(),
                    replicas: 1,
                    uid: Some("w1".into()),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }
    }

    /// Both objects held by this request.
    fn held(o: &mut Observed) {
        o.holders = vec![
            (hold("Kustomization"), Holder::Me),
            (hold("HelmRelease"), Holder::Me),
        ];
    }

    fn seen() -> Observed {
        Observed {
            preflight: Some(vec![]),
            queue: QueuePosition {
                position: 1,
                ahead: vec![],
            },
            holders: vec![
                (hold("Kustomization"), Holder::Free),
                (hold("HelmRelease"), Holder::Free),
            ],
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
            // The Kustomization first, then the HelmRelease.
            (Suspending, false, |_| {}, Step::Take(hold("Kustomization"))),
            (
                Suspending,
                false,
                |o| o.holders[0].1 = Holder::Me,
                Step::Take(hold("HelmRelease")),
            ),
            (Suspending, false, held, Step::Enter(Quiescing)),
            (
                Suspending,
                false,
                |o| {
                    held(o);
                    o.workloads_to_stop = 0
                },
                Step::Enter(Snapshotting),
            ),
            (
                Suspending,
                false,
                |o| {
                    held(o);
                    o.stop_workloads = false
                },
                Step::Enter(Snapshotting),
            ),
            (Quiescing, false, held, Step::StopWorkloads),
            (
                Quiescing,
                true,
                |o| {
                    held(o);
                    o.workloads_stopped = true
                },
                Step::Enter(Snapshotting),
            ),
            (Snapshotting, true, held, Step::CreateSnapshots),
            (
                Snapshotting,
                true,
                |o| o.snapshots = Snapshots::Ready,
                Step::Enter(Committing),
            ),
            (Committing, true, held, Step::CommitVersionBump),
            // A restarted operator finds its commit by trailer, and records it: no second commit.
            (
                Committing,
                true,
                |o| o.commit = Some("abc".into()),
                Step::RecordCommit("abc".into()),
            ),
            (
                Reconciling,
                true,
                held,
                Step::Release(hold("Kustomization")),
            ),
            (
                Reconciling,
                true,
                |o| {
                    held(o);
                    o.holders[0].1 = Holder::Free
                },
                Step::Release(hold("HelmRelease")),
            ),
            // The workloads start again only on the new version.
            (
                Reconciling,
                true,
                |o| o.workloads_held = true,
                wait("waiting for Flux to roll out the new version", 10),
            ),
            (
                Reconciling,
                true,
                |o| {
                    o.workloads_held = true;
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
    fn it_joins_the_queue_first_and_waits_its_turn() {
        let spec = UpgradeRequestSpec::default();
        let mut fresh = status(Pending, false);
        fresh.holds.clear();
        let mut observed = seen();
        observed.holds_to_record = vec![hold("Kustomization"), hold("HelmRelease")];
        assert_eq!(
            decide(&spec, &fresh, &observed),
            Step::RecordHolds(observed.holds_to_record.clone())
        );
        observed.queue = QueuePosition {
            position: 2,
            ahead: vec!["UpgradeRequest apps/other".into()],
        };
        assert_eq!(
            decide(&spec, &status(Pending, false), &observed),
            Step::Queue(observed.queue.clone())
        );
        // A dry run holds nothing and waits for nobody.
        let dry = UpgradeRequestSpec {
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(decide(&dry, &fresh, &observed), Step::Enter(Preflight));
    }

    #[test]
    fn what_a_person_or_another_operation_suspended_is_never_taken() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.holders[0].1 = Holder::Person;
        let Step::Wait { why, .. } = decide(&spec, &status(Suspending, false), &observed) else {
            panic!("a person's suspension is waited out")
        };
        assert!(why.contains("not by FluxUp"), "{why}");
        observed.holders[0].1 = Holder::Operation("UpgradeRequest apps/other".into());
        let Step::Wait { why, .. } = decide(&spec, &status(Suspending, false), &observed) else {
            panic!("another operation's hold is waited out")
        };
        assert!(why.contains("held by UpgradeRequest apps/other"), "{why}");
        // ... until the phase's time is up; then it fails, having changed nothing.
        observed.in_phase = Duration::from_secs(121);
        assert!(matches!(
            decide(&spec, &status(Suspending, false), &observed),
            Step::Fail {
                reason: "Timeout",
                ..
            }
        ));
    }

    #[test]
    fn a_finished_request_touches_only_what_it_still_holds() {
        let spec = UpgradeRequestSpec::default();
        // A person suspended the Kustomization after the upgrade ended, and scaled the
        // workload to zero: neither carries the request's mark, so it is done.
        let mut observed = seen();
        observed.holders[0].1 = Holder::Person;
        observed.workloads_stopped = true;
        for phase in [Succeeded, Failed, RolledBack] {
            assert_eq!(
                decide(&spec, &status(phase, true), &observed),
                Step::Done,
                "{phase:?}"
            );
        }
        // Still marked as its own (a crash before the release): released.
        held(&mut observed);
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::Release(hold("Kustomization"))
        );
    }

    #[test]
    fn evidence_comes_before_timeouts() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.in_phase = Duration::from_secs(10_000);
        // The push landed late (or before a crash): recorded, so a rollback can revert it.
        observed.commit = Some("abc".into());
        assert_eq!(
            decide(&spec, &status(Committing, false), &observed),
            Step::RecordCommit("abc".into())
        );
        observed.snapshots = Snapshots::Ready;
        assert_eq!(
            decide(&spec, &status(Snapshotting, false), &observed),
            Step::Enter(Committing)
        );
        observed.healthy = true;
        assert_eq!(
            decide(&spec, &status(HealthChecking, false), &observed),
            Step::Succeed
        );
        observed.commit = None;
        assert!(matches!(
            decide(&spec, &status(Committing, false), &observed),
            Step::Fail {
                reason: "Timeout",
                ..
            }
        ));
    }

    #[test]
    fn a_deleted_app_fails_the_upgrade_and_clean_up_needs_only_the_status() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        observed.app_missing = true;
        held(&mut observed);
        assert!(matches!(
            decide(&spec, &status(Snapshotting, true), &observed),
            Step::Fail {
                reason: "AppDeleted",
                ..
            }
        ));
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::Release(hold("Kustomization"))
        );
        observed.holders.clear();
        observed.workloads_held = true;
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::RestartWorkloads
        );
    }

    #[test]
    fn no_commit_before_every_snapshot_is_ready() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        held(&mut observed);
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
        assert_eq!(
            decide(&skip, &status(Suspending, false), &observed),
            Step::Enter(Committing)
        );
    }

    #[test]
    fn a_failed_request_releases_and_restarts_before_it_is_done() {
        let spec = UpgradeRequestSpec::default();
        let mut observed = seen();
        held(&mut observed);
        observed.workloads_held = true;
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::Release(hold("Kustomization"))
        );
        observed.holders.clear();
        assert_eq!(
            decide(&spec, &status(Failed, true), &observed),
            Step::RestartWorkloads
        );
        observed.workloads_held = false;
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
        // Flux is released first, then the rollback is asked for.
        held(&mut observed);
        assert_eq!(
            decide(&spec, &failed, &observed),
            Step::Release(hold("Kustomization"))
        );
        observed.holders.clear();
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
    fn timeouts_failures_and_dry_runs() {
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
    }
}
