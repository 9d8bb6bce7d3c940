//! Pre-upgrade snapshots: their names (derived from the request and its uid, so a restarted
//! operator finds the ones it made instead of making more, and a request recreated under the
//! same name makes its own) and which ones retention removes.

use crate::operation::crash;
use fluxup_api::PvcSnapshot;
use fluxup_api::snapshot::VolumeSnapshot;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use std::time::Duration;

/// The snapshots of this request, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Snapshots {
    /// None of this request's VolumeSnapshots exist yet.
    #[default]
    NotCreated,
    /// Created; some are not ReadyToUse yet.
    Pending,
    /// Every one is ReadyToUse.
    Ready,
    /// One failed: why.
    Failed(String),
}

/// Labels on every snapshot FluxUp takes: the app, the request that took it, and its uid.
pub use fluxup_api::ownership::{
    OPERATION_LABEL, SNAPSHOT_APP_LABEL as APP_LABEL, SNAPSHOT_REQUEST_LABEL as REQUEST_LABEL,
};

/// Creates (or finds) the VolumeSnapshot of each PVC for `request` (uid `operation`).
/// Idempotent: the names are derived from both, and applying an existing snapshot changes
/// nothing.
pub async fn create(
    client: &Client,
    ns: &str,
    app: &str,
    (request, operation): (&str, &str),
    pvcs: &[String],
    class: Option<&str>,
) -> kube::Result<Vec<PvcSnapshot>> {
    let api: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for pvc in pvcs {
        let name = snapshot_name(request, operation, pvc);
        let mut spec = serde_json::json!({"source": {"persistentVolumeClaimName": pvc}});
        if let Some(class) = class {
            spec["volumeSnapshotClassName"] = class.into();
        }
        let object = serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": {APP_LABEL: app, REQUEST_LABEL: request,
                                                   OPERATION_LABEL: operation}},
            "spec": spec,
        });
        api.patch(
            &name,
            &PatchParams::apply("fluxup-upgrade"),
            &Patch::Apply(&object),
        )
        .await?;
        crash::point("snapshot.create");
        out.push(PvcSnapshot {
            pvc_name: pvc.clone(),
            snapshot_name: name,
            ready_to_use: false,
        });
    }
    Ok(out)
}

/// Where the snapshots named are: not (all) created, pending, all ready, or failed (with why).
/// Some missing counts as not created: creating is idempotent, so a crash half-way through
/// creating them is repaired by creating again.
pub async fn observe(client: &Client, ns: &str, names: &[String]) -> kube::Result<Snapshots> {
    let api: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let (mut missing, mut all_ready) = (names.is_empty(), true);
    for name in names {
        let Some(snapshot) = api.get_opt(name).await? else {
            missing = true;
            continue;
        };
        let status = snapshot.status.unwrap_or_default();
        if let Some(message) = status.error.and_then(|e| e.message) {
            return Ok(Snapshots::Failed(format!(
                "VolumeSnapshot {name}: {message}"
            )));
        }
        all_ready &= status.ready_to_use == Some(true);
    }
    Ok(if missing {
        Snapshots::NotCreated
    } else if all_ready {
        Snapshots::Ready
    } else {
        Snapshots::Pending
    })
}

