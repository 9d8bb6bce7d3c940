//! Reads each finished Renovate Job's log and records its findings on the ManagedApps.
//!
//! Renovate's output decides which updates every app is offered, so it is read only from Jobs
//! FluxUp trusts ([`Trust`]): Jobs in FluxUp's own namespace, and Jobs owned (controller owner
//! reference, UID checked) by a CronJob named in `FLUXUP_RENOVATE_CRONJOBS` (default: the
//! `renovate` CronJob of config/renovate/ in FluxUp's namespace). Only those namespaces are
//! watched, for Jobs labelled `app.kubernetes.io/name=renovate`; a labelled Job there that no
//! trusted CronJob owns is ignored, with one Warning Event saying why. Findings of a trusted run
//! go to the ManagedApps of every watched namespace: one Renovate scans the whole fleet
//! repository.
//!
//! The log is that of the container named `renovate` in the Job's newest pod, read as a stream
//! up to a limit (`FLUXUP_RENOVATE_LOG_LIMIT`, 64 MiB by default). The Job is marked before its
//! log is read (`fluxup.dev/ingest-started`) and annotated with what came of it after
//! (`fluxup.dev/ingested`): a restart of FluxUp reads no Job twice, and a log that crashed or
//! hung FluxUp while it was read is not read again, but recorded as interrupted.

use crate::ingest;
use crate::renovate::{self, Findings, IngestError};
use crate::{Scope, events};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label that marks Renovate Jobs.
pub const JOB_SELECTOR: &str = "app.kubernetes.io/name=renovate";
/// The annotation recording what came of reading a Job's output. A Job that has it is never
/// read again.
pub const INGESTED: &str = "fluxup.dev/ingested";
/// The annotation set before a Job's log is read: when and by which FluxUp. A Job that has it
/// but not [`INGESTED`] was being read when that FluxUp stopped.
pub const INGEST_STARTED: &str = "fluxup.dev/ingest-started";
/// The container whose log is read.
pub const CONTAINER: &str = "renovate";
/// The CronJobs whose Jobs are trusted, as comma-separated `namespace/name`.
pub const CRONJOBS_ENV: &str = "FLUXUP_RENOVATE_CRONJOBS";
/// The CronJob of config/renovate/, trusted in FluxUp's namespace by default.
pub const DEFAULT_CRONJOB: &str = "renovate";
/// A log that takes longer than this to read is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// How often FluxUp tries to record one Job's output when the API server refuses the writes.
const MAX_ATTEMPTS: u32 = 5;

/// Where Renovate's output is trusted from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// FluxUp's own namespace: every labelled Job in it is trusted.
    pub namespace: String,
    /// CronJobs, as (namespace, name), whose Jobs are trusted wherever they run.
    pub cron_jobs: Vec<(String, String)>,
}

impl Trust {
    /// FluxUp's namespace ([`crate::leader::lease_namespace`]) and `FLUXUP_RENOVATE_CRONJOBS`.
    /// Entries that are not `namespace/name` are logged and left out.
    pub fn from_env() -> Trust {
        let namespace = crate::leader::lease_namespace();
        let value = std::env::var(CRONJOBS_ENV).ok();
        let (trust, bad) = Trust::parse(&namespace, value.as_deref());
        for entry in bad {
            tracing::error!(%entry, "{CRONJOBS_ENV}: not a namespace/name; left out");
        }
        trust
    }

    /// The trust for FluxUp's namespace `namespace` and a `FLUXUP_RENOVATE_CRONJOBS` value
    /// (unset: the `renovate` CronJob in `namespace`), with the entries that are not
    /// `namespace/name`.
    pub fn parse(namespace: &str, cron_jobs: Option<&str>) -> (Trust, Vec<String>) {
        let mut bad = Vec::new();
        let cron_jobs = match cron_jobs {
            None => vec![(namespace.to_string(), DEFAULT_CRONJOB.to_string())],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .filter_map(|entry| match entry.split_once('/') {
                    Some((ns, name))
                        if !ns.is_empty() && !name.is_empty() && !name.contains('/') =>
                    {
                        Some((ns.to_string(), name.to_string()))
                    }
                    _ => {
                        bad.push(entry.to_string());
                        None
                    }
                })
                .collect(),
        };
        let trust = Trust {
            namespace: namespace.to_string(),
            cron_jobs,
        };
        (trust, bad)
    }

