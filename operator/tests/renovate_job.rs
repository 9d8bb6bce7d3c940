//! Renovate Jobs on the sandbox: the Job controller reads a finished, trusted Renovate Job's
//! `renovate` container log through the API server (kwok serves the sandbox's container log
//! file as that log), records the findings, and marks the Job as read; Jobs it does not trust
//! change nothing; a log far over the limit is read up to it, once.
//!
//! kwok serves one file as the log of every container named `renovate`, so these tests take
//! turns ([`LOG`]).

use anyhow::Context as _;
use fluxup_api::ManagedApp;
use fluxup_operator::renovate_jobs::{self, INGEST_STARTED, INGESTED, Settings, Trust};
use fluxup_operator::{Scope, managed_app};
use fluxup_sandbox::{Sandbox, eventually};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::io::Write as _;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The sandbox's one container log file.
static LOG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A line of the container log file, in the CRI format kwok serves (as a kubelet keeps it).
fn cri(line: &str) -> String {
    format!("2026-11-30T10:00:00.000000000Z stdout F {line}\n")
}

/// Renovate's findings record: chart `webapp` from 1.2.0 to `version`, with these links.
fn findings(version: &str, extra_updates: Value, changelog: &str, source: &str) -> String {
    let mut updates = vec![json!({"updateType": "minor", "newVersion": version})];
    updates.extend(extra_updates.as_array().cloned().unwrap_or_default());
    json!({
        "name": "renovate", "level": 20, "msg": "packageFiles with updates",
        "config": {"flux": [{"packageFile": "apps/web/helmrelease.yaml", "deps": [
            {"depName": "webapp", "datasource": "helm", "currentValue": "1.2.0",
             "registryUrls": ["https://charts.example.com"],
             "changelogUrl": changelog, "sourceUrl": source,
             "updates": updates}]}]},
    })
    .to_string()
}

fn write_log(sb: &Sandbox, lines: &[String]) -> anyhow::Result<()> {
    let text: String = lines.iter().map(|l| cri(l)).collect();
    std::fs::write(sb.env("SANDBOX_CONTAINER_LOG")?, text)?;
    Ok(())
}

/// App `web` in the sandbox's namespace: a HelmRelease of chart `webapp` 1.2.0 from a
/// HelmRepository, applied by Kustomization `apps` from `./apps/web`; waits until it is resolved.
async fn web_app(sb: &Sandbox) -> anyhow::Result<()> {
    let ns = sb.ns();
    sb.apply(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
        "metadata": {"name": "charts"}, "spec": {"interval": "1h", "url": "https://charts.example.com"}}))
    .await?;
    sb.apply(
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "web"},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": "webapp", "version": "1.2.0",
                 "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}}),
    )
    .await?;
    sb.apply(
        json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps"},
        "spec": {"interval": "10m", "prune": true, "path": "./apps/web",
                 "sourceRef": {"kind": "GitRepository", "name": "fleet"}}}),
    )
    .await?;
    sb.apply(json!({"apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp", "metadata": {"name": "web"},
        "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "apps", "namespace": ns}}}))
    .await?;
    let apps: Api<ManagedApp> = sb.api();
    until("app resolved", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .filter(|s| s.resolved.is_some()))
    })
    .await?;
    Ok(())
}

/// A Renovate Job as config/renovate's CronJob makes them, with `metadata` merged in.
fn renovate_job(name: &str, metadata: Value) -> anyhow::Result<Job> {
    let mut meta = json!({"name": name, "labels": {"app.kubernetes.io/name": "renovate"}});
    for (k, v) in metadata.as_object().cloned().unwrap_or_default() {
        meta[k] = v;
    }
    Ok(serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "renovate", "image": "ghcr.io/renovatebot/renovate:39.264.1"}]}}},
    }))?)
}

