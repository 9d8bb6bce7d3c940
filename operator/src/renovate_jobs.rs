//! Reads each finished Renovate Job's log and records its findings on the ManagedApps.
//!
//! Renovate Jobs are found by the label `app.kubernetes.io/name=renovate` (config/renovate/
//! runs them from a CronJob); the log is that of the container named `renovate` in the Job's
//! newest pod. Once read, the Job is annotated with what came of it, so a restart of FluxUp does
//! not read it twice.

use crate::Scope;
use crate::ingest;
use crate::renovate::{self, IngestError, MAX_LOG_BYTES};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The label that marks Renovate Jobs.
pub const JOB_SELECTOR: &str = "app.kubernetes.io/name=renovate";
/// The annotation recording that (and how) a Job's output was ingested.
pub const INGESTED: &str = "fluxup.dev/ingested";
/// The container whose log is read.
pub const CONTAINER: &str = "renovate";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Record(#[from] anyhow::Error),
}

struct Context {
    client: Client,
    scope: Scope,
}

/// Whether the Job ended (successfully or not). A failed Renovate run may still have logged
/// its findings; the parser decides.
fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let jobs: Api<Job> = scope.api(&client);
    let ctx = Arc::new(Context { client, scope });
    Controller::new(
        jobs,
        watcher::Config::default()
            .labels(JOB_SELECTOR)
            .streaming_lists(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !finished(&job) || job.annotations().contains_key(INGESTED) {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let source = format!("{ns}/{name}");
    let result = match read_log(&ctx.client, &ns, &name).await {
        Ok(log) => renovate::parse_log(&log),
        Err(why) => Err(IngestError::Unavailable(why)),
    };
    let summary = ingest::record(&ctx.client, &ctx.scope, &source, &result).await?;
    let outcome = match &result {
        Ok(_) => format!("{} updates for {} apps", summary.updates, summary.apps),
        Err(e) => e.reason().to_string(),
    };
    let patch = serde_json::json!({"metadata": {"annotations": {INGESTED: outcome}}});
    Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

/// The log of the Job's newest pod's `renovate` container, capped one byte over the parser's
/// limit so an oversized log is refused as such.
async fn read_log(client: &Client, ns: &str, job: &str) -> Result<Vec<u8>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(|e| format!("listing the Job's pods: {e}"))?;
    let pod = list
        .items
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| "the Job has no pods left (deleted?)".to_string())?;
    let params = LogParams {
        container: Some(CONTAINER.into()),
        limit_bytes: Some((MAX_LOG_BYTES + 1) as i64),
        ..Default::default()
    };
    pods.logs(&pod.name_any(), &params)
        .await
        .map(String::into_bytes)
        .map_err(|e| format!("reading the log of pod {}: {e}", pod.name_any()))
}

fn error_policy(job: Arc<Job>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(job = %job.name_any(), %error, "ingesting a Renovate Job failed; retrying in 30 s");
    let category = match error {
        Error::Kube(e) => crate::metrics::kube_category(e),
        Error::Record(_) => crate::metrics::OTHER,
    };
    crate::metrics::reconcile_error("renovate_jobs", category);
    Action::requeue(Duration::from_secs(30))
}
