//! Scenario: the real `fluxup serve` process is killed with SIGKILL while an upgrade of the demo
//! datastore (a StatefulSet on a CSI volume) waits inside a phase — for its snapshot to become
//! ready, and for Flux to roll the new version out — and then started again. Each upgrade still
//! ends Succeeded with one commit and one snapshot, the StatefulSet runs again and the Flux
//! Kustomization is resumed.

#[path = "../../operator/tests/common/mod.rs"]
mod common;
mod support;

use anyhow::Context as _;
use common::*;
use fluxup_api::UpgradePhase;
use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_operator::snapshots::REQUEST_LABEL;
use fluxup_sandbox::{Sandbox, repo_root, seed_demo};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use std::time::Duration;
use support::{sigkill, start_operator};

#[tokio::test]
async fn an_upgrade_survives_sigkill_of_the_operator_inside_a_phase() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("operator-killed").await?;
    let repo = seed_demo()?;
    let (mut operator, _) = start_operator(&sb, "operator-killed-0.log", &[])?;
    let mut ports = support::Ports::default();
    // Requests of an earlier run: their finalizer needs the operator.
    delete_requests(&sb, "datastore").await?;
    apply_app(
        &sb,
        json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "datastore-killed", "namespace": "datastore"},
            "spec": {"helmReleaseRef": {"name": "datastore"},
                     "kustomizationRef": {"name": "datastore", "namespace": "flux-system"},
                     "volumeSnapshots": {"volumeSnapshotClassName": "csi-snapclass",
                                         "pvcs": [{"name": "data-datastore-0"}]},
                     "versionPolicy": {"chart": {"git": {"file": "apps/datastore/ocirepository.yaml"}}}},
        }),
    )
    .await?;
    wait_resolved(&sb, "datastore", "datastore-killed").await?;
    let run = sb.ns().rsplit('-').next().unwrap_or("run").to_string();

    for (i, kill_in) in [UpgradePhase::Snapshotting, UpgradePhase::Reconciling]
        .into_iter()
        .enumerate()
    {
        let before = deployed(&sb, "datastore").await?;
        let target = if before == "1.0.1" { "1.0.0" } else { "1.0.1" };
        let request = format!("datastore-{run}-sigkill-{i}");
        create_request(
            &sb,
            "datastore",
            "datastore-killed",
            &request,
            chart(target),
            false,
        )
        .await?;
        wait_for_phase(&sb, "datastore", &request, kill_in).await?;
        sigkill(operator)?;
        println!("SIGKILL in {kill_in:?}");
        // Nothing moves while it is down; a new process (after the dead one's lease expires)
        // picks the upgrade up from its status.
        (operator, ports) = start_operator(&sb, &format!("operator-killed-{}.log", i + 1), &[])?;
        let ended = follow(&sb, "datastore", &request, Duration::from_secs(240)).await?;
        println!(
            "killed in {kill_in:?}: converged [{}]",
            ended.timeline_text()
        );
        check_rolled_out(&sb, "datastore", &ended, target).await?;
        assert_eq!(
            commits_of(&sb, &repo, &format!("datastore/{request}"))?,
            1,
            "one commit"
        );
        let snapshots = Api::<VolumeSnapshot>::namespaced(sb.client.clone(), "datastore")
            .list(&ListParams::default().labels(&format!("{REQUEST_LABEL}={request}")))
            .await?;
        assert_eq!(snapshots.items.len(), 1, "one snapshot");
        let sts = Api::<StatefulSet>::namespaced(sb.client.clone(), "datastore")
            .get("datastore")
            .await?;
        assert_eq!(sts.spec.and_then(|s| s.replicas), Some(1), "runs again");
    }

    // The last process finished one upgrade; Prometheus sees it at /metrics (on its own port,
    // not the dashboard's), with the time it spent in the phases it ran.
    let (code, _) = fluxup_sandbox::http(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", ports.web),
        &[],
        None,
    )?;
    assert_ne!(code, 200, "no /metrics on the dashboard's port");
    let (code, metrics) = fluxup_sandbox::http(
        "GET",
        &format!("http://127.0.0.1:{}/metrics", ports.metrics),
        &[],
        None,
    )?;
    assert_eq!(code, 200);
    for line in [
        "fluxup_upgrades_total{result=\"succeeded\"} 1",
        "fluxup_upgrade_duration_seconds_count{result=\"succeeded\"} 1",
        "fluxup_upgrade_phase_duration_seconds_count{phase=\"HealthChecking\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    sigkill(operator)?;

    // The processes logged JSON, one object per line; the lines of each upgrade's steps carry
    // its uid as `operation`, so a person can pull one upgrade's story out of the logs.
    let mut uids = std::collections::BTreeMap::new();
    for i in 0..2 {
        let request = format!("datastore-{run}-sigkill-{i}");
        let uid = Api::<fluxup_api::UpgradeRequest>::namespaced(sb.client.clone(), "datastore")
            .get(&request)
            .await?
            .metadata
            .uid
            .unwrap_or_default();
        uids.insert(format!("datastore/{request}"), uid);
    }
    let mut steps = 0;
    for i in 0..3 {
        let log =
            std::fs::read_to_string(repo_root().join(format!("target/operator-killed-{i}.log")))?;
        for line in log.lines() {
            let object: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("a log line that is not JSON: {line}"))?;
            if let Some(uid) = object["span"]["request"].as_str().and_then(|r| uids.get(r)) {
                assert_eq!(object["span"]["operation"], uid.as_str(), "{line}");
                steps += usize::from(object["message"] == "upgrade step");
            }
        }
    }
    assert!(steps >= 5, "the upgrades' steps in the logs: {steps}");
    Ok(())
}
