//! The HTTP server: Leptos pages and server functions, static assets, health probes, with
//! compression and security headers around all of it; and `/metrics` on a listener of its own.

use crate::auth::{Auth, OidcSettings};
use crate::cli::ServeArgs;
use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use fluxup_app::backend::Backend;
use fluxup_app::{App, shell};
use fluxup_operator::api_requests::ApiRequests;
use leptos::nonce::Nonce;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// Leptos settings from `LEPTOS_*` variables (set by cargo-leptos and by our scripts).
pub fn leptos_options() -> anyhow::Result<LeptosOptions> {
    let mut options = get_configuration(None)
        .context("reading LEPTOS_* settings")?
        .leptos_options;
    if options.output_name.is_empty() {
        options.output_name = "fluxup".into();
    }
    Ok(options)
}

/// Scripts from FluxUp only, inline ones (Leptos' hydration loader and the streamed parts of
/// pages) only with this response's nonce; WebAssembly allowed, no framing, no form posts
/// elsewhere. Styles may be inline (no script runs from them).
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; form-action 'self'; base-uri 'self'; object-src 'none'"
    )
}

/// A fresh nonce for each response: in the request's extensions for the pages' inline scripts
/// (see [`provide_request_nonce`]), and in its Content-Security-Policy.
async fn csp_nonce(mut request: Request, next: Next) -> Response {
    let nonce = Nonce::new();
    request.extensions_mut().insert(nonce.clone());
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&content_security_policy(&nonce)) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// Hands the nonce of [`csp_nonce`] to Leptos, replacing the one leptos_axum made up, so the
/// scripts it writes carry the nonce the header allows.
fn provide_request_nonce() {
    let nonce = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Nonce>().cloned());
    if let Some(nonce) = nonce {
        provide_context(nonce);
    }
}

/// The app's routes, listed once per process. Listing them renders the app with resource loads
/// switched off by a process-wide flag, so a page rendering at that moment in another router
/// (tests build many) would wait forever for a resource that never loads (leptos#4773).
static ROUTES: std::sync::LazyLock<Vec<leptos_axum::AxumRouteListing>> =
    std::sync::LazyLock::new(|| generate_route_list(App));

/// The whole router. `backend` is the dashboard's view of the cluster; without one the pages
/// say that FluxUp is not connected.
pub fn router(options: LeptosOptions, backend: Option<Backend>, auth: Auth) -> Router {
    let routes = ROUTES.clone();
    let context = {
        let backend = backend.clone();
        move || {
            provide_request_nonce();
            if let Some(backend) = backend.clone() {
                provide_context(backend);
            }
        }
    };
    let pages = Router::new()
        .leptos_routes_with_context(&options, routes, context.clone(), {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context(
            context, shell,
        ))
        .with_state(options);
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    pages
        .merge(crate::health::routes())
        .merge(crate::live::routes(backend.clone()))
        .merge(crate::rest::routes(backend))
        .merge(auth.routes())
        // Who is asking, on every request; refuses anonymous and cross-site ones.
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::identify,
        ))
        // Nothing FluxUp takes is large: a server function's arguments, a login callback.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(csp_nonce))
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("x-frame-options", "DENY"))
        .layer(header("referrer-policy", "same-origin"))
        // leptos_axum serves the wasm uncompressed; gzip/brotli cut it by about two thirds.
        .layer(CompressionLayer::new())
        // Every log line of a request carries its id (`x-request-id`, kept when the caller or a
        // proxy set one), and the response tells it, so a person can find the lines.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(),
                    uri = %request.uri(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Without logins anyone who reaches the server acts as FluxUp: allowed only on this machine's
/// loopback, and never in a cluster (where a Service or a port-forward would reach it).
pub fn check_no_auth(addr: SocketAddr, in_cluster: bool) -> anyhow::Result<()> {
    if in_cluster {
        anyhow::bail!(
            "--no-auth refused: FluxUp runs inside a cluster (KUBERNETES_SERVICE_HOST is set); \
             configure logins with --oidc-issuer"
        );
    }
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "--no-auth refused on {addr}: without logins FluxUp listens only on a loopback address \
             (e.g. --listen 127.0.0.1:3000); configure logins with --oidc-issuer to serve others"
        );
    }
    Ok(())
}

