//! Figures: the Kubernetes API requests one upgrade and one rollback of the demo datastore cost
//! (real Flux, CSI and Gitea), counted by the controllers' own client, by verb and resource. The
//! operations read the queue and FluxUp's snapshots from watch caches and wake on the objects
//! they wait for, so neither makes a LIST at all (which pods mount a claim a rollback replaces
//! comes from a slim pod cache too).

mod common;

use common::*;
use fluxup_api::RollbackRequest;
use fluxup_operator::Scope;
use fluxup_operator::api_requests::ApiRequests;
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "datastore";
const APP: &str = "datastore-counted";

/// What changed between two tallies.
fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn print(what: &str, requests: &BTreeMap<String, u64>) {
    let total: u64 = requests.values().sum();
    println!("API requests per {what}: {total} in all");
    for (k, v) in requests {
        println!("  {k} = {v}");
    }
}

#[tokio::test]
async fn an_upgrade_and_a_rollback_make_no_list_request() -> anyhow::Result<()> {
    // FluxUp's namespace as installed, where its Role lets it watch Renovate's Jobs and read
    // its settings. SAFETY: set before anything else runs (one test, on one thread).
    unsafe { std::env::set_var("POD_NAMESPACE", fluxup_sandbox::FLUXUP_NAMESPACE) };
    let sb = Sandbox::start_full("operation-requests").await?;
    seed_demo()?;
    allow_sandbox_servers(&sb);
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    // As the shipped ServiceAccount: what it asks is what config/rbac must grant.
    let kubeconfig = Kubeconfig::read_from(sb.kubeconfig_of("fluxup-controller"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // The other controllers count apart, so the operations' figures are theirs alone.
    let others = ApiRequests::default();
    let other_client = others.client(config.clone())?;
    let (t0, t3) = (stop.clone(), stop.clone());
    tokio::spawn(fluxup_operator::managed_app::run(
        other_client.clone(),
        Scope::default(),
        async move { t0.cancelled().await },
    ));
    tokio::spawn(fluxup_operator::renovate_jobs::run(
        other_client.clone(),
        Scope::default(),
        async move { t3.cancelled().await },
    ));
    // The operations' controllers with a client that counts what they ask.
    let requests = ApiRequests::default();
    let client = requests.client(config)?;
    let (t1, t2) = (stop.clone(), stop.clone());
    tokio::spawn(fluxup_operator::upgrade::controller::run(
        client.clone(),
        Scope::default(),
        async move { t1.cancelled().await },
    ));
    tokio::spawn(fluxup_operator::rollback::controller::run(
        client.clone(),
        Scope::default(),
        async move { t2.cancelled().await },
    ));
    Api::<RollbackRequest>::namespaced(sb.client.clone(), NS)
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    delete_requests(&sb, NS).await?;
    apply_app(
        &sb,
        app_copy(
            APP,
            NS,
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                       "pvcs": [{"name": "data-datastore-0"}]}}),
        ),
    )
    .await?;
    wait_resolved(&sb, NS, APP).await?;
    // Once the caches have started (their WATCHes), the operations alone count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    let before = deployed(&sb, NS).await?;
    let target = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };

    let start = requests.counts();
    let up = format!("datastore-{run}-counted");
    let ended = run_request(&sb, NS, APP, &up, chart(target), false).await?;
    check_rolled_out(&sb, NS, &ended, target).await?;
    let api: Api<fluxup_api::UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);
    eventually("the upgrade released", Duration::from_secs(30), || async {
        let s = api.get(&up).await?.status.unwrap_or_default();
        Ok(if s.released_at.is_some() {
            Ok(())
        } else {
            Err(format!("{:?}", s.phase))
        })
    })
    .await?;
    let after_upgrade = requests.counts();
    let upgrade = delta(&after_upgrade, &start);
    print("upgrade", &upgrade);

    let rb = format!("{up}-rollback");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": rb},
        "spec": {"upgradeRequestRef": {"name": up}},
    }))?;
    let rollbacks: Api<RollbackRequest> = Api::namespaced(sb.client.clone(), NS);
    rollbacks.create(&PostParams::default(), &req).await?;
    eventually(
        "the rollback released",
        Duration::from_secs(240),
        || async {
            let s = rollbacks.get(&rb).await?.status.unwrap_or_default();
            Ok(if s.released_at.is_some() {
                Ok(s)
            } else {
                Err(format!("{:?} {:?}", s.phase, s.message))
            })
        },
    )
    .await?;
    let rollback = delta(&requests.counts(), &after_upgrade);
    print("rollback", &rollback);
    assert_eq!(deployed(&sb, NS).await?, before);
    nothing_held(&sb, NS).await?;

    let lists = |r: &BTreeMap<String, u64>| -> Vec<String> {
        r.iter()
            .filter(|(k, _)| k.starts_with("LIST "))
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    assert!(
        lists(&upgrade).is_empty(),
        "an upgrade listed: {:?}",
        lists(&upgrade)
    );
    assert!(
        lists(&rollback).is_empty(),
        "a rollback listed: {:?}",
        lists(&rollback)
    );
    Api::<fluxup_api::ManagedApp>::namespaced(sb.client.clone(), NS)
        .delete(APP, &Default::default())
        .await?;

    // What the shipped roles grant against what the controllers asked, verb by verb.
    let mut used = requests.counts();
    used.extend(others.counts());
    fluxup_sandbox::compare_grants(
        "fluxup-controller",
        used.keys(),
        &["role.yaml", "leader_election_role.yaml"],
        ELSEWHERE,
    )?;
    Ok(())
}

/// Grants an upgrade and a rollback of the datastore do not use, and where they are used.
const ELSEWHERE: &[(&str, &str, &str)] = &[
    (
        "cronjobs",
        "get",
        "the CronJob a verification Job is made from (health_checks)",
    ),
    ("jobs", "create", "a verification Job (health_checks)"),
    (
        "services",
        "get",
        "an app's HTTP health check (health_checks)",
    ),
    (
        "services/proxy",
        "get",
        "an app's HTTP health check (health_checks)",
    ),
    (
        "rollbackrequests",
        "create",
        "auto-rollback (upgrade_failures)",
    ),
    (
        "deployments",
        "get",
        "apps that are Deployments (holds_scenario)",
    ),
    (
        "deployments",
        "patch",
        "apps that are Deployments (holds_scenario)",
    ),
    (
        "deployments/scale",
        "patch",
        "apps that are Deployments (holds_scenario)",
    ),
    (
        "helmrepositories",
        "get",
        "charts from a HelmRepository (upgrade_scenario)",
    ),
    (
        "jobs",
        "patch",
        "a read Renovate Job is marked (renovate_job)",
    ),
    (
        "jobs",
        "get",
        "a Renovate Job is re-read before it is marked (renovate_job)",
    ),
    ("pods/log", "get", "a Renovate Job's log (renovate_job)"),
    (
        "events",
        "patch",
        "a repeated Event is counted up (every long wait)",
    ),
    (
        "leases",
        "get",
        "leader election (operator_killed, crash_matrix)",
    ),
    (
        "leases",
        "create",
        "leader election (operator_killed, crash_matrix)",
    ),
    (
        "leases",
        "patch",
        "leader election (operator_killed, crash_matrix)",
    ),
    (
        "volumesnapshots",
        "delete",
        "retention of old snapshots (rollback_scenario)",
    ),
    (
        "volumesnapshots",
        "create",
        "snapshots are server-side applied: a PATCH authorized as create",
    ),
    (
        "rollbackrequests",
        "get",
        "an auto-rollback found after a crash (crash_matrix)",
    ),
];
