//! FluxUp's Kubernetes API: the custom resources a person writes (`ManagedApp`,
//! `UpgradeRequest`, `RollbackRequest`) and minimal views of the foreign kinds FluxUp reads or
//! patches (Flux sources and releases, CSI VolumeSnapshots).
//!
//! This crate does no I/O and builds for `wasm32-unknown-unknown`, so the browser shares these
//! types with the server. The CRD YAML in `config/crd/` is generated from them (`fluxup crds`).

// kube-derive's repeated `printcolumn(...)`/`shortname` arguments look like duplicates to clippy.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod flux;
pub mod managed_app;
pub mod ownership;
pub mod rollback_request;
pub mod snapshot;
pub mod upgrade_request;

pub use common::*;

/// The annotation the API server writes with the creator of every UpgradeRequest and
/// RollbackRequest, and with whoever last wrote a ManagedApp (`config/admission/
/// requested-by.yaml`). FluxUp acts on another namespace's objects only for a person who may.
pub const REQUESTED_BY_ANNOTATION: &str = "fluxup.dev/requested-by";
/// Their groups, comma-separated, written with [`REQUESTED_BY_ANNOTATION`].
pub const REQUESTED_BY_GROUPS_ANNOTATION: &str = "fluxup.dev/requested-by-groups";
pub use managed_app::*;
pub use rollback_request::*;
pub use upgrade_request::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every FluxUp custom resource.
pub const GROUP: &str = "fluxup.dev";

/// Every CustomResourceDefinition FluxUp installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ManagedApp::crd(),
        UpgradeRequest::crd(),
        RollbackRequest::crd(),
    ]
}
