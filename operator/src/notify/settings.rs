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
    pub address: Option<Address>,
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

/// A sink's address. A Slack incoming-webhook URL is a credential (whoever has it may post to the
/// channel), and so may a webhook's be: only its host is ever shown, by `Display` and `Debug`
/// alike. [`Address::expose`] is for the request alone.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Address(String);

impl Address {
    pub fn new(address: impl Into<String>) -> Self {
        Address(address.into())
    }

    /// The whole address, to send to. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The host: the most of the address that is shown.
    pub fn host(&self) -> String {
        reqwest::Url::parse(&self.0)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "an address that is not a URL".into())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host())
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({}/…)", self.host())
    }
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
    let sinks: Vec<Sink> = serde_yaml::from_str(text).map_err(|e| {
        format!(
            "{KEY} is not a list of sinks: {}",
            without_values(&e.to_string())
        )
    })?;
    let mut names = std::collections::BTreeSet::new();
    for sink in &sinks {
        if sink.name.trim().is_empty() {
            return Err("a sink has an empty name".into());
        }
        if !names.insert(sink.name.as_str()) {
            return Err(format!("two sinks are named {:?}", sink.name));
        }
        if let Some(address) = &sink.address {
            check_address(address.expose()).map_err(|e| format!("sink {:?}: {e}", sink.name))?;
        } else if sink.secret_ref.is_none() && sink.kind != SinkKind::Flux {
            return Err(format!(
                "sink {:?} has neither an address nor a secretRef with one",
                sink.name
            ));
        }
    }
    Ok(sinks)
}

/// What a person may change about a sink from the dashboard: which events it gets and for which
/// namespaces (empty: all). Its type, address and Secret stay where they are written.
#[derive(Deserialize, serde::Serialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    pub name: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// The settings text with each named sink's filters set as `changes` say and everything else
/// as it was; the result is checked as FluxUp reads it. Sinks are added and removed in the
/// ConfigMap itself, where their addresses and keys are written.
pub fn set_filters(text: &str, changes: &[Filters]) -> Result<String, String> {
    use serde_yaml::Value;
    parse(text)?;
    let mut doc: Value = if text.trim().is_empty() {
        Value::Sequence(Vec::new())
    } else {
        serde_yaml::from_str(text).map_err(|e| without_values(&e.to_string()))?
    };
    let sinks = doc
        .as_sequence_mut()
        .ok_or_else(|| format!("{KEY} is not a list of sinks"))?;
    for change in changes {
        let sink = sinks
            .iter_mut()
            .filter_map(Value::as_mapping_mut)
            .find(|m| m.get("name").and_then(Value::as_str) == Some(change.name.as_str()))
            .ok_or_else(|| {
                format!(
                    "there is no sink named {:?}: sinks are added in the ConfigMap, where their addresses live",
                    change.name
                )
            })?;
        for namespace in &change.namespaces {
            let label = !namespace.is_empty()
                && namespace.len() <= 63
                && namespace
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !namespace.starts_with('-')
                && !namespace.ends_with('-');
            if !label {
                return Err(format!("{namespace:?} is not a namespace name"));
            }
        }
        for (key, list) in [
            ("events", &change.events),
            ("namespaces", &change.namespaces),
        ] {
            if list.is_empty() {
                sink.remove(key);
            } else {
                let items = list.iter().map(|v| Value::String(v.clone())).collect();
                sink.insert(Value::String(key.into()), Value::Sequence(items));
            }
        }
    }
    let out = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    // An unknown event, for one, is refused here in FluxUp's own words.
    parse(&out)?;
    Ok(out)
}

/// An address must be an absolute http(s) URL. The error does not repeat it: it may be a
/// credential.
pub fn check_address(address: &str) -> Result<(), String> {
    match reqwest::Url::parse(address) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            Err("the address has no host".into())
        }
        Ok(url) => Err(format!(
            "the address is not http(s) (its scheme is {:?})",
            url.scheme()
        )),
        Err(e) => Err(format!("the address is not a URL ({e})")),
    }
}

