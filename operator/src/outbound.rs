//! HTTP to addresses that tenants choose. A HelmRepository's, OCIRepository's or GitRepository's
//! URL is written by whoever may edit objects in its namespace, and FluxUp fetches it from inside
//! the cluster with its own network position: without a guard, a tenant could make FluxUp read
//! the cloud's metadata service, the API server or any in-cluster service and show them the
//! answer. Every such request goes through [`Guard`] ([`guard`] is the process's one):
//!
//! - **Destinations.** Loopback, link-local (169.254.0.0/16, fe80::/10, which hold the cloud
//!   metadata services), unspecified, multicast and broadcast addresses and the cloud metadata
//!   addresses are always refused, and so are the cluster's own ranges, configured with
//!   `FLUXUP_OUTBOUND_DENY` (below). Names are checked on what they resolve to (a resolver that
//!   drops refused addresses, so a name cannot point FluxUp at them), IP literals before the
//!   request (the resolver is not asked for those). IPv4-mapped and NAT64 IPv6 addresses are
//!   checked as the IPv4 address they carry.
//! - **Redirects** only to the same scheme, host and port, at most [`MAX_REDIRECTS`]; a redirect
//!   to another host could lead anywhere, so it is refused. Proxies from the environment are not
//!   used (the proxy, not FluxUp, would resolve the name and the checks would mean nothing).
//! - **Sizes.** Answers are read as a stream and stopped at a cap ([`read_body`]), so a hostile
//!   server cannot fill FluxUp's memory.
//! - **Errors** say what rule stopped a request, never what the remote answered; details are
//!   logged at debug level.
//!
//! Configuration, read from the environment once, at first use:
//!
//! - `FLUXUP_OUTBOUND_DENY`: comma-separated CIDRs refused besides the built-in ones: set it to
//!   your cluster's service and pod CIDRs. Unset, it is [`DEFAULT_DENY`] (the kubeadm and kind
//!   service and pod ranges and k3s's); set to the empty string, only the built-in ranges are
//!   refused. A malformed entry is logged and the default is kept as well (refusing more, not
//!   less).
//! - `FLUXUP_OUTBOUND_ALLOW`: comma-separated exceptions: `host:port` (`[v6]:port` for IPv6), a
//!   URL (`http://charts.internal:8080`, its host and port) or a CIDR/IP. A `host:port` entry
//!   allows exactly that host name (or IP literal) and port in URLs, whatever it resolves to; a
//!   CIDR allows its addresses on every port. e.g. an in-cluster chart museum:
//!   `FLUXUP_OUTBOUND_ALLOW=chartmuseum.charts.svc.cluster.local:8080`. The sandbox serves its
//!   chart repository, registry and Gitea on 127.0.0.1, so tests and the demo allow those.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// The most FluxUp reads of a large answer (a Helm repository's index.yaml, a Git API answer).
pub const LARGE: usize = 20 << 20;
/// The most FluxUp reads of a small answer (a page of OCI tags, a registry token).
pub const SMALL: usize = 1 << 20;
/// Redirects followed (all to the same host) before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Refused whatever `FLUXUP_OUTBOUND_DENY` says: this host, link-local (cloud metadata lives
/// there), unspecified, multicast, broadcast, and metadata services outside those ranges.
const ALWAYS_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    // Alibaba Cloud's metadata service (in the CGNAT range, not link-local).
    "100.100.100.200/32",
    "::/128",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
    // AWS's IPv6 metadata service (a unique local address).
    "fd00:ec2::254/128",
];

/// The cluster ranges refused when `FLUXUP_OUTBOUND_DENY` is unset: kubeadm's and kind's service
/// range, kind's (flannel's) pod range, and k3s's pod and service ranges.
pub const DEFAULT_DENY: &str = "10.96.0.0/12,10.244.0.0/16,10.42.0.0/15";

const DENY_ENV: &str = "FLUXUP_OUTBOUND_DENY";
const ALLOW_ENV: &str = "FLUXUP_OUTBOUND_ALLOW";

