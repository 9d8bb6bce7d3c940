//! Who is asking, and whether they may ask this way.
//!
//! - **OIDC** (`--oidc-issuer`): the authorization-code flow with PKCE and a nonce, through the
//!   `openidconnect` crate; the session is an encrypted, HttpOnly, SameSite=Lax cookie (Secure
//!   when FluxUp is served over HTTPS). Scripts may instead send an ID token from the same issuer
//!   as `Authorization: Bearer`. The user and groups come from configurable claims.
//! - **No auth** (`--no-auth`): everyone is FluxUp itself. For a laptop only; logged loudly.
//!
//! Every request gets a [`Viewer`] in its extensions (or is refused): pages redirect to the
//! login, APIs answer 401. A request that changes something with a session cookie must come from
//! FluxUp's own pages: its `Origin` must be FluxUp's (CSRF); so must a WebSocket's.
//!
//! Names from the issuer are prefixed (`oidc:` by default) and never `system:…`, so a login can
//! not impersonate the cluster's own users or groups (`system:masters`). Sessions can be ended
//! before they expire: `/auth/logout` revokes all of that user's sessions in this process, and
//! `FLUXUP_SESSION_EPOCH` raised on every replica ends all sessions issued before.

use anyhow::Context as _;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, Key, PrivateCookieJar, SameSite};
use base64::Engine as _;
use fluxup_app::backend::Viewer;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const SESSION_COOKIE: &str = "fluxup_session";
const LOGIN_COOKIE: &str = "fluxup_login";
/// How long a login lasts.
const SESSION_HOURS: u64 = 8;
/// The most users whose logouts are remembered; beyond, every older session is ended.
const MAX_REVOKED_USERS: usize = 10_000;

/// How FluxUp learns who is asking.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The claim naming the user (as Kubernetes RBAC knows them), e.g. `email`.
    pub username_claim: String,
    /// The claim listing the user's groups.
    pub groups_claim: String,
    /// Prefixed to the user name, as the API server's `--oidc-username-prefix` does.
    pub username_prefix: String,
    /// Prefixed to each group, as the API server's `--oidc-groups-prefix` does.
    pub groups_prefix: String,
    /// When not empty, only people in one of these (prefixed) groups may log in.
    pub allowed_groups: Vec<String>,
    /// Where FluxUp is reached, e.g. `https://fluxup.example.com`: the callback is under it,
    /// and the `Origin` of requests must be it.
    pub public_url: String,
}

/// The authentication state of the server.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    mode: Mode,
    key: Key,
    /// The origin requests must come from (`scheme://host[:port]`); `None`: the request's Host.
    origin: Option<String>,
    secure: bool,
    revocations: Revocations,
}

/// Which sessions no longer hold, in this process.
struct Revocations {
    /// Sessions of an older epoch are refused (`FLUXUP_SESSION_EPOCH`).
    epoch: u64,
    /// Sessions issued at or before this (ms) are refused: set when `users` overflowed.
    all_before: AtomicU64,
    /// Per user, the time (ms) of their last logout: sessions issued before are refused.
    users: Mutex<HashMap<String, u64>>,
    /// Bumped on each revocation, so open connections check again at once.
    changed: watch::Sender<u64>,
}

impl Revocations {
    fn new(epoch: u64) -> Self {
        Revocations {
            epoch,
            all_before: AtomicU64::new(0),
            users: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
        }
    }

