//! The dashboard's view of the cluster (server only): watch caches of ManagedApps, their
//! requests and snapshots, read by the server functions and the live feed; writes are
//! UpgradeRequests and RollbackRequests, created exactly as `kubectl apply` would create them.

use crate::model::{AppDetail, AppRow, Operation, OperationKind, SnapshotLine};
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{ManagedApp, RollbackRequest, UpgradeRequest};
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tokio::sync::broadcast;

/// The label FluxUp puts on the snapshots it takes, naming the app.
const APP_LABEL: &str = "fluxup.dev/managed-app";
const REQUEST_LABEL: &str = "fluxup.dev/upgrade-request";

/// What the pages read, and where they create requests.
#[derive(Clone)]
pub struct Backend {
    client: Client,
    apps: Store<ManagedApp>,
    upgrades: Store<UpgradeRequest>,
    rollbacks: Store<RollbackRequest>,
    snapshots: Store<VolumeSnapshot>,
    changes: broadcast::Sender<Operation>,
}

/// Starts a watch of `K` into a cache; each object that changes goes to `changed`.
fn watch<K>(api: Api<K>, config: watcher::Config, changed: impl Fn(&K) + Send + 'static) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config.streaming_lists())
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(next) = stream.next().await {
            match next {
                Ok(object) => changed(&object),
                Err(e) => tracing::debug!(error = %e, "dashboard watch error; retrying"),
            }
        }
    });
    reader
}