/// Why a request was not made or not finished. The words are safe to show to anyone: nothing in
/// them comes from the remote server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not an http(s) URL with a host")]
    BadUrl,
    #[error("refused: address in a range FluxUp does not fetch from")]
    Refused,
    #[error("refused: a redirect to another host")]
    Redirect,
    #[error("refused: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("refused: the answer is larger than {} MiB", .limit >> 20)]
    TooLarge { limit: usize },
    #[error("no answer in time")]
    Timeout,
    #[error("could not connect")]
    Unreachable,
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the certificate authority (ca.crt) is not a PEM bundle FluxUp can use")]
    BadCa,
}

/// An IP network: an address and how many leading bits count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.96.0.0/12`, `fe80::/10`, or one address (`10.0.0.1`).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has no prefix length between 0 and {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n).into(), u32::from(a).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        self.prefix == 0 || (net >> (bits - self.prefix)) == (ip >> (bits - self.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// An address as itself and, for an IPv6 address that carries an IPv4 one (IPv4-mapped
/// `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`), as that IPv4 address: where the packets go.
fn forms(ip: IpAddr) -> Vec<IpAddr> {
    let mut forms = vec![ip];
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            forms.push(IpAddr::V4(v4));
        }
        let s = v6.segments();
        if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let bits = u128::from(v6) as u32;
            forms.push(IpAddr::V4(bits.into()));
        }
    }
    forms
}

/// A host as URLs are compared: an IP in its canonical form, a name in lower case without a
/// trailing dot. `host` is as `Url::host_str` gives it (IPv6 in brackets).
fn normalize(host: &str) -> String {
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Which destinations FluxUp fetches from.
#[derive(Clone, Debug)]
pub struct Rules {
    deny: Vec<Cidr>,
    allow_nets: Vec<Cidr>,
    allow_hosts: Vec<(String, u16)>,
}

/// How a checked URL is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Allowed by a `host:port` exception: fetched without looking at its addresses.
    Allowed,
    /// Fetched only from addresses outside the refused ranges.
    Filtered,
}

impl Rules {
    /// The built-in ranges, `deny` (comma-separated CIDRs) and the exceptions `allow` (see the
    /// module's documentation). Any malformed entry is an error.
    pub fn new(deny: &str, allow: &str) -> Result<Rules, String> {
        let mut rules = Rules::builtin();
        rules.deny_more(deny)?;
        rules.allow(allow)?;
        Ok(rules)
    }

    fn builtin() -> Rules {
        Rules {
            deny: ALWAYS_DENIED
                .iter()
                .map(|c| Cidr::parse(c).expect("the built-in ranges are CIDRs"))
                .collect(),
            allow_nets: Vec::new(),
            allow_hosts: Vec::new(),
        }
    }

    /// From `FLUXUP_OUTBOUND_DENY` and `FLUXUP_OUTBOUND_ALLOW`. Mistakes are logged; a mistake
    /// in the deny list keeps the default ranges too, so a typo does not open a hole.
    pub fn from_env() -> Rules {
        let mut rules = Rules::builtin();
        let deny = std::env::var(DENY_ENV).unwrap_or_else(|_| DEFAULT_DENY.into());
        if let Err(why) = rules.deny_more(&deny) {
            tracing::error!(%why, "{DENY_ENV} has mistakes; refusing the default ranges too");
            rules
                .deny_more(DEFAULT_DENY)
                .expect("the default ranges are CIDRs");
        }
        if let Err(why) = rules.allow(&std::env::var(ALLOW_ENV).unwrap_or_default()) {
            tracing::error!(%why, "{ALLOW_ENV} has mistakes; those entries allow nothing");
        }
        tracing::info!(rules = %rules, "outbound HTTP to tenants' sources");
        rules
    }

