//! Reading Renovate's findings from its JSON log.
//!
//! Renovate, run with `dryRun=lookup`, `LOG_FORMAT=json` and `LOG_LEVEL=debug`, writes one
//! JSON object per line. One of them, `"msg": "packageFiles with updates"`, holds every package
//! file it scanned, by manager, with each dependency's current value and the updates it found.
//! That record is all FluxUp needs; the rest of the log is skipped without being parsed, which
//! keeps ingestion fast on large logs.
//!
//! Bad input never panics and never yields a partial result: it is an [`IngestError`] that says
//! what was wrong, so the caller can keep the last good result and report the problem.

use memchr::memmem;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The message of the record that carries Renovate's findings.
pub const FINDINGS_MESSAGE: &str = "packageFiles with updates";

/// Logs larger than this are refused rather than read: a runaway log should not take the
/// operator's memory with it.
pub const MAX_LOG_BYTES: usize = 512 * 1024 * 1024;

/// What one Renovate run found in one repository.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Findings {
    /// The repository Renovate scanned, e.g. `fluxup/fleet`.
    pub repository: Option<String>,
    /// The Renovate version that wrote the log, where it said.
    pub renovate_version: Option<String>,
    /// Every package file with its dependencies, in the log's order.
    pub package_files: Vec<PackageFile>,
}

/// One file Renovate scanned with one manager.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageFile {
    /// The manager that read it (`flux`, `helm-values`, `kubernetes`, …); filled from the key
    /// the file was listed under.
    #[serde(skip)]
    pub manager: String,
    /// Path of the file in the repository, e.g. `apps/podinfo/helmrelease.yaml`.
    pub package_file: String,
    /// Dependencies found in the file.
    #[serde(default)]
    pub deps: Vec<Dependency>,
}

/// One dependency (a chart, an image) and the updates Renovate found for it.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Dependency {
    /// Name as written, e.g. `podinfo` or `ghcr.io/stefanprodan/podinfo`.
    pub dep_name: Option<String>,
    /// Name used for the lookup, where it differs from `depName`.
    pub package_name: Option<String>,
    /// Where versions come from: `helm`, `docker`, …
    pub datasource: Option<String>,
    /// The version or tag as written in the file.
    pub current_value: Option<String>,
    /// The digest written next to it (`@sha256:…`).
    pub current_digest: Option<String>,
    /// The exact current version, where Renovate resolved one.
    pub current_version: Option<String>,
    /// Registries the dependency is looked up in.
    pub registry_urls: Vec<String>,
    /// Why Renovate skipped it, if it did (e.g. `invalid-value`).
    pub skip_reason: Option<String>,
    /// Source repository of the package.
    pub source_url: Option<String>,
    /// Changelog of the package.
    pub changelog_url: Option<String>,
    /// Home page of the package.
    pub homepage: Option<String>,
    /// Updates found, one per update bucket (e.g. newest minor and newest major).
    pub updates: Vec<Update>,
}

/// One update Renovate proposes for a dependency.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Update {
    /// `major`, `minor`, `patch`, `digest`, `pin`, …
    pub update_type: Option<String>,
    /// The new version.
    pub new_version: Option<String>,
    /// The new value as it would be written in the file.
    pub new_value: Option<String>,
    /// The new digest, for images pinned by digest.
    pub new_digest: Option<String>,
    /// When the new version was released.
    pub release_timestamp: Option<String>,
    /// Major part of the new version.
    pub new_major: Option<u64>,
    /// Minor part of the new version.
    pub new_minor: Option<u64>,
}

/// Why a Renovate log could not be used. Each says what a person should look at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// Nothing to read.
    #[error("the Renovate output is empty")]
    Empty,
    /// Refused before reading.
    #[error("the Renovate output is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a Renovate JSON log at all.
    #[error(
        "this is not Renovate's JSON log: no line is a JSON record from renovate \
         (run Renovate with LOG_FORMAT=json)"
    )]
    NotRenovate,
    /// A Renovate log without the findings record.
    #[error(
        "Renovate's log has no \"{FINDINGS_MESSAGE}\" record: the run failed or ended early, or \
         it ran without LOG_LEVEL=debug"
    )]
    NoFindings,
    /// The log stops in the middle of a record, before any findings.
    #[error(
        "Renovate's output stops in the middle of line {line}, before any \"{FINDINGS_MESSAGE}\" record: it was cut off"
    )]
    Truncated {
        /// 1-based line number of the cut line.
        line: usize,
    },
    /// The findings record is there but cut off or not valid JSON.
    #[error(
        "Renovate's \"{FINDINGS_MESSAGE}\" record on line {line} is not valid JSON (truncated output?): {reason}"
    )]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What the JSON parser said.
        reason: String,
    },
    /// The output could not be read at all (e.g. the Job's pod is gone).
    #[error("the Renovate output could not be read: {0}")]
    Unavailable(String),
    /// The findings record is valid JSON of an unexpected shape.
    #[error(
        "Renovate's \"{FINDINGS_MESSAGE}\" record on line {line} has an unexpected shape: {reason}"
    )]
    UnexpectedShape {
        /// 1-based line number.
        line: usize,
        /// What did not fit.
        reason: String,
    },
}