struct Controllers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Controllers {
    /// The ManagedApp controller and the Renovate Job controller, both on the apps of `scope`.
    fn start(sb: &Sandbox, scope: &Scope, settings: Settings) -> Controllers {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let apps = tokio::spawn(managed_app::run(
            sb.client.clone(),
            scope.clone(),
            async move { token.cancelled().await },
        ));
        let token = stop.clone();
        let jobs = tokio::spawn(renovate_jobs::run_with(
            sb.client.clone(),
            scope.clone(),
            settings,
            async move { token.cancelled().await },
        ));
        Controllers {
            stop,
            tasks: vec![apps, jobs],
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            task.await?;
        }
        Ok(())
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn settings(namespace: &str, cron_jobs: &[(&str, &str)], log_limit: usize) -> Settings {
    Settings {
        trust: Trust {
            namespace: namespace.into(),
            cron_jobs: cron_jobs
                .iter()
                .map(|(ns, n)| (ns.to_string(), n.to_string()))
                .collect(),
        },
        log_limit,
    }
}

fn scope(sb: &Sandbox) -> Scope {
    Scope {
        namespace: Some(sb.ns().to_string()),
    }
}

async fn annotation(jobs: &Api<Job>, job: &str, key: &str) -> anyhow::Result<String> {
    until(&format!("{key} on Job {job}"), || async {
        Ok(jobs
            .get(job)
            .await?
            .metadata
            .annotations
            .and_then(|a| a.get(key).cloned()))
    })
    .await
}

/// The Events FluxUp recorded on Job `job` with `reason`.
async fn events(sb: &Sandbox, job: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = sb.api();
    Ok(events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={job},reason={reason}"
        )))
        .await?
        .items)
}

#[tokio::test]
async fn a_trusted_renovate_job_updates_the_apps_without_unsafe_links() -> anyhow::Result<()> {
    let _log = LOG.lock().await;
    let sb = Sandbox::start("renovate-job").await?;
    let ns = sb.ns().to_string();
    // FluxUp's own namespace: every labelled Job in it is trusted.
    let controllers = Controllers::start(&sb, &scope(&sb), settings(&ns, &[], 1 << 20));
    web_app(&sb).await?;

    // What the Renovate container "prints": a real-format JSON log with findings for the app,
    // a script link and a version that is markup.
    write_log(
        &sb,
        &[findings(
            "1.3.0",
            json!([{"updateType": "major", "newVersion": "2.0.0 <https://evil.example|click>"}]),
            "javascript:alert(document.cookie)",
            "https://github.com/example/webapp",
        )],
    )?;
    let jobs: Api<Job> = sb.api();
    jobs.create(&Default::default(), &renovate_job("renovate-1", json!({}))?)
        .await?;

    let apps: Api<ManagedApp> = sb.api();
    let app = until("the Job's findings on the app", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .filter(|s| s.detected.is_some()))
    })
    .await?;
    let detected = app.detected.context("detected")?;
    assert_eq!(detected.source, format!("{ns}/renovate-1"));
    assert_eq!(detected.updates.len(), 1, "{:?}", detected.updates);
    assert_eq!(detected.updates[0].version, "1.3.0");
    assert_eq!(detected.updates[0].changelog_url, None);
    assert_eq!(
        detected.updates[0].source_url.as_deref(),
        Some("https://github.com/example/webapp")
    );
    let update = until("the update offered", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .and_then(|s| s.available_update)
            .filter(|u| u.chart.is_some()))
    })
    .await?;
    assert_eq!(update.chart.as_deref(), Some("1.3.0"));
    assert_eq!(
        update.changelog_url, None,
        "a javascript: link never reaches the app"
    );
    let scanned = apps
        .get("web")
        .await?
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Scanned"))
        .context("Scanned")?;
    assert!(
        scanned.message.contains("1 of its updates were refused"),
        "{}",
        scanned.message
    );

    let outcome = annotation(&jobs, "renovate-1", INGESTED).await?;
    assert!(
        outcome.starts_with("1 updates for 1 apps; 1 refused: "),
        "{outcome}"
    );
    let job = jobs.get("renovate-1").await?;
    assert!(job.annotations().contains_key(INGEST_STARTED));
    controllers.stop().await
}

