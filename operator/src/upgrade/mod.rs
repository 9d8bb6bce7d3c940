//! The UpgradeRequest state machine. `decide` is pure: from the request's spec and
//! status and what the controller observed, it picks the one next step. The steps themselves
//! are idempotent and record progress in status before they act.

pub mod controller;
pub mod decide;
pub mod preflight;
pub mod pull_request;
