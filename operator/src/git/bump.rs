//! A version bump as one Git commit: read the files at the branch head, change only the version
//! scalars (yaml_edit), write them back against the blobs read, and on a concurrent push start
//! again from the new head — never force. A commit that already carries the request's uid in its trailer
//! is not made twice, so a restarted operator can call this again safely.

use super::message::OPERATION_TRAILER;
use super::{Commit, FileUpdate, GitBackend, GitError};
use crate::yaml_edit::{Document, EditError, set_scalar};
use std::collections::BTreeMap;

/// How far back to look for this request's commit.
pub const HISTORY_DEPTH: usize = 50;
/// Concurrent pushes tolerated before giving up.
const ATTEMPTS: usize = 5;

/// One version to write: the file, the document in it, the field, and the new value.
#[derive(Debug, Clone)]
pub struct VersionEdit<'a> {
    pub file: &'a str,
    pub document: Document<'a>,
    pub field: &'a str,
    pub value: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The bump was committed now.
    Committed(Commit),
    /// A commit of this request is already on the branch (e.g. before a restart).
    AlreadyCommitted(Commit),
    /// The files already hold these versions: nothing to commit.
    NothingToChange,
}

#[derive(Debug, thiserror::Error)]
pub enum BumpError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{file}: {error}")]
    Edit { file: String, error: EditError },
    #[error(
        "branch {branch} changed {ATTEMPTS} times while FluxUp tried to commit; try again later"
    )]
    KeepsChanging { branch: String },
}

/// The file contents after `edits`, from `files` (path → content).
pub fn apply_edits(
    files: &BTreeMap<String, String>,
    edits: &[VersionEdit],
) -> Result<BTreeMap<String, String>, BumpError> {
    let mut out = files.clone();
    for edit in edits {
        let content = out.get(edit.file).cloned().unwrap_or_default();
        let changed =
            set_scalar(&content, edit.document, edit.field, &edit.value).map_err(|error| {
                BumpError::Edit {
                    file: edit.file.to_string(),
                    error,
                }
            })?;
        out.insert(edit.file.to_string(), changed);
    }
    Ok(out)
}

/// Commits `edits` to `branch` with `message`, which must carry the trailer
/// `FluxUp-Operation: <operation>` (the request's uid).
pub async fn commit_version_bump(
    git: &impl GitBackend,
    branch: &str,
    edits: &[VersionEdit<'_>],
    message: &str,
    operation: &str,
) -> Result<Outcome, BumpError> {
    commit_version_bump_to(git, branch, branch, edits, message, operation).await
}

/// As [`commit_version_bump`], with the files read at `branch` and the commit pushed to
/// `target` (a pull request's branch; the push creates it).
pub async fn commit_version_bump_to(
    git: &impl GitBackend,
    branch: &str,
    target: &str,
    edits: &[VersionEdit<'_>],
    message: &str,
    operation: &str,
) -> Result<Outcome, BumpError> {
    let found = match git
        .find_commit(target, OPERATION_TRAILER, operation, HISTORY_DEPTH)
        .await
    {
        // A pull request's branch that does not exist yet holds no commit of this request.
        Err(GitError::NotFound { .. }) if target != branch => None,
        other => other?,
    };
    if let Some(commit) = found {
        return Ok(Outcome::AlreadyCommitted(commit));
    }
    for _ in 0..ATTEMPTS {
        let mut read = BTreeMap::new();
        let mut blobs = BTreeMap::new();
        for edit in edits {
            if !read.contains_key(edit.file) {
                let file = git.read_file(branch, edit.file).await?;
                blobs.insert(edit.file.to_string(), file.blob_sha);
                read.insert(edit.file.to_string(), file.content);
            }
        }
        let changed = apply_edits(&read, edits)?;
        let updates: Vec<FileUpdate> = changed
            .iter()
            .filter(|(path, content)| read.get(*path) != Some(*content))
            .map(|(path, content)| FileUpdate {
                path: path.clone(),
                content: content.clone(),
                blob_sha: blobs[path].clone(),
            })
            .collect();
        if updates.is_empty() {
            return Ok(Outcome::NothingToChange);
        }
        match git.write_files_to(branch, target, &updates, message).await {
            Ok(commit) => return Ok(Outcome::Committed(commit)),
            Err(GitError::Conflict { .. }) => {
                tracing::info!(%branch, "the branch moved while committing; starting again from its new head");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(BumpError::KeepsChanging {
        branch: branch.into(),
    })
}
