//! The next step of an upgrade, decided from facts alone.
//!
//! Rules it enforces (DESIGN.md, "Upgrade: a resumable state machine"): no commit before every
//! snapshot is ready (unless the request skips snapshots); one operation at a time per app; a
//! suspended Kustomization is always resumed and stopped workloads always restarted, on success
//! and on failure; every phase has a timeout. Because the decision reads only the request's
//! status and what is observed now, a controller restarted at any instant picks up where the
//! last one stopped.

use crate::git::gitea::{PullRequest, PullState};
use crate::operation::holds::{self, Holder};
use crate::operation::verification::State as Verification;
use fluxup_api::{
    Hold, PreflightCheck, QueuePosition, UpgradePhase, UpgradeRequestSpec, UpgradeRequestStatus,
};
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
    /// Every health check passes (the release, its workloads, the optional HTTP check).
    pub healthy: bool,
    /// While HealthChecking: each check as seen now, the release's first.
    pub health: Vec<PreflightCheck>,
    /// How long the app must stay healthy before the upgrade succeeds (`healthCheck.soak`).
    pub soak: Duration,
    /// How long it has been healthy, from `status.healthCheck.healthySince`.
    pub healthy_for: Option<Duration>,
    /// The verification Job, when the app asks for one (`healthCheck.verification`) and the
    /// new version is Ready. Its check is in `health`, not in `healthy`: it runs after those.
    pub verification: Option<Verification>,
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
    /// The ManagedApp proposes its upgrades as pull requests (`spec.git.pullRequest`).
    pub pull_request_mode: bool,
    /// The pull request recorded in status, as the forge reports it now.
    pub pull_request: Option<PullRequest>,
    /// How long the ManagedApp waits for a merge.
    pub merge_timeout: Duration,
    /// The ManagedApp pushes its bumps to another branch (`spec.git.branch`).
    pub branch_mode: bool,
    /// Branch mode: the head of the branch Flux follows, once the pushed commit is on it.
    pub reached: Option<String>,
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
    /// Pull-request mode: push the bump to the request's own branch and open the pull request
    /// (or find the one opened before a restart), and record it.
    OpenPullRequest,
    /// Branch mode: commit the bump to `spec.git.branch` (once), and record it.
    PushToBranch,
    /// The pull request was merged (or, in branch mode, the pushed commit reached the branch
    /// Flux follows): record the commit Flux will roll out.
    RecordMerge(String),
    /// Close this failed request's pull request, so a later merge cannot roll out a version
    /// no snapshot was taken for.
    ClosePullRequest,
    /// The pull request was merged but the upgrade failed before Flux rolled it out: commit
    /// the previous versions back, so resuming Flux does not roll out an upgrade without its
    /// snapshots.
    RevertMerge,
    /// A commit of this request is on the branch (made before a crash, or pushed late): record
    /// it, then roll it out.
    RecordCommit(String),
    /// Resume one Flux object this request holds (before the Kustomization, the Git source is
    /// asked to fetch the commit).
    Release(Hold),
    /// Scale the workloads this request stopped back to their recorded replicas.
    RestartWorkloads,
    /// Record the health checks as seen now in `status.healthCheck` (and, when all pass for
    /// the first time, since when: the soak time counts from there).
    RecordHealth,
    /// Healthy and soaked: create the verification Job from the app's CronJob.
    StartVerification,
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
            Step::Enter(_)
                | Step::RecordCommit(_)
                | Step::RecordMerge(_)
                | Step::Succeed
                | Step::Fail { .. }
        )
    }
}

/// How long each phase may take before the upgrade fails.
pub fn timeout(phase: UpgradePhase, seen: &Observed) -> Duration {
    match phase {
        UpgradePhase::Preflight | UpgradePhase::Suspending | UpgradePhase::Committing => {
            Duration::from_secs(120)
        }
        UpgradePhase::AwaitingMerge => seen.merge_timeout,
        UpgradePhase::Quiescing => Duration::from_secs(300),
        UpgradePhase::Snapshotting => seen.snapshot_timeout,
        UpgradePhase::Reconciling => seen.health_timeout,
        // The verification Job has a timeout of its own after the soak.
        UpgradePhase::HealthChecking => {
            let verifying = if seen.verification.is_some() {
                seen.health_timeout
            } else {
                Duration::ZERO
            };
            seen.health_timeout
                .saturating_add(seen.soak)
                .saturating_add(verifying)
        }
        _ => Duration::MAX,
    }
}

