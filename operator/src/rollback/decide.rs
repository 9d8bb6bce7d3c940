//! The next step of a rollback, decided from facts alone (as `upgrade::decide` is for upgrades).
//!
//! Rules it enforces: nothing is touched unless every snapshot to restore exists and is ready;
//! a claim is deleted only after how to recreate it is recorded in status, and only while its
//! snapshot is ready; a deleted claim is always recreated, even when the rollback fails or is
//! deleted; Flux is always resumed and stopped workloads always restarted; every phase has a
//! timeout; one operation at a time per app.

use crate::upgrade::decide::Release;
use fluxup_api::{RollbackPhase, RollbackRequestSpec, RollbackRequestStatus};
use std::time::Duration;

/// A claim to restore, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claim the app has been using: not yet replaced.
    Original,
    /// Being deleted (Kubernetes waits until no pod uses it).
    Deleting,
    /// Being deleted, but held while a VolumeSnapshot of it is still being taken.
    HeldBySnapshot,
    /// Gone: it must be created again from its snapshot.
    Missing,
    /// Recreated from the snapshot, not bound yet.
    Restoring,
    /// Recreated from the snapshot and bound.
    Restored,
}

/// What the controller sees now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Another upgrade or rollback of the same app that is running (`namespace/name`).
    pub other_operation_running: Option<String>,
    /// The preflight checks, once run: the names and messages of those that failed.
    pub preflight: Option<Vec<(String, String)>>,
    pub kustomization_suspended: bool,
    /// Workloads that mount the app's volumes and would be stopped.
    pub workloads_to_stop: usize,
    /// Every workload recorded in status is at zero replicas with no pods left.
    pub workloads_stopped: bool,
    /// Why a snapshot to restore is missing or not ReadyToUse; `None` when all are ready.
    pub snapshots_unusable: Option<String>,
    /// Each recorded claim, in the order recorded.
    pub claims: Vec<(String, Claim)>,
    /// The claims to restore, and whether how to recreate each is recorded in status.
    pub claims_to_record: usize,
    /// A revert commit with this request's trailer is on the branch.
    pub commit: Option<String>,
    /// The HelmRelease with respect to the versions restored.
    pub release: Release,
    /// The app's workloads are ready.
    pub healthy: bool,
    pub in_phase: Duration,
    pub health_timeout: Duration,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Enter(RollbackPhase),
    RunPreflight,
    FinishDryRun,
    SuspendKustomization,
    StopWorkloads,
    /// Record in status how to recreate each claim (size, class, labels, …).
    RecordClaims,
    DeleteClaim(String),
    /// Create the claim again, from its snapshot.
    CreateClaim(String),
    CommitRevert,
    ResumeFlux,
    RestartWorkloads,
    Wait {
        why: String,
        recheck: Duration,
    },
    Fail {
        reason: &'static str,
        message: String,
    },
    Succeed,
    Done,
}

/// How long each phase may take before the rollback fails.
pub fn timeout(phase: RollbackPhase, seen: &Observed) -> Duration {
    match phase {
        RollbackPhase::Suspending | RollbackPhase::Reverting => Duration::from_secs(120),
        RollbackPhase::StoppingApp => Duration::from_secs(300),
        RollbackPhase::RestoringVolumes => Duration::from_secs(900),
        RollbackPhase::StartingApp => seen.health_timeout,
        _ => Duration::MAX,
    }
}

fn wait(why: impl Into<String>, seconds: u64) -> Step {
    Step::Wait {
        why: why.into(),
        recheck: Duration::from_secs(seconds),
    }
}

fn left_stopped(status: &RollbackRequestStatus, seen: &Observed) -> bool {
    !status.stopped_workloads.is_empty() && seen.workloads_stopped
}

