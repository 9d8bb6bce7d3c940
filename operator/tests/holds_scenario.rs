//! Scenario: FluxUp touches only what it holds, on the layouts real fleets have. With real Flux,
//! CSI and Gitea:
//! - a Kustomization a person suspended and a workload a person scaled to zero stay so, with
//!   finished requests that once held them present and across a restart of the controllers;
//!   an upgrade asked for meanwhile says who holds the Kustomization and changes nothing;
//! - two apps in one Kustomization, upgraded at the same time, take turns (one queue per held
//!   object) and neither resumes the other's hold;
//! - a request recreated under an old name is a new operation (its own commit and snapshot);
//! - deleting the request, or the ManagedApp, mid-way leaves Flux resumed and the app running.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::flux::Kustomization;
use fluxup_api::{UpgradePhase, UpgradeRequest};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits until the demo datastore runs the version its file in Git names (after a request that
/// may or may not have committed was let go).
async fn runs_what_git_says(sb: &Sandbox, repo: &str) -> anyhow::Result<()> {
    eventually(
        "Flux running what Git says",
        Duration::from_secs(120),
        || async {
            let (code, file) = sb.gitea()?.call(
                "GET",
                &format!("/repos/{repo}/raw/apps/datastore/ocirepository.yaml?ref=main"),
                None,
            )?;
            anyhow::ensure!(code == 200, "reading the file: HTTP {code}");
            let file = file
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| file.to_string());
            let in_git = file
                .lines()
                .find_map(|l| l.trim().strip_prefix("tag: "))
                .map(|t| t.trim().trim_matches('"').to_string())
                .unwrap_or_default();
            let running = deployed(sb, "datastore").await?;
            Ok(if running == in_git {
                Ok(())
            } else {
                Err(format!("{running} runs, Git has {in_git}"))
            })
        },
    )
    .await
}

/// The tests of this file share the demo apps and each runs its own controllers: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn merge(value: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(value)
}

