//! Scenario: notifications, with real Flux, Gitea and local HTTP receivers. The demo app
//! `webapp` is upgraded and rolled back while FluxUp's settings send to a Slack-style receiver, a
//! signed generic webhook, a receiver that refuses its first two deliveries, a receiver that does
//! not exist, and the sandbox's real notification-controller, whose Alert and generic Provider
//! route FluxUp's events on to one more local receiver. Each receiver gets exactly one well-formed
//! payload per event; the refused deliveries are retried; the dead receiver holds nothing up.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use fluxup_api::{RollbackPhase, RollbackRequest, UpgradePhase};
use fluxup_operator::notify::{payload, settings};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "webapp";
/// A ManagedApp of its own for the demo's webapp, naming the Git file of its version, so the
/// test needs no Renovate run first.
const APP: &str = "webapp-notify";
const TOKEN: &str = "s3cret-signing-key";

/// One request a receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Delivery {
    headers: HeaderMap,
    body: Vec<u8>,
    accepted: bool,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A local HTTP receiver that records every request; it answers 503 to the first `refuse`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(refuse: usize) -> anyhow::Result<Self> {
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let seen = Arc::new(AtomicUsize::new(0));
        let record = got.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (record, seen) = (record.clone(), seen.clone());
            async move {
                let accepted = seen.fetch_add(1, Ordering::SeqCst) >= refuse;
                record.lock().unwrap().push(Delivery {
                    headers,
                    body: body.to_vec(),
                    accepted,
                });
                if accepted {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { url, got })
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }
}

/// Which event each accepted delivery is about (`type` for FluxUp's JSON, `reason` for Flux's
/// events), keeping those that `ours` says belong to this run.
fn accepted_events(receiver: &Receiver, ours: impl Fn(&Value) -> Option<String>) -> Vec<String> {
    let mut events: Vec<String> = receiver
        .deliveries()
        .iter()
        .filter(|d| d.accepted)
        .filter_map(|d| ours(&d.json()))
        .collect();
    events.sort();
    events
}

