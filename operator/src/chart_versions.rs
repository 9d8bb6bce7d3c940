//! Every version a chart source offers, for the version picker. Renovate reports one candidate
//! per update bucket (the newest patch, minor and major); a person choosing a version needs the
//! whole list, read from the source itself: a Helm repository's `index.yaml`, or an OCI
//! repository's tags (with the registry's anonymous token where it asks for one).
//!
//! The source's URL is a tenant's: every request goes through [`crate::outbound`] (refused
//! ranges, same-host redirects, size caps), errors never repeat what the source answered, and
//! what was read is kept for [`CACHE_TTL`] so a crowd opening the picker costs the source one
//! request.

use crate::outbound::{self, SMALL};
use crate::policy::parse_version;
use crate::secrets;
use fluxup_api::ChartSource;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use reqwest::Url;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a source's listing is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a failure is reused (shorter: the source may be back soon).
const ERROR_TTL: Duration = Duration::from_secs(10);
/// How many sources' listings are kept.
const CACHE_ENTRIES: usize = 256;
/// The longest one request to a chart source may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The most FluxUp reads of an index.yaml.
pub const INDEX_LIMIT: usize = outbound::LARGE;

/// Why versions could not be listed. The words are safe to show: they name the rule or the
/// status, never what the source sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0} is not a chart source FluxUp can list")]
    Unsupported(String),
    #[error("the chart source could not be read ({0})")]
    Fetch(#[from] outbound::Error),
    #[error("the chart source could not be read (not a Helm repository index)")]
    BadIndex,
    #[error("the chart source could not be read (not an OCI registry's tag list)")]
    BadTags,
    #[error("the chart source could not be read (the registry asks for a token FluxUp cannot get)")]
    Token,
    #[error(
        "the chart source asks for credentials: give its Flux object a secretRef, as Flux needs too"
    )]
    NeedsCredentials,
    #[error("the chart source refused the credentials of its secretRef")]
    Refused,
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
/// `insecure` allows plain HTTP). The error says, in words safe to show, what could not be read.
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
    let access = access_of(client, &source).await?;
    let chart = resolved.chart.unwrap_or_default();
    let versions = list(&source, &chart, &access)
        .await
        .map_err(|e| e.to_string())?;
    Ok(AppVersions {
        chart,
        url: source.url.unwrap_or_default(),
        versions,
    })
}

/// Versions of `chart` in `source`, newest first; what is not a version (e.g. `latest`) is left
/// out. `access` holds what the source's Flux object says about reaching it.
pub async fn list(
    source: &ChartSource,
    chart: &str,
    access: &Access,
) -> Result<Vec<String>, Error> {
    let url = source.url.clone().unwrap_or_default();
    let mut versions = match source.kind.as_str() {
        "HelmRepository" if url.starts_with("oci://") => oci_tags(&url, chart, access).await?,
        "HelmRepository" => helm_index(&url, chart, access).await?,
        "OCIRepository" => oci_tags(&url, "", access).await?,
        other => return Err(Error::Unsupported(format!("{other} {}", source.name))),
    };
    versions.retain(|v| parse_version(v).is_some());
    versions.sort_by_key(|v| std::cmp::Reverse(parse_version(v)));
    versions.dedup();
    Ok(versions)
}

/// What was read from one URL.
#[derive(Debug, PartialEq, Eq)]
enum Listing {
    /// A Helm repository's charts and their versions.
    Charts(BTreeMap<String, Vec<String>>),
    /// An OCI repository's tags.
    Tags(Vec<String>),
}

type Fetching = Shared<BoxFuture<'static, Result<Arc<Listing>, Error>>>;

struct Entry {
    started: Instant,
    fetch: Fetching,
}

fn fresh(entry: &Entry, now: Instant) -> bool {
    let age = now.saturating_duration_since(entry.started);
    match entry.fetch.peek() {
        Some(Err(_)) => age < ERROR_TTL,
        _ => age < CACHE_TTL,
    }
}

