//! Pre-upgrade snapshots through the sandbox's real CSI stack: created once per request and
//! PVC (however often the step runs), ready to use, and a missing snapshot class reported.

use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_operator::snapshots::{self, REQUEST_LABEL};
use fluxup_operator::upgrade::decide::Snapshots;
use fluxup_sandbox::Sandbox;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

async fn until_state(
    sb: &Sandbox,
    names: &[String],
    want: impl Fn(&Snapshots) -> bool,
) -> anyhow::Result<Snapshots> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = snapshots::observe(&sb.client, sb.ns(), names).await?;
        if want(&state) {
            return Ok(state);
        }
        anyhow::ensure!(Instant::now() < deadline, "snapshots stuck at {state:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn snapshots_are_taken_once_and_become_ready() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("upgrade-snapshots").await?;
    let ns = sb.ns().to_string();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-db-0"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": sb.env("CSI_STORAGE_CLASS")?,
                 "resources": {"requests": {"storage": "64Mi"}}},
    }))?;
    sb.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await?;
    let pvcs = vec!["data-db-0".to_string()];

    let names: Vec<String> = vec![snapshots::snapshot_name("db-2.0.0", "uid-2", "data-db-0")];
    assert_eq!(
        snapshots::observe(&sb.client, &ns, &names).await?,
        Snapshots::NotCreated
    );
    let class = sb.env("CSI_SNAPSHOT_CLASS")?.to_string();
    let taken = snapshots::create(
        &sb.client,
        &ns,
        "db",
        ("db-2.0.0", "uid-2"),
        &pvcs,
        Some(&class),
    )
    .await?;
    assert_eq!(taken[0].snapshot_name, names[0]);
    // The step runs again (a restarted operator): still one snapshot.
    snapshots::create(
        &sb.client,
        &ns,
        "db",
        ("db-2.0.0", "uid-2"),
        &pvcs,
        Some(&class),
    )
    .await?;
    until_state(&sb, &names, |s| *s == Snapshots::Ready).await?;
    let listed = sb
        .api::<VolumeSnapshot>()
        .list(&ListParams::default().labels(&format!("{REQUEST_LABEL}=db-2.0.0")))
        .await?;
    assert_eq!(listed.items.len(), 1);

    // A class that does not exist: the upgrade learns why, and commits nothing.
    let names = vec![snapshots::snapshot_name("db-3.0.0", "uid-3", "data-db-0")];
    snapshots::create(
        &sb.client,
        &ns,
        "db",
        ("db-3.0.0", "uid-3"),
        &pvcs,
        Some("no-such-class"),
    )
    .await?;
    let failed = until_state(&sb, &names, |s| matches!(s, Snapshots::Failed(_))).await?;
    let Snapshots::Failed(why) = failed else {
        unreachable!()
    };
    assert!(why.contains("no-such-class"), "{why}");
    Ok(())
}

/// Retention keeps the newest `keepLast` upgrades' snapshots and the protected ones (the upgrade
/// a rollback would restore, one a rollback is restoring), whatever their age, and deletes the
/// rest; other apps' are untouched. It reads FluxUp's snapshots from a watch cache.
#[tokio::test]
async fn retention_keeps_the_newest_and_the_rollback_target() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("snapshot-retention").await?;
    let api = sb.api::<VolumeSnapshot>();
    let snapshot = |app: &str, request: &str| {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": format!("{request}-data"),
                         "labels": {snapshots::APP_LABEL: app, REQUEST_LABEL: request}},
            // A PVC that does not exist: these snapshots never become ready, which retention
            // does not care about.
            "spec": {"source": {"persistentVolumeClaimName": "gone"}},
        })
    };
    // Oldest first, a second apart so their ages differ.
    for request in ["u1", "u2", "u3", "u4"] {
        sb.apply(snapshot("db", request)).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    sb.apply(snapshot("other", "o1")).await?;
    let (cache, events) = fluxup_operator::caches::reflect_labelled::<VolumeSnapshot>(
        sb.api::<VolumeSnapshot>(),
        snapshots::APP_LABEL,
    );
    tokio::spawn(futures::StreamExt::for_each(events, |_| async {}));
    let cached = |n: usize| {
        let cache = cache.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while cache
                .state()
                .iter()
                .filter(|s| s.metadata.deletion_timestamp.is_none())
                .count()
                != n
            {
                anyhow::ensure!(Instant::now() < deadline, "the cache never held {n}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }
    };
    cached(5).await?;

    let protected = ["u1".to_string(), "u3".to_string()];
    let deleted =
        snapshots::apply_retention(&sb.client, &cache, (sb.ns(), "db"), 1, None, &protected)
            .await?;
    assert_eq!(
        deleted,
        ["u2"],
        "beyond the newest one, except the protected u1 and u3"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        left.sort();
        if left == ["o1-data", "u1-data", "u3-data", "u4-data"] {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "left: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Again, once the cache saw it: nothing more to delete.
    cached(4).await?;
    let again =
        snapshots::apply_retention(&sb.client, &cache, (sb.ns(), "db"), 1, None, &protected)
            .await?;
    assert!(again.is_empty(), "{again:?}");
    Ok(())
}