    /// Adds refused ranges; the valid entries are added even when others are not.
    fn deny_more(&mut self, entries: &str) -> Result<(), String> {
        let mut mistakes = Vec::new();
        for entry in entries.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match Cidr::parse(entry) {
                Ok(cidr) => self.deny.push(cidr),
                Err(why) => mistakes.push(why),
            }
        }
        if mistakes.is_empty() {
            Ok(())
        } else {
            Err(mistakes.join("; "))
        }
    }

    /// Adds exceptions (comma-separated `host:port`, URLs or CIDRs); the valid entries are added
    /// even when others are not.
    pub fn allow(&mut self, entries: &str) -> Result<(), String> {
        let mut mistakes = Vec::new();
        for entry in entries.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(cidr) = Cidr::parse(entry) {
                self.allow_nets.push(cidr);
                continue;
            }
            match host_port(entry) {
                Ok(host_port) => self.allow_hosts.push(host_port),
                Err(why) => mistakes.push(why),
            }
        }
        if mistakes.is_empty() {
            Ok(())
        } else {
            Err(mistakes.join("; "))
        }
    }

    /// Whether FluxUp connects to `ip` (on any port).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        let forms = forms(ip);
        let any = |list: &[Cidr]| forms.iter().any(|f| list.iter().any(|c| c.contains(*f)));
        any(&self.allow_nets) || !any(&self.deny)
    }

    /// Whether `url` may be fetched, and how.
    pub fn check(&self, url: &Url) -> Result<Route, Error> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BadUrl);
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(Error::BadUrl)?;
        let port = url.port_or_known_default().ok_or(Error::BadUrl)?;
        let name = normalize(host);
        if self
            .allow_hosts
            .iter()
            .any(|(h, p)| *h == name && *p == port)
        {
            return Ok(Route::Allowed);
        }
        // reqwest does not ask the resolver for IP literals: they are checked here (the URL
        // parser has already turned other spellings of an IPv4 address into dotted form).
        match name.parse::<IpAddr>().ok() {
            Some(ip) if !self.address_allowed(ip) => Err(Error::Refused),
            _ => Ok(Route::Filtered),
        }
    }
}

impl std::fmt::Display for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(",")
            }
        };
        write!(
            f,
            "refused {}; allowed {}",
            list(self.deny.iter().map(Cidr::to_string).collect()),
            list(
                self.allow_nets
                    .iter()
                    .map(Cidr::to_string)
                    .chain(self.allow_hosts.iter().map(|(h, p)| match h.contains(':') {
                        true => format!("[{h}]:{p}"),
                        false => format!("{h}:{p}"),
                    }))
                    .collect()
            )
        )
    }
}

/// `host:port`, `[v6]:port` or a URL → a normalized host and its port.
fn host_port(entry: &str) -> Result<(String, u16), String> {
    if entry.contains("://") {
        let url = Url::parse(entry).map_err(|e| format!("{entry:?} is not a URL: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{entry:?} has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{entry:?} names no port"))?;
        return Ok((normalize(host), port));
    }
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry:?} is neither host:port, a URL nor a CIDR"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{entry:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || (host.contains(['/', '@', ' ', ':']) && host.parse::<IpAddr>().is_err()) {
        return Err(format!("{entry:?} has no valid host"));
    }
    Ok((normalize(host), port))
}

/// Resolves names and keeps only the addresses the rules allow; none left is [`Error::Refused`].
struct Filtering {
    rules: Arc<RwLock<Rules>>,
}

impl Resolve for Filtering {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.rules.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = host.clone();
            let found: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                    .await??
                    .collect();
            let rules = rules.read().unwrap_or_else(|e| e.into_inner());
            let (kept, refused): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|a| rules.address_allowed(a.ip()));
            if !refused.is_empty() {
                tracing::debug!(%host, ?refused, "resolved addresses refused");
            }
            if kept.is_empty() {
                return Err(Box::new(Error::Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The scheme, host and port of a URL: what a redirect may not change.
fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_string(),
        url.host_str().map(normalize),
        url.port_or_known_default(),
    )
}

/// Redirects to the same scheme, host and port only, at most [`MAX_REDIRECTS`].
pub fn same_host_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(Error::TooManyRedirects);
        }
        let same = attempt
            .previous()
            .last()
            .is_some_and(|from| origin(from) == origin(attempt.url()));
        if same {
            attempt.follow()
        } else {
            tracing::debug!(to = %attempt.url(), "redirect to another host refused");
            attempt.error(Error::Redirect)
        }
    })
}