/// Deletes the snapshots of `app` that retention no longer keeps: beyond the newest `keep_last`
/// upgrades, or older than `max_age`; never those of the `protected` upgrades (the one a
/// rollback would restore now, and any a rollback is restoring). Reads FluxUp's snapshots from
/// the watch cache. Returns the upgrades whose snapshots were deleted.
pub async fn apply_retention(
    client: &Client,
    cache: &Store<VolumeSnapshot>,
    (ns, app): (&str, &str),
    keep_last: usize,
    max_age: Option<Duration>,
    protected: &[String],
) -> kube::Result<Vec<String>> {
    let api: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let taken: Vec<_> = cache
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels().get(APP_LABEL).map(String::as_str) == Some(app)
                // Snapshots already being deleted are done with.
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let now = Timestamp::now();
    let mut upgrades: Vec<UpgradeSnapshots> = Vec::new();
    for snapshot in &taken {
        let Some(request) = upgrade_of(snapshot) else {
            continue;
        };
        let age = snapshot
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Duration::from_secs((now.as_second() - t.0.as_second()).max(0) as u64))
            .unwrap_or_default();
        match upgrades.iter_mut().find(|u| u.request == request) {
            Some(u) => u.age = u.age.max(age),
            None => upgrades.push(UpgradeSnapshots { request, age }),
        }
    }
    let doomed = to_delete(&upgrades, keep_last, max_age, protected);
    for snapshot in &taken {
        if upgrade_of(snapshot).is_some_and(|r| doomed.contains(&r)) {
            match api
                .delete(&snapshot.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => crash::point("snapshot.retention-delete"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(doomed)
}

/// The upgrade a snapshot belongs to, as retention groups them: its uid, or (for snapshots
/// taken before FluxUp labelled uids) its name.
pub fn upgrade_of(snapshot: &VolumeSnapshot) -> Option<String> {
    let labels = snapshot.labels();
    labels
        .get(OPERATION_LABEL)
        .or_else(|| labels.get(REQUEST_LABEL))
        .cloned()
}

/// The snapshots named that exist, are not being deleted, and are not ready to use.
pub async fn unready(client: &Client, ns: &str, names: &[String]) -> kube::Result<Vec<String>> {
    let api: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for name in names {
        if let Some(s) = api.get_opt(name).await?
            && s.metadata.deletion_timestamp.is_none()
            && s.status.and_then(|st| st.ready_to_use) != Some(true)
        {
            out.push(name.clone());
        }
    }
    Ok(out)
}

/// Deletes the snapshots named; one already gone is fine.
pub async fn delete(client: &Client, ns: &str, names: &[String]) -> kube::Result<()> {
    let api: Api<VolumeSnapshot> = Api::namespaced(client.clone(), ns);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Kubernetes object names are at most 253 characters; labels 63. Snapshot names stay under 63
/// so they can also be label values.
const MAX_NAME: usize = 63;

/// The VolumeSnapshot of `pvc` for upgrade request `request` with uid `operation`: readable,
/// the same every time for the same request, and another for a request recreated under the name.
pub fn snapshot_name(request: &str, operation: &str, pvc: &str) -> String {
    let short: String = operation
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    let name = format!("{request}-{pvc}-{short}");
    if name.len() <= MAX_NAME {
        return name;
    }
    // Too long: keep a readable prefix and make it unique with a hash of the whole.
    let hash = fnv1a(name.as_bytes());
    let keep = MAX_NAME - 9;
    let prefix: String = name
        .chars()
        .take(keep)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string();
    format!("{prefix}-{hash:08x}")
}

/// FNV-1a, 32 bits: stable across versions and platforms (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// One upgrade's snapshots, as retention sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeSnapshots {
    /// The UpgradeRequest that took them.
    pub request: String,
    /// How long ago they were taken.
    pub age: Duration,
}

/// The upgrades whose snapshots retention deletes: beyond the newest `keep_last`, or older than
/// `max_age` — never those of `protected`: the upgrade a rollback would restore now, and those
/// a rollback is restoring.
pub fn to_delete(
    upgrades: &[UpgradeSnapshots],
    keep_last: usize,
    max_age: Option<Duration>,
    protected: &[String],
) -> Vec<String> {
    let mut newest_first: Vec<&UpgradeSnapshots> = upgrades.iter().collect();
    newest_first.sort_by_key(|u| u.age);
    newest_first
        .iter()
        .enumerate()
        .filter(|(i, u)| *i >= keep_last.max(1) || max_age.is_some_and(|m| u.age > m))
        .map(|(_, u)| u.request.clone())
        .filter(|r| !protected.contains(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn names_are_stable_readable_and_short_enough() {
        let uid = "3f2a9c1e-0000-4000-8000-000000000000";
        assert_eq!(
            snapshot_name("web-1.3.0", uid, "data-web-0"),
            "web-1.3.0-data-web-0-3f2a9"
        );
        // The same name for a recreated request (another uid) is another snapshot.
        assert_ne!(
            snapshot_name("web-1.3.0", "77aa0000", "data-web-0"),
            snapshot_name("web-1.3.0", uid, "data-web-0")
        );
        let long = snapshot_name(&"upgrade-".repeat(8), uid, "data-postgresql-primary-0");
        assert!(long.len() <= 63, "{long}");
        assert_eq!(
            long,
            snapshot_name(&"upgrade-".repeat(8), uid, "data-postgresql-primary-0")
        );
        assert_ne!(
            long,
            snapshot_name(&"upgrade-".repeat(8), uid, "data-postgresql-primary-1")
        );
        assert!(long.starts_with("upgrade-upgrade-"));
    }

    #[test]
    fn retention_keeps_the_newest_and_never_the_rollback_target() {
        let upgrades = vec![
            UpgradeSnapshots {
                request: "u1".into(),
                age: days(30),
            },
            UpgradeSnapshots {
                request: "u4".into(),
                age: days(1),
            },
            UpgradeSnapshots {
                request: "u2".into(),
                age: days(20),
            },
            UpgradeSnapshots {
                request: "u3".into(),
                age: days(10),
            },
        ];
        assert_eq!(to_delete(&upgrades, 2, None, &[]), ["u2", "u1"]);
        assert_eq!(to_delete(&upgrades, 3, Some(days(15)), &[]), ["u2", "u1"]);
        // u1 is what a rollback of the last successful upgrade would restore: it stays.
        assert_eq!(to_delete(&upgrades, 1, None, &["u1".into()]), ["u3", "u2"]);
        // ... and u2's snapshots are being restored by a running rollback: they stay too.
        assert_eq!(
            to_delete(&upgrades, 1, None, &["u1".into(), "u2".into()]),
            ["u3"]
        );
        // keepLast below 1 would delete the rollback target's neighbours too eagerly: at least 1.
        assert_eq!(to_delete(&upgrades, 0, None, &[]), ["u3", "u2", "u1"]);
    }
}
