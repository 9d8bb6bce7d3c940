//! The verification Job (`healthCheck.verification`, after Kargo's verification): once the
//! rollout is healthy and soaked, FluxUp creates a Job from a CronJob of the app's namespace, as
//! `kubectl create job --from=cronjob/<name>` does, and the upgrade succeeds only when that Job
//! completes; a Job that fails fails the upgrade (and `autoRollback` rolls it back).
//!
//! The CronJob is named by whoever writes the ManagedApp, so FluxUp creates the Job only when
//! that person (recorded on the ManagedApp by the admission policy) may create Jobs in the
//! namespace themselves: naming a CronJob cannot borrow FluxUp's `create jobs`. The Job is named
//! after the upgrade's uid and owned by the UpgradeRequest, so a restart finds it, a Job of the
//! same name that is not this upgrade's is never taken for it, and deleting the request deletes it.

use crate::references::{self, person_of};
use fluxup_api::{ManagedApp, PreflightCheck, UpgradeRequest};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

/// The check's name, as status and the dashboard show it.
pub const CHECK: &str = "verification";
/// The label on the Job naming the upgrade it verifies.
pub const UPGRADE_LABEL: &str = "fluxup.dev/verifies";

/// Where the verification stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No Job yet: it is created once every other check passes and the soak is over.
    NotStarted,
    /// The Job runs; in words.
    Running(String),
    Passed(String),
    /// The Job failed, or cannot be created or trusted; in words.
    Failed(String),
}

impl State {
    /// The check as status shows it.
    pub fn check(&self) -> PreflightCheck {
        let (passed, message) = match self {
            State::NotStarted => (
                false,
                "the verification Job starts once every other check passes".to_string(),
            ),
            State::Running(m) => (false, m.clone()),
            State::Passed(m) => (true, m.clone()),
            State::Failed(m) => (false, m.clone()),
        };
        super::health::check(CHECK, passed, message)
    }
}

/// The name of the Job that verifies `upgrade`: from its uid, so a reused request name never
/// finds the Job of an earlier request.
pub fn job_name(upgrade: &UpgradeRequest) -> String {
    format!("fluxup-verify-{}", upgrade.uid().unwrap_or_default())
}

/// The CronJob the app verifies with, if it asks for a verification.
pub fn cron_job(app: &ManagedApp) -> Option<&str> {
    app.spec
        .health_check
        .as_ref()
        .and_then(|h| h.verification.as_ref())
        .map(|v| v.cron_job.as_str())
}

/// The verification of `upgrade` as it stands now.
pub async fn observe(
    client: &Client,
    app: &ManagedApp,
    upgrade: &UpgradeRequest,
) -> kube::Result<State> {
    let ns = app.namespace().unwrap_or_default();
    let name = job_name(upgrade);
    let Some(job) = Api::<Job>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await?
    else {
        return Ok(State::NotStarted);
    };
    Ok(state_of(&job, &upgrade.uid().unwrap_or_default()))
}

/// What a Job says about the verification of the upgrade with uid `upgrade`.
pub fn state_of(job: &Job, upgrade: &str) -> State {
    let name = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
    if !job.owner_references().iter().any(|o| o.uid == upgrade) {
        return State::Failed(format!(
            "Job {name} exists but is not this upgrade's verification; FluxUp does not read it"
        ));
    }
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return State::Passed(format!("verification Job {name} completed"));
    }
    if let Some(failed) = holds("Failed") {
        let why = failed
            .message
            .clone()
            .or(failed.reason.clone())
            .unwrap_or_else(|| "no reason given".into());
        return State::Failed(format!("verification Job {name} failed: {why}"));
    }
    let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
    State::Running(format!(
        "verification Job {name} is running ({active} pod{} active)",
        if active == 1 { "" } else { "s" }
    ))
}