    /// The namespaces watched: FluxUp's own, then each trusted CronJob's, once each.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.namespace.clone()];
        for (ns, _) in &self.cron_jobs {
            if !out.contains(ns) {
                out.push(ns.clone());
            }
        }
        out
    }

    /// Whether `job` may be read: `Ok(None)` when it is in FluxUp's namespace, `Ok(Some((name,
    /// uid)))` when it names a trusted CronJob as its controller (the caller checks the UID
    /// against the CronJob's), or why not.
    pub fn check(&self, job: &Job) -> Result<Option<(String, String)>, String> {
        let ns = job.namespace().unwrap_or_default();
        if ns == self.namespace {
            return Ok(None);
        }
        let owner = job
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .filter(|o| o.kind == "CronJob" && o.api_version.starts_with("batch/"));
        let Some(owner) = owner else {
            return Err(format!(
                "it is neither in FluxUp's namespace {} nor run by a CronJob FluxUp trusts ({CRONJOBS_ENV})",
                self.namespace
            ));
        };
        if !self
            .cron_jobs
            .iter()
            .any(|(n, name)| *n == ns && *name == owner.name)
        {
            return Err(format!(
                "its CronJob {ns}/{} is not one FluxUp trusts ({CRONJOBS_ENV}: {})",
                owner.name,
                self.describe_cron_jobs()
            ));
        }
        Ok(Some((owner.name.clone(), owner.uid.clone())))
    }

    fn describe_cron_jobs(&self) -> String {
        if self.cron_jobs.is_empty() {
            return "none".into();
        }
        self.cron_jobs
            .iter()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// How the Job controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where Renovate output is trusted from.
    pub trust: Trust,
    /// How many bytes of a log are read.
    pub log_limit: usize,
}

impl Settings {
    /// [`Trust::from_env`] and [`renovate::log_limit`].
    pub fn from_env() -> Settings {
        Settings {
            trust: Trust::from_env(),
            log_limit: renovate::log_limit(),
        }
    }
}

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
    settings: Settings,
    recorder: Recorder,
    /// Names this controller in [`INGEST_STARTED`]: a mark of its own is not an interruption.
    reader: String,
    /// Untrusted Jobs already warned about, by UID.
    warned: Mutex<HashSet<String>>,
    /// Jobs this controller has annotated with [`INGESTED`], by UID (its cache may lag behind).
    done: Mutex<HashSet<String>>,
    /// Attempts at recording a Job's output that the API server refused, by UID.
    attempts: Mutex<HashMap<String, u32>>,
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

/// Runs until `shutdown` resolves, with [`Settings::from_env`].
pub async fn run(
    client: Client,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_with(client, scope, Settings::from_env(), shutdown).await
}

/// Runs until `shutdown` resolves: one watch per trusted namespace.
pub async fn run_with(
    client: Client,
    scope: Scope,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces = settings.trust.namespaces();
    tracing::info!(namespace = %settings.trust.namespace,
        cron_jobs = %settings.trust.describe_cron_jobs(), watched = ?namespaces,
        log_limit = settings.log_limit, "reading Renovate Jobs");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let reader = format!(
        "{}/{}-{:x}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "fluxup".into()),
        std::process::id(),
        started.as_nanos() & 0xffff_ffff_ffff
    );
    let ctx = Arc::new(Context {
        recorder: events::recorder(&client),
        client: client.clone(),
        scope,
        settings,
        reader,
        warned: Mutex::default(),
        done: Mutex::default(),
        attempts: Mutex::default(),
    });
    let shutdown =
        (Box::pin(shutdown) as std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>).shared();
    let controllers = namespaces.into_iter().map(|ns| {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        Controller::new(
            jobs,
            watcher::Config::default()
                .labels(JOB_SELECTOR)
                .streaming_lists(),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {})
    });
    futures::future::join_all(controllers).await;
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let uid = job.uid().unwrap_or_default();
    // Trust first: an untrusted Job is never read, whatever it says of itself.
    if let Err(why) = trusted(&job, &ctx).await {
        warn_untrusted(&job, &ctx, &why).await;
        return Ok(Action::await_change());
    }
    if job.annotations().contains_key(INGESTED) || ctx.done.lock().unwrap().contains(&uid) {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let source = format!("{ns}/{name}");
    if let Some(mark) = job.annotations().get(INGEST_STARTED)
        && !mark.ends_with(&format!(" {}", ctx.reader))
    {
        // Another FluxUp (or this one before a restart) stopped while reading it.
        let result = Err(IngestError::Interrupted(format!("reading started {mark}")));
        let summary = ingest::record(&ctx.client, &ctx.scope, &source, &result).await?;
        return finish(&job, &ctx, &result, &summary).await;
    }
    if !finished(&job) {
        return Ok(Action::await_change());
    }
    // Marked before reading, with a precondition on the Job's version so that two readers
    // cannot both take it.
    if !job.annotations().contains_key(INGEST_STARTED) {
        let mark = format!("{} {}", events::now(), ctx.reader);
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": job.resource_version(),
            "annotations": {INGEST_STARTED: mark},
        }});
        match jobs_api(&ctx, &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Changed meanwhile: the watch brings the new version.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let limit = ctx.settings.log_limit;
    let result = match tokio::time::timeout(READ_TIMEOUT, read_log(&ctx.client, &job, limit)).await
    {
        Ok(Ok(result)) => result,
        Ok(Err(why)) => Err(IngestError::Unavailable(why)),
        Err(_) => Err(IngestError::Unavailable(format!(
            "reading the log took longer than {} s",
            READ_TIMEOUT.as_secs()
        ))),
    };
    let summary = match ingest::record(&ctx.client, &ctx.scope, &source, &result).await {
        Ok(summary) => summary,
        Err(e) => {
            let attempts = {
                let mut attempts = ctx.attempts.lock().unwrap();
                let n = attempts.entry(uid.clone()).or_default();
                *n += 1;
                *n
            };
            if attempts < MAX_ATTEMPTS {
                return Err(e.into());
            }
            let failed = Err(IngestError::Unavailable(format!(
                "recording the findings failed {attempts} times: {e}"
            )));
            return finish(&job, &ctx, &failed, &ingest::Summary::default()).await;
        }
    };
    finish(&job, &ctx, &result, &summary).await
}

