//! Version bumps committed to the sandbox's real Gitea: the diff is exactly the version lines,
//! a second attempt of the same request commits nothing, and a concurrent push is detected by
//! Gitea and the bump is redone on the new head without losing the other change.

mod common;

use anyhow::Context as _;
use common::radarr::{DIGEST, FILE, edits, message, original};
use fluxup_operator::git::bump::{Outcome, commit_version_bump};
use fluxup_operator::git::gitea::Gitea;
use fluxup_operator::git::{Commit, FileAtHead, FileUpdate, GitBackend, GitError};
use fluxup_sandbox::{Gitea as GiteaAdmin, Sandbox};
use std::sync::atomic::{AtomicBool, Ordering};

/// The lines a commit removed and added, from Gitea's own diff.
fn changed_lines(
    admin: &GiteaAdmin,
    repo: &str,
    sha: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (status, diff) = admin.call(
        "GET",
        &format!("/repos/{repo}/git/commits/{sha}.diff"),
        None,
    )?;
    anyhow::ensure!(status == 200, "diff: HTTP {status}");
    let diff = diff.as_str().context("diff text")?.to_string();
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for line in diff.lines() {
        if line.starts_with("---") || line.starts_with("+++") {
            continue;
        }
        if let Some(l) = line.strip_prefix('-') {
            removed.push(l.to_string());
        } else if let Some(l) = line.strip_prefix('+') {
            added.push(l.to_string());
        }
    }
    Ok((removed, added))
}

fn head(admin: &GiteaAdmin, repo: &str) -> anyhow::Result<String> {
    let branch = admin.ok("GET", &format!("/repos/{repo}/branches/main"), None)?;
    Ok(branch["commit"]["id"].as_str().context("head")?.to_string())
}

/// Gitea, with someone else pushing to the same file just before FluxUp's first write.
struct Contended<'a> {
    gitea: Gitea,
    admin: &'a GiteaAdmin,
    repo: &'a str,
    pushed: AtomicBool,
}