impl Backend {
    /// Watches every namespace with `client`.
    pub fn start(client: Client) -> Self {
        let (changes, _) = broadcast::channel(256);
        let (up, back) = (changes.clone(), changes.clone());
        let upgrades = watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            move |r| {
                let _ = up.send(Operation::from(r));
            },
        );
        let rollbacks = watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            move |r| {
                let _ = back.send(Operation::from(r));
            },
        );
        let apps = watch(Api::all(client.clone()), watcher::Config::default(), |_| {});
        // A cluster without the snapshot CRDs has none; the watch retries quietly.
        let snapshots = watch(
            Api::all(client.clone()),
            watcher::Config::default().labels(APP_LABEL),
            |_| {},
        );
        Backend {
            client,
            apps,
            upgrades,
            rollbacks,
            snapshots,
            changes,
        }
    }

    /// Waits (a bounded time) until the caches have their first state, so a page rendered at
    /// start-up does not show an empty cluster.
    pub async fn ready(&self) -> bool {
        let wait = async {
            let _ = self.apps.wait_until_ready().await;
            let _ = self.upgrades.wait_until_ready().await;
            let _ = self.rollbacks.wait_until_ready().await;
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .is_ok()
    }

    /// Every operation as it changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Operation> {
        self.changes.subscribe()
    }

    /// The apps page's rows, sorted by namespace and name.
    pub fn rows(&self) -> Vec<AppRow> {
        let mut rows: Vec<AppRow> = self
            .apps
            .state()
            .iter()
            .map(|a| AppRow::from(a.as_ref()))
            .collect();
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        rows
    }

    /// One app's page, or `None` when there is no such app.
    pub fn detail(&self, namespace: &str, name: &str) -> Option<AppDetail> {
        let app = self
            .apps
            .state()
            .into_iter()
            .find(|a| a.namespace().as_deref() == Some(namespace) && a.name_any() == name)?;
        let upgrades: Vec<UpgradeRequest> = self
            .upgrades
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace))
            .filter(|r| r.spec.managed_app_ref.name == name)
            .map(|r| r.as_ref().clone())
            .collect();
        let rollbacks: Vec<RollbackRequest> = self
            .rollbacks
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace))
            .filter(|r| {
                r.spec.managed_app_ref.as_ref().map(|a| a.name.as_str()) == Some(name)
                    || r.spec
                        .upgrade_request_ref
                        .as_ref()
                        .is_some_and(|u| upgrades.iter().any(|up| up.name_any() == u.name))
            })
            .map(|r| r.as_ref().clone())
            .collect();
        let mut snapshots: Vec<SnapshotLine> = self
            .snapshots
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace))
            .filter(|s| s.labels().get(APP_LABEL).map(String::as_str) == Some(name))
            .map(|s| {
                let status = s.status.clone().unwrap_or_default();
                SnapshotLine {
                    name: s.name_any(),
                    upgrade: s.labels().get(REQUEST_LABEL).cloned(),
                    ready: status.ready_to_use.unwrap_or(false),
                    created: s
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                    size: status.restore_size.as_ref().map(|v| {
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    }),
                }
            })
            .collect();
        snapshots.sort_by(|a, b| b.created.cmp(&a.created));
        Some(AppDetail::new(&app, &upgrades, &rollbacks, snapshots))
    }

    /// One operation, from the caches.
    pub fn operation(&self, kind: OperationKind, namespace: &str, name: &str) -> Option<Operation> {
        let found = |n: Option<String>, o: Option<String>| {
            n.as_deref() == Some(namespace) && o.as_deref() == Some(name)
        };
        match kind {
            OperationKind::Upgrade => self
                .upgrades
                .state()
                .iter()
                .find(|r| found(r.namespace(), r.meta().name.clone()))
                .map(|r| Operation::from(r.as_ref())),
            OperationKind::Rollback => self
                .rollbacks
                .state()
                .iter()
                .find(|r| found(r.namespace(), r.meta().name.clone()))
                .map(|r| Operation::from(r.as_ref())),
        }
    }

    /// The versions a person may pick for `app`, read from its chart source: the policy's best
    /// first, the running one left out.
    pub async fn versions(&self, namespace: &str, name: &str) -> Result<Vec<String>, String> {
        let app = self
            .apps
            .state()
            .into_iter()
            .find(|a| a.namespace().as_deref() == Some(namespace) && a.name_any() == name)
            .ok_or_else(|| format!("there is no ManagedApp {namespace}/{name}"))?;
        let found = fluxup_operator::chart_versions::of_app(&self.client, &app).await?;
        let row = AppRow::from(app.as_ref());
        let best = app
            .status
            .as_ref()
            .and_then(|s| s.available_update.as_ref())
            .and_then(|u| u.chart.clone());
        Ok(crate::model::picker_versions(
            &found.versions,
            best.as_deref(),
            row.current.as_deref(),
        ))
    }

    /// Creates an UpgradeRequest for `app` (to `version`, or the policy's best when `None`).
    pub async fn request_upgrade(
        &self,
        namespace: &str,
        app: &str,
        version: Option<String>,
        dry_run: bool,
    ) -> Result<Operation, String> {
        let mut spec = serde_json::json!({"managedAppRef": {"name": app}, "dryRun": dry_run});
        if let Some(version) = version.filter(|v| !v.trim().is_empty()) {
            spec["targetVersion"] = serde_json::json!({"chart": version.trim()});
        }
        let request: UpgradeRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"generateName": format!("{app}-{}-", if dry_run { "dry-run" } else { "upgrade" }),
                         "namespace": namespace,
                         "labels": {"app.kubernetes.io/created-by": "fluxup-dashboard"}},
            "spec": spec,
        }))
        .map_err(|e| e.to_string())?;
        let created = Api::<UpgradeRequest>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &request)
            .await
            .map_err(api_error)?;
        Ok(Operation::from(&created))
    }

    /// Creates a RollbackRequest undoing `upgrade` of `app`.
    pub async fn request_rollback(
        &self,
        namespace: &str,
        app: &str,
        upgrade: &str,
        dry_run: bool,
    ) -> Result<Operation, String> {
        let request: RollbackRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"generateName": format!("{app}-{}-", if dry_run { "rollback-dry-run" } else { "rollback" }),
                         "namespace": namespace,
                         "labels": {"app.kubernetes.io/created-by": "fluxup-dashboard"}},
            "spec": {"managedAppRef": {"name": app}, "upgradeRequestRef": {"name": upgrade},
                     "dryRun": dry_run},
        }))
        .map_err(|e| e.to_string())?;
        let created = Api::<RollbackRequest>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &request)
            .await
            .map_err(api_error)?;
        Ok(Operation::from(&created))
    }
}

/// The API server's own words for a refused request.
fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    }
}
