//! The HTTP server's defences, against the real router without Kubernetes: no-auth mode only
//! for localhost (DNS rebinding, cross-site requests), the CSP nonce on every inline script,
//! `/metrics` off the dashboard port, bounded WebSocket messages, and OIDC logins through a
//! small fake issuer (verified email, no `system:` names, logout revoking open feeds).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse as _;
use base64::Engine as _;
use fluxup::auth::{Auth, OidcSettings};
use futures::{SinkExt as _, StreamExt as _};
use openidconnect::PrivateSigningKey as _;
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tower::ServiceExt as _;

fn no_auth_router() -> Router {
    let options = fluxup::web::leptos_options().expect("Leptos options");
    fluxup::web::router(options, None, Auth::no_auth().expect("no-auth"))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn call(router: Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .expect("a body");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str, host: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn without_logins_only_requests_for_localhost_are_answered() {
    for host in [
        "evil.example",
        "evil.example:3000",
        "localhost.evil.example",
        "10.0.0.1:3000",
    ] {
        for path in ["/", "/readyz", "/healthz", "/api/v1/apps", "/pkg/fluxup.js"] {
            let answer = call(no_auth_router(), get(path, host)).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{host}{path}");
            assert!(answer.body.contains("localhost"), "{}", answer.body);
        }
    }
    let no_host = Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(
        call(no_auth_router(), no_host).await.status,
        StatusCode::FORBIDDEN
    );
    for host in [
        "localhost",
        "localhost:3000",
        "127.0.0.1:3000",
        "[::1]:3000",
        "[::1]",
    ] {
        let answer = call(no_auth_router(), get("/readyz", host)).await;
        assert_eq!(answer.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn without_logins_other_sites_cannot_act() {
    let host = "127.0.0.1:3000";
    let post = |extra: &[(&str, &str)]| {
        let mut request = Request::post("/api/v1/apps/demo/webapp/upgrade")
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.body(Body::from(r#"{"version":"1.0.1"}"#)).unwrap()
    };
    for refused in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "http://localhost:3000")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![
            ("origin", "http://127.0.0.1:3000"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let answer = call(no_auth_router(), post(&refused)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{refused:?}");
        assert!(answer.body.contains("cross-site"), "{}", answer.body);
    }
    // Our own pages, and programs that send no Origin, get through (to "not connected").
    for allowed in [
        vec![
            ("origin", "http://127.0.0.1:3000"),
            ("sec-fetch-site", "same-origin"),
        ],
        vec![],
    ] {
        let answer = call(no_auth_router(), post(&allowed)).await;
        assert_ne!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{allowed:?}: {}",
            answer.body
        );
    }
    // The live feed counts as acting; reading pages does not.
    let ws = Request::get("/api/ws")
        .header(header::HOST, host)
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        call(no_auth_router(), ws).await.status,
        StatusCode::FORBIDDEN
    );
    let page = Request::get("/readyz")
        .header(header::HOST, host)
        .header("sec-fetch-site", "cross-site")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(no_auth_router(), page).await.status, StatusCode::OK);
}

/// The nonce a response's Content-Security-Policy allows scripts with.
fn nonce_of(answer: &Answer) -> String {
    let csp = answer.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    let scripts = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap_or_else(|| panic!("no script-src in {csp}"));
    assert!(!scripts.contains("'unsafe-inline'"), "{csp}");
    assert!(scripts.contains("'wasm-unsafe-eval'"), "{csp}");
    let nonce = scripts
        .split_whitespace()
        .find_map(|s| s.strip_prefix("'nonce-")?.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no nonce in {csp}"));
    assert!(nonce.len() >= 16, "{nonce}");
    nonce.to_string()
}

#[tokio::test]
async fn every_inline_script_carries_the_responses_nonce() {
    let mut nonces = Vec::new();
    for path in [
        "/",
        "/settings",
        "/snapshots",
        "/apps/demo/webapp",
        "/no-such-page",
    ] {
        let answer = call(no_auth_router(), get(path, "127.0.0.1:3000")).await;
        let nonce = nonce_of(&answer);
        let mut inline = 0;
        for tag in answer.body.split("<script").skip(1) {
            let tag = &tag[..tag.find('>').expect("a closed tag")];
            if tag.contains(" src=") {
                continue;
            }
            inline += 1;
            assert!(
                tag.contains(&format!(" nonce=\"{nonce}\"")),
                "{path}: <script{tag}> without the nonce {nonce}"
            );
        }
        assert!(
            inline >= 1,
            "{path}: no inline script (the hydration loader):\n{}",
            answer.body
        );
        nonces.push(nonce);
    }
    // Other responses (refusals, assets) carry a policy too.
    let refused = call(no_auth_router(), get("/", "evil.example")).await;
    nonces.push(nonce_of(&refused));
    let mut unique = nonces.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        nonces.len(),
        "one nonce per response: {nonces:?}"
    );
}

#[tokio::test]
async fn metrics_are_served_apart_from_the_dashboard() {
    let answer = call(no_auth_router(), get("/metrics", "127.0.0.1:3000")).await;
    assert_ne!(answer.status, StatusCode::OK);
    assert!(!answer.body.contains("# EOF"), "{}", answer.body);
    let metrics = call(
        fluxup::health::metrics_routes(),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.headers[header::CONTENT_TYPE],
        fluxup_operator::metrics::CONTENT_TYPE
    );
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
}

/// Serves `router` on a free loopback port; its address.
async fn serve(listener: tokio::net::TcpListener, router: Router) -> String {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr.to_string()
}

async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn the_live_feed_refuses_large_messages() {
    let addr = serve(listener().await, no_auth_router()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/ws"))
        .await
        .expect("the feed opens");
    ws.send(Message::text("[]")).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        quiet.is_err(),
        "a small message keeps the feed open: {quiet:?}"
    );
    ws.send(Message::text("x".repeat(100 * 1024)))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the server ends the feed");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
}

// ---- OIDC, through a fake issuer ----------------------------------------------------------

/// A test-only key: it signs the fake issuer's ID tokens and nothing else.
const TEST_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpAIBAAKCAQEAxuEVyqThWl8G3d0Q7A+D/pyz+pMcQOzh/KPqFXlQiAe/0uAm\n\
oKthTWllPfQYbUw12p8BIpVmY68sAb5GVdv2qEFMumEjDFpNI/xxdEKKA0BZgBpk\n\
d0loLZpocctKGHPBS3XgV9SW08wHwFovUvhV2u99SNn57CPIJR62PobAP72NxO5N\n\
+CV4QTVsa5mIjcJ5EIreI83IbRP2CZSfK9QV1rYllwh/dldGMvEyF69Rc5dJxaWk\n\
lT5AITFnrwCd9Djh6iFtcaS6oFCDKD/LJ4Qjtf36vPqfA8B3pUOSyzDeYGHNBgN7\n\
iAfV8AXvpbs2p85SD+kX41RWw1fpnBFeCmRXxwIDAQABAoIBACJYgODsNJbczlzG\n\
bsO1sj/oZBSkDz8PKb/ttuFagBPd8rzCRSl+L2GlD/zxCL7naG2HBDUqw/H3MIxk\n\
hdUSFbjc/hk56Uma1rOeRyGi1B7XoB1FcZBANyOZBOySBQvQAdO8WbARYLLXC4em\n\
i4GyrXEP5v0L1+N2EnyGn0aREuZu0b5dfw/ckIYWt+7BD/2rWMgMgLDbzrDoCOQV\n\
p0sf1vn81xZ9Bb/o7cD9LcOfs7yjpgvGT7vnrrsENw4khZEiCYerRIIIsdP/pPPY\n\
an5PzTP3e7quzxMtO23tWnGa4wabcha29aJsheSZx7/grl19JrxSKc41O3aEoJDY\n\
zb4wYJECgYEA9AFzL3AanZ3Z+zLBCOZMQ3XfxV6jfPAey4bXHlqxdr3F6hmFipYV\n\
zQ8Mk/GSBcwEZvAcD6//yKhLBpUfcDEdomf6eRw0NMvlyct9HGmliPd3GM/9I+Tt\n\
abhDCAAgH1212uymZlvelcB/58O3S31PvRn8+PWH3lAlXoKRi8N2Wy0CgYEA0KfE\n\
dmXCvIpQCrm0kCY7kjgoKYXGpX60ndGfV/61jRjC+GsBwJr7RZ3JmAYNkTjvssJw\n\
ZTXHv6fhZsr+opLYx2i15sc69uiDrHssqrL16bBxRArhTagouIk8P1w/jYgoSc+x\n\
ZdhgnU351NE47oJ+H9or25taKY+mX13eIOxFR0MCgYAXgCw/3WQy2gkskG7XFJcz\n\
yB6NO9gzKE1O/OWrHsEI1q5BJcQe3OWsok5r0VBnDoc+AtIxEJpqEQtozuQAQjrA\n\
cZNGJtlAXIL9NIQQQHyY/HyT/zQ6SMo07HJISvrNCpGBTFmaci617ZxkDg2RT7hm\n\
ViJvN/amCsIOoDS0aVb04QKBgQCDoIIoapOJmvtZeMM2eFf2KuTzJMgm2KKaOIX7\n\
3dur8eX1DpQha+N9jEeDVrYyWaekrlJ3FpE3D3H7Ba3S4y5LxXuS5TYGUrHWGjIY\n\
USMe08bwNKji82UU3MYb9lbFMxKvVY1EgVaZhXpITeBLXhiwgVJPjFY5h7xdxvp8\n\
7G/bvwKBgQCjcylsOmE6nhcMh9ybFtG/dbg8q/QnMln66e7MfOTIWw0DKpPfXiTQ\n\
CWnjbwjAU9uPks0lmLAwfSSPDrdFzBvhkYzTc8CfqfoBMQbDK6Fj5mlgHXtWMdP7\n\
/lBoHRkhV3XLtTcs/HQAV02tlaw6LSXpv2cOPs/8U3113GobHauAFQ==\n\
-----END RSA PRIVATE KEY-----";

/// An OIDC issuer with just what FluxUp uses: discovery, keys, and a token endpoint that hands
/// out the ID token the test prepared for each code.
struct Issuer {
    url: String,
    key: Arc<CoreRsaPrivateSigningKey>,
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = listener().await;
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = Arc::new(
            CoreRsaPrivateSigningKey::from_pem(
                TEST_KEY,
                Some(openidconnect::JsonWebKeyId::new("test".into())),
            )
            .unwrap(),
        );
        let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let discovery = json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/keys"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let keys = json!({"keys": [key.as_verification_key()]});
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move { axum::Json(keys) }),
            )
            .route(
                "/token",
                axum::routing::post({
                    let tokens = tokens.clone();
                    move |axum::Form(form): axum::Form<HashMap<String, String>>| async move {
                        let token = tokens.lock().unwrap().remove(&form["code"]);
                        match token {
                            Some(id_token) => axum::Json(json!({"access_token": "at",
                                "token_type": "Bearer", "expires_in": 300, "id_token": id_token}))
                            .into_response(),
                            None => (
                                StatusCode::BAD_REQUEST,
                                axum::Json(json!({"error": "invalid_grant"})),
                            )
                                .into_response(),
                        }
                    }
                }),
            );
        serve(listener, router).await;
        Issuer { url, key, tokens }
    }

    /// An ID token for FluxUp with these claims (besides the usual ones).
    fn id_token(&self, claims: &Value, nonce: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut all = json!({"iss": self.url, "aud": "fluxup", "sub": "user-1", "iat": now,
            "exp": now + 300, "nonce": nonce});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"RS256","kid":"test","typ":"JWT"}"#),
            b64(all.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(
                &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                input.as_bytes(),
            )
            .unwrap();
        format!("{input}.{}", b64(&signature))
    }
}

/// FluxUp with logins through `issuer`, served on a free port; its URL.
async fn fluxup_with(issuer: &Issuer, tune: impl FnOnce(&mut OidcSettings)) -> String {
    let listener = listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut settings = OidcSettings {
        issuer: issuer.url.clone(),
        client_id: "fluxup".into(),
        client_secret: Some("secret".into()),
        scopes: vec!["email".into(), "groups".into()],
        username_claim: "email".into(),
        groups_claim: "groups".into(),
        username_prefix: "oidc:".into(),
        groups_prefix: "oidc:".into(),
        allowed_groups: Vec::new(),
        public_url: url.clone(),
    };
    tune(&mut settings);
    let auth = Auth::oidc(settings)
        .await
        .expect("the issuer is discovered");
    let options = fluxup::web::leptos_options().unwrap();
    serve(listener, fluxup::web::router(options, None, auth)).await;
    url
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of the cookie a response sets.
fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|c| c.starts_with(&format!("{name}=")) && c.len() > name.len() + 1)
        .map(str::to_string)
}

/// Goes through the login with these claims, asking to return to `return_to` (as sent in
/// the query): the callback's answer.
async fn through_login(
    fluxup: &str,
    issuer: &Issuer,
    claims: &Value,
    return_to: &str,
) -> reqwest::Response {
    let client = http();
    let login = client
        .get(format!("{fluxup}/auth/login?return={return_to}"))
        .send()
        .await
        .unwrap();
    let pending = cookie(&login, "fluxup_login").expect("a login cookie");
    let to_issuer =
        reqwest::Url::parse(login.headers()[header::LOCATION].to_str().unwrap()).unwrap();
    assert!(
        to_issuer
            .as_str()
            .starts_with(&format!("{}/auth?", issuer.url)),
        "{to_issuer}"
    );
    let query: HashMap<_, _> = to_issuer.query_pairs().into_owned().collect();
    let code = format!("code-{}", query["state"]);
    let token = issuer.id_token(claims, &query["nonce"]);
    issuer.tokens.lock().unwrap().insert(code.clone(), token);
    client
        .get(format!(
            "{fluxup}/auth/callback?code={code}&state={}",
            query["state"]
        ))
        .header(header::COOKIE, pending)
        .send()
        .await
        .unwrap()
}

/// Logs in through the issuer with these claims: the session cookie, or the refusal's status
/// and text.
async fn log_in(fluxup: &str, issuer: &Issuer, claims: Value) -> Result<String, (u16, String)> {
    let back = through_login(fluxup, issuer, &claims, "/settings").await;
    if back.status() != StatusCode::SEE_OTHER {
        return Err((back.status().as_u16(), back.text().await.unwrap()));
    }
    assert_eq!(back.headers()[header::LOCATION], "/settings");
    Ok(cookie(&back, "fluxup_session").expect("a session cookie"))
}

/// `/auth/me` with these headers: status and body.
async fn me(fluxup: &str, headers: &[(header::HeaderName, String)]) -> (u16, String) {
    let mut request = http().get(format!("{fluxup}/auth/me"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn alice() -> Value {
    json!({"email": "alice@example.com", "email_verified": true, "groups": ["ops"]})
}

#[tokio::test]
async fn a_login_names_a_prefixed_verified_user() {
    let issuer = Issuer::start().await;
    let fluxup = fluxup_with(&issuer, |_| {}).await;
    let session = log_in(&fluxup, &issuer, alice()).await.unwrap();
    let (status, body) = me(&fluxup, &[(header::COOKIE, session)]).await;
    assert_eq!(status, 200, "{body}");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        who,
        json!({"user": "oidc:alice@example.com", "groups": ["oidc:ops"]})
    );
    assert_eq!(me(&fluxup, &[]).await.0, 401);

    for (claims, why) in [
        (
            json!({"email": "alice@example.com", "groups": ["ops"]}),
            "not verified",
        ),
        (
            json!({"email": "alice@example.com", "email_verified": false}),
            "not verified",
        ),
    ] {
        let (status, text) = log_in(&fluxup, &issuer, claims).await.unwrap_err();
        assert_eq!(status, 401);
        assert!(text.contains(why), "{text}");
    }
}

#[tokio::test]
async fn system_groups_are_never_impersonated() {
    let issuer = Issuer::start().await;
    let fluxup = fluxup_with(&issuer, |s| s.groups_prefix = String::new()).await;
    let masters = json!({"email": "eve@example.com", "email_verified": true,
        "groups": ["dev", "system:masters"]});
    let (status, text) = log_in(&fluxup, &issuer, masters.clone()).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(text.contains("system:masters"), "{text}");
    // Nor through a bearer token.
    let token = issuer.id_token(&masters, "any");
    let (status, body) = me(
        &fluxup,
        &[(header::AUTHORIZATION, format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("system:masters"), "{body}");
    let token = issuer.id_token(&alice(), "any");
    let (status, body) = me(
        &fluxup,
        &[(header::AUTHORIZATION, format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(
        (status, body.contains("\"oidc:alice@example.com\"")),
        (200, true),
        "{body}"
    );
}

#[tokio::test]
async fn only_the_allowed_groups_log_in() {
    let issuer = Issuer::start().await;
    let fluxup = fluxup_with(&issuer, |s| s.allowed_groups = vec!["oidc:sre".into()]).await;
    let (status, text) = log_in(&fluxup, &issuer, alice()).await.unwrap_err();
    assert_eq!(status, 401);
    assert!(text.contains("none of the groups"), "{text}");
    let token = issuer.id_token(&alice(), "any");
    let (status, _) = me(
        &fluxup,
        &[(header::AUTHORIZATION, format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 401);
    let sre = json!({"email": "bob@example.com", "email_verified": true, "groups": ["sre"]});
    assert!(log_in(&fluxup, &issuer, sre).await.is_ok());
}

#[tokio::test]
async fn logging_out_revokes_the_users_sessions_and_closes_their_feeds() {
    let issuer = Issuer::start().await;
    let fluxup = fluxup_with(&issuer, |_| {}).await;
    let here = log_in(&fluxup, &issuer, alice()).await.unwrap();
    let elsewhere = log_in(&fluxup, &issuer, alice()).await.unwrap();
    let bob = log_in(
        &fluxup,
        &issuer,
        json!({"email": "bob@example.com", "email_verified": true}),
    )
    .await
    .unwrap();

    let mut feed = format!("{}/api/ws", fluxup.replace("http:", "ws:"))
        .into_client_request()
        .unwrap();
    feed.headers_mut()
        .insert("cookie", elsewhere.parse().unwrap());
    feed.headers_mut().insert("origin", fluxup.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(feed)
        .await
        .expect("the feed opens");

    // Another site cannot log the user out everywhere.
    let cross = http()
        .post(format!("{fluxup}/auth/logout"))
        .header(header::COOKIE, &here)
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        me(&fluxup, &[(header::COOKIE, elsewhere.clone())]).await.0,
        200
    );

    let out = http()
        .post(format!("{fluxup}/auth/logout"))
        .header(header::COOKIE, &here)
        .header(header::ORIGIN, &fluxup)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the feed closes at once");
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(
                frame.code,
                tungstenite::protocol::frame::coding::CloseCode::Policy
            );
            assert_eq!(frame.reason.as_str(), "you logged out");
        }
        other => panic!("{other:?}"),
    }
    for cookie in [here, elsewhere] {
        let (status, body) = me(&fluxup, &[(header::COOKIE, cookie)]).await;
        assert_eq!(status, 401);
        assert!(body.contains("you logged out"), "{body}");
    }
    assert_eq!(
        me(&fluxup, &[(header::COOKIE, bob)]).await.0,
        200,
        "others stay"
    );
    let again = log_in(&fluxup, &issuer, alice()).await.unwrap();
    assert_eq!(
        me(&fluxup, &[(header::COOKIE, again)]).await.0,
        200,
        "a new login"
    );
}

#[tokio::test]
async fn redirects_after_login_stay_here() {
    let issuer = Issuer::start().await;
    let fluxup = fluxup_with(&issuer, |_| {}).await;
    for evil in [
        "//evil.example",
        "/%09/evil.example",
        "/%5Cevil.example",
        "https://evil.example",
    ] {
        let back = through_login(&fluxup, &issuer, &alice(), &evil.replace('%', "%25")).await;
        assert_eq!(back.headers()[header::LOCATION], "/", "{evil}");
    }
}