#[tokio::test]
async fn renovate_output_from_jobs_it_does_not_trust_changes_nothing() -> anyhow::Result<()> {
    let _log = LOG.lock().await;
    // FluxUp's namespace (no Jobs), the namespace of the central Renovate CronJob, and a
    // tenant's namespace with the app.
    let fluxup = Sandbox::start("renovate-trust-fluxup").await?;
    let central = Sandbox::start("renovate-trust-central").await?;
    let tenant = Sandbox::start("renovate-trust-tenant").await?;
    let trusted = settings(fluxup.ns(), &[(central.ns(), "renovate")], 1 << 20);
    let controllers = Controllers::start(&tenant, &scope(&tenant), trusted);
    web_app(&tenant).await?;

    // The trusted CronJob (suspended: the test makes its Jobs).
    let cron_jobs: Api<CronJob> = central.api();
    let cron_job: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "renovate"},
        "spec": {"schedule": "17 * * * *", "suspend": true, "jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "renovate", "image": "ghcr.io/renovatebot/renovate:39.264.1"}]}}}}},
    }))?;
    let cron_job = cron_jobs.create(&Default::default(), &cron_job).await?;
    let cron_uid = cron_job.uid().context("uid")?;
    let owner = |uid: &str, controller: bool| {
        json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "renovate",
                "uid": uid, "controller": controller}])
    };

    // Forged output: a fake major update and a link to follow.
    write_log(
        &tenant,
        &[findings(
            "6.6.6",
            json!([]),
            "https://evil.example/",
            "https://evil.example/",
        )],
    )?;
    // In the tenant's namespace, labelled like Renovate's: not watched at all.
    let tenant_jobs: Api<Job> = tenant.api();
    tenant_jobs
        .create(
            &Default::default(),
            &renovate_job("forged-tenant", json!({}))?,
        )
        .await?;
    // In the CronJob's namespace: without an owner; naming the CronJob but not as controller;
    // naming it as controller with another UID (the garbage collector deletes such a Job: a
    // finalizer keeps it for the test).
    let central_jobs: Api<Job> = central.api();
    let forged = [
        ("forged-unowned", json!({})),
        (
            "forged-not-controller",
            json!({"ownerReferences": owner(&cron_uid, false)}),
        ),
        (
            "forged-uid",
            json!({"ownerReferences": owner("00000000-0000-0000-0000-000000000000", true),
                   "finalizers": ["test.fluxup.dev/keep"]}),
        ),
    ];
    for (name, meta) in &forged {
        central_jobs
            .create(&Default::default(), &renovate_job(name, meta.clone())?)
            .await?;
    }
    for (name, _) in &forged {
        let warned = until(&format!("a Warning about {name}"), || async {
            let found = events(&central, name, "UntrustedRenovateJob").await?;
            Ok((!found.is_empty()).then_some(found))
        })
        .await?;
        let note = warned[0].message.clone().unwrap_or_default();
        assert!(
            note.starts_with("FluxUp does not read this Job's output: "),
            "{note}"
        );
    }
    // Every forged Job has finished by now, and was never read.
    until("the forged Jobs finished", || async {
        let all = tenant_jobs.get("forged-tenant").await?.status;
        Ok(all
            .and_then(|s| s.conditions)
            .filter(|c| c.iter().any(|c| c.type_ == "Complete")))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let apps: Api<ManagedApp> = tenant.api();
    let status = apps.get("web").await?.status.unwrap_or_default();
    assert_eq!(status.detected, None, "forged output reached the app");
    assert_eq!(status.available_update, None);
    for (jobs, name) in [
        (&tenant_jobs, "forged-tenant"),
        (&central_jobs, "forged-unowned"),
        (&central_jobs, "forged-not-controller"),
        (&central_jobs, "forged-uid"),
    ] {
        let job = jobs.get(name).await?;
        assert!(
            !job.annotations().contains_key(INGEST_STARTED)
                && !job.annotations().contains_key(INGESTED),
            "{name} was read: {:?}",
            job.annotations()
        );
    }

    // A run of the trusted CronJob is read, and its findings reach the tenant's app.
    write_log(
        &tenant,
        &[findings(
            "1.3.0",
            json!([]),
            "https://github.com/example/webapp/releases",
            "",
        )],
    )?;
    central_jobs
        .create(
            &Default::default(),
            &renovate_job(
                "renovate-2",
                json!({"ownerReferences": owner(&cron_uid, true)}),
            )?,
        )
        .await?;
    let detected = until("the trusted run's findings", || async {
        Ok(apps.get("web").await?.status.and_then(|s| s.detected))
    })
    .await?;
    assert_eq!(detected.source, format!("{}/renovate-2", central.ns()));
    assert_eq!(detected.updates[0].version, "1.3.0");
    assert_eq!(
        detected.updates[0].changelog_url.as_deref(),
        Some("https://github.com/example/webapp/releases")
    );
    // An empty link is no link.
    assert_eq!(detected.updates[0].source_url, None);
    // One Warning per forged Job, however often it changed.
    for (name, _) in &forged {
        let found = events(&central, name, "UntrustedRenovateJob").await?;
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0].count.unwrap_or(1), 1, "{name}");
    }
    central_jobs
        .patch(
            "forged-uid",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    controllers.stop().await
}