impl IngestError {
    /// The reason for conditions and Events, in CamelCase.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Empty => "EmptyOutput",
            IngestError::TooLarge { .. } => "OutputTooLarge",
            IngestError::NotRenovate => "NotRenovateOutput",
            IngestError::NoFindings => "NoFindings",
            IngestError::Truncated { .. } => "TruncatedOutput",
            IngestError::Malformed { .. } => "MalformedOutput",
            IngestError::UnexpectedShape { .. } => "UnexpectedOutput",
            IngestError::Unavailable(_) => "OutputUnavailable",
        }
    }
}

/// The parts of a log record FluxUp reads.
#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    config: Option<BTreeMap<String, Vec<PackageFile>>>,
    #[serde(default, rename = "renovateVersion")]
    renovate_version: Option<String>,
}

/// Reads Renovate's JSON log and returns the findings of its last `packageFiles with updates`
/// record (a log may hold several runs; the last is the newest).
pub fn parse_log(log: &[u8]) -> Result<Findings, IngestError> {
    check_size(log)?;
    let findings_marker = memmem::Finder::new(FINDINGS_MESSAGE.as_bytes());
    let renovate_marker = memmem::Finder::new(br#""name":"renovate""#);
    let version_marker = memmem::Finder::new(br#""renovateVersion""#);

    let mut seen_renovate = false;
    let mut renovate_version = None;
    let mut last: Option<(usize, &[u8])> = None;
    for (index, line) in log.split(|b| *b == b'\n').enumerate() {
        // Cheap substring checks first; only the few interesting lines are parsed.
        if !seen_renovate && renovate_marker.find(line).is_some() {
            seen_renovate = true;
        }
        if version_marker.find(line).is_some()
            && let Ok(record) = serde_json::from_slice::<Record>(line)
        {
            renovate_version = record.renovate_version.or(renovate_version);
        }
        if findings_marker.find(line).is_some() {
            last = Some((index + 1, line));
        }
    }
    let Some((line_number, line)) = last else {
        return Err(missing_findings(log, seen_renovate));
    };
    let record: Record = serde_json::from_slice(line).map_err(|e| json_error(&e, line_number))?;
    if record.msg.as_deref() != Some(FINDINGS_MESSAGE) {
        // The phrase appeared inside some other record's text: treat as not found.
        return Err(missing_findings(log, seen_renovate));
    }
    let config = record.config.ok_or_else(|| IngestError::UnexpectedShape {
        line: line_number,
        reason: "it has no \"config\" object".into(),
    })?;
    Ok(Findings {
        repository: record.repository,
        renovate_version,
        package_files: by_manager(config),
    })
}

/// A JSON error on `line`: cut-off or invalid JSON, or valid JSON of another shape.
fn json_error(e: &serde_json::Error, line: usize) -> IngestError {
    let reason = e.to_string();
    if e.is_syntax() || e.is_eof() {
        IngestError::Malformed { line, reason }
    } else {
        IngestError::UnexpectedShape { line, reason }
    }
}

/// Package files listed by manager, as one list with each file's manager filled in.
fn by_manager(files: impl IntoIterator<Item = (String, Vec<PackageFile>)>) -> Vec<PackageFile> {
    files
        .into_iter()
        .flat_map(|(manager, files)| {
            files.into_iter().map(move |mut file| {
                file.manager = manager.clone();
                file
            })
        })
        .collect()
}

/// Empty or oversized output is refused before it is read.
fn check_size(output: &[u8]) -> Result<(), IngestError> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Empty);
    }
    if output.len() > MAX_LOG_BYTES {
        return Err(IngestError::TooLarge {
            size: output.len(),
            limit: MAX_LOG_BYTES,
        });
    }
    Ok(())
}