fn wait(why: impl Into<String>, seconds: u64) -> Step {
    Step::Wait {
        why: why.into(),
        recheck: Duration::from_secs(seconds),
    }
}

/// The health checks that do not pass, in words.
fn failed_checks(seen: &Observed) -> String {
    let failed = crate::operation::health::failed(&seen.health);
    if failed.is_empty() {
        "no check was seen".into()
    } else {
        failed.join("; ")
    }
}

/// Healthy (and soaked): the verification Job decides, when the app has one.
fn verified(seen: &Observed) -> Step {
    match &seen.verification {
        None | Some(Verification::Passed(_)) => Step::Succeed,
        Some(Verification::NotStarted) => Step::StartVerification,
        Some(Verification::Running(what)) => wait(format!("healthy; {what}"), 10),
        Some(Verification::Failed(why)) => Step::Fail {
            reason: "HealthCheckFailed",
            message: format!("{why}; a rollback restores the data taken before"),
        },
    }
}

/// Whether status says something other than what is seen now: another result of a check, or
/// all passing without `healthySince` (the soak's start) recorded.
fn health_changed(status: &UpgradeRequestStatus, seen: &Observed) -> bool {
    let recorded = status.health_check.as_ref();
    let checks = recorded.map_or(&[][..], |h| &h.checks[..]);
    checks != seen.health.as_slice()
        || (seen.healthy && !seen.soak.is_zero() && seen.healthy_for.is_none())
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
        if phase == HealthChecking {
            return Step::Fail {
                reason: "HealthCheckFailed",
                message: format!(
                    "the app was not healthy within {limit} s: {}; a rollback restores the data taken before",
                    failed_checks(seen)
                ),
            };
        }
        let hint = match phase {
            Snapshotting => "check the VolumeSnapshots' events and the CSI driver",
            AwaitingMerge => "nobody merged the pull request; FluxUp closes it and resumes Flux",
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
            // Flux is held, so the merge rolls nothing out until the snapshots are taken.
            None if seen.pull_request_mode || seen.branch_mode => Step::Enter(AwaitingMerge),
            None => before_snapshots(skip_snapshot, seen),
        },
        AwaitingMerge if seen.branch_mode => match (&status.pushed, &seen.reached) {
            (None, _) => Step::PushToBranch,
            (Some(p), _) if p.reached_as.is_some() => before_snapshots(skip_snapshot, seen),
            (Some(_), Some(head)) => Step::RecordMerge(head.clone()),
            (Some(p), None) => wait(
                format!(
                    "waiting for commit {} on branch {} to reach the branch Flux follows",
                    short(&p.commit),
                    p.branch
                ),
                15,
            ),
        },
        AwaitingMerge => match (&status.pull_request, &seen.pull_request) {
            (None, _) => Step::OpenPullRequest,
            (Some(pr), _) if pr.merge_commit.is_some() => before_snapshots(skip_snapshot, seen),
            (Some(_), Some(live)) if live.state == PullState::Merged => match &live.merge_commit {
                Some(sha) => Step::RecordMerge(sha.clone()),
                None => wait(
                    "the pull request is merged; waiting for its merge commit",
                    5,
                ),
            },
            (Some(pr), Some(live)) if live.state == PullState::Closed => Step::Fail {
                reason: "PullRequestClosed",
                message: format!(
                    "pull request #{} was closed without being merged; nothing was committed \
                     to the branch Flux follows",
                    pr.number
                ),
            },
            (Some(pr), _) => wait(
                format!(
                    "waiting for a person to merge pull request #{} ({})",
                    pr.number, pr.url
                ),
                15,
            ),
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
        // The merge made the commit; a person's merge of FluxUp's branch is the bump.
        Committing if merge_commit(status).is_some() => {
            Step::RecordCommit(merge_commit(status).unwrap_or_default())
        }
        Committing if seen.pull_request_mode || seen.branch_mode => Step::Fail {
            reason: "GitFailed",
            message: "the app proposes upgrades as pull requests (or on another branch), but \
                      this upgrade's bump has not reached the branch Flux follows; nothing was \
                      committed to it"
                .into(),
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
        HealthChecking if health_changed(status, seen) => Step::RecordHealth,
        HealthChecking => match seen.healthy_for {
            _ if seen.healthy && seen.soak.is_zero() => verified(seen),
            Some(healthy) if seen.healthy && healthy >= seen.soak => verified(seen),
            Some(healthy) if seen.healthy => Step::Wait {
                why: format!(
                    "healthy; soaking for {} s more before the upgrade counts",
                    (seen.soak - healthy).as_secs()
                ),
                recheck: (seen.soak - healthy).min(Duration::from_secs(10)),
            },
            // The soak began: a check that fails now fails the upgrade.
            Some(healthy) if !seen.soak.is_zero() => Step::Fail {
                reason: "HealthCheckFailed",
                message: format!(
                    "the app was healthy for {} s of its {} s soak, then: {}; a rollback restores the data taken before",
                    healthy.as_secs(),
                    seen.soak.as_secs(),
                    failed_checks(seen)
                ),
            },
            _ => wait(
                format!("waiting for the app to be healthy: {}", failed_checks(seen)),
                10,
            ),
        },
        // Whatever ended the request, nothing it holds stays held — and nothing else is
        // touched. First, as it needs nothing but the request: a snapshot still being taken
        // keeps its claim from being deleted, which a rollback may need.
        Failed if seen.unready_snapshots => Step::DeleteUnreadySnapshots,
        // Before Flux is resumed: an open pull request is closed, and a merged one that was
        // never rolled out is reverted.
        Failed
            if seen
                .pull_request
                .as_ref()
                .is_some_and(|p| p.state == PullState::Open) =>
        {
            Step::ClosePullRequest
        }
        Failed
            if merged(status, seen)
                && !seen.app_missing
                && status
                    .upgrade
                    .as_ref()
                    .is_none_or(|u| u.git_commit.is_none())
                && !reverted(status) =>
        {
            Step::RevertMerge
        }
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

/// After the holds (and, in pull-request mode, the merge): stop the workloads and take the
/// snapshots, or go straight to the commit when there are none.
fn before_snapshots(skip_snapshot: bool, seen: &Observed) -> Step {
    use UpgradePhase::*;
    if skip_snapshot {
        Step::Enter(Committing)
    } else if seen.stop_workloads && seen.workloads_to_stop > 0 {
        Step::Enter(Quiescing)
    } else {
        Step::Enter(Snapshotting)
    }
}

/// The commit the merge of the request's pull request made (in branch mode: the head of the
/// branch Flux follows once the pushed commit reached it), as recorded.
fn merge_commit(status: &UpgradeRequestStatus) -> Option<String> {
    status
        .pull_request
        .as_ref()
        .and_then(|p| p.merge_commit.clone())
        .or_else(|| status.pushed.as_ref().and_then(|p| p.reached_as.clone()))
}

/// Whether the request's bump reached the branch Flux follows, as recorded or as seen now.
fn merged(status: &UpgradeRequestStatus, seen: &Observed) -> bool {
    merge_commit(status).is_some()
        || seen.reached.is_some()
        || seen
            .pull_request
            .as_ref()
            .is_some_and(|p| p.state == PullState::Merged)
}

/// Whether the previous versions were committed back after a merge that was never rolled out.
fn reverted(status: &UpgradeRequestStatus) -> bool {
    status
        .pull_request
        .as_ref()
        .is_some_and(|p| p.revert_commit.is_some())
        || status
            .pushed
            .as_ref()
            .is_some_and(|p| p.revert_commit.is_some())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
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
    fn the_verification_job_runs_after_the_soak_and_decides_the_upgrade() {
        use crate::operation::health::check;
        let spec = UpgradeRequestSpec::default();
        let release = check("release", true, "HelmRelease web/web is Ready at 1.1.0");
        let seeing = |verification: Verification, healthy_for: Option<u64>| {
            let mut o = seen();
            o.release = Release::ReadyAtTarget;
            o.health = vec![release.clone(), verification.check()];
            o.healthy = true;
            o.soak = Duration::from_secs(30);
            o.healthy_for = healthy_for.map(Duration::from_secs);
            o.verification = Some(verification);
            o
        };
        let recorded = |o: &Observed| {
            let mut s = status(HealthChecking, false);
            s.health_check = Some(fluxup_api::HealthCheckResult {
                checks: o.health.clone(),
                ..Default::default()
            });
            s
        };
        let d = |o: &Observed| decide(&spec, &recorded(o), o);
        // Not before the soak is over.
        assert!(
            matches!(d(&seeing(Verification::NotStarted, Some(10))), Step::Wait { why, .. } if why.contains("soaking"))
        );
        assert_eq!(
            d(&seeing(Verification::NotStarted, Some(30))),
            Step::StartVerification
        );
        let running = Verification::Running("verification Job web/v is running".into());
        assert_eq!(
            d(&seeing(running.clone(), Some(40))),
            wait("healthy; verification Job web/v is running", 10)
        );
        assert_eq!(
            d(&seeing(Verification::Passed("completed".into()), Some(50))),
            Step::Succeed
        );
        let Step::Fail { reason, message } = d(&seeing(
            Verification::Failed("verification Job web/v failed: exit 1".into()),
            Some(50),
        )) else {
            panic!("a failed verification fails the upgrade");
        };
        assert_eq!(reason, "HealthCheckFailed");
        assert!(
            message.starts_with("verification Job web/v failed: exit 1"),
            "{message}"
        );
        // The Job gets a timeout of its own after the soak, then fails the upgrade naming it.
        let mut late = seeing(running, Some(300));
        late.in_phase = Duration::from_secs(300 + 30 + 299);
        assert!(matches!(d(&late), Step::Wait { .. }));
        late.in_phase = Duration::from_secs(300 + 30 + 301);
        assert!(
            matches!(d(&late), Step::Fail { message, .. } if message.contains("verification Job web/v is running"))
        );
    }

    #[test]
    fn health_is_recorded_check_by_check_then_soaked_before_it_succeeds() {
        use crate::operation::health::check;
        let spec = UpgradeRequestSpec::default();
        let release = check("release", true, "HelmRelease web/web is Ready at 1.1.0");
        let answered = |code: u16| {
            check(
                "http",
                code == 200,
                format!("GET /healthz on Service web/web:80 answered {code}"),
            )
        };
        let seeing = |http: u16, soak: u64, healthy_for: Option<u64>| {
            let mut o = seen();
            o.release = Release::ReadyAtTarget;
            o.health = vec![release.clone(), answered(http)];
            o.healthy = http == 200;
            o.soak = Duration::from_secs(soak);
            o.healthy_for = healthy_for.map(Duration::from_secs);
            o
        };
        let recorded = |http: u16| {
            let mut s = status(HealthChecking, false);
            s.health_check = Some(fluxup_api::HealthCheckResult {
                checks: vec![release.clone(), answered(http)],
                ..Default::default()
            });
            s
        };
        let d = |s: &UpgradeRequestStatus, o: &Observed| decide(&spec, s, o);

        // What is seen is recorded first, so the page shows each check.
        assert_eq!(
            d(&status(HealthChecking, false), &seeing(500, 0, None)),
            Step::RecordHealth
        );
        assert_eq!(
            d(&recorded(500), &seeing(500, 0, None)),
            wait(
                "waiting for the app to be healthy: GET /healthz on Service web/web:80 answered 500",
                10
            )
        );
        // Not healthy within the timeout: failed, saying which check and what it saw.
        let mut late = seeing(500, 0, None);
        late.in_phase = Duration::from_secs(301);
        let Step::Fail { reason, message } = d(&recorded(500), &late) else {
            panic!("a late health check fails the upgrade");
        };
        assert_eq!(reason, "HealthCheckFailed");
        assert!(
            message.contains(
                "not healthy within 300 s: GET /healthz on Service web/web:80 answered 500"
            ),
            "{message}"
        );

        // Without a soak, healthy is done; with one, its start is recorded, then it is waited.
        assert_eq!(d(&recorded(200), &seeing(200, 0, None)), Step::Succeed);
        assert_eq!(
            d(&recorded(200), &seeing(200, 60, None)),
            Step::RecordHealth
        );
        let soaking = d(&recorded(200), &seeing(200, 60, Some(20)));
        assert!(
            matches!(&soaking, Step::Wait { why, recheck } if why.contains("40 s more") && *recheck == Duration::from_secs(10)),
            "{soaking:?}"
        );
        assert_eq!(d(&recorded(200), &seeing(200, 60, Some(60))), Step::Succeed);
        // The soak extends the phase's time: past the health timeout, within it plus the soak.
        let mut long = seeing(200, 120, Some(100));
        long.in_phase = Duration::from_secs(350);
        assert!(matches!(d(&recorded(200), &long), Step::Wait { .. }));

        // A check that fails during the soak is recorded, then fails the upgrade at once.
        assert_eq!(
            d(&recorded(200), &seeing(500, 60, Some(20))),
            Step::RecordHealth
        );
        let Step::Fail { reason, message } = d(&recorded(500), &seeing(500, 60, Some(20))) else {
            panic!("a failure during the soak fails the upgrade");
        };
        assert_eq!(reason, "HealthCheckFailed");
        assert!(message.contains("healthy for 20 s of its 60 s soak, then: GET /healthz on Service web/web:80 answered 500"), "{message}");
    }

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

    fn live(state: PullState, merge_commit: Option<&str>) -> Option<PullRequest> {
        Some(PullRequest {
            number: 7,
            url: "https://git.example.com/fleet/pulls/7".into(),
            state,
            merge_commit: merge_commit.map(str::to_string),
        })
    }

    fn with_pr(phase: UpgradePhase, merge_commit: Option<&str>) -> UpgradeRequestStatus {
        UpgradeRequestStatus {
            pull_request: Some(fluxup_api::PullRequestRecord {
                number: 7,
                url: "https://git.example.com/fleet/pulls/7".into(),
                branch: "fluxup/web-1-abcd".into(),
                state: "open".into(),
                merge_commit: merge_commit.map(str::to_string),
                revert_commit: None,
            }),
            ..status(phase, false)
        }
    }

    #[test]
    fn a_pull_request_is_merged_before_the_snapshots_and_its_merge_is_what_rolls_out() {
        let spec = UpgradeRequestSpec::default();
        let mut o = seen();
        held(&mut o);
        o.pull_request_mode = true;
        // Flux is held first, so the merge rolls nothing out yet; nothing is stopped.
        assert_eq!(
            decide(&spec, &status(Suspending, false), &o),
            Step::Enter(AwaitingMerge)
        );
        assert_eq!(
            decide(&spec, &status(AwaitingMerge, false), &o),
            Step::OpenPullRequest
        );
        o.pull_request = live(PullState::Open, None);
        assert!(matches!(
            decide(&spec, &with_pr(AwaitingMerge, None), &o),
            Step::Wait { why, .. } if why.contains("merge pull request #7")
        ));
        // Merged: the merge commit is recorded, then the workloads stop and snapshots are taken.
        o.pull_request = live(PullState::Merged, Some("m1"));
        assert_eq!(
            decide(&spec, &with_pr(AwaitingMerge, None), &o),
            Step::RecordMerge("m1".into())
        );
        assert_eq!(
            decide(&spec, &with_pr(AwaitingMerge, Some("m1")), &o),
            Step::Enter(Quiescing)
        );
        // After the snapshots, the merge commit is the upgrade's commit: FluxUp pushes none.
        assert_eq!(
            decide(&spec, &with_pr(Committing, Some("m1")), &o),
            Step::RecordCommit("m1".into())
        );
        assert!(matches!(
            decide(&spec, &status(Committing, false), &o),
            Step::Fail {
                reason: "GitFailed",
                ..
            }
        ));
    }

    #[test]
    fn a_pull_request_closed_unmerged_or_never_merged_fails_and_is_closed_before_flux_resumes() {
        let spec = UpgradeRequestSpec::default();
        let mut o = seen();
        held(&mut o);
        o.pull_request_mode = true;
        o.merge_timeout = Duration::from_secs(3600);
        o.pull_request = live(PullState::Closed, None);
        assert!(matches!(
            decide(&spec, &with_pr(AwaitingMerge, None), &o),
            Step::Fail {
                reason: "PullRequestClosed",
                ..
            }
        ));
        // Nobody merged in time: the upgrade fails, the pull request is closed, then Flux is
        // resumed.
        o.pull_request = live(PullState::Open, None);
        o.in_phase = Duration::from_secs(3601);
        assert!(matches!(
            decide(&spec, &with_pr(AwaitingMerge, None), &o),
            Step::Fail {
                reason: "Timeout",
                ..
            }
        ));
        o.in_phase = Duration::ZERO;
        assert_eq!(
            decide(&spec, &with_pr(Failed, None), &o),
            Step::ClosePullRequest
        );
        o.pull_request = live(PullState::Closed, None);
        assert_eq!(
            decide(&spec, &with_pr(Failed, None), &o),
            Step::Release(hold("Kustomization"))
        );
    }

    #[test]
    fn a_merge_never_rolled_out_is_reverted_before_flux_resumes() {
        let spec = UpgradeRequestSpec::default();
        let mut o = seen();
        held(&mut o);
        o.pull_request_mode = true;
        // Merged, then the snapshot failed: Git holds a version with no snapshot behind it.
        o.pull_request = live(PullState::Merged, Some("m1"));
        let mut failed = with_pr(Failed, Some("m1"));
        assert_eq!(decide(&spec, &failed, &o), Step::RevertMerge);
        if let Some(pr) = failed.pull_request.as_mut() {
            pr.revert_commit = Some("r1".into());
        }
        assert_eq!(
            decide(&spec, &failed, &o),
            Step::Release(hold("Kustomization"))
        );
        // Rolled out (the merge is the upgrade's commit): a failure then is a rollback's to
        // undo, not a revert's.
        let mut rolled_out = with_pr(Failed, Some("m1"));
        rolled_out.upgrade = Some(fluxup_api::UpgradeRecord {
            git_commit: Some("m1".into()),
            ..Default::default()
        });
        assert_eq!(
            decide(&spec, &rolled_out, &o),
            Step::Release(hold("Kustomization"))
        );
    }

    #[test]
    fn in_branch_mode_the_bump_rolls_out_once_it_reaches_the_branch_flux_follows() {
        let spec = UpgradeRequestSpec::default();
        let mut o = seen();
        held(&mut o);
        o.branch_mode = true;
        assert_eq!(
            decide(&spec, &status(Suspending, false), &o),
            Step::Enter(AwaitingMerge)
        );
        assert_eq!(
            decide(&spec, &status(AwaitingMerge, false), &o),
            Step::PushToBranch
        );
        let mut pushed = UpgradeRequestStatus {
            pushed: Some(fluxup_api::PushedCommit {
                branch: "staging".into(),
                commit: "c0ffee0123456789".into(),
                ..Default::default()
            }),
            ..status(AwaitingMerge, false)
        };
        assert!(matches!(
            decide(&spec, &pushed, &o),
            Step::Wait { why, .. } if why.contains("c0ffee012345 on branch staging")
        ));
        o.reached = Some("head1".into());
        assert_eq!(
            decide(&spec, &pushed, &o),
            Step::RecordMerge("head1".into())
        );
        if let Some(p) = pushed.pushed.as_mut() {
            p.reached_as = Some("head1".into());
        }
        assert_eq!(decide(&spec, &pushed, &o), Step::Enter(Quiescing));
        pushed.phase = Some(Committing);
        assert_eq!(
            decide(&spec, &pushed, &o),
            Step::RecordCommit("head1".into())
        );
        // Failed after it reached the branch and before the rollout: put the versions back.
        pushed.phase = Some(Failed);
        assert_eq!(decide(&spec, &pushed, &o), Step::RevertMerge);
    }
}
