//! Version policy: which updates a ManagedApp offers, and which it holds back and why.
//!
//! `autoUpdate` bounds the size of the jump (`patch` offers 1.2.x, `minor` 1.x.x, `major` and
//! `none` any; `none` only means nothing is applied without approval), and `constraint` is a
//! version range read exactly as Helm reads one, with Masterminds/semver v3 (`constraints.go`):
//!
//! - a bare or `=` version is exact (`12.4.0` is only 12.4.0, not Cargo's `^12.4.0`); missing
//!   or wildcard parts make it a range (`1.2`, `1.2.x` = `>=1.2.0 <1.3.0`; `1`, `1.x` =
//!   `>=1.0.0 <2.0.0`; `*` any);
//! - `!=`, `>`, `>=` (`=>`), `<`, `<=` (`=<`), `~` (`~>`), `^`, with Masterminds' reading of
//!   wildcards (`>1.2` is `>=1.3.0`, `<=1.2` is `<1.3.0`, `<1.2` is `<1.2.0`);
//! - `A - B` is `>=A <=B`; comparators separated by spaces or a comma must all hold, `||`
//!   separates alternatives; a leading `v` is accepted;
//! - a pre-release version matches only an alternative in which some comparator names a
//!   pre-release (`>=1.0.0-0`), as Helm does by default.
//!
//! Everything not offered is returned with a reason a person can read.

use std::cmp::Ordering;

use fluxup_api::{AutoUpdate, UpdateType};
use semver::{BuildMetadata, Prerelease, Version};

/// A version range as users write it: space- or comma-separated comparators that must all
/// hold, alternatives separated by `||`.
#[derive(Debug, Clone)]
pub struct Constraint {
    text: String,
    alternatives: Vec<Vec<Comparator>>,
}

impl Constraint {
    /// Parses a range; the error says which part is not understood.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            if alternative.trim().is_empty() {
                return Err(format!("constraint {text:?} has an empty alternative"));
            }
            let comparators = parse_alternative(alternative)
                .map_err(|e| format!("constraint {text:?} is not a semver range: {e}"))?;
            alternatives.push(comparators);
        }
        Ok(Constraint {
            text: text.trim().to_string(),
            alternatives,
        })
    }

    /// Whether `version` is inside the range.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|comparators| {
            // Masterminds decides per alternative whether pre-releases are in play at all.
            let include_pre = comparators.iter().any(|c| !c.version.pre.is_empty());
            comparators.iter().all(|c| c.matches(version, include_pre))
        })
    }
}

/// `""`/`=` exact (or a range when wildcarded), and the usual comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Exact,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "" | "=" => Op::Exact,
            "!=" => Op::NotEqual,
            ">" => Op::Greater,
            "<" => Op::Less,
            ">=" | "=>" => Op::GreaterEqual,
            "<=" | "=<" => Op::LessEqual,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// The first part of a constraint's version that is missing or `x`/`X`/`*`; it and the parts
/// after it are zero in `Comparator::version`. (Masterminds' `dirty`, `minorDirty`,
/// `patchDirty`: a wildcard major sets only `dirty`.)
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wildcard {
    None,
    Major,
    Minor,
    Patch,
}

#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    version: Version,
    wildcard: Wildcard,
}

