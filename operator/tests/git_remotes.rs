//! The generic Git backend (`git::cli::GitCli`, the `git` command) against real servers of the
//! full sandbox: Gitea over HTTP (a token, as basic auth and as a bearer token), Gitea's built-in
//! SSH server with a deploy key, and a plain OpenSSH server with bare repositories — proof that
//! nothing in it is Gitea's. On each: a version bump is one exact commit, a retry commits nothing,
//! and a person's commit pushed between FluxUp's read and its push is kept with FluxUp's edit on
//! top. A wrong host key is refused before anything is sent; a read-only deploy key is found out
//! before a commit; commits signed with SSH and OpenPGP keys pass `git verify-commit`. Prints the
//! time of a commit on a fleet repository of 5,000 files, cold and warm.

use anyhow::{Context as _, bail};
mod common;

use common::radarr::{DIGEST, FILE, edits, message, original};
use fluxup_operator::git::bump::{Outcome, commit_version_bump};
use fluxup_operator::git::cli::{Credentials, GitCli, Signing};
use fluxup_operator::git::{Commit, FileAtHead, FileUpdate, GitBackend, GitError};
use fluxup_sandbox::{Sandbox, git_ssh_command, ssh_keypair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A person at a terminal with their own clone: how the test seeds a repository, pushes a change
/// of its own, and checks what FluxUp pushed.
struct Person {
    url: String,
    /// Environment for their `git` (GIT_SSH_COMMAND, or an HTTP header through GIT_CONFIG_*).
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Person {
    fn new(url: &str, env: Vec<(String, String)>) -> anyhow::Result<Person> {
        let person = Person {
            url: url.to_string(),
            env,
            dir: tempfile::tempdir()?,
        };
        Ok(person)
    }

    fn http(url: &str, token: &str) -> anyhow::Result<Person> {
        Person::new(
            url,
            vec![
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
                (
                    "GIT_CONFIG_VALUE_0".into(),
                    format!("Authorization: token {token}"),
                ),
            ],
        )
    }

    fn ssh(url: &str, key: &Path, known_hosts: &str) -> anyhow::Result<Person> {
        let file = tempfile::NamedTempFile::new()?.into_temp_path().keep()?;
        std::fs::write(&file, known_hosts)?;
        Person::new(
            url,
            vec![("GIT_SSH_COMMAND".into(), git_ssh_command(key, &file))],
        )
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let work = self.work();
        let dir = if work.exists() {
            work
        } else {
            self.dir.path().to_path_buf()
        };
        let out = Command::new("git")
            .current_dir(&dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("GIT_AUTHOR_NAME", "A Person")
            .env("GIT_AUTHOR_EMAIL", "person@example.com")
            .env("GIT_COMMITTER_NAME", "A Person")
            .env("GIT_COMMITTER_EMAIL", "person@example.com")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "git {args:?} in {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Replaces the branch `main` with one commit holding `files`.
    fn seed(&self, files: &[(&str, String)]) -> anyhow::Result<()> {
        let work = self.work();
        std::fs::create_dir_all(&work)?;
        self.git(&["init", "-q", "-b", "main"])?;
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().context("parent")?)?;
            std::fs::write(p, content)?;
        }
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "-m", "the fleet"])?;
        self.git(&["push", "-q", "--force", &self.url, "HEAD:refs/heads/main"])?;
        Ok(())
    }

    /// Fetches `main` and checks it out.
    fn pull(&self) -> anyhow::Result<()> {
        self.git(&[
            "fetch",
            "-q",
            &self.url,
            "+refs/heads/main:refs/remotes/origin/main",
        ])?;
        self.git(&["checkout", "-q", "-B", "main", "origin/main"])?;
        Ok(())
    }

    /// Their own change to `FILE`, pushed on top of `main`; returns their commit.
    fn push_change(&self, from: &str, to: &str) -> anyhow::Result<String> {
        self.pull()?;
        let path = self.work().join(FILE);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{from} not in {FILE}");
        std::fs::write(&path, text.replace(from, to))?;
        self.git(&["commit", "-q", "-am", "someone else's change"])?;
        self.git(&["push", "-q", &self.url, "HEAD:refs/heads/main"])?;
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_string())
    }

    /// The lines commit `sha` removed and added.
    fn changed_lines(&self, sha: &str) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        self.pull()?;
        let diff = self.git(&["show", "--format=", "-U0", sha])?;
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
}

