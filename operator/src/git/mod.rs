//! Git, as FluxUp needs it: read a file at a branch's head, write it back only if nobody changed
//! it meanwhile, and find a commit by its trailer. Backends implement [`GitBackend`]: any Git
//! server over HTTPS or SSH through the `git` command ([`cli::GitCli`], what FluxUp commits
//! with), and Gitea's API ([`gitea::Gitea`]). [`bump::commit_version_bump`] is the whole bump.

pub mod bump;
pub mod cli;
pub mod cluster;
pub mod gitea;
pub mod message;

use std::future::Future;

/// A file as it is at a branch's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAtHead {
    pub content: String,
    /// The blob's identity, given back on write so a concurrent change is detected.
    pub blob_sha: String,
}

/// New contents for a file read at `blob_sha`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUpdate {
    pub path: String,
    pub content: String,
    pub blob_sha: String,
}

/// A commit on the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} is not on branch {branch}")]
    NotFound { path: String, branch: String },
    /// Someone changed the file since it was read: read again and redo the change.
    #[error("{path} changed on branch {branch} since it was read")]
    Conflict { path: String, branch: String },
    #[error("the Git server refused: {0}")]
    Refused(String),
    #[error("the Git server could not be reached: {0}")]
    Unreachable(String),
    /// FluxUp did not send the request: a path, branch, repository or address it refuses to
    /// put into a request, with the rule it breaks.
    #[error("not sent to the Git server: {0}")]
    NotSent(String),
}

/// What FluxUp asks of a Git server.
pub trait GitBackend: Sync {
    /// `path` at the head of `branch`.
    fn read_file(
        &self,
        branch: &str,
        path: &str,
    ) -> impl Future<Output = Result<FileAtHead, GitError>> + Send;

    /// Commits new contents of existing files to `branch` in one commit, if each file is still
    /// the blob it was read as; [`GitError::Conflict`] otherwise. Never forces.
    fn write_files(
        &self,
        branch: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> impl Future<Output = Result<Commit, GitError>> + Send;

    /// As [`GitBackend::write_files`], but the commit is made on the head of `base` and pushed
    /// to `target` (a pull request's branch, created by the push). Backends that push only to
    /// the branch they read refuse a different `target`.
    fn write_files_to(
        &self,
        base: &str,
        target: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> impl Future<Output = Result<Commit, GitError>> + Send {
        async move {
            if base == target {
                self.write_files(base, files, message).await
            } else {
                Err(GitError::NotSent(format!(
                    "this Git backend commits only to the branch it read ({base}), not to {target}"
                )))
            }
        }
    }

    /// Whether this token may commit to `branch`: an archived repository, a read-only token or a
    /// protected branch is found before anything is changed, with what to fix.
    fn check_writable(&self, branch: &str) -> impl Future<Output = Result<(), GitError>> + Send;

    /// The newest of the last `depth` commits of `branch` whose trailer `key` is `value`.
    fn find_commit(
        &self,
        branch: &str,
        key: &str,
        value: &str,
        depth: usize,
    ) -> impl Future<Output = Result<Option<Commit>, GitError>> + Send;
}