impl Comparator {
    /// Masterminds' `constraint.check`, one operator at a time.
    fn matches(&self, v: &Version, include_pre: bool) -> bool {
        if !v.pre.is_empty() && !include_pre {
            return false;
        }
        let c = &self.version;
        let dirty = self.wildcard != Wildcard::None;
        let minor_dirty = self.wildcard == Wildcard::Minor;
        let patch_dirty = self.wildcard == Wildcard::Patch;
        let order = v.cmp_precedence(c);
        match self.op {
            Op::Exact if dirty => self.tilde(v),
            Op::Exact => order == Ordering::Equal,
            Op::NotEqual => {
                if dirty {
                    if v.major != c.major {
                        return true;
                    }
                    if minor_dirty {
                        return false;
                    }
                    if v.minor != c.minor {
                        return true;
                    }
                    if patch_dirty {
                        return v.pre != c.pre;
                    }
                    if v.patch != c.patch {
                        return true;
                    }
                }
                order != Ordering::Equal
            }
            Op::Greater if !dirty => order == Ordering::Greater,
            Op::Greater => match v.major.cmp(&c.major) {
                Ordering::Greater => true,
                Ordering::Less => false,
                // `>1` needs 2.0.0 or later, `>1.2` needs 1.3.0 or later.
                Ordering::Equal if minor_dirty => false,
                Ordering::Equal if patch_dirty => v.minor > c.minor,
                Ordering::Equal => order == Ordering::Greater,
            },
            Op::Less => order == Ordering::Less,
            Op::GreaterEqual => order != Ordering::Less,
            Op::LessEqual if !dirty => order != Ordering::Greater,
            // `<=1` is below 2.0.0, `<=1.2` below 1.3.0.
            Op::LessEqual => {
                v.major < c.major || (v.major == c.major && (minor_dirty || v.minor <= c.minor))
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => {
                if order == Ordering::Less {
                    false
                } else if c.major > 0 || minor_dirty {
                    v.major == c.major
                } else if v.major > 0 {
                    false
                } else if c.minor > 0 || patch_dirty {
                    v.minor == c.minor
                } else {
                    v.minor == 0 && v.patch == c.patch
                }
            }
        }
    }

    /// `~1.2.3` is `>=1.2.3 <1.3.0`, `~1` is `>=1.0.0 <2.0.0`, `~0.0.0` and `~*` any.
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        let minor_dirty = self.wildcard == Wildcard::Minor;
        if v.cmp_precedence(c) == Ordering::Less {
            return false;
        }
        if (c.major, c.minor, c.patch) == (0, 0, 0)
            && !minor_dirty
            && self.wildcard != Wildcard::Patch
        {
            return true;
        }
        v.major == c.major && (minor_dirty || v.minor == c.minor)
    }
}

/// Parses one `||` alternative: comparators separated by spaces or one comma, each an operator
/// and a version with optional space between, or a hyphen range `A - B`.
fn parse_alternative(text: &str) -> Result<Vec<Comparator>, String> {
    let mut comparators = Vec::new();
    for piece in text.split(',') {
        let words: Vec<&str> = piece.split_whitespace().collect();
        if words.is_empty() {
            return Err("a comma with no comparator after it".into());
        }
        let mut i = 0;
        while i < words.len() {
            let (op_text, mut version_text) = split_operator(words[i]);
            i += 1;
            if version_text.is_empty() {
                version_text = words
                    .get(i)
                    .ok_or_else(|| format!("{op_text:?} has no version after it"))?;
                i += 1;
            }
            if op_text.is_empty() && words.get(i) == Some(&"-") {
                let upper = words
                    .get(i + 1)
                    .ok_or_else(|| format!("the range from {version_text:?} has no end"))?;
                comparators.push(comparator(Op::GreaterEqual, version_text)?);
                comparators.push(comparator(Op::LessEqual, upper)?);
                i += 2;
                continue;
            }
            let op = Op::parse(op_text)
                .ok_or_else(|| format!("{op_text:?} is not a comparison operator"))?;
            comparators.push(comparator(op, version_text)?);
        }
    }
    Ok(comparators)
}

fn split_operator(word: &str) -> (&str, &str) {
    let end = word
        .find(|c: char| !"=!<>~^".contains(c))
        .unwrap_or(word.len());
    word.split_at(end)
}