/// An UpgradeRequest that ended before this FluxUp (or under an older one), with what it once
/// held in its status and no `releasedAt`: the kind of request the old controllers acted on
/// again at every restart.
async fn finished_request(
    sb: &Sandbox,
    ns: &str,
    name: &str,
    app: &str,
    status: serde_json::Value,
) -> anyhow::Result<()> {
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), ns);
    let req: UpgradeRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
        "metadata": {"name": name},
        "spec": {"managedAppRef": {"name": app}, "targetVersion": {"chart": "1.0.1"}},
    }))?;
    api.create(&PostParams::default(), &req).await?;
    api.patch_status(
        name,
        &PatchParams::default(),
        &merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_persons_suspension_and_scale_to_zero_are_kept() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let sb = Sandbox::start_full("holds-person").await?;
    let repo = seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let mut upgrader = start_upgrader(&sb, &stop);
    for ns in ["webapp", "datastore"] {
        delete_requests(&sb, ns).await?;
        nothing_held(&sb, ns).await?;
    }
    wait_resolved(&sb, "webapp", "webapp").await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    // FluxUp is down for a while (it restarts below: every request is then reconciled again).
    upgrader.abort();
    let _ = (&mut upgrader).await;

    // A person pauses webapp's Kustomization (`flux suspend ks webapp`) and stops the datastore
    // (`kubectl scale sts datastore --replicas 0`).
    let kustomizations: Api<Kustomization> = Api::namespaced(sb.client.clone(), "flux-system");
    let stateful_sets: Api<StatefulSet> = Api::namespaced(sb.client.clone(), "datastore");
    kustomizations
        .patch(
            "webapp",
            &PatchParams::default(),
            &merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    stateful_sets
        .patch_scale(
            "datastore",
            &PatchParams::default(),
            &merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    // Finished requests that once held exactly these.
    finished_request(
        &sb,
        "webapp",
        &format!("old-{run}"),
        "webapp",
        json!({"phase": "Succeeded",
               "holds": [{"kind": "Kustomization", "namespace": "flux-system", "name": "webapp"},
                         {"kind": "HelmRelease", "namespace": "webapp", "name": "webapp"}]}),
    )
    .await?;
    finished_request(
        &sb,
        "datastore",
        &format!("old-{run}"),
        "datastore",
        json!({"phase": "Failed",
               "holds": [{"kind": "Kustomization", "namespace": "flux-system", "name": "datastore"}],
               "stoppedWorkloads": [{"kind": "StatefulSet", "name": "datastore", "replicas": 1}]}),
    )
    .await?;

    // FluxUp starts again.
    upgrader = start_upgrader(&sb, &stop);
    for ns in ["webapp", "datastore"] {
        let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), ns);
        let name = format!("old-{run}");
        eventually(
            &format!("{ns}/{name} seen and done"),
            Duration::from_secs(30),
            || async {
                let status = api.get(&name).await?.status.unwrap_or_default();
                Ok(if status.released_at.is_some() {
                    Ok(())
                } else {
                    Err(format!("{status:?}"))
                })
            },
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kustomizations.get("webapp").await?.spec.suspend,
        Some(true),
        "the person's suspension was undone"
    );
    assert_eq!(
        stateful_sets
            .get("datastore")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(0),
        "the person's scale to zero was undone"
    );

    // An upgrade asked for now says who holds the Kustomization, and changes nothing.
    let head_before = head(&sb, &repo)?;
    let ended = run_request(
        &sb,
        "webapp",
        "webapp",
        &format!("webapp-{run}-while-paused"),
        chart("1.1.0"),
        false,
    )
    .await?;
    let status = ended.status();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("flux: Kustomization flux-system/webapp is suspended, not by FluxUp"),
        "{message}"
    );
    assert_eq!(head(&sb, &repo)?, head_before, "it committed");
    assert_eq!(kustomizations.get("webapp").await?.spec.suspend, Some(true));

    // The person resumes and starts things again; the demo is as it was.
    kustomizations
        .patch(
            "webapp",
            &PatchParams::default(),
            &merge(json!({"spec": {"suspend": null}})),
        )
        .await?;
    stateful_sets
        .patch_scale(
            "datastore",
            &PatchParams::default(),
            &merge(json!({"spec": {"replicas": 1}})),
        )
        .await?;
    for ns in ["webapp", "datastore"] {
        delete_requests(&sb, ns).await?;
        nothing_held(&sb, ns).await?;
    }
    upgrader.abort();
    Ok(())
}