    /// Ends every session of `user` issued until now.
    fn revoke(&self, user: &str, now_ms: u64) {
        {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            // A logout older than a session's lifetime refuses nothing that has not expired.
            let horizon = now_ms.saturating_sub(SESSION_HOURS * 3600 * 1000);
            if users.len() >= MAX_REVOKED_USERS {
                users.retain(|_, at| *at > horizon);
            }
            if users.len() >= MAX_REVOKED_USERS {
                tracing::warn!(
                    "over {MAX_REVOKED_USERS} logouts in {SESSION_HOURS} h: ending every session"
                );
                self.all_before.fetch_max(now_ms, Ordering::Relaxed);
                users.clear();
            }
            users.insert(user.to_string(), now_ms);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Why a session no longer holds, if it does not.
    fn ended(&self, session: &Session, now_ms: u64) -> Option<&'static str> {
        if session.expires * 1000 <= now_ms {
            return Some("your login expired");
        }
        if session.epoch < self.epoch {
            return Some("FluxUp ended all logins (a new session epoch)");
        }
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let logout = users.get(&session.name).copied().unwrap_or(0);
        if session.issued <= logout.max(self.all_before.load(Ordering::Relaxed)) {
            return Some("you logged out");
        }
        None
    }
}

enum Mode {
    NoAuth,
    Oidc(Box<Oidc>),
}

struct Oidc {
    settings: OidcSettings,
    metadata: CoreProviderMetadata,
    http: reqwest::Client,
}

/// The session a cookie holds.
#[derive(Serialize, Deserialize)]
struct Session {
    name: String,
    groups: Vec<String>,
    /// Seconds since the epoch.
    expires: u64,
    /// Milliseconds since the epoch, to compare with logouts.
    issued: u64,
    /// The session epoch it was issued in.
    epoch: u64,
}

/// What the login flow keeps between the redirect to the issuer and the callback.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    state: String,
    verifier: String,
    nonce: String,
    return_to: String,
}

fn now() -> u64 {
    now_ms() / 1000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `FLUXUP_SESSION_EPOCH` (default 0): raising it ends every session issued under a lower one.
fn session_epoch() -> anyhow::Result<u64> {
    match std::env::var("FLUXUP_SESSION_EPOCH") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .context("FLUXUP_SESSION_EPOCH must be a whole number"),
        _ => Ok(0),
    }
}

/// The session key: `FLUXUP_SESSION_KEY` (base64, at least 64 bytes) so sessions survive
/// restarts and are shared by replicas, or a random one.
fn session_key() -> anyhow::Result<Key> {
    match std::env::var("FLUXUP_SESSION_KEY") {
        Ok(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .context("FLUXUP_SESSION_KEY is not base64")?;
            Key::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("FLUXUP_SESSION_KEY must hold at least 64 bytes"))
        }
        Err(_) => {
            tracing::info!("no FLUXUP_SESSION_KEY: logins end when this process stops");
            Ok(Key::generate())
        }
    }
}

impl Auth {
    /// Everyone is FluxUp itself.
    pub fn no_auth() -> anyhow::Result<Self> {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--no-auth): anyone who reaches this server acts with FluxUp's \
             own Kubernetes permissions. Use it on your own machine only."
        );
        Ok(Auth(Arc::new(Inner {
            mode: Mode::NoAuth,
            key: session_key()?,
            origin: None,
            secure: false,
            revocations: Revocations::new(0),
        })))
    }

    /// Logins through `settings.issuer`, whose discovery document is read now.
    pub async fn oidc(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // The token endpoint must not be followed elsewhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let issuer = IssuerUrl::new(settings.issuer.clone()).context("--oidc-issuer")?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .with_context(|| {
                format!(
                    "reading {}/.well-known/openid-configuration",
                    settings.issuer
                )
            })?;
        let public = reqwest::Url::parse(&settings.public_url).context("--public-url")?;
        let origin = public.origin().ascii_serialization();
        tracing::info!(issuer = %settings.issuer, client = %settings.client_id, %origin, "logins through OIDC");
        Ok(Auth(Arc::new(Inner {
            secure: public.scheme() == "https",
            origin: Some(origin),
            key: session_key()?,
            revocations: Revocations::new(session_epoch()?),
            mode: Mode::Oidc(Box::new(Oidc {
                settings,
                metadata,
                http,
            })),
        })))
    }

    /// `/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/me`.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/auth/login", get(login))
            .route("/auth/callback", get(callback))
            .route("/auth/logout", post(logout))
            .route("/auth/me", get(me))
            .with_state(self.clone())
    }

    fn client(&self) -> Option<(CoreClient_, &OidcSettings, &reqwest::Client)> {
        let Mode::Oidc(oidc) = &self.0.mode else {
            return None;
        };
        let Oidc {
            settings,
            metadata,
            http,
        } = oidc.as_ref();
        let redirect = RedirectUrl::new(format!(
            "{}/auth/callback",
            settings.public_url.trim_end_matches('/')
        ))
        .ok()?;
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(settings.client_id.clone()),
            settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Some((client, settings, http))
    }

    fn cookie(&self, name: &'static str, value: String, max_age: Duration) -> Cookie<'static> {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .secure(self.0.secure)
            .same_site(SameSite::Lax)
            .max_age(time::Duration::seconds(max_age.as_secs() as i64))
            .build()
    }

    /// The viewer of an ID token from our issuer, for our client, and when the token expires
    /// (seconds since the epoch).
    fn viewer_of_token(&self, token: &str) -> Result<(Viewer, u64), String> {
        let (client, settings, _) = self.client().ok_or("no OIDC issuer configured")?;
        let token: CoreIdToken = token.parse().map_err(|_| "not an ID token".to_string())?;
        // A bearer token has no login of ours behind it: any nonce.
        let claims = token
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| format!("the token was refused: {e}"))?;
        let expires = claims.expiration().timestamp().max(0) as u64;
        Ok((viewer_from_claims(settings, &token.to_string())?, expires))
    }

    /// The session in this request's cookie, if there is one that has not ended; else why not.
    fn session(&self, jar: &PrivateCookieJar) -> Result<Session, &'static str> {
        let session = jar
            .get(SESSION_COOKIE)
            .and_then(|c| serde_json::from_str::<Session>(c.value()).ok())
            .ok_or("log in first")?;
        match self.0.revocations.ended(&session, now_ms()) {
            Some(why) => Err(why),
            None => Ok(session),
        }
    }
}

