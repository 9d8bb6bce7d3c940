//! Where notifications go: the `fluxup-notifications` ConfigMap in FluxUp's namespace, key
//! `sinks.yaml`, a list of sinks. Addresses and signing keys may live in a Secret named by the
//! sink, with the keys Flux's Providers use (`address`, `token`), so nothing secret sits in the
//! ConfigMap.
//!
//! ```yaml
//! - name: team-slack
//!   type: slack                 # slack | webhook | flux
//!   secretRef: {name: slack-url}  # its `address` is the incoming-webhook URL
//!   events: [UpgradeFailed, RollbackFailed]   # optional; every event when absent
//!   namespaces: [shop]          # optional; apps of every namespace when absent
//! - name: audit
//!   type: webhook
//!   address: https://audit.example.com/fluxup
//!   secretRef: {name: audit-hmac} # its `token` signs each body (X-Signature: sha256=<hex>)
//! - name: flux
//!   type: flux                  # Flux's notification-controller; routed by your Alerts
//! ```

use super::Kind;
use serde::Deserialize;

/// The ConfigMap holding the sinks.
pub use fluxup_api::ownership::NOTIFICATIONS_CONFIG_MAP as CONFIG_MAP;
/// The ConfigMap's key with the list of sinks.
pub use fluxup_api::ownership::NOTIFICATIONS_KEY as KEY;
/// Where the notification-controller of a standard Flux install takes events.
pub const FLUX_EVENTS_ADDRESS: &str =
    "http://notification-controller.flux-system.svc.cluster.local./";

/// One receiver of notifications.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sink {
    /// Names the sink in logs and Events.
    pub name: String,
    /// How to talk to it.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Where to send; a Secret's `address` wins over it.
    #[serde(default)]
    pub address: Option<String>,
    /// A Secret in FluxUp's namespace with `address` and/or `token`.
    #[serde(default)]
    pub secret_ref: Option<SecretRef>,
    /// Which events to send; all when empty.
    #[serde(default)]
    pub events: Vec<Kind>,
    /// Apps of which namespaces; all when empty.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

/// The kinds of receiver FluxUp speaks to.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A Slack incoming webhook.
    Slack,
    /// Any HTTP endpoint: the notification as JSON, signed when the Secret has a `token`.
    Webhook,
    /// Flux's notification-controller, as Flux's own controllers send events to it.
    Flux,
}

impl SinkKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SinkKind::Slack => "slack",
            SinkKind::Webhook => "webhook",
            SinkKind::Flux => "flux",
        }
    }
}

impl Sink {
    /// Whether this sink wants `kind` for an app in `namespace`.
    pub fn wants(&self, kind: Kind, namespace: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&kind))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace))
    }
}

/// Reads `sinks.yaml`. Every mistake is named with the sink it is in, so a person can fix the
/// ConfigMap from the Event alone.
pub fn parse(text: &str) -> Result<Vec<Sink>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let sinks: Vec<Sink> =
        serde_yaml::from_str(text).map_err(|e| format!("{KEY} is not a list of sinks: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    for sink in &sinks {
        if sink.name.trim().is_empty() {
            return Err("a sink has an empty name".into());
        }
        if !names.insert(sink.name.as_str()) {
            return Err(format!("two sinks are named {:?}", sink.name));
        }
        if let Some(address) = &sink.address {
            check_address(address).map_err(|e| format!("sink {:?}: {e}", sink.name))?;
        } else if sink.secret_ref.is_none() && sink.kind != SinkKind::Flux {
            return Err(format!(
                "sink {:?} has neither an address nor a secretRef with one",
                sink.name
            ));
        }
    }
    Ok(sinks)
}

/// An address must be an absolute http(s) URL.
pub fn check_address(address: &str) -> Result<(), String> {
    match reqwest::Url::parse(address) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        Ok(url) => Err(format!(
            "address {address:?} is not http(s) (scheme {:?})",
            url.scheme()
        )),
        Err(e) => Err(format!("address {address:?} is not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_read_with_their_filters() {
        let sinks = parse(
            "- name: team\n  type: slack\n  secretRef: {name: slack}\n  events: [UpgradeFailed]\n\
             - name: audit\n  type: webhook\n  address: https://audit.example.com/hook\n  namespaces: [shop]\n\
             - name: flux\n  type: flux\n",
        )
        .unwrap();
        assert_eq!(sinks.len(), 3);
        assert!(sinks[0].wants(Kind::UpgradeFailed, "any"));
        assert!(!sinks[0].wants(Kind::UpgradeSucceeded, "any"));
        assert!(sinks[1].wants(Kind::UpgradeSucceeded, "shop"));
        assert!(!sinks[1].wants(Kind::UpgradeSucceeded, "other"));
        assert!(sinks[2].wants(Kind::UpdateAvailable, "other"));
        assert_eq!(sinks[2].address, None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            (
                "- name: a\n  type: email\n  address: http://x/\n",
                "unknown variant `email`",
            ),
            (
                "- name: a\n  type: slack\n",
                "neither an address nor a secretRef",
            ),
            (
                "- name: a\n  type: webhook\n  address: ftp://x/\n",
                "not http(s)",
            ),
            (
                "- name: a\n  type: webhook\n  address: not a url\n",
                "not a URL",
            ),
            (
                "- {name: a, type: flux}\n- {name: a, type: flux}\n",
                "two sinks are named \"a\"",
            ),
            (
                "- name: a\n  type: flux\n  adress: http://x/\n",
                "unknown field `adress`",
            ),
            (
                "- name: a\n  type: flux\n  events: [UpgradeDone]\n",
                "unknown variant `UpgradeDone`",
            ),
            ("name: a\n", "not a list of sinks"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?}: {error}");
        }
        assert_eq!(parse("  \n").unwrap(), Vec::new());
    }

    /// The example in config/notifications is one FluxUp accepts.
    #[test]
    fn the_example_settings_parse() {
        let text = include_str!("../../../config/notifications/notifications.yaml");
        let config_map = serde_yaml::Deserializer::from_str(text)
            .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
            .find(|doc| doc["kind"] == "ConfigMap")
            .unwrap();
        assert_eq!(config_map["metadata"]["name"], CONFIG_MAP);
        let sinks = parse(config_map["data"][KEY].as_str().unwrap()).unwrap();
        let kinds: Vec<SinkKind> = sinks.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SinkKind::Slack, SinkKind::Webhook, SinkKind::Flux]);
    }
}