/// Why a log has no findings: cut off mid-record, a Renovate run without them, or not Renovate.
fn missing_findings(log: &[u8], seen_renovate: bool) -> IngestError {
    let trimmed = log.trim_ascii_end();
    let last_line_start = trimmed
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let last_line = &trimmed[last_line_start..];
    if seen_renovate
        && last_line.starts_with(b"{")
        && serde_json::from_slice::<serde::de::IgnoredAny>(last_line).is_err()
    {
        let line = trimmed.iter().filter(|b| **b == b'\n').count() + 1;
        return IngestError::Truncated { line };
    }
    if seen_renovate {
        IngestError::NoFindings
    } else {
        IngestError::NotRenovate
    }
}

/// Renovate's report file (`reportType: "file"`): `{"repositories": {"<repo>": {"packageFiles":
/// {"<manager>": [...]}}}}`, the same package files as the log's findings record, and written
/// at any log level.
#[derive(Deserialize)]
struct Report {
    repositories: BTreeMap<String, ReportRepository>,
}

#[derive(Deserialize)]
struct ReportRepository {
    #[serde(default, rename = "packageFiles")]
    package_files: BTreeMap<String, Vec<PackageFile>>,
}

/// Reads a Renovate report file. Several repositories are merged; `repository` names the one
/// when there is one.
pub fn parse_report(report: &[u8]) -> Result<Findings, IngestError> {
    check_size(report)?;
    let parsed: Report = serde_json::from_slice(report).map_err(|e| json_error(&e, e.line()))?;
    let repository = (parsed.repositories.len() == 1)
        .then(|| parsed.repositories.keys().next().cloned())
        .flatten();
    let package_files = by_manager(
        parsed
            .repositories
            .into_values()
            .flat_map(|r| r.package_files),
    );
    Ok(Findings {
        repository,
        renovate_version: None,
        package_files,
    })
}

/// A report file (one JSON object with `repositories`) or a JSON log, whichever `output` is.
pub fn parse_output(output: &[u8]) -> Result<Findings, IngestError> {
    let start = output.trim_ascii_start();
    let one_object = start.starts_with(b"{")
        && memmem::find(start, b"\"repositories\"").is_some()
        && memmem::find(start, FINDINGS_MESSAGE.as_bytes()).is_none();
    if one_object {
        parse_report(output)
    } else {
        parse_log(output)
    }
}

