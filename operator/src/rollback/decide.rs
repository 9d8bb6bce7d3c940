//! The next step of a rollback, decided from facts alone (as `upgrade::decide` is for upgrades).
//!
//! Rules it enforces: nothing is touched unless every snapshot to restore exists and is ready;
//! a claim is deleted only after how to recreate it is recorded in status, only while its
//! snapshot is ready, and never while a pod FluxUp did not stop mounts it; a claim this
//! rollback deleted is always recreated, even when it fails or is deleted; what it holds (Flux
//! objects, stopped workloads) is always released, and nothing it does not hold is touched;
//! every phase has a timeout, checked after the evidence; one operation at a time per held
//! object.

use crate::operation::holds::{self, Holder};
use crate::operation::release::Release;
use fluxup_api::{Hold, QueuePosition, RollbackPhase, RollbackRequestSpec, RollbackRequestStatus};
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
    /// The upgrade or app it restores is gone (or was replaced) mid-way: why.
    pub source_lost: Option<String>,
    /// The Flux objects to hold, from the app (recorded into status by the first step).
    pub holds_to_record: Vec<Hold>,
    /// Where the request stands in the queue of the objects it holds.
    pub queue: QueuePosition,
    /// The preflight checks, once run: the names and messages of those that failed.
    pub preflight: Option<Vec<(String, String)>>,
    /// Who holds each object recorded in `status.holds`, in that order.
    pub holders: Vec<(Hold, Holder)>,
    /// Workloads that mount the app's volumes and would be stopped.
    pub workloads_to_stop: usize,
    /// Every workload recorded in status is at zero replicas with no pods left.
    pub workloads_stopped: bool,
    /// Some recorded workload still carries this request's mark.
    pub workloads_held: bool,
    /// Why a snapshot to restore is missing or not ReadyToUse; `None` when all are ready.
    pub snapshots_unusable: Option<String>,
    /// Each recorded claim, in the order recorded.
    pub claims: Vec<(String, Claim)>,
    /// Pods FluxUp did not stop that mount a claim about to be replaced: (claim, pod).
    pub claim_users: Vec<(String, String)>,
    /// The claims to restore, and whether how to recreate each is recorded in status.
    pub claims_to_record: usize,
    /// A revert commit with this request's trailer is on the branch.
    pub commit: Option<String>,
    /// The HelmRelease with respect to the versions restored.
    pub release: Release,
    /// The app's health checks pass (its workloads ready, its HTTP check).
    pub healthy: bool,
    /// The checks that do not pass, in words.
    pub unhealthy: Vec<String>,
    pub in_phase: Duration,
    pub health_timeout: Duration,
}

/// The one thing to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Enter(RollbackPhase),
    /// Record what the rollback will hold and what it restores: it joins the queue.
    RecordHolds(Vec<Hold>),
    Queue(QueuePosition),
    RunPreflight,
    FinishDryRun,
    Take(Hold),
    StopWorkloads,
    /// Record in status how to recreate each claim (size, class, labels, …).
    RecordClaims,
    DeleteClaim(String),
    /// Create the claim again, from its snapshot.
    CreateClaim(String),
    CommitRevert,
    RecordCommit(String),
    Release(Hold),
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

