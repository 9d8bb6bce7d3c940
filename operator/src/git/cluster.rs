//! The Git repository of a ManagedApp, from the cluster: the Flux GitRepository its
//! Kustomization follows, with the credentials of that GitRepository's Secret (or of the
//! ManagedApp's `spec.git.credentialsSecretRef`), the signing key of `spec.git.signingKeySecretRef`
//! and the branch Flux follows, which FluxUp commits to.

use super::GitError;
use super::cli::{Credentials, GitCli, Remote, Scheme, Signing};
use super::gitea::Gitea;
use crate::operation::Error;
use crate::references;
use crate::secrets;
use fluxup_api::flux::{GitRepository, GitRepositoryRef};
use fluxup_api::object_parts;
use fluxup_api::{ManagedApp, PullRequestSettings};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;

/// Where an app's version bumps go: the repository and the branch Flux follows.
#[derive(Debug, Clone)]
pub struct AppRepository {
    pub git: GitCli,
    pub branch: String,
    /// Pull-request mode (`spec.git.pullRequest`): the forge's API for this repository.
    pub forge: Option<Gitea>,
}

/// The app's Git repository, as a generic Git backend, and the branch to commit to.
pub async fn for_app(client: &Client, app: &ManagedApp) -> Result<(GitCli, String), Error> {
    let repo = repository(client, app).await?;
    Ok((repo.git, repo.branch))
}

/// The app's repository; see [`AppRepository`].
pub async fn repository(client: &Client, app: &ManagedApp) -> Result<AppRepository, Error> {
    let source = app
        .status
        .as_ref()
        .and_then(|s| s.resolved.as_ref())
        .and_then(|r| r.git_source.clone())
        .ok_or_else(|| Error::Other("the app's Git source is not resolved yet".into()))?;
    let (_, ns, name) = object_parts(&source);
    let repo = Api::<GitRepository>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let settings = app.spec.git.clone().unwrap_or_default();
    let app_ns = app.namespace().unwrap_or_default();

    // Credentials: the app's own Secret if it names one (read only for a person who may read
    // it), else the GitRepository's, which Flux itself uses for the same URL.
    let credentials = match &settings.credentials_secret_ref {
        Some(r) => {
            let data = person_secret(
                client,
                app,
                &app_ns,
                &r.name,
                "spec.git.credentialsSecretRef",
            )
            .await?;
            Some((format!("{app_ns}/{}", r.name), data))
        }
        None => match &repo.spec.secret_ref {
            Some(r) => {
                let secret = Api::<Secret>::namespaced(client.clone(), ns)
                    .get(&r.name)
                    .await?;
                Some((format!("{ns}/{}", r.name), secrets::data(secret)))
            }
            None => None,
        },
    };
    let (credentials, ca) = match &credentials {
        Some((where_, data)) => (
            credentials_from(data, where_)?,
            secrets::text(data, "ca.crt"),
        ),
        None => (Credentials::None, None),
    };
    let signing = match &settings.signing_key_secret_ref {
        Some(r) => {
            let data = person_secret(
                client,
                app,
                &app_ns,
                &r.name,
                "spec.git.signingKeySecretRef",
            )
            .await?;
            Some(signing_from(&data, &format!("{app_ns}/{}", r.name))?)
        }
        None => None,
    };
    let forge = match &settings.pull_request {
        Some(pr) => Some(forge(client, app, pr, &repo.spec.url, &credentials).await?),
        None => None,
    };
    let mut git = GitCli::new(&repo.spec.url, credentials)
        .map_err(|e| Error::Other(format!("GitRepository {ns}/{name}: {e}")))?
        .with_ca_bundle(ca)
        .with_signing(signing);
    if let Some(author) = &settings.author {
        git = git.with_author(&author.name, &author.email);
    }
    let reference = repo.spec.r#ref.clone().unwrap_or_default();
    let branch = branch_of(&reference);
    let branch = match branch {
        Some(b) => b,
        None => {
            return Err(Error::Other(format!(
                "GitRepository {ns}/{name} follows a tag, a semver range or a commit, not a \
                 branch: a commit would never be rolled out, so FluxUp makes none"
            )));
        }
    };
    Ok(AppRepository { git, branch, forge })
}