pub fn decide(spec: &RollbackRequestSpec, status: &RollbackRequestStatus, seen: &Observed) -> Step {
    use RollbackPhase::*;
    let phase = status.phase.unwrap_or_default();

    if !phase.is_terminal() && phase != Pending && seen.in_phase > timeout(phase, seen) {
        let limit = timeout(phase, seen).as_secs();
        return Step::Fail {
            reason: "Timeout",
            message: format!(
                "{phase:?} did not finish within {limit} s; FluxUp resumes Flux, recreates any \
                 deleted claim from its snapshot and restarts the app"
            ),
        };
    }

    // Whatever happens, a claim that was deleted is created again from its snapshot.
    let missing = seen
        .claims
        .iter()
        .find(|(_, c)| *c == Claim::Missing)
        .map(|(name, _)| name.clone());

    match phase {
        Pending => match (&seen.other_operation_running, &seen.preflight) {
            (Some(other), _) => wait(
                format!("waiting for {other} to finish: one operation at a time per app"),
                10,
            ),
            (None, None) => Step::RunPreflight,
            (None, Some(failed)) if !failed.is_empty() => Step::Fail {
                reason: "PreflightFailed",
                message: format!(
                    "refused; nothing was changed: {}",
                    failed
                        .iter()
                        .map(|(name, why)| format!("{name}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
            (None, Some(_)) if spec.dry_run => Step::FinishDryRun,
            (None, Some(_)) => Step::Enter(Suspending),
        },
        Suspending if !seen.kustomization_suspended => Step::SuspendKustomization,
        Suspending => Step::Enter(StoppingApp),
        StoppingApp if seen.workloads_to_stop > 0 && !seen.workloads_stopped => Step::StopWorkloads,
        StoppingApp => Step::Enter(RestoringVolumes),
        RestoringVolumes if status.volumes.len() < seen.claims_to_record => Step::RecordClaims,
        RestoringVolumes => {
            for (name, claim) in &seen.claims {
                match claim {
                    Claim::Original => {
                        return match &seen.snapshots_unusable {
                            None => Step::DeleteClaim(name.clone()),
                            Some(why) => Step::Fail {
                                reason: "SnapshotNotReady",
                                message: format!(
                                    "claim {name} was not replaced because its snapshot is not \
                                     usable: {why}"
                                ),
                            },
                        };
                    }
                    Claim::Deleting => {
                        return wait(
                            format!("waiting for claim {name} to be deleted (no pod may use it)"),
                            1,
                        );
                    }
                    Claim::HeldBySnapshot => {
                        return wait(
                            format!(
                                "claim {name} is held by the snapshot controller: a VolumeSnapshot \
                                 of it is still being taken; delete snapshots of it that will never \
                                 become ready"
                            ),
                            2,
                        );
                    }
                    Claim::Missing => return Step::CreateClaim(name.clone()),
                    Claim::Restoring => {
                        return wait(
                            format!("waiting for claim {name} to be restored from its snapshot"),
                            1,
                        );
                    }
                    Claim::Restored => {}
                }
            }
            Step::Enter(Reverting)
        }
        Reverting if seen.commit.is_some() => Step::Enter(StartingApp),
        Reverting => Step::CommitRevert,
        StartingApp if seen.kustomization_suspended => Step::ResumeFlux,
        StartingApp => match &seen.release {
            Release::Failed(why) => Step::Fail {
                reason: "ReleaseFailed",
                message: format!(
                    "the data is restored, but Flux could not roll out the previous version: {why}"
                ),
            },
            Release::ReadyAtTarget if left_stopped(status, seen) => Step::RestartWorkloads,
            Release::ReadyAtTarget if seen.healthy => Step::Succeed,
            Release::ReadyAtTarget => wait("waiting for the app to be healthy", 5),
            Release::NotYet => wait("waiting for Flux to roll out the previous version", 5),
        },
        Succeeded | Failed if missing.is_some() => Step::CreateClaim(missing.unwrap_or_default()),
        Succeeded | Failed if seen.kustomization_suspended => Step::ResumeFlux,
        Succeeded | Failed if left_stopped(status, seen) => Step::RestartWorkloads,
        Succeeded | Failed => Step::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RollbackPhase::*;
    use fluxup_api::{RestoredVolume, StoppedWorkload};

    fn status(phase: RollbackPhase) -> RollbackRequestStatus {
        RollbackRequestStatus {
            phase: Some(phase),
            stopped_workloads: vec![StoppedWorkload {
                kind: "StatefulSet".into(),
                name: "db".into(),
                replicas: 2,
            }],
            volumes: vec![RestoredVolume {
                pvc_name: "data-db-0".into(),
                snapshot_name: "up-data-db-0".into(),
                storage: "1Gi".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn seen(claim: Claim) -> Observed {
        Observed {
            preflight: Some(vec![]),
            kustomization_suspended: true,
            workloads_to_stop: 1,
            workloads_stopped: true,
            claims: vec![("data-db-0".into(), claim)],
            claims_to_record: 1,
            health_timeout: Duration::from_secs(300),
            ..Default::default()
        }
    }

    #[test]
    fn each_phase_moves_on_only_when_its_work_is_done() {
        let spec = RollbackRequestSpec::default();
        let d = |phase, o: &Observed| decide(&spec, &status(phase), o);
        let mut o = seen(Claim::Original);
        o.preflight = None;
        assert_eq!(d(Pending, &o), Step::RunPreflight);
        let o = seen(Claim::Original);
        assert_eq!(d(Pending, &o), Step::Enter(Suspending));
        let mut o = seen(Claim::Original);
        o.kustomization_suspended = false;
        assert_eq!(d(Suspending, &o), Step::SuspendKustomization);
        let mut o = seen(Claim::Original);
        o.workloads_stopped = false;
        assert_eq!(d(StoppingApp, &o), Step::StopWorkloads);
        let o = seen(Claim::Original);
        assert_eq!(d(StoppingApp, &o), Step::Enter(RestoringVolumes));
        assert_eq!(
            d(RestoringVolumes, &o),
            Step::DeleteClaim("data-db-0".into())
        );
        assert!(matches!(
            d(RestoringVolumes, &seen(Claim::Deleting)),
            Step::Wait { .. }
        ));
        assert_eq!(
            d(RestoringVolumes, &seen(Claim::Missing)),
            Step::CreateClaim("data-db-0".into())
        );
        assert!(matches!(
            d(RestoringVolumes, &seen(Claim::Restoring)),
            Step::Wait { .. }
        ));
        assert_eq!(
            d(RestoringVolumes, &seen(Claim::Restored)),
            Step::Enter(Reverting)
        );
        let mut o = seen(Claim::Restored);
        assert_eq!(d(Reverting, &o), Step::CommitRevert);
        o.commit = Some("abc".into());
        assert_eq!(d(Reverting, &o), Step::Enter(StartingApp));
        assert_eq!(d(StartingApp, &o), Step::ResumeFlux);
        o.kustomization_suspended = false;
        assert!(matches!(d(StartingApp, &o), Step::Wait { .. }));
        o.release = Release::ReadyAtTarget;
        assert_eq!(d(StartingApp, &o), Step::RestartWorkloads);
        o.workloads_stopped = false;
        assert!(matches!(d(StartingApp, &o), Step::Wait { .. }));
        o.healthy = true;
        assert_eq!(d(StartingApp, &o), Step::Succeed);
        assert_eq!(d(Succeeded, &o), Step::Done);
    }

    #[test]
    fn how_to_recreate_a_claim_is_recorded_before_it_is_deleted() {
        let spec = RollbackRequestSpec::default();
        let mut unrecorded = status(RestoringVolumes);
        unrecorded.volumes.clear();
        assert_eq!(
            decide(&spec, &unrecorded, &seen(Claim::Original)),
            Step::RecordClaims
        );
    }

    #[test]
    fn a_snapshot_that_is_not_ready_refuses_before_anything_is_touched() {
        let spec = RollbackRequestSpec::default();
        let mut o = seen(Claim::Original);
        o.preflight = Some(vec![(
            "snapshots".into(),
            "VolumeSnapshot up-data-db-0 does not exist".into(),
        )]);
        let Step::Fail { reason, message } = decide(&spec, &status(Pending), &o) else {
            panic!("expected a refusal")
        };
        assert_eq!(reason, "PreflightFailed");
        assert!(
            message.starts_with("refused; nothing was changed"),
            "{message}"
        );
        // Deleted since the preflight: the claim is kept.
        let mut o = seen(Claim::Original);
        o.snapshots_unusable = Some("VolumeSnapshot up-data-db-0 is gone".into());
        assert!(matches!(
            decide(&spec, &status(RestoringVolumes), &o),
            Step::Fail {
                reason: "SnapshotNotReady",
                ..
            }
        ));
    }

    #[test]
    fn a_deleted_claim_is_recreated_whatever_ended_the_rollback() {
        let spec = RollbackRequestSpec::default();
        let mut o = seen(Claim::Missing);
        assert_eq!(
            decide(&spec, &status(Failed), &o),
            Step::CreateClaim("data-db-0".into())
        );
        o.claims[0].1 = Claim::Restoring;
        assert_eq!(decide(&spec, &status(Failed), &o), Step::ResumeFlux);
        o.kustomization_suspended = false;
        assert_eq!(decide(&spec, &status(Failed), &o), Step::RestartWorkloads);
        o.workloads_stopped = false;
        assert_eq!(decide(&spec, &status(Failed), &o), Step::Done);
        // A timeout in the middle fails, and the same clean-up follows.
        let mut o = seen(Claim::Deleting);
        o.in_phase = Duration::from_secs(901);
        assert!(matches!(
            decide(&spec, &status(RestoringVolumes), &o),
            Step::Fail {
                reason: "Timeout",
                ..
            }
        ));
    }

    #[test]
    fn dry_runs_and_queues() {
        let dry = RollbackRequestSpec {
            dry_run: true,
            ..Default::default()
        };
        assert_eq!(
            decide(&dry, &status(Pending), &seen(Claim::Original)),
            Step::FinishDryRun
        );
        let mut o = seen(Claim::Original);
        o.other_operation_running = Some("db/upgrade-2".into());
        assert!(matches!(
            decide(&RollbackRequestSpec::default(), &status(Pending), &o),
            Step::Wait { .. }
        ));
    }
}
