//! `/api/v1`: the dashboard's operations for scripts, as JSON (documented in
//! `docs/api-v1.yaml`). Each handler acts for the caller the authentication found, through the
//! same [`Backend`] the pages use; errors are `{"error": "..."}` with the status Kubernetes gave.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json, Router};
use fluxup_app::backend::{Backend, Refusal, Viewer};
use fluxup_app::model::OperationKind;
use serde::Deserialize;

/// Every route of the API, as `docs/api-v1.yaml` lists them (a test keeps the two the same).
pub const ROUTES: [(&str, &str); 13] = [
    ("get", "/apps"),
    ("post", "/apps"),
    ("get", "/apps/{namespace}/{name}"),
    ("get", "/apps/{namespace}/{name}/updates"),
    ("post", "/apps/{namespace}/{name}/upgrade"),
    ("post", "/apps/{namespace}/{name}/rollback"),
    ("post", "/apps/{namespace}/{name}/policy"),
    ("get", "/upgrades"),
    ("get", "/upgrades/{namespace}/{name}"),
    ("get", "/rollbacks/{namespace}/{name}"),
    ("get", "/snapshots/{namespace}"),
    ("delete", "/snapshots/{namespace}/{name}"),
    ("put", "/settings"),
];

/// The API's routes under `/api/v1`, built from [`ROUTES`].
pub fn routes(backend: Option<Backend>) -> Router {
    let mut api = Router::new();
    for (method, path) in ROUTES {
        api = api.route(path, handler(method, path));
    }
    let api = api
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API route: see docs/api-v1.yaml",
            )
        })
        .with_state(backend);
    Router::new().nest("/api/v1", api)
}

/// The handler of one route of [`ROUTES`].
fn handler(method: &str, path: &str) -> MethodRouter<Option<Backend>> {
    match (method, path) {
        ("get", "/apps") => get(apps),
        ("post", "/apps") => post(create_app),
        ("get", "/apps/{namespace}/{name}") => get(app),
        ("get", "/apps/{namespace}/{name}/updates") => get(updates),
        ("post", "/apps/{namespace}/{name}/upgrade") => post(upgrade),
        ("post", "/apps/{namespace}/{name}/rollback") => post(rollback),
        ("post", "/apps/{namespace}/{name}/policy") => post(change_policy),
        ("get", "/upgrades") => get(operations),
        ("get", "/upgrades/{namespace}/{name}") => get(upgrade_status),
        ("get", "/rollbacks/{namespace}/{name}") => get(rollback_status),
        ("get", "/snapshots/{namespace}") => get(snapshots),
        ("delete", "/snapshots/{namespace}/{name}") => delete(delete_snapshot),
        ("put", "/settings") => put(change_settings),
        other => unreachable!("no handler for {other:?}"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.message,
        )
    }
}

/// An error as the API answers it.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn connected(backend: Option<Backend>) -> Result<Backend> {
    backend.ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "FluxUp is not connected to Kubernetes".into(),
        )
    })
}

async fn apps(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.ready().await;
    Ok(Json(backend.rows(&viewer).await).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewAppBody {
    namespace: String,
    helm_release: String,
}

async fn create_app(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let backend = connected(backend)?;
    let request: NewAppBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the body must be {{\"namespace\": \"<namespace>\", \"helmRelease\": \"<HelmRelease name>\"}}: {e}"
            ),
        )
    })?;
    let proposal = backend
        .propose(&viewer, &request.namespace, &request.helm_release)
        .await?;
    let row = backend.create_app(&viewer, &proposal).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// `{"sinks": [{"name": "<sink>", "events": [...], "namespaces": [...]}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    sinks: Vec<fluxup_operator::notify::settings::Filters>,
}

async fn change_settings(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let backend = connected(backend)?;
    let request: SettingsBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the body must be {{\"sinks\": [{{\"name\": \"<sink>\", \"events\": [\"UpgradeFailed\"], \"namespaces\": []}}]}}: {e}"
            ),
        )
    })?;
    let settings = backend.change_sinks(&viewer, &request.sinks).await?;
    Ok(Json(settings).into_response())
}

