//! A finished Renovate Job's log reaches the ManagedApps: the Job controller reads the pod's
//! `renovate` container log through the API server (kwok serves the sandbox's container log
//! file as that log), records the findings, and marks the Job as read.

use anyhow::Context as _;
use fluxup_api::ManagedApp;
use fluxup_operator::{Scope, managed_app, renovate_jobs};
use fluxup_sandbox::{Sandbox, eventually};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_finished_renovate_job_updates_the_apps() -> anyhow::Result<()> {
    let sb = Sandbox::start("renovate-job").await?;
    let ns = sb.ns().to_string();
    let stop = CancellationToken::new();
    let scope = Scope {
        namespace: Some(ns.clone()),
    };
    let token = stop.clone();
    tokio::spawn(managed_app::run(
        sb.client.clone(),
        scope.clone(),
        async move { token.cancelled().await },
    ));
    let token = stop.clone();
    tokio::spawn(renovate_jobs::run(
        sb.client.clone(),
        scope.clone(),
        async move { token.cancelled().await },
    ));
    let _stop = stop.drop_guard();

    // An app whose HelmRelease takes chart "webapp" from a HelmRepository.
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

    // What the Renovate container "prints": a real-format JSON log with findings for the app.
    let findings = json!({
        "name": "renovate", "level": 20, "msg": "packageFiles with updates",
        "config": {"flux": [{"packageFile": "apps/web/helmrelease.yaml", "deps": [
            {"depName": "webapp", "datasource": "helm", "currentValue": "1.2.0",
             "registryUrls": ["https://charts.example.com"],
             "updates": [{"updateType": "minor", "newVersion": "1.3.0"}]}]}]},
    });
    // kwok serves the file as kubelet would: in the CRI log format, one
    // `<time> <stream> <F(ull)|P(artial)> <text>` per line.
    std::fs::write(
        sb.env("SANDBOX_CONTAINER_LOG")?,
        format!("2026-11-30T10:00:00.000000000Z stdout F {findings}\n"),
    )?;

    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "renovate-1", "labels": {"app.kubernetes.io/name": "renovate"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "renovate", "image": "ghcr.io/renovatebot/renovate:39.264.1"}]}}},
    }))?;
    let jobs: Api<Job> = sb.api();
    jobs.create(&Default::default(), &job).await?;

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
    assert_eq!(detected.updates.len(), 1);
    assert_eq!(detected.updates[0].version, "1.3.0");
    until("the update offered", || async {
        Ok(apps
            .get("web")
            .await?
            .status
            .and_then(|s| s.available_update)
            .and_then(|u| u.chart))
    })
    .await?;
    let annotation = until("the Job marked as read", || async {
        Ok(jobs
            .get("renovate-1")
            .await?
            .metadata
            .annotations
            .and_then(|a| a.get(renovate_jobs::INGESTED).cloned()))
    })
    .await?;
    assert_eq!(annotation, "1 updates for 1 apps");
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
