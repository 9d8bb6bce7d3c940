//! The server functions the pages call. Each acts for the person asking (the [`Viewer`] the
//! server's authentication put on the request) through the [`Backend`] the server provides;
//! without one (no cluster configured) they say so.

use crate::model::{AppDetail, AppRow, Operation, OperationKind};
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::backend::{Backend, Viewer};

/// The backend and the person asking.
#[cfg(feature = "ssr")]
fn context() -> Result<(Backend, Viewer), ServerFnError> {
    let backend = use_context::<Backend>().ok_or_else(|| {
        ServerFnError::new(
            "FluxUp is not connected to Kubernetes (no kubeconfig or in-cluster config)",
        )
    })?;
    let viewer = use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Viewer>().cloned())
        .ok_or_else(|| ServerFnError::new("log in first"))?;
    Ok((backend, viewer))
}

/// Who is logged in: their Kubernetes user name.
#[server(endpoint = "whoami")]
pub async fn whoami() -> Result<String, ServerFnError> {
    Ok(context()?.1.name)
}

/// Every ManagedApp the person may see, sorted by namespace and name.
#[server(endpoint = "list_apps")]
pub async fn list_apps() -> Result<Vec<AppRow>, ServerFnError> {
    let (backend, viewer) = context()?;
    backend.ready().await;
    Ok(backend.rows(&viewer).await)
}

/// One app's page.
#[server(endpoint = "get_app")]
pub async fn get_app(namespace: String, name: String) -> Result<AppDetail, ServerFnError> {
    let (backend, viewer) = context()?;
    backend.ready().await;
    backend
        .detail(&viewer, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// The chart versions a person may pick for an app: the policy's best first.
#[server(endpoint = "list_versions")]
pub async fn list_versions(namespace: String, name: String) -> Result<Vec<String>, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .versions(&viewer, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// One upgrade or rollback, as it stands.
#[server(endpoint = "get_operation")]
pub async fn get_operation(
    kind: OperationKind,
    namespace: String,
    name: String,
) -> Result<Operation, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .operation(&viewer, kind, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// Asks for an upgrade of `app` to `version` (the policy's best when empty); a dry run changes
/// nothing and shows the checks and the exact Git diff.
#[server(endpoint = "request_upgrade")]
pub async fn request_upgrade(
    namespace: String,
    app: String,
    version: Option<String>,
    dry_run: bool,
) -> Result<Operation, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .request_upgrade(&viewer, &namespace, &app, version, dry_run)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// Asks for a rollback of the upgrade `upgrade` of `app`.
#[server(endpoint = "request_rollback")]
pub async fn request_rollback(
    namespace: String,
    app: String,
    upgrade: String,
    dry_run: bool,
) -> Result<Operation, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .request_rollback(&viewer, &namespace, &app, &upgrade, dry_run)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// The Flux HelmReleases the person may see, as candidates for a ManagedApp.
#[server(endpoint = "list_candidates")]
pub async fn list_candidates() -> Result<Vec<crate::model::Candidate>, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .candidates(&viewer)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// The ManagedApp FluxUp proposes for HelmRelease `namespace/name`; nothing is created.
#[server(endpoint = "propose_app")]
pub async fn propose_app(
    namespace: String,
    name: String,
) -> Result<crate::model::Proposal, ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .propose(&viewer, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// Creates the ManagedApp FluxUp proposes for HelmRelease `namespace/name`.
#[server(endpoint = "create_app")]
pub async fn create_app(namespace: String, name: String) -> Result<AppRow, ServerFnError> {
    let (backend, viewer) = context()?;
    let proposal = backend
        .propose(&viewer, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))?;
    backend
        .create_app(&viewer, &proposal)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// Changes the version policy of `part` (`chart` or an image) for app `namespace/name` as the
/// person: `change` is a [`crate::model::PolicyChange`] in JSON (skip, unskip, stay on a major
/// or minor, unpin), stored in `spec.versionPolicy`.
#[server(endpoint = "change_version_policy")]
pub async fn change_version_policy(
    namespace: String,
    name: String,
    part: String,
    change: String,
) -> Result<(), ServerFnError> {
    let (backend, viewer) = context()?;
    let change: crate::model::PolicyChange =
        serde_json::from_str(&change).map_err(|e| ServerFnError::new(e.to_string()))?;
    backend
        .change_policy(&viewer, &namespace, &name, &part, &change)
        .await
        .map(|_| ())
        .map_err(|r| ServerFnError::new(r.message))
}

/// Sets which events and namespaces notification sink `name` gets, each comma-separated
/// (empty: all), as the person; the settings as they then stand.
#[server(endpoint = "change_sink")]
pub async fn change_sink(
    name: String,
    events: String,
    namespaces: String,
) -> Result<crate::model::Settings, ServerFnError> {
    let (backend, viewer) = context()?;
    let list = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let change = fluxup_operator::notify::settings::Filters {
        name,
        events: list(&events),
        namespaces: list(&namespaces),
    };
    backend
        .change_sinks(&viewer, &[change])
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// Every snapshot FluxUp took that the person may see, with its namespace.
#[server(endpoint = "list_snapshots")]
pub async fn list_snapshots() -> Result<Vec<(String, crate::model::SnapshotLine)>, ServerFnError> {
    let (backend, viewer) = context()?;
    backend.ready().await;
    Ok(backend.all_snapshots(&viewer).await)
}

/// Deletes one of FluxUp's snapshots, as the person.
#[server(endpoint = "delete_snapshot")]
pub async fn delete_snapshot(namespace: String, name: String) -> Result<(), ServerFnError> {
    let (backend, viewer) = context()?;
    backend
        .delete_snapshot(&viewer, &namespace, &name)
        .await
        .map_err(|r| ServerFnError::new(r.message))
}

/// The settings page's data.
#[server(endpoint = "get_settings")]
pub async fn get_settings() -> Result<crate::model::Settings, ServerFnError> {
    let (backend, viewer) = context()?;
    Ok(backend.settings(&viewer).await)
}