/// The login a request came with, for connections that outlive it (the live feed): they check
/// it again from time to time and end when it has.
#[derive(Clone)]
pub struct Login {
    auth: Auth,
    /// A session cookie's (it can be revoked), or `None` for a bearer token (it only expires).
    session: Option<Arc<Session>>,
    /// Seconds since the epoch.
    expires: u64,
}

impl Login {
    /// Why the login no longer holds, if it does not.
    pub fn ended(&self) -> Option<&'static str> {
        match &self.session {
            Some(session) => self.auth.0.revocations.ended(session, now_ms()),
            None => (self.expires <= now()).then_some("your token expired"),
        }
    }

    /// How long until it expires.
    pub fn remaining(&self) -> Duration {
        Duration::from_millis((self.expires * 1000).saturating_sub(now_ms()))
    }

    /// Changes whenever a login is revoked in this process: the moment to check again.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.auth.0.revocations.changed.subscribe()
    }
}

/// The client type once its redirect URI is set.
type CoreClient_ = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// The user and groups a verified ID token names, from the configured claims, prefixed; refused
/// when they could impersonate someone they are not.
fn viewer_from_claims(settings: &OidcSettings, jwt: &str) -> Result<Viewer, String> {
    let payload = jwt.split('.').nth(1).ok_or("the ID token has no claims")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the ID token's claims are not base64: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the ID token's claims: {e}"))?;
    let name = claims[&settings.username_claim]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("the ID token has no {:?} claim", settings.username_claim))?;
    // Anyone can type any address into some issuers' sign-up forms (as the API server does).
    if settings.username_claim == "email" && claims["email_verified"] != true {
        return Err(format!(
            "the issuer has not verified the email address {name} (email_verified is not true)"
        ));
    }
    let prefixed = |g: &str| format!("{}{g}", settings.groups_prefix);
    let groups: Vec<String> = match &claims[&settings.groups_claim] {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|g| g.as_str())
            .filter(|g| !g.is_empty())
            .map(prefixed)
            .collect(),
        serde_json::Value::String(g) if !g.is_empty() => vec![prefixed(g)],
        _ => Vec::new(),
    };
    let name = format!("{}{name}", settings.username_prefix);
    // `system:` names are the cluster's own (`system:masters` may do anything).
    if let Some(system) = std::iter::once(&name)
        .chain(&groups)
        .find(|n| n.to_ascii_lowercase().starts_with("system:"))
    {
        return Err(format!(
            "the ID token names {system:?}, a Kubernetes system name: FluxUp never acts as one \
             (see --oidc-username-prefix and --oidc-groups-prefix)"
        ));
    }
    if !settings.allowed_groups.is_empty()
        && !groups.iter().any(|g| settings.allowed_groups.contains(g))
    {
        return Err(format!(
            "{name} is in none of the groups that may log in here ({})",
            settings.allowed_groups.join(", ")
        ));
    }
    Ok(Viewer::person(name, groups))
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(rename = "return", default)]
    return_to: Option<String>,
}

