//! Watch caches (reflector stores) the controllers read instead of asking the API server.

use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A watched, cached stream of one kind: the store for reads, the stream to trigger on.
/// Managed fields (and, for foreign kinds, annotations) are dropped before caching: nothing
/// reads them, and they are much of an object's size.
pub fn reflect<K>(
    api: Api<K>,
    keep_annotations: bool,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        // Streaming lists: the initial state arrives as a watch, one object at a time, instead
        // of as whole LIST pages held in memory at once.
        watcher::watcher(api, watcher::Config::default().streaming_lists())
            .modify(move |o: &mut K| {
                o.managed_fields_mut().clear();
                if !keep_annotations {
                    o.annotations_mut().clear();
                }
            })
            .default_backoff(),
    )
    .touched_objects();
    (reader, stream)
}

/// As [`reflect`], for the objects of one kind that carry the label `label` (any value), with
/// annotations dropped.
pub fn reflect_labelled<K>(
    api: Api<K>,
    label: &str,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(
            api,
            watcher::Config::default().labels(label).streaming_lists(),
        )
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().clear();
        })
        .default_backoff(),
    )
    .touched_objects();
    (reader, stream)
}

/// The changes of every object of one kind in `scope`, names only (a metadata watch: nothing of
/// the objects is kept), to wake the requests that wait for them.
pub fn changes<K>(
    client: &kube::Client,
    scope: &crate::Scope,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher::watcher(api, watcher::Config::default().streaming_lists())
        .default_backoff()
        .touched_objects()
}

/// Pods, for which claims they mount: each cached pod keeps only its name, namespace, deletion
/// mark, phase and the claims of its volumes (a pod cache of a whole cluster stays small).
pub fn reflect_claim_users(
    api: Api<k8s_openapi::api::core::v1::Pod>,
) -> (
    Store<k8s_openapi::api::core::v1::Pod>,
    impl futures::Stream<Item = Result<k8s_openapi::api::core::v1::Pod, watcher::Error>>
    + Send
    + 'static,
) {
    use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Volume};
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default().streaming_lists())
            .modify(|pod: &mut Pod| {
                pod.managed_fields_mut().clear();
                pod.annotations_mut().clear();
                pod.labels_mut().clear();
                pod.metadata.owner_references = None;
                let volumes: Vec<Volume> = pod
                    .spec
                    .take()
                    .and_then(|s| s.volumes)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|v| v.persistent_volume_claim.is_some())
                    .collect();
                pod.spec = Some(PodSpec {
                    volumes: Some(volumes),
                    ..Default::default()
                });
                let phase = pod.status.take().and_then(|s| s.phase);
                pod.status = Some(PodStatus {
                    phase,
                    ..Default::default()
                });
            })
            .default_backoff(),
    )
    .touched_objects();
    (reader, stream)
}