fn jobs_api(ctx: &Context, ns: &str) -> Api<Job> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// What came of one Job, on the Job: the annotation, and an Event.
async fn finish(
    job: &Job,
    ctx: &Context,
    result: &Result<Findings, IngestError>,
    summary: &ingest::Summary,
) -> Result<Action, Error> {
    let (outcome, warning, reason) = outcome(result, summary);
    events::publish(
        &ctx.recorder,
        &job.object_ref(&()),
        warning,
        "IngestRenovateOutput",
        reason,
        &outcome,
    )
    .await;
    // The annotation stays short; the Event and the apps' Scanned condition say the rest.
    let annotation: String = outcome.chars().take(1000).collect();
    let patch = serde_json::json!({"metadata": {"annotations": {INGESTED: annotation}}});
    let uid = job.uid().unwrap_or_default();
    jobs_api(ctx, &job.namespace().unwrap_or_default())
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    ctx.done.lock().unwrap().insert(uid.clone());
    ctx.attempts.lock().unwrap().remove(&uid);
    Ok(Action::await_change())
}

/// The Job's annotation text, whether it is a warning, and the Event's reason.
pub fn outcome(
    result: &Result<Findings, IngestError>,
    summary: &ingest::Summary,
) -> (String, bool, &'static str) {
    match result {
        Ok(_) => {
            let mut text = format!("{} updates for {} apps", summary.updates, summary.apps);
            if !summary.refused.is_empty() {
                text.push_str(&format!(
                    "; {} refused: {}",
                    summary.refused.len(),
                    summary.refused.join("; ")
                ));
            }
            match summary.truncated_at {
                Some(limit) => {
                    text.push_str(&format!(
                        "; truncated: the log is longer than {limit} bytes ({}) and was read up to that",
                        renovate::LOG_LIMIT_ENV
                    ));
                    (text, true, "OutputTruncated")
                }
                None => (text, !summary.refused.is_empty(), "Ingested"),
            }
        }
        Err(e) => (format!("{}: {e}", e.reason()), true, e.reason()),
    }
}

/// Whether `job` may be read, or why not (see [`Trust::check`]); for a CronJob's Job, the owner
/// reference's UID must be the live CronJob's, so that a Job that only names the CronJob is not
/// taken for one of its runs.
async fn trusted(job: &Job, ctx: &Context) -> Result<(), String> {
    let Some((name, uid)) = ctx.settings.trust.check(job)? else {
        return Ok(());
    };
    let ns = job.namespace().unwrap_or_default();
    let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    match cron_jobs.get_opt(&name).await {
        Ok(Some(cron_job)) if cron_job.uid().as_deref() == Some(uid.as_str()) => Ok(()),
        Ok(Some(_)) => Err(format!(
            "its owner reference names CronJob {ns}/{name} but not that CronJob's UID"
        )),
        Ok(None) => Err(format!("the CronJob {ns}/{name} it names does not exist")),
        Err(e) => Err(format!(
            "FluxUp could not read the CronJob {ns}/{name}: {e}"
        )),
    }
}