/// The forge API that opens the app's pull requests: at `apiURL` or the Git URL's server, as
/// the token of `tokenSecretRef` or the Git credentials.
async fn forge(
    client: &Client,
    app: &ManagedApp,
    settings: &PullRequestSettings,
    git_url: &str,
    git_credentials: &Credentials,
) -> Result<Gitea, Error> {
    let remote = Remote::parse(git_url).map_err(|e| Error::Other(e.to_string()))?;
    let base = match (&settings.api_url, remote.scheme) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Scheme::Ssh) => {
            return Err(Error::Other(
                "spec.git.pullRequest.apiURL is needed for a repository over SSH: the forge's                  web address, e.g. https://gitea.example.com"
                    .into(),
            ));
        }
        (None, _) => {
            let url = remote.url();
            url[..url.len() - remote.path.len() - 1].to_string()
        }
    };
    let repo = remote.path.trim_end_matches(".git");
    let app_ns = app.namespace().unwrap_or_default();
    let not_usable = |e: GitError| Error::Other(format!("spec.git.pullRequest: {e}"));
    if let Some(r) = &settings.token_secret_ref {
        let data = person_secret(
            client,
            app,
            &app_ns,
            &r.name,
            "spec.git.pullRequest.tokenSecretRef",
        )
        .await?;
        let token = secrets::text(&data, "token")
            .ok_or_else(|| Error::Other(format!("Secret {app_ns}/{} has no `token`", r.name)))?;
        return Gitea::new(&base, repo, &token).map_err(not_usable);
    }
    match git_credentials {
        Credentials::Basic { username, password } => {
            Gitea::with_password(&base, repo, username, password).map_err(not_usable)
        }
        Credentials::Bearer(token) => Gitea::new(&base, repo, token).map_err(not_usable),
        _ => Err(Error::Other(
            "spec.git.pullRequest.tokenSecretRef is needed: the Git credentials hold no token              the forge's API takes"
                .into(),
        )),
    }
}

/// The branch a GitRepository follows, if it follows one, by Flux's precedence (commit, name,
/// semver, tag, branch; `master` when it names nothing).
pub fn branch_of(reference: &GitRepositoryRef) -> Option<String> {
    if reference.commit.is_some() {
        None
    } else if let Some(name) = &reference.name {
        name.strip_prefix("refs/heads/").map(str::to_string)
    } else if reference.semver.is_some() || reference.tag.is_some() {
        None
    } else {
        Some(reference.branch.clone().unwrap_or_else(|| "master".into()))
    }
}

/// A Secret the ManagedApp names, read only if the person who last wrote the ManagedApp may
/// read it themselves.
async fn person_secret(
    client: &Client,
    app: &ManagedApp,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let person = references::person_of(&app.metadata).ok_or_else(|| {
        Error::Other(format!(
            "{field} names Secret {ns}/{name}, and no one is recorded as having written the \
             ManagedApp (config/admission records who did): FluxUp reads a Secret only for a \
             person who may read it"
        ))
    })?;
    if !references::may_read_secret(client, &person, ns, name).await? {
        return Err(Error::Other(format!(
            "{field}: {} may not read Secret {ns}/{name}, so FluxUp does not use it for them",
            person.name
        )));
    }
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    Ok(secrets::data(secret))
}

/// Credentials in the formats of Flux's GitRepository Secret.
pub fn credentials_from(
    data: &BTreeMap<String, Vec<u8>>,
    secret: &str,
) -> Result<Credentials, Error> {
    if let Some(identity) = secrets::text(data, "identity") {
        let known_hosts = secrets::text(data, "known_hosts").ok_or_else(|| {
            Error::Other(format!(
                "Secret {secret} has an SSH `identity` but no `known_hosts`: FluxUp verifies the \
                 server's host key (`ssh-keyscan <host>` prints it; check it before you trust it)"
            ))
        })?;
        return Ok(Credentials::Ssh {
            identity,
            known_hosts,
            passphrase: secrets::text(data, "password"),
        });
    }
    if let Some(token) = secrets::text(data, "bearerToken") {
        return Ok(Credentials::Bearer(token));
    }
    match (
        secrets::text(data, "username"),
        secrets::text(data, "password"),
    ) {
        (Some(username), Some(password)) => Ok(Credentials::Basic { username, password }),
        (None, Some(password)) => Ok(Credentials::Basic {
            username: "git".into(),
            password,
        }),
        // FluxUp's Secrets before 0.2 held a Gitea API token as `token`.
        _ => match secrets::text(data, "token") {
            Some(password) => Ok(Credentials::Basic {
                username: "git".into(),
                password,
            }),
            None => Err(Error::Other(format!(
                "Secret {secret} has no Git credentials: give it `username` and `password`, \
                 `bearerToken`, or `identity` and `known_hosts`"
            ))),
        },
    }
}

