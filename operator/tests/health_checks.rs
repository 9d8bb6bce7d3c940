//! Scenario: health beyond Ready, with real Flux and the API server's service proxy. An app's
//! HTTP check (`healthCheck.httpGet`) that answers 500 fails the upgrade, naming the answer,
//! with Flux resumed; one that answers 200 passes only once the soak time is over; one that
//! starts failing during the soak fails the upgrade at once. A verification Job made from the
//! app's CronJob decides after the soak: one that completes passes, one that fails fails the
//! upgrade and the auto-rollback restores the version before.
//!
//! kwok's pods have addresses nothing routes, so the Service checked here is this test's HTTP
//! server: a selectorless Service whose Endpoints name a pod that carries this machine's
//! address (the API server proxies only to a pod's address, and Endpoints refuse loopback).

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::{ManagedApp, RollbackPhase, UpgradePhase, UpgradeRequest};
use fluxup_operator::operation::{health, verification};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const NS: &str = "webapp";
const PROBE: &str = "health-probe";

/// An address of this machine other than loopback, which Endpoints accept.
fn machine_address() -> anyhow::Result<IpAddr> {
    if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .context("this machine has no IPv4 address but loopback; the HTTP check needs one")
}

/// A tiny HTTP server answering every request with the status code in `answer`.
async fn serve(answer: Arc<AtomicU16>) -> anyhow::Result<(IpAddr, u16)> {
    let ip = machine_address()?;
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let code = answer.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {code} Test\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok((ip, port))
}

/// The Service `health-probe` (port 80) in front of the server at `ip:port`.
async fn probe_service(sb: &Sandbox, ip: IpAddr, port: u16) -> anyhow::Result<()> {
    let apply = PatchParams::apply("health-checks-test").force();
    // A pod that is never scheduled (no node matches) carries the address as its own.
    let pods: Api<Pod> = Api::namespaced(sb.client.clone(), NS);
    pods.patch(
        PROBE,
        &apply,
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": PROBE, "labels": {"app": PROBE}},
            "spec": {"nodeSelector": {"fluxup.dev/test": "no-such-node"},
                     "containers": [{"name": "probe", "image": "probe.invalid/probe:1"}]},
        })),
    )
    .await?;
    pods.patch_status(
        PROBE,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}}),
        ),
    )
    .await?;
    Api::<Service>::namespaced(sb.client.clone(), NS)
        .patch(
            PROBE,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": PROBE},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]},
            })),
        )
        .await?;
    Api::<Endpoints>::namespaced(sb.client.clone(), NS)
        .patch(
            PROBE,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": PROBE},
                "subsets": [{
                    "addresses": [{"ip": ip.to_string(),
                                   "targetRef": {"kind": "Pod", "name": PROBE, "namespace": NS}}],
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                }],
            })),
        )
        .await?;
    Ok(())
}

/// The copy of the webapp demo app these upgrades go through, with `health` as its check.
async fn checked_app(sb: &Sandbox, health: serde_json::Value) -> anyhow::Result<()> {
    apply_app(
        sb,
        app_copy(
            "webapp-checked",
            "webapp",
            "apps/webapp/helmrelease.yaml",
            json!({ "healthCheck": health }),
        ),
    )
    .await?;
    wait_resolved(sb, NS, "webapp-checked").await
}

fn http_check(soak: Option<&str>) -> serde_json::Value {
    let mut check = json!({"timeout": "30s",
        "httpGet": {"service": PROBE, "port": 80, "path": "/healthz"}});
    if let Some(soak) = soak {
        check["soak"] = json!(soak);
    }
    check
}

/// Waits until the request's health check says `state` (e.g. `Soaking`).
async fn health_state(sb: &Sandbox, request: &str, state: &str) -> anyhow::Result<Instant> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);
    eventually(
        &format!("{request} health {state}"),
        Duration::from_secs(90),
        || async {
            let status = api.get(request).await?.status.unwrap_or_default();
            let now = status.health_check.as_ref().map(|h| h.status.clone());
            Ok(if now.as_deref() == Some(state) {
                Ok(Instant::now())
            } else {
                Err(format!("{:?}: {now:?}", status.phase))
            })
        },
    )
    .await
}

const ANSWERED_500: &str = "GET /healthz on Service webapp/health-probe:80 answered 500";

