//! Notifications: when an update becomes available and when an upgrade or rollback starts,
//! succeeds or fails, FluxUp tells Slack, generic webhooks and Flux's notification-controller
//! (see [`settings`] for how people configure them).
//!
//! Sending never blocks an operation: [`send`] hands the notification to a task and returns.
//! Each sink is tried until it answers, with growing pauses (1 s, 2 s, 4 s … about 4 minutes in
//! all); a receiver that refuses the content (a 4xx other than 408/429) is not asked again. Every
//! notification has an `id` that names the event (the request's uid and what happened), sent to
//! webhooks as `X-FluxUp-Delivery`, and one process sends each id once.

pub mod payload;
pub mod settings;

use crate::{events, leader, metrics};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use settings::{Address, Sink, SinkKind};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::Instrument as _;

/// What happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    UpdateAvailable,
    UpgradeStarted,
    UpgradeSucceeded,
    UpgradeFailed,
    RollbackStarted,
    RollbackSucceeded,
    RollbackFailed,
}

impl Kind {
    /// Every event, in the order a person reads them.
    pub const ALL: [Kind; 7] = [
        Kind::UpdateAvailable,
        Kind::UpgradeStarted,
        Kind::UpgradeSucceeded,
        Kind::UpgradeFailed,
        Kind::RollbackStarted,
        Kind::RollbackSucceeded,
        Kind::RollbackFailed,
    ];

    /// The event's reason (Flux) and name (webhooks).
    pub fn reason(self) -> &'static str {
        match self {
            Kind::UpdateAvailable => "UpdateAvailable",
            Kind::UpgradeStarted => "UpgradeStarted",
            Kind::UpgradeSucceeded => "UpgradeSucceeded",
            Kind::UpgradeFailed => "UpgradeFailed",
            Kind::RollbackStarted => "RollbackStarted",
            Kind::RollbackSucceeded => "RollbackSucceeded",
            Kind::RollbackFailed => "RollbackFailed",
        }
    }

    /// In words, for chat.
    pub fn title(self) -> &'static str {
        match self {
            Kind::UpdateAvailable => "Update available",
            Kind::UpgradeStarted => "Upgrade started",
            Kind::UpgradeSucceeded => "Upgrade succeeded",
            Kind::UpgradeFailed => "Upgrade failed",
            Kind::RollbackStarted => "Rollback started",
            Kind::RollbackSucceeded => "Rollback succeeded",
            Kind::RollbackFailed => "Rollback failed",
        }
    }

    fn severity(self) -> Severity {
        match self {
            Kind::UpgradeFailed | Kind::RollbackFailed => Severity::Error,
            _ => Severity::Info,
        }
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestName {
    pub kind: String,
    pub name: String,
}

/// One notification, as generic webhooks receive it (JSON, camelCase).
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Names the event: the same event always has the same id.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub severity: Severity,
    /// RFC 3339.
    pub timestamp: String,
    /// The ManagedApp.
    pub app: ObjectName,
    /// The Flux HelmRelease the app is.
    pub helm_release: ObjectName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The UpgradeRequest or RollbackRequest, for operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestName>,
    /// Who created the request, where the API server recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub message: String,
}

impl Notification {
    /// A notification about `app`; `id` must name the event.
    pub fn new(kind: Kind, id: String, app: &fluxup_api::ManagedApp, message: String) -> Self {
        let namespace = app.namespace().unwrap_or_default();
        Notification {
            id,
            kind,
            severity: kind.severity(),
            timestamp: events::now().to_string(),
            helm_release: ObjectName {
                namespace: app
                    .helm_release_namespace()
                    .unwrap_or(&namespace)
                    .to_string(),
                name: app.spec.helm_release_ref.name.clone(),
            },
            app: ObjectName {
                namespace,
                name: app.name_any(),
            },
            from_version: None,
            to_version: None,
            request: None,
            requested_by: None,
            message,
        }
    }

    /// A notification about an operation (`request`) on `app`: its id is the request's uid and
    /// `kind`, and it names whoever asked for it.
    pub fn about<K: Resource<DynamicType = ()>>(
        kind: Kind,
        request: &K,
        app: &fluxup_api::ManagedApp,
        message: String,
    ) -> Self {
        let id = format!(
            "{}/{}",
            request.meta().uid.clone().unwrap_or_default(),
            kind.reason()
        );
        let mut n = Notification::new(kind, id, app, message);
        n.request = Some(RequestName {
            kind: K::kind(&()).to_string(),
            name: request.meta().name.clone().unwrap_or_default(),
        });
        n.requested_by = requested_by(request.meta());
        n
    }

    /// Sets the versions; an empty `from` is left out.
    pub fn versions(mut self, from: Option<String>, to: Option<String>) -> Self {
        self.from_version = from.filter(|v| !v.is_empty());
        self.to_version = to.filter(|v| !v.is_empty());
        self
    }

    /// `1.0.0 → 2.0.0`, where known.
    pub fn change(&self) -> Option<String> {
        match (&self.from_version, &self.to_version) {
            (Some(from), Some(to)) => Some(format!("{from} → {to}")),
            (None, Some(to)) => Some(format!("→ {to}")),
            _ => None,
        }
    }
}