/// Only paths of this server (no open redirect): the path and query of `path` read as a URL
/// relative to ours, when it stays on our origin, also once percent-decoded; else `/`.
fn safe_return(path: Option<String>) -> String {
    fn ours(path: &str) -> Option<String> {
        // URL parsers drop tabs and newlines and read `\` as `/`: `/\t/evil` is `//evil`.
        if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == '\\') {
            return None;
        }
        let base = reqwest::Url::parse("http://fluxup.invalid/").ok()?;
        let url = base.join(path).ok()?;
        (url.origin() == base.origin()).then(|| match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        })
    }
    let Some(path) = path else {
        return "/".into();
    };
    let decoded = percent_encoding::percent_decode_str(&path).decode_utf8_lossy();
    match (ours(&path), ours(&decoded)) {
        (Some(kept), Some(_)) => kept,
        _ => "/".into(),
    }
}

async fn login(
    State(auth): State<Auth>,
    jar: PrivateCookieJar,
    Query(query): Query<LoginQuery>,
) -> Response {
    let Some((client, settings, _)) = auth.client() else {
        return Redirect::to("/").into_response();
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in &settings.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
    let pending = PendingLogin {
        state: state.secret().clone(),
        verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        return_to: safe_return(query.return_to),
    };
    let value = serde_json::to_string(&pending).unwrap_or_default();
    let jar = jar.add(auth.cookie(LOGIN_COOKIE, value, Duration::from_secs(600)));
    (jar, Redirect::to(url.as_str())).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(auth): State<Auth>,
    jar: PrivateCookieJar,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let refuse = |why: String| {
        tracing::warn!(%why, "login failed");
        (
            StatusCode::UNAUTHORIZED,
            format!("Login failed: {why}\n\nTry again: /auth/login"),
        )
            .into_response()
    };
    if let Some(error) = query.error {
        return refuse(format!(
            "{error}: {}",
            query.error_description.unwrap_or_default()
        ));
    }
    let Some((client, settings, http)) = auth.client() else {
        return refuse("no OIDC issuer configured".into());
    };
    let Some(pending) = jar
        .get(LOGIN_COOKIE)
        .and_then(|c| serde_json::from_str::<PendingLogin>(c.value()).ok())
    else {
        return refuse("no login in progress in this browser (or it took over 10 minutes)".into());
    };
    if query.state.as_deref() != Some(pending.state.as_str()) {
        return refuse("the state does not match this browser's login".into());
    }
    let Some(code) = query.code else {
        return refuse("the issuer sent no code".into());
    };
    let exchange = match client.exchange_code(AuthorizationCode::new(code)) {
        Ok(request) => request.set_pkce_verifier(PkceCodeVerifier::new(pending.verifier)),
        Err(e) => return refuse(e.to_string()),
    };
    let tokens = match exchange.request_async(http).await {
        Ok(tokens) => tokens,
        Err(e) => return refuse(format!("exchanging the code: {e}")),
    };
    let Some(id_token) = tokens.id_token() else {
        return refuse("the issuer sent no ID token".into());
    };
    if let Err(e) = id_token.claims(&client.id_token_verifier(), &Nonce::new(pending.nonce)) {
        return refuse(format!("the ID token was refused: {e}"));
    }
    let viewer = match viewer_from_claims(settings, &id_token.to_string()) {
        Ok(viewer) => viewer,
        Err(why) => return refuse(why),
    };
    tracing::info!(user = %viewer.name, groups = ?viewer.groups, "logged in");
    let session = Session {
        name: viewer.name,
        groups: viewer.groups,
        expires: now() + SESSION_HOURS * 3600,
        issued: now_ms(),
        epoch: auth.0.revocations.epoch,
    };
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/"))
        .add(auth.cookie(
            SESSION_COOKIE,
            serde_json::to_string(&session).unwrap_or_default(),
            Duration::from_secs(SESSION_HOURS * 3600),
        ));
    (jar, Redirect::to(&pending.return_to)).into_response()
}

/// Ends this browser's session and, when asked from our own pages, every other session of the
/// same user in this process (a stolen cookie with it).
async fn logout(State(auth): State<Auth>, jar: PrivateCookieJar, headers: HeaderMap) -> Response {
    if let Ok(session) = auth.session(&jar)
        && same_origin(&auth, &headers)
    {
        auth.0.revocations.revoke(&session.name, now_ms());
        tracing::info!(user = %session.name, "logged out: the user's sessions are revoked");
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    (jar, Redirect::to("/")).into_response()
}

/// Who the server thinks is asking.
async fn me(request: Request) -> Response {
    match request.extensions().get::<Viewer>() {
        Some(v) => Json(serde_json::json!({"user": v.name, "groups": v.groups})).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// Paths anyone may reach: probes, the login itself and static assets.
fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/favicon.svg")
        || (path.starts_with("/auth/") && path != "/auth/me")
        || path.starts_with("/pkg/")
}

/// Paths of programs rather than pages: refused with 401 instead of sent to the login.
fn api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/auth/me"
}

/// Whether a `Host` names this machine's loopback (`localhost`, `127.0.0.1`, `[::1]`, any
/// port): all a server without logins answers, so another site's name resolving to 127.0.0.1
/// (DNS rebinding) gets nothing.
fn loopback_host(host: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, after)) => {
                ip == "::1" && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok))
            }
            None => false,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