#[tokio::test]
async fn http_checks_and_the_soak_decide_the_upgrade() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("health-checks").await?;
    seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);
    delete_requests(&sb, NS).await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    let answer = Arc::new(AtomicU16::new(500));
    let (ip, port) = serve(answer.clone()).await?;
    probe_service(&sb, ip, port).await?;
    let before = deployed(&sb, "webapp").await?;
    let other = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };

    // What the check refuses, checked as the controller runs it (as FluxUp's ServiceAccount).
    let mut app: ManagedApp = serde_json::from_value(app_copy(
        "webapp-checked",
        "webapp",
        "apps/webapp/helmrelease.yaml",
        json!({"healthCheck": {"waitForReady": false,
                               "httpGet": {"service": "elsewhere", "port": 80}}}),
    ))?;
    Api::<Service>::namespaced(sb.client.clone(), NS)
        .patch(
            "elsewhere",
            &PatchParams::apply("health-checks-test").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "elsewhere"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
        )
        .await?;
    let checks = health::of_app(&sb.controller, &app).await?;
    assert_eq!(checks.len(), 1, "waitForReady: false checks no workload");
    assert!(!checks[0].passed);
    assert!(
        checks[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("an ExternalName Service is not checked")),
        "{checks:?}"
    );
    if let Some(h) = app
        .spec
        .health_check
        .as_mut()
        .and_then(|h| h.http_get.as_mut())
    {
        h.service = Some("no-such-service".into());
    }
    let checks = health::of_app(&sb.controller, &app).await?;
    assert!(
        checks[0]
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with("the Service does not exist")),
        "{checks:?}"
    );

    // 1. The check answers 500: the upgrade rolls out, then fails on it, saying so.
    checked_app(&sb, http_check(None)).await?;
    let failing = format!("webapp-{run}-answers-500");
    let ended = run_request(&sb, NS, "webapp-checked", &failing, chart(other), false).await?;
    let status = ended.status();
    assert_eq!(ended.phase(), UpgradePhase::Failed, "{:?}", status.message);
    assert_eq!(status.conditions[0].reason, "HealthCheckFailed");
    let message = status.message.clone().unwrap_or_default();
    println!("answers 500: {message} [{}]", ended.timeline_text());
    assert!(
        message.contains("not healthy within 30 s") && message.contains(ANSWERED_500),
        "{message}"
    );
    let health = status.health_check.context("no health check recorded")?;
    assert_eq!(health.status, "Failed");
    let results: Vec<(&str, bool)> = health
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.passed))
        .collect();
    assert_eq!(
        results,
        [("release", true), ("workloads", true), ("http", false)],
        "{:?}",
        health.checks
    );
    assert_eq!(health.checks[2].message.as_deref(), Some(ANSWERED_500));
    nothing_held(&sb, "webapp").await?;
    assert_eq!(deployed(&sb, "webapp").await?, other, "Flux rolled it out");

    // 2. It answers 200, with a soak of 6 s: Soaking first, Succeeded only after the soak.
    answer.store(200, Ordering::SeqCst);
    checked_app(&sb, http_check(Some("6s"))).await?;
    let soaked = format!("webapp-{run}-soaked");
    create_request(&sb, NS, "webapp-checked", &soaked, chart(&before), false).await?;
    let soaking = health_state(&sb, &soaked, "Soaking").await?;
    let ended = follow(&sb, NS, &soaked, Duration::from_secs(120)).await?;
    let ended_at = soaking.elapsed();
    let status = ended.status();
    assert_eq!(
        ended.phase(),
        UpgradePhase::Succeeded,
        "{:?}",
        status.message
    );
    let health = status.health_check.context("no health check recorded")?;
    assert_eq!(health.status, "Passed");
    assert!(
        health.checks.iter().all(|c| c.passed),
        "{:?}",
        health.checks
    );
    let since = health.healthy_since.context("no healthySince")?;
    let completed = status
        .upgrade
        .and_then(|u| u.completed_at)
        .context("no completedAt")?;
    let soaked_for = completed.0.as_second() - since.0.as_second();
    println!(
        "soak 6 s: Succeeded {soaked_for} s after healthySince ({:.1} s after Soaking was seen) [{}]",
        ended_at.as_secs_f64(),
        ended.timeline_text()
    );
    assert!(soaked_for >= 6, "Succeeded {soaked_for} s into a 6 s soak");

    // 3. A soak of 60 s, and the check starts failing during it: failed at once.
    checked_app(&sb, http_check(Some("60s"))).await?;
    let broken = format!("webapp-{run}-breaks-while-soaking");
    create_request(&sb, NS, "webapp-checked", &broken, chart(other), false).await?;
    health_state(&sb, &broken, "Soaking").await?;
    answer.store(500, Ordering::SeqCst);
    let flipped = Instant::now();
    let ended = follow(&sb, NS, &broken, Duration::from_secs(120)).await?;
    let status = ended.status();
    let message = status.message.clone().unwrap_or_default();
    println!(
        "fails while soaking: Failed {:.1} s after the check broke: {message}",
        flipped.elapsed().as_secs_f64()
    );
    assert_eq!(
        status.conditions[0].reason, "HealthCheckFailed",
        "{message}"
    );
    assert!(
        message.contains("of its 60 s soak, then: ") && message.contains(ANSWERED_500),
        "{message}"
    );
    assert!(
        flipped.elapsed() < Duration::from_secs(40),
        "the soak was not waited out: a failure ends it"
    );
    nothing_held(&sb, "webapp").await?;

    // 4. A verification Job made from a CronJob of the app's namespace: one that completes
    //    passes the upgrade; one whose pod fails fails it, and autoRollback rolls that back.
    answer.store(200, Ordering::SeqCst);
    let cron_jobs: Api<CronJob> = Api::namespaced(sb.client.clone(), NS);
    for (name, fails) in [("verify-ok", false), ("verify-fails", true)] {
        // kwok completes a Job's pods, or fails those labelled so (sandbox/sandbox, start_kwok).
        let labels = if fails {
            json!({"sandbox.fluxup.dev/fail": "true"})
        } else {
            json!({})
        };
        cron_jobs
            .patch(
                name,
                &PatchParams::apply("health-checks-test").force(),
                &Patch::Apply(json!({
                    "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
                    "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {"spec": {
                        "backoffLimit": 0,
                        "template": {"metadata": {"labels": labels}, "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "smoke", "image": "smoke.invalid/curl:1"}]}}}}},
                })),
            )
            .await?;
    }
    let verified_by = |cron: &str| {
        let mut check = http_check(None);
        check["verification"] = json!({ "cronJob": cron });
        check
    };
    checked_app(&sb, verified_by("verify-ok")).await?;
    let passing = format!("webapp-{run}-verified");
    let ended = run_request(&sb, NS, "webapp-checked", &passing, chart(other), false).await?;
    let status = ended.status();
    println!("verification passes: [{}]", ended.timeline_text());
    assert_eq!(
        ended.phase(),
        UpgradePhase::Succeeded,
        "{:?}",
        status.message
    );
    let health = status.health_check.context("no health check recorded")?;
    let last = health.checks.last().context("no check recorded")?;
    assert_eq!(
        (last.name.as_str(), last.passed),
        (verification::CHECK, true),
        "{:?}",
        health.checks
    );
    let jobs: Api<Job> = Api::namespaced(sb.client.clone(), NS);
    let job = jobs.get(&verification::job_name(&ended.request)).await?;
    assert_eq!(
        job.owner_references().first().map(|o| o.uid.clone()),
        ended.request.uid(),
        "the Job is the upgrade's"
    );

    apply_app(
        &sb,
        app_copy(
            "webapp-checked",
            "webapp",
            "apps/webapp/helmrelease.yaml",
            json!({"healthCheck": verified_by("verify-fails"), "autoRollback": true}),
        ),
    )
    .await?;
    wait_resolved(&sb, NS, "webapp-checked").await?;
    let failing = format!("webapp-{run}-verification-fails");
    let ended = run_request(&sb, NS, "webapp-checked", &failing, chart(&before), false).await?;
    let status = ended.status();
    let message = status.message.clone().unwrap_or_default();
    println!("verification fails: {message} [{}]", ended.timeline_text());
    assert_eq!(ended.phase(), UpgradePhase::Failed, "{message}");
    assert_eq!(
        status.conditions[0].reason, "HealthCheckFailed",
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "verification Job {NS}/{} failed",
            verification::job_name(&ended.request)
        )),
        "{message}"
    );
    let upgrades: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);
    let rollback = eventually("the auto-rollback", Duration::from_secs(30), || async {
        let status = upgrades.get(&failing).await?.status.unwrap_or_default();
        Ok(status
            .rollback_ref
            .map(|r| r.name)
            .ok_or_else(|| "not linked yet".to_string()))
    })
    .await?;
    let (rolled_back, _) = follow_rollback(&sb, NS, &rollback).await?;
    assert_eq!(
        rolled_back.status.as_ref().and_then(|s| s.phase),
        Some(RollbackPhase::Succeeded),
        "{:?}",
        rolled_back.status.and_then(|s| s.message)
    );
    assert_eq!(
        deployed(&sb, "webapp").await?,
        other,
        "rolled back to the version the failed verification upgraded from"
    );
    nothing_held(&sb, "webapp").await?;
    for name in ["verify-ok", "verify-fails"] {
        cron_jobs.delete(name, &DeleteParams::default()).await?;
    }

    // Back where the demo was, and nothing of this test left behind.
    answer.store(200, Ordering::SeqCst);
    checked_app(&sb, http_check(None)).await?;
    let back = run_request(
        &sb,
        NS,
        "webapp-checked",
        &format!("webapp-{run}-back"),
        chart(&before),
        false,
    )
    .await?;
    check_rolled_out(&sb, "webapp", &back, &before).await?;
    Api::<ManagedApp>::namespaced(sb.client.clone(), NS)
        .delete("webapp-checked", &DeleteParams::default())
        .await?;
    for service in [PROBE, "elsewhere"] {
        Api::<Service>::namespaced(sb.client.clone(), NS)
            .delete(service, &DeleteParams::default())
            .await?;
    }
    Api::<Pod>::namespaced(sb.client.clone(), NS)
        .delete(PROBE, &DeleteParams::default().grace_period(0))
        .await?;
    Ok(())
}
