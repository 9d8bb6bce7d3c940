//! The RollbackRequest state machine (issue 7): restore an app's volumes from the snapshots an
//! upgrade took, write the previous version back to Git, and start the app again. Built like
//! the upgrade: a pure [`decide`] and idempotent steps that record progress in status first.

pub mod claims;
pub mod controller;
pub mod decide;