/// The host a request names: its `Host`, or the URI's authority (HTTP/2).
fn host_of(request: &Request) -> &str {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

/// Whether a request that acts on the user's behalf came from FluxUp's own pages.
fn same_origin(auth: &Auth, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    match &auth.0.origin {
        Some(ours) => origin == ours,
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
    }
}

/// Finds the viewer of every request and refuses what may not go on.
pub async fn identify(
    State(auth): State<Auth>,
    jar: PrivateCookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if matches!(auth.0.mode, Mode::NoAuth) && !loopback_host(host_of(&request)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "FluxUp runs without logins (--no-auth) and answers only requests for localhost",
        );
    }
    if public(&path) {
        return next.run(request).await;
    }
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || path == "/api/ws";
    let mut login = None;
    let viewer = match &auth.0.mode {
        Mode::NoAuth => {
            // Even without logins, another site's page must not act through a browser here.
            let headers = request.headers();
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
            if changes
                && (cross_site
                    || (headers.contains_key(header::ORIGIN) && !same_origin(&auth, headers)))
            {
                return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
            }
            Viewer::fluxup()
        }
        Mode::Oidc(_) => {
            let bearer = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::to_string);
            if let Some(token) = bearer {
                match auth.viewer_of_token(&token) {
                    Ok((viewer, expires)) => {
                        login = Some(Login {
                            auth: auth.clone(),
                            session: None,
                            expires,
                        });
                        viewer
                    }
                    Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
                }
            } else {
                let session = match auth.session(&jar) {
                    Ok(session) => session,
                    Err(why) if api(&path) => {
                        return refuse(
                            StatusCode::UNAUTHORIZED,
                            &format!("{why}: log in at /auth/login"),
                        );
                    }
                    Err(_) => {
                        let target = request
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "/".into());
                        let login = format!(
                            "/auth/login?return={}",
                            form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
                        );
                        return Redirect::to(&login).into_response();
                    }
                };
                // A session cookie rides along with any request the browser makes, including
                // another site's: what changes something must come from our pages.
                if changes && !same_origin(&auth, request.headers()) {
                    return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
                }
                let viewer = Viewer::person(session.name.clone(), session.groups.clone());
                login = Some(Login {
                    auth: auth.clone(),
                    expires: session.expires,
                    session: Some(Arc::new(session)),
                });
                viewer
            }
        }
    };
    request.extensions_mut().insert(viewer);
    if let Some(login) = login {
        request.extensions_mut().insert(login);
    }
    next.run(request).await
}

