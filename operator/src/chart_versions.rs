//! Every version a chart source offers, for the version picker. Renovate reports one candidate
//! per update bucket (the newest patch, minor and major); a person choosing a version needs the
//! whole list, read from the source itself: a Helm repository's `index.yaml`, or an OCI
//! repository's tags (with the registry's anonymous token where it asks for one).

use crate::policy::parse_version;
use fluxup_api::ChartSource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not a chart source FluxUp can list")]
    Unsupported(String),
    #[error("asking {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not a Helm repository index: {reason}")]
    BadIndex { url: String, reason: String },
    #[error("chart {chart} is not in {url}")]
    NoSuchChart { chart: String, url: String },
}

/// The versions of an app's chart, and where they were read.
#[derive(Debug, Clone)]
pub struct AppVersions {
    pub chart: String,
    pub url: String,
    /// Newest first.
    pub versions: Vec<String>,
}

/// Every version of `app`'s chart, from the chart source its status resolved (an OCIRepository's
/// `insecure` allows plain HTTP). The error says, in words, what could not be read.
pub async fn of_app(
    client: &kube::Client,
    app: &fluxup_api::ManagedApp,
) -> Result<AppVersions, String> {
    let resolved = app
        .status
        .as_ref()
        .and_then(|s| s.resolved.clone())
        .unwrap_or_default();
    let Some(source) = resolved.chart_source else {
        return Err("the app's chart source is not resolved".into());
    };
    let insecure = if source.kind == "OCIRepository" {
        let (ns, name) = source.name.split_once('/').unwrap_or_default();
        kube::Api::<fluxup_api::flux::OCIRepository>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .ok()
            .and_then(|r| r.spec.insecure)
            .unwrap_or(false)
    } else {
        false
    };
    let chart = resolved.chart.unwrap_or_default();
    let versions = list(&source, &chart, insecure)
        .await
        .map_err(|e| format!("the chart source could not be read: {e}"))?;
    Ok(AppVersions {
        chart,
        url: source.url.unwrap_or_default(),
        versions,
    })
}

/// Versions of `chart` in `source`, newest first; what is not a version (e.g. `latest`) is left
/// out. `insecure` allows plain HTTP for an OCI registry (OCIRepository `spec.insecure`).
pub async fn list(source: &ChartSource, chart: &str, insecure: bool) -> Result<Vec<String>, Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("fluxup/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Http {
            url: String::new(),
            source: e,
        })?;
    let url = source.url.clone().unwrap_or_default();
    let mut versions = match source.kind.as_str() {
        "HelmRepository" if url.starts_with("oci://") => {
            oci_tags(&client, &url, chart, insecure).await?
        }
        "HelmRepository" => helm_index(&client, &url, chart).await?,
        "OCIRepository" => oci_tags(&client, &url, "", insecure).await?,
        other => return Err(Error::Unsupported(format!("{other} {}", source.name))),
    };
    versions.retain(|v| parse_version(v).is_some());
    versions.sort_by_key(|v| std::cmp::Reverse(parse_version(v)));
    versions.dedup();
    Ok(versions)
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<reqwest::Response, Error> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.map_err(|e| Error::Http {
        url: url.to_string(),
        source: e,
    })
}

async fn body(response: reqwest::Response, url: &str) -> Result<String, Error> {
    if !response.status().is_success() {
        return Err(Error::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    response.text().await.map_err(|e| Error::Http {
        url: url.to_string(),
        source: e,
    })
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    version: String,
}

async fn helm_index(
    client: &reqwest::Client,
    base: &str,
    chart: &str,
) -> Result<Vec<String>, Error> {
    let url = format!("{}/index.yaml", base.trim_end_matches('/'));
    let text = body(get(client, &url, None).await?, &url).await?;
    let index: Index = serde_yaml::from_str(&text).map_err(|e| Error::BadIndex {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let entries = index.entries.get(chart).ok_or_else(|| Error::NoSuchChart {
        chart: chart.to_string(),
        url: url.clone(),
    })?;
    Ok(entries.iter().map(|e| e.version.clone()).collect())
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Token {
    #[serde(alias = "access_token")]
    token: String,
}

/// `oci://host/path` (+ `/chart` for a HelmRepository of type oci) → the repository's tags,
/// following the registry's Bearer challenge for an anonymous pull token.
async fn oci_tags(
    client: &reqwest::Client,
    url: &str,
    chart: &str,
    insecure: bool,
) -> Result<Vec<String>, Error> {
    let address = url.trim_start_matches("oci://").trim_end_matches('/');
    let address = if chart.is_empty() {
        address.to_string()
    } else {
        format!("{address}/{chart}")
    };
    let (host, repository) = address
        .split_once('/')
        .ok_or_else(|| Error::Unsupported(format!("OCI address {url}")))?;
    let scheme = if insecure { "http" } else { "https" };
    let tags_url = format!("{scheme}://{host}/v2/{repository}/tags/list?n=1000");
    let response = get(client, &tags_url, None).await?;
    let response = if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let token = anonymous_token(client, &challenge, repository).await?;
        get(client, &tags_url, Some(&token)).await?
    } else {
        response
    };
    let text = body(response, &tags_url).await?;
    let list: TagList = serde_json::from_str(&text).map_err(|e| Error::BadIndex {
        url: tags_url.clone(),
        reason: e.to_string(),
    })?;
    Ok(list.tags.unwrap_or_default())
}

/// `Bearer realm="https://auth/token",service="registry"` → a pull token for `repository`.
async fn anonymous_token(
    client: &reqwest::Client,
    challenge: &str,
    repository: &str,
) -> Result<String, Error> {
    let params: BTreeMap<String, String> = challenge
        .trim_start_matches("Bearer ")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    let realm = params
        .get("realm")
        .ok_or_else(|| Error::Unsupported(format!("registry challenge {challenge:?}")))?;
    let mut url = reqwest::Url::parse(realm)
        .map_err(|_| Error::Unsupported(format!("token realm {realm}")))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = params.get("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", &format!("repository:{repository}:pull"));
    }
    let text = body(get(client, url.as_str(), None).await?, url.as_str()).await?;
    serde_json::from_str::<Token>(&text)
        .map(|t| t.token)
        .map_err(|e| Error::BadIndex {
            url: url.to_string(),
            reason: e.to_string(),
        })
}
