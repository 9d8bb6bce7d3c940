//! Gitea (and Forgejo) through its HTTP API: the contents API reads and writes files with the
//! blob SHA as the concurrency check; the commits API lists a branch's history.

use super::message::trailer;
use super::{Commit, FileAtHead, FileUpdate, GitBackend, GitError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::time::Duration;

/// One repository on a Gitea server, with an API token allowed to write to it.
#[derive(Clone)]
pub struct Gitea {
    client: reqwest::Client,
    /// e.g. `https://git.example.com/api/v1/repos/fleet/cluster`
    repo_url: String,
    token: String,
    author: (String, String),
}

impl Gitea {
    /// `base_url` is the server (`https://git.example.com`), `repo` is `owner/name`.
    pub fn new(base_url: &str, repo: &str, token: &str) -> Result<Self, GitError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("fluxup/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitError::Unreachable(e.to_string()))?;
        Ok(Gitea {
            client,
            repo_url: format!("{}/api/v1/repos/{repo}", base_url.trim_end_matches('/')),
            token: token.to_string(),
            author: ("FluxUp".into(), "fluxup@users.noreply.local".into()),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), GitError> {
        let response = request
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .map_err(|e| GitError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| GitError::Unreachable(e.to_string()))?;
        Ok((status, body))
    }
}

#[derive(Deserialize)]
struct Contents {
    content: Option<String>,
    sha: String,
}

#[derive(Deserialize)]
struct WriteAnswer {
    commit: WrittenCommit,
}

#[derive(Deserialize)]
struct WrittenCommit {
    sha: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ListedCommit {
    sha: String,
    commit: ListedCommitDetail,
}

#[derive(Deserialize)]
struct ListedCommitDetail {
    message: String,
}

fn refused(status: u16, body: &str) -> GitError {
    GitError::Refused(format!(
        "HTTP {status}: {}",
        body.trim().chars().take(300).collect::<String>()
    ))
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    permissions: Option<Permissions>,
}

#[derive(Deserialize)]
struct Permissions {
    #[serde(default)]
    push: bool,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(default)]
    user_can_push: bool,
}

impl GitBackend for Gitea {
    async fn check_writable(&self, branch: &str) -> Result<(), GitError> {
        let (status, body) = self.send(self.client.get(&self.repo_url)).await?;
        if status != 200 {
            return Err(refused(status, &body));
        }
        let repo: Repository =
            serde_json::from_str(&body).map_err(|e| GitError::Refused(e.to_string()))?;
        if repo.archived {
            return Err(GitError::Refused(format!(
                "repository {} is archived and takes no commits; unarchive it in Gitea",
                repo.full_name
            )));
        }
        if !repo.permissions.is_some_and(|p| p.push) {
            return Err(GitError::Refused(format!(
                "the token may not push to {}; give its user write access",
                repo.full_name
            )));
        }
        let url = format!("{}/branches/{branch}", self.repo_url);
        let (status, body) = self.send(self.client.get(&url)).await?;
        if status == 404 {
            return Err(GitError::Refused(format!(
                "branch {branch} does not exist in {}",
                repo.full_name
            )));
        }
        if status != 200 {
            return Err(refused(status, &body));
        }
        let found: Branch =
            serde_json::from_str(&body).map_err(|e| GitError::Refused(e.to_string()))?;
        if !found.user_can_push {
            return Err(GitError::Refused(format!(
                "branch {branch} of {} is protected against the token's user",
                repo.full_name
            )));
        }
        Ok(())
    }

    async fn read_file(&self, branch: &str, path: &str) -> Result<FileAtHead, GitError> {
        let url = format!("{}/contents/{path}", self.repo_url);
        let (status, body) = self
            .send(self.client.get(&url).query(&[("ref", branch)]))
            .await?;
        match status {
            200 => {}
            404 => {
                return Err(GitError::NotFound {
                    path: path.into(),
                    branch: branch.into(),
                });
            }
            _ => return Err(refused(status, &body)),
        }
        let contents: Contents =
            serde_json::from_str(&body).map_err(|e| GitError::Refused(e.to_string()))?;
        let encoded: String = contents
            .content
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| GitError::Refused(format!("{path}: {e}")))?;
        let content = String::from_utf8(bytes)
            .map_err(|_| GitError::Refused(format!("{path} is not UTF-8 text")))?;
        Ok(FileAtHead {
            content,
            blob_sha: contents.sha,
        })
    }

    async fn write_files(
        &self,
        branch: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> Result<Commit, GitError> {
        // The "change files" API: several files, one commit, each checked against its blob SHA.
        let url = format!("{}/contents", self.repo_url);
        let body = serde_json::json!({
            "branch": branch,
            "message": message,
            "author": {"name": self.author.0, "email": self.author.1},
            "committer": {"name": self.author.0, "email": self.author.1},
            "files": files.iter().map(|f| serde_json::json!({
                "operation": "update",
                "path": f.path,
                "content": STANDARD.encode(&f.content),
                "sha": f.blob_sha,
            })).collect::<Vec<_>>(),
        });
        let (status, answer) = self.send(self.client.post(&url).json(&body)).await?;
        let conflict = || GitError::Conflict {
            path: files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            branch: branch.into(),
        };
        match status {
            200 | 201 => {
                let written: WriteAnswer =
                    serde_json::from_str(&answer).map_err(|e| GitError::Refused(e.to_string()))?;
                Ok(Commit {
                    sha: written.commit.sha,
                    message: if written.commit.message.is_empty() {
                        message.to_string()
                    } else {
                        written.commit.message
                    },
                })
            }
            // A stale blob SHA: the file changed since it was read (409; some versions say 422
            // "sha does not match").
            409 => Err(conflict()),
            422 if answer.to_lowercase().contains("sha") => Err(conflict()),
            _ => Err(refused(status, &answer)),
        }
    }

    async fn find_commit(
        &self,
        branch: &str,
        key: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Commit>, GitError> {
        let url = format!("{}/commits", self.repo_url);
        let limit = depth.clamp(1, 50).to_string();
        let mut page = 1;
        let mut seen = 0;
        while seen < depth {
            let query = [
                ("sha", branch),
                ("limit", limit.as_str()),
                ("page", &page.to_string()),
                ("stat", "false"),
                ("files", "false"),
                ("verification", "false"),
            ];
            let (status, body) = self.send(self.client.get(&url).query(&query)).await?;
            if status != 200 {
                return Err(refused(status, &body));
            }
            let commits: Vec<ListedCommit> =
                serde_json::from_str(&body).map_err(|e| GitError::Refused(e.to_string()))?;
            if commits.is_empty() {
                break;
            }
            seen += commits.len();
            if let Some(c) = commits
                .into_iter()
                .find(|c| trailer(&c.commit.message, key) == Some(value))
            {
                return Ok(Some(Commit {
                    sha: c.sha,
                    message: c.commit.message,
                }));
            }
            page += 1;
        }
        Ok(None)
    }
}
