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
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SESSION_COOKIE: &str = "fluxup_session";
const LOGIN_COOKIE: &str = "fluxup_login";
/// How long a login lasts.
const SESSION_HOURS: u64 = 8;

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
    /// Prefixed to usernames and groups, as the API server's `--oidc-username-prefix` would.
    pub prefix: String,
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    /// The viewer of an ID token from our issuer, for our client.
    fn viewer_of_token(&self, token: &str) -> Result<Viewer, String> {
        let (client, settings, _) = self.client().ok_or("no OIDC issuer configured")?;
        let token: CoreIdToken = token.parse().map_err(|_| "not an ID token".to_string())?;
        // A bearer token has no login of ours behind it: any nonce.
        token
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .map_err(|e| format!("the token was refused: {e}"))?;
        viewer_from_claims(settings, &token.to_string())
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

/// The user and groups a verified ID token names, from the configured claims.
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
    let groups = match &claims[&settings.groups_claim] {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|g| g.as_str())
            .map(|g| format!("{}{g}", settings.prefix))
            .collect(),
        serde_json::Value::String(g) => vec![format!("{}{g}", settings.prefix)],
        _ => Vec::new(),
    };
    Ok(Viewer::person(format!("{}{name}", settings.prefix), groups))
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(rename = "return", default)]
    return_to: Option<String>,
}

/// Only paths of this server: never `//host` or `https://host` (an open redirect).
fn safe_return(path: Option<String>) -> String {
    match path {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
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

async fn logout(jar: PrivateCookieJar) -> Response {
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

/// Paths anyone may reach: probes, metrics, the login itself and static assets.
fn public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/favicon.svg")
        || path.starts_with("/auth/")
        || path.starts_with("/pkg/")
}

/// Paths of programs rather than pages: refused with 401 instead of sent to the login.
fn api(path: &str) -> bool {
    path.starts_with("/api/")
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
    if public(&path) {
        return next.run(request).await;
    }
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || path == "/api/ws";
    let viewer = match &auth.0.mode {
        Mode::NoAuth => {
            // Even without logins, another site's page must not act through a browser here.
            if changes
                && request.headers().contains_key(header::ORIGIN)
                && !same_origin(&auth, request.headers())
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
                    Ok(viewer) => viewer,
                    Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
                }
            } else {
                let session = jar
                    .get(SESSION_COOKIE)
                    .and_then(|c| serde_json::from_str::<Session>(c.value()).ok())
                    .filter(|s| s.expires > now());
                let Some(session) = session else {
                    if api(&path) {
                        return refuse(StatusCode::UNAUTHORIZED, "log in first: /auth/login");
                    }
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
                };
                // A session cookie rides along with any request the browser makes, including
                // another site's: what changes something must come from our pages.
                if changes && !same_origin(&auth, request.headers()) {
                    return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
                }
                Viewer::person(session.name, session.groups)
            }
        }
    };
    request.extensions_mut().insert(viewer);
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
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(safe_return(Some(evil.into())), "/", "{evil}");
        }
        assert_eq!(safe_return(None), "/");
    }

    #[test]
    fn users_and_groups_come_from_the_configured_claims() {
        let settings = OidcSettings {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            scopes: Vec::new(),
            username_claim: "email".into(),
            groups_claim: "groups".into(),
            prefix: "oidc:".into(),
            public_url: String::new(),
        };
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"email":"alice@example.com","groups":["ops","dev"],"sub":"x"}"#);
        let viewer = viewer_from_claims(&settings, &format!("h.{claims}.s")).unwrap();
        assert_eq!(viewer.name, "oidc:alice@example.com");
        assert_eq!(viewer.groups, ["oidc:ops", "oidc:dev"]);
        let no_email = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        assert!(
            viewer_from_claims(&settings, &format!("h.{no_email}.s"))
                .unwrap_err()
                .contains("\"email\"")
        );
    }
}