/// The rules and the HTTP clients that obey them.
pub struct Guard {
    rules: Arc<RwLock<Rules>>,
    /// For URLs a `host:port` exception allows: any address.
    allowed: reqwest::Client,
    /// For everything else: only allowed addresses.
    filtered: reqwest::Client,
}

impl Guard {
    pub fn new(rules: Rules) -> Guard {
        let rules = Arc::new(RwLock::new(rules));
        // Building fails only when TLS cannot be set up at all, as reqwest::Client::new would.
        Guard {
            allowed: client_builder().build().expect("the HTTP client builds"),
            filtered: client_builder()
                .dns_resolver(Arc::new(Filtering {
                    rules: rules.clone(),
                }))
                .build()
                .expect("the HTTP client builds"),
            rules,
        }
    }

    /// Like [`Guard::request`], trusting the certificate authorities in `ca_pem` (a source's
    /// `ca.crt`) besides the system's. A client is built for the call: sources with a private
    /// authority are few and their answers are cached by the caller.
    pub fn request_trusting(
        &self,
        method: reqwest::Method,
        url: &Url,
        ca_pem: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let Some(pem) = ca_pem else {
            return self.request(method, url);
        };
        let route = self.check(url)?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|_| Error::BadCa)?;
        let mut builder = client_builder();
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        if route == Route::Filtered {
            builder = builder.dns_resolver(Arc::new(Filtering {
                rules: self.rules.clone(),
            }));
        }
        let client = builder.build().map_err(|_| Error::BadCa)?;
        Ok(client.request(method, url.clone()))
    }

    /// Adds exceptions, as `FLUXUP_OUTBOUND_ALLOW` does (for tests and embedders).
    pub fn allow(&self, entries: &str) -> Result<(), String> {
        self.rules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .allow(entries)
    }

    /// Whether `url` may be fetched, and how.
    pub fn check(&self, url: &Url) -> Result<Route, Error> {
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .check(url)
    }

    /// A request to `url` from the client its route needs, or why there is none. Send it with
    /// [`Guard::send`]. Queries may be added; the URL's host must not change.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let route = self.check(url).inspect_err(|error| {
            tracing::debug!(%url, %error, "outbound request refused");
        })?;
        let client = match route {
            Route::Allowed => &self.allowed,
            Route::Filtered => &self.filtered,
        };
        Ok(client.request(method, url.clone()))
    }

    /// Where a program FluxUp runs (the `git` CLI over HTTPS or SSH) may connect for `host` and
    /// `port`: `None` when a `host:port` exception allows it as named, otherwise the addresses it
    /// resolves to that the rules allow, which the program must be pinned to (so the name cannot
    /// resolve elsewhere between this check and the connection). None allowed is
    /// [`Error::Refused`].
    pub async fn addresses(&self, host: &str, port: u16) -> Result<Option<Vec<IpAddr>>, Error> {
        let host = normalize(host);
        let literal = host.parse::<IpAddr>().ok();
        let url = match literal {
            Some(IpAddr::V6(v6)) => format!("http://[{v6}]:{port}/"),
            _ => format!("http://{host}:{port}/"),
        };
        let url = Url::parse(&url).map_err(|_| Error::BadUrl)?;
        if self.check(&url)? == Route::Allowed {
            return Ok(None);
        }
        if let Some(ip) = literal {
            return Ok(Some(vec![ip]));
        }
        let resolved = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| Error::Unreachable)?;
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut allowed: Vec<IpAddr> = resolved
            .map(|a| a.ip())
            .filter(|ip| rules.address_allowed(*ip))
            .collect();
        allowed.dedup();
        if allowed.is_empty() {
            return Err(Error::Refused);
        }
        Ok(Some(allowed))
    }

    /// A GET request; see [`Guard::request`].
    pub fn get(&self, url: &Url) -> Result<reqwest::RequestBuilder, Error> {
        self.request(reqwest::Method::GET, url)
    }

    /// Sends `request`; a failure is said in safe words and logged at debug level.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        request.send().await.map_err(|e| classify(&e))
    }
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("fluxup/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .referer(false)
        .redirect(same_host_redirects())
}

