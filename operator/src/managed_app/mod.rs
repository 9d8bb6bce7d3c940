//! The ManagedApp controller: resolves each app against watch caches of the objects it names
//! (HelmRelease, chart source, Kustomization, PVCs, workloads), writes its status by
//! server-side apply when something changed, and records Events on real transitions.
//!
//! Every read during a reconcile comes from the reflector stores: a reconcile makes no API
//! request unless the status changes.

pub mod resolve;
pub mod status;

use crate::{Scope, events};
use fluxup_api::flux::{HelmRelease, HelmRepository, Kustomization, OCIRepository};
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{ManagedApp, condition};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use resolve::Cluster;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The field manager of the status fields this controller owns.
pub const FIELD_MANAGER: &str = "fluxup-managedapp";

/// Reconciles running at once.
const CONCURRENCY: u16 = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Kube(#[from] kube::Error),
}

/// The watch caches a reconcile reads.
#[derive(Clone)]
pub struct Stores {
    pub apps: Store<ManagedApp>,
    pub helm_releases: Store<HelmRelease>,
    pub helm_repositories: Store<HelmRepository>,
    pub oci_repositories: Store<OCIRepository>,
    pub kustomizations: Store<Kustomization>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
}

fn key<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(namespace)
}

impl Stores {
    /// Whether every cache has its initial state. No app is judged on a half-filled cache: it
    /// would say "HelmRelease not found", then correct itself (two writes and a false alarm).
    /// Not awaited: the caches fill only while the controller polls its streams, so a reconcile
    /// that waited for them would hold up the very thing it waits for.
    fn synced(&self) -> bool {
        self.unsynced().is_empty()
    }

    /// The kinds whose cache has not had its first state yet.
    fn unsynced(&self) -> Vec<&'static str> {
        use futures::FutureExt;
        [
            ("ManagedApp", self.apps.wait_until_ready().boxed()),
            ("HelmRelease", self.helm_releases.wait_until_ready().boxed()),
            (
                "HelmRepository",
                self.helm_repositories.wait_until_ready().boxed(),
            ),
            (
                "OCIRepository",
                self.oci_repositories.wait_until_ready().boxed(),
            ),
            (
                "Kustomization",
                self.kustomizations.wait_until_ready().boxed(),
            ),
            (
                "PersistentVolumeClaim",
                self.pvcs.wait_until_ready().boxed(),
            ),
            ("Deployment", self.deployments.wait_until_ready().boxed()),
            ("StatefulSet", self.stateful_sets.wait_until_ready().boxed()),
        ]
        .into_iter()
        .filter_map(|(kind, ready)| ready.now_or_never().is_none().then_some(kind))
        .collect()
    }
}

impl Cluster for Stores {
    fn helm_release(&self, ns: &str, name: &str) -> Option<Arc<HelmRelease>> {
        self.helm_releases.get(&key(ns, name))
    }
    fn helm_repository(&self, ns: &str, name: &str) -> Option<Arc<HelmRepository>> {
        self.helm_repositories.get(&key(ns, name))
    }
    fn oci_repository(&self, ns: &str, name: &str) -> Option<Arc<OCIRepository>> {
        self.oci_repositories.get(&key(ns, name))
    }
    fn kustomization(&self, ns: &str, name: &str) -> Option<Arc<Kustomization>> {
        self.kustomizations.get(&key(ns, name))
    }
    fn pvc(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.pvcs.get(&key(ns, name))
    }
    fn pvcs(&self, ns: &str) -> Vec<Arc<PersistentVolumeClaim>> {
        self.pvcs
            .state_filter(|p| p.metadata.namespace.as_deref() == Some(ns))
    }
    fn deployments(&self, ns: &str) -> Vec<Arc<Deployment>> {
        self.deployments
            .state_filter(|d| d.metadata.namespace.as_deref() == Some(ns))
    }
    fn stateful_sets(&self, ns: &str) -> Vec<Arc<StatefulSet>> {
        self.stateful_sets
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns))
    }
}

