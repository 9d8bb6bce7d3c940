//! The HTTP server: Leptos pages and server functions, static assets, health probes, with
//! compression and security headers around all of it.

use crate::auth::{Auth, OidcSettings};
use crate::cli::ServeArgs;
use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue};
use fluxup_app::backend::Backend;
use fluxup_app::{App, shell};
use fluxup_operator::api_requests::ApiRequests;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
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

/// Scripts and styles from FluxUp only (the inline ones are Leptos' hydration loader and the
/// streamed parts of pages), WebAssembly allowed, no framing, no form posts elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' \
    'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    frame-ancestors 'none'; form-action 'self'; base-uri 'self'";

/// The whole router. `backend` is the dashboard's view of the cluster; without one the pages
/// say that FluxUp is not connected.
pub fn router(options: LeptosOptions, backend: Option<Backend>, auth: Auth) -> Router {
    let routes = generate_route_list(App);
    let context = {
        let backend = backend.clone();
        move || {
            if let Some(backend) = backend.clone() {
                provide_context(backend);
            }
        }
    };
    let pages = Router::new()
        .leptos_routes_with_context(&options, routes, context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler(shell))
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
        .layer(header("content-security-policy", CONTENT_SECURITY_POLICY))
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

/// Serves, and runs the controllers, until SIGINT or SIGTERM; then lets in-flight requests and
/// reconciles finish and gives up the controllers' Lease.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let options = leptos_options()?;
    let addr = args.listen.unwrap_or(options.site_addr);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
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
    let backend = match &config {
        Some(config) => Some(Backend::start(config.clone())?),
        None => None,
    };
    let auth = match (&args.oidc_issuer, args.no_auth) {
        (Some(issuer), _) => {
            Auth::oidc(OidcSettings {
                issuer: issuer.clone(),
                client_id: args.oidc_client_id.clone(),
                client_secret: args.oidc_client_secret.clone(),
                scopes: args.oidc_scopes.clone(),
                username_claim: args.oidc_username_claim.clone(),
                groups_claim: args.oidc_groups_claim.clone(),
                prefix: args.oidc_prefix.clone(),
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
    tracing::info!(%addr, site_root = %options.site_root, "FluxUp is serving");
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    };
    axum::serve(listener, router(options, backend, auth))
        .with_graceful_shutdown(signal)
        .await?;
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