/// One Warning Event and one log line per untrusted Job (per controller run).
async fn warn_untrusted(job: &Job, ctx: &Context, why: &str) {
    let uid = job.uid().unwrap_or_default();
    {
        let mut warned = ctx.warned.lock().unwrap();
        if warned.len() > 10_000 {
            warned.clear();
        }
        if !warned.insert(uid) {
            return;
        }
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let note = format!("FluxUp does not read this Job's output: {why}");
    tracing::warn!(job = %format!("{ns}/{name}"), reason = %why, "ignoring an untrusted Renovate Job");
    events::publish(
        &ctx.recorder,
        &job.object_ref(&()),
        true,
        "IngestRenovateOutput",
        "UntrustedRenovateJob",
        &note,
    )
    .await;
}

/// The findings in the log of the Job's newest pod's `renovate` container, read as a stream up
/// to `limit` bytes; `Err` when the log cannot be read at all.
async fn read_log(
    client: &Client,
    job: &Job,
    limit: usize,
) -> Result<Result<Findings, IngestError>, String> {
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await
        .map_err(|e| format!("listing the Job's pods: {e}"))?;
    // The Job's own pods only: a pod is the Job's when the Job is its controller.
    let pod = list
        .items
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| "the Job has no pods left (deleted?)".to_string())?;
    let params = LogParams {
        container: Some(CONTAINER.into()),
        // One byte over, so that a longer log is known to be longer.
        limit_bytes: Some(limit.saturating_add(1).try_into().unwrap_or(i64::MAX)),
        ..Default::default()
    };
    let name = pod.name_any();
    let stream = pods
        .log_stream(&name, &params)
        .await
        .map_err(|e| format!("reading the log of pod {name}: {e}"))?;
    renovate::read_stream(stream, limit)
        .await
        .map_err(|e| format!("reading the log of pod {name}: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ns: &str, owner: Option<serde_json::Value>) -> Job {
        let mut meta = json!({"name": "renovate-1", "namespace": ns, "uid": "job-uid"});
        if let Some(owner) = owner {
            meta["ownerReferences"] = json!([owner]);
        }
        serde_json::from_value(json!({"metadata": meta})).unwrap()
    }

    fn cron_owner(name: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": name, "uid": "cron-uid",
               "controller": controller})
    }

    #[test]
    fn the_default_trusts_fluxups_namespace_and_its_renovate_cronjob() {
        let (trust, bad) = Trust::parse("fluxup-system", None);
        assert!(bad.is_empty());
        assert_eq!(
            trust.cron_jobs,
            [("fluxup-system".to_string(), "renovate".to_string())]
        );
        assert_eq!(trust.namespaces(), ["fluxup-system"]);
        let (trust, bad) = Trust::parse(
            "fluxup-system",
            Some(" renovate/central, fluxup-system/renovate,bad, /x, a/b/c ,"),
        );
        assert_eq!(bad, ["bad", "/x", "a/b/c"]);
        assert_eq!(trust.namespaces(), ["fluxup-system", "renovate"]);
        // Set but empty: FluxUp's namespace only.
        assert!(Trust::parse("f", Some("")).0.cron_jobs.is_empty());
    }

    #[test]
    fn only_fluxups_namespace_and_trusted_cronjobs_are_read() {
        let (trust, _) = Trust::parse("fluxup-system", Some("renovate/central"));
        assert_eq!(trust.check(&job("fluxup-system", None)), Ok(None));
        assert_eq!(
            trust.check(&job("renovate", Some(cron_owner("central", true)))),
            Ok(Some(("central".into(), "cron-uid".into())))
        );
        // A tenant's Job: no owner, another CronJob, a CronJob of the same name elsewhere, an
        // owner that is not the controller.
        for (ns, owner) in [
            ("tenant", None),
            ("renovate", Some(cron_owner("other", true))),
            ("tenant", Some(cron_owner("central", true))),
            ("renovate", Some(cron_owner("central", false))),
        ] {
            let why = trust.check(&job(ns, owner)).unwrap_err();
            assert!(why.contains(CRONJOBS_ENV), "{why}");
        }
    }

    #[test]
    fn the_job_says_what_came_of_it() {
        let summary = ingest::Summary {
            apps: 2,
            updates: 3,
            truncated_at: Some(1024),
            ..Default::default()
        };
        let (text, warning, reason) = outcome(&Ok(Findings::default()), &summary);
        assert!(warning);
        assert_eq!(reason, "OutputTruncated");
        assert!(
            text.starts_with("3 updates for 2 apps; truncated"),
            "{text}"
        );
        let (text, warning, reason) = outcome(&Err(IngestError::NoFindings), &summary);
        assert!(warning && reason == "NoFindings" && text.starts_with("NoFindings: "));
        let plain = ingest::Summary {
            apps: 1,
            updates: 1,
            ..Default::default()
        };
        assert_eq!(
            outcome(&Ok(Findings::default()), &plain),
            ("1 updates for 1 apps".to_string(), false, "Ingested")
        );
    }
}
