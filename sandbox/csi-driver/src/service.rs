//! The CSI Identity and Controller services over the on-disk store.

use crate::csi;
use crate::store::{DEFAULT_CAPACITY, SnapshotRecord, Source, Store, StoreError};
use csi::controller_service_capability::rpc::Type as Rpc;
use csi::volume_capability::access_mode::Mode;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct Driver {
    name: String,
    // One operation at a time: the sidecars retry freely, and a copy must not race a delete.
    store: Arc<Mutex<Store>>,
}

impl Driver {
    pub fn new(name: String, store: Store) -> Self {
        Driver {
            name,
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs a store operation off the async runtime (copies can be large).
    async fn with_store<T, F>(&self, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let store = store
                .lock()
                .map_err(|_| Status::internal("store lock poisoned"))?;
            op(&store).map_err(status)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidName(m) => Status::invalid_argument(m),
        StoreError::NotFound(m) => Status::not_found(format!("{m} not found")),
        StoreError::AlreadyExists(m) => Status::already_exists(m),
        StoreError::Io(e) => Status::internal(e.to_string()),
    }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// Volumes are directories on one machine: mounts only, single node.
fn check_capabilities(caps: &[csi::VolumeCapability]) -> Result<(), Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities is required"));
    }
    for cap in caps {
        if let Some(csi::volume_capability::AccessType::Block(_)) = cap.access_type {
            return Err(Status::invalid_argument(
                "block volumes are not supported: volumes are directories",
            ));
        }
        let mode = cap
            .access_mode
            .as_ref()
            .and_then(|m| Mode::try_from(m.mode).ok())
            .unwrap_or(Mode::Unknown);
        if !matches!(
            mode,
            Mode::SingleNodeWriter
                | Mode::SingleNodeReaderOnly
                | Mode::SingleNodeSingleWriter
                | Mode::SingleNodeMultiWriter
        ) {
            return Err(Status::invalid_argument(format!(
                "access mode {} is not supported: only single-node modes (ReadWriteOnce)",
                mode.as_str_name()
            )));
        }
    }
    Ok(())
}

fn to_csi(record: &SnapshotRecord) -> csi::Snapshot {
    csi::Snapshot {
        size_bytes: record.size_bytes,
        snapshot_id: record.id.clone(),
        source_volume_id: record.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: record.created_unix_secs,
            nanos: record.created_nanos,
        }),
        // The copy is complete when CreateSnapshot returns.
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

#[tonic::async_trait]
impl csi::identity_server::Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        use csi::plugin_capability::{Service, Type, service};
        // No VOLUME_ACCESSIBILITY_CONSTRAINTS: without a kubelet there are no CSINode objects,
        // and a provisioner that expects topology would never provision.
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![csi::PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            }],
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl csi::controller_server::Controller for Driver {
    async fn create_volume(
        &self,
        request: Request<csi::CreateVolumeRequest>,
    ) -> Result<Response<csi::CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = required(&req.name, "name")?.to_string();
        check_capabilities(&req.volume_capabilities)?;
        let capacity = match req.capacity_range {
            Some(r) if r.required_bytes > 0 => r.required_bytes,
            Some(r) if r.limit_bytes > 0 => r.limit_bytes,
            _ => DEFAULT_CAPACITY,
        };
        use csi::volume_content_source::Type;
        let source = match req.volume_content_source.and_then(|s| s.r#type) {
            None => None,
            Some(Type::Snapshot(s)) => Some(Source::Snapshot(s.snapshot_id)),
            Some(Type::Volume(v)) => Some(Source::Volume(v.volume_id)),
        };
        let record = self
            .with_store(move |s| s.create_volume(&name, capacity, source))
            .await?;
        tracing::info!(volume = %record.id, source = ?record.source, "volume created");
        let content_source = record.source.as_ref().map(|s| csi::VolumeContentSource {
            r#type: Some(match s {
                Source::Snapshot(id) => {
                    Type::Snapshot(csi::volume_content_source::SnapshotSource {
                        snapshot_id: id.clone(),
                    })
                }
                Source::Volume(id) => Type::Volume(csi::volume_content_source::VolumeSource {
                    volume_id: id.clone(),
                }),
            }),
        });
        Ok(Response::new(csi::CreateVolumeResponse {
            volume: Some(csi::Volume {
                capacity_bytes: record.capacity_bytes,
                volume_id: record.id,
                content_source,
                ..Default::default()
            }),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<csi::DeleteVolumeRequest>,
    ) -> Result<Response<csi::DeleteVolumeResponse>, Status> {
        let id = required(&request.get_ref().volume_id, "volume_id")?.to_string();
        self.with_store({
            let id = id.clone();
            move |s| s.delete_volume(&id)
        })
        .await?;
        tracing::info!(volume = %id, "volume deleted");
        Ok(Response::new(csi::DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<csi::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<csi::ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let id = required(&req.volume_id, "volume_id")?.to_string();
        self.with_store(move |s| s.volume(&id))
            .await?
            .ok_or_else(|| Status::not_found(format!("volume {} not found", req.volume_id)))?;
        let (confirmed, message) = match check_capabilities(&req.volume_capabilities) {
            Ok(()) => (
                Some(csi::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                String::new(),
            ),
            Err(refused) => (None, refused.message().to_string()),
        };
        Ok(Response::new(csi::ValidateVolumeCapabilitiesResponse {
            confirmed,
            message,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<csi::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<csi::ControllerGetCapabilitiesResponse>, Status> {
        use csi::controller_service_capability::{Rpc as RpcCap, Type};
        let rpcs = [
            Rpc::CreateDeleteVolume,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
        ];
        Ok(Response::new(csi::ControllerGetCapabilitiesResponse {
            capabilities: rpcs
                .into_iter()
                .map(|rpc| csi::ControllerServiceCapability {
                    r#type: Some(Type::Rpc(RpcCap { r#type: rpc as i32 })),
                })
                .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<csi::CreateSnapshotRequest>,
    ) -> Result<Response<csi::CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        let name = required(&req.name, "name")?.to_string();
        let volume = required(&req.source_volume_id, "source_volume_id")?.to_string();
        let record = self
            .with_store(move |s| s.create_snapshot(&name, &volume))
            .await?;
        tracing::info!(snapshot = %record.id, volume = %record.source_volume_id,
            bytes = record.size_bytes, "snapshot created");
        Ok(Response::new(csi::CreateSnapshotResponse {
            snapshot: Some(to_csi(&record)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<csi::DeleteSnapshotRequest>,
    ) -> Result<Response<csi::DeleteSnapshotResponse>, Status> {
        let id = required(&request.get_ref().snapshot_id, "snapshot_id")?.to_string();
        self.with_store({
            let id = id.clone();
            move |s| s.delete_snapshot(&id)
        })
        .await?;
        tracing::info!(snapshot = %id, "snapshot deleted");
        Ok(Response::new(csi::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<csi::ListSnapshotsRequest>,
    ) -> Result<Response<csi::ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let all = self.with_store(|s| s.snapshots()).await?;
        let matching: Vec<_> = all
            .into_iter()
            .filter(|r| req.snapshot_id.is_empty() || r.id == req.snapshot_id)
            .filter(|r| {
                req.source_volume_id.is_empty() || r.source_volume_id == req.source_volume_id
            })
            .collect();
        // The token is the index of the next entry.
        let start = if req.starting_token.is_empty() {
            0
        } else {
            req.starting_token
                .parse::<usize>()
                .ok()
                .filter(|i| *i <= matching.len())
                .ok_or_else(|| {
                    Status::aborted(format!("invalid starting_token {:?}", req.starting_token))
                })?
        };
        let max = usize::try_from(req.max_entries)
            .ok()
            .filter(|m| *m > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(max).min(matching.len());
        Ok(Response::new(csi::ListSnapshotsResponse {
            entries: matching[start..end]
                .iter()
                .map(|r| csi::list_snapshots_response::Entry {
                    snapshot: Some(to_csi(r)),
                })
                .collect(),
            next_token: if end < matching.len() {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }
}