#[tokio::test]
async fn every_sink_gets_each_event_once_and_a_dead_one_holds_nothing_up() -> anyhow::Result<()> {
    // FluxUp's namespace as installed, where its shipped roles let it read its settings. Set
    // before anything else runs (this binary has one test, on one thread).
    // SAFETY: no other thread reads the environment yet.
    unsafe { std::env::set_var("POD_NAMESPACE", fluxup_sandbox::FLUXUP_NAMESPACE) };
    let sb = Sandbox::start_full("notifications").await?;
    seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    delete_requests(&sb, NS).await?;
    apply_app(
        &sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": APP, "namespace": NS},
            "spec": {"helmReleaseRef": {"name": "webapp"},
                     "kustomizationRef": {"name": "webapp", "namespace": "flux-system"},
                     "versionPolicy": {"chart": {"git": {"file": "apps/webapp/helmrelease.yaml"}}}},
        }),
    )
    .await?;
    wait_resolved(&sb, NS, APP).await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    let slack = Receiver::start(0).await?;
    let signed = Receiver::start(0).await?;
    let flaky = Receiver::start(2).await?;
    let from_flux = Receiver::start(0).await?;

    // FluxUp's settings, where the controllers run.
    let home = fluxup_operator::leader::lease_namespace();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "fluxup-test-hook"},
        "stringData": {"address": signed.url, "token": TOKEN},
    }))?;
    let apply = PatchParams::apply("notifications-test").force();
    Api::<Secret>::namespaced(sb.client.clone(), &home)
        .patch("fluxup-test-hook", &apply, &Patch::Apply(&secret))
        .await?;
    let sinks = format!(
        "- {{name: chat, type: slack, address: '{slack}', namespaces: [{NS}]}}\n\
         - {{name: signed, type: webhook, secretRef: {{name: fluxup-test-hook}}, namespaces: [{NS}]}}\n\
         - {{name: flaky, type: webhook, address: '{flaky}', namespaces: [{NS}], events: [UpgradeStarted, UpgradeSucceeded]}}\n\
         - {{name: dead, type: webhook, address: 'http://127.0.0.1:1/', namespaces: [{NS}]}}\n\
         - {{name: flux, type: flux, address: '{flux}', namespaces: [{NS}]}}\n",
        slack = slack.url,
        flaky = flaky.url,
        flux = sb.env("FLUX_EVENTS_URL")?,
    );
    settings::parse(&sinks).map_err(anyhow::Error::msg)?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": settings::CONFIG_MAP},
        "data": {settings::KEY: sinks},
    }))?;
    Api::<ConfigMap>::namespaced(sb.client.clone(), &home)
        .patch(settings::CONFIG_MAP, &apply, &Patch::Apply(&cm))
        .await?;

    // Flux routes events of the app's HelmRelease through the user's Alert and Provider.
    let flux_object = |kind: &str, plural: &str| {
        let gvk = GroupVersionKind::gvk("notification.toolkit.fluxcd.io", "v1beta3", kind);
        Api::<DynamicObject>::namespaced_with(
            sb.client.clone(),
            NS,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    };
    let provider = json!({
        "apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Provider",
        "metadata": {"name": "fluxup-test"},
        "spec": {"type": "generic", "address": from_flux.url},
    });
    let alert = json!({
        "apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Alert",
        "metadata": {"name": "fluxup-test"},
        "spec": {"providerRef": {"name": "fluxup-test"}, "eventSeverity": "info",
                 "eventSources": [{"kind": "HelmRelease", "name": NS}]},
    });
    flux_object("Provider", "providers")
        .patch("fluxup-test", &apply, &Patch::Apply(&provider))
        .await?;
    flux_object("Alert", "alerts")
        .patch("fluxup-test", &apply, &Patch::Apply(&alert))
        .await?;

    // Upgrade, then roll back (which puts the demo back as it was).
    let before = deployed(&sb, NS).await?;
    let target = if before == "1.0.1" { "1.1.0" } else { "1.0.1" };
    let up = format!("webapp-{run}-notify-up");
    let ended = run_request(&sb, NS, APP, &up, chart(target), false).await?;
    assert_eq!(
        ended.status().phase,
        Some(UpgradePhase::Succeeded),
        "the upgrade with a dead receiver configured: {:?}",
        ended.status().message
    );
    let back = format!("webapp-{run}-notify-back");
    let rollback: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": back},
        "spec": {"upgradeRequestRef": {"name": up}},
    }))?;
    let rollbacks = Api::<RollbackRequest>::namespaced(sb.client.clone(), NS);
    rollbacks.create(&PostParams::default(), &rollback).await?;
    let rolled_back = eventually("the rollback's end", Duration::from_secs(180), || async {
        let r = rollbacks.get(&back).await?;
        let phase = r.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        Ok(if phase.is_terminal() {
            Ok(r)
        } else {
            Err(format!("{phase:?}"))
        })
    })
    .await?;
    let status = rolled_back.status.clone().unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );

    let ours_json = |body: &Value| {
        let name = body["request"]["name"].as_str()?;
        (name == up || name == back).then(|| body["type"].as_str().unwrap_or_default().to_string())
    };
    // Slack gets text: the request is named in the context line, the event in the title.
    let ours_slack = |body: &Value| {
        let context = body["blocks"][1]["elements"][0]["text"].as_str()?;
        let text = body["text"].as_str()?;
        (context.ends_with(&format!("UpgradeRequest {up}"))
            || context.ends_with(&format!("RollbackRequest {back}")))
        .then(|| {
            let title = text
                .split(&format!(" {NS}/{APP}:"))
                .next()
                .unwrap_or_default();
            title
                .replace(" started", "Started")
                .replace(" succeeded", "Succeeded")
        })
    };
    // Flux passes on the metadata without its API-group prefix.
    let ours_flux = |event: &Value| {
        let request = event["metadata"]["request"].as_str()?;
        (event["reportingController"] == "fluxup"
            && (request == format!("UpgradeRequest/{up}")
                || request == format!("RollbackRequest/{back}")))
        .then(|| event["reason"].as_str().unwrap_or_default().to_string())
    };
    let all = [
        "RollbackStarted",
        "RollbackSucceeded",
        "UpgradeStarted",
        "UpgradeSucceeded",
    ];
    // Wait for every delivery (the flaky receiver's retries take 1 + 2 s), then a little longer,
    // so a duplicate sent late would be seen.
    eventually("every notification", Duration::from_secs(60), || async {
        let got = [
            accepted_events(&slack, ours_slack),
            accepted_events(&signed, ours_json),
            accepted_events(&flaky, ours_json),
            accepted_events(&from_flux, ours_flux),
        ];
        Ok(
            if got[0].len() >= 4 && got[1].len() >= 4 && got[2].len() >= 2 && got[3].len() >= 4 {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            },
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(accepted_events(&slack, ours_slack), all, "Slack receiver");
    assert_eq!(accepted_events(&signed, ours_json), all, "signed webhook");
    assert_eq!(
        accepted_events(&flaky, ours_json),
        ["UpgradeStarted", "UpgradeSucceeded"],
        "the flaky receiver gets only the events it asked for, once each"
    );
    assert_eq!(accepted_events(&from_flux, ours_flux), all, "through Flux");

    // The refused deliveries were tried again.
    let flaky_tries = flaky.deliveries();
    assert_eq!(flaky_tries.iter().filter(|d| !d.accepted).count(), 2);

    // What each kind of receiver gets.
    for d in signed.deliveries().iter().filter(|d| d.accepted) {
        let body = d.json();
        if ours_json(&body).is_none() {
            continue;
        }
        assert_eq!(
            d.headers["x-signature"].to_str()?,
            payload::signature(TOKEN.as_bytes(), &d.body),
            "the body is signed with the Secret's token"
        );
        assert_eq!(d.headers["x-fluxup-event"].to_str()?, body["type"]);
        assert_eq!(d.headers["x-fluxup-delivery"].to_str()?, body["id"]);
        assert_eq!(body["app"], json!({"namespace": NS, "name": APP}));
        assert_eq!(body["helmRelease"], json!({"namespace": NS, "name": NS}));
        let (from, to) = match body["type"].as_str() {
            Some(t) if t.starts_with("Upgrade") => (before.as_str(), target),
            _ => (target, before.as_str()),
        };
        assert_eq!(body["fromVersion"], from, "{body}");
        assert_eq!(body["toVersion"], to, "{body}");
        assert_eq!(
            body["requestedBy"], "sandbox-admin",
            "the API server recorded who created the request: {body}"
        );
    }
    for d in from_flux.deliveries() {
        let event = d.json();
        if ours_flux(&event).is_some() {
            assert_eq!(event["involvedObject"]["kind"], "HelmRelease");
            assert_eq!(event["involvedObject"]["name"], NS);
            assert_eq!(event["severity"], "info");
            assert_eq!(event["metadata"]["app"], format!("{NS}/{APP}"));
            assert_eq!(event["metadata"]["requestedBy"], "sandbox-admin");
        }
    }

    // The request's Events name the person who asked.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(sb.client.clone(), NS)
        .list(&Default::default())
        .await?;
    let requested: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Requested"))
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(&up) || r.name.as_deref() == Some(&back))
        })
        .filter_map(|e| e.note.clone())
        .collect();
    assert_eq!(requested.len(), 2, "{requested:?}");
    assert!(
        requested
            .iter()
            .all(|n| n.starts_with("sandbox-admin asked to")),
        "{requested:?}"
    );

    // Clean up: no settings left for later tests; the app is back where it was.
    Api::<ConfigMap>::namespaced(sb.client.clone(), &home)
        .delete(settings::CONFIG_MAP, &DeleteParams::default())
        .await?;
    flux_object("Alert", "alerts")
        .delete("fluxup-test", &DeleteParams::default())
        .await?;
    eventually(
        "webapp back at its version",
        Duration::from_secs(120),
        || async {
            let now = deployed(&sb, NS).await?;
            Ok(if now == before { Ok(()) } else { Err(now) })
        },
    )
    .await?;
    Ok(())
}
