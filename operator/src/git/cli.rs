//! Any Git server, through the `git` command: HTTPS and SSH, with the credentials in the formats of
//! Flux's GitRepository Secret, host keys always verified.
//!
//! Why the CLI: the pure-Rust `gix` cannot push yet; `git2` (libgit2) can, but brings libgit2,
//! libssh2 and OpenSSL into the build and leaves host-key checking to us. The `git` command is
//! what every Git server is tested against, speaks every transport and signs commits with `gpg`
//! or `ssh-keygen`. It needs `git` and `ssh` on the PATH (or `FLUXUP_GIT`).
//!
//! Each repository is kept in a cache ([`cache_dir`]) as a shallow bare repository, fetched at
//! the start of every call, so a large fleet repository costs one incremental fetch. Nothing is
//! checked out: files are read with `cat-file`, and a commit is a tree built in a temporary
//! index, committed with `commit-tree` and pushed without force. A push refused because the
//! branch moved is [`GitError::Conflict`]: the caller reads again and redoes its edit on top.
//!
//! The command runs with an empty environment and no user or system configuration, only the
//! `https`, `http` and `ssh` transports, no redirects, no proxies and no credential helpers; the
//! server's address is checked by [`crate::outbound`] and the connection pinned to the addresses
//! it allowed (`http.curloptResolve`, ssh's `HostName` with the original name as `HostKeyAlias`).

use super::gitea::check_path;
use super::message::trailer;
use super::{Commit, FileAtHead, FileUpdate, GitBackend, GitError};
use crate::outbound;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// The most of one file FluxUp reads (a values file or a manifest).
const MAX_FILE: u64 = 16 << 20;
/// How long one `git` command may take (a first fetch of a large repository included).
const TIMEOUT: Duration = Duration::from_secs(300);

/// How FluxUp proves who it is to the Git server, as Flux's GitRepository Secret says it.
#[derive(Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    /// `username` and `password` (or a token as the password): HTTP basic auth.
    Basic { username: String, password: String },
    /// `bearerToken`: an HTTP `Authorization: Bearer` header.
    Bearer(String),
    /// `identity` (a private key) and `known_hosts`; `password` if the key is encrypted.
    Ssh {
        identity: String,
        known_hosts: String,
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Basic { .. } => "Basic(..)",
            Credentials::Bearer(_) => "Bearer(..)",
            Credentials::Ssh { .. } => "Ssh(..)",
        })
    }
}

/// A key that signs FluxUp's commits.
#[derive(Clone)]
pub enum Signing {
    /// An armored OpenPGP private key (`git.asc`, as Flux's image automation takes it) and its
    /// passphrase, if any.
    OpenPgp {
        armored: String,
        passphrase: Option<String>,
    },
    /// An OpenSSH private key (unencrypted): an SSH signature (`gpg.format=ssh`).
    Ssh { private_key: String },
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signing::OpenPgp { .. } => "OpenPgp(..)",
            Signing::Ssh { .. } => "Ssh(..)",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ssh,
}

