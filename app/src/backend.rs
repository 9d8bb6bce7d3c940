//! The dashboard's view of the cluster (server only): watch caches of ManagedApps, their
//! requests and snapshots, read by the server functions and the live feed; writes are
//! UpgradeRequests and RollbackRequests, created exactly as `kubectl apply` would create them.
//!
//! Every read and write is on behalf of a [`Viewer`]: reads from the caches show only what the
//! cluster's RBAC lets that person see (asked with SubjectAccessReviews, remembered for a short
//! while), and writes go through a client that impersonates them, so the API server itself
//! refuses what they may not do.

use crate::model::{
    AppDetail, AppRow, Candidate, Operation, OperationKind, Proposal, Settings, SnapshotLine,
};
use fluxup_api::flux::HelmRelease;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::snapshot::VolumeSnapshotClass;
use fluxup_api::{ManagedApp, RollbackRequest, UpgradeRequest};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Who a request is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Viewer {
    /// The Kubernetes user name.
    pub name: String,
    pub groups: Vec<String>,
    /// Whether to act as this person (impersonation), or as FluxUp itself (no-auth mode).
    pub impersonate: bool,
}

impl Viewer {
    /// A logged-in person.
    pub fn person(name: String, groups: Vec<String>) -> Self {
        Viewer {
            name,
            groups,
            impersonate: true,
        }
    }

    /// FluxUp itself, with its own permissions: the no-auth mode.
    pub fn fluxup() -> Self {
        Viewer {
            name: "fluxup (no auth)".into(),
            groups: Vec::new(),
            impersonate: false,
        }
    }
}

/// Why a request was not done: an HTTP status (as the API server gave it, or 404/422 of our own)
/// and the words for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<kube::Error> for Refusal {
    /// The API server's own status and words (403 for what RBAC forbids, 422 for what the
    /// schema refuses); 502 when it could not be reached.
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => Refusal::new(status.code, status.message),
            other => Refusal::new(
                502,
                format!("the Kubernetes API could not be reached: {other}"),
            ),
        }
    }
}

/// How long an answer of RBAC, or a client for a person, is kept.
const REMEMBER: Duration = Duration::from_secs(30);
/// The most RBAC answers and per-person clients kept at once.
const MAX_REMEMBERED_DECISIONS: usize = 10_000;
const MAX_REMEMBERED_CLIENTS: usize = 1_000;