impl axum::extract::FromRef<Auth> for Key {
    fn from_ref(auth: &Auth) -> Key {
        auth.0.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_only_to_our_own_paths() {
        assert_eq!(safe_return(Some("/apps/a/b?x=1".into())), "/apps/a/b?x=1");
        assert_eq!(safe_return(Some("/settings#me".into())), "/settings");
        assert_eq!(safe_return(Some("/a/../snapshots".into())), "/snapshots");
        for evil in [
            "//evil.example",
            "//evil",
            "https://evil.example",
            "https://evil",
            "/\\evil.example",
            "/\\\\evil",
            "\\\\evil",
            "/%09/evil.example",
            "/%5C/evil.example",
            "/%2F/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n//evil.example",
            "/\0",
            "javascript:alert(1)",
            " /apps",
            "apps",
            "",
        ] {
            assert_eq!(safe_return(Some(evil.into())), "/", "{evil:?}");
        }
        assert_eq!(safe_return(None), "/");
    }

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            scopes: Vec::new(),
            username_claim: "email".into(),
            groups_claim: "groups".into(),
            username_prefix: "oidc:".into(),
            groups_prefix: "oidc:".into(),
            allowed_groups: Vec::new(),
            public_url: String::new(),
        }
    }

    fn viewer(settings: &OidcSettings, claims: serde_json::Value) -> Result<Viewer, String> {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        viewer_from_claims(settings, &format!("h.{claims}.s"))
    }

    #[test]
    fn users_and_groups_come_from_the_configured_claims() {
        let alice = serde_json::json!({"email": "alice@example.com", "email_verified": true,
            "groups": ["ops", "dev", ""], "sub": "x"});
        let v = viewer(&settings(), alice.clone()).unwrap();
        assert_eq!(v.name, "oidc:alice@example.com");
        assert_eq!(v.groups, ["oidc:ops", "oidc:dev"]);
        let separate = OidcSettings {
            username_prefix: "people:".into(),
            groups_prefix: "teams:".into(),
            ..settings()
        };
        let v = viewer(&separate, alice).unwrap();
        assert_eq!(
            (v.name.as_str(), v.groups[0].as_str()),
            ("people:alice@example.com", "teams:ops")
        );
        let one_group =
            serde_json::json!({"email": "a@x", "email_verified": true, "groups": "ops"});
        assert_eq!(viewer(&settings(), one_group).unwrap().groups, ["oidc:ops"]);
        let no_email = serde_json::json!({"sub": "x"});
        assert!(
            viewer(&settings(), no_email)
                .unwrap_err()
                .contains("\"email\"")
        );
    }

    #[test]
    fn an_email_must_be_verified_to_name_a_user() {
        for verified in [
            serde_json::json!(false),
            serde_json::json!("true"),
            serde_json::Value::Null,
        ] {
            let mut claims = serde_json::json!({"email": "mallory@example.com"});
            if !verified.is_null() {
                claims["email_verified"] = verified.clone();
            }
            let why = viewer(&settings(), claims).unwrap_err();
            assert!(
                why.contains("not verified the email address mallory@example.com"),
                "{verified}: {why}"
            );
        }
        // Another claim needs no verified email.
        let by_sub = OidcSettings {
            username_claim: "sub".into(),
            ..settings()
        };
        assert_eq!(
            viewer(&by_sub, serde_json::json!({"sub": "u1"}))
                .unwrap()
                .name,
            "oidc:u1"
        );
    }

    #[test]
    fn system_names_are_never_impersonated() {
        let unprefixed = OidcSettings {
            username_prefix: String::new(),
            groups_prefix: String::new(),
            ..settings()
        };
        let masters = serde_json::json!({"email": "eve@example.com", "email_verified": true,
            "groups": ["dev", "system:masters"]});
        let why = viewer(&unprefixed, masters.clone()).unwrap_err();
        assert!(
            why.contains("\"system:masters\"") && why.contains("system name"),
            "{why}"
        );
        // Prefixed, it is an ordinary group no RBAC binding names by accident.
        assert!(
            viewer(&settings(), masters)
                .unwrap()
                .groups
                .contains(&"oidc:system:masters".to_string())
        );
        let by_sub = OidcSettings {
            username_claim: "sub".into(),
            ..unprefixed
        };
        for user in ["system:admin", "System:kube-proxy"] {
            let why = viewer(&by_sub, serde_json::json!({"sub": user})).unwrap_err();
            assert!(why.contains(user), "{why}");
        }
        let system_prefix = OidcSettings {
            groups_prefix: "system:".into(),
            ..settings()
        };
        let dev = serde_json::json!({"email": "a@x", "email_verified": true, "groups": ["dev"]});
        assert!(
            viewer(&system_prefix, dev)
                .unwrap_err()
                .contains("system:dev")
        );
    }

    #[test]
    fn only_the_allowed_groups_log_in_when_set() {
        let allowed = OidcSettings {
            allowed_groups: vec!["oidc:ops".into(), "oidc:sre".into()],
            ..settings()
        };
        let claims = |groups: serde_json::Value| serde_json::json!({"email": "a@x", "email_verified": true, "groups": groups});
        assert!(viewer(&allowed, claims(serde_json::json!(["dev", "sre"]))).is_ok());
        for groups in [
            serde_json::json!(["dev"]),
            serde_json::json!([]),
            serde_json::Value::Null,
        ] {
            let why = viewer(&allowed, claims(groups)).unwrap_err();
            assert!(
                why.contains("none of the groups") && why.contains("oidc:ops, oidc:sre"),
                "{why}"
            );
        }
        // Matched with the prefix: an unprefixed name is not a match.
        let unprefixed = OidcSettings {
            allowed_groups: vec!["ops".into()],
            ..settings()
        };
        assert!(viewer(&unprefixed, claims(serde_json::json!(["ops"]))).is_err());
    }

    #[test]
    fn without_logins_only_loopback_names_are_answered() {
        for host in [
            "localhost",
            "localhost:3000",
            "LOCALHOST:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:3000",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "localhost:",
            "localhost:abc",
            "127.0.0.1:3000:1",
            "[::1]x",
            "[::2]:3000",
            "[::1",
            "0.0.0.0:3000",
            "10.0.0.1:3000",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    fn session(name: &str, issued: u64, epoch: u64) -> Session {
        Session {
            name: name.into(),
            groups: Vec::new(),
            expires: issued / 1000 + 3600,
            issued,
            epoch,
        }
    }

    #[test]
    fn logouts_and_epochs_end_sessions() {
        let t = 1_700_000_000_000;
        let r = Revocations::new(2);
        assert_eq!(r.ended(&session("a", t, 2), t + 1), None);
        assert_eq!(
            r.ended(&session("a", t, 3), t + 1),
            None,
            "a newer replica's"
        );
        assert!(
            r.ended(&session("a", t, 1), t + 1)
                .unwrap()
                .contains("epoch")
        );
        assert!(
            r.ended(&session("a", t, 2), t + 3_600_000)
                .unwrap()
                .contains("expired")
        );
        let changed = r.changed.subscribe();
        r.revoke("a", t + 10);
        assert!(
            changed.has_changed().unwrap(),
            "open connections hear of it"
        );
        assert_eq!(r.ended(&session("a", t, 2), t + 11), Some("you logged out"));
        assert_eq!(
            r.ended(&session("a", t + 10, 2), t + 11),
            Some("you logged out")
        );
        assert_eq!(
            r.ended(&session("a", t + 11, 2), t + 12),
            None,
            "a new login"
        );
        assert_eq!(r.ended(&session("b", t, 2), t + 11), None, "others stay");
    }

    #[test]
    fn remembered_logouts_are_bounded() {
        let t = 1_700_000_000_000;
        let r = Revocations::new(0);
        for i in 0..MAX_REVOKED_USERS {
            r.revoke(&format!("user{i}"), t + i as u64);
        }
        assert_eq!(r.users.lock().unwrap().len(), MAX_REVOKED_USERS);
        // Logouts older than a session's lifetime are forgotten first.
        let later = t + SESSION_HOURS * 3600 * 1000 + 5;
        r.revoke("late", later);
        assert_eq!(r.users.lock().unwrap().len(), MAX_REVOKED_USERS - 5);
        assert_eq!(r.all_before.load(Ordering::Relaxed), 0);

        // Full of recent ones: every session until now ends, so none is let back in.
        let r = Revocations::new(0);
        for i in 0..MAX_REVOKED_USERS {
            r.revoke(&format!("user{i}"), t);
        }
        r.revoke("one-more", t + 1);
        assert_eq!(r.users.lock().unwrap().len(), 1);
        assert!(r.ended(&session("user7", t - 1, 0), t + 2).is_some());
        assert!(r.ended(&session("someone", t + 1, 0), t + 2).is_some());
        assert_eq!(r.ended(&session("user7", t + 2, 0), t + 3), None);
    }
}