/// A Git remote FluxUp accepts: `https://`, `http://` or `ssh://`, with a plain host name or IP,
/// an optional user (SSH) and port, and a path without `..`. Nothing in it can be read by `git`
/// or `ssh` as an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub scheme: Scheme,
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Remote {
    pub fn parse(url: &str) -> Result<Remote, GitError> {
        let refuse = |rule: &str| GitError::NotSent(format!("Git URL {url:?} is refused: {rule}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| refuse("it is not an https://, http:// or ssh:// URL"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            "ssh" => Scheme::Ssh,
            _ => return Err(refuse("only https://, http:// and ssh:// are used")),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| refuse("it names no repository path"))?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, authority),
        };
        if let Some(user) = user {
            if scheme != Scheme::Ssh {
                return Err(refuse(
                    "credentials in an http(s) URL are not used; put them in the Secret",
                ));
            }
            if user.is_empty()
                || user.starts_with('-')
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(refuse(
                    "its user name has characters other than letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or_else(|| refuse("its IPv6 address is not closed"))?;
            ip.parse::<std::net::Ipv6Addr>()
                .map_err(|_| refuse("its IPv6 address is not valid"))?;
            (ip.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty()
            || host.starts_with(['-', '.'])
            || !(host.parse::<IpAddr>().is_ok()
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')))
        {
            return Err(refuse(
                "its host is not a name of letters, digits, `-` and `.`, or an IP address",
            ));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| refuse("its port is not a number from 1 to 65535"))?,
            None => match scheme {
                Scheme::Https => 443,
                Scheme::Http => 80,
                Scheme::Ssh => 22,
            },
        };
        let path = path.trim_end_matches('/');
        check_path("repository path", path)?;
        if path.starts_with('-') || path.contains(['?', '#', ' ', '\'', '"', '%']) {
            return Err(refuse(
                "its path starts with `-` or has a space, quote, `%`, `?` or `#`",
            ));
        }
        Ok(Remote {
            scheme,
            user: user.map(str::to_string),
            host: host.to_ascii_lowercase(),
            port,
            path: path.to_string(),
        })
    }

    /// The URL as `git` is given it.
    pub fn url(&self) -> String {
        let host = self.host_in_url();
        match self.scheme {
            Scheme::Https => format!("https://{host}:{}/{}", self.port, self.path),
            Scheme::Http => format!("http://{host}:{}/{}", self.port, self.path),
            Scheme::Ssh => format!(
                "ssh://{}{host}:{}/{}",
                self.user
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default(),
                self.port,
                self.path
            ),
        }
    }

    fn host_in_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The name the server's key has in `known_hosts`: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// One repository on any Git server.
#[derive(Clone)]
pub struct GitCli {
    remote: Remote,
    credentials: Credentials,
    /// A PEM bundle the HTTPS server's certificate must chain to (`ca.crt`), if not the system's.
    ca_bundle: Option<String>,
    signing: Option<Signing>,
    author: (String, String),
}

impl std::fmt::Debug for GitCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCli")
            .field("remote", &self.remote.url())
            .field("credentials", &self.credentials)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

impl GitCli {
    /// The repository at `url` (`https://…`, `http://…` or `ssh://…`). SSH needs
    /// [`Credentials::Ssh`]: FluxUp never connects to an SSH server whose key it was not given.
    pub fn new(url: &str, credentials: Credentials) -> Result<GitCli, GitError> {
        let remote = Remote::parse(url)?;
        match (&remote.scheme, &credentials) {
            (Scheme::Ssh, Credentials::Ssh { known_hosts, .. })
                if known_hosts.trim().is_empty() =>
            {
                return Err(GitError::NotSent(
                    "the Secret's known_hosts is empty: FluxUp verifies the SSH server's key and needs it".into(),
                ));
            }
            (Scheme::Ssh, Credentials::Ssh { .. }) => {}
            (Scheme::Ssh, _) => {
                return Err(GitError::NotSent(
                    "an ssh:// repository needs a Secret with `identity` and `known_hosts`".into(),
                ));
            }
            (_, Credentials::Ssh { .. }) => {
                return Err(GitError::NotSent(
                    "the Secret holds an SSH key (`identity`) but the repository URL is not ssh://"
                        .into(),
                ));
            }
            _ => {}
        }
        Ok(GitCli {
            remote,
            credentials,
            ca_bundle: None,
            signing: None,
            author: ("FluxUp".into(), "fluxup@users.noreply.local".into()),
        })
    }

    pub fn with_ca_bundle(mut self, pem: Option<String>) -> Self {
        self.ca_bundle = pem.filter(|p| !p.trim().is_empty());
        self
    }

    pub fn with_signing(mut self, signing: Option<Signing>) -> Self {
        self.signing = signing;
        self
    }

    pub fn with_author(mut self, name: &str, email: &str) -> Self {
        self.author = (name.to_string(), email.to_string());
        self
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The cached repository for this remote and these credentials: a different Secret gets a
    /// cache of its own, so one app's credentials never stand in for another's.
    fn repo_dir(&self) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(self.remote.url());
        hash.update([0]);
        match &self.credentials {
            Credentials::None => hash.update("none"),
            Credentials::Basic { username, password } => {
                hash.update(format!("basic\0{username}\0{password}"))
            }
            Credentials::Bearer(t) => hash.update(format!("bearer\0{t}")),
            Credentials::Ssh { identity, .. } => hash.update(format!("ssh\0{identity}")),
        }
        let digest = hash.finalize();
        let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        cache_dir().join(name)
    }

    /// Prepares a session: the repository's lock, its cache, key files and the environment.
    async fn session(&self) -> Result<Session, GitError> {
        let repo = self.repo_dir();
        let lock = RepoLock::acquire(&repo).await?;
        let scratch = tempfile::Builder::new()
            .prefix("fluxup-git-")
            .tempdir()
            .map_err(|e| GitError::Unreachable(format!("no temporary directory: {e}")))?;
        let pinned = outbound::guard()
            .addresses(&self.remote.host, self.remote.port)
            .await
            .map_err(|e| match e {
                outbound::Error::Unreachable => GitError::Unreachable(format!(
                    "the Git server's name {} does not resolve",
                    self.remote.host
                )),
                other => GitError::NotSent(format!("the Git server's address: {other}")),
            })?;
        let mut s = Session {
            repo,
            scratch,
            env: Vec::new(),
            config: Vec::new(),
            _lock: lock,
        };
        s.base_env(&self.author);
        match &self.credentials {
            Credentials::Basic { username, password } => {
                let basic = STANDARD.encode(format!("{username}:{password}"));
                s.config("http.extraHeader", &format!("Authorization: Basic {basic}"));
            }
            Credentials::Bearer(token) => {
                s.config(
                    "http.extraHeader",
                    &format!("Authorization: Bearer {token}"),
                );
            }
            Credentials::Ssh {
                identity,
                known_hosts,
                passphrase,
            } => {
                let key = s.write_secret("identity", &with_newline(identity))?;
                let hosts = s.write_secret("known_hosts", &with_newline(known_hosts))?;
                let mut ssh = vec![
                    "ssh".to_string(),
                    "-F".into(),
                    "/dev/null".into(),
                    "-i".into(),
                    key.display().to_string(),
                    "-o".into(),
                    "IdentitiesOnly=yes".into(),
                    "-o".into(),
                    format!("UserKnownHostsFile={}", hosts.display()),
                    "-o".into(),
                    "GlobalKnownHostsFile=/dev/null".into(),
                    "-o".into(),
                    "StrictHostKeyChecking=yes".into(),
                    "-o".into(),
                    "UpdateHostKeys=no".into(),
                    "-o".into(),
                    "ConnectTimeout=15".into(),
                    "-o".into(),
                    "ForwardAgent=no".into(),
                    "-o".into(),
                    "ClearAllForwardings=yes".into(),
                ];
                if let Some(pass) = passphrase.as_ref().filter(|p| !p.is_empty()) {
                    // ssh asks SSH_ASKPASS for an encrypted key's passphrase when told to.
                    let askpass = s.write_askpass(pass)?;
                    s.env("SSH_ASKPASS", &askpass.display().to_string());
                    s.env("SSH_ASKPASS_REQUIRE", "force");
                    s.env("DISPLAY", ":0");
                } else {
                    ssh.extend(["-o".into(), "BatchMode=yes".into()]);
                }
                if let Some(ip) = pinned.as_ref().and_then(|a| a.first()) {
                    ssh.extend([
                        "-o".into(),
                        format!("HostName={ip}"),
                        "-o".into(),
                        format!("HostKeyAlias={}", self.remote.known_hosts_name()),
                    ]);
                }
                s.env("GIT_SSH_COMMAND", &shell_words(&ssh));
                s.env("GIT_SSH_VARIANT", "ssh");
            }
            Credentials::None => {}
        }
        if matches!(self.remote.scheme, Scheme::Http | Scheme::Https) {
            if let Some(addresses) = &pinned {
                let list: Vec<String> = addresses
                    .iter()
                    .map(|ip| match ip {
                        IpAddr::V6(v6) => format!("[{v6}]"),
                        IpAddr::V4(v4) => v4.to_string(),
                    })
                    .collect();
                s.config(
                    "http.curloptResolve",
                    &format!(
                        "{}:{}:{}",
                        self.remote.host,
                        self.remote.port,
                        list.join(",")
                    ),
                );
            }
            if let Some(pem) = &self.ca_bundle {
                let ca = s.write_secret("ca.crt", pem)?;
                s.config("http.sslCAInfo", &ca.display().to_string());
            }
        }
        match &self.signing {
            Some(Signing::Ssh { private_key }) => {
                let key = s.write_secret("signing-key", &with_newline(private_key))?;
                s.config("gpg.format", "ssh");
                s.config("user.signingKey", &key.display().to_string());
            }
            Some(Signing::OpenPgp {
                armored,
                passphrase,
            }) => {
                let fingerprint = s.import_openpgp(armored, passphrase.as_deref()).await?;
                s.config("gpg.format", "openpgp");
                s.config("user.signingKey", &fingerprint);
            }
            None => {}
        }
        s.init().await?;
        Ok(s)
    }

    /// Brings the cache up to the remote's `branch` (its last `depth` commits); returns the
    /// commit it points at.
    async fn fetch(&self, s: &Session, branch: &str, depth: usize) -> Result<String, GitError> {
        check_branch(branch)?;
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        let depth = format!("--depth={}", depth.max(1));
        let url = self.remote.url();
        let out = s
            .git(
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--no-recurse-submodules",
                    &depth,
                    &url,
                    &refspec,
                ],
                None,
            )
            .await?;
        if !out.ok {
            return Err(remote_error(&out.stderr, branch));
        }
        rev_parse(s, &format!("refs/remotes/origin/{branch}")).await
    }
}

/// The directory FluxUp caches repositories in: `FLUXUP_GIT_CACHE`, or `fluxup-git` in the
/// temporary directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FLUXUP_GIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fluxup-git"))
}

fn git_program() -> String {
    std::env::var("FLUXUP_GIT").unwrap_or_else(|_| "git".into())
}

fn check_branch(branch: &str) -> Result<(), GitError> {
    check_path("branch", branch)?;
    if branch.starts_with('-')
        || branch.contains([' ', '~', '^', ':', '?', '*', '[', '\\'])
        || branch.contains("..")
        || branch.contains("@{")
        || branch.ends_with(".lock")
    {
        return Err(GitError::NotSent(format!(
            "branch {branch:?} is refused: it is not a valid Git branch name"
        )));
    }
    Ok(())
}

fn with_newline(text: &str) -> String {
    let mut t = text.replace("\r\n", "\n");
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// Quotes each word for the shell `git` runs GIT_SSH_COMMAND with.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the server said, in words a person can act on; secrets never appear in git's stderr
/// (headers and keys are not echoed), but it is cut short anyway.
fn remote_error(stderr: &str, branch: &str) -> GitError {
    let text = stderr.trim();
    let short: String = text.chars().take(400).collect();
    if text.contains("Host key verification failed")
        || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || text.contains("No ED25519 host key is known")
        || text.contains("host key for")
    {
        return GitError::Refused(format!(
            "the SSH server's host key is not the one in known_hosts; FluxUp did not connect \
             ({short})"
        ));
    }
    if text.contains("couldn't find remote ref") || text.contains("not our ref") {
        return GitError::NotFound {
            path: String::new(),
            branch: branch.to_string(),
        };
    }
    if text.contains("Could not resolve host")
        || text.contains("Connection refused")
        || text.contains("Connection timed out")
        || text.contains("timed out")
        || text.contains("Could not connect")
        || text.contains("Failed to connect")
    {
        return GitError::Unreachable(short);
    }
    GitError::Refused(short)
}

async fn rev_parse(s: &Session, rev: &str) -> Result<String, GitError> {
    let out = s
        .git(&["rev-parse", "--verify", "--quiet", rev], None)
        .await?;
    if !out.ok {
        return Err(GitError::Refused(format!(
            "{rev} is not in the fetched history"
        )));
    }
    Ok(out.stdout.trim().to_string())
}

/// The blob `path` is at in `commit`, with its mode, or `None` if there is no such file.
async fn blob_at(
    s: &Session,
    commit: &str,
    path: &str,
) -> Result<Option<(String, String)>, GitError> {
    let out = s
        .git(&["ls-tree", "-z", "--full-tree", commit, "--", path], None)
        .await?;
    if !out.ok {
        return Err(GitError::Refused(out.stderr.trim().to_string()));
    }
    // `<mode> blob <sha>\t<path>\0`
    for entry in out.stdout.split('\0').filter(|e| !e.is_empty()) {
        let Some((meta, name)) = entry.split_once('\t') else {
            continue;
        };
        let parts: Vec<&str> = meta.split(' ').collect();
        if name == path && parts.len() == 3 && parts[1] == "blob" {
            return Ok(Some((parts[2].to_string(), parts[0].to_string())));
        }
    }
    Ok(None)
}

impl GitCli {
    /// The commit at the head of `branch` now.
    pub async fn head(&self, branch: &str) -> Result<String, GitError> {
        let s = self.session().await?;
        self.fetch(&s, branch, 1).await
    }

    /// Whether these credentials may push `base`'s head to `target` (the same branch, or a new
    /// one a pull request would come from): a dry-run push, which changes nothing.
    pub async fn check_writable_to(&self, base: &str, target: &str) -> Result<(), GitError> {
        check_branch(target)?;
        let branch = target;
        let s = self.session().await?;
        let head = self.fetch(&s, base, 1).await?;
        let url = self.remote.url();
        let refspec = format!("{head}:refs/heads/{branch}");
        let out = s
            .git(&["push", "--dry-run", "--porcelain", &url, &refspec], None)
            .await?;
        if out.ok {
            return Ok(());
        }
        Err(match remote_error(&out.stderr, branch) {
            GitError::Refused(why) => GitError::Refused(format!(
                "these credentials may not push to branch {branch}: {why}"
            )),
            other => other,
        })
    }
}

impl GitBackend for GitCli {
    async fn check_writable(&self, branch: &str) -> Result<(), GitError> {
        self.check_writable_to(branch, branch).await
    }

    async fn read_file(&self, branch: &str, path: &str) -> Result<FileAtHead, GitError> {
        check_path("file", path)?;
        let s = self.session().await?;
        let head = self.fetch(&s, branch, 1).await?;
        let (blob, _) = blob_at(&s, &head, path)
            .await?
            .ok_or_else(|| GitError::NotFound {
                path: path.to_string(),
                branch: branch.to_string(),
            })?;
        let size = s.git(&["cat-file", "-s", &blob], None).await?;
        if size.stdout.trim().parse::<u64>().unwrap_or(u64::MAX) > MAX_FILE {
            return Err(GitError::Refused(format!(
                "{path} is larger than {} MiB; FluxUp edits values files and manifests only",
                MAX_FILE >> 20
            )));
        }
        let out = s.git(&["cat-file", "blob", &blob], None).await?;
        if !out.ok {
            return Err(GitError::Refused(out.stderr.trim().to_string()));
        }
        Ok(FileAtHead {
            content: out.stdout,
            blob_sha: blob,
        })
    }

    async fn write_files(
        &self,
        branch: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> Result<Commit, GitError> {
        self.write_files_to(branch, branch, files, message).await
    }

    async fn write_files_to(
        &self,
        branch: &str,
        target: &str,
        files: &[FileUpdate],
        message: &str,
    ) -> Result<Commit, GitError> {
        for f in files {
            check_path("file", &f.path)?;
        }
        check_branch(target)?;
        let s = self.session().await?;
        let head = self.fetch(&s, branch, 1).await?;
        let index = s.scratch.path().join("index");
        let index_env = [("GIT_INDEX_FILE", index.display().to_string())];
        let read = s.git_with(&["read-tree", &head], None, &index_env).await?;
        if !read.ok {
            return Err(GitError::Refused(read.stderr.trim().to_string()));
        }
        for f in files {
            let (blob, mode) =
                blob_at(&s, &head, &f.path)
                    .await?
                    .ok_or_else(|| GitError::NotFound {
                        path: f.path.clone(),
                        branch: branch.to_string(),
                    })?;
            if blob != f.blob_sha {
                return Err(GitError::Conflict {
                    path: f.path.clone(),
                    branch: branch.to_string(),
                });
            }
            let new_blob = s
                .git(
                    &["hash-object", "-w", "--stdin"],
                    Some(f.content.as_bytes()),
                )
                .await?;
            if !new_blob.ok {
                return Err(GitError::Refused(new_blob.stderr.trim().to_string()));
            }
            let cacheinfo = format!("{mode},{},{}", new_blob.stdout.trim(), f.path);
            let updated = s
                .git_with(
                    &["update-index", "--cacheinfo", &cacheinfo],
                    None,
                    &index_env,
                )
                .await?;
            if !updated.ok {
                return Err(GitError::Refused(updated.stderr.trim().to_string()));
            }
        }
        let tree = s.git_with(&["write-tree"], None, &index_env).await?;
        if !tree.ok {
            return Err(GitError::Refused(tree.stderr.trim().to_string()));
        }
        let tree = tree.stdout.trim().to_string();
        let mut args = vec!["commit-tree", tree.as_str(), "-p", head.as_str(), "-F", "-"];
        if self.signing.is_some() {
            args.push("-S");
        }
        let commit = s.git(&args, Some(message.as_bytes())).await?;
        if !commit.ok {
            return Err(GitError::Refused(format!(
                "the commit could not be made{}: {}",
                if self.signing.is_some() {
                    " (signing it failed)"
                } else {
                    ""
                },
                commit.stderr.trim()
            )));
        }
        let sha = commit.stdout.trim().to_string();
        let url = self.remote.url();
        let refspec = format!("{sha}:refs/heads/{target}");
        let pushed = s
            .git(&["push", "--porcelain", &url, &refspec], None)
            .await?;
        if !pushed.ok {
            let said = format!("{}\n{}", pushed.stdout, pushed.stderr);
            if said.contains("[rejected]")
                && (said.contains("fetch first") || said.contains("non-fast-forward"))
            {
                return Err(GitError::Conflict {
                    path: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                    branch: target.to_string(),
                });
            }
            if let Some(line) = said.lines().find(|l| l.contains("[remote rejected]")) {
                return Err(GitError::Refused(format!(
                    "the server refused the push to {target}: {}",
                    line.trim()
                )));
            }
            return Err(remote_error(&pushed.stderr, target));
        }
        // The cache now knows the branch's new head without another fetch.
        s.git(
            &["update-ref", &format!("refs/remotes/origin/{target}"), &sha],
            None,
        )
        .await?;
        Ok(Commit {
            sha,
            message: message.to_string(),
        })
    }

    async fn find_commit(
        &self,
        branch: &str,
        key: &str,
        value: &str,
        depth: usize,
    ) -> Result<Option<Commit>, GitError> {
        let s = self.session().await?;
        let head = self.fetch(&s, branch, depth).await?;
        let n = format!("--max-count={}", depth.max(1));
        let out = s
            .git(&["log", "-z", "--format=%H%n%B", &n, &head], None)
            .await?;
        if !out.ok {
            return Err(GitError::Refused(out.stderr.trim().to_string()));
        }
        Ok(out
            .stdout
            .split('\0')
            .filter_map(|record| {
                let (sha, message) = record.trim_start_matches('\n').split_once('\n')?;
                Some(Commit {
                    sha: sha.to_string(),
                    message: message.to_string(),
                })
            })
            .find(|c| trailer(&c.message, key) == Some(value)))
    }
}

/// One call's surroundings: the locked cache, a scratch directory for key files, and what
/// every `git` command of the call runs with.
struct Session {
    repo: PathBuf,
    scratch: tempfile::TempDir,
    env: Vec<(String, String)>,
    config: Vec<(String, String)>,
    _lock: RepoLock,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Session {
    fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    fn config(&mut self, key: &str, value: &str) {
        self.config.push((key.into(), value.into()));
    }

    fn base_env(&mut self, author: &(String, String)) {
        let home = self.scratch.path().display().to_string();
        self.env("HOME", &home);
        self.env(
            "PATH",
            &std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        self.env("LANG", "C");
        self.env("LC_ALL", "C");
        self.env("GIT_CONFIG_NOSYSTEM", "1");
        self.env("GIT_CONFIG_GLOBAL", "/dev/null");
        self.env("GIT_TERMINAL_PROMPT", "0");
        self.env("GIT_ASKPASS", "/bin/false");
        self.env("GIT_ALLOW_PROTOCOL", "https:http:ssh");
        self.env("GIT_AUTHOR_NAME", &author.0);
        self.env("GIT_AUTHOR_EMAIL", &author.1);
        self.env("GIT_COMMITTER_NAME", &author.0);
        self.env("GIT_COMMITTER_EMAIL", &author.1);
        self.env("GNUPGHOME", &format!("{home}/gnupg"));
        self.config("credential.helper", "");
        self.config("http.followRedirects", "false");
        self.config("http.proxy", "");
        self.config("protocol.allow", "never");
        self.config("protocol.https.allow", "always");
        self.config("protocol.http.allow", "always");
        self.config("protocol.ssh.allow", "always");
        self.config("gc.auto", "0");
        self.config("maintenance.auto", "false");
        self.config("core.hooksPath", "/dev/null");
        self.config("fetch.recurseSubmodules", "false");
        self.config("transfer.fsckObjects", "true");
    }

    /// Writes a secret (a key, known_hosts, a CA) readable only by this process's user.
    fn write_secret(&self, name: &str, content: &str) -> Result<PathBuf, GitError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.scratch.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| GitError::Unreachable(format!("cannot write {name}: {e}")))?;
        file.write_all(content.as_bytes())
            .map_err(|e| GitError::Unreachable(format!("cannot write {name}: {e}")))?;
        Ok(path)
    }

    /// A program that prints the passphrase, for ssh's SSH_ASKPASS. The passphrase is in a file
    /// beside it, not in the script.
    fn write_askpass(&self, passphrase: &str) -> Result<PathBuf, GitError> {
        use std::os::unix::fs::PermissionsExt as _;
        let secret = self.write_secret("passphrase", passphrase)?;
        let script = self.write_secret(
            "askpass",
            &format!("#!/bin/sh\nexec cat '{}'\n", secret.display()),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| GitError::Unreachable(format!("cannot write askpass: {e}")))?;
        Ok(script)
    }

    /// Imports an armored OpenPGP key into this session's own keyring; returns its fingerprint.
    async fn import_openpgp(
        &mut self,
        armored: &str,
        passphrase: Option<&str>,
    ) -> Result<String, GitError> {
        let home = self.scratch.path().join("gnupg");
        std::fs::create_dir_all(&home)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| GitError::Unreachable(format!("cannot make a keyring: {e}")))?;
        let run = |args: Vec<String>, input: Option<Vec<u8>>| {
            let home = home.clone();
            async move {
                let mut cmd = tokio::process::Command::new("gpg");
                cmd.env_clear()
                    .env("GNUPGHOME", &home)
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
                    .args(&args);
                run_command(cmd, input.as_deref()).await
            }
        };
        let mut args = vec!["--import".to_string()];
        if let Some(p) = passphrase {
            let file = self.write_secret("gpg-passphrase", p)?;
            args.splice(
                0..0,
                ["--passphrase-file".into(), file.display().to_string()],
            );
            // git calls gpg itself: it needs the passphrase too, through gpg.conf.
            std::fs::write(
                home.join("gpg.conf"),
                format!(
                    "pinentry-mode loopback\npassphrase-file {}\n",
                    file.display()
                ),
            )
            .map_err(|e| GitError::Unreachable(format!("cannot write gpg.conf: {e}")))?;
        }
        let imported = run(args, Some(armored.as_bytes().to_vec())).await?;
        if !imported.ok {
            return Err(GitError::NotSent(format!(
                "the signing key (git.asc) could not be read: {}",
                imported.stderr.trim()
            )));
        }
        let listed = run(
            vec![
                "--with-colons".into(),
                "--list-secret-keys".into(),
                "--fingerprint".into(),
            ],
            None,
        )
        .await?;
        listed
            .stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .filter(|f| !f.is_empty())
            .ok_or_else(|| {
                GitError::NotSent("the signing key (git.asc) holds no secret key".into())
            })
    }

    /// Creates the cached bare repository the first time.
    async fn init(&self) -> Result<(), GitError> {
        if self.repo.join("HEAD").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.repo)
            .map_err(|e| GitError::Unreachable(format!("cannot make the Git cache: {e}")))?;
        let out = self.git(&["init", "--quiet", "--bare"], None).await?;
        if !out.ok {
            return Err(GitError::Unreachable(format!(
                "cannot make the Git cache: {}",
                out.stderr.trim()
            )));
        }
        Ok(())
    }

    async fn git(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, GitError> {
        self.git_with(args, stdin, &[]).await
    }

    async fn git_with(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        extra_env: &[(&str, String)],
    ) -> Result<Output, GitError> {
        let mut cmd = tokio::process::Command::new(git_program());
        cmd.env_clear().current_dir(&self.repo);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("GIT_CONFIG_COUNT", self.config.len().to_string());
        for (i, (k, v)) in self.config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.arg("--git-dir=.").args(args);
        run_command(cmd, stdin).await
    }
}

async fn run_command(
    mut cmd: tokio::process::Command,
    stdin: Option<&[u8]>,
) -> Result<Output, GitError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        GitError::Unreachable(format!(
            "cannot run {:?} (is it installed?): {e}",
            cmd.as_std().get_program()
        ))
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|e| GitError::Unreachable(format!("cannot talk to git: {e}")))?;
    }
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            GitError::Unreachable(format!("git took longer than {} s", TIMEOUT.as_secs()))
        })?
        .map_err(|e| GitError::Unreachable(format!("git failed to run: {e}")))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// One user of a cached repository at a time: within the process a mutex, across processes
