//! The version picker's list, read from the sandbox's real chart sources: the Helm
//! repository's index.yaml and the OCI registry's tags (full profile). Chart source URLs are a
//! tenant's words: ones that point FluxUp at this host's other ports, the cloud's metadata
//! service or the cluster's service range are refused with the same words, before any request.

use fluxup_api::{ChartSource, ManagedApp};
use fluxup_operator::chart_versions::{Error, list, of_app};
use fluxup_operator::outbound;
use fluxup_sandbox::Sandbox;

const REFUSED: &str =
    "the chart source could not be read (refused: address in a range FluxUp does not fetch from)";

fn source(kind: &str, url: String) -> ChartSource {
    ChartSource {
        kind: kind.into(),
        name: "test/charts".into(),
        url: Some(url),
    }
}

/// The sandbox serves its chart repository and registry on 127.0.0.1, a refused range: they
/// are allowed by host and port, as `FLUXUP_OUTBOUND_ALLOW` allows them for `fluxup serve`.
fn allow_sandbox_sources(sb: &Sandbox) -> anyhow::Result<()> {
    outbound::allow(&format!(
        "{},{}",
        sb.env("HELM_REPO_URL")?,
        sb.env("REGISTRY_HOST")?
    ))
    .map_err(anyhow::Error::msg)
}

/// A ManagedApp whose status resolved its chart to `source`.
fn app_with(source: &ChartSource) -> anyhow::Result<ManagedApp> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxup.dev/v1alpha1",
        "kind": "ManagedApp",
        "metadata": {"name": "web", "namespace": "test"},
        "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "apps"}},
        "status": {"resolved": {
            "helmRelease": "test/web",
            "chart": "webapp",
            "chartSource": source,
            "kustomization": "flux-system/apps",
        }},
    }))?)
}

#[tokio::test]
async fn every_published_version_newest_first_from_both_kinds_of_source() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("chart-versions").await?;
    allow_sandbox_sources(&sb)?;
    // sandbox/demo/charts/versions: what `sandbox up --profile full` publishes to both.
    let published = ["2.1.0-rc.1", "2.0.0", "1.1.0", "1.0.1", "1.0.0"];

    let helm = source("HelmRepository", sb.env("HELM_REPO_URL")?.to_string());
    assert_eq!(list(&helm, "webapp", &Default::default()).await?, published);

    let oci = source("OCIRepository", format!("{}/api", sb.env("OCI_CHARTS")?));
    assert_eq!(
        list(
            &oci,
            "",
            &fluxup_operator::chart_versions::Access {
                insecure: true,
                ..Default::default()
            }
        )
        .await?,
        published
    );

    // What the picker and the preflight call.
    let found = of_app(&sb.client, &app_with(&helm)?)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(found.versions, published);

    // A chart the repository does not have is named in the error.
    match list(&helm, "no-such-chart", &Default::default()).await {
        Err(e @ Error::NoSuchChart { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("chart no-such-chart is not in http://"),
                "{e}"
            )
        }
        other => anyhow::bail!("expected NoSuchChart, got {other:?}"),
    }

    // A path the repository does not serve: its status, not its page.
    let missing = source(
        "HelmRepository",
        format!("{}/no/such/dir", sb.env("HELM_REPO_URL")?),
    );
    assert_eq!(
        list(&missing, "webapp", &Default::default())
            .await
            .unwrap_err()
            .to_string(),
        "the chart source could not be read (HTTP 404)"
    );
    Ok(())
}

#[tokio::test]
async fn chart_sources_pointing_inside_are_refused() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("chart-versions-ssrf").await?;
    allow_sandbox_sources(&sb)?;
    // The sandbox's API server: on 127.0.0.1 like the allowed sources, on a port not allowed.
    let api_server = reqwest::Url::parse(sb.env("SANDBOX_APISERVER")?)?;
    let api_port = api_server.port_or_known_default().unwrap_or(443);
    let registry_host = sb.env("REGISTRY_HOST")?;
    let attempts = [
        source("HelmRepository", api_server.to_string()),
        source("HelmRepository", format!("http://127.0.0.1:{api_port}/")),
        // By name: checked on what the name resolves to.
        source("HelmRepository", format!("https://localhost:{api_port}/")),
        // An allowed host:port given as a user name: the host is the API server.
        source(
            "HelmRepository",
            format!("https://{registry_host}@127.0.0.1:{api_port}/"),
        ),
        source(
            "HelmRepository",
            "http://169.254.169.254/latest/meta-data".into(),
        ),
        source("HelmRepository", "http://[fd00:ec2::254]/latest".into()),
        source("HelmRepository", "https://10.96.0.1/".into()),
        source("HelmRepository", "oci://10.96.0.1/charts".into()),
        source("OCIRepository", format!("oci://127.0.0.1:{api_port}/api")),
        source("OCIRepository", "oci://169.254.169.254/x".into()),
    ];
    for attempt in &attempts {
        let error = list(
            attempt,
            "webapp",
            &fluxup_operator::chart_versions::Access {
                insecure: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(error.to_string(), REFUSED, "{attempt:?}");
        // The same words for the picker and the preflight.
        let said = of_app(&sb.client, &app_with(attempt)?).await.unwrap_err();
        assert_eq!(said, REFUSED, "{attempt:?}");
    }

    // The allowed sources still list, after all those refusals.
    let helm = source("HelmRepository", sb.env("HELM_REPO_URL")?.to_string());
    assert!(!list(&helm, "webapp", &Default::default()).await?.is_empty());
    let oci = source("OCIRepository", format!("{}/api", sb.env("OCI_CHARTS")?));
    assert!(
        !list(
            &oci,
            "",
            &fluxup_operator::chart_versions::Access {
                insecure: true,
                ..Default::default()
            }
        )
        .await?
        .is_empty()
    );
    Ok(())
}