/// `fetch`'s listing of `key`, or the one read (or being read) for it lately: callers at the same
/// time share one request.
async fn cached<F>(key: String, fetch: F) -> Result<Arc<Listing>, Error>
where
    F: Future<Output = Result<Listing, Error>> + Send + 'static,
{
    static CACHE: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    let shared = {
        let mut entries = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match entries.get(&key) {
            Some(entry) if fresh(entry, now) => entry.fetch.clone(),
            _ => {
                if entries.len() >= CACHE_ENTRIES {
                    entries.retain(|_, e| fresh(e, now));
                }
                if entries.len() >= CACHE_ENTRIES
                    && let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, e)| e.started)
                        .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
                let fetch = fetch.map(|r| r.map(Arc::new)).boxed().shared();
                entries.insert(
                    key,
                    Entry {
                        started: now,
                        fetch: fetch.clone(),
                    },
                );
                fetch
            }
        }
    };
    shared.await
}

fn parse_url(text: &str) -> Result<Url, Error> {
    Url::parse(text).map_err(|_| Error::Fetch(outbound::Error::BadUrl))
}

/// GET `url` through the guard, with `auth` and the source's certificate authority.
async fn send(url: &Url, auth: &Auth, access: &Access) -> Result<reqwest::Response, Error> {
    let guard = outbound::guard();
    let mut request = guard
        .request_trusting(reqwest::Method::GET, url, access.ca.as_deref())?
        .timeout(TIMEOUT);
    request = match auth {
        Auth::None => request,
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    Ok(guard.send(request).await?)
}

/// The body of a 2xx answer to GET `url`, capped at `limit`.
async fn get(url: &Url, auth: &Auth, access: &Access, limit: usize) -> Result<Vec<u8>, Error> {
    let response = send(url, auth, access).await?;
    if matches!(response.status().as_u16(), 401 | 403) {
        return Err(if access.basic.is_some() {
            Error::Refused
        } else {
            Error::NeedsCredentials
        });
    }
    Ok(outbound::success_body(response, limit).await?)
}

/// How a request proves who it is.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// What a source's Flux object says about reaching it: credentials from its `secretRef`, a
/// certificate authority from its `certSecretRef`, plain HTTP from `insecure`.
#[derive(Clone, Default)]
pub struct Access {
    pub basic: Option<(String, String)>,
    pub ca: Option<String>,
    pub insecure: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("basic", &self.basic.as_ref().map(|(u, _)| u))
            .field("ca", &self.ca.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Access {
    fn auth(&self) -> Auth {
        match &self.basic {
            Some((u, p)) => Auth::Basic(u.clone(), p.clone()),
            None => Auth::None,
        }
    }

    /// Part of a cache key: listings read with credentials are kept apart from those read
    /// without, and from other credentials', so no one sees a listing their access could not read.
    fn key(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        if let Some((u, p)) = &self.basic {
            hash.update(format!("{u}\0{p}"));
        }
        hash.update([0]);
        if let Some(ca) = &self.ca {
            hash.update(ca);
        }
        let digest = hash.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The access `source`'s Flux object gives, read with `client`: FluxUp's own in the controller,
/// the person's in the dashboard, so a person who may not read the Secret gets no listing made
/// with it.
pub async fn access_of(client: &kube::Client, source: &ChartSource) -> Result<Access, String> {
    use fluxup_api::flux::{HelmRepository, OCIRepository};
    let (ns, name) = source.name.split_once('/').unwrap_or_default();
    let (secret, cert, insecure) = match source.kind.as_str() {
        "OCIRepository" => {
            match kube::Api::<OCIRepository>::namespaced(client.clone(), ns)
                .get(name)
                .await
            {
                Ok(r) => (r.spec.secret_ref, r.spec.cert_secret_ref, r.spec.insecure),
                Err(_) => (None, None, None),
            }
        }
        "HelmRepository" => {
            match kube::Api::<HelmRepository>::namespaced(client.clone(), ns)
                .get(name)
                .await
            {
                Ok(r) => (r.spec.secret_ref, r.spec.cert_secret_ref, r.spec.insecure),
                Err(_) => (None, None, None),
            }
        }
        _ => (None, None, None),
    };
    let read = |secret: String| {
        let client = client.clone();
        async move {
            let api = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, ns);
            match api.get(&secret).await {
                Ok(s) => Ok(secrets::data(s)),
                Err(kube::Error::Api(e)) if e.code == 403 => Err(format!(
                    "the chart source's credentials are in Secret {ns}/{secret}, which you may \
                     not read"
                )),
                Err(kube::Error::Api(e)) if e.code == 404 => Err(format!(
                    "the chart source names Secret {ns}/{secret}, which does not exist"
                )),
                Err(e) => Err(format!("Secret {ns}/{secret} could not be read: {e}")),
            }
        }
    };
    let host = source
        .url
        .as_deref()
        .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let mut access = Access {
        insecure: insecure.unwrap_or(false),
        ..Default::default()
    };
    if let Some(r) = secret {
        let data = read(r.name.clone()).await?;
        access.basic = credentials(&data, &host);
        if access.basic.is_none() {
            return Err(format!(
                "Secret {ns}/{} has neither username and password nor a .dockerconfigjson entry \
                 for {host}",
                r.name
            ));
        }
        access.ca = secrets::text(&data, "ca.crt");
    }
    if let Some(r) = cert {
        access.ca = secrets::text(&read(r.name).await?, "ca.crt").or(access.ca);
    }
    Ok(access)
}

/// `username` and `password`, or the `.dockerconfigjson` entry for `host` (as `docker login`
/// writes it: `username`/`password` or `auth`, base64 of `user:password`).
pub fn credentials(data: &BTreeMap<String, Vec<u8>>, host: &str) -> Option<(String, String)> {
    if let (Some(u), Some(p)) = (
        secrets::text(data, "username"),
        secrets::text(data, "password"),
    ) {
        return Some((u, p));
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        auths: BTreeMap<String, Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        username: Option<String>,
        password: Option<String>,
        auth: Option<String>,
    }
    let config: Config = serde_json::from_slice(data.get(".dockerconfigjson")?).ok()?;
    let entry = config.auths.iter().find_map(|(server, entry)| {
        let server = server
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let server = server.split('/').next().unwrap_or_default();
        (server == host).then_some(entry)
    })?;
    match (&entry.username, &entry.password, &entry.auth) {
        (Some(u), Some(p), _) => Some((u.clone(), p.clone())),
        (_, _, Some(auth)) => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .ok()?;
            let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
            Some((u.to_string(), p.to_string()))
        }
        _ => None,
    }
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

async fn helm_index(base: &str, chart: &str, access: &Access) -> Result<Vec<String>, Error> {
    let url = parse_url(&format!("{}/index.yaml", base.trim_end_matches('/')))?;
    let key = format!("{url}#{}", access.key());
    let listing = cached(key, read_index(url, access.clone())).await?;
    let Listing::Charts(charts) = listing.as_ref() else {
        return Err(Error::BadIndex);
    };
    charts
        .get(chart)
        .cloned()
        .ok_or_else(|| Error::NoSuchChart {
            chart: chart.to_string(),
            url: base.to_string(),
        })
}

async fn read_index(url: Url, access: Access) -> Result<Listing, Error> {
    let body = get(&url, &access.auth(), &access, INDEX_LIMIT).await?;
    let index: Index = serde_yaml::from_slice(&body).map_err(|error| {
        tracing::debug!(%url, %error, "not a Helm repository index");
        Error::BadIndex
    })?;
    Ok(Listing::Charts(
        index
            .entries
            .into_iter()
            .map(|(chart, entries)| (chart, entries.into_iter().map(|e| e.version).collect()))
            .collect(),
    ))
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
/// every page of them, answering the registry's challenge (Basic, or a Bearer pull token,
/// anonymous or with the source's credentials).
async fn oci_tags(url: &str, chart: &str, access: &Access) -> Result<Vec<String>, Error> {
    let address = url.trim_start_matches("oci://").trim_end_matches('/');
    let address = if chart.is_empty() {
        address.to_string()
    } else {
        format!("{address}/{chart}")
    };
    let (host, repository) = address
        .split_once('/')
        .ok_or_else(|| Error::Unsupported(format!("OCI address {url}")))?;
    let scheme = if access.insecure { "http" } else { "https" };
    let tags_url = parse_url(&format!(
        "{scheme}://{host}/v2/{repository}/tags/list?n={PAGE}"
    ))?;
    let listing = cached(
        format!("{tags_url}#{}", access.key()),
        read_tags(tags_url, repository.to_string(), access.clone()),
    )
    .await?;
    match listing.as_ref() {
        Listing::Tags(tags) => Ok(tags.clone()),
        Listing::Charts(_) => Err(Error::BadTags),
    }
}

/// Tags asked for per page.
const PAGE: usize = 1000;
/// Pages read at most (a repository of 50,000 tags).
const MAX_PAGES: usize = 50;

async fn read_tags(url: Url, repository: String, access: Access) -> Result<Listing, Error> {
    let mut auth = access.auth();
    let mut tags = Vec::new();
    let mut next = Some(url.clone());
    let mut pages = 0;
    while let Some(page) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            break;
        }
        let mut response = send(&page, &auth, &access).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            auth = if challenge.to_ascii_lowercase().starts_with("bearer") {
                Auth::Bearer(pull_token(&challenge, &repository, &access).await?)
            } else if access.basic.is_some() && matches!(auth, Auth::None) {
                access.auth()
            } else {
                return Err(if access.basic.is_some() {
                    Error::Refused
                } else {
                    Error::NeedsCredentials
                });
            };
            response = send(&page, &auth, &access).await?;
        }
        if matches!(response.status().as_u16(), 401 | 403) {
            return Err(if access.basic.is_some() {
                Error::Refused
            } else {
                Error::NeedsCredentials
            });
        }
        next = next_page(&page, response.headers());
        let body = outbound::success_body(response, SMALL).await?;
        let list: TagList = serde_json::from_slice(&body).map_err(|error| {
            tracing::debug!(%url, %error, "not an OCI tag list");
            Error::BadTags
        })?;
        tags.extend(list.tags.unwrap_or_default());
    }
    Ok(Listing::Tags(tags))
}

/// The next page of a tag list, from the `Link: <…>; rel="next"` header (OCI distribution spec),
/// only on the same registry.
fn next_page(current: &Url, headers: &reqwest::header::HeaderMap) -> Option<Url> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let target = link
        .split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))?;
    let inner = target.split('<').nth(1)?.split('>').next()?;
    let next = current.join(inner).ok()?;
    (next.origin() == current.origin() && next.path().ends_with("/tags/list")).then_some(next)
}