/// (two test binaries, two replicas on one disk) an advisory lock on a file beside it.
struct RepoLock {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _file: std::fs::File,
}

impl RepoLock {
    async fn acquire(repo: &Path) -> Result<RepoLock, GitError> {
        static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
            LazyLock::new(Default::default);
        let mutex = LOCKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(repo.to_path_buf())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        let parent = repo.parent().unwrap_or(repo);
        std::fs::create_dir_all(parent)
            .map_err(|e| GitError::Unreachable(format!("cannot make the Git cache: {e}")))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(repo.with_extension("lock"))
            .map_err(|e| GitError::Unreachable(format!("cannot lock the Git cache: {e}")))?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(GitError::Unreachable(format!(
                        "the Git cache stays locked by another process: {e}"
                    )));
                }
            }
        }
        Ok(RepoLock {
            _guard: guard,
            _file: file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_people_write_are_understood() {
        let r = Remote::parse("ssh://git@github.com/fleet/cluster.git").unwrap();
        assert_eq!(r.user.as_deref(), Some("git"));
        assert_eq!((r.host.as_str(), r.port), ("github.com", 22));
        assert_eq!(r.known_hosts_name(), "github.com");
        assert_eq!(r.url(), "ssh://git@github.com:22/fleet/cluster.git");
        let r = Remote::parse("ssh://git@127.0.0.1:2222/o/r").unwrap();
        assert_eq!(r.known_hosts_name(), "[127.0.0.1]:2222");
        let r = Remote::parse("https://gitlab.example.com/group/sub/repo.git/").unwrap();
        assert_eq!(r.url(), "https://gitlab.example.com:443/group/sub/repo.git");
        let r = Remote::parse("http://[::1]:3000/o/r").unwrap();
        assert_eq!(r.url(), "http://[::1]:3000/o/r");
    }

    #[test]
    fn remotes_that_could_become_options_or_other_transports_are_refused() {
        for bad in [
            "ext::sh -c touch% /tmp/x",
            "file:///etc",
            "git@github.com:fleet/cluster.git",
            "ssh://-oProxyCommand=touch/x/y",
            "ssh://-git@host/x",
            "ssh://git@host/-x",
            "https://user:pass@host/x",
            "https://host:0/x",
            "https://host:99999/x",
            "https://host/",
            "https://host/a/../b",
            "https://ho st/x",
            "ssh://git@host/x y",
            "ssh://git@host/x'y",
        ] {
            let e = Remote::parse(bad).err();
            assert!(
                matches!(e, Some(GitError::NotSent(_))),
                "{bad} should be refused, got {e:?}"
            );
        }
    }

    #[test]
    fn ssh_needs_a_key_and_known_hosts() {
        let e = GitCli::new("ssh://git@host/x", Credentials::None).unwrap_err();
        assert!(e.to_string().contains("identity"), "{e}");
        let e = GitCli::new(
            "ssh://git@host/x",
            Credentials::Ssh {
                identity: "k".into(),
                known_hosts: " ".into(),
                passphrase: None,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("known_hosts"), "{e}");
        let e = GitCli::new(
            "https://host/x",
            Credentials::Ssh {
                identity: "k".into(),
                known_hosts: "h".into(),
                passphrase: None,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not ssh://"), "{e}");
    }

    #[test]
    fn branches_git_would_misread_are_refused() {
        for bad in [
            "-f", "a..b", "a b", "x:y", "a@{1}", "x.lock", "/main", "a//b",
        ] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
        for good in ["main", "release/1.x", "fluxup/webapp-2.0"] {
            assert!(check_branch(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_ssh_command_survives_the_shell() {
        let words = vec!["ssh".to_string(), "-i".into(), "/tmp/a b/it's".into()];
        assert_eq!(shell_words(&words), r"'ssh' '-i' '/tmp/a b/it'\''s'");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let git = GitCli::new(
            "https://host/x",
            Credentials::Basic {
                username: "u".into(),
                password: "hunter2".into(),
            },
        )
        .unwrap();
        assert!(!format!("{git:?}").contains("hunter2"));
    }
}