/// The backend, with a person pushing to the same file just before FluxUp's first write.
struct Contended<'a> {
    git: &'a GitCli,
    person: &'a Person,
    pushed: AtomicBool,
    theirs: std::sync::Mutex<Option<String>>,
}

impl GitBackend for Contended<'_> {
    async fn read_file(&self, branch: &str, path: &str) -> Result<FileAtHead, GitError> {
        self.git.read_file(branch, path).await
    }
    async fn write_files(
        &self,
        branch: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> Result<Commit, GitError> {
        if !self.pushed.swap(true, Ordering::SeqCst) {
            let sha = self
                .person
                .push_change("TZ: Europe/Amsterdam", "TZ: Europe/Berlin")
                .map_err(|e| GitError::Refused(e.to_string()))?;
            *self.theirs.lock().unwrap() = Some(sha);
        }
        self.git.write_files(branch, files, message).await
    }
    async fn check_writable(&self, branch: &str) -> Result<(), GitError> {
        self.git.check_writable(branch).await
    }
    async fn find_commit(
        &self,
        branch: &str,
        key: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Commit>, GitError> {
        self.git.find_commit(branch, key, value, depth).await
    }
}

/// Everything a version bump needs from one server, checked the way a person would.
async fn bumps_on(label: &str, git: &GitCli, person: &Person) -> anyhow::Result<()> {
    person.seed(&[(FILE, original()?), ("README.md", "fleet\n".into())])?;
    git.check_writable("main")
        .await
        .with_context(|| format!("{label}: check_writable"))?;
    let read = git.read_file("main", FILE).await?;
    assert_eq!(read.content, original()?, "{label}: read_file");
    match git.read_file("main", "apps/none.yaml").await {
        Err(GitError::NotFound { .. }) => {}
        other => bail!("{label}: a missing file gave {other:?}"),
    }

    let started = Instant::now();
    let request = format!("media/radarr-4.3.0-{label}");
    let outcome = commit_version_bump(
        git,
        "main",
        &edits("4.3.0", "5.27.0"),
        &message(&request, "4.3.0"),
        &request,
    )
    .await?;
    let Outcome::Committed(commit) = outcome else {
        bail!("{label}: expected a commit, got {outcome:?}")
    };
    println!(
        "{label}: bump committed and pushed in {} ms",
        started.elapsed().as_millis()
    );
    let (removed, added) = person.changed_lines(&commit.sha)?;
    assert_eq!(
        removed,
        [
            "              tag: 5.26.2.10099@sha256:8b4f5ca4ca1ba4f43b1cfae7ca5cb4bb2d3ab0ae36e1d6d8bd1d22e6a5d6c2f1",
            "    tag: 4.2.0",
        ],
        "{label}"
    );
    assert_eq!(
        added,
        [
            format!("              tag: 5.27.0@{DIGEST}"),
            "    tag: 4.3.0".to_string()
        ],
        "{label}"
    );
    assert_eq!(
        person.git(&["rev-parse", "origin/main"])?.trim(),
        commit.sha
    );
    let subject = person.git(&["log", "-1", "--format=%an <%ae>|%B", &commit.sha])?;
    assert!(
        subject.starts_with("FluxUp <fluxup@users.noreply.local>|")
            && subject.contains(&format!("FluxUp-Operation: {request}")),
        "{label}: {subject}"
    );

    // The same request again (a restarted operator): no second commit.
    let again = commit_version_bump(
        git,
        "main",
        &edits("4.3.0", "5.27.0"),
        &message(&request, "4.3.0"),
        &request,
    )
    .await?;
    assert_eq!(again, Outcome::AlreadyCommitted(commit.clone()), "{label}");

    // A person pushes between FluxUp's read and its push: the push is refused as not a
    // fast-forward, FluxUp redoes the edit on their commit, and their change stays.
    let raced = Contended {
        git,
        person,
        pushed: AtomicBool::new(false),
        theirs: Default::default(),
    };
    let request = format!("media/radarr-4.4.0-{label}");
    let outcome = commit_version_bump(
        &raced,
        "main",
        &edits("4.4.0", "5.28.0"),
        &message(&request, "4.4.0"),
        &request,
    )
    .await?;
    let Outcome::Committed(ours) = outcome else {
        bail!("{label}: expected a commit, got {outcome:?}")
    };
    let theirs = raced
        .theirs
        .lock()
        .unwrap()
        .clone()
        .context("their commit")?;
    person.pull()?;
    assert_eq!(
        person
            .git(&["rev-parse", &format!("{}^", ours.sha)])?
            .trim(),
        theirs,
        "{label}: FluxUp's commit is not on top of the person's"
    );
    let file = std::fs::read_to_string(person.work().join(FILE))?;
    assert!(
        file.contains("TZ: Europe/Berlin"),
        "{label}: the other change was lost"
    );
    assert!(file.contains("    tag: 4.4.0\n") && file.contains("tag: 5.28.0@"));
    Ok(())
}

/// The backend for `url` over SSH with the private key in file `key`.
fn over_ssh(url: &str, key: &Path, known_hosts: &str) -> anyhow::Result<GitCli> {
    Ok(GitCli::new(
        url,
        Credentials::Ssh {
            identity: std::fs::read_to_string(key)?,
            known_hosts: known_hosts.to_string(),
            passphrase: None,
        },
    )?)
}

/// The backend for Gitea's `url` with `password` as basic auth, as a Flux Secret gives it.
fn basic(url: &str, username: &str, password: &str) -> anyhow::Result<GitCli> {
    Ok(GitCli::new(
        url,
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        },
    )?)
}

