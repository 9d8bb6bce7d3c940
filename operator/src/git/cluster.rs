//! The Git repository of a ManagedApp, from the cluster: the Flux GitRepository its Kustomization
//! follows, with the token of that GitRepository's Secret.

use super::gitea::Gitea;
use crate::operation::Error;
use fluxup_api::ManagedApp;
use fluxup_api::flux::GitRepository;
use fluxup_api::object_parts;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// The app's Git repository as a Gitea backend, and the branch Flux follows.
pub async fn for_app(client: &Client, app: &ManagedApp) -> Result<(Gitea, String), Error> {
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
    let url = repo.spec.url.trim_end_matches(".git").to_string();
    let (base, path) = url
        .split_once("://")
        .and_then(|(scheme, rest)| {
            rest.split_once('/')
                .map(|(host, path)| (format!("{scheme}://{host}"), path.to_string()))
        })
        .ok_or_else(|| Error::Other(format!("cannot read the Git URL {url}")))?;
    let secret_name = repo
        .spec
        .secret_ref
        .as_ref()
        .map(|s| s.name.clone())
        .ok_or_else(|| {
            Error::Other(format!(
                "GitRepository {ns}/{name} names no credentials Secret"
            ))
        })?;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&secret_name)
        .await?;
    let data = secret.data.unwrap_or_default();
    let token = ["bearerToken", "token", "password"]
        .iter()
        .find_map(|k| data.get(*k))
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
        .ok_or_else(|| {
            Error::Other(format!(
                "Secret {ns}/{secret_name} has no token or password"
            ))
        })?;
    let branch = repo
        .spec
        .r#ref
        .and_then(|r| r.branch)
        .unwrap_or_else(|| "main".into());
    Ok((Gitea::new(&base, &path, &token)?, branch))
}
