//! What the server's sandbox tests share: the real `fluxup serve` process, started and killed.
#![allow(dead_code)] // each test file uses part of it

use anyhow::Context as _;
use fluxup_sandbox::{Sandbox, repo_root};
use std::process::{Child, Command, Stdio};

/// The ports a `fluxup serve` listens on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ports {
    /// The dashboard, API and probes.
    pub web: u16,
    /// `/metrics`.
    pub metrics: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `fluxup serve` with its controllers, against the sandbox, and the ports it serves on; its log
/// goes to target/. `env` adds to (or overrides) its environment.
pub fn start_operator(
    sb: &Sandbox,
    log: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, Ports)> {
    let ports = Ports {
        web: free_port()?,
        metrics: free_port()?,
    };
    // Logs (JSON, on stdout) and anything else the process prints (stderr, e.g. Leptos' own
    // debug warnings) in two files, so the log can be checked line by line.
    let stderr = std::fs::File::create(repo_root().join("target").join(format!("{log}.stderr")))?;
    let log = std::fs::File::create(repo_root().join("target").join(log))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxup"));
    command
        .args(["serve", "--controllers", "true"])
        // As the shipped ServiceAccount, with the roles of config/rbac.
        .env("KUBECONFIG", sb.kubeconfig_of("fluxup-controller"))
        // FluxUp's namespace, as installed; a lease of the test's own.
        .env("POD_NAMESPACE", fluxup_sandbox::FLUXUP_NAMESPACE)
        .env("FLUXUP_LEASE_NAME", format!("fluxup-{}", sb.ns()))
        // The sandbox's servers listen on 127.0.0.1, which FluxUp refuses unless told.
        .env("FLUXUP_OUTBOUND_ALLOW", sandbox_servers(sb))
        .env("FLUXUP_LISTEN", format!("127.0.0.1:{}", ports.web))
        .env(
            "FLUXUP_METRICS_LISTEN",
            format!("127.0.0.1:{}", ports.metrics),
        )
        .env("RUST_LOG", "info")
        .env("FLUXUP_LOG_FORMAT", "json")
        .env("FLUXUP_NO_AUTH", "true")
        .env("LEPTOS_OUTPUT_NAME", "fluxup")
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr));
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .spawn()
        .context("starting fluxup serve")
        .map(|child| (child, ports))
}

/// Kills the process with SIGKILL (no clean-up code runs) and reaps it.
pub fn sigkill(mut child: Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// The sandbox's chart repository, registries and Gitea, as `FLUXUP_OUTBOUND_ALLOW` takes them.
pub fn sandbox_servers(sb: &Sandbox) -> String {
    [
        "HELM_REPO_URL",
        "REGISTRY_HOST",
        "REGISTRY_AUTH_HOST",
        "GITEA_URL",
    ]
    .iter()
    .filter_map(|k| sb.env(k).ok())
    .collect::<Vec<_>>()
    .join(",")
}