fn allow(sb: &Sandbox) -> anyhow::Result<()> {
    let gitea = sb.gitea()?;
    let plain = sb.plain_git()?;
    fluxup_operator::outbound::allow(&format!(
        "{},127.0.0.1:{},127.0.0.1:{}",
        gitea.url, gitea.ssh_port, plain.port
    ))
    .map_err(anyhow::Error::msg)
}

#[tokio::test]
async fn any_git_server_over_https_or_ssh() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("git-remotes").await?;
    allow(&sb)?;
    // A cache of this run's own, so runs and binaries do not share one.
    let cache = tempfile::tempdir()?;
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("FLUXUP_GIT_CACHE", cache.path()) };
    let admin = sb.gitea()?;
    let keys = tempfile::tempdir()?;

    // 1. Gitea over HTTP: its token as basic auth (Flux's username/password) and as a bearer.
    let repo = admin.create_repo(&format!("{}-http", sb.ns()))?;
    let url = admin.clone_url(&repo);
    let person = Person::http(&url, &admin.token)?;
    bumps_on(
        "gitea-http",
        &basic(&url, &admin.user, &admin.token)?,
        &person,
    )
    .await?;
    let bearer = GitCli::new(&url, Credentials::Bearer(admin.token.clone()))?;
    bearer.check_writable("main").await?;
    let refused = basic(&url, &admin.user, "not-the-token")?
        .check_writable("main")
        .await
        .unwrap_err();
    assert!(
        !refused.to_string().contains("not-the-token"),
        "the secret appears in {refused}"
    );

    // 2. Gitea's SSH server with a deploy key, and its host key verified.
    let repo = admin.create_repo(&format!("{}-ssh", sb.ns()))?;
    let (key, public) = ssh_keypair(keys.path(), "deploy")?;
    admin.add_deploy_key(&repo, "fluxup", &public, true)?;
    let known_hosts = admin.ssh_known_hosts()?;
    let url = admin.ssh_url(&repo);
    let person = Person::ssh(&url, &key, &known_hosts)?;
    let ssh = |known_hosts: &str| over_ssh(&url, &key, known_hosts);
    bumps_on("gitea-ssh", &ssh(&known_hosts)?, &person).await?;

    // A host key that is not the server's: refused, and nothing is pushed.
    let plain = sb.plain_git()?;
    let impostor = plain
        .known_hosts()?
        .replace(&format!(":{}", plain.port), &format!(":{}", admin.ssh_port));
    let head = person.git(&["rev-parse", "origin/main"])?;
    let e = ssh(&impostor)?.check_writable("main").await.unwrap_err();
    assert!(e.to_string().contains("host key"), "{e}");
    let e = commit_version_bump(
        &ssh(&impostor)?,
        "main",
        &edits("9.9.9", "9.9.9"),
        &message("x/y", "9.9.9"),
        "x/y",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("host key"), "{e}");
    person.pull()?;
    assert_eq!(person.git(&["rev-parse", "origin/main"])?, head);

    // A read-only deploy key is found out by the writability check, before any commit.
    let (ro_key, ro_public) = ssh_keypair(keys.path(), "read-only")?;
    admin.add_deploy_key(&repo, "read-only", &ro_public, false)?;
    let read_only = over_ssh(&url, &ro_key, &known_hosts)?;
    read_only.read_file("main", FILE).await?;
    let e = read_only.check_writable("main").await.unwrap_err();
    assert!(e.to_string().contains("may not push"), "{e}");

    // 3. A server that is not Gitea: OpenSSH and a bare repository.
    let url = plain.create_repo(&format!("{}-plain", sb.ns()))?;
    let (key, public) = ssh_keypair(keys.path(), "plain")?;
    plain.authorize(&public)?;
    let known_hosts = plain.known_hosts()?;
    let person = Person::ssh(&url, &key, &known_hosts)?;
    let git = over_ssh(&url, &key, &known_hosts)?;
    bumps_on("plain-ssh", &git, &person).await?;

    // 4. Signed commits: an SSH signature and an OpenPGP one, both checked by git itself.
    let (signer, signer_public) = ssh_keypair(keys.path(), "signer")?;
    let signed = git
        .clone()
        .with_signing(Some(Signing::Ssh {
            private_key: std::fs::read_to_string(&signer)?,
        }))
        .with_author("FluxUp Bot", "bot@example.com");
    let commit = bump(&signed, "5.0.0").await?;
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("bot@example.com {signer_public}\n"))?;
    person.pull()?;
    let verified = Command::new("git")
        .current_dir(person.work())
        .args(["-c", "gpg.format=ssh"])
        .arg("-c")
        .arg(format!("gpg.ssh.allowedSignersFile={}", allowed.display()))
        .args(["verify-commit", "--raw", &commit.sha])
        .output()?;
    assert!(
        verified.status.success(),
        "ssh signature: {}",
        String::from_utf8_lossy(&verified.stderr)
    );

    let gnupg = tempfile::tempdir()?;
    let armored = openpgp_key(gnupg.path(), "bot@example.com", Some("sesame"))?;
    let signed = signed.with_signing(Some(Signing::OpenPgp {
        armored,
        passphrase: Some("sesame".into()),
    }));
    let commit = bump(&signed, "5.1.0").await?;
    person.pull()?;
    let verified = Command::new("git")
        .current_dir(person.work())
        .env("GNUPGHOME", gnupg.path())
        .args(["verify-commit", "--raw", &commit.sha])
        .output()?;
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && said.contains("GOODSIG"),
        "openpgp signature: {said}"
    );
    // An unsigned commit does not pass the same check: the check can fail.
    let unsigned = bump(&git, "5.2.0").await?;
    person.pull()?;
    let verified = Command::new("git")
        .current_dir(person.work())
        .env("GNUPGHOME", gnupg.path())
        .args(["verify-commit", &unsigned.sha])
        .output()?;
    assert!(!verified.status.success(), "an unsigned commit verified");

    // 5. A fleet repository of 5,000 files: what one commit costs, first and then cached.
    let repo = admin.create_repo(&format!("{}-fleet", sb.ns()))?;
    let url = admin.clone_url(&repo);
    let person = Person::http(&url, &admin.token)?;
    let mut files: Vec<(String, String)> = (0..5000)
        .map(|i| {
            (
                format!("apps/app-{:04}/helmrelease.yaml", i),
                format!("kind: HelmRelease\nmetadata:\n  name: app-{i}\nspec:\n  chart:\n    spec:\n      version: 1.0.{i}\n"),
            )
        })
        .collect();
    files.push((FILE.to_string(), original()?));
    let refs: Vec<(&str, String)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    person.seed(&refs)?;
    let fleet = basic(&url, &admin.user, &admin.token)?;
    for (round, version) in [("first (clone)", "6.0.0"), ("second (cached)", "6.1.0")] {
        let started = Instant::now();
        bump(&fleet, version).await?;
        println!(
            "fleet of 5,000 files: {round} commit in {} ms",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// A bump of the chart to `version` under a request of that name.
async fn bump(git: &GitCli, version: &str) -> anyhow::Result<Commit> {
    let request = format!("media/radarr-{version}");
    match commit_version_bump(
        git,
        "main",
        &edits(version, version),
        &message(&request, version),
        &request,
    )
    .await?
    {
        Outcome::Committed(c) => Ok(c),
        other => bail!("expected a commit, got {other:?}"),
    }
}

/// A new OpenPGP key for `email` in keyring `home`, exported armored (as `git.asc`).
fn openpgp_key(home: &Path, email: &str, passphrase: Option<&str>) -> anyhow::Result<String> {
    let gpg = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--pinentry-mode", "loopback"])
            .args(["--passphrase", passphrase.unwrap_or("")])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    gpg(&[
        "--quick-generate-key",
        &format!("FluxUp Bot <{email}>"),
        "ed25519",
        "sign",
        "never",
    ])?;
    gpg(&["--armor", "--export-secret-keys", email])
}
