//! csi-hostpath: the FluxUp sandbox's CSI controller plugin (see README.md for why it exists).

mod service;
mod store;

mod csi {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("csi.v1");
}

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Parser)]
#[command(
    version,
    about = "CSI driver for the FluxUp sandbox: volumes are directories, snapshots are copies"
)]
struct Args {
    /// Where the sidecars connect: unix:///path/to/csi.sock (or a plain path).
    #[arg(long)]
    endpoint: String,
    /// The driver name, as in the CSIDriver object and the StorageClass provisioner.
    #[arg(long, default_value = "hostpath.sandbox.fluxup.dev")]
    driver_name: String,
    /// Directory for volume data, snapshot copies and their records.
    #[arg(long)]
    state_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    let socket = PathBuf::from(
        args.endpoint
            .strip_prefix("unix://")
            .unwrap_or(&args.endpoint),
    );
    let store = store::Store::open(&args.state_dir)
        .with_context(|| format!("opening state dir {}", args.state_dir.display()))?;
    // A socket left by an earlier run would make bind fail.
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing stale socket {}", socket.display()));
        }
        _ => {}
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    tracing::info!(driver = %args.driver_name, socket = %socket.display(),
        state = %args.state_dir.display(), "serving CSI");

    let driver = service::Driver::new(args.driver_name, store);
    tonic::transport::Server::builder()
        .add_service(csi::identity_server::IdentityServer::new(driver.clone()))
        .add_service(csi::controller_server::ControllerServer::new(driver))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown())
        .await?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, so `sandbox down` stops the driver cleanly.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