/// The process's peak resident memory since the last [`reset_peak`], in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// Resets the peak to the current resident memory (Linux `clear_refs` 5).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[tokio::test]
async fn a_log_far_over_the_limit_is_read_up_to_it_and_never_again() -> anyhow::Result<()> {
    const LIMIT: usize = 16 << 20;
    const LOG_SIZE: usize = 160 << 20;
    let _log = LOG.lock().await;
    let sb = Sandbox::start("renovate-big-log").await?;
    let ns = sb.ns().to_string();
    let controllers = Controllers::start(&sb, &scope(&sb), settings(&ns, &[], LIMIT));
    web_app(&sb).await?;

    // 160 MiB of log: the findings, then Renovate's debug chatter without end. Written as a
    // stream, so that the test holds none of it.
    {
        let file = std::fs::File::create(sb.env("SANDBOX_CONTAINER_LOG")?)?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(cri(&findings("1.3.0", json!([]), "", "")).as_bytes())?;
        let chatter = cri(&json!({"name": "renovate", "level": 20,
            "msg": format!("Looking up a dependency {}", "x".repeat(400))})
        .to_string());
        let mut written = 0;
        while written < LOG_SIZE {
            out.write_all(chatter.as_bytes())?;
            written += chatter.len();
        }
        out.flush()?;
    }
    let reset = reset_peak();
    let before = peak_rss()?;
    let jobs: Api<Job> = sb.api();
    jobs.create(
        &Default::default(),
        &renovate_job("renovate-big", json!({}))?,
    )
    .await?;
    let outcome = annotation(&jobs, "renovate-big", INGESTED).await?;
    let grown = peak_rss()?.saturating_sub(before);
    assert!(
        outcome
            .starts_with("1 updates for 1 apps; truncated: the log is longer than 16777216 bytes"),
        "{outcome}"
    );
    // Holding the log would take 160 MiB and more; reading it as a stream takes a few lines.
    assert!(
        grown < 64 << 20,
        "the test process grew by {} MiB while FluxUp read the log (peak reset: {reset})",
        grown >> 20
    );
    let apps: Api<ManagedApp> = sb.api();
    let status = until("the findings within the limit", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .filter(|s| s.detected.is_some()))
    })
    .await?;
    assert_eq!(
        status.detected.context("detected")?.updates[0].version,
        "1.3.0"
    );
    let scanned = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Scanned")
        .context("Scanned")?;
    assert!(
        scanned
            .message
            .contains("longer than FluxUp's limit of 16777216 bytes"),
        "{}",
        scanned.message
    );
    assert_eq!(
        events(&sb, "renovate-big", "OutputTruncated").await?.len(),
        1
    );

    // FluxUp restarts; the log now says 1.4.0. The Job read before is not read again; a new
    // one is.
    let read_once = jobs.get("renovate-big").await?.annotations().clone();
    controllers.stop().await?;
    write_log(&sb, &[findings("1.4.0", json!([]), "", "")])?;
    let controllers = Controllers::start(&sb, &scope(&sb), settings(&ns, &[], LIMIT));
    jobs.create(
        &Default::default(),
        &renovate_job("renovate-next", json!({}))?,
    )
    .await?;
    annotation(&jobs, "renovate-next", INGESTED).await?;
    let detected = until("the next run's findings", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .and_then(|s| s.detected)
            .filter(|d| d.source.ends_with("/renovate-next")))
    })
    .await?;
    assert_eq!(detected.updates[0].version, "1.4.0");
    assert_eq!(
        jobs.get("renovate-big").await?.annotations(),
        &read_once,
        "the Job read before the restart was marked again"
    );
    // Read again, it would have said so again.
    let said = events(&sb, "renovate-big", "OutputTruncated").await?;
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].count.unwrap_or(1), 1);

    // A Job whose reading a FluxUp began and never finished (it crashed, or the log hung it) is
    // not read: it is recorded as interrupted, and the app keeps its findings.
    write_log(&sb, &[findings("1.5.0", json!([]), "", "")])?;
    jobs.create(
        &Default::default(),
        &renovate_job(
            "renovate-crashed",
            json!({"annotations": {INGEST_STARTED: "2026-11-30T10:00:00Z fluxup-0/1-dead"}}),
        )?,
    )
    .await?;
    let outcome = annotation(&jobs, "renovate-crashed", INGESTED).await?;
    assert!(outcome.starts_with("ReadInterrupted: "), "{outcome}");
    let status = until("Scanned=False ReadInterrupted", || async {
        Ok(apps.get("web").await?.status.filter(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Scanned" && c.reason == "ReadInterrupted")
        }))
    })
    .await?;
    let detected = status.detected.context("detected")?;
    assert!(
        detected.source.ends_with("/renovate-next"),
        "{}",
        detected.source
    );
    assert_eq!(detected.updates[0].version, "1.4.0");
    controllers.stop().await?;
    write_log(&sb, &[])?;
    Ok(())
}

/// Polls `check` until it yields something, for up to 60 s.
async fn until<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually(what, Duration::from_secs(60), || {
        let next = check();
        async move { Ok(next.await?.ok_or_else(|| "not yet".to_string())) }
    })
    .await
}
