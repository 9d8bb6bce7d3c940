//! `fluxup ingest-renovate`: Renovate's findings from a file, recorded like a Job's.

use anyhow::Context as _;
use fluxup_operator::{Scope, ingest, renovate};
use std::io::Read as _;
use std::path::Path;

/// Reads the log, records the result on the apps (findings, or why the log is unusable), prints
/// what happened, and fails when the log could not be used.
pub async fn ingest_file(
    log: &Path,
    source: Option<String>,
    namespace: Option<String>,
) -> anyhow::Result<()> {
    let bytes = if log == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        buf
    } else {
        std::fs::read(log).with_context(|| format!("reading {}", log.display()))?
    };
    let source = source.unwrap_or_else(|| {
        log.file_name()
            .map_or("stdin".into(), |n| n.to_string_lossy().into_owned())
    });
    let result = renovate::parse_output(&bytes);
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (set KUBECONFIG)")?;
    let summary = ingest::record(&client, &Scope { namespace }, &source, &result).await?;
    match result {
        Ok(_) => {
            println!(
                "{} updates recorded on {} apps from {source}",
                summary.updates, summary.apps
            );
            for dep in &summary.unmatched {
                println!("  belongs to no ManagedApp: {dep}");
            }
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "{source}: {e} ({} apps keep their earlier findings)",
            summary.apps
        ),
    }
}
