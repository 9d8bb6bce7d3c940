//! What each kind of sink receives for a notification.

use super::{Notification, Severity};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A generic webhook's body: the notification itself.
pub fn webhook(n: &Notification) -> Vec<u8> {
    serde_json::to_vec(n).unwrap_or_default()
}

/// `X-Signature` of a body signed with `token`: `sha256=<hex HMAC-SHA256>`, the header and format
/// of Flux's `generic-hmac` provider, so receivers written for Flux verify FluxUp too.
pub fn signature(token: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Slack incoming webhook's body: one line of text (what phones show) and the same in a block
/// with the details under it.
pub fn slack(n: &Notification) -> Value {
    let icon = match n.severity {
        Severity::Info => ":white_check_mark:",
        Severity::Error => ":x:",
    };
    let title = format!(
        "{icon} *{}* {}/{}",
        n.kind.title(),
        n.app.namespace,
        n.app.name
    );
    let mut details = Vec::new();
    if let Some(change) = n.change() {
        details.push(change);
    }
    if let Some(user) = &n.requested_by {
        details.push(format!("requested by {user}"));
    }
    if let Some(request) = &n.request {
        details.push(format!("{} {}", request.kind, request.name));
    }
    json!({
        "text": format!("{} {}/{}: {}", n.kind.title(), n.app.namespace, n.app.name, n.message),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("{title}\n{}", n.message)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": details.join(" · ")}]},
        ],
    })
}

/// An event for Flux's notification-controller, shaped as Flux's controllers send them
/// (`event.toolkit.fluxcd.io/v1beta1` Event). The involved object is the app's HelmRelease, so
/// the Alerts people already have on their HelmReleases route FluxUp's events too.
pub fn flux(n: &Notification, instance: Option<&str>) -> Value {
    // The controller keeps only metadata under the object's API group and hands it to providers
    // without the prefix. `token` is for its duplicate filter only (it makes two events with the
    // same text distinct) and is not passed on.
    let mut metadata = serde_json::Map::new();
    metadata.insert("helm.toolkit.fluxcd.io/token".into(), json!(n.id));
    metadata.insert(
        "helm.toolkit.fluxcd.io/app".into(),
        json!(format!("{}/{}", n.app.namespace, n.app.name)),
    );
    if let Some(request) = &n.request {
        metadata.insert(
            "helm.toolkit.fluxcd.io/request".into(),
            json!(format!("{}/{}", request.kind, request.name)),
        );
    }
    if let Some(version) = &n.to_version {
        metadata.insert("helm.toolkit.fluxcd.io/revision".into(), json!(version));
    }
    if let Some(user) = &n.requested_by {
        metadata.insert("helm.toolkit.fluxcd.io/requestedBy".into(), json!(user));
    }
    json!({
        "involvedObject": {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "namespace": n.helm_release.namespace,
            "name": n.helm_release.name,
        },
        "severity": match n.severity { Severity::Info => "info", Severity::Error => "error" },
        "timestamp": n.timestamp,
        "message": n.message,
        "reason": n.kind.reason(),
        "metadata": metadata,
        "reportingController": "fluxup",
        "reportingInstance": instance.unwrap_or("fluxup"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, ObjectName, RequestName};
    use super::*;

    fn sample() -> Notification {
        Notification {
            id: "uid-1/UpgradeSucceeded".into(),
            kind: Kind::UpgradeSucceeded,
            severity: Severity::Info,
            timestamp: "2026-11-30T10:00:00Z".into(),
            app: ObjectName {
                namespace: "shop".into(),
                name: "web".into(),
            },
            helm_release: ObjectName {
                namespace: "shop".into(),
                name: "web-release".into(),
            },
            from_version: Some("1.0.0".into()),
            to_version: Some("2.0.0".into()),
            request: Some(RequestName {
                kind: "UpgradeRequest".into(),
                name: "web-2".into(),
            }),
            requested_by: Some("alice@example.com".into()),
            message: "web runs 2.0.0".into(),
        }
    }

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhook_body_names_app_versions_request_and_user() {
        let body: Value = serde_json::from_slice(&webhook(&sample())).unwrap();
        assert_eq!(body["type"], "UpgradeSucceeded");
        assert_eq!(body["severity"], "info");
        assert_eq!(body["app"], json!({"namespace": "shop", "name": "web"}));
        assert_eq!(body["fromVersion"], "1.0.0");
        assert_eq!(body["toVersion"], "2.0.0");
        assert_eq!(
            body["request"],
            json!({"kind": "UpgradeRequest", "name": "web-2"})
        );
        assert_eq!(body["requestedBy"], "alice@example.com");
        assert_eq!(body["id"], "uid-1/UpgradeSucceeded");
    }

    #[test]
    fn slack_text_reads_alone() {
        let body = slack(&sample());
        assert_eq!(body["text"], "Upgrade succeeded shop/web: web runs 2.0.0");
        let context = body["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert_eq!(
            context,
            "1.0.0 → 2.0.0 · requested by alice@example.com · UpgradeRequest web-2"
        );
    }

    #[test]
    fn flux_event_is_about_the_helm_release() {
        let event = flux(&sample(), Some("fluxup-0"));
        assert_eq!(event["involvedObject"]["kind"], "HelmRelease");
        assert_eq!(event["involvedObject"]["name"], "web-release");
        assert_eq!(event["reason"], "UpgradeSucceeded");
        assert_eq!(
            event["metadata"]["helm.toolkit.fluxcd.io/revision"],
            "2.0.0"
        );
        assert_eq!(event["reportingController"], "fluxup");
        let mut failed = sample();
        failed.severity = Severity::Error;
        assert_eq!(flux(&failed, None)["severity"], "error");
    }
}
