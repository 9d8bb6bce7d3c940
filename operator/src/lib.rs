//! FluxUp's operator: the controllers that watch ManagedApps, UpgradeRequests and
//! RollbackRequests and act on Flux, Git and CSI snapshots. No HTTP, no UI: the `fluxup` binary
//! starts these controllers in its own tokio runtime.

pub mod api_requests;
pub mod caches;
pub mod chart_versions;
pub mod duration;
pub mod events;
pub mod git;
pub mod ingest;
pub mod leader;
pub mod managed_app;
pub mod metrics;
pub mod notify;
pub mod operation;
pub mod outbound;
pub mod policy;
pub mod rbac;
pub mod references;
pub mod renovate;
pub mod renovate_jobs;
pub mod rollback;
pub mod secrets;
pub mod snapshots;
pub mod upgrade;
pub mod workload_health;
pub mod yaml_edit;

/// Which namespaces the controllers watch.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// One namespace, or every namespace when `None` (the default).
    pub namespace: Option<String>,
}

impl Scope {
    /// The API for kind `K` in this scope.
    pub fn api<K>(&self, client: &kube::Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        }
    }
}
