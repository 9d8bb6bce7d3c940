//! Gitea (and Forgejo) through its HTTP API: the contents API reads and writes files with the
//! blob SHA as the concurrency check; the commits API lists a branch's history.

use super::message::trailer;
use super::{Commit, FileAtHead, FileUpdate, GitBackend, GitError};
use crate::outbound;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, RequestBuilder, Url};
use serde::Deserialize;
use std::time::Duration;

/// One repository on a Gitea server, with an API token allowed to write to it. The server's
/// address comes from a tenant's GitRepository, so requests go through [`crate::outbound`], and
/// every path, branch and repository name is checked ([`check_path`], [`check_repo`]) and
/// percent-encoded segment by segment before it becomes part of a URL.
#[derive(Clone)]
pub struct Gitea {
    /// e.g. `https://git.example.com/api/v1/repos/fleet/cluster`
    repo_url: Url,
    /// The `Authorization` header's value: `token <token>` or `Basic <user:password>`.
    authorization: String,
    author: (String, String),
}

impl Gitea {
    /// `base_url` is the server (`https://git.example.com`), `repo` is `owner/name`.
    pub fn new(base_url: &str, repo: &str, token: &str) -> Result<Self, GitError> {
        let (owner, name) = check_repo(repo)?;
        let not_http =
            || GitError::NotSent("the Git server's address is not an http(s) URL".into());
        let mut url = Url::parse(base_url).map_err(|_| not_http())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(not_http());
        }
        url.set_query(None);
        url.set_fragment(None);
        let path = format!(
            "{}/api/v1/repos/{}/{}",
            url.path().trim_end_matches('/'),
            encode(owner),
            encode(name)
        );
        url.set_path(&path);
        Ok(Gitea {
            repo_url: url,
            authorization: format!("token {token}"),
            author: ("FluxUp".into(), "fluxup@users.noreply.local".into()),
        })
    }

    /// As [`Gitea::new`], signing in with a user's name and password (or a token as the
    /// password), as Flux's `username`/`password` Secret holds them.
    pub fn with_password(
        base_url: &str,
        repo: &str,
        username: &str,
        password: &str,
    ) -> Result<Self, GitError> {
        let mut gitea = Self::new(base_url, repo, "")?;
        gitea.authorization = format!(
            "Basic {}",
            STANDARD.encode(format!("{username}:{password}"))
        );
        Ok(gitea)
    }

    /// The repository's web page, e.g. `https://git.example.com/fleet/cluster`.
    pub fn web_url(&self) -> String {
        let mut url = self.repo_url.clone();
        url.set_path(&url.path().replacen("/api/v1/repos/", "/", 1));
        url.to_string()
    }

    /// The pull request whose head is `head` (the newest, open or not), if there is one.
    pub async fn pull_request_for(&self, head: &str) -> Result<Option<PullRequest>, GitError> {
        check_path("branch", head)?;
        let mut url = self.url(["pulls"]);
        url.query_pairs_mut()
            .append_pair("state", "all")
            .append_pair("sort", "recentupdate")
            .append_pair("limit", "50");
        let (status, body) = self.send(Method::GET, &url, |r| r).await?;
        if status != 200 {
            return Err(refused(status, &body));
        }
        let pulls: Vec<ApiPullRequest> =
            serde_json::from_str(&body).map_err(|e| GitError::Refused(e.to_string()))?;
        Ok(pulls
            .into_iter()
            .find(|p| p.head.r#ref == head)
            .map(PullRequest::from))
    }

    /// Opens a pull request of `head` into `base`, or finds the one already open for `head`
    /// (opened before a restart): one pull request per upgrade, however often this is called.
    pub async fn open_pull_request(
        &self,
        base: &str,
        head: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, GitError> {
        check_path("branch", base)?;
        if let Some(found) = self.pull_request_for(head).await? {
            return Ok(found);
        }
        let url = self.url(["pulls"]);
        let request = serde_json::json!({"base": base, "head": head, "title": title, "body": body});
        let (status, text) = self.send(Method::POST, &url, |r| r.json(&request)).await?;
        match status {
            201 => serde_json::from_str::<ApiPullRequest>(&text)
                .map(PullRequest::from)
                .map_err(|e| GitError::Refused(e.to_string())),
            // Opened meanwhile by another call.
            409 | 422 => self
                .pull_request_for(head)
                .await?
                .ok_or_else(|| refused(status, &text)),
            _ => Err(refused(status, &text)),
        }
    }

    /// Pull request `number` as it is now.
    pub async fn pull_request(&self, number: i64) -> Result<PullRequest, GitError> {
        let n = number.to_string();
        let (status, body) = self
            .send(Method::GET, &self.url(["pulls", &n]), |r| r)
            .await?;
        if status != 200 {
            return Err(refused(status, &body));
        }
        serde_json::from_str::<ApiPullRequest>(&body)
            .map(PullRequest::from)
            .map_err(|e| GitError::Refused(e.to_string()))
    }

    /// Closes pull request `number` unmerged (an upgrade that ended without it); a merged or
    /// closed one is left as it is.
    pub async fn close_pull_request(&self, number: i64) -> Result<PullRequest, GitError> {
        let now = self.pull_request(number).await?;
        if now.state != PullState::Open {
            return Ok(now);
        }
        let n = number.to_string();
        let request = serde_json::json!({"state": "closed"});
        let (status, body) = self
            .send(Method::PATCH, &self.url(["pulls", &n]), |r| {
                r.json(&request)
            })
            .await?;
        if status != 201 && status != 200 {
            return Err(refused(status, &body));
        }
        serde_json::from_str::<ApiPullRequest>(&body)
            .map(PullRequest::from)
            .map_err(|e| GitError::Refused(e.to_string()))
    }

    /// The repository's API URL with `segments` after it, each percent-encoded.
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.repo_url.clone();
        let mut path = url.path().to_string();
        for segment in segments {
            path.push('/');
            path.push_str(&encode(segment));
        }
        url.set_path(&path);
        url
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        with: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<(u16, String), GitError> {
        let guard = outbound::guard();
        let request = guard.request(method, url).map_err(outbound_error)?;
        let request = with(request)
            .timeout(Duration::from_secs(30))
            .header("Authorization", &self.authorization);
        let response = guard.send(request).await.map_err(outbound_error)?;
        let status = response.status().as_u16();
        let body = outbound::read_body(response, outbound::LARGE)
            .await
            .map_err(outbound_error)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A failure of the guarded client: a server that cannot be reached may come back (retried), a
/// rule FluxUp keeps does not change (not retried).
fn outbound_error(e: outbound::Error) -> GitError {
    match e {
        outbound::Error::Timeout | outbound::Error::Unreachable => {
            GitError::Unreachable(e.to_string())
        }
        outbound::Error::BadUrl | outbound::Error::Refused => {
            GitError::NotSent(format!("the Git server's address: {e}"))
        }
        _ => GitError::Refused(e.to_string()),
    }
}

impl std::fmt::Debug for Gitea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without the token.
        f.debug_struct("Gitea")
            .field("repo_url", &self.repo_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Characters left as they are in a path segment (RFC 3986's unreserved ones); every other byte
/// is percent-encoded, so nothing in a segment can end it or start a query or fragment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded, for checking what a server that decodes twice would see.
fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The segments of a file path or branch (`what` names which) that is safe to put into a URL:
/// relative, without empty, `.` or `..` segments, backslashes or control characters, and without
/// percent-encoded ones either. `?` and `#` are allowed in names: they are percent-encoded.
pub fn check_path<'a>(what: &str, path: &'a str) -> Result<Vec<&'a str>, GitError> {
    let refuse = |rule: &str| GitError::NotSent(format!("{what} {path:?} is refused: {rule}"));
    if path.is_empty() {
        return Err(refuse("it is empty"));
    }
    if path.starts_with('/') {
        return Err(refuse(
            "it is absolute; name it from the repository's root, without a leading /",
        ));
    }
    if path.contains('\\') {
        return Err(refuse("it has a backslash"));
    }
    if path.chars().any(char::is_control) {
        return Err(refuse("it has a control character"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    for segment in &segments {
        match *segment {
            "" => return Err(refuse("it has an empty segment (// or a trailing /)")),
            "." => return Err(refuse("it has a `.` segment")),
            ".." => return Err(refuse("it has a `..` segment")),
            _ => {}
        }
        let decoded = decode(segment);
        if matches!(decoded.as_str(), "." | "..")
            || decoded.contains(['/', '\\'])
            || decoded.chars().any(char::is_control)
        {
            return Err(refuse(
                "it has a percent-encoded `.`, `..`, `/`, backslash or control character",
            ));
        }
    }
    Ok(segments)
}

/// `owner/name`, each made of letters, digits, `-`, `_` and `.` (what Gitea allows), neither
/// `.` nor `..`.
pub fn check_repo(repo: &str) -> Result<(&str, &str), GitError> {
    let refuse = |rule: &str| GitError::NotSent(format!("repository {repo:?} is refused: {rule}"));
    let (owner, name) = repo
        .split_once('/')
        .filter(|(_, name)| !name.contains('/'))
        .ok_or_else(|| refuse("it is not owner/name"))?;
    for part in [owner, name] {
        if part.is_empty() || matches!(part, "." | "..") {
            return Err(refuse("its owner or name is empty, `.` or `..`"));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(refuse(
                "its owner or name has characters other than letters, digits, `-`, `_` and `.`",
            ));
        }
    }
    Ok((owner, name))
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

/// A pull request, as FluxUp follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: i64,
    /// Its web page.
    pub url: String,
    pub state: PullState,
    /// The commit the merge made on the base branch.
    pub merge_commit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Open,
    Merged,
    /// Closed without being merged.
    Closed,
}

impl PullState {
    pub fn word(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Merged => "merged",
            PullState::Closed => "closed",
        }
    }
}

#[derive(Deserialize)]
struct ApiPullRequest {
    number: i64,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    merge_commit_sha: Option<String>,
    head: ApiBranchRef,
}

#[derive(Deserialize)]
struct ApiBranchRef {
    #[serde(default)]
    r#ref: String,
}

impl From<ApiPullRequest> for PullRequest {
    fn from(p: ApiPullRequest) -> Self {
        PullRequest {
            number: p.number,
            url: p.html_url,
            state: if p.merged {
                PullState::Merged
            } else if p.state == "open" {
                PullState::Open
            } else {
                PullState::Closed
            },
            merge_commit: p.merge_commit_sha.filter(|s| !s.is_empty()),
        }
    }
}

impl GitBackend for Gitea {
    async fn check_writable(&self, branch: &str) -> Result<(), GitError> {
        let branch_segments = check_path("branch", branch)?;
        let (status, body) = self.send(Method::GET, &self.repo_url, |r| r).await?;
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
        let url = self.url(std::iter::once("branches").chain(branch_segments));
        let (status, body) = self.send(Method::GET, &url, |r| r).await?;
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
        check_path("branch", branch)?;
        let url = self.url(std::iter::once("contents").chain(check_path("path", path)?));
        let (status, body) = self
            .send(Method::GET, &url, |r| r.query(&[("ref", branch)]))
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
        check_path("branch", branch)?;
        for f in files {
            check_path("path", &f.path)?;
        }
        let url = self.url(["contents"]);
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
        let (status, answer) = self.send(Method::POST, &url, |r| r.json(&body)).await?;
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
        check_path("branch", branch)?;
        let url = self.url(["commits"]);
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
            let (status, body) = self.send(Method::GET, &url, |r| r.query(&query)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gitea() -> Gitea {
        Gitea::new("https://git.example.com/", "fleet/cluster", "t").unwrap()
    }

    fn refusal(result: Result<impl std::fmt::Debug, GitError>) -> String {
        match result {
            Err(e @ GitError::NotSent(_)) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn paths_that_could_leave_their_place_are_refused_by_rule() {
        for (path, rule) in [
            ("", "it is empty"),
            ("/etc/passwd", "it is absolute"),
            ("/apps/web.yaml", "it is absolute"),
            ("../other/repo.yaml", "a `..` segment"),
            ("apps/../../admin", "a `..` segment"),
            ("apps/./web.yaml", "a `.` segment"),
            ("apps//web.yaml", "an empty segment"),
            ("apps/", "an empty segment"),
            ("apps\\..\\web.yaml", "a backslash"),
            ("apps/web.yaml\n", "a control character"),
            ("apps/\u{0}web.yaml", "a control character"),
            ("%2e%2e/admin", "percent-encoded"),
            ("apps/%2E%2e", "percent-encoded"),
            ("apps/%2e", "percent-encoded"),
            ("apps%2f..%2fadmin", "percent-encoded"),
            ("apps%5cweb", "percent-encoded"),
            ("apps/%0aweb", "percent-encoded"),
        ] {
            let error = refusal(check_path("path", path));
            assert!(error.contains(rule), "{path:?}: {error}");
            assert!(
                error.starts_with("not sent to the Git server: path "),
                "{error}"
            );
        }
    }

    #[test]
    fn every_segment_is_percent_encoded() {
        let g = gitea();
        let url = |path| {
            g.url(std::iter::once("contents").chain(check_path("path", path).unwrap()))
                .to_string()
        };
        assert_eq!(
            url("apps/web/helmrelease.yaml"),
            "https://git.example.com/api/v1/repos/fleet/cluster/contents/apps/web/helmrelease.yaml"
        );
        // `?` and `#` stay in the path: no query, no fragment.
        let tricky = g.url(
            std::iter::once("contents")
                .chain(check_path("path", "a?ref=evil#x/b c%41.yaml").unwrap()),
        );
        assert_eq!(
            tricky.as_str(),
            "https://git.example.com/api/v1/repos/fleet/cluster/contents/a%3Fref%3Devil%23x/b%20c%2541.yaml"
        );
        assert_eq!(tricky.query(), None);
        assert_eq!(tricky.fragment(), None);
        assert_eq!(
            url("ünïcode/ä.yaml"),
            "https://git.example.com/api/v1/repos/fleet/cluster/contents/%C3%BCn%C3%AFcode/%C3%A4.yaml"
        );
        // A branch with slashes keeps them as separators; anything else in it is encoded.
        let branch =
            g.url(std::iter::once("branches").chain(check_path("branch", "feature/x+y").unwrap()));
        assert_eq!(
            branch.as_str(),
            "https://git.example.com/api/v1/repos/fleet/cluster/branches/feature/x%2By"
        );
    }

    #[test]
    fn repositories_are_owner_slash_name() {
        for (repo, rule) in [
            ("fleet", "not owner/name"),
            ("fleet/cluster/extra", "not owner/name"),
            ("../cluster", "`.` or `..`"),
            ("fleet/..", "`.` or `..`"),
            ("/cluster", "empty"),
            ("fleet/cluster?x", "characters other than"),
            ("fleet/cluster#x", "characters other than"),
            ("fleet/%2e%2e", "characters other than"),
            ("fl eet/cluster", "characters other than"),
        ] {
            let error = refusal(Gitea::new("https://git.example.com", repo, "t"));
            assert!(error.contains(rule), "{repo:?}: {error}");
        }
        assert_eq!(
            check_repo("my-org/app.config_2").unwrap(),
            ("my-org", "app.config_2")
        );
        // The server's own path prefix is kept; its query and fragment are not.
        let g = Gitea::new("https://example.com/gitea/?x=1#y", "fleet/cluster", "t").unwrap();
        assert_eq!(
            g.repo_url.as_str(),
            "https://example.com/gitea/api/v1/repos/fleet/cluster"
        );
        for bad in ["ssh://git@example.com", "not a url", "file:///srv/git"] {
            let error = refusal(Gitea::new(bad, "fleet/cluster", "t"));
            assert!(error.contains("not an http(s) URL"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn a_refused_path_sends_nothing() {
        // An address nothing listens on: a request would be an Unreachable error, not a refusal.
        let g = Gitea::new("http://192.0.2.1:9", "fleet/cluster", "t").unwrap();
        let error = refusal(g.read_file("main", "../../etc/passwd").await);
        assert!(error.contains("a `..` segment"), "{error}");
        let error = refusal(g.read_file("../main", "apps/web.yaml").await);
        assert!(
            error.starts_with("not sent to the Git server: branch"),
            "{error}"
        );
        let files = [FileUpdate {
            path: "/abs.yaml".into(),
            content: String::new(),
            blob_sha: String::new(),
        }];
        let error = refusal(g.write_files("main", &files, "m").await);
        assert!(error.contains("it is absolute"), "{error}");
        let error = refusal(g.check_writable("a//b").await);
        assert!(error.contains("empty segment"), "{error}");
    }

    #[tokio::test]
    async fn a_git_server_in_a_refused_range_is_not_asked() {
        let g = Gitea::new("http://169.254.169.254", "fleet/cluster", "t").unwrap();
        let error = refusal(g.read_file("main", "apps/web.yaml").await);
        assert_eq!(
            error,
            "not sent to the Git server: the Git server's address: refused: address in a range FluxUp does not fetch from"
        );
    }
}