/// `Bearer realm="https://auth/token",service="registry"` → a pull token for `repository`,
/// with the source's credentials if it has them. The
/// realm is the registry's word, so it is fetched through the guard like the registry itself.
async fn pull_token(challenge: &str, repository: &str, access: &Access) -> Result<String, Error> {
    let params: BTreeMap<String, String> = challenge
        .trim_start_matches("Bearer ")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    let Some(mut url) = params.get("realm").and_then(|r| Url::parse(r).ok()) else {
        tracing::debug!(%challenge, "registry challenge without a usable realm");
        return Err(Error::Token);
    };
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = params.get("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", &format!("repository:{repository}:pull"));
    }
    let body = get(&url, &access.auth(), access, SMALL).await?;
    serde_json::from_slice::<Token>(&body)
        .map(|t| t.token)
        .map_err(|error| {
            tracing::debug!(%url, %error, "registry token answer unreadable");
            Error::Token
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insecure() -> Access {
        Access {
            insecure: true,
            ..Default::default()
        }
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A local server that answers every request with `answer(path)`, counting requests.
    async fn serve(
        answer: impl Fn(&str) -> (String, String, Vec<u8>) + Send + Sync + 'static,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let (seen, answer) = (count.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 8192];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&request[..n]).to_string();
                    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
                    let (status, headers, body) = answer(&path);
                    let mut out = format!(
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(&body);
                    let _ = socket.write_all(&out).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (port, count)
    }

    fn helm(url: String) -> ChartSource {
        ChartSource {
            kind: "HelmRepository".into(),
            name: "test/charts".into(),
            url: Some(url),
        }
    }

    fn oci(url: String) -> ChartSource {
        ChartSource {
            kind: "OCIRepository".into(),
            name: "test/charts".into(),
            url: Some(url),
        }
    }

    #[tokio::test]
    async fn a_crowd_at_the_picker_costs_the_source_one_request() {
        let (port, count) = serve(|_| {
            let index = "entries:\n  web:\n  - version: 1.0.0\n  - version: 1.2.0\n  - version: latest\n  api:\n  - version: 3.0.0\n";
            ("200 OK".into(), String::new(), index.as_bytes().to_vec())
        })
        .await;
        outbound::allow(&format!("127.0.0.1:{port}")).unwrap();
        let source = helm(format!("http://127.0.0.1:{port}/"));
        let access = Access::default();
        let lists = futures::future::join_all((0..20).map(|_| list(&source, "web", &access))).await;
        for l in lists {
            assert_eq!(l.unwrap(), ["1.2.0", "1.0.0"]);
        }
        // Another chart of the same repository: the same index.yaml.
        assert_eq!(
            list(&source, "api", &Access::default()).await.unwrap(),
            ["3.0.0"]
        );
        assert_eq!(
            list(&source, "nope", &Access::default())
                .await
                .unwrap_err()
                .to_string(),
            format!("chart nope is not in http://127.0.0.1:{port}/")
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn what_a_source_answers_is_never_repeated() {
        let (port, _) = serve(|path| match path {
            "/missing/index.yaml" => (
                "404 Not Found".into(),
                String::new(),
                b"internal: hunter2".to_vec(),
            ),
            "/v2/broken/tags/list?n=1000" => (
                "200 OK".into(),
                String::new(),
                b"{\"tags\": \"hunter2\"}".to_vec(),
            ),
            _ => (
                "200 OK".into(),
                String::new(),
                b"entries: \"hunter2\"".to_vec(),
            ),
        })
        .await;
        outbound::allow(&format!("127.0.0.1:{port}")).unwrap();
        for (source, says) in [
            (
                helm(format!("http://127.0.0.1:{port}/missing")),
                "the chart source could not be read (HTTP 404)",
            ),
            (
                helm(format!("http://127.0.0.1:{port}/garbage")),
                "the chart source could not be read (not a Helm repository index)",
            ),
            (
                oci(format!("oci://127.0.0.1:{port}/broken")),
                "the chart source could not be read (not an OCI registry's tag list)",
            ),
        ] {
            assert_eq!(
                list(&source, "web", &insecure())
                    .await
                    .unwrap_err()
                    .to_string(),
                says
            );
        }
    }

    #[tokio::test]
    async fn a_registry_token_realm_is_checked_like_the_registry() {
        // The realm a registry names is its word: a hostile one points at the metadata service
        // or at a port of this host that is not allowed.
        let (closed, _) = serve(|_| {
            (
                "200 OK".into(),
                String::new(),
                b"{\"token\": \"t\"}".to_vec(),
            )
        })
        .await;
        for realm in [
            "http://169.254.169.254/latest/meta-data/iam".to_string(),
            format!("http://127.0.0.1:{closed}/token"),
            format!("http://localhost:{closed}/token"),
        ] {
            let (port, _) = serve(move |_| {
                (
                    "401 Unauthorized".into(),
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"r\"\r\n"),
                    Vec::new(),
                )
            })
            .await;
            outbound::allow(&format!("127.0.0.1:{port}")).unwrap();
            let error = list(
                &oci(format!("oci://127.0.0.1:{port}/charts/x")),
                "",
                &insecure(),
            )
            .await
            .unwrap_err();
            assert_eq!(
                error.to_string(),
                "the chart source could not be read (refused: address in a range FluxUp does not fetch from)"
            );
        }
    }

    #[tokio::test]
    async fn a_registry_token_is_fetched_and_used() {
        let (auth, _) = serve(|path| {
            assert!(
                path.contains("scope=repository%3Acharts%2Fx%3Apull"),
                "{path}"
            );
            (
                "200 OK".into(),
                String::new(),
                b"{\"access_token\": \"t0k\"}".to_vec(),
            )
        })
        .await;
        let (port, count) = serve(move |_| {
            // Without the token, the challenge; with it (a second connection), the tags.
            (
                "401 Unauthorized".into(),
                format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{auth}/token\",service=\"r\"\r\n"),
                Vec::new(),
            )
        })
        .await;
        outbound::allow(&format!("127.0.0.1:{port},127.0.0.1:{auth}")).unwrap();
        // The server always challenges, so the second answer is a 401 too: the token was asked
        // for and the request repeated with it.
        let error = list(
            &oci(format!("oci://127.0.0.1:{port}/charts/x")),
            "",
            &insecure(),
        )
        .await
        .unwrap_err();
        assert_eq!(error, Error::NeedsCredentials);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_urls_say_so() {
        for (source, chart) in [
            (helm("http://169.254.169.254/latest".into()), "x"),
            (helm("http://10.96.0.1:443/".into()), "x"),
            (helm("https://[::1]:6443/".into()), "x"),
            (oci("oci://127.0.0.1:6443/x".into()), ""),
        ] {
            assert_eq!(
                list(&source, chart, &insecure()).await.unwrap_err(),
                Error::Fetch(outbound::Error::Refused),
                "{source:?}"
            );
        }
        assert_eq!(
            list(&helm("ftp://example.com/".into()), "x", &Access::default())
                .await
                .unwrap_err()
                .to_string(),
            "the chart source could not be read (not an http(s) URL with a host)"
        );
    }

    #[test]
    fn registry_credentials_in_flux_secret_formats() {
        use base64::Engine as _;
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let plain = data(&[("username", "u"), ("password", "p")]);
        assert_eq!(credentials(&plain, "any"), Some(("u".into(), "p".into())));
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3:cret");
        let docker = format!(
            r#"{{"auths":{{"https://ghcr.io/v2/":{{"auth":"{auth}"}},"registry.local:5000":{{"username":"a","password":"b"}}}}}}"#
        );
        let docker = data(&[(".dockerconfigjson", &docker)]);
        assert_eq!(
            credentials(&docker, "ghcr.io"),
            Some(("robot".into(), "s3:cret".into()))
        );
        assert_eq!(
            credentials(&docker, "registry.local:5000"),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(credentials(&docker, "quay.io"), None);
    }

    #[test]
    fn tag_pages_follow_link_headers_on_the_same_registry_only() {
        let current = Url::parse("https://r.example/v2/charts/x/tags/list?n=1000").unwrap();
        let headers = |link: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::LINK, link.parse().unwrap());
            h
        };
        let next = next_page(
            &current,
            &headers(r#"</v2/charts/x/tags/list?n=1000&last=1.9.0>; rel="next""#),
        );
        assert_eq!(
            next.map(|u| u.to_string()).as_deref(),
            Some("https://r.example/v2/charts/x/tags/list?n=1000&last=1.9.0")
        );
        assert_eq!(
            next_page(
                &current,
                &headers(r#"<https://evil.example/v2/charts/x/tags/list>; rel="next""#)
            ),
            None
        );
        assert_eq!(
            next_page(&current, &headers(r#"</v2/_catalog>; rel="next""#)),
            None
        );
        assert_eq!(
            next_page(&current, &reqwest::header::HeaderMap::new()),
            None
        );
    }

    #[test]
    fn listings_with_other_credentials_are_cached_apart() {
        let none = Access::default();
        let with = Access {
            basic: Some(("u".into(), "p".into())),
            ..Default::default()
        };
        let other = Access {
            basic: Some(("u".into(), "q".into())),
            ..Default::default()
        };
        assert_ne!(none.key(), with.key());
        assert_ne!(with.key(), other.key());
        assert!(!format!("{with:?}").contains("\"p\""), "{with:?}");
    }
}