type Decisions =
    HashMap<(Viewer, &'static str, &'static str, &'static str, String), (bool, Instant)>;

use fluxup_api::ownership::{
    SNAPSHOT_APP_LABEL as APP_LABEL, SNAPSHOT_REQUEST_LABEL as REQUEST_LABEL,
};

/// What the pages read, and where they create requests.
#[derive(Clone)]
pub struct Backend {
    client: Client,
    config: kube::Config,
    decisions: Arc<Mutex<Decisions>>,
    clients: Arc<Mutex<HashMap<Viewer, (Client, Instant)>>>,
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
    /// Watches every namespace with FluxUp's own identity (`config`).
    pub fn start(config: kube::Config) -> Result<Self, kube::Error> {
        Self::start_with(config, None)
    }

    /// [`Backend::start`], counting the requests the dashboard makes as itself (not those it
    /// makes as a person) in `requests`: what its ServiceAccount must be granted.
    pub fn start_with(
        config: kube::Config,
        requests: Option<fluxup_operator::api_requests::ApiRequests>,
    ) -> Result<Self, kube::Error> {
        let client = match &requests {
            Some(counted) => counted.client(config.clone())?,
            None => Client::try_from(config.clone())?,
        };
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
        Ok(Backend {
            client,
            config,
            decisions: Arc::default(),
            clients: Arc::default(),
            apps,
            upgrades,
            rollbacks,
            snapshots,
            changes,
        })
    }

    /// A client acting as `viewer`: impersonating them, or FluxUp's own in no-auth mode.
    fn client_for(&self, viewer: &Viewer) -> Result<Client, Refusal> {
        if !viewer.impersonate {
            return Ok(self.client.clone());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|_, (_, at)| at.elapsed() < REMEMBER * 20);
        if clients.len() >= MAX_REMEMBERED_CLIENTS {
            clients.clear();
        }
        if let Some((client, _)) = clients.get(viewer) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(viewer.name.clone());
        config.auth_info.impersonate_groups =
            (!viewer.groups.is_empty()).then(|| viewer.groups.clone());
        let client = Client::try_from(config).map_err(|e| Refusal::new(500, e.to_string()))?;
        clients.insert(viewer.clone(), (client.clone(), Instant::now()));
        Ok(client)
    }

    /// Whether the cluster's RBAC lets `viewer` `verb` FluxUp's `resource` in `namespace`.
    /// Asked of the API server with a SubjectAccessReview; an error counts as no.
    pub async fn allowed(
        &self,
        viewer: &Viewer,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
    ) -> bool {
        self.allowed_in(viewer, "fluxup.dev", verb, resource, namespace)
            .await
    }

    /// [`Backend::allowed`] for a resource of any API `group`.
    pub async fn allowed_in(
        &self,
        viewer: &Viewer,
        group: &'static str,
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
    ) -> bool {
        if !viewer.impersonate {
            return true;
        }
        let key = (viewer.clone(), group, verb, resource, namespace.to_string());
        if let Some((answer, at)) = self
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < REMEMBER
        {
            return *answer;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(viewer.name.clone()),
                groups: Some(viewer.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = match Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "asking RBAC failed; denying");
                false
            }
        };
        let mut decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        decisions.retain(|_, (_, at)| at.elapsed() < REMEMBER);
        // Bounded: many people (or one asking about many namespaces) cannot grow it for ever.
        if decisions.len() >= MAX_REMEMBERED_DECISIONS {
            decisions.clear();
        }
        decisions.insert(key, (answer, Instant::now()));
        answer
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

    /// The apps page's rows `viewer` may see, sorted by namespace and name.
    pub async fn rows(&self, viewer: &Viewer) -> Vec<AppRow> {
        let mut rows: Vec<AppRow> = self
            .apps
            .state()
            .iter()
            .map(|a| AppRow::from(a.as_ref()))
            .collect();
        let mut visible = HashMap::new();
        for row in &rows {
            if !visible.contains_key(&row.namespace) {
                let may = self
                    .allowed(viewer, "list", "managedapps", &row.namespace)
                    .await;
                visible.insert(row.namespace.clone(), may);
            }
        }
        rows.retain(|r| visible.get(&r.namespace).copied().unwrap_or(false));
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        rows
    }

    /// One app's page, or `None` when there is no such app or `viewer` may not see it.
    pub async fn detail(
        &self,
        viewer: &Viewer,
        namespace: &str,
        name: &str,
    ) -> Result<AppDetail, Refusal> {
        let not_found = || {
            Refusal::new(
                404,
                format!("there is no ManagedApp {namespace}/{name} you may see"),
            )
        };
        if !self.allowed(viewer, "get", "managedapps", namespace).await {
            return Err(not_found());
        }
        let mut detail = self.detail_of(namespace, name).ok_or_else(not_found)?;
        // Who may see the app does not by that alone see its requests and snapshots.
        let see_upgrades = self
            .allowed(viewer, "get", "upgraderequests", namespace)
            .await;
        let see_rollbacks = self
            .allowed(viewer, "get", "rollbackrequests", namespace)
            .await;
        detail.history.retain(|op| match op.kind {
            OperationKind::Upgrade => see_upgrades,
            OperationKind::Rollback => see_rollbacks,
        });
        if !self
            .allowed_in(
                viewer,
                "snapshot.storage.k8s.io",
                "list",
                "volumesnapshots",
                namespace,
            )
            .await
        {
            detail.snapshots.clear();
        }
        detail.can_upgrade = self
            .allowed(viewer, "create", "upgraderequests", namespace)
            .await;
        detail.can_roll_back = self
            .allowed(viewer, "create", "rollbackrequests", namespace)
            .await;
        Ok(detail)
    }

    fn detail_of(&self, namespace: &str, name: &str) -> Option<AppDetail> {
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
            .map(|s| snapshot_line(s))
            .collect();
        snapshots.sort_by(|a, b| b.created.cmp(&a.created));
        Some(AppDetail::new(&app, &upgrades, &rollbacks, snapshots))
    }

    /// Whether `viewer` may see `op` (the live feed sends only those).
    pub async fn may_see(&self, viewer: &Viewer, op: &Operation) -> bool {
        let resource = match op.kind {
            OperationKind::Upgrade => "upgraderequests",
            OperationKind::Rollback => "rollbackrequests",
        };
        self.allowed(viewer, "get", resource, &op.namespace).await
    }

    /// One operation, from the caches, if `viewer` may see it.
    pub async fn operation(
        &self,
        viewer: &Viewer,
        kind: OperationKind,
        namespace: &str,
        name: &str,
    ) -> Result<Operation, Refusal> {
        let not_found = || {
            Refusal::new(
                404,
                format!("there is no {kind:?}Request {namespace}/{name} you may see"),
            )
        };
        let op = self
            .find_operation(kind, namespace, name)
            .ok_or_else(not_found)?;
        if self.may_see(viewer, &op).await {
            Ok(op)
        } else {
            Err(not_found())
        }
    }

    fn find_operation(
        &self,
        kind: OperationKind,
        namespace: &str,
        name: &str,
    ) -> Option<Operation> {
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
    pub async fn versions(
        &self,
        viewer: &Viewer,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<String>, Refusal> {
        if !self.allowed(viewer, "get", "managedapps", namespace).await {
            return Err(Refusal::new(
                404,
                format!("there is no ManagedApp {namespace}/{name} you may see"),
            ));
        }
        let app = self
            .apps
            .state()
            .into_iter()
            .find(|a| a.namespace().as_deref() == Some(namespace) && a.name_any() == name)
            .ok_or_else(|| {
                Refusal::new(404, format!("there is no ManagedApp {namespace}/{name}"))
            })?;
        // Read as the person: FluxUp's own identity does not read chart sources for them.
        let found = fluxup_operator::chart_versions::of_app(&self.client_for(viewer)?, &app)
            .await
            .map_err(|why| Refusal::new(502, why))?;
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
        viewer: &Viewer,
        namespace: &str,
        app: &str,
        version: Option<String>,
        dry_run: bool,
    ) -> Result<Operation, Refusal> {
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
        .map_err(|e| Refusal::new(422, e.to_string()))?;
        let created = Api::<UpgradeRequest>::namespaced(self.client_for(viewer)?, namespace)
            .create(&PostParams::default(), &request)
            .await?;
        Ok(Operation::from(&created))
    }

    /// Creates a RollbackRequest undoing `upgrade` of `app`.
    pub async fn request_rollback(
        &self,
        viewer: &Viewer,
        namespace: &str,
        app: &str,
        upgrade: &str,
        dry_run: bool,
    ) -> Result<Operation, Refusal> {
        let request: RollbackRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
            "metadata": {"generateName": format!("{app}-{}-", if dry_run { "rollback-dry-run" } else { "rollback" }),
                         "namespace": namespace,
                         "labels": {"app.kubernetes.io/created-by": "fluxup-dashboard"}},
            "spec": {"managedAppRef": {"name": app}, "upgradeRequestRef": {"name": upgrade},
                     "dryRun": dry_run},
        }))
        .map_err(|e| Refusal::new(422, e.to_string()))?;
        let created = Api::<RollbackRequest>::namespaced(self.client_for(viewer)?, namespace)
            .create(&PostParams::default(), &request)
            .await?;
        Ok(Operation::from(&created))
    }

    /// The Flux HelmReleases `viewer` may list, as candidates for a ManagedApp: with the
    /// Kustomization that applies them (the labels kustomize-controller sets) and the ManagedApp
    /// that already manages them, if any.
    pub async fn candidates(&self, viewer: &Viewer) -> Result<Vec<Candidate>, Refusal> {
        let releases = Api::<HelmRelease>::all(self.client_for(viewer)?)
            .list(&Default::default())
            .await?;
        let apps = self.apps.state();
        let mut candidates: Vec<Candidate> = releases
            .items
            .iter()
            .map(|hr| {
                let namespace = hr.namespace().unwrap_or_default();
                let name = hr.name_any();
                let managed_by = apps
                    .iter()
                    .find(|a| {
                        a.spec.helm_release_ref.name == name
                            && a.helm_release_namespace() == Some(namespace.as_str())
                    })
                    .map(|a| format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()));
                Candidate {
                    chart: hr
                        .spec
                        .chart
                        .as_ref()
                        .map(|c| c.spec.chart.clone())
                        .or_else(|| hr.spec.chart_ref.as_ref().map(|r| r.name.clone())),
                    version: hr
                        .status
                        .as_ref()
                        .and_then(|s| s.history.first())
                        .map(|h| h.chart_version.clone()),
                    kustomization: kustomization_of(hr),
                    managed_by,
                    namespace,
                    name,
                }
            })
            .collect();
        candidates.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(candidates)
    }

    /// The ManagedApp FluxUp proposes for HelmRelease `namespace/name`: its Kustomization, the
    /// release's volumes (the claims it made, found as the ManagedApp controller finds them)
    /// and the default VolumeSnapshotClass. Read as `viewer`.
    pub async fn propose(
        &self,
        viewer: &Viewer,
        namespace: &str,
        name: &str,
    ) -> Result<Proposal, Refusal> {
        let client = self.client_for(viewer)?;
        let hr = Api::<HelmRelease>::namespaced(client.clone(), namespace)
            .get(name)
            .await?;
        let Some(kustomization) = kustomization_of(&hr) else {
            return Err(Refusal::new(
                422,
                format!(
                    "HelmRelease {namespace}/{name} is not applied by a Flux Kustomization (no kustomize.toolkit.fluxcd.io labels): FluxUp needs one to pause Flux during upgrades"
                ),
            ));
        };
        let target = hr
            .spec
            .target_namespace
            .clone()
            .unwrap_or_else(|| namespace.to_string());
        // The claims the release made, found as the ManagedApp controller finds them.
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &target)
            .list(&Default::default())
            .await?;
        let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), &target)
            .list(&Default::default())
            .await?;
        let pvcs = fluxup_operator::managed_app::resolve::found_claims(
            (namespace, name),
            &claims.items.into_iter().map(Arc::new).collect::<Vec<_>>(),
            &stateful_sets
                .items
                .into_iter()
                .map(Arc::new)
                .collect::<Vec<_>>(),
        );
        // Names and annotations are all it needs (a class has no `spec` to read, either). A
        // cluster without snapshot classes proposes none.
        let classes = Api::<VolumeSnapshotClass>::all(self.client.clone())
            .list_metadata(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "listing VolumeSnapshotClasses failed");
                Vec::new()
            });
        let default_class = classes
            .iter()
            .find(|c| {
                c.annotations()
                    .get("snapshot.storage.kubernetes.io/is-default-class")
                    .is_some_and(|v| v == "true")
            })
            .or(classes.first())
            .map(|c| c.name_any());
        let mut proposal = Proposal {
            namespace: namespace.to_string(),
            name: name.to_string(),
            helm_release: name.to_string(),
            kustomization,
            pvcs,
            snapshot_class: default_class,
            manifest: String::new(),
        };
        proposal.manifest = serde_yaml::to_string(&proposal.managed_app()).unwrap_or_default();
        Ok(proposal)
    }

    /// Creates the proposed ManagedApp as `viewer`.
    pub async fn create_app(
        &self,
        viewer: &Viewer,
        proposal: &Proposal,
    ) -> Result<AppRow, Refusal> {
        let app: ManagedApp = serde_json::from_value(proposal.managed_app())
            .map_err(|e| Refusal::new(422, e.to_string()))?;
        let created = Api::<ManagedApp>::namespaced(self.client_for(viewer)?, &proposal.namespace)
            .create(&PostParams::default(), &app)
            .await?;
        Ok(AppRow::from(&created))
    }

    /// Changes the version policy of `part` (`chart` or a running image's name) in ManagedApp
    /// `namespace/app`, as the person: kubectl shows it in the spec, and the controller holds
    /// back what it excludes from then on. A concurrent change of the app is refused, not merged.
    pub async fn change_policy(
        &self,
        viewer: &Viewer,
        namespace: &str,
        app: &str,
        part: &str,
        change: &crate::model::PolicyChange,
    ) -> Result<ManagedApp, Refusal> {
        use crate::model::PolicyChange;
        if let PolicyChange::Skip { version } | PolicyChange::Unskip { version } = change
            && (version.trim().is_empty() || version.len() > 128)
        {
            return Err(Refusal::new(422, "no version given"));
        }
        let api = Api::<ManagedApp>::namespaced(self.client_for(viewer)?, namespace);
        let mut current = api.get(app).await?;
        let running = current
            .status
            .as_ref()
            .and_then(|s| s.current_version.clone())
            .unwrap_or_default();
        let policy = current
            .spec
            .version_policy
            .get_or_insert_with(Default::default);
        let (running, constraint, skip) = if part == "chart" {
            let chart = policy.chart.get_or_insert_with(Default::default);
            (running.chart, &mut chart.constraint, &mut chart.skip)
        } else {
            // Only an image the app runs or already has rules for: the name is the person's
            // input, and the spec is no place for made-up entries.
            let tag = running
                .images
                .iter()
                .find(|i| i.name == part)
                .map(|i| i.tag.clone());
            if tag.is_none() && !policy.images.iter().any(|i| i.name == part) {
                return Err(Refusal::new(422, format!("the app runs no image {part:?}")));
            }
            if !policy.images.iter().any(|i| i.name == part) {
                policy.images.push(fluxup_api::ImagePolicy {
                    name: part.to_string(),
                    ..Default::default()
                });
            }
            let rule = policy
                .images
                .iter_mut()
                .find(|i| i.name == part)
                .ok_or_else(|| Refusal::new(422, "no such image"))?;
            (tag.flatten(), &mut rule.constraint, &mut rule.skip)
        };
        match change {
            PolicyChange::Skip { version } => {
                if !skip.iter().any(|v| v == version) {
                    skip.push(version.to_string());
                }
            }
            PolicyChange::Unskip { version } => skip.retain(|v| v != version),
            PolicyChange::StayOn { on } => {
                let running = running.ok_or_else(|| {
                    Refusal::new(409, "FluxUp has not read the version running now yet")
                })?;
                *constraint = Some(fluxup_api::stay_on(&running, *on).ok_or_else(|| {
                    Refusal::new(
                        422,
                        format!("{running:?} is not a version a range can keep it on"),
                    )
                })?);
            }
            PolicyChange::Unpin => *constraint = None,
        }
        Ok(api.replace(app, &PostParams::default(), &current).await?)
    }

    /// Changes which events and namespaces notification sinks get, in the ConfigMap, as the
    /// person: RBAC on that ConfigMap decides who may. Addresses and Secrets are not touched; a
    /// concurrent change is refused, not merged.
    pub async fn change_sinks(
        &self,
        viewer: &Viewer,
        changes: &[fluxup_operator::notify::settings::Filters],
    ) -> Result<Settings, Refusal> {
        use fluxup_api::ownership::{NOTIFICATIONS_CONFIG_MAP, NOTIFICATIONS_KEY};
        use k8s_openapi::api::core::v1::ConfigMap;
        let namespace = fluxup_operator::leader::lease_namespace();
        let api = Api::<ConfigMap>::namespaced(self.client_for(viewer)?, &namespace);
        let Some(mut config) = api.get_opt(NOTIFICATIONS_CONFIG_MAP).await? else {
            return Err(Refusal::new(
                404,
                format!(
                    "there is no ConfigMap {namespace}/{NOTIFICATIONS_CONFIG_MAP}: sinks are added there"
                ),
            ));
        };
        let data = config.data.get_or_insert_with(Default::default);
        let text = data.get(NOTIFICATIONS_KEY).cloned().unwrap_or_default();
        let changed = fluxup_operator::notify::settings::set_filters(&text, changes)
            .map_err(|why| Refusal::new(422, why))?;
        data.insert(NOTIFICATIONS_KEY.to_string(), changed);
        api.replace(NOTIFICATIONS_CONFIG_MAP, &PostParams::default(), &config)
            .await?;
        Ok(self.settings(viewer).await)
    }

    /// The settings page: `viewer` and the notification sinks (names, kinds and filters only).
    pub async fn settings(&self, viewer: &Viewer) -> Settings {
        use fluxup_api::ownership::{NOTIFICATIONS_CONFIG_MAP, NOTIFICATIONS_KEY};
        use fluxup_operator::notify::settings as sinks;
        let namespace = fluxup_operator::leader::lease_namespace();
        let mut settings = Settings {
            user: viewer.name.clone(),
            groups: viewer.groups.clone(),
            auth: if viewer.impersonate {
                "OIDC: you act as yourself (impersonated), with your RBAC".into()
            } else {
                "none (--no-auth): everyone acts as FluxUp itself".into()
            },
            notifications_source: format!("{namespace}/{NOTIFICATIONS_CONFIG_MAP}"),
            events: fluxup_operator::notify::Kind::ALL
                .iter()
                .map(|k| k.reason().to_string())
                .collect(),
            ..Default::default()
        };
        let text = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
            self.client.clone(),
            &namespace,
        )
        .get_opt(NOTIFICATIONS_CONFIG_MAP)
        .await;
        let text = match text {
            Ok(cm) => cm
                .and_then(|cm| cm.data)
                .and_then(|d| d.get(NOTIFICATIONS_KEY).cloned())
                .unwrap_or_default(),
            Err(e) => {
                settings.notifications_error =
                    Some(format!("the ConfigMap could not be read: {e}"));
                return settings;
            }
        };
        match sinks::parse(&text) {
            Ok(list) => {
                settings.sinks = list
                    .into_iter()
                    .map(|s| crate::model::SinkLine {
                        name: s.name,
                        kind: s.kind.label().into(),
                        events: s.events.iter().map(|e| e.reason().to_string()).collect(),
                        namespaces: s.namespaces,
                    })
                    .collect();
            }
            Err(why) => settings.notifications_error = Some(why),
        }
        settings
    }

    /// The upgrades and rollbacks `viewer` may see, newest first.
    pub async fn operations(&self, viewer: &Viewer) -> Vec<Operation> {
        let mut all: Vec<Operation> = self
            .upgrades
            .state()
            .iter()
            .map(|r| Operation::from(r.as_ref()))
            .chain(
                self.rollbacks
                    .state()
                    .iter()
                    .map(|r| Operation::from(r.as_ref())),
            )
            .collect();
        let mut visible = Vec::new();
        for op in all.drain(..) {
            if self.may_see(viewer, &op).await {
                visible.push(op);
            }
        }
        visible.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        visible
    }

    /// Every snapshot FluxUp took in the namespaces where `viewer` may list VolumeSnapshots,
    /// newest first, with its namespace.
    pub async fn all_snapshots(&self, viewer: &Viewer) -> Vec<(String, SnapshotLine)> {
        let mut by_namespace: HashMap<String, bool> = HashMap::new();
        let mut lines = Vec::new();
        // Those being deleted are gone as far as a person is concerned.
        for snapshot in self
            .snapshots
            .state()
            .into_iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
        {
            let namespace = snapshot.namespace().unwrap_or_default();
            let may = match by_namespace.get(&namespace) {
                Some(may) => *may,
                None => {
                    let may = self
                        .allowed_in(
                            viewer,
                            "snapshot.storage.k8s.io",
                            "list",
                            "volumesnapshots",
                            &namespace,
                        )
                        .await;
                    by_namespace.insert(namespace.clone(), may);
                    may
                }
            };
            if may {
                lines.push((namespace, snapshot_line(&snapshot)));
            }
        }
        lines.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(a.1.name.cmp(&b.1.name)));
        lines
    }

    /// FluxUp's snapshots in `namespace`, as `viewer` may list them (the API server decides).
    pub async fn snapshots(
        &self,
        viewer: &Viewer,
        namespace: &str,
    ) -> Result<Vec<SnapshotLine>, Refusal> {
        let api = Api::<VolumeSnapshot>::namespaced(self.client_for(viewer)?, namespace);
        let list = api
            .list(&kube::api::ListParams::default().labels(APP_LABEL))
            .await?;
        let mut lines: Vec<SnapshotLine> = list.items.iter().map(snapshot_line).collect();
        lines.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(lines)
    }

    /// Deletes one of FluxUp's snapshots as `viewer`. Snapshots FluxUp did not take are not
    /// touched (404): this is not a general snapshot tool.
    pub async fn delete_snapshot(
        &self,
        viewer: &Viewer,
        namespace: &str,
        name: &str,
    ) -> Result<(), Refusal> {
        let api = Api::<VolumeSnapshot>::namespaced(self.client_for(viewer)?, namespace);
        let snapshot = api.get(name).await?;
        if !snapshot.labels().contains_key(APP_LABEL) {
            return Err(Refusal::new(
                404,
                format!("{namespace}/{name} is not a snapshot FluxUp took"),
            ));
        }
        if let Some(rollback) = self.restoring_from(namespace, name) {
            return Err(Refusal::new(
                409,
                format!(
                    "{name} is in use: RollbackRequest {rollback} is restoring the app from it; \
                     delete it once the rollback has ended"
                ),
            ));
        }
        api.delete(name, &Default::default()).await?;
        Ok(())
    }
}

impl Backend {
    /// The rollback in `namespace` that restores from snapshot `name` and has not released
    /// what it holds yet, if any.
    fn restoring_from(&self, namespace: &str, name: &str) -> Option<String> {
        self.rollbacks
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace) && !r.spec.dry_run)
            .find(|r| {
                r.status.as_ref().is_some_and(|s| {
                    s.released_at.is_none()
                        && s.restored_from
                            .as_ref()
                            .is_some_and(|f| f.snapshot_names.iter().any(|n| n == name))
                })
            })
            .map(|r| r.name_any())
    }
}

/// `namespace/name` of the Flux Kustomization that applied `hr` (kustomize-controller labels what
/// it applies).
fn kustomization_of(hr: &HelmRelease) -> Option<String> {
    let labels = hr.labels();
    let name = labels.get("kustomize.toolkit.fluxcd.io/name")?;
    let namespace = labels
        .get("kustomize.toolkit.fluxcd.io/namespace")
        .map_or("flux-system", String::as_str);
    Some(format!("{namespace}/{name}"))
}

/// A snapshot as the pages show it.
fn snapshot_line(s: &VolumeSnapshot) -> SnapshotLine {
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
}