/// `{"part": "chart" | "<image>", "action": "skip" | "unskip" | "stayOn" | "unpin", …}`.
#[derive(Deserialize)]
struct PolicyBody {
    part: String,
    #[serde(flatten)]
    change: fluxup_app::model::PolicyChange,
}

async fn change_policy(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let backend = connected(backend)?;
    let request: PolicyBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the body must be {{\"part\": \"chart\", \"action\": \"skip\", \"version\": \"1.2.3\"}} \
                 (actions: skip, unskip, stayOn with \"on\": \"major\"|\"minor\", unpin): {e}"
            ),
        )
    })?;
    // From the object as written: the watch cache may not have it yet.
    let updated = backend
        .change_policy(&viewer, &namespace, &name, &request.part, &request.change)
        .await?;
    Ok(Json(fluxup_app::model::part_policies(&updated)).into_response())
}

async fn app(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.ready().await;
    let detail = backend.detail(&viewer, &namespace, &name).await?;
    Ok(Json(detail).into_response())
}

async fn updates(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.ready().await;
    let versions = backend.versions(&viewer, &namespace, &name).await?;
    let row = backend
        .rows(&viewer)
        .await
        .into_iter()
        .find(|r| r.namespace == namespace && r.name == name);
    Ok(Json(serde_json::json!({
        "current": row.as_ref().and_then(|r| r.current.clone()),
        "available": row.and_then(|r| r.available),
        "versions": versions,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpgradeBody {
    version: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollbackBody {
    upgrade: String,
    #[serde(default)]
    dry_run: bool,
}

/// A JSON body, or a 422 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body is not what this route takes: {e}"),
        )
    })
}

async fn upgrade(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let backend = connected(backend)?;
    let request: UpgradeBody = body(&bytes)?;
    let op = backend
        .request_upgrade(&viewer, &namespace, &name, request.version, request.dry_run)
        .await?;
    Ok((StatusCode::CREATED, Json(op)).into_response())
}

async fn rollback(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let backend = connected(backend)?;
    let request: RollbackBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the body must be {{\"upgrade\": \"<UpgradeRequest name>\"}}: {e}"),
        )
    })?;
    let op = backend
        .request_rollback(
            &viewer,
            &namespace,
            &name,
            &request.upgrade,
            request.dry_run,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(op)).into_response())
}

async fn operations(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.ready().await;
    Ok(Json(backend.operations(&viewer).await).into_response())
}

async fn operation(
    backend: Option<Backend>,
    viewer: Viewer,
    kind: OperationKind,
    namespace: String,
    name: String,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.ready().await;
    let op = backend.operation(&viewer, kind, &namespace, &name).await?;
    Ok(Json(op).into_response())
}

async fn upgrade_status(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response> {
    operation(backend, viewer, OperationKind::Upgrade, namespace, name).await
}

async fn rollback_status(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response> {
    operation(backend, viewer, OperationKind::Rollback, namespace, name).await
}

async fn snapshots(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path(namespace): Path<String>,
) -> Result<Response> {
    let backend = connected(backend)?;
    Ok(Json(backend.snapshots(&viewer, &namespace).await?).into_response())
}

async fn delete_snapshot(
    State(backend): State<Option<Backend>>,
    Extension(viewer): Extension<Viewer>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response> {
    let backend = connected(backend)?;
    backend.delete_snapshot(&viewer, &namespace, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api-v1.yaml documents exactly the routes the server has.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(include_str!("../../docs/api-v1.yaml")).unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_mapping().unwrap() {
            for (method, _) in item.as_mapping().unwrap() {
                let method = method.as_str().unwrap();
                if method != "parameters" {
                    documented.push((method.into(), path.as_str().unwrap().into()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        // And each has its handler.
        let _ = routes(None);
    }

    #[test]
    fn bodies_are_checked() {
        let empty: UpgradeBody = body(b" ").unwrap();
        assert!(empty.version.is_none() && !empty.dry_run);
        let given: UpgradeBody = body(br#"{"version": "1.1.0", "dryRun": true}"#).unwrap();
        assert_eq!(given.version.as_deref(), Some("1.1.0"));
        assert!(given.dry_run);
        let Err(ApiError(status, message)) = body::<UpgradeBody>(br#"{"verison": "1"}"#) else {
            panic!("a typo is refused");
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("verison"), "{message}");
    }
}