impl GitBackend for Contended<'_> {
    async fn read_file(&self, branch: &str, path: &str) -> Result<FileAtHead, GitError> {
        self.gitea.read_file(branch, path).await
    }
    async fn write_files(
        &self,
        branch: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> Result<Commit, GitError> {
        if !self.pushed.swap(true, Ordering::SeqCst) {
            let current = self.gitea.read_file(branch, FILE).await?.content;
            let theirs = current.replace("TZ: Europe/Amsterdam", "TZ: Europe/Berlin");
            self.admin
                .commit_files(
                    self.repo,
                    branch,
                    "someone else's change",
                    &[(FILE, &theirs)],
                )
                .map_err(|e| GitError::Refused(e.to_string()))?;
        }
        self.gitea.write_files(branch, files, message).await
    }
    async fn check_writable(&self, branch: &str) -> Result<(), GitError> {
        self.gitea.check_writable(branch).await
    }
    async fn find_commit(
        &self,
        branch: &str,
        key: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Commit>, GitError> {
        self.gitea.find_commit(branch, key, value, depth).await
    }
}

/// The sandbox's Gitea listens on 127.0.0.1, a range FluxUp refuses unless allowed by host and
/// port (as `FLUXUP_OUTBOUND_ALLOW` allows it for `fluxup serve`).
fn allow_gitea(sb: &Sandbox) -> anyhow::Result<()> {
    fluxup_operator::outbound::allow(sb.env("GITEA_URL")?).map_err(anyhow::Error::msg)
}

#[tokio::test]
async fn a_version_bump_is_one_exact_commit_even_when_retried_or_raced() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("git-bump").await?;
    allow_gitea(&sb)?;
    let admin = sb.gitea()?;
    let repo = admin.create_repo(sb.ns())?;
    let original = original()?;
    admin.commit_files(&repo, "main", "add radarr", &[(FILE, &original)])?;
    let gitea = Gitea::new(sb.env("GITEA_URL")?, &repo, &admin.token)?;

    // The bump: one commit whose diff is exactly the two version lines.
    let request = "media/radarr-4.3.0";
    let outcome = commit_version_bump(
        &gitea,
        "main",
        &edits("4.3.0", "5.27.0"),
        &message(request, "4.3.0"),
        request,
    )
    .await?;
    let Outcome::Committed(commit) = outcome else {
        anyhow::bail!("expected a commit, got {outcome:?}")
    };
    let (removed, added) = changed_lines(&admin, &repo, &commit.sha)?;
    assert_eq!(
        removed,
        [
            "              tag: 5.26.2.10099@sha256:8b4f5ca4ca1ba4f43b1cfae7ca5cb4bb2d3ab0ae36e1d6d8bd1d22e6a5d6c2f1",
            "    tag: 4.2.0",
        ]
    );
    assert_eq!(
        added,
        [
            format!("              tag: 5.27.0@{DIGEST}"),
            "    tag: 4.3.0".to_string()
        ]
    );
    assert_eq!(head(&admin, &repo)?, commit.sha);

    // The same request again (an operator restarted after committing): no second commit.
    let again = commit_version_bump(
        &gitea,
        "main",
        &edits("4.3.0", "5.27.0"),
        &message(request, "4.3.0"),
        request,
    )
    .await?;
    assert_eq!(again, Outcome::AlreadyCommitted(commit.clone()));
    assert_eq!(head(&admin, &repo)?, commit.sha);

    // Versions already there under another request: nothing to commit.
    let same = commit_version_bump(
        &gitea,
        "main",
        &edits("4.3.0", "5.27.0"),
        &message("media/x", "4.3.0"),
        "media/x",
    )
    .await?;
    assert_eq!(same, Outcome::NothingToChange);

    // Someone pushes to the file between FluxUp's read and write: Gitea refuses the stale
    // write, FluxUp redoes the bump on the new head, and their change stays.
    let raced = Contended {
        gitea: gitea.clone(),
        admin: &admin,
        repo: &repo,
        pushed: AtomicBool::new(false),
    };
    let request = "media/radarr-4.4.0";
    let outcome = commit_version_bump(
        &raced,
        "main",
        &edits("4.4.0", "5.28.0"),
        &message(request, "4.4.0"),
        request,
    )
    .await?;
    let Outcome::Committed(commit) = outcome else {
        anyhow::bail!("expected a commit, got {outcome:?}")
    };
    let file = gitea.read_file("main", FILE).await?.content;
    assert!(
        file.contains("TZ: Europe/Berlin"),
        "the other change was lost"
    );
    assert!(file.contains("    tag: 4.4.0\n") && file.contains("tag: 5.28.0@"));
    let (removed, added) = changed_lines(&admin, &repo, &commit.sha)?;
    assert_eq!(
        (removed.len(), added.len()),
        (2, 2),
        "{removed:?} {added:?}"
    );
    Ok(())
}

/// File names with `?`, `#` and `%` reach Gitea as names, not as a query, a fragment or an
/// escape; paths that would leave their place are refused before any request.
#[tokio::test]
async fn paths_are_encoded_and_checked() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("git-paths").await?;
    allow_gitea(&sb)?;
    let admin = sb.gitea()?;
    let repo = admin.create_repo(sb.ns())?;
    let odd = [
        ("apps/web/x?ref=other#frag.yaml", "question: mark\n"),
        ("apps/web/%41.yaml", "percent: sign\n"),
        ("apps/web/A.yaml", "not: this one\n"),
    ];
    admin.commit_files(&repo, "main", "odd names", &odd)?;
    let gitea = Gitea::new(sb.env("GITEA_URL")?, &repo, &admin.token)?;
    for (path, content) in &odd {
        let file = gitea.read_file("main", path).await?;
        assert_eq!(file.content, *content, "{path}");
    }

    for (path, rule) in [
        ("../../etc/passwd", "a `..` segment"),
        ("apps/%2e%2e/web.yaml", "percent-encoded"),
        ("/apps/web/A.yaml", "absolute"),
    ] {
        match gitea.read_file("main", path).await {
            Err(e @ GitError::NotSent(_)) => {
                assert!(e.to_string().contains(rule), "{path}: {e}")
            }
            other => anyhow::bail!("{path}: expected a refusal, got {other:?}"),
        }
    }
    Ok(())
}
