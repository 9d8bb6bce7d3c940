//! Pull-request mode (`spec.git.pullRequest`): the version bump is pushed to the request's own
//! branch and proposed as a pull request; a person's merge is the commit Flux rolls out. Branch
//! mode (`spec.git.branch`): the bump is committed to that branch, and rolls out once it reaches
//! the branch Flux follows (a person or CI merges or promotes it). Flux is held from before the
//! bump is proposed until after the snapshots, so the merge never rolls out a version without
//! them. Each step is idempotent: the branch, its commit and the pull request are found again
//! after a restart, never made twice.

use super::controller::bump_message;
use crate::git::GitBackend;
use crate::git::bump::{
    BumpError, HISTORY_DEPTH, Outcome, commit_version_bump, commit_version_bump_to,
};
use crate::git::cluster::{self, AppRepository};
use crate::git::gitea::{Gitea, PullRequest, PullState};
use crate::git::message::BumpMessage;
use crate::git::message::OPERATION_TRAILER;
use crate::operation::plan::{self, Plan, version_edits};
use crate::operation::{Context, Error, crash, steps};
use fluxup_api::{
    ManagedApp, PullRequestRecord, PushedCommit, UpgradeRequest, UpgradeRequestStatus,
};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::time::Duration;

/// The branch an upgrade's bump is pushed to: named after the request and its uid, so a
/// request recreated under the same name gets a branch of its own.
pub fn branch_of(req: &UpgradeRequest) -> String {
    let uid = req.uid().unwrap_or_default();
    format!(
        "fluxup/{}-{}",
        req.name_any(),
        uid.get(..8).unwrap_or(uid.as_str())
    )
}

/// The forge of an app in pull-request mode, with its repository.
async fn forge_of(ctx: &Context, app: &ManagedApp) -> Result<(AppRepository, Gitea), Error> {
    let repo = cluster::repository(&ctx.client, app).await?;
    let forge = repo.forge.clone().ok_or_else(|| {
        Error::Other("the app has no spec.git.pullRequest: it does not open pull requests".into())
    })?;
    Ok((repo, forge))
}

/// The pull request recorded in `status`, as the forge reports it now.
pub async fn observe(
    ctx: &Context,
    app: &ManagedApp,
    record: &PullRequestRecord,
) -> Result<PullRequest, Error> {
    let (_, forge) = forge_of(ctx, app).await?;
    Ok(forge.pull_request(record.number).await?)
}

fn record_json(
    pr: &PullRequest,
    branch: &str,
    old: Option<&PullRequestRecord>,
) -> serde_json::Value {
    serde_json::to_value(PullRequestRecord {
        number: pr.number,
        url: pr.url.clone(),
        branch: branch.to_string(),
        state: pr.state.word().to_string(),
        merge_commit: old.and_then(|o| o.merge_commit.clone()),
        revert_commit: old.and_then(|o| o.revert_commit.clone()),
    })
    .unwrap_or_default()
}

/// The Git server could not be reached: say so, and try again until the phase times out.
async fn retry_later(ctx: &Context, req: &UpgradeRequest, e: &str) -> Result<Action, Error> {
    let why = format!("the Git server could not be reached; retrying: {e}");
    ctx.write_status(
        <UpgradeRequest as steps::Request>::MANAGER,
        req,
        serde_json::json!({"message": why}),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(10)))
}