/// Serves, and runs the controllers, until SIGINT or SIGTERM; then lets in-flight requests and
/// reconciles finish and gives up the controllers' Lease.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = leptos_options()?;
    let addr = args.listen.unwrap_or(options.site_addr);
    if !args.dashboard {
        return serve_controllers_only(args, addr).await;
    }
    if args.oidc_issuer.is_none() && args.no_auth {
        check_no_auth(addr, std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())?;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "listening for /metrics on {} (--metrics-listen)",
                args.metrics_listen
            )
        })?;
    let metrics_addr = metrics.local_addr()?;
    let shutdown = CancellationToken::new();
    let requests = ApiRequests::default();
    let config = match kube::Config::infer().await {
        Ok(config) => Some(config),
        Err(e) if !args.controllers => {
            tracing::warn!(error = %e, "no Kubernetes configuration: the dashboard shows no apps");
            None
        }
        Err(e) => {
            return Err(e)
                .context("connecting to Kubernetes (set KUBECONFIG, or --controllers=false)");
        }
    };
    // The dashboard's identity: its own kubeconfig when given (two ServiceAccounts, so the
    // web server never holds the controllers' rights), else the controllers'.
    let dashboard_config = match &args.dashboard_kubeconfig {
        Some(path) => Some(
            kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("the dashboard's kubeconfig {}", path.display()))?,
        ),
        None => config.clone(),
    };
    let backend = match dashboard_config {
        Some(config) => Some(Backend::start(config)?),
        None => None,
    };
    let auth = match (&args.oidc_issuer, args.no_auth) {
        (Some(issuer), _) => {
            if args.oidc_prefix.is_some() {
                tracing::warn!(
                    "--oidc-prefix (FLUXUP_OIDC_PREFIX) is deprecated: use --oidc-username-prefix \
                     and --oidc-groups-prefix"
                );
            }
            let (username_prefix, groups_prefix) = args.oidc_prefixes();
            Auth::oidc(OidcSettings {
                issuer: issuer.clone(),
                client_id: args.oidc_client_id.clone(),
                client_secret: args.oidc_client_secret.clone(),
                scopes: args.oidc_scopes.clone(),
                username_claim: args.oidc_username_claim.clone(),
                groups_claim: args.oidc_groups_claim.clone(),
                username_prefix,
                groups_prefix,
                allowed_groups: args
                    .oidc_allowed_groups
                    .iter()
                    .filter(|g| !g.is_empty())
                    .cloned()
                    .collect(),
                public_url: args
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}")),
            })
            .await?
        }
        (None, true) => Auth::no_auth()?,
        (None, false) => anyhow::bail!(
            "no login configured: set --oidc-issuer (FLUXUP_OIDC_ISSUER), or --no-auth for local use"
        ),
    };
    let controllers = if let (true, Some(config)) = (args.controllers, config) {
        let client = requests.client(config)?;
        let scope = fluxup_operator::Scope {
            namespace: args.watch_namespace.clone(),
        };
        let lease_ns = fluxup_operator::leader::lease_namespace();
        let token = shutdown.clone();
        Some(tokio::spawn(async move {
            fluxup_operator::leader::run_controllers(client, scope, &lease_ns, token).await
        }))
    } else {
        None
    };
    tracing::info!(%addr, metrics = %metrics_addr, site_root = %options.site_root, "FluxUp is serving");
    let signal = cancel_on_signal(shutdown.clone());
    let metrics = serve_metrics(metrics, shutdown.clone());
    axum::serve(listener, router(options, backend, auth))
        .with_graceful_shutdown(signal)
        .await?;
    metrics.await??;
    if let Some(controllers) = controllers {
        // In-flight reconciles get time to finish; an unreachable API server does not keep
        // the process from exiting.
        match tokio::time::timeout(std::time::Duration::from_secs(20), controllers).await {
            Ok(result) => result??,
            Err(_) => tracing::warn!("the controllers did not stop within 20 s; exiting anyway"),
        }
        tracing::info!(requests = %requests.summary(), "Kubernetes API requests made");
    }
    tracing::info!("FluxUp stopped");
    Ok(())
}

/// `--dashboard=false`: the controllers, the health probes and `/metrics`, no pages or API.
async fn serve_controllers_only(args: ServeArgs, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.controllers,
        "--dashboard=false and --controllers=false leave nothing to run"
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("listening for /metrics on {}", args.metrics_listen))?;
    let config = kube::Config::infer()
        .await
        .context("connecting to Kubernetes (set KUBECONFIG)")?;
    let requests = ApiRequests::default();
    let client = requests.client(config)?;
    let scope = fluxup_operator::Scope {
        namespace: args.watch_namespace.clone(),
    };
    let lease_ns = fluxup_operator::leader::lease_namespace();
    let shutdown = CancellationToken::new();
    let controllers = tokio::spawn({
        let token = shutdown.clone();
        async move { fluxup_operator::leader::run_controllers(client, scope, &lease_ns, token).await }
    });
    tracing::info!(%addr, "FluxUp's controllers are running (no dashboard)");
    let metrics = serve_metrics(metrics, shutdown.clone());
    let signal = cancel_on_signal(shutdown.clone());
    axum::serve(listener, crate::health::routes())
        .with_graceful_shutdown(signal)
        .await?;
    metrics.await??;
    match tokio::time::timeout(std::time::Duration::from_secs(20), controllers).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!("the controllers did not stop within 20 s; exiting anyway"),
    }
    tracing::info!(requests = %requests.summary(), "FluxUp stopped");
    Ok(())
}

/// `/metrics` on its own listener until `shutdown`.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, crate::health::metrics_routes())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    })
}

/// Cancels `shutdown` at SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    shutdown_signal().await;
    shutdown.cancel();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auth_only_on_loopback_outside_a_cluster() {
        let addr = |a: &str| a.parse::<SocketAddr>().unwrap();
        for ok in ["127.0.0.1:3000", "[::1]:3000", "127.0.0.2:1"] {
            assert!(check_no_auth(addr(ok), false).is_ok(), "{ok}");
        }
        for wide in ["0.0.0.0:3000", "[::]:3000", "192.168.1.5:3000"] {
            let e = check_no_auth(addr(wide), false).unwrap_err().to_string();
            assert!(e.contains("loopback") && e.contains(wide), "{e}");
        }
        let e = check_no_auth(addr("127.0.0.1:3000"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
    }

    #[test]
    fn scripts_need_the_nonce() {
        let csp = content_security_policy("abc");
        let scripts = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(
            scripts.contains("'nonce-abc'") && !scripts.contains("unsafe-inline"),
            "{csp}"
        );
    }
}