#[tokio::test]
async fn two_apps_in_one_kustomization_take_turns() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let sb = Sandbox::start_full("holds-shared").await?;
    seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    delete_requests(&sb, "webapp").await?;
    // A second app in webapp's Kustomization (as two apps in one `apps` Kustomization are).
    for name in ["webapp-one", "webapp-twin"] {
        apply_app(
            &sb,
            app_copy(name, "webapp", "apps/webapp/helmrelease.yaml", json!({})),
        )
        .await?;
        wait_resolved(&sb, "webapp", name).await?;
    }
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    let before = deployed(&sb, "webapp").await?;
    let other = if before == "1.1.0" { "1.0.1" } else { "1.1.0" };

    // One app there, the other back, asked for while the first runs ...
    let first = format!("webapp-{run}-first");
    let second = format!("webapp-{run}-second");
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), "webapp");
    create_request(&sb, "webapp", "webapp-one", &first, chart(other), false).await?;
    wait_for_phase(&sb, "webapp", &first, UpgradePhase::Preflight).await?;
    create_request(&sb, "webapp", "webapp-twin", &second, chart(&before), false).await?;

    // ... the second waits its turn, saying for whom, while the first holds the Kustomization.
    let queued = eventually("the second queued", Duration::from_secs(60), || async {
        let first = api.get(&first).await?.status.unwrap_or_default();
        let second = api.get(&second).await?.status.unwrap_or_default();
        Ok(match (&second.queue, first.phase) {
            (Some(q), Some(p)) if p != UpgradePhase::Pending => Ok(q.clone()),
            _ => Err(format!(
                "first {:?}, second {:?}",
                first.phase, second.queue
            )),
        })
    })
    .await?;
    assert_eq!(queued.position, 2);
    assert_eq!(queued.ahead, [format!("UpgradeRequest webapp/{first}")]);
    let mut overlapped = false;
    let first_done = loop {
        let a = api.get(&first).await?.status.unwrap_or_default();
        let b = api.get(&second).await?.status.unwrap_or_default();
        let running = |p: Option<UpgradePhase>| p.is_some_and(|p| p != UpgradePhase::Pending);
        overlapped |= running(b.phase) && a.released_at.is_none();
        if a.released_at.is_some() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !overlapped,
        "the second started while the first still held the objects"
    );
    assert_eq!(
        first_done.phase,
        Some(UpgradePhase::Succeeded),
        "{:?}",
        first_done.message
    );
    let second_done = follow(&sb, "webapp", &second, Duration::from_secs(180)).await?;
    check_rolled_out(&sb, "webapp", &second_done, &before).await?;
    nothing_held(&sb, "webapp").await?;
    for name in ["webapp-one", "webapp-twin"] {
        Api::<fluxup_api::ManagedApp>::namespaced(sb.client.clone(), "webapp")
            .delete(name, &Default::default())
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn reused_names_are_new_operations_and_deletions_release_everything() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let sb = Sandbox::start_full("holds-identity").await?;
    let repo = seed_demo()?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    start_app_controller(&sb, &stop);
    let _upgrader = start_upgrader(&sb, &stop);
    let _rollbacker = start_rollbacker(&sb, &stop);
    const NS: &str = "datastore";
    delete_requests(&sb, NS).await?;
    let app = "datastore-identity";
    apply_app(
        &sb,
        app_copy(
            app,
            NS,
            "apps/datastore/ocirepository.yaml",
            json!({"volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                       "pvcs": [{"name": "data-datastore-0"}]}}),
        ),
    )
    .await?;
    wait_resolved(&sb, NS, app).await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    let before = deployed(&sb, NS).await?;
    let other = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };
    let api: Api<UpgradeRequest> = Api::namespaced(sb.client.clone(), NS);

    // One name, two operations: there, deleted, and the same name back.
    let name = format!("datastore-{run}-same-name");
    let first = run_request(&sb, NS, app, &name, chart(other), false).await?;
    check_rolled_out(&sb, NS, &first, other).await?;
    let first_status = first.status();
    api.delete(&name, &Default::default()).await?;
    eventually("the first gone", Duration::from_secs(30), || async {
        Ok(match api.get_opt(&name).await? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        })
    })
    .await?;
    let second = run_request(&sb, NS, app, &name, chart(&before), false).await?;
    check_rolled_out(&sb, NS, &second, &before).await?;
    let second_status = second.status();
    let commit = |s: &fluxup_api::UpgradeRequestStatus| {
        s.upgrade.as_ref().and_then(|u| u.git_commit.clone())
    };
    let snapshot = |s: &fluxup_api::UpgradeRequestStatus| {
        s.snapshot
            .as_ref()
            .and_then(|r| r.pvcs.first().map(|p| p.snapshot_name.clone()))
    };
    assert_ne!(
        commit(&first_status),
        commit(&second_status),
        "the old commit was taken as done"
    );
    assert_ne!(
        snapshot(&first_status),
        snapshot(&second_status),
        "the old snapshot was reused"
    );
    assert_eq!(commits_of(&sb, &repo, &format!("{NS}/{name}"))?, 2);
    let uid = api.get(&name).await?.uid().context("uid")?;
    assert_eq!(commits_of_operation(&sb, &repo, &uid)?, 1);

    // Deleted at each phase while it holds Flux and the stopped datastore: everything is let go
    // (after the commit, Flux then rolls the new version out).
    for (i, phase) in [
        UpgradePhase::Suspending,
        UpgradePhase::Quiescing,
        UpgradePhase::Snapshotting,
        UpgradePhase::Reconciling,
    ]
    .into_iter()
    .enumerate()
    {
        let now = deployed(&sb, NS).await?;
        let next = if now == "1.0.1" { "1.0.0" } else { "1.0.1" };
        let deleted = format!("datastore-{run}-deleted-{i}");
        create_request(&sb, NS, app, &deleted, chart(next), false).await?;
        wait_for_phase(&sb, NS, &deleted, phase).await?;
        let caught = api.get(&deleted).await?.status.and_then(|s| s.phase);
        api.delete(&deleted, &Default::default()).await?;
        nothing_held(&sb, NS).await?;
        // If it had committed, Flux (let go) rolls that version out: wait until what runs is
        // what Git says.
        runs_what_git_says(&sb, &repo).await?;
        println!("request deleted in {caught:?}: nothing held");
    }

    // A rollback deleted while it replaces the claim: the claim is there again, bound.
    let now = deployed(&sb, NS).await?;
    let next = if now == "1.0.1" { "1.0.0" } else { "1.0.1" };
    let undone = format!("datastore-{run}-to-undo");
    let ended = run_request(&sb, NS, app, &undone, chart(next), false).await?;
    check_rolled_out(&sb, NS, &ended, next).await?;
    let rollbacks: Api<fluxup_api::RollbackRequest> = Api::namespaced(sb.client.clone(), NS);
    let rb: fluxup_api::RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": format!("{undone}-rollback")},
        "spec": {"upgradeRequestRef": {"name": undone}},
    }))?;
    rollbacks.create(&PostParams::default(), &rb).await?;
    let rb_name = format!("{undone}-rollback");
    eventually(
        "the rollback replacing the claim",
        Duration::from_secs(120),
        || async {
            let p = rollbacks
                .get(&rb_name)
                .await?
                .status
                .and_then(|s| s.phase)
                .unwrap_or_default();
            Ok(if p >= fluxup_api::RollbackPhase::RestoringVolumes {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            })
        },
    )
    .await?;
    rollbacks.delete(&rb_name, &Default::default()).await?;
    nothing_held(&sb, NS).await?;
    bound_volume_dir(&sb, NS, "data-datastore-0").await?;
    // Deleted before or after its revert was committed (a race this test does not decide):
    // what runs settles on what Git says either way.
    runs_what_git_says(&sb, &repo).await?;

    // The ManagedApp deleted mid-way: the upgrade fails saying so, and lets everything go.
    let now = deployed(&sb, NS).await?;
    let other = if now == "1.0.1" { "1.0.0" } else { "1.0.1" };
    let orphan = format!("datastore-{run}-orphan");
    create_request(&sb, NS, app, &orphan, chart(other), false).await?;
    wait_for_phase(&sb, NS, &orphan, UpgradePhase::Snapshotting).await?;
    Api::<fluxup_api::ManagedApp>::namespaced(sb.client.clone(), NS)
        .delete(app, &Default::default())
        .await?;
    let ended = follow(&sb, NS, &orphan, Duration::from_secs(120)).await?;
    let status = ended.status();
    assert_eq!(status.phase, Some(UpgradePhase::Failed));
    assert_eq!(
        status.conditions[0].reason, "AppDeleted",
        "{:?}",
        status.message
    );
    nothing_held(&sb, NS).await?;
    assert_eq!(deployed(&sb, NS).await?, now, "nothing was committed");

    // Leave the demo at the version it had.
    if now != before {
        apply_app(
            &sb,
            app_copy(app, NS, "apps/datastore/ocirepository.yaml", json!({})),
        )
        .await?;
        wait_resolved(&sb, NS, app).await?;
        let back = run_request(
            &sb,
            NS,
            app,
            &format!("datastore-{run}-back"),
            chart(&before),
            false,
        )
        .await?;
        check_rolled_out(&sb, NS, &back, &before).await?;
        Api::<fluxup_api::ManagedApp>::namespaced(sb.client.clone(), NS)
            .delete(app, &Default::default())
            .await?;
    }
    Ok(())
}