impl Step {
    fn is_progress(&self) -> bool {
        matches!(
            self,
            Step::Enter(_) | Step::RecordCommit(_) | Step::Succeed | Step::Fail { .. }
        )
    }
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

pub fn decide(spec: &RollbackRequestSpec, status: &RollbackRequestStatus, seen: &Observed) -> Step {
    use RollbackPhase::*;
    let phase = status.phase.unwrap_or_default();
    let step = next(spec, status, seen);
    if !phase.is_terminal()
        && phase != Pending
        && seen.in_phase > timeout(phase, seen)
        && !step.is_progress()
    {
        let limit = timeout(phase, seen).as_secs();
        return Step::Fail {
            reason: "Timeout",
            message: format!(
                "{phase:?} did not finish within {limit} s; FluxUp resumes Flux, recreates any \
                 deleted claim from its snapshot and restarts the app"
            ),
        };
    }
    step
}

fn next(spec: &RollbackRequestSpec, status: &RollbackRequestStatus, seen: &Observed) -> Step {
    use RollbackPhase::*;
    let phase = status.phase.unwrap_or_default();

    // Whatever happens, a claim this rollback deleted is created again from its snapshot —
    // once: what happens to it after that is not this rollback's doing.
    let missing = seen
        .claims
        .iter()
        .find(|(name, c)| {
            *c == Claim::Missing
                && (!phase.is_terminal()
                    || status
                        .volumes
                        .iter()
                        .any(|v| &v.pvc_name == name && !v.recreated))
        })
        .map(|(name, _)| name.clone());

    let deleting = seen
        .claims
        .iter()
        .find(|(name, c)| {
            matches!(c, Claim::Deleting | Claim::HeldBySnapshot)
                && status
                    .volumes
                    .iter()
                    .any(|v| &v.pvc_name == name && !v.recreated)
        })
        .map(|(name, _)| name.clone());

    if let Some(why) = &seen.source_lost
        && !phase.is_terminal()
        && phase != Pending
    {
        return Step::Fail {
            reason: "SourceDeleted",
            message: format!(
                "{why}; FluxUp recreates any claim it deleted, resumes Flux and restarts the app"
            ),
        };
    }

    match phase {
        Pending if !spec.dry_run && status.holds.is_empty() => {
            Step::RecordHolds(seen.holds_to_record.clone())
        }
        Pending if !spec.dry_run && seen.queue.position > 1 => Step::Queue(seen.queue.clone()),
        Pending => match &seen.preflight {
            None => Step::RunPreflight,
            Some(failed) if !failed.is_empty() => Step::Fail {
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
            Some(_) if spec.dry_run => Step::FinishDryRun,
            Some(_) => Step::Enter(Suspending),
        },
        Suspending => match holds::next_to_take(&seen.holders) {
            Some(Ok(hold)) => Step::Take(hold),
            Some(Err(why)) => wait(format!("waiting: {why}"), 3),
            None => Step::Enter(StoppingApp),
        },
        StoppingApp if seen.workloads_to_stop > 0 && !seen.workloads_stopped => Step::StopWorkloads,
        StoppingApp => Step::Enter(RestoringVolumes),
        RestoringVolumes if status.volumes.len() < seen.claims_to_record => Step::RecordClaims,
        RestoringVolumes => {
            for (name, claim) in &seen.claims {
                match claim {
                    Claim::Original => {
                        if let Some((_, pod)) = seen.claim_users.iter().find(|(c, _)| c == name) {
                            return wait(
                                format!(
                                    "claim {name} is mounted by pod {pod}, which FluxUp did not \
                                     stop: stop it (or name its workload's claims in the \
                                     ManagedApp) so the claim can be replaced"
                                ),
                                3,
                            );
                        }
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
                            5,
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
                            5,
                        );
                    }
                    Claim::Restored => {}
                }
            }
            Step::Enter(Reverting)
        }
        Reverting => match &seen.commit {
            Some(sha) => Step::RecordCommit(sha.clone()),
            None => Step::CommitRevert,
        },
        StartingApp if holds::next_to_release(&seen.holders).is_some() => {
            Step::Release(holds::next_to_release(&seen.holders).unwrap_or_default())
        }
        StartingApp => match &seen.release {
            Release::Failed(why) => Step::Fail {
                reason: "ReleaseFailed",
                message: format!(
                    "the data is restored, but Flux could not roll out the previous version: {why}"
                ),
            },
            Release::ReadyAtTarget if seen.workloads_held => Step::RestartWorkloads,
            Release::ReadyAtTarget if seen.healthy => Step::Succeed,
            Release::ReadyAtTarget => wait(
                format!(
                    "waiting for the app to be healthy: {}",
                    seen.unhealthy.join("; ")
                ),
                10,
            ),
            Release::NotYet => wait("waiting for Flux to roll out the previous version", 10),
        },
        Succeeded | Failed if missing.is_some() => Step::CreateClaim(missing.unwrap_or_default()),
        // A claim this rollback is deleting: the app must not start before it is back (a
        // StatefulSet would make an empty claim of that name).
        Succeeded | Failed if deleting.is_some() => wait(
            format!(
                "waiting for claim {} to be deleted; it is then recreated from its snapshot",
                deleting.unwrap_or_default()
            ),
            5,
        ),
        Succeeded | Failed if holds::next_to_release(&seen.holders).is_some() => {
            Step::Release(holds::next_to_release(&seen.holders).unwrap_or_default())
        }
        Succeeded | Failed if seen.workloads_held => Step::RestartWorkloads,
        Succeeded | Failed => Step::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RollbackPhase::*;
    use fluxup_api::{RestoredVolume, StoppedWorkload};

    fn hold(kind: &str) -> Hold {
        Hold {
            kind: kind.into(),
            namespace: "flux-system".into(),
            name: "apps".into(),
        }
    }

    fn status(phase: RollbackPhase) -> RollbackRequestStatus {
        RollbackRequestStatus {
            phase: Some(phase),
            holds: vec![hold("Kustomization"), hold("HelmRelease")],
            stopped_workloads: vec![StoppedWorkload {
                kind: "StatefulSet".into(),
                name: "db".into(),
                replicas: 2,
                uid: None,
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
            queue: QueuePosition {
                position: 1,
                ahead: vec![],
            },
            holders: vec![
                (hold("Kustomization"), Holder::Me),
                (hold("HelmRelease"), Holder::Me),
            ],
            workloads_to_stop: 1,
            workloads_stopped: true,
            workloads_held: true,
            claims: vec![("data-db-0".into(), claim)],
            claims_to_record: 1,
            health_timeout: Duration::from_secs(300),
            ..Default::default()
        }
    }

    fn released(o: &mut Observed) {
        for (_, h) in &mut o.holders {
            *h = Holder::Free;
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
        released(&mut o);
        assert_eq!(d(Suspending, &o), Step::Take(hold("Kustomization")));
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
        assert_eq!(d(Reverting, &o), Step::RecordCommit("abc".into()));
        assert_eq!(d(StartingApp, &o), Step::Release(hold("Kustomization")));
        released(&mut o);
        assert!(matches!(d(StartingApp, &o), Step::Wait { .. }));
        o.release = Release::ReadyAtTarget;
        assert_eq!(d(StartingApp, &o), Step::RestartWorkloads);
        o.workloads_held = false;
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
    fn a_claim_another_pod_mounts_is_never_deleted() {
        let spec = RollbackRequestSpec::default();
        let mut o = seen(Claim::Original);
        o.claim_users = vec![("data-db-0".into(), "backup-job-x".into())];
        let Step::Wait { why, .. } = decide(&spec, &status(RestoringVolumes), &o) else {
            panic!("expected a wait")
        };
        assert!(why.contains("mounted by pod backup-job-x"), "{why}");
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
    fn a_deleted_claim_is_recreated_whatever_ended_the_rollback_and_only_once() {
        let spec = RollbackRequestSpec::default();
        let mut o = seen(Claim::Missing);
        assert_eq!(
            decide(&spec, &status(Failed), &o),
            Step::CreateClaim("data-db-0".into())
        );
        o.claims[0].1 = Claim::Restoring;
        assert_eq!(
            decide(&spec, &status(Failed), &o),
            Step::Release(hold("Kustomization"))
        );
        released(&mut o);
        assert_eq!(decide(&spec, &status(Failed), &o), Step::RestartWorkloads);
        o.workloads_held = false;
        assert_eq!(decide(&spec, &status(Failed), &o), Step::Done);
        // Failed while the claim was being deleted: nothing starts until it is back.
        o.claims[0].1 = Claim::Deleting;
        assert!(matches!(
            decide(&spec, &status(Failed), &o),
            Step::Wait { .. }
        ));
        // Recreated once; deleted again later by someone else: not this rollback's to redo.
        let mut done = status(Succeeded);
        done.volumes[0].recreated = true;
        o.claims[0].1 = Claim::Missing;
        assert_eq!(decide(&spec, &done, &o), Step::Done);
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
    fn a_lost_upgrade_or_app_fails_the_rollback_and_cleanup_follows() {
        let spec = RollbackRequestSpec::default();
        let mut o = seen(Claim::Missing);
        o.source_lost = Some("the ManagedApp db was deleted".into());
        assert!(matches!(
            decide(&spec, &status(RestoringVolumes), &o),
            Step::Fail {
                reason: "SourceDeleted",
                ..
            }
        ));
        assert_eq!(
            decide(&spec, &status(Failed), &o),
            Step::CreateClaim("data-db-0".into())
        );
    }

    #[test]
    fn dry_runs_and_queues() {
        let dry = RollbackRequestSpec {
            dry_run: true,
            ..Default::default()
        };
        let mut unrecorded = status(Pending);
        unrecorded.holds.clear();
        assert_eq!(
            decide(&dry, &unrecorded, &seen(Claim::Original)),
            Step::FinishDryRun
        );
        let mut o = seen(Claim::Original);
        o.holds_to_record = vec![hold("Kustomization")];
        assert_eq!(
            decide(&RollbackRequestSpec::default(), &unrecorded, &o),
            Step::RecordHolds(vec![hold("Kustomization")])
        );
        o.queue = QueuePosition {
            position: 2,
            ahead: vec!["UpgradeRequest db/upgrade-2".into()],
        };
        assert_eq!(
            decide(&RollbackRequestSpec::default(), &status(Pending), &o),
            Step::Queue(o.queue.clone())
        );
    }
}
