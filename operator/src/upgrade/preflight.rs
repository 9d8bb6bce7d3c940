//! Preflight checks that need no cluster: whether the versions a person approved are inside the
//! ManagedApp's version policy.

use crate::policy::{Constraint, parse_version};
use fluxup_api::{ImageVersion, ManagedApp, PreflightCheck};

/// Whether `chart` and `images` satisfy the app's `constraint`s. `autoUpdate` is not applied
/// here: it bounds what FluxUp offers on its own, and an UpgradeRequest is a person's approval.
pub fn policy(app: &ManagedApp, chart: Option<&str>, images: &[ImageVersion]) -> PreflightCheck {
    let policy = app.spec.version_policy.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let mut wanted: Vec<(String, &str, Option<String>)> = Vec::new();
    if let Some(chart) = chart {
        let constraint = policy.chart.as_ref().and_then(|c| c.constraint.clone());
        wanted.push(("chart".into(), chart, constraint));
    }
    for image in images {
        let Some(tag) = image.tag.as_deref() else {
            continue;
        };
        let constraint = policy
            .images
            .iter()
            .find(|p| p.name == image.name)
            .and_then(|p| p.constraint.clone());
        wanted.push((format!("image {}", image.name), tag, constraint));
    }
    for (what, version, constraint) in wanted {
        let Some(text) = constraint else { continue };
        let range = match Constraint::parse(&text) {
            Ok(range) => range,
            Err(e) => {
                problems.push(format!("the {what} constraint is not usable: {e}"));
                continue;
            }
        };
        match parse_version(version) {
            Some(v) if range.matches(&v) => {}
            Some(_) => problems.push(format!(
                "{what} {version} is outside the app's version policy ({text}); change the \
                 constraint in the ManagedApp to allow it"
            )),
            None => problems.push(format!(
                "{what} {version} is not a version the constraint {text} can judge"
            )),
        }
    }
    PreflightCheck {
        name: "policy".into(),
        passed: problems.is_empty(),
        message: Some(if problems.is_empty() {
            "inside the version policy".into()
        } else {
            problems.join("; ")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(chart: Option<&str>, image: Option<&str>) -> ManagedApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {
                "helmReleaseRef": {"name": "web"},
                "kustomizationRef": {"name": "web"},
                "versionPolicy": {
                    "chart": chart.map(|c| serde_json::json!({"constraint": c})),
                    "images": image.map(|c| vec![serde_json::json!({"name": "ghcr.io/x/web", "constraint": c})]).unwrap_or_default(),
                },
            },
        }))
        .unwrap()
    }

    fn image(tag: &str) -> Vec<ImageVersion> {
        vec![ImageVersion {
            name: "ghcr.io/x/web".into(),
            tag: Some(tag.into()),
            digest: None,
        }]
    }

    #[test]
    fn versions_outside_the_constraint_are_refused_with_the_range() {
        let app = app(Some(">=1.0.0 <2.0.0"), Some("~1.2"));
        assert!(policy(&app, Some("1.9.0"), &image("1.2.7")).passed);
        let chart = policy(&app, Some("2.0.0"), &[]);
        assert!(!chart.passed);
        assert_eq!(
            chart.message.as_deref(),
            Some(
                "chart 2.0.0 is outside the app's version policy (>=1.0.0 <2.0.0); change the \
                 constraint in the ManagedApp to allow it"
            )
        );
        let img = policy(&app, None, &image("1.3.0"));
        assert!(!img.passed);
        assert!(
            img.message
                .unwrap()
                .starts_with("image ghcr.io/x/web 1.3.0"),
            "the image is named"
        );
    }

    #[test]
    fn no_constraint_allows_any_version_even_downgrades() {
        let app = app(None, None);
        assert!(policy(&app, Some("0.1.0"), &image("latest")).passed);
    }

    #[test]
    fn an_unusable_constraint_or_version_fails_instead_of_passing() {
        let broken = app(Some(">= banana"), None);
        assert!(!policy(&broken, Some("1.0.0"), &[]).passed);
        let strict = app(Some(">=1.0.0"), None);
        let check = policy(&strict, Some("stable"), &[]);
        assert!(!check.passed);
        assert!(check.message.unwrap().contains("not a version"));
    }
}