/// A signing key: `git.asc` (OpenPGP) or `identity` (SSH).
pub fn signing_from(data: &BTreeMap<String, Vec<u8>>, secret: &str) -> Result<Signing, Error> {
    if let Some(armored) = secrets::text(data, "git.asc") {
        return Ok(Signing::OpenPgp {
            armored,
            passphrase: secrets::text(data, "passphrase"),
        });
    }
    if let Some(private_key) = secrets::text(data, "identity") {
        return Ok(Signing::Ssh { private_key });
    }
    Err(Error::Other(format!(
        "Secret {secret} has no signing key: give it `git.asc` (OpenPGP) or `identity` (SSH)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn flux_secret_formats_are_read_as_flux_reads_them() {
        let c = credentials_from(&data(&[("username", "u"), ("password", "p")]), "s").unwrap();
        assert!(
            matches!(c, Credentials::Basic { ref username, ref password } if username == "u" && password == "p")
        );
        let c = credentials_from(&data(&[("bearerToken", "t")]), "s").unwrap();
        assert!(matches!(c, Credentials::Bearer(ref t) if t == "t"));
        let c = credentials_from(
            &data(&[
                ("identity", "KEY"),
                ("known_hosts", "h k"),
                ("password", "pp"),
            ]),
            "s",
        )
        .unwrap();
        assert!(
            matches!(c, Credentials::Ssh { ref passphrase, .. } if passphrase.as_deref() == Some("pp"))
        );
    }

    #[test]
    fn an_ssh_key_without_known_hosts_is_refused_not_trusted() {
        let e = credentials_from(&data(&[("identity", "KEY")]), "fleet/git").unwrap_err();
        assert!(e.to_string().contains("known_hosts"), "{e}");
        let e = credentials_from(&data(&[("ca.crt", "x")]), "fleet/git").unwrap_err();
        assert!(e.to_string().contains("no Git credentials"), "{e}");
    }

    #[test]
    fn the_branch_flux_follows_by_flux_precedence() {
        let r =
            |json: serde_json::Value| -> GitRepositoryRef { serde_json::from_value(json).unwrap() };
        assert_eq!(
            branch_of(&r(serde_json::json!({}))).as_deref(),
            Some("master")
        );
        assert_eq!(
            branch_of(&r(serde_json::json!({"branch": "main"}))).as_deref(),
            Some("main")
        );
        assert_eq!(
            branch_of(&r(
                serde_json::json!({"name": "refs/heads/prod", "tag": "v1", "branch": "main"})
            ))
            .as_deref(),
            Some("prod")
        );
        assert_eq!(
            branch_of(&r(serde_json::json!({"branch": "main", "tag": "v1"}))),
            None
        );
        assert_eq!(
            branch_of(&r(serde_json::json!({"branch": "main", "semver": ">=1"}))),
            None
        );
        assert_eq!(
            branch_of(&r(serde_json::json!({"branch": "main", "commit": "abc"}))),
            None
        );
        assert_eq!(
            branch_of(&r(serde_json::json!({"name": "refs/pull/1/head"}))),
            None
        );
    }

    #[test]
    fn signing_keys_in_both_formats() {
        assert!(matches!(
            signing_from(&data(&[("git.asc", "A"), ("passphrase", "p")]), "s").unwrap(),
            Signing::OpenPgp {
                passphrase: Some(_),
                ..
            }
        ));
        assert!(matches!(
            signing_from(&data(&[("identity", "K")]), "s").unwrap(),
            Signing::Ssh { .. }
        ));
        assert!(signing_from(&data(&[]), "s").is_err());
    }
}
