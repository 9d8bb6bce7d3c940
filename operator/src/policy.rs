//! Version policy: which updates a ManagedApp offers, and which it holds back and why.
//!
//! `autoUpdate` bounds the size of the jump (`patch` offers 1.2.x, `minor` 1.x.x, `major` and
//! `none` any; `none` only means nothing is applied without approval), and `constraint` is a
//! semver range in the Helm/npm style (`>=12.0.0 <13.0.0`, `~1.2`, `^2`, `1.x`, `a || b`).
//! Everything not offered is returned with a reason a person can read.

use fluxup_api::{AutoUpdate, UpdateType};
use semver::{Version, VersionReq};

/// A version range as users write it: space- or comma-separated comparators that must all
/// hold, alternatives separated by `||`.
#[derive(Debug, Clone)]
pub struct Constraint {
    text: String,
    alternatives: Vec<VersionReq>,
}

impl Constraint {
    /// Parses a range; the error says which part is not understood.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let comparators = normalize_comparators(alternative);
            if comparators.is_empty() {
                return Err(format!("constraint {text:?} has an empty alternative"));
            }
            let req = VersionReq::parse(&comparators.join(", "))
                .map_err(|e| format!("constraint {text:?} is not a semver range: {e}"))?;
            alternatives.push(req);
        }
        Ok(Constraint {
            text: text.trim().to_string(),
            alternatives,
        })
    }

    /// Whether `version` is inside the range.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|req| req.matches(version))
    }
}

/// Splits `>=1.0.0 <2.0.0` or `>= 1.0.0, < 2.0.0` into `[">=1.0.0", "<2.0.0"]`.
fn normalize_comparators(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending_operator = String::new();
    for token in text.split([' ', ',', '\t']).filter(|t| !t.is_empty()) {
        if token.chars().all(|c| "<>=~^".contains(c)) {
            pending_operator.push_str(token);
        } else {
            out.push(format!(
                "{pending_operator}{}",
                token.trim_start_matches('v')
            ));
            pending_operator.clear();
        }
    }
    out
}

/// Parses a version leniently: a leading `v` and missing minor/patch parts are accepted
/// (`v1.2` is 1.2.0), as Helm charts and image tags often have them.
pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim().trim_start_matches(['v', 'V']);
    if let Ok(v) = Version::parse(text) {
        return Some(v);
    }
    let (core, rest) = match text.find(['-', '+']) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    Version::parse(&format!("{padded}{rest}")).ok()
}

/// The size of the jump from `current` to `new`, or `None` when `new` is not newer.
pub fn update_type(current: &Version, new: &Version) -> Option<UpdateType> {
    if new <= current {
        return None;
    }
    Some(if new.major != current.major {
        UpdateType::Major
    } else if new.minor != current.minor {
        UpdateType::Minor
    } else {
        UpdateType::Patch
    })
}

/// Whether `auto_update` lets FluxUp offer a jump of this size.
pub fn size_allowed(auto_update: AutoUpdate, update: UpdateType) -> bool {
    match auto_update {
        AutoUpdate::None | AutoUpdate::Major => true,
        AutoUpdate::Minor => update != UpdateType::Major,
        AutoUpdate::Patch => matches!(update, UpdateType::Patch | UpdateType::Digest),
    }
}

/// A newer version and whether the policy offers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The version as written by its source.
    pub version: String,
    /// The size of the jump.
    pub update_type: UpdateType,
    /// `None` when offered; otherwise why it is held back.
    pub held_back: Option<String>,
}

/// Judges every candidate newer than `current`, newest first. Candidates that are not versions,
/// or not newer, are dropped.
pub fn judge(
    current: &str,
    candidates: &[String],
    auto_update: AutoUpdate,
    constraint: Option<&Constraint>,
) -> Vec<Verdict> {
    let Some(current_version) = parse_version(current) else {
        return Vec::new();
    };
    let mut newer: Vec<(Version, &String)> = candidates
        .iter()
        .filter_map(|c| Some((parse_version(c)?, c)))
        .filter(|(v, _)| v > &current_version)
        // Pre-releases are offered only to apps already on one, as Renovate does by default.
        .filter(|(v, _)| v.pre.is_empty() || !current_version.pre.is_empty())
        .collect();
    newer.sort_by(|a, b| b.0.cmp(&a.0));
    newer.dedup_by(|a, b| a.0 == b.0);
    newer
        .into_iter()
        .filter_map(|(version, text)| {
            let update = update_type(&current_version, &version)?;
            let held_back = if !size_allowed(auto_update, update) {
                Some(format!(
                    "a {} update; autoUpdate is {}",
                    update_word(update),
                    auto_update_word(auto_update)
                ))
            } else {
                constraint
                    .filter(|c| !c.matches(&version))
                    .map(|c| format!("outside the constraint {:?}", c.text))
            };
            Some(Verdict {
                version: text.clone(),
                update_type: update,
                held_back,
            })
        })
        .collect()
}

