//! `fluxup ingest-renovate`: Renovate's findings from a file, recorded like a Job's.

use anyhow::Context as _;
use fluxup_operator::{Scope, ingest, renovate};
use std::io::Read as _;
use std::path::Path;

/// Reads the log (at most `FLUXUP_RENOVATE_LOG_LIMIT` bytes of it, as for a Job), records the
/// result on the apps (findings, or why the log is unusable), prints what happened, and fails
/// when the log could not be used.
pub async fn ingest_file(
    log: &Path,
    source: Option<String>,
    namespace: Option<String>,
) -> anyhow::Result<()> {
    let limit = renovate::log_limit();
    // One byte past the limit: enough to know the input is longer, never all of a runaway one.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    if log == Path::new("-") {
        std::io::stdin().take(cap).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(log)
            .and_then(|f| f.take(cap).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", log.display()))?;
    }
    let source = source.unwrap_or_else(|| {
        log.file_name()
            .map_or("stdin".into(), |n| n.to_string_lossy().into_owned())
    });
    let result = renovate::parse_output_limited(&bytes, limit);
    drop(bytes);
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
            if let Some(limit) = summary.truncated_at {
                println!(
                    "  truncated: the input is longer than {limit} bytes ({}); read up to that",
                    renovate::LOG_LIMIT_ENV
                );
            }
            for dep in &summary.unmatched {
                println!("  belongs to no ManagedApp: {dep}");
            }
            for why in &summary.refused {
                println!("  refused: {why}");
            }
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "{source}: {e} ({} apps keep their earlier findings)",
            summary.apps
        ),
    }
}
