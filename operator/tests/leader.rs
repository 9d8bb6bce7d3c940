//! Two replicas: one holds the Lease and runs the controllers; when it shuts down (SIGTERM in
//! `fluxup serve`) it releases the Lease and the other takes over at once.

use fluxup_api::ManagedApp;
use fluxup_operator::Scope;
use fluxup_operator::leader::{LEASE_NAME, run_controllers};
use fluxup_sandbox::Sandbox;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn wait_for_holder(leases: &Api<Lease>, not: Option<&str>) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(h) = holder(leases).await
            && Some(h.as_str()) != not
        {
            return Ok(h);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no new Lease holder (other than {not:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replica(sb: &Sandbox, stop: &CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (client, ns, stop) = (sb.client.clone(), sb.ns().to_string(), stop.clone());
    tokio::spawn(async move {
        let scope = Scope {
            namespace: Some(ns.clone()),
        };
        run_controllers(client, scope, &ns, stop).await
    })
}

#[tokio::test]
async fn one_replica_leads_and_hands_over_when_it_stops() -> anyhow::Result<()> {
    let sb = Sandbox::start("leader").await?;
    let leases: Api<Lease> = sb.api();

    let first_stop = CancellationToken::new();
    let first = replica(&sb, &first_stop);
    let first_holder = wait_for_holder(&leases, None).await?;

    let second_stop = CancellationToken::new();
    let second = replica(&sb, &second_stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(first_holder.as_str()),
        "one leader at a time"
    );

    // The leader stops: its controllers finish, it gives the Lease up, and returns; the other
    // replica takes over within the lease's duration.
    first_stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), first).await???;
    let now = holder(&leases).await;
    assert!(
        now.as_deref() != Some(first_holder.as_str()),
        "the stopped replica still holds the Lease"
    );
    let second_holder = wait_for_holder(&leases, Some(&first_holder)).await?;
    assert_ne!(second_holder, first_holder);

    // The new leader's controllers work.
    let apps: Api<ManagedApp> = sb.api();
    apps.patch(
        "web",
        &PatchParams::apply("test"),
        &Patch::Apply(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp", "metadata": {"name": "web"},
            "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "web"}},
        })),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while apps.get("web").await?.status.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the new leader wrote no status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    second_stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), second).await???;
    assert_eq!(
        holder(&leases).await,
        None,
        "the last replica released the Lease too"
    );
    Ok(())
}