/// The versions an upgrade goes from and to: the chart's, or for an image-only upgrade the
/// first image's tag.
pub fn upgrade_versions(record: &fluxup_api::UpgradeRecord) -> (Option<String>, Option<String>) {
    let image = |images: &[fluxup_api::ImageVersion]| images.first().map(|i| i.reference());
    match &record.new_version {
        Some(_) => (record.previous_version.clone(), record.new_version.clone()),
        None => (image(&record.previous_images), image(&record.new_images)),
    }
}

/// The annotation the API server writes with the creator of every request.
pub const REQUESTED_BY: &str = fluxup_api::REQUESTED_BY_ANNOTATION;

/// Who created an object, where the admission policy recorded it.
pub fn requested_by(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REQUESTED_BY))
        .filter(|u| !u.is_empty())
        .cloned()
}

/// Sends `n` to every sink that wants it, in the background. Returns at once.
pub fn send(client: &Client, n: Notification) {
    if !first_time(&n.id) {
        return;
    }
    let client = client.clone();
    tokio::spawn(async move {
        let namespace = leader::lease_namespace();
        let sinks = match load(&client, &namespace).await {
            Ok(sinks) => sinks,
            Err(why) => {
                tracing::warn!(%why, notification = %n.id, "notification settings unusable; nothing sent");
                return;
            }
        };
        for sink in sinks
            .into_iter()
            .filter(|s| s.wants(n.kind, &n.app.namespace))
        {
            let (client, n, namespace) = (client.clone(), n.clone(), namespace.clone());
            tokio::spawn(
                async move { deliver(&client, &namespace, &sink, &n).await }.in_current_span(),
            );
        }
    }
    // The operation's span follows the notification into its tasks, so its logs carry the id.
    .in_current_span());
}

/// Whether this process has not sent `id` yet (and notes that it has now).
fn first_time(id: &str) -> bool {
    static SENT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut sent = SENT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Bounded: after many thousands of events, forget the old ones.
    if sent.len() > 10_000 {
        sent.clear();
    }
    sent.insert(id.to_string())
}

/// The sinks of the settings ConfigMap; none when it does not exist. A ConfigMap that cannot be
/// read gets a Warning Event saying why.
async fn load(client: &Client, namespace: &str) -> Result<Vec<Sink>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let Some(cm) = api.get_opt(settings::CONFIG_MAP).await.map_err(|e| {
        format!(
            "reading ConfigMap {namespace}/{}: {e}",
            settings::CONFIG_MAP
        )
    })?
    else {
        return Ok(Vec::new());
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(settings::KEY))
        .cloned()
        .unwrap_or_default();
    settings::parse(&text).inspect_err(|why| {
        let (client, cm, why) = (client.clone(), cm.clone(), why.clone());
        tokio::spawn(async move {
            let recorder = events::recorder(&client);
            events::publish(
                &recorder,
                &cm.object_ref(&()),
                true,
                "Notify",
                "InvalidSettings",
                &why,
            )
            .await;
        });
    })
}

/// Where a sink sends and the key that signs, after its Secret.
async fn target(
    client: &Client,
    namespace: &str,
    sink: &Sink,
) -> Result<(Address, Option<Vec<u8>>), String> {
    let mut address = sink.address.clone();
    let mut token = None;
    let mut from = "the sink".to_string();
    if let Some(secret) = &sink.secret_ref {
        let secret = Api::<Secret>::namespaced(client.clone(), namespace)
            .get(&secret.name)
            .await
            .map_err(|e| format!("Secret {namespace}/{}: {e}", secret.name))?;
        let name = secret.metadata.name.clone().unwrap_or_default();
        let data = secret.data.unwrap_or_default();
        if let Some(a) = data.get("address") {
            address = Some(Address::new(String::from_utf8_lossy(&a.0).trim()));
            from = format!("Secret {namespace}/{name}");
        }
        token = data.get("token").map(|t| t.0.clone());
    }
    let address = match (address, sink.kind) {
        (Some(a), _) => a,
        (None, SinkKind::Flux) => Address::new(settings::FLUX_EVENTS_ADDRESS),
        (None, _) => return Err("no address (neither in the sink nor in its Secret)".into()),
    };
    settings::check_address(address.expose()).map_err(|e| format!("{from}: {e}"))?;
    Ok((address, token))
}

/// The pauses between attempts.
const RETRY_PAUSES: [u64; 8] = [1, 2, 4, 8, 16, 32, 60, 120];

