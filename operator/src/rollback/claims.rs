//! Replacing an app's PersistentVolumeClaims with claims restored from snapshots: the same name,
//! size, class, labels and annotations, and `dataSource` naming the VolumeSnapshot.

use super::decide::Claim;
use fluxup_api::RestoredVolume;
use fluxup_api::ownership::RESTORED_BY_ANNOTATION;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The snapshot controller's finalizer on a claim while a snapshot of it is being taken.
const SNAPSHOT_SOURCE_FINALIZER: &str = "snapshot.storage.kubernetes.io/pvc-as-source-protection";

/// Annotations Kubernetes writes when a claim is provisioned and bound: a new claim gets its own.
fn set_by_kubernetes(key: &str) -> bool {
    key.starts_with("pv.kubernetes.io/")
        || key.starts_with("volume.kubernetes.io/")
        || key.starts_with("volume.beta.kubernetes.io/")
}

/// How to recreate claim `pvc` from `snapshot`, read from the claim as it is now.
pub async fn record(
    client: &Client,
    ns: &str,
    pvc: &str,
    snapshot: &str,
) -> Result<RestoredVolume, String> {
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(pvc)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("claim {ns}/{pvc} does not exist, so how to recreate it is unknown")
        })?;
    let spec = claim.spec.unwrap_or_default();
    let storage = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").map(|q| q.0.clone()))
        .ok_or_else(|| format!("claim {ns}/{pvc} requests no storage size"))?;
    Ok(RestoredVolume {
        pvc_name: pvc.into(),
        snapshot_name: snapshot.into(),
        storage,
        storage_class_name: spec.storage_class_name,
        access_modes: spec.access_modes.unwrap_or_default(),
        volume_mode: spec.volume_mode,
        labels: claim.metadata.labels.unwrap_or_default(),
        annotations: claim
            .metadata
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !set_by_kubernetes(k) && k != RESTORED_BY_ANNOTATION)
            .collect(),
        recreated: false,
    })
}

/// Where each recorded claim is in its replacement.
pub async fn observe(
    client: &Client,
    ns: &str,
    volumes: &[RestoredVolume],
) -> kube::Result<Vec<(String, Claim)>> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for v in volumes {
        let state = match api.get_opt(&v.pvc_name).await? {
            None => Claim::Missing,
            Some(c) if c.metadata.deletion_timestamp.is_some() => {
                let held = c
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == SNAPSHOT_SOURCE_FINALIZER);
                if held {
                    Claim::HeldBySnapshot
                } else {
                    Claim::Deleting
                }
            }
            Some(c) => {
                let from_snapshot = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.data_source.as_ref())
                    .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == v.snapshot_name);
                let bound = c
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Bound");
                match (from_snapshot, bound) {
                    (false, _) => Claim::Original,
                    (true, false) => Claim::Restoring,
                    (true, true) => Claim::Restored,
                }
            }
        };
        out.push((v.pvc_name.clone(), state));
    }
    Ok(out)
}

/// Deletes a claim (its data goes with the volume's reclaim policy). Deleting one already gone
/// succeeds.
pub async fn delete(client: &Client, ns: &str, name: &str) -> kube::Result<()> {
    match Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the claim again, from its snapshot, marked as restored by rollback `me` (uid).
/// Creating one that exists succeeds.
pub async fn create(client: &Client, ns: &str, v: &RestoredVolume, me: &str) -> kube::Result<()> {
    let mut annotations = v.annotations.clone();
    annotations.insert(RESTORED_BY_ANNOTATION.into(), me.into());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": v.pvc_name, "labels": v.labels, "annotations": annotations},
        "spec": {
            "accessModes": v.access_modes,
            "storageClassName": v.storage_class_name,
            "volumeMode": v.volume_mode,
            "resources": {"requests": {"storage": v.storage}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                           "name": v.snapshot_name},
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    match Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &claim)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