/// The process's guard, with the rules from the environment.
pub fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| Guard::new(Rules::from_env()))
}

/// Adds exceptions to the process's guard, as `FLUXUP_OUTBOUND_ALLOW` does: e.g. a test's
/// sandbox sources (`allow("127.0.0.1:18034,127.0.0.1:18032")`).
pub fn allow(entries: &str) -> Result<(), String> {
    guard().allow(entries)
}

/// A reqwest error in safe words: the rule that stopped it (from the resolver or the redirect
/// policy), a timeout, or a connection that could not be made. The whole error goes to debug.
pub fn classify(error: &reqwest::Error) -> Error {
    tracing::debug!(error = %chain(error), "outbound request failed");
    let mut source = error.source();
    while let Some(s) = source {
        if let Some(ours) = s.downcast_ref::<Error>() {
            return ours.clone();
        }
        source = s.source();
    }
    if error.is_timeout() {
        Error::Timeout
    } else {
        Error::Unreachable
    }
}

/// An error and its sources, for logs.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The body of `response`, read as it arrives and stopped once it passes `limit` bytes.
pub async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    let too_large = |url: &Url| {
        tracing::debug!(%url, limit, "answer larger than the cap; not read");
        Error::TooLarge { limit }
    };
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_large(response.url()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large(response.url()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The body of a successful (2xx) `response`, capped at `limit`; any other status is
/// [`Error::Status`] and its body is not read.
pub async fn success_body(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Error> {
    let status = response.status();
    if !status.is_success() {
        tracing::debug!(url = %response.url(), %status, "outbound request answered");
        return Err(Error::Status(status.as_u16()));
    }
    read_body(response, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn rules() -> Rules {
        Rules::new(DEFAULT_DENY, "").unwrap()
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn refused_addresses() {
        let rules = rules();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "169.254.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "100.100.100.200",
            "10.96.0.1",
            "10.111.255.254",
            "10.244.3.4",
            "10.42.0.9",
            "10.43.0.1",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "fd00:ec2::254",
            // IPv4 inside IPv6 goes where the IPv4 address goes.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!rules.address_allowed(ip), "{refused} should be refused");
        }
        for allowed in [
            "8.8.8.8",
            "10.0.0.5",
            "10.95.255.255",
            "10.112.0.0",
            "192.168.1.10",
            "172.16.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert!(rules.address_allowed(ip), "{allowed} should be allowed");
        }
    }

    #[test]
    fn configured_ranges_replace_the_default_ones_but_not_the_built_in() {
        let rules = Rules::new("192.168.0.0/16, fd00:10:96::/112", "").unwrap();
        assert!(!rules.address_allowed("192.168.3.4".parse().unwrap()));
        assert!(!rules.address_allowed("fd00:10:96::1".parse().unwrap()));
        assert!(rules.address_allowed("10.96.0.1".parse().unwrap()));
        assert!(!rules.address_allowed("127.0.0.1".parse().unwrap()));
        let none = Rules::new("", "").unwrap();
        assert!(none.address_allowed("10.96.0.1".parse().unwrap()));
        assert!(!none.address_allowed("169.254.169.254".parse().unwrap()));
    }

    #[test]
    fn mistakes_in_the_lists_are_named() {
        for (deny, allow, says) in [
            ("10.96.0.0/33", "", "no prefix length between 0 and 32"),
            ("ten.96.0.0/12", "", "is not an IP address or CIDR"),
            ("", "charts.internal", "neither host:port, a URL nor a CIDR"),
            ("", "charts.internal:http", "no valid port"),
            ("", "oci://charts.internal/x", "names no port"),
            ("", ":8080", "no valid host"),
        ] {
            let error = Rules::new(deny, allow).unwrap_err();
            assert!(error.contains(says), "{deny:?} {allow:?}: {error}");
        }
        // A typo in the environment's deny list keeps the defaults.
        let mut rules = Rules::builtin();
        assert!(rules.deny_more("10.0.0.0/8,nonsense").is_err());
        assert!(!rules.address_allowed("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn literal_urls_are_checked_before_any_request() {
        let rules = rules();
        for refused in [
            "http://127.0.0.1:6443/",
            "https://127.0.0.1/",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://10.96.0.1/",
            // Other spellings of 127.0.0.1 that URL parsers accept.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            // Credentials in the URL do not change where it goes.
            "http://charts.example.com@127.0.0.1:6443/",
        ] {
            assert_eq!(rules.check(&url(refused)), Err(Error::Refused), "{refused}");
        }
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "oci://example.com/x",
        ] {
            assert_eq!(rules.check(&url(bad)), Err(Error::BadUrl), "{bad}");
        }
        // Names are checked on what they resolve to, by the resolver.
        assert_eq!(
            rules.check(&url("http://localhost:6443/")),
            Ok(Route::Filtered)
        );
        assert_eq!(
            rules.check(&url("https://charts.example.com/")),
            Ok(Route::Filtered)
        );
    }

    #[test]
    fn exceptions_allow_exactly_their_host_and_port() {
        let mut rules = rules();
        rules
            .allow("127.0.0.1:18034, http://localhost:18032/, [::1]:5000, 10.96.5.0/24, Charts.Internal.:8080")
            .unwrap();
        assert_eq!(
            rules.check(&url("http://127.0.0.1:18034/index.yaml")),
            Ok(Route::Allowed)
        );
        assert_eq!(
            rules.check(&url("http://LOCALHOST:18032/v2/")),
            Ok(Route::Allowed)
        );
        assert_eq!(rules.check(&url("http://[::1]:5000/")), Ok(Route::Allowed));
        assert_eq!(
            rules.check(&url("http://charts.internal:8080/")),
            Ok(Route::Allowed)
        );
        // Another port of an allowed host is not allowed.
        assert_eq!(
            rules.check(&url("http://127.0.0.1:18000/")),
            Err(Error::Refused)
        );
        assert_eq!(
            rules.check(&url("http://localhost:18000/")),
            Ok(Route::Filtered)
        );
        // A CIDR allows its addresses on every port, in URLs and from the resolver.
        assert_eq!(
            rules.check(&url("http://10.96.5.7:9000/")),
            Ok(Route::Filtered)
        );
        assert!(rules.address_allowed("10.96.5.7".parse().unwrap()));
        assert!(!rules.address_allowed("10.96.6.7".parse().unwrap()));
        assert!(
            rules
                .to_string()
                .contains("allowed 10.96.5.0/24,127.0.0.1:18034")
        );
    }

    /// A local server that answers each connection with the next of `answers` and counts them.
    async fn serve(answers: Vec<Vec<u8>>) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        serve_at(|_| answers).await
    }

    /// [`serve`], with answers that may name the server's own port.
    async fn serve_at(
        answers: impl FnOnce(u16) -> Vec<Vec<u8>>,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = answers(port);
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&answer).await;
                let _ = socket.shutdown().await;
            }
        });
        (port, count)
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    }

    fn guard_allowing(ports: &[u16]) -> Guard {
        let allow = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        Guard::new(Rules::new(DEFAULT_DENY, &allow).unwrap())
    }

    async fn fetch(guard: &Guard, url: &str, limit: usize) -> Result<Vec<u8>, Error> {
        let response = guard.send(guard.get(&Url::parse(url).unwrap())?).await?;
        success_body(response, limit).await
    }

    #[tokio::test]
    async fn loopback_is_refused_by_address_and_by_name() {
        let (port, count) = serve(vec![answer("200 OK", "", b"secret")]).await;
        let guard = guard_allowing(&[]);
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            assert_eq!(
                fetch(&guard, &url, SMALL).await,
                Err(Error::Refused),
                "{url}"
            );
        }
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Allowed by name and port, the same server answers.
        guard.allow(&format!("localhost:{port}")).unwrap();
        assert_eq!(
            fetch(&guard, &format!("http://localhost:{port}/"), SMALL).await,
            Ok(b"secret".to_vec())
        );
    }

    #[tokio::test]
    async fn redirects_stay_on_the_same_host() {
        let (other, other_count) = serve(vec![answer("200 OK", "", b"elsewhere")]).await;
        let (port, _) = serve_at(|port| {
            vec![
                answer("302 Found", "Location: /moved/index.yaml\r\n", b""),
                answer("200 OK", "", b"entries: {}"),
                answer(
                    "301 Moved Permanently",
                    &format!("Location: http://127.0.0.1:{other}/index.yaml\r\n"),
                    b"",
                ),
                answer(
                    "307 Temporary Redirect",
                    "Location: http://169.254.169.254/latest/meta-data/\r\n",
                    b"",
                ),
                answer(
                    "302 Found",
                    &format!("Location: https://127.0.0.1:{port}/\r\n"),
                    b"",
                ),
            ]
        })
        .await;
        // Both servers are allowed: only the redirect rule stops the request.
        let guard = guard_allowing(&[port, other]);
        let base = format!("http://127.0.0.1:{port}/index.yaml");
        assert_eq!(
            fetch(&guard, &base, SMALL).await,
            Ok(b"entries: {}".to_vec())
        );
        // Another port, another host, another scheme: refused.
        for _ in 0..3 {
            assert_eq!(fetch(&guard, &base, SMALL).await, Err(Error::Redirect));
        }
        assert_eq!(other_count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn endless_redirects_stop() {
        let loop_answer = answer("302 Found", "Location: /again\r\n", b"");
        let (port, count) = serve(vec![loop_answer; 10]).await;
        let guard = guard_allowing(&[port]);
        assert_eq!(
            fetch(&guard, &format!("http://127.0.0.1:{port}/"), SMALL).await,
            Err(Error::TooManyRedirects)
        );
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            MAX_REDIRECTS + 1
        );
    }

    #[tokio::test]
    async fn answers_stop_at_the_cap() {
        let big = vec![b'x'; 64 * 1024];
        // Said up front, and found while reading (no Content-Length, the body as it comes).
        let mut streamed = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        streamed.extend_from_slice(&big);
        let (port, _) = serve(vec![
            answer("200 OK", "", &big),
            streamed,
            answer("200 OK", "", &big[..1000]),
            answer("404 Not Found", "", b"<html>internal secrets</html>"),
        ])
        .await;
        let guard = guard_allowing(&[port]);
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..2 {
            let error = fetch(&guard, &url, 32 * 1024).await.unwrap_err();
            assert_eq!(error, Error::TooLarge { limit: 32 * 1024 });
        }
        assert_eq!(fetch(&guard, &url, 32 * 1024).await.unwrap().len(), 1000);
        // A failure says its status, not what the server sent.
        let error = fetch(&guard, &url, 32 * 1024).await.unwrap_err();
        assert_eq!(error.to_string(), "HTTP 404");
        assert_eq!(
            Error::TooLarge { limit: LARGE }.to_string(),
            "refused: the answer is larger than 20 MiB"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let guard = guard_allowing(&[port]);
        assert_eq!(
            fetch(&guard, &format!("http://127.0.0.1:{port}/"), SMALL).await,
            Err(Error::Unreachable)
        );
    }
}