fn update_word(update: UpdateType) -> &'static str {
    match update {
        UpdateType::Digest => "digest",
        UpdateType::Patch => "patch",
        UpdateType::Minor => "minor",
        UpdateType::Major => "major",
    }
}

fn auto_update_word(auto_update: AutoUpdate) -> &'static str {
    match auto_update {
        AutoUpdate::None => "none",
        AutoUpdate::Patch => "patch",
        AutoUpdate::Minor => "minor",
        AutoUpdate::Major => "major",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_version(s).unwrap()
    }

    #[test]
    fn versions_parse_leniently() {
        assert_eq!(v("v1.2"), Version::new(1, 2, 0));
        assert_eq!(v("7"), Version::new(7, 0, 0));
        assert_eq!(v("1.2.3-rc.1").pre.as_str(), "rc.1");
        assert!(parse_version("latest").is_none());
        assert!(parse_version("1.2.3.4").is_none());
        assert!(parse_version("").is_none());
    }

    #[test]
    fn update_sizes() {
        assert_eq!(
            update_type(&v("1.2.3"), &v("1.2.4")),
            Some(UpdateType::Patch)
        );
        assert_eq!(
            update_type(&v("1.2.3"), &v("1.3.0")),
            Some(UpdateType::Minor)
        );
        assert_eq!(
            update_type(&v("1.2.3"), &v("2.0.0")),
            Some(UpdateType::Major)
        );
        assert_eq!(update_type(&v("1.2.3"), &v("1.2.3")), None);
        assert_eq!(update_type(&v("1.2.3"), &v("1.0.0")), None);
    }

    #[test]
    fn constraints_in_helm_style() {
        let c = Constraint::parse(">=12.0.0 <13.0.0").unwrap();
        assert!(c.matches(&v("12.5.0")));
        assert!(!c.matches(&v("13.0.0")));
        let c = Constraint::parse(">= 1.21.0").unwrap();
        assert!(c.matches(&v("1.22.0")));
        assert!(!c.matches(&v("1.20.9")));
        let c = Constraint::parse("~1.2 || ^3").unwrap();
        assert!(c.matches(&v("1.2.9")));
        assert!(!c.matches(&v("1.3.0")));
        assert!(c.matches(&v("3.4.0")));
        assert!(
            Constraint::parse(">=banana")
                .unwrap_err()
                .contains("not a semver range")
        );
        assert!(Constraint::parse("1.0.0 ||").is_err());
    }

    /// The table of what each policy offers from 12.4.0 with patch, minor and major candidates.
    #[test]
    fn policy_table() {
        let candidates: Vec<String> = ["12.4.1", "12.5.0", "13.0.0", "12.3.0", "not-a-version"]
            .map(String::from)
            .to_vec();
        let offered = |auto: AutoUpdate, constraint: Option<&str>| -> Vec<String> {
            let c = constraint.map(|c| Constraint::parse(c).unwrap());
            judge("12.4.0", &candidates, auto, c.as_ref())
                .into_iter()
                .filter(|v| v.held_back.is_none())
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(
            offered(AutoUpdate::None, None),
            ["13.0.0", "12.5.0", "12.4.1"]
        );
        assert_eq!(
            offered(AutoUpdate::Major, None),
            ["13.0.0", "12.5.0", "12.4.1"]
        );
        assert_eq!(offered(AutoUpdate::Minor, None), ["12.5.0", "12.4.1"]);
        assert_eq!(offered(AutoUpdate::Patch, None), ["12.4.1"]);
        assert_eq!(
            offered(AutoUpdate::None, Some(">=12.0.0 <13.0.0")),
            ["12.5.0", "12.4.1"]
        );
        assert!(offered(AutoUpdate::Patch, Some(">=12.5.0")).is_empty());
    }

    #[test]
    fn held_back_updates_say_why() {
        let candidates = vec!["13.0.0".to_string(), "12.5.0".to_string()];
        let c = Constraint::parse("<12.5.0").unwrap();
        let verdicts = judge("12.4.0", &candidates, AutoUpdate::Minor, Some(&c));
        assert_eq!(
            verdicts[0].held_back.as_deref(),
            Some("a major update; autoUpdate is minor")
        );
        assert_eq!(
            verdicts[1].held_back.as_deref(),
            Some("outside the constraint \"<12.5.0\"")
        );
    }

    #[test]
    fn release_candidates_only_for_apps_already_on_one() {
        let candidates: Vec<String> = ["2.1.0-rc.1", "2.0.0"].map(String::from).to_vec();
        let versions = |current: &str| -> Vec<String> {
            judge(current, &candidates, AutoUpdate::None, None)
                .into_iter()
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(versions("1.0.0"), ["2.0.0"]);
        assert_eq!(versions("2.1.0-beta.1"), ["2.1.0-rc.1"]);
    }

    #[test]
    fn unknown_current_version_offers_nothing() {
        assert!(judge("latest", &["1.0.0".into()], AutoUpdate::None, None).is_empty());
    }
}
