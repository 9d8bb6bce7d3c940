//! The labels and annotations by which FluxUp marks what it holds and what it made. Values that
//! name an operation are the request's uid: a request recreated under an old name is a new
//! operation and owns nothing of the old one.

/// On a Kustomization or HelmRelease FluxUp suspended: the uid of the request that holds it.
pub const HELD_BY_ANNOTATION: &str = "fluxup.dev/held-by";
/// Beside [`HELD_BY_ANNOTATION`], for people: `UpgradeRequest namespace/name`.
pub const HELD_FOR_ANNOTATION: &str = "fluxup.dev/held-for";
/// On a Deployment or StatefulSet FluxUp scaled to zero: the uid of the request that stopped it.
pub const STOPPED_BY_ANNOTATION: &str = "fluxup.dev/stopped-by";
/// Beside [`STOPPED_BY_ANNOTATION`]: the replica count it had, for people.
pub const STOPPED_REPLICAS_ANNOTATION: &str = "fluxup.dev/stopped-replicas";
/// On a claim a rollback recreated from a snapshot: the uid of that rollback.
pub const RESTORED_BY_ANNOTATION: &str = "fluxup.dev/restored-by";

/// On every VolumeSnapshot FluxUp takes: the ManagedApp's name.
pub const SNAPSHOT_APP_LABEL: &str = "fluxup.dev/managed-app";
/// On every VolumeSnapshot FluxUp takes: the UpgradeRequest's name (for people and selectors).
pub const SNAPSHOT_REQUEST_LABEL: &str = "fluxup.dev/upgrade-request";
/// On every VolumeSnapshot FluxUp takes: the UpgradeRequest's uid (its identity).
pub const OPERATION_LABEL: &str = "fluxup.dev/operation";

/// The ConfigMap, in FluxUp's namespace, that lists where notifications go.
pub const NOTIFICATIONS_CONFIG_MAP: &str = "fluxup-notifications";
/// Its key holding the sinks.
pub const NOTIFICATIONS_KEY: &str = "sinks.yaml";
