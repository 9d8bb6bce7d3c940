//! Scenario: a chart whose claim is a plain template (the demo's `notes`: a Deployment and a
//! PersistentVolumeClaim rendered by Helm, its HelmRelease with drift detection on), as most
//! homelab charts and the app-template chart make them. Upgraded, rolled back — the data of
//! before the upgrade comes back (checksums) in a claim Helm still owns — then reconciled by Flux
//! again with drift detection and upgraded again, all with real Flux, CSI and Gitea.

mod common;

use anyhow::Context as _;
use common::*;
use fluxup_api::flux::{HelmRelease, RECONCILE_REQUESTED_AT};
use fluxup_api::{RollbackPhase, RollbackRequest};
use fluxup_sandbox::{Sandbox, eventually, seed_demo};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "notes";
const CLAIM: &str = "notes-data";

fn write_data(dir: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("notes"))?;
    std::fs::write(dir.join("notes/today.txt"), text)?;
    Ok(())
}

/// Asks helm-controller to reconcile the release now and waits until it has, Ready.
async fn reconciled_ready(sb: &Sandbox) -> anyhow::Result<()> {
    let api: Api<HelmRelease> = Api::namespaced(sb.client.clone(), NS);
    let at = k8s_openapi::jiff::Timestamp::now().to_string();
    api.patch(
        "notes",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: at}}})),
    )
    .await?;
    eventually(
        "helm-controller reconciled notes, Ready",
        Duration::from_secs(120),
        || async {
            let hr = api.get("notes").await?;
            let status = hr.status.clone().unwrap_or_default();
            let handled = status.flux.last_handled_reconcile_at.as_deref() == Some(at.as_str());
            let ready = status
                .flux
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| (c.status.clone(), c.message.clone()));
            Ok(match ready {
                Some((s, _)) if handled && s == "True" => Ok(()),
                other => Err(format!("handled {handled}, Ready {other:?}")),
            })
        },
    )
    .await
}

#[tokio::test]
async fn a_plain_claim_template_rolls_back_and_upgrades_again() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("plain-claims").await?;
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
    wait_resolved(&sb, NS, "notes").await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();
    let workloads = app(&sb, NS, "notes")
        .await?
        .status
        .and_then(|s| s.resolved)
        .map(|r| r.workloads)
        .unwrap_or_default();
    assert_eq!(
        workloads
            .iter()
            .map(|w| (w.kind.as_str(), w.name.as_str()))
            .collect::<Vec<_>>(),
        [("Deployment", "notes")],
        "the Deployment mounting the claim is found"
    );

    let dir = bound_volume_dir(&sb, NS, CLAIM).await?;
    write_data(&dir, &format!("notes before the upgrade ({run})\n"))?;
    let data_before = checksums(&dir)?;
    let before = deployed(&sb, NS).await?;
    let target = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };

    let up = format!("notes-{run}-up");
    let ended = run_request(&sb, NS, "notes", &up, chart(target), false).await?;
    check_rolled_out(&sb, NS, &ended, target).await?;
    write_data(&dir, &format!("notes rewritten by {target} ({run})\n"))?;

    let rb = format!("{up}-rollback");
    let req: RollbackRequest = serde_json::from_value(json!({
        "apiVersion": "fluxup.dev/v1alpha1", "kind": "RollbackRequest",
        "metadata": {"name": rb},
        "spec": {"upgradeRequestRef": {"name": up}},
    }))?;
    let rollbacks: Api<RollbackRequest> = Api::namespaced(sb.client.clone(), NS);
    rollbacks.create(&PostParams::default(), &req).await?;
    let status = eventually("the rollback ended", Duration::from_secs(300), || async {
        let s = rollbacks.get(&rb).await?.status.unwrap_or_default();
        Ok(match s.phase {
            Some(p) if p.is_terminal() && s.released_at.is_some() => Ok(s),
            _ => Err(format!("{:?}: {:?}", s.phase, s.message)),
        })
    })
    .await?;
    assert_eq!(
        status.phase,
        Some(RollbackPhase::Succeeded),
        "{:?}",
        status.message
    );
    assert_eq!(deployed(&sb, NS).await?, before);
    let restored = bound_volume_dir(&sb, NS, CLAIM).await?;
    assert_ne!(restored, dir, "the claim was recreated from the snapshot");
    assert_eq!(
        checksums(&restored)?,
        data_before,
        "the notes are as before the upgrade"
    );
    // Helm still owns the restored claim, and helm-controller (drift detection on) reconciles
    // it without a complaint about its immutable dataSource.
    let claim = Api::<PersistentVolumeClaim>::namespaced(sb.client.clone(), NS)
        .get(CLAIM)
        .await?;
    assert_eq!(
        claim
            .annotations()
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some("notes")
    );
    reconciled_ready(&sb).await?;
    nothing_held(&sb, NS).await?;

    // And the next upgrade works on it.
    let again = run_request(
        &sb,
        NS,
        "notes",
        &format!("notes-{run}-again"),
        chart(target),
        false,
    )
    .await?;
    check_rolled_out(&sb, NS, &again, target).await?;
    reconciled_ready(&sb).await?;
    assert_eq!(
        checksums(&bound_volume_dir(&sb, NS, CLAIM).await?)?,
        data_before,
        "an upgrade leaves the data alone"
    );
    // Leave the demo at the version it had.
    let back = run_request(
        &sb,
        NS,
        "notes",
        &format!("notes-{run}-back"),
        chart(&before),
        false,
    )
    .await?;
    check_rolled_out(&sb, NS, &back, &before).await?;
    nothing_held(&sb, NS).await?;
    let _ = ended
        .status()
        .snapshot
        .context("the upgrade took a snapshot")?;
    Ok(())
}