/// Splits an image reference's tag from a digest written next to it: `1.2.3@sha256:ab…`.
pub fn split_digest(value: &str) -> (&str, Option<&str>) {
    match value.split_once('@') {
        Some((tag, digest)) if digest.contains(':') => (tag, Some(digest)),
        _ => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINDINGS: &str = r#"{"name":"renovate","hostname":"h","pid":1,"level":20,"logContext":"x","repository":"fluxup/fleet","config":{"flux":[{"deps":[{"depName":"podinfo","currentValue":"6.5.0","datasource":"helm","registryUrls":["http://127.0.0.1:18040"],"sourceUrl":"https://github.com/stefanprodan/podinfo","updates":[{"bucket":"non-major","newVersion":"6.7.1","newValue":"6.7.1","releaseTimestamp":"2024-10-01T10:00:00.000Z","newMajor":6,"newMinor":7,"updateType":"minor"},{"bucket":"major","newVersion":"7.0.0","newValue":"7.0.0","newMajor":7,"newMinor":0,"updateType":"major"}]}],"packageFile":"apps/podinfo/helmrelease.yaml"}],"helm-values":[{"deps":[{"depName":"ghcr.io/stefanprodan/podinfo","currentValue":"6.5.0","currentDigest":"sha256:aaa","datasource":"docker","updates":[{"newVersion":"6.5.1","newValue":"6.5.1","newDigest":"sha256:bbb","updateType":"patch"}]}],"packageFile":"apps/podinfo/helmrelease.yaml"}]},"msg":"packageFiles with updates","time":"2026-11-29T10:00:00.000Z","v":0}"#;

    fn log(lines: &[&str]) -> Vec<u8> {
        lines.join("\n").into_bytes()
    }

    #[test]
    fn a_report_file_gives_the_same_package_files_as_the_log() {
        let report = r#"{"problems":[],"repositories":{"fluxup/fleet":{"problems":[],"branches":[],
            "packageFiles":{"flux":[{"packageFile":"apps/podinfo/helmrelease.yaml","deps":[
            {"depName":"podinfo","datasource":"helm","currentValue":"6.5.0",
             "updates":[{"newVersion":"6.7.1","updateType":"minor"}]}]}]}}}}"#;
        let findings = parse_output(report.as_bytes()).unwrap();
        assert_eq!(findings.repository.as_deref(), Some("fluxup/fleet"));
        assert_eq!(findings.package_files[0].manager, "flux");
        assert_eq!(
            findings.package_files[0].deps[0].updates[0]
                .new_version
                .as_deref(),
            Some("6.7.1")
        );
        // A log is still read as a log, and a cut-off report says so.
        assert!(parse_output(&log(&[FINDINGS])).is_ok());
        assert!(matches!(
            parse_output(&report.as_bytes()[..report.len() - 10]),
            Err(IngestError::Malformed { .. })
        ));
    }

    #[test]
    fn reads_every_manager_and_update() {
        let start = r#"{"name":"renovate","level":30,"msg":"Repository started","renovateVersion":"39.264.0","time":"t","v":0}"#;
        let findings = parse_log(&log(&[start, "not json at all", FINDINGS, ""])).unwrap();
        assert_eq!(findings.repository.as_deref(), Some("fluxup/fleet"));
        assert_eq!(findings.renovate_version.as_deref(), Some("39.264.0"));
        let managers: Vec<_> = findings
            .package_files
            .iter()
            .map(|f| f.manager.as_str())
            .collect();
        assert_eq!(managers, ["flux", "helm-values"]);
        let chart = &findings.package_files[0].deps[0];
        assert_eq!(chart.dep_name.as_deref(), Some("podinfo"));
        assert_eq!(chart.updates.len(), 2);
        assert_eq!(chart.updates[1].update_type.as_deref(), Some("major"));
        let image = &findings.package_files[1].deps[0];
        assert_eq!(image.current_digest.as_deref(), Some("sha256:aaa"));
        assert_eq!(image.updates[0].new_digest.as_deref(), Some("sha256:bbb"));
    }

    #[test]
    fn the_last_run_wins() {
        let newer = FINDINGS.replace("6.7.1", "6.8.0");
        let findings = parse_log(&log(&[FINDINGS, &newer])).unwrap();
        assert_eq!(
            findings.package_files[0].deps[0].updates[0]
                .new_version
                .as_deref(),
            Some("6.8.0")
        );
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert_eq!(parse_log(b"  \n"), Err(IngestError::Empty));
        assert_eq!(parse_log(b"hello\nworld"), Err(IngestError::NotRenovate));
        let started = r#"{"name":"renovate","level":30,"msg":"Repository started"}"#;
        assert_eq!(parse_log(started.as_bytes()), Err(IngestError::NoFindings));
        // Cut off before the record's message: the log ends mid-record.
        let truncated = &FINDINGS[..FINDINGS.len() / 2];
        assert_eq!(
            parse_log(&log(&[started, truncated])),
            Err(IngestError::Truncated { line: 2 })
        );
        // Cut off after it: the record itself is broken.
        let truncated = &FINDINGS[..FINDINGS.len() - 30];
        assert!(matches!(
            parse_log(&log(&[started, truncated])),
            Err(IngestError::Malformed { line: 2, .. })
        ));
        let wrong_shape =
            r#"{"name":"renovate","msg":"packageFiles with updates","config":{"flux":"nope"}}"#;
        assert!(matches!(
            parse_log(wrong_shape.as_bytes()),
            Err(IngestError::UnexpectedShape { line: 1, .. })
        ));
        let mention = r#"{"name":"renovate","msg":"about to log packageFiles with updates"}"#;
        assert_eq!(parse_log(mention.as_bytes()), Err(IngestError::NoFindings));
    }

    #[test]
    fn error_messages_point_at_the_fix() {
        assert!(
            IngestError::NoFindings
                .to_string()
                .contains("LOG_LEVEL=debug")
        );
        assert!(
            IngestError::NotRenovate
                .to_string()
                .contains("LOG_FORMAT=json")
        );
    }

    #[test]
    fn digests_are_kept_apart_from_tags() {
        assert_eq!(
            split_digest("1.2.3@sha256:abc"),
            ("1.2.3", Some("sha256:abc"))
        );
        assert_eq!(split_digest("1.2.3"), ("1.2.3", None));
        assert_eq!(split_digest("weird@"), ("weird@", None));
    }
}