/// Pushes the bump to the request's branch and opens its pull request.
pub async fn open(
    ctx: &Context,
    req: &UpgradeRequest,
    app: &ManagedApp,
    plan: &Plan,
    status: &UpgradeRequestStatus,
) -> Result<Action, Error> {
    let (repo, forge) = forge_of(ctx, app).await?;
    let me = req.uid().unwrap_or_default();
    let request = format!("{}/{}", req.namespace().unwrap_or_default(), req.name_any());
    let message = bump_message(app, plan, status, &request, &me);
    let branch = branch_of(req);
    let outcome = commit_version_bump_to(
        &repo.git,
        &repo.branch,
        &branch,
        &version_edits(plan),
        &message,
        &me,
    )
    .await;
    match outcome {
        Ok(Outcome::NothingToChange) => {
            // The versions are in Git already: there is nothing to propose or roll out.
            return super::controller::record_commit(ctx, req, status, None).await;
        }
        Ok(_) => crash::point("push-branch"),
        Err(BumpError::Git(crate::git::GitError::Unreachable(e))) => {
            return retry_later(ctx, req, &e).await;
        }
        Err(e) => {
            let message = format!(
                "the version bump could not be pushed to branch {branch}, so nothing was \
                 proposed: {e}; fix the repository or the token, then create a new UpgradeRequest"
            );
            return super::controller::fail(ctx, req, "GitFailed", message).await;
        }
    }
    let (title, body) = message.split_once('\n').unwrap_or((&message, ""));
    let pr = forge
        .open_pull_request(&repo.branch, &branch, title, body.trim())
        .await?;
    crash::point("open-pull-request");
    steps::record(
        ctx,
        req,
        "record-pull-request",
        serde_json::json!({
            "pullRequest": record_json(&pr, &branch, None),
            "message": format!(
                "opened pull request #{} ({}); FluxUp waits for a person to merge it, with Flux held",
                pr.number, pr.url
            ),
        }),
    )
    .await?;
    ctx.event(
        req,
        "Upgrade",
        false,
        "PullRequestOpened",
        format!(
            "opened pull request #{} into {}: {}",
            pr.number, repo.branch, pr.url
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// Branch mode: commits the bump to `spec.git.branch` (read and written there, without force;
/// a commit of this request already there is not made twice), and records it.
pub async fn push_to_branch(
    ctx: &Context,
    req: &UpgradeRequest,
    app: &ManagedApp,
    plan: &Plan,
    status: &UpgradeRequestStatus,
    branch: &str,
) -> Result<Action, Error> {
    let repo = cluster::repository(&ctx.client, app).await?;
    let me = req.uid().unwrap_or_default();
    let request = format!("{}/{}", req.namespace().unwrap_or_default(), req.name_any());
    let message = bump_message(app, plan, status, &request, &me);
    let commit =
        match commit_version_bump(&repo.git, branch, &version_edits(plan), &message, &me).await {
            Ok(Outcome::Committed(c) | Outcome::AlreadyCommitted(c)) => c.sha,
            Ok(Outcome::NothingToChange) => {
                return super::controller::record_commit(ctx, req, status, None).await;
            }
            Err(BumpError::Git(crate::git::GitError::Unreachable(e))) => {
                return retry_later(ctx, req, &e).await;
            }
            Err(e) => {
                let message = format!(
                    "the version bump could not be committed to branch {branch}, so nothing \
                 changed: {e}; fix the repository or the token, then create a new UpgradeRequest"
                );
                return super::controller::fail(ctx, req, "GitFailed", message).await;
            }
        };
    crash::point("push-branch");
    steps::record(
        ctx,
        req,
        "record-pushed",
        serde_json::json!({
            "pushed": PushedCommit { branch: branch.to_string(), commit: commit.clone(), ..Default::default() },
            "message": format!(
                "committed {commit} to branch {branch}; FluxUp waits, with Flux held, until it \
                 reaches branch {}",
                repo.branch
            ),
        }),
    )
    .await?;
    ctx.event(
        req,
        "Upgrade",
        false,
        "PushedToBranch",
        format!("version bump committed to branch {branch}: {commit}"),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// Branch mode: the head of the branch Flux follows, if the request's commit (found by its
/// trailer, so a cherry-pick or rebase counts) is on it.
pub async fn reached(
    ctx: &Context,
    req: &UpgradeRequest,
    app: &ManagedApp,
) -> Result<Option<String>, Error> {
    let repo = cluster::repository(&ctx.client, app).await?;
    let me = req.uid().unwrap_or_default();
    let found = repo
        .git
        .find_commit(&repo.branch, OPERATION_TRAILER, &me, HISTORY_DEPTH)
        .await?;
    Ok(match found {
        Some(_) => Some(repo.git.head(&repo.branch).await?),
        None => None,
    })
}

/// Records the commit the merge made: from now on it is the upgrade's commit.
pub async fn record_merge(
    ctx: &Context,
    req: &UpgradeRequest,
    status: &UpgradeRequestStatus,
    sha: String,
) -> Result<Action, Error> {
    if let Some(pushed) = &status.pushed {
        let mut record = pushed.clone();
        record.reached_as = Some(sha.clone());
        steps::record(
            ctx,
            req,
            "record-reached",
            serde_json::json!({
                "pushed": record,
                "message": format!(
                    "commit {} reached the branch Flux follows (at {sha}); FluxUp takes the \
                     snapshots before Flux rolls it out",
                    pushed.commit
                ),
            }),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let Some(old) = &status.pull_request else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let mut record = old.clone();
    record.state = PullState::Merged.word().into();
    record.merge_commit = Some(sha.clone());
    steps::record(
        ctx,
        req,
        "record-merge",
        serde_json::json!({
            "pullRequest": record,
            "message": format!(
                "pull request #{} was merged as {sha}; FluxUp takes the snapshots before Flux rolls it out",
                old.number
            ),
        }),
    )
    .await?;
    ctx.event(
        req,
        "Upgrade",
        false,
        "PullRequestMerged",
        format!("pull request #{} merged as {sha}", old.number),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Closes the failed request's pull request (recording it merged instead if a person merged it
/// first).
pub async fn close(
    ctx: &Context,
    req: &UpgradeRequest,
    app: &ManagedApp,
    status: &UpgradeRequestStatus,
) -> Result<Action, Error> {
    let Some(old) = &status.pull_request else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let (_, forge) = forge_of(ctx, app).await?;
    let now = forge.close_pull_request(old.number).await?;
    crash::point("close-pull-request");
    let mut record = old.clone();
    record.state = now.state.word().into();
    if now.state == PullState::Merged {
        record.merge_commit = now.merge_commit.clone();
    }
    steps::record(
        ctx,
        req,
        "record-pull-request-closed",
        serde_json::json!({"pullRequest": record}),
    )
    .await?;
    if now.state == PullState::Closed {
        ctx.event(
            req,
            "Upgrade",
            false,
            "PullRequestClosed",
            format!(
                "closed pull request #{}: the upgrade ended without it",
                old.number
            ),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Commits the previous versions back onto the branch Flux follows after a merge that was never
/// rolled out, and records it.
pub async fn revert(
    ctx: &Context,
    req: &UpgradeRequest,
    app: &ManagedApp,
    status: &UpgradeRequestStatus,
) -> Result<Action, Error> {
    let what = match (&status.pull_request, &status.pushed) {
        (Some(pr), _) => format!("pull request #{}", pr.number),
        (None, Some(p)) => format!("commit {} (pushed to {})", p.commit, p.branch),
        (None, None) => return Ok(Action::requeue(Duration::from_secs(1))),
    };
    let record = status.upgrade.clone().unwrap_or_default();
    let back = plan::to_versions(
        app,
        record.previous_version.clone(),
        record.previous_images.clone(),
    );
    let (git, branch) = cluster::for_app(&ctx.client, app).await?;
    // Its own trailer value: the merged commit carries the request's uid already.
    let operation = format!("{}-revert", req.uid().unwrap_or_default());
    let message = BumpMessage {
        app: app.name_any(),
        changes: back
            .edits
            .iter()
            .map(|e| (e.what.clone(), e.value.clone()))
            .collect(),
        previous_version: record.new_version.clone(),
        snapshots: Vec::new(),
        request: format!("{}/{}", req.namespace().unwrap_or_default(), req.name_any()),
        operation: operation.clone(),
    }
    .render();
    let message = message.replacen(
        "Upgrade approved in FluxUp.",
        &format!(
            "The upgrade failed after {what} reached this branch and before Flux rolled it \
             out; FluxUp puts the previous versions back."
        ),
        1,
    );
    let outcome =
        commit_version_bump(&git, &branch, &version_edits(&back), &message, &operation).await;
    let sha = match outcome {
        Ok(Outcome::Committed(c) | Outcome::AlreadyCommitted(c)) => c.sha,
        Ok(Outcome::NothingToChange) => "none needed".into(),
        Err(e) => {
            // Flux stays held: resuming it would roll out a version without its snapshots.
            let why = format!(
                "{what} reached the branch Flux follows, but the previous versions could not be \
                 committed back: {e}; FluxUp keeps Flux suspended and tries again. Revert it in \
                 Git yourself, or resume the Kustomization to roll it out without snapshots"
            );
            ctx.write_status(
                <UpgradeRequest as steps::Request>::MANAGER,
                req,
                serde_json::json!({"message": why}),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    crash::point("revert-merge");
    let recorded = match (&status.pull_request, &status.pushed) {
        (Some(pr), _) => {
            let mut pr = pr.clone();
            pr.revert_commit = Some(sha.clone());
            serde_json::json!({"pullRequest": pr})
        }
        (None, Some(p)) => {
            let mut p = p.clone();
            p.revert_commit = Some(sha.clone());
            serde_json::json!({"pushed": p})
        }
        (None, None) => serde_json::Value::Null,
    };
    steps::record(ctx, req, "record-revert", recorded).await?;
    ctx.event(
        req,
        "Upgrade",
        false,
        "MergeReverted",
        format!(
            "{what} reached the branch Flux follows but was never rolled out: committed the previous versions back ({sha})"
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}