/// Sends `n` to one sink, retrying with backoff; logs and counts the outcome.
async fn deliver(client: &Client, namespace: &str, sink: &Sink, n: &Notification) {
    let span = tracing::info_span!("notify", sink = %sink.name, notification = %n.id);
    async {
        let (address, token) = target(client, namespace, sink).await?;
        let mut attempt = 0;
        loop {
            match post(sink.kind, &address, token.as_deref(), n).await {
                Ok(()) => return Ok(attempt + 1),
                Err(Failure::Final(why)) => return Err(why),
                Err(Failure::Retry(why)) if attempt < RETRY_PAUSES.len() => {
                    tracing::info!(%why, attempt = attempt + 1, "receiver did not take the notification; trying again");
                    tokio::time::sleep(Duration::from_secs(RETRY_PAUSES[attempt])).await;
                    attempt += 1;
                }
                Err(Failure::Retry(why)) => return Err(format!("gave up after {} attempts: {why}", attempt + 1)),
            }
        }
    }
    .then(|result| async move { match result {
        Ok(attempts) => {
            tracing::info!(attempts, kind = n.kind.reason(), "notification delivered");
            metrics::notification(sink.kind.label(), "delivered");
        }
        Err(why) => {
            tracing::warn!(%why, kind = n.kind.reason(), "notification not delivered");
            metrics::notification(sink.kind.label(), "failed");
        }
    }})
    .instrument(span)
    .await;
}

enum Failure {
    Retry(String),
    Final(String),
}

fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("fluxup/", env!("CARGO_PKG_VERSION")))
            // The address is a credential: a redirect must not carry it (Referer) elsewhere.
            .referer(false)
            .redirect(crate::outbound::same_host_redirects())
            .build()
            .unwrap_or_default()
    })
}

/// A failed request in words without the URL (reqwest's own message has it): the host, what
/// went wrong and why.
fn failure(address: &Address, error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = format!("{}: {error}", address.host());
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn post(
    kind: SinkKind,
    address: &Address,
    token: Option<&[u8]>,
    n: &Notification,
) -> Result<(), Failure> {
    let body = match kind {
        SinkKind::Webhook => payload::webhook(n),
        SinkKind::Slack => serde_json::to_vec(&payload::slack(n)).unwrap_or_default(),
        SinkKind::Flux => {
            let instance = std::env::var("HOSTNAME").ok();
            serde_json::to_vec(&payload::flux(n, instance.as_deref())).unwrap_or_default()
        }
    };
    let mut request = http()
        .post(address.expose())
        .header(http::header::CONTENT_TYPE, "application/json");
    if kind == SinkKind::Webhook {
        request = request
            .header("X-FluxUp-Event", n.kind.reason())
            .header("X-FluxUp-Delivery", &n.id);
        if let Some(token) = token {
            request = request.header("X-Signature", payload::signature(token, &body));
        }
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Retry(failure(address, e)))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        // The notification-controller answers 429 to an event it already has.
        429 if kind == SinkKind::Flux => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::Retry(format!(
            "{} answered {status}",
            address.host()
        ))),
        _ => Err(Failure::Final(format!(
            "{} refused it: {status}",
            address.host()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const SECRET: &str = "T0000/B0000/XXXXsecretXXXX";

    fn sample() -> Notification {
        Notification {
            id: "uid-1/UpgradeFailed".into(),
            kind: Kind::UpgradeFailed,
            severity: Severity::Error,
            timestamp: "2026-11-30T10:00:00Z".into(),
            app: ObjectName {
                namespace: "shop".into(),
                name: "web".into(),
            },
            helm_release: ObjectName {
                namespace: "shop".into(),
                name: "web".into(),
            },
            from_version: None,
            to_version: None,
            request: None,
            requested_by: None,
            message: "m".into(),
        }
    }

    /// A receiver that answers every request with `status`.
    async fn receiver(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 16384];
                let _ = socket.read(&mut request).await;
                let answer =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        port
    }

    fn says(result: Result<(), Failure>) -> String {
        match result {
            Ok(()) => panic!("expected a failure"),
            Err(Failure::Retry(why) | Failure::Final(why)) => why,
        }
    }

    /// Slack's URL is the credential: failures name the host, never the URL.
    #[tokio::test]
    async fn failures_name_the_host_only() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refusing = receiver("404 Not Found").await;
        let failing = receiver("500 Internal Server Error").await;
        for (port, expect) in [
            (closed, "127.0.0.1: error sending request"),
            (refusing, "127.0.0.1 refused it: 404 Not Found"),
            (failing, "127.0.0.1 answered 500 Internal Server Error"),
        ] {
            let address = Address::new(format!("http://127.0.0.1:{port}/services/{SECRET}"));
            for kind in [SinkKind::Slack, SinkKind::Webhook] {
                let why = says(post(kind, &address, Some(b"key"), &sample()).await);
                assert!(why.starts_with(expect), "{why}");
                assert!(!why.contains("XXXXsecretXXXX"), "{why}");
                assert!(
                    !why.contains(&port.to_string()) || !why.contains("services"),
                    "{why}"
                );
            }
        }
    }

    #[test]
    fn a_sink_with_its_address_debugs_without_it() {
        let sink = Sink {
            name: "team".into(),
            kind: SinkKind::Slack,
            address: Some(Address::new(format!(
                "https://hooks.slack.com/services/{SECRET}"
            ))),
            secret_ref: None,
            events: vec![],
            namespaces: vec![],
        };
        let debug = format!("{sink:?}");
        assert!(!debug.contains("XXXXsecretXXXX"), "{debug}");
        assert!(debug.contains("hooks.slack.com"), "{debug}");
    }
}
