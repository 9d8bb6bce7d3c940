//! The server functions the pages call. Each reads the [`Backend`](crate::backend::Backend) the
//! server provides as context; without one (no cluster configured) they say so.

use crate::model::{AppDetail, AppRow, Operation, OperationKind};
use leptos::prelude::*;

#[cfg(feature = "ssr")]
fn backend() -> Result<crate::backend::Backend, ServerFnError> {
    use_context::<crate::backend::Backend>().ok_or_else(|| {
        ServerFnError::new(
            "FluxUp is not connected to Kubernetes (no kubeconfig or in-cluster config)",
        )
    })
}

/// Every ManagedApp, sorted by namespace and name.
#[server]
pub async fn list_apps() -> Result<Vec<AppRow>, ServerFnError> {
    let backend = backend()?;
    backend.ready().await;
    Ok(backend.rows())
}

/// One app's page.
#[server]
pub async fn get_app(namespace: String, name: String) -> Result<AppDetail, ServerFnError> {
    let backend = backend()?;
    backend.ready().await;
    backend
        .detail(&namespace, &name)
        .ok_or_else(|| ServerFnError::new(format!("there is no ManagedApp {namespace}/{name}")))
}

/// The chart versions a person may pick for an app: the policy's best first.
#[server]
pub async fn list_versions(namespace: String, name: String) -> Result<Vec<String>, ServerFnError> {
    backend()?
        .versions(&namespace, &name)
        .await
        .map_err(ServerFnError::new)
}

/// One upgrade or rollback, as it stands.
#[server]
pub async fn get_operation(
    kind: OperationKind,
    namespace: String,
    name: String,
) -> Result<Operation, ServerFnError> {
    backend()?
        .operation(kind, &namespace, &name)
        .ok_or_else(|| {
            ServerFnError::new(format!("there is no {kind:?}Request {namespace}/{name}"))
        })
}

/// Asks for an upgrade of `app` to `version` (the policy's best when empty); a dry run changes
/// nothing and shows the checks and the exact Git diff.
#[server]
pub async fn request_upgrade(
    namespace: String,
    app: String,
    version: Option<String>,
    dry_run: bool,
) -> Result<Operation, ServerFnError> {
    backend()?
        .request_upgrade(&namespace, &app, version, dry_run)
        .await
        .map_err(ServerFnError::new)
}

/// Asks for a rollback of the upgrade `upgrade` of `app`.
#[server]
pub async fn request_rollback(
    namespace: String,
    app: String,
    upgrade: String,
    dry_run: bool,
) -> Result<Operation, ServerFnError> {
    backend()?
        .request_rollback(&namespace, &app, &upgrade, dry_run)
        .await
        .map_err(ServerFnError::new)
}
