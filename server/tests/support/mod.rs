//! What the server's sandbox tests share: the real `fluxup serve` process, started and killed.
#![allow(dead_code)] // each test file uses part of it

use anyhow::Context as _;
use fluxup_sandbox::{Sandbox, repo_root};
use std::process::{Child, Command, Stdio};

/// `fluxup serve` with its controllers, against the sandbox, and the port it serves on; its log
/// goes to target/. `env` adds to (or overrides) its environment.
pub fn start_operator(
    sb: &Sandbox,
    log: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // Logs (JSON, on stdout) and anything else the process prints (stderr, e.g. Leptos' own
    // debug warnings) in two files, so the log can be checked line by line.
    let stderr = std::fs::File::create(repo_root().join("target").join(format!("{log}.stderr")))?;
    let log = std::fs::File::create(repo_root().join("target").join(log))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxup"));
    command
        .args(["serve", "--controllers", "true"])
        .env("KUBECONFIG", sb.env("KUBECONFIG")?)
        // The leader lease lives in the test's namespace.
        .env("POD_NAMESPACE", sb.ns())
        .env("FLUXUP_LISTEN", format!("127.0.0.1:{port}"))
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
        .map(|child| (child, port))
}

/// Kills the process with SIGKILL (no clean-up code runs) and reaps it.
pub fn sigkill(mut child: Child) -> anyhow::Result<()> {
    child.kill()?;
    child.wait()?;
    Ok(())
}