struct Context {
    client: Client,
    recorder: Recorder,
    stores: Stores,
    started: std::time::Instant,
    warned_unsynced: std::sync::atomic::AtomicBool,
    /// Answers about references to other namespaces, by app uid, generation and person.
    references: std::sync::Mutex<HashMap<ReferenceKey, ReferenceAnswer>>,
}

type ReferenceKey = (String, Option<i64>, Option<crate::references::Person>);
type ReferenceAnswer = (Result<(), String>, std::time::Instant);

/// How long an answer about another namespace's object is kept: a new RoleBinding takes
/// effect within it.
const REFERENCES_KEPT: Duration = Duration::from_secs(60);
/// The most answers kept.
const REFERENCES_MAX: usize = 10_000;

/// Apps whose HelmRelease is `namespace/name`.
fn apps_of_release(apps: &Store<ManagedApp>, ns: &str, name: &str) -> Vec<ObjectRef<ManagedApp>> {
    apps.state()
        .iter()
        .filter(|a| a.spec.helm_release_ref.name == name && a.helm_release_namespace() == Some(ns))
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Apps whose HelmRelease takes its chart from the source `kind` `namespace/name`.
fn apps_of_source(
    apps: &Store<ManagedApp>,
    releases: &Store<HelmRelease>,
    kind: &str,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<ManagedApp>> {
    releases
        .state()
        .iter()
        .filter(|hr| {
            let hr_ns = hr.namespace().unwrap_or_default();
            let source = hr
                .spec
                .chart_ref
                .clone()
                .or_else(|| hr.spec.chart.as_ref().map(|c| c.spec.source_ref.clone()));
            source.is_some_and(|s| {
                s.kind == kind && s.name == name && s.namespace.as_deref().unwrap_or(&hr_ns) == ns
            })
        })
        .flat_map(|hr| apps_of_release(apps, &hr.namespace().unwrap_or_default(), &hr.name_any()))
        .collect()
}

/// Apps in `namespace` that snapshot volumes: a PVC or workload there may be theirs.
fn apps_with_volumes(apps: &Store<ManagedApp>, ns: Option<String>) -> Vec<ObjectRef<ManagedApp>> {
    apps.state()
        .iter()
        .filter(|a| a.namespace() == ns && a.spec.volume_snapshots.is_some())
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

/// Apps a Deployment or StatefulSet concerns: those with volumes in its namespace (it may mount
/// them), and the app of the HelmRelease whose labels it carries (its health).
fn apps_of_workload(
    apps: &Store<ManagedApp>,
    meta: &kube::core::ObjectMeta,
) -> Vec<ObjectRef<ManagedApp>> {
    let mut out = apps_with_volumes(apps, meta.namespace.clone());
    let labels = meta.labels.clone().unwrap_or_default();
    if let (Some(ns), Some(name)) = (
        labels.get(crate::workload_health::RELEASE_NAMESPACE_LABEL),
        labels.get(crate::workload_health::RELEASE_NAME_LABEL),
    ) {
        out.extend(apps_of_release(apps, ns, name));
    }
    out
}

/// Runs the ManagedApp controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (helm_releases, hr_stream) =
        crate::caches::reflect::<HelmRelease>(scope.api(&client), false);
    let (helm_repositories, hrepo_stream) =
        crate::caches::reflect::<HelmRepository>(scope.api(&client), false);
    let (oci_repositories, oci_stream) =
        crate::caches::reflect::<OCIRepository>(scope.api(&client), false);
    let (kustomizations, ks_stream) =
        crate::caches::reflect::<Kustomization>(scope.api(&client), false);
    let (pvcs, pvc_stream) =
        crate::caches::reflect::<PersistentVolumeClaim>(scope.api(&client), false);
    let (deployments, deploy_stream) =
        crate::caches::reflect::<Deployment>(scope.api(&client), false);
    let (stateful_sets, sts_stream) =
        crate::caches::reflect::<StatefulSet>(scope.api(&client), false);
    // The snapshots FluxUp took, for `/metrics`. A cluster without the snapshot CRDs has none:
    // its watch retries with backoff and nothing waits for it.
    let (snapshots, snapshot_writer) = reflector::store();
    let snapshot_stream = reflector::reflector(
        snapshot_writer,
        watcher(
            scope.api::<VolumeSnapshot>(&client),
            watcher::Config::default().labels(crate::snapshots::APP_LABEL),
        )
        .modify(|s: &mut VolumeSnapshot| s.managed_fields_mut().clear())
        .default_backoff(),
    )
    .touched_objects();
    crate::metrics::watch_snapshots(snapshots);

    let (apps, app_stream) = crate::caches::reflect::<ManagedApp>(scope.api(&client), true);
    let controller = Controller::for_stream(app_stream, apps.clone());
    crate::metrics::watch_apps(apps.clone());
    let stores = Stores {
        apps: apps.clone(),
        helm_releases: helm_releases.clone(),
        helm_repositories,
        oci_repositories,
        kustomizations,
        pvcs,
        deployments,
        stateful_sets,
    };
    let ctx = Arc::new(Context {
        recorder: events::recorder(&client),
        client,
        stores,
        started: std::time::Instant::now(),
        warned_unsynced: Default::default(),
        references: Default::default(),
    });

    let (a1, a2, a3, a4, a5, a6, a7) = (
        apps.clone(),
        apps.clone(),
        apps.clone(),
        apps.clone(),
        apps.clone(),
        apps.clone(),
        apps.clone(),
    );
    let (r1, r2) = (helm_releases.clone(), helm_releases);
    controller
        .watches_stream(hr_stream, move |hr: HelmRelease| {
            apps_of_release(&a1, &hr.namespace().unwrap_or_default(), &hr.name_any())
        })
        .watches_stream(hrepo_stream, move |s: HelmRepository| {
            apps_of_source(
                &a2,
                &r1,
                "HelmRepository",
                &s.namespace().unwrap_or_default(),
                &s.name_any(),
            )
        })
        .watches_stream(oci_stream, move |s: OCIRepository| {
            apps_of_source(
                &a3,
                &r2,
                "OCIRepository",
                &s.namespace().unwrap_or_default(),
                &s.name_any(),
            )
        })
        .watches_stream(ks_stream, move |k: Kustomization| {
            let ns = k.namespace().unwrap_or_default();
            a4.state()
                .iter()
                .filter(|a| {
                    a.spec.kustomization_ref.name == k.name_any()
                        && a.kustomization_namespace() == ns
                })
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(pvc_stream, move |p: PersistentVolumeClaim| {
            apps_with_volumes(&a5, p.namespace())
        })
        .watches_stream(deploy_stream, move |d: Deployment| {
            apps_of_workload(&a6, &d.metadata)
        })
        .watches_stream(sts_stream, move |s: StatefulSet| {
            apps_of_workload(&a7, &s.metadata)
        })
        // Read by `/metrics` only: no app needs a reconcile for it.
        .watches_stream(snapshot_stream, |_: VolumeSnapshot| {
            None::<ObjectRef<ManagedApp>>
        })
        // A bounded number of reconciles at once: each may write status, and a thousand
        // concurrent writes would open a thousand connections to the API server.
        .with_config(Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile trigger failed");
            }
        })
        .await;
}

async fn reconcile(app: Arc<ManagedApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.stores.synced() {
        // Say so when it lasts: a watch that cannot start (a missing CRD, RBAC) stops every app.
        if ctx.started.elapsed() > Duration::from_secs(20)
            && !ctx
                .warned_unsynced
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(waiting_for = ?ctx.stores.unsynced(),
                "the watch caches have not filled after 20 s; no app gets status until they do");
        }
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Another namespace's objects are shown and acted on only for a person who may change
    // them: otherwise the status says why, and shows nothing of them.
    let refused = references_refused(&app, &ctx).await;
    let resolution = match &refused {
        Some(why) => resolve::Resolution {
            problems: vec![resolve::Problem::new("ReferenceRefused", why.clone())],
            ..Default::default()
        },
        None => resolve::resolve(&app, &ctx.stores),
    };
    let desired = status::desired_status(&app, &resolution, events::now());
    if status::changes(&app, &desired) {
        let api: Api<ManagedApp> =
            Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1",
            "kind": "ManagedApp",
            "status": desired,
        });
        api.patch_status(
            &app.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        tracing::info!(app = %format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()),
            state = ?desired.state, "status updated");
        publish_transitions(&app, &desired, &ctx).await;
    }
    if refused.is_some() {
        return Ok(Action::requeue(REFERENCES_KEPT));
    }
    // The watches bring every change; this only bounds how stale a missed event can leave status.
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Why `app`'s references to other namespaces are refused, if they are (remembered a while).
async fn references_refused(app: &ManagedApp, ctx: &Context) -> Option<String> {
    let targets = crate::references::elsewhere(app);
    if targets.is_empty() {
        return None;
    }
    let person = crate::references::person_of(&app.metadata);
    let key = (
        app.uid().unwrap_or_default(),
        app.metadata.generation,
        person.clone(),
    );
    {
        let kept = ctx.references.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((answer, at)) = kept.get(&key)
            && at.elapsed() < REFERENCES_KEPT
        {
            return answer.clone().err();
        }
    }
    let ns = app.namespace().unwrap_or_default();
    let answer = crate::references::check(&ctx.client, &ns, person.as_ref(), &targets).await;
    let mut kept = ctx.references.lock().unwrap_or_else(|e| e.into_inner());
    kept.retain(|_, (_, at)| at.elapsed() < REFERENCES_KEPT);
    if kept.len() >= REFERENCES_MAX {
        kept.clear();
    }
    kept.insert(key, (answer.clone(), std::time::Instant::now()));
    answer.err()
}

/// Events for what a person would want to hear about: the app became (un)ready, a new update.
async fn publish_transitions(app: &ManagedApp, new: &fluxup_api::ManagedAppStatus, ctx: &Context) {
    let old = app.status.clone().unwrap_or_default();
    let find = |conds: &[fluxup_api::Condition], t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut news = Vec::new();
    let (old_ready, new_ready) = (
        find(&old.conditions, condition::READY),
        find(&new.conditions, condition::READY),
    );
    if let Some((status, reason, message)) = &new_ready
        && old_ready.as_ref().map(|(s, r, _)| (s, r)) != Some((status, reason))
    {
        // The first status an app gets is not a transition; its condition says it all.
        if old_ready.is_some() {
            news.push((status != "True", reason.clone(), message.clone()));
        }
    }
    if new.available_update.is_some()
        && old.available_update.as_ref().map(|u| (&u.chart, &u.images))
            != new.available_update.as_ref().map(|u| (&u.chart, &u.images))
        && let Some((_, _, message)) = find(&new.conditions, condition::UPDATE_AVAILABLE)
    {
        notify_update(app, new, &message, ctx);
        news.push((false, "UpdateAvailable".into(), message));
    }
    let reference = app.object_ref(&());
    for (warning, reason, note) in news {
        events::publish(
            &ctx.recorder,
            &reference,
            warning,
            "Resolve",
            &reason,
            &note,
        )
        .await;
    }
}

/// Tells the notification sinks about a new update, once per version: the id names the app and
/// the versions offered.
fn notify_update(
    app: &ManagedApp,
    new: &fluxup_api::ManagedAppStatus,
    message: &str,
    ctx: &Context,
) {
    let Some(update) = &new.available_update else {
        return;
    };
    let images = update.images.iter().map(|i| i.reference());
    let offered: Vec<String> = update.chart.iter().cloned().chain(images).collect();
    let id = format!(
        "{}/UpdateAvailable/{}",
        app.uid().unwrap_or_default(),
        offered.join(",")
    );
    let current = new.current_version.as_ref();
    let from = match &update.chart {
        Some(_) => current.and_then(|c| c.chart.clone()),
        None => current
            .and_then(|c| c.images.first())
            .map(|i| i.reference()),
    };
    let to = offered.first().cloned();
    let n = crate::notify::Notification::new(
        crate::notify::Kind::UpdateAvailable,
        id,
        app,
        message.to_string(),
    )
    .versions(from, to);
    crate::notify::send(&ctx.client, n);
}

fn error_policy(app: Arc<ManagedApp>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), %error, "reconcile failed; retrying in 30 s");
    let Error::Kube(e) = error;
    crate::metrics::reconcile_error("managed_app", crate::metrics::kube_category(e));
    Action::requeue(Duration::from_secs(30))
}