/// Creates the Job from the app's CronJob; `Ok(Some(why))` when it may not or cannot be
/// created (a result that fails the upgrade, not an error to retry).
pub async fn start(
    client: &Client,
    app: &ManagedApp,
    upgrade: &UpgradeRequest,
) -> kube::Result<Option<String>> {
    let Some(cron_name) = cron_job(app) else {
        return Ok(None);
    };
    let ns = app.namespace().unwrap_or_default();
    let Some(person) = person_of(&app.metadata) else {
        return Ok(Some(format!(
            "no one is recorded as having written ManagedApp {ns}/{}, so FluxUp creates no \
             verification Job for it",
            app.name_any()
        )));
    };
    if !references::may_create_jobs(client, &person, &ns).await? {
        return Ok(Some(format!(
            "{} (who last wrote the ManagedApp) may not create Jobs in {ns}, so FluxUp does not \
             run the verification CronJob {cron_name} for them",
            person.name
        )));
    }
    let Some(cron) = Api::<CronJob>::namespaced(client.clone(), &ns)
        .get_opt(cron_name)
        .await?
    else {
        return Ok(Some(format!(
            "the verification CronJob {ns}/{cron_name} does not exist"
        )));
    };
    let job = job_from(&cron, upgrade);
    match Api::<Job>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &job)
        .await
    {
        Ok(_) => {
            super::crash::point("start-verification");
            Ok(None)
        }
        // Created before a restart: the next look reads it (and whether it is ours).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The Job `kubectl create job --from=cronjob/…` would make, owned by the upgrade.
pub fn job_from(cron: &CronJob, upgrade: &UpgradeRequest) -> Job {
    let template = cron.spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    // A label value: at most 63 characters, ending in a letter or digit.
    let value: String = upgrade.name_any().chars().take(63).collect();
    let value = value.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    labels.insert(UPGRADE_LABEL.into(), value.to_string());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(upgrade)),
            namespace: cron.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "fluxup.dev/v1alpha1".into(),
                kind: "UpgradeRequest".into(),
                name: upgrade.name_any(),
                uid: upgrade.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(owner: &str, conditions: serde_json::Value, active: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "fluxup-verify-u1", "namespace": "web",
                         "ownerReferences": [{"apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
                                              "name": "web-1", "uid": owner}]},
            "status": {"conditions": conditions, "active": active},
        }))
        .unwrap()
    }

    #[test]
    fn a_job_is_read_only_when_it_is_this_upgrades_and_says_how_it_ended() {
        assert_eq!(
            state_of(&job("u1", json!([]), 1), "u1"),
            State::Running(
                "verification Job web/fluxup-verify-u1 is running (1 pod active)".into()
            )
        );
        assert_eq!(
            state_of(
                &job("u1", json!([{"type": "Complete", "status": "True"}]), 0),
                "u1"
            ),
            State::Passed("verification Job web/fluxup-verify-u1 completed".into())
        );
        assert_eq!(
            state_of(
                &job("u1", json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit"}]), 0),
                "u1"
            ),
            State::Failed("verification Job web/fluxup-verify-u1 failed: Job has reached the specified backoff limit".into())
        );
        // Complete=False is not complete; someone else's Job is never taken for ours.
        assert!(matches!(
            state_of(
                &job("u1", json!([{"type": "Complete", "status": "False"}]), 0),
                "u1"
            ),
            State::Running(_)
        ));
        assert!(matches!(
            state_of(&job("other", json!([{"type": "Complete", "status": "True"}]), 0), "u1"),
            State::Failed(m) if m.contains("not this upgrade's")
        ));
    }

    #[test]
    fn the_job_is_the_cronjobs_template_owned_by_the_upgrade() {
        let cron: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "smoke", "namespace": "web"},
            "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {
                "metadata": {"labels": {"team": "web"}},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "smoke", "image": "curl", "args": ["http://web/healthz"]}]}}}}},
        }))
        .unwrap();
        let upgrade: UpgradeRequest = serde_json::from_value(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": "web-1", "namespace": "web", "uid": "u1"},
            "spec": {"managedAppRef": {"name": "web"}},
        }))
        .unwrap();
        let job = job_from(&cron, &upgrade);
        assert_eq!(job.metadata.name.as_deref(), Some("fluxup-verify-u1"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("web"));
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels["team"], "web");
        assert_eq!(labels[UPGRADE_LABEL], "web-1");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("UpgradeRequest", "u1")
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(
            spec.template.spec.unwrap().containers[0].image.as_deref(),
            Some("curl")
        );
    }
}