/// A YAML error's message without the values it quotes, which may be a misplaced address: a
/// quoted word (a field or variant name) stays, anything else in quotes becomes `…`, and so does
/// any unquoted word that looks like a URL.
fn without_values(message: &str) -> String {
    let is_word = |s: &str| {
        !s.is_empty()
            && s.len() <= 40
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c != '"' && c != '`' {
            out.push(c);
            continue;
        }
        let mut inner = String::new();
        let mut closed = false;
        while let Some(d) = chars.next() {
            if d == '\\' && c == '"' {
                inner.push(d);
                if let Some(e) = chars.next() {
                    inner.push(e);
                }
            } else if d == c {
                closed = true;
                break;
            } else {
                inner.push(d);
            }
        }
        out.push(c);
        out.push_str(if is_word(&inner) { &inner } else { "…" });
        if closed {
            out.push(c);
        }
    }
    out.split(' ')
        .map(|w| {
            if w.contains("://") || w.contains('@') || w.matches('/').count() > 1 {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persons_change_sets_only_the_filters_of_the_sink_it_names() {
        let text = "- {name: chat, type: slack, address: \"https://hooks.example/secret\", events: [UpgradeFailed]}\n\
                    - {name: hook, type: webhook, secretRef: {name: hook-secret}}\n";
        let changed = set_filters(
            text,
            &[Filters {
                name: "chat".into(),
                events: vec!["UpgradeFailed".into(), "RollbackFailed".into()],
                namespaces: vec!["shop".into()],
            }],
        )
        .unwrap();
        let sinks = parse(&changed).unwrap();
        assert_eq!(sinks[0].events, [Kind::UpgradeFailed, Kind::RollbackFailed]);
        assert_eq!(sinks[0].namespaces, ["shop"]);
        assert_eq!(
            sinks[0].address.as_ref().map(Address::expose),
            Some("https://hooks.example/secret"),
            "the address stays"
        );
        assert_eq!(sinks[1], parse(text).unwrap()[1], "the other sink stays");
        // Empty lists mean all: the keys go.
        let all = set_filters(
            &changed,
            &[Filters {
                name: "chat".into(),
                ..Default::default()
            }],
        )
        .unwrap();
        assert!(parse(&all).unwrap()[0].events.is_empty());
        assert!(!all.contains("namespaces"), "{all}");
        // What is refused, with the text unchanged by the caller.
        for (change, why) in [
            (
                Filters {
                    name: "nobody".into(),
                    ..Default::default()
                },
                "no sink named",
            ),
            (
                Filters {
                    name: "chat".into(),
                    events: vec!["Everything".into()],
                    ..Default::default()
                },
                "Everything",
            ),
            (
                Filters {
                    name: "chat".into(),
                    namespaces: vec!["../etc".into()],
                    ..Default::default()
                },
                "not a namespace",
            ),
        ] {
            let err = set_filters(text, &[change]).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

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

    const SECRET: &str = "T0000/B0000/XXXXsecretXXXX";

    /// A Slack URL is a credential: no mistake repeats it, wherever it was misplaced.
    #[test]
    fn mistakes_do_not_repeat_addresses() {
        let url = format!("https://hooks.slack.com/services/{SECRET}");
        for text in [
            format!("- {url}\n"),
            format!("- name: a\n  type: {url}\n"),
            format!("- name: a\n  type: slack\n  {url}: x\n"),
            format!("- name: a\n  type: slack\n  address: ftp://user:{SECRET}@hooks.slack.com/\n"),
            format!("- name: a\n  type: slack\n  address: hooks.slack.com/services/{SECRET}\n"),
            format!(
                "- name: a\n  type: slack\n  address: https://hooks.slack.com:99999/services/{SECRET}\n"
            ),
            format!("- name: a\n  type: slack\n  address: [{url}]\n"),
            format!("- name: a\n  type: slack\n  events: {url}\n"),
            format!("- name: a\n  type: slack\n  events: [\"x\\\" {url}\"]\n"),
            format!("- name: a\n  type: slack\n  namespaces: {{{url}: 1}}\n"),
            format!("{url}\n"),
        ] {
            let error = parse(&text).unwrap_err();
            assert!(!error.contains("XXXXsecretXXXX"), "{text:?}: {error}");
            assert!(!error.contains("services"), "{text:?}: {error}");
        }
    }

    #[test]
    fn an_address_shows_its_host_only() {
        let sinks = parse(&format!(
            "- name: team\n  type: slack\n  address: https://hooks.slack.com/services/{SECRET}\n"
        ))
        .unwrap();
        let address = sinks[0].address.clone().unwrap();
        assert_eq!(address.to_string(), "hooks.slack.com");
        assert_eq!(format!("{address:?}"), "Address(hooks.slack.com/…)");
        let debug = format!("{:?} {:#?}", sinks, sinks[0]);
        assert!(!debug.contains("XXXXsecretXXXX"), "{debug}");
        assert!(
            debug.contains("team") && debug.contains("hooks.slack.com"),
            "{debug}"
        );
        assert_eq!(
            address.expose(),
            format!("https://hooks.slack.com/services/{SECRET}")
        );
        assert_eq!(
            Address::new("nonsense").to_string(),
            "an address that is not a URL"
        );
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
