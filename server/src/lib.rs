#![recursion_limit = "256"] // un-erased page types (as `cargo test` builds them) nest deeply
//! The `fluxup` binary's library: the web server (Leptos SSR, health endpoints), the generated
//! Kubernetes config, and logging. `main.rs` only parses the command line.

pub mod auth;
pub mod cli;
pub mod generate;
pub mod health;
pub mod ingest;
pub mod live;
pub mod rest;
pub mod telemetry;
pub mod web;
