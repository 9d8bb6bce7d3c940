//! The version picker's list, read from the sandbox's real chart sources: the Helm
//! repository's index.yaml and the OCI registry's tags (full profile).

use fluxup_api::ChartSource;
use fluxup_operator::chart_versions::{Error, list};
use fluxup_sandbox::Sandbox;

fn source(kind: &str, url: String) -> ChartSource {
    ChartSource {
        kind: kind.into(),
        name: "test/charts".into(),
        url: Some(url),
    }
}

#[tokio::test]
async fn every_published_version_newest_first_from_both_kinds_of_source() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("chart-versions").await?;
    // sandbox/demo/charts/versions: what `sandbox up --profile full` publishes to both.
    let published = ["2.1.0-rc.1", "2.0.0", "1.1.0", "1.0.1", "1.0.0"];

    let helm = source("HelmRepository", sb.env("HELM_REPO_URL")?.to_string());
    assert_eq!(list(&helm, "webapp", false).await?, published);

    let oci = source("OCIRepository", format!("{}/api", sb.env("OCI_CHARTS")?));
    assert_eq!(list(&oci, "", true).await?, published);

    // A chart the repository does not have is named in the error.
    match list(&helm, "no-such-chart", false).await {
        Err(e @ Error::NoSuchChart { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("chart no-such-chart is not in http://"),
                "{e}"
            )
        }
        other => anyhow::bail!("expected NoSuchChart, got {other:?}"),
    }
    Ok(())
}