/// A constraint's version: `v`, then one to three parts, each a number or `x`/`X`/`*`, then
/// optional `-pre` and `+build`.
fn comparator(op: Op, text: &str) -> Result<Comparator, String> {
    let not_a_version = || format!("{text:?} is not a version");
    let bare = text.strip_prefix('v').unwrap_or(text);
    let (rest, build) = match bare.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (bare, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    if pre == Some("") || build == Some("") {
        return Err(not_a_version());
    }
    if let Some(build) = build {
        BuildMetadata::new(build).map_err(|e| format!("{text:?}: {e}"))?;
    }
    let pre = Prerelease::new(pre.unwrap_or("")).map_err(|e| format!("{text:?}: {e}"))?;

    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(not_a_version());
    }
    let mut numbers = [0u64; 3];
    let mut wildcard = Wildcard::None;
    for (i, which) in [Wildcard::Major, Wildcard::Minor, Wildcard::Patch]
        .into_iter()
        .enumerate()
    {
        match parts.get(i).copied() {
            Some("x" | "X" | "*") | None => {
                if wildcard == Wildcard::None {
                    wildcard = which;
                }
            }
            Some(part) => {
                let leading_zero = part.len() > 1 && part.starts_with('0');
                if part.is_empty() || leading_zero || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(not_a_version());
                }
                if wildcard == Wildcard::None {
                    numbers[i] = part.parse().map_err(|_| not_a_version())?;
                }
            }
        }
    }
    let [major, minor, patch] = numbers;
    Ok(Comparator {
        op,
        version: Version {
            major,
            minor,
            patch,
            pre,
            build: BuildMetadata::EMPTY,
        },
        wildcard,
    })
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
/// or not newer, are dropped; those in `skip` (a person skipped them) are held back first.
pub fn judge(
    current: &str,
    candidates: &[String],
    auto_update: AutoUpdate,
    constraint: Option<&Constraint>,
    skip: &[String],
) -> Vec<Verdict> {
    let skipped = |version: &Version| {
        skip.iter()
            .any(|s| parse_version(s).is_some_and(|s| &s == version))
    };
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
            let held_back = if skipped(&version) {
                Some("skipped by a person (versionPolicy skip)".to_string())
            } else if !size_allowed(auto_update, update) {
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

    #[test]
    fn staying_on_a_major_or_minor_offers_what_it_says_and_nothing_else() {
        // The dashboard's ranges, read by the same parser that filters the versions.
        use fluxup_api::{Stay, stay_on};
        let major = Constraint::parse(&stay_on("12.4.1", Stay::Major).unwrap()).unwrap();
        let minor = Constraint::parse(&stay_on("v12.4.1", Stay::Minor).unwrap()).unwrap();
        assert_eq!(stay_on("12.4.1", Stay::Major).as_deref(), Some("12.x"));
        assert_eq!(stay_on("v12.4.1", Stay::Minor).as_deref(), Some("12.4.x"));
        let v = |s: &str| parse_version(s).unwrap();
        for (version, in_major, in_minor) in [
            ("12.4.2", true, true),
            ("12.5.0", true, false),
            ("12.99.9", true, false),
            ("13.0.0", false, false),
            ("11.9.0", false, false),
            ("12.3.9", true, false),
        ] {
            assert_eq!(major.matches(&v(version)), in_major, "{version} in 12.x");
            assert_eq!(minor.matches(&v(version)), in_minor, "{version} in 12.4.x");
        }
        assert_eq!(stay_on("latest", Stay::Major), None);
    }

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

    /// Cases from Masterminds/semver v3 constraints_test.go (`TestConstraintsCheck`, then the
    /// single-comparator `TestConstraintCheck` minus its empty-string rows, which
    /// `NewConstraint` refuses as we do), so a range means here what it means to Helm.
    const MASTERMINDS_CASES: &[(&str, &str, bool)] = &[
        ("*", "1.2.3", true),
        ("~0.0.0", "1.2.3", true),
        ("0.x.x", "1.2.3", false),
        ("0.0.x", "1.2.3", false),
        ("0.0.0", "1.2.3", false),
        ("^0.0.0", "1.2.3", false),
        ("= 2.0", "1.2.3", false),
        ("= 2.0", "2.0.0", true),
        ("4.1", "4.1.0", true),
        ("4.1.x", "4.1.3", true),
        ("1.x", "1.4", true),
        ("!=4.1", "4.1.0", false),
        ("!=4.1-alpha", "4.1.0-alpha", false),
        ("!=4.1-alpha", "4.1.1-alpha", false),
        ("!=4.1-alpha", "4.1.0", true),
        ("!=4.1", "5.1.0", true),
        ("!=4.x", "5.1.0", true),
        ("!=4.x", "4.1.0", false),
        ("!=4.1.x", "4.2.0", true),
        ("!=4.2.x", "4.2.3", false),
        (">1.1", "4.1.0", true),
        (">1.1", "1.1.0", false),
        ("<1.1", "0.1.0", true),
        ("<1.1", "1.1.0", false),
        ("<1.1", "1.1.1", false),
        ("<1.x", "1.1.1", false),
        ("<1.x", "0.1.1", true),
        ("<1.x", "2.0.0", false),
        ("<1.1.x", "1.2.1", false),
        ("<1.1.x", "1.1.500", false),
        ("<1.1.x", "1.0.500", true),
        ("<1.2.x", "1.1.1", true),
        (">=1.1", "4.1.0", true),
        (">=1.1", "4.1.0-beta", false),
        (">=1.1", "1.1.0", true),
        (">=1.1", "0.0.9", false),
        ("<=1.1", "0.1.0", true),
        ("<=1.1", "0.1.0-alpha", false),
        ("<=1.1-a", "0.1.0-alpha", true),
        ("<=1.1", "1.1.0", true),
        ("<=1.x", "1.1.0", true),
        ("<=2.x", "3.0.0", false),
        ("<=1.1", "1.1.1", true),
        ("<=1.1.x", "1.2.500", false),
        ("<=4.5", "3.4.0", true),
        ("<=4.5", "3.7.0", true),
        ("<=4.5", "4.6.3", false),
        (">1.1, <2", "1.1.1", false),
        (">1.1, <2", "1.2.1", true),
        (">1.1, <3", "4.3.2", false),
        (">=1.1, <2, !=1.2.3", "1.2.3", false),
        (">1.1 <2", "1.1.1", false),
        (">1.1 <2", "1.2.1", true),
        (">1.1    <3", "4.3.2", false),
        (">=1.1    <2    !=1.2.3", "1.2.3", false),
        (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
        (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
        (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
        (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
        (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
        (">=1.1 <2 !=1.2.3", "1.2.3", false),
        (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", true),
        (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", false),
        (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", true),
        (">=1.1 <2 !=1.2.3 || > 3", "3.0.0", false),
        (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", false),
        ("> 1.1, <     2", "1.1.1", false),
        (">   1.1, <2", "1.2.1", true),
        (">1.1, <  3", "4.3.2", false),
        (">= 1.1, <     2, !=1.2.3", "1.2.3", false),
        ("> 1.1 < 2", "1.1.1", false),
        (">1.1 < 2", "1.2.1", true),
        ("> 1.1    <3", "4.3.2", false),
        (">=1.1    < 2    != 1.2.3", "1.2.3", false),
        (">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
        (">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", false),
        (">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", true),
        (">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
        (">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
        (">= 1.1 <2 != 1.2.3", "1.2.3", false),
        (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", true),
        (">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", false),
        (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", true),
        (">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", false),
        (">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", false),
        (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", true),
        (">= 1.0.0  <= 2.0.0-beta", "1.0.1", true),
        (">= 1.0.0  <= 2.0.0-beta", "3.0.0", false),
        (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", true),
        (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", false),
        (
            ">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3",
            "1.0.1-beta",
            true,
        ),
        (
            ">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3",
            "1.0.1-beta",
            false,
        ),
        (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", true),
        ("1.1 - 2", "1.1.1", true),
        ("1.5.0 - 4.5", "3.7.0", true),
        ("1.1-3", "4.3.2", false),
        ("^1.1", "1.1.1", true),
        ("^1.1", "4.3.2", false),
        ("^1.x", "1.1.1", true),
        ("^2.x", "1.1.1", false),
        ("^1.x", "2.1.1", false),
        ("^1.x", "1.1.1-beta1", false),
        ("^1.1.2-alpha", "1.2.1-beta1", true),
        ("^1.2.x-alpha", "1.1.1-beta1", false),
        ("^0.0.1", "0.0.1", true),
        ("^0.0.1", "0.3.1", false),
        ("~*", "2.1.1", true),
        ("~1", "2.1.1", false),
        ("~1", "1.3.5", true),
        ("~1", "1.4", true),
        ("~1.x", "2.1.1", false),
        ("~1.x", "1.3.5", true),
        ("~1.x", "1.4", true),
        ("~1.1", "1.1.1", true),
        ("~1.1", "1.1.1-alpha", false),
        ("~1.1-alpha", "1.1.1-beta", true),
        ("~1.1.1-beta", "1.1.1-alpha", false),
        ("~1.1.1-beta", "1.1.1", true),
        ("~1.2.3", "1.2.5", true),
        ("~1.2.3", "1.2.2", false),
        ("~1.2.3", "1.3.2", false),
        ("~1.1", "1.2.3", false),
        ("~1.3", "2.4.5", false),
        ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
        ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", true),
        ("=2.0.0", "1.2.3", false),
        ("=2.0.0", "2.0.0", true),
        ("=2.0", "1.2.3", false),
        ("=2.0", "2.0.0", true),
        ("=2.0", "2.0.1", true),
        ("!=4.1.0", "4.1.0", false),
        ("!=4.1.0", "4.1.1", true),
        ("!=4.1", "4.1.1", false),
        ("!=4.1", "5.1.0-alpha.1", false),
        ("!=4.1.0", "5.1.0-alpha.1", false),
        ("<11", "0.1.0", true),
        ("<11", "11.1.0", false),
        ("<=11", "1.2.3", true),
        ("<=11", "12.2.3", false),
        ("<=11", "11.2.3", true),
        ("<=1.1", "1.2.3", false),
        (">0", "0", false),
        (">0", "1", true),
        (">0", "0.0.1-alpha", false),
        (">0.0", "0.0.1-alpha", false),
        (">0-0", "0.0.1-alpha", false),
        (">0.0-0", "0.0.1-alpha", false),
        (">0", "0.0.0-alpha", false),
        (">0-0", "0.0.0-alpha", false),
        (">0.0.0-0", "0.0.0-alpha", true),
        (">1.2.3-alpha.1", "1.2.3-alpha.2", true),
        (">1.2.3-alpha.1", "1.3.3-alpha.2", true),
        (">11", "11.1.0", false),
        (">11.1", "11.1.0", false),
        (">11.1", "11.1.1", false),
        (">11.1", "11.2.1", true),
        (">=11", "11.1.2", true),
        (">=11.1", "11.1.2", true),
        (">=11.1", "11.0.2", false),
        (">=0", "0.0.1-alpha", false),
        (">=0.0", "0.0.1-alpha", false),
        (">=0-0", "0.0.1-alpha", true),
        (">=0.0-0", "0.0.1-alpha", true),
        (">=0", "0.0.0-alpha", false),
        (">=0-0", "0.0.0-alpha", true),
        (">=0.0.0-0", "0.0.0-alpha", true),
        (">=0.0.0-0", "1.2.3", true),
        (">=0.0.0-0", "3.4.5-beta.1", true),
        ("<0", "0.0.0-alpha", false),
        ("<0-z", "0.0.0-alpha", true),
        (">=0", "0", true),
        ("=0", "1", false),
        ("*", "1", true),
        ("*", "4.5.6", true),
        ("*", "1.2.3-alpha.1", false),
        ("*-0", "1.2.3-alpha.1", true),
        ("2.*", "1", false),
        ("2.*", "3.4.5", false),
        ("2.*", "2.1.1", true),
        ("2.1.*", "2.1.1", true),
        ("2.1.*", "2.2.1", false),
        ("2", "1", false),
        ("2", "3.4.5", false),
        ("2", "2.1.1", true),
        ("2.1", "2.1.1", true),
        ("2.1", "2.2.1", false),
        ("~1.2.3", "1.2.4", true),
        ("~1.2.3", "1.3.4", false),
        ("~1.2", "1.2.4", true),
        ("~1.2", "1.3.4", false),
        ("~1", "1.2.4", true),
        ("~1", "2.3.4", false),
        ("~0.2.3", "0.2.5", true),
        ("~0.2.3", "0.3.5", false),
        ("~1.2.3-beta.2", "1.2.3-beta.4", true),
        ("~1.2.3-beta.2", "1.2.4-beta.2", true),
        ("~1.2.3-beta.2", "1.3.4-beta.2", false),
        ("^1.2.3", "1.8.9", true),
        ("^1.2.3", "2.8.9", false),
        ("^1.2.3", "1.2.1", false),
        ("^1.1.0", "2.1.0", false),
        ("^1.2.0", "2.2.1", false),
        ("^1.2.0", "1.2.1-alpha.1", false),
        ("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
        ("^1.2.0-alpha.0", "1.2.1-alpha.0", true),
        ("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
        ("^1.2", "1.8.9", true),
        ("^1.2", "2.8.9", false),
        ("^1", "1.8.9", true),
        ("^1", "2.8.9", false),
        ("^0.2.3", "0.2.5", true),
        ("^0.2.3", "0.5.6", false),
        ("^0.2", "0.2.5", true),
        ("^0.2", "0.5.6", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.4", false),
        ("^0.0", "0.0.3", true),
        ("^0.0", "0.1.4", false),
        ("^0.0", "1.0.4", false),
        ("^0", "0.2.3", true),
        ("^0", "1.1.4", false),
        ("^0.2.3-beta.2", "0.2.3-beta.4", true),
        ("^0.2.3-beta.2", "0.2.4-beta.2", true),
        ("^0.2.3-beta.2", "0.3.4-beta.2", false),
        ("^0.2.3-beta.2", "0.2.3-beta.2", true),
    ];

    #[test]
    fn constraints_read_as_helm_reads_them() {
        let mut wrong = Vec::new();
        for &(constraint, version, expected) in MASTERMINDS_CASES.iter().chain(FLUXUP_CASES) {
            let c = Constraint::parse(constraint)
                .unwrap_or_else(|e| panic!("{constraint:?} should parse: {e}"));
            if c.matches(&v(version)) != expected {
                wrong.push(format!("{constraint:?} vs {version}: expected {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// The readings this project relies on, spelled out (each follows from Masterminds' code).
    const FLUXUP_CASES: &[(&str, &str, bool)] = &[
        // A bare version is exact, not Cargo's caret.
        ("12.4.0", "12.4.0", true),
        ("12.4.0", "12.4.1", false),
        ("12.4.0", "12.5.0", false),
        ("=12.4.0", "12.4.1", false),
        ("v12.4.0", "12.4.0", true),
        ("12.4.0+build.1", "12.4.0", true),
        ("1.2", "1.2.9", true),
        ("1.2", "1.3.0", false),
        ("1.2.*", "1.2.0", true),
        ("1", "1.9.9", true),
        ("1", "2.0.0", false),
        ("x", "9.9.9", true),
        ("X", "0.0.1", true),
        // Wildcards and comparisons.
        (">1.2", "1.2.9", false),
        (">1.2", "1.3.0", true),
        (">1", "1.9.0", false),
        (">1", "2.0.0", true),
        ("<=1.2", "1.2.99", true),
        ("<=1.2", "1.3.0", false),
        ("<1.2", "1.1.9", true),
        ("<1.2", "1.2.0", false),
        ("=> 1.2, =< 1.4", "1.4.0", true),
        ("~> 1.2", "1.2.5", true),
        ("~1.2.3", "1.3.0", false),
        ("~1", "1.9.0", true),
        ("^0.2.3", "0.3.0", false),
        ("^0.0.3", "0.0.4", false),
        ("^0", "0.9.0", true),
        ("^0", "1.0.0", false),
        ("^1.2.3", "1.9.9", true),
        ("^1.2.3", "2.0.0", false),
        // Hyphen ranges: an upper bound with missing parts takes the whole of them.
        ("1.2 - 1.4.5", "1.2.0", true),
        ("1.2 - 1.4.5", "1.4.6", false),
        ("2.3.4 - 4.5", "4.5.9", true),
        ("2.3.4 - 4.5", "4.6.0", false),
        ("2.3.4 - 4.5", "2.3.3", false),
        // Alternatives, and pre-releases only where an alternative names one.
        (">=12.0.0 <13.0.0", "13.0.0-rc.1", false),
        (">=12.0.0-0 <13.0.0", "12.1.0-rc.1", true),
        (">=2.0.0-0 || <1.0.0", "0.9.0-rc.1", false),
        (">=2.0.0-0 || <1.0.0", "2.1.0-rc.1", true),
        ("!=1.2.3", "1.2.3-rc.1", false),
    ];

    #[test]
    fn malformed_constraints_are_refused() {
        // Also from Masterminds' `TestNewConstraint`: these are errors there too.
        for text in [
            ">= bar",
            "BAR >= 1.2.3",
            "v1.2.3-beta.01",
            "12.3.4.1234",
            "12.3.34~ 1.2.3",
            "",
            "1.0.0 ||",
            ">=1.0.0,",
            ">=1.0.0,, <2",
            ">> 1.0.0",
            "> = 1.0.0",
            ">=1.0 - 2.0",
            "1.0 -",
            "1.2.3-",
            "01.2.3",
        ] {
            assert!(
                Constraint::parse(text).is_err(),
                "{text:?} should be refused"
            );
        }
        for text in [
            ">= 1.1",
            ">40.50.60, < 50.70",
            "v2.3.5-20161202202307-sha.e8fc5e5",
            "v1.2.3-0abc",
            ">= 1.2.3, < 2.0 || => 3.0, < 4",
            "3 - 4 || => 3.0, < 4",
            "12.3.34 ~1.2.3",
            "1.0.0 - 2.0.0, <=2.0.0",
        ] {
            assert!(Constraint::parse(text).is_ok(), "{text:?} should parse");
        }
    }

    /// The table of what each policy offers from 12.4.0 with patch, minor and major candidates.
    #[test]
    fn policy_table() {
        let candidates: Vec<String> = ["12.4.1", "12.5.0", "13.0.0", "12.3.0", "not-a-version"]
            .map(String::from)
            .to_vec();
        let offered = |auto: AutoUpdate, constraint: Option<&str>| -> Vec<String> {
            let c = constraint.map(|c| Constraint::parse(c).unwrap());
            judge("12.4.0", &candidates, auto, c.as_ref(), &[])
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
        let verdicts = judge("12.4.0", &candidates, AutoUpdate::Minor, Some(&c), &[]);
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
            judge(current, &candidates, AutoUpdate::None, None, &[])
                .into_iter()
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(versions("1.0.0"), ["2.0.0"]);
        assert_eq!(versions("2.1.0-beta.1"), ["2.1.0-rc.1"]);
    }

    #[test]
    fn unknown_current_version_offers_nothing() {
        assert!(judge("latest", &["1.0.0".into()], AutoUpdate::None, None, &[]).is_empty());
    }

    #[test]
    fn a_skipped_version_is_held_back_and_the_next_one_offered() {
        let candidates: Vec<String> = ["12.4.2", "12.4.1", "12.5.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let verdicts = judge(
            "12.4.0",
            &candidates,
            AutoUpdate::Patch,
            None,
            &["v12.4.2".into()],
        );
        let held: Vec<(&str, Option<&str>)> = verdicts
            .iter()
            .map(|v| (v.version.as_str(), v.held_back.as_deref()))
            .collect();
        assert_eq!(
            held[1],
            ("12.4.2", Some("skipped by a person (versionPolicy skip)"))
        );
        assert_eq!(held[2], ("12.4.1", None));
        assert!(held[0].1.is_some_and(|r| r.contains("minor update")));
    }
}
