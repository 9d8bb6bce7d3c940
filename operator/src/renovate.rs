//! Reading Renovate's findings from its JSON log.
//!
//! Renovate, run with `dryRun=lookup`, `LOG_FORMAT=json` and `LOG_LEVEL=debug`, writes one
//! JSON object per line. One of them, `"msg": "packageFiles with updates"`, holds every package
//! file it scanned, by manager, with each dependency's current value and the updates it found.
//! That record is all FluxUp needs; the rest of the log is skipped without being parsed, which
//! keeps ingestion fast on large logs.
//!
//! The log is read as a stream ([`LogParser`]): line by line, holding only the line at hand and
//! what was found so far, and never more than a limit ([`log_limit`], 64 MiB by default). A log
//! over the limit is read up to it; what was complete by then is used, and the findings say the
//! log was cut ([`Findings::truncated_at`]).
//!
//! Bad input never panics and never yields a partial result: it is an [`IngestError`] that says
//! what was wrong, so the caller can keep the last good result and report the problem.

use memchr::memmem;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The message of the record that carries Renovate's findings.
pub const FINDINGS_MESSAGE: &str = "packageFiles with updates";

/// How much of a log is read by default: a runaway log should not take the operator's memory
/// with it. A real findings record for a fleet of a thousand apps is a few MiB.
pub const DEFAULT_LOG_LIMIT: usize = 64 * 1024 * 1024;

/// The environment variable that sets the limit, in bytes or with a `Ki`, `Mi` or `Gi` suffix.
pub const LOG_LIMIT_ENV: &str = "FLUXUP_RENOVATE_LOG_LIMIT";

/// The log limit: `FLUXUP_RENOVATE_LOG_LIMIT`, or [`DEFAULT_LOG_LIMIT`] when it is unset or not
/// a size (which is logged).
pub fn log_limit() -> usize {
    match std::env::var(LOG_LIMIT_ENV) {
        Ok(value) => parse_size(&value).unwrap_or_else(|| {
            tracing::warn!(%value, default = DEFAULT_LOG_LIMIT,
                "{LOG_LIMIT_ENV} is not a size such as 67108864 or 64Mi; using the default");
            DEFAULT_LOG_LIMIT
        }),
        Err(_) => DEFAULT_LOG_LIMIT,
    }
}

/// `1048576`, `1024Ki`, `64Mi`, `1Gi`; at least 1 KiB, so that a findings record can fit.
fn parse_size(value: &str) -> Option<usize> {
    let value = value.trim();
    let (digits, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => value.split_at(i),
        None => (value, ""),
    };
    let factor: usize = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    digits
        .parse::<usize>()
        .ok()?
        .checked_mul(factor)
        .filter(|n| *n >= 1024)
}

/// What one Renovate run found in one repository.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Findings {
    /// The repository Renovate scanned, e.g. `fluxup/fleet`.
    pub repository: Option<String>,
    /// The Renovate version that wrote the log, where it said.
    pub renovate_version: Option<String>,
    /// Every package file with its dependencies, in the log's order.
    pub package_files: Vec<PackageFile>,
    /// The log was longer than the limit and was read up to this many bytes; the findings are
    /// those complete by then.
    pub truncated_at: Option<usize>,
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
    /// Over the limit, with no complete findings record within it.
    #[error(
        "the Renovate output is over the limit of {limit} bytes ({LOG_LIMIT_ENV}) and has no \
         complete \"{FINDINGS_MESSAGE}\" record within it"
    )]
    TooLarge {
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
    /// FluxUp stopped (crashed, was killed or restarted) while it was reading this output, and
    /// does not read it again: an output that crashed it once would crash it again.
    #[error(
        "FluxUp stopped while reading this output ({0}) and does not read it again; the next \
         Renovate run is read as usual"
    )]
    Interrupted(String),
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
            IngestError::Interrupted(_) => "ReadInterrupted",
        }
    }
}

/// The `msg` of a record: a findings record is told from a line that only mentions the phrase.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    msg: Option<String>,
}

/// The parts of the findings record FluxUp reads.
#[derive(Deserialize)]
struct FindingsRecord {
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    config: Option<BTreeMap<String, Vec<PackageFile>>>,
}

/// The record that names Renovate's version.
#[derive(Deserialize)]
struct VersionRecord {
    #[serde(default, rename = "renovateVersion")]
    renovate_version: Option<String>,
}

/// Lines longer than this have their buffers released once read.
const LONG_LINE: usize = 1 << 20;

/// Reads Renovate's JSON log as it arrives, in chunks of any size ([`LogParser::feed`]), and
/// gives the findings of its last `packageFiles with updates` record ([`LogParser::finish`]; a
/// log may hold several runs, the last is the newest). It holds the line being read, the last
/// non-blank line, and the findings so far; nothing else of the log.
pub struct LogParser {
    findings_marker: memmem::Finder<'static>,
    renovate_marker: memmem::Finder<'static>,
    version_marker: memmem::Finder<'static>,
    /// The start of a line a chunk ended inside.
    partial: Vec<u8>,
    /// Complete lines read.
    lines: usize,
    seen_renovate: bool,
    renovate_version: Option<String>,
    /// The newest findings record, or why it could not be read.
    last: Option<Result<Findings, IngestError>>,
    /// The last non-blank line (trimmed at its end) and its number: a log that stops inside a
    /// record says so.
    last_line: Vec<u8>,
    last_line_number: usize,
}

impl Default for LogParser {
    fn default() -> Self {
        Self::new()
    }
}

impl LogParser {
    pub fn new() -> Self {
        LogParser {
            findings_marker: memmem::Finder::new(FINDINGS_MESSAGE.as_bytes()),
            renovate_marker: memmem::Finder::new(br#""name":"renovate""#),
            version_marker: memmem::Finder::new(br#""renovateVersion""#),
            partial: Vec::new(),
            lines: 0,
            seen_renovate: false,
            renovate_version: None,
            last: None,
            last_line: Vec::new(),
            last_line_number: 0,
        }
    }

    /// Reads the next bytes of the log.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        // The last non-blank line of this chunk is copied once, at the end, not line by line.
        let mut last_here: Option<(&[u8], usize)> = None;
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = (&chunk[..i], &chunk[i + 1..]);
            chunk = rest;
            if self.partial.is_empty() {
                if self.line(line) {
                    last_here = Some((line, self.lines));
                }
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                if self.line(&whole) {
                    last_here = None;
                    // Kept as the last line by moving it: a long line is never held twice.
                    whole.truncate(whole.trim_ascii_end().len());
                    whole = std::mem::replace(&mut self.last_line, whole);
                    self.last_line_number = self.lines;
                }
                whole.clear();
                self.partial = whole;
            }
            if self.partial.capacity() > LONG_LINE {
                self.partial = Vec::new();
            }
        }
        if let Some((line, number)) = last_here {
            self.keep_last(line, number);
        }
        self.partial.extend_from_slice(chunk);
    }

    fn keep_last(&mut self, line: &[u8], number: usize) {
        if self.last_line.capacity() > LONG_LINE && line.len() <= LONG_LINE {
            // Give back what a long line took.
            self.last_line = Vec::new();
        }
        self.last_line.clear();
        self.last_line.extend_from_slice(line.trim_ascii_end());
        self.last_line_number = number;
    }

    /// Reads one complete line; says whether it is non-blank.
    fn line(&mut self, line: &[u8]) -> bool {
        self.lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return false;
        }
        // Cheap substring checks first; only the few interesting lines are parsed.
        if !self.seen_renovate && self.renovate_marker.find(line).is_some() {
            self.seen_renovate = true;
        }
        if self.version_marker.find(line).is_some()
            && let Ok(VersionRecord {
                renovate_version: Some(version),
            }) = serde_json::from_slice(line)
        {
            self.renovate_version = Some(version);
        }
        if self.findings_marker.find(line).is_some()
            && let Some(result) = findings_record(line, self.lines)
        {
            self.last = Some(result);
        }
        true
    }

    /// The findings, once the log has ended, or was cut at `truncated_at` bytes by the reader's
    /// limit (the line the limit cut is not read).
    pub fn finish(mut self, truncated_at: Option<usize>) -> Result<Findings, IngestError> {
        let rest = std::mem::take(&mut self.partial);
        match truncated_at {
            None if rest.is_empty() => {}
            None => {
                if self.line(&rest) {
                    self.keep_last(&rest, self.lines);
                }
            }
            // The newest findings record is the one the limit cut: the complete ones are older.
            Some(limit) if self.findings_marker.find(&rest).is_some() => {
                return Err(IngestError::TooLarge { limit });
            }
            Some(_) => {}
        }
        match (self.last.take(), truncated_at) {
            (Some(Ok(mut findings)), _) => {
                findings.renovate_version = self.renovate_version.take();
                findings.truncated_at = truncated_at;
                Ok(findings)
            }
            (Some(Err(e)), _) => Err(e),
            (None, Some(limit)) => Err(IngestError::TooLarge { limit }),
            (None, None) => Err(self.missing_findings()),
        }
    }

    /// Why a log has no findings: empty, cut off mid-record, a Renovate run without them, or
    /// not Renovate.
    fn missing_findings(&self) -> IngestError {
        if self.last_line_number == 0 {
            return IngestError::Empty;
        }
        if self.seen_renovate
            && self.last_line.starts_with(b"{")
            && serde_json::from_slice::<serde::de::IgnoredAny>(&self.last_line).is_err()
        {
            return IngestError::Truncated {
                line: self.last_line_number,
            };
        }
        if self.seen_renovate {
            IngestError::NoFindings
        } else {
            IngestError::NotRenovate
        }
    }
}

/// A line holding the findings phrase: the findings, why the record cannot be read, or `None`
/// when it is another record that mentions the phrase.
fn findings_record(line: &[u8], number: usize) -> Option<Result<Findings, IngestError>> {
    let message: Message = match serde_json::from_slice(line) {
        Ok(m) => m,
        Err(e) => return Some(Err(json_error(&e, number))),
    };
    if message.msg.as_deref() != Some(FINDINGS_MESSAGE) {
        return None;
    }
    let record: FindingsRecord = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return Some(Err(json_error(&e, number))),
    };
    let Some(config) = record.config else {
        return Some(Err(IngestError::UnexpectedShape {
            line: number,
            reason: "it has no \"config\" object".into(),
        }));
    };
    Some(Ok(Findings {
        repository: record.repository,
        renovate_version: None,
        package_files: by_manager(config),
        truncated_at: None,
    }))
}

/// Reads Renovate's JSON log and returns the findings of its last `packageFiles with updates`
/// record (a log may hold several runs; the last is the newest). The log is in memory already,
/// so all of it is read; [`read_stream`] and [`parse_output_limited`] stop at a limit.
pub fn parse_log(log: &[u8]) -> Result<Findings, IngestError> {
    let mut parser = LogParser::new();
    parser.feed(log);
    parser.finish(None)
}

/// Reads a log from `reader` as it arrives, at most `limit` bytes of it: a longer log is read up
/// to the limit and the rest is never fetched ([`Findings::truncated_at`] says so). An I/O error
/// is returned as such: the caller decides what an unreadable log means.
pub async fn read_stream<R>(
    mut reader: R,
    limit: usize,
) -> std::io::Result<Result<Findings, IngestError>>
where
    R: futures::AsyncBufRead + Unpin,
{
    use futures::AsyncBufReadExt as _;
    let mut parser = LogParser::new();
    let mut read = 0;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(parser.finish(None));
        }
        let room = limit - read;
        if chunk.len() > room {
            parser.feed(&chunk[..room]);
            return Ok(parser.finish(Some(limit)));
        }
        let n = chunk.len();
        parser.feed(chunk);
        reader.consume_unpin(n);
        read += n;
    }
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
    if report.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Empty);
    }
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
        truncated_at: None,
    })
}

/// Whether `output` is a report file (one JSON object with `repositories`) rather than a log.
fn is_report(output: &[u8]) -> bool {
    let start = output.trim_ascii_start();
    start.starts_with(b"{")
        && memmem::find(start, b"\"repositories\"").is_some()
        && memmem::find(start, FINDINGS_MESSAGE.as_bytes()).is_none()
}

/// A report file (one JSON object with `repositories`) or a JSON log, whichever `output` is.
pub fn parse_output(output: &[u8]) -> Result<Findings, IngestError> {
    if is_report(output) {
        parse_report(output)
    } else {
        parse_log(output)
    }
}

/// [`parse_output`] of the first `limit` bytes of an output read up to one byte past the limit:
/// a longer log is read up to the limit, as [`read_stream`] reads it; a longer report file is
/// refused (half a JSON object says nothing).
pub fn parse_output_limited(output: &[u8], limit: usize) -> Result<Findings, IngestError> {
    if output.len() <= limit {
        return parse_output(output);
    }
    let head = &output[..limit];
    if is_report(head) {
        return Err(IngestError::TooLarge { limit });
    }
    let mut parser = LogParser::new();
    parser.feed(head);
    parser.finish(Some(limit))
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

    /// Feeds `log` in chunks of `size` bytes.
    fn chunked(log: &[u8], size: usize) -> Result<Findings, IngestError> {
        let mut parser = LogParser::new();
        for chunk in log.chunks(size) {
            parser.feed(chunk);
        }
        parser.finish(None)
    }

    #[test]
    fn chunks_of_any_size_read_as_the_whole_log() {
        let start = r#"{"name":"renovate","level":30,"msg":"Repository started","renovateVersion":"39.264.0"}"#;
        let started = r#"{"name":"renovate","level":30,"msg":"Repository started"}"#;
        let logs = [
            log(&[start, "not json", FINDINGS, "", "  "]),
            log(&[start, FINDINGS]),
            log(&[started, &FINDINGS[..FINDINGS.len() / 2]]),
            log(&[started, &FINDINGS[..FINDINGS.len() - 30], "\n\n"]),
            log(&[started]),
            b"hello\nworld".to_vec(),
            b" \n\n ".to_vec(),
        ];
        for whole in &logs {
            for size in [1, 2, 3, 7, 64, 1000, whole.len().max(1)] {
                assert_eq!(chunked(whole, size), parse_log(whole), "chunks of {size}");
            }
        }
    }

    #[test]
    fn a_long_record_across_many_chunks_reads_as_a_whole() {
        // A findings record of some MiB (a large fleet), then a short line, then a cut one.
        let deps: Vec<String> = (0..50_000)
            .map(|i| format!(r#"{{"depName":"chart-{i}","datasource":"helm","updates":[]}}"#))
            .collect();
        let big = format!(
            r#"{{"name":"renovate","msg":"packageFiles with updates","config":{{"flux":[{{"packageFile":"a.yaml","deps":[{}]}}]}}}}"#,
            deps.join(",")
        );
        assert!(big.len() > 2 * LONG_LINE);
        let whole = log(&[
            &big,
            r#"{"name":"renovate","msg":"x"}"#,
            &big[..LONG_LINE * 2],
        ]);
        let read = chunked(&whole, 16 * 1024);
        assert_eq!(read, parse_log(&whole));
        assert!(matches!(read, Err(IngestError::Malformed { line: 3, .. })));
        let whole = log(&[&big, ""]);
        assert_eq!(
            chunked(&whole, 16 * 1024).unwrap().package_files[0]
                .deps
                .len(),
            50_000
        );
    }

    #[test]
    fn a_later_mention_of_the_phrase_does_not_hide_the_findings() {
        let mention = r#"{"name":"renovate","msg":"done: packageFiles with updates sent"}"#;
        let findings = parse_log(&log(&[FINDINGS, mention])).unwrap();
        assert_eq!(findings.package_files.len(), 2);
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    fn stream(bytes: &[u8], buffer: usize) -> impl futures::AsyncBufRead + Unpin + '_ {
        futures::io::BufReader::with_capacity(buffer, futures::io::Cursor::new(bytes))
    }

    #[test]
    fn a_stream_is_read_up_to_the_limit_and_says_it_was_cut() {
        let junk = r#"{"name":"renovate","level":20,"msg":"Looking up a chart"}"#;
        let mut lines = vec![FINDINGS];
        lines.extend(std::iter::repeat_n(junk, 2000));
        let whole = log(&lines);
        let limit = FINDINGS.len() + 10 * junk.len() + 5;
        for buffer in [13, 4096, 1 << 20] {
            let findings = block_on(read_stream(stream(&whole, buffer), limit))
                .unwrap()
                .unwrap();
            assert_eq!(findings.truncated_at, Some(limit));
            assert_eq!(findings.package_files.len(), 2);
            // Under the limit: read whole, not cut.
            let all = block_on(read_stream(stream(&whole, buffer), whole.len()))
                .unwrap()
                .unwrap();
            assert_eq!(all.truncated_at, None);
            assert_eq!(all, parse_log(&whole).unwrap());
        }
        // The limit cuts the findings record, or comes before it: nothing to use.
        let late = log(&[junk, junk, FINDINGS, junk]);
        for limit in [junk.len(), 2 * junk.len() + 100] {
            assert_eq!(
                block_on(read_stream(stream(&late, 64), limit)).unwrap(),
                Err(IngestError::TooLarge { limit })
            );
        }
    }

    /// Renovate lines without end.
    struct Endless {
        served: usize,
    }

    impl futures::AsyncRead for Endless {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let line = b"{\"name\":\"renovate\",\"msg\":\"again\"}\n";
            let n = buf.len().min(line.len());
            buf[..n].copy_from_slice(&line[..n]);
            self.served += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn an_endless_log_stops_at_the_limit() {
        let mut endless = futures::io::BufReader::with_capacity(4096, Endless { served: 0 });
        let result = block_on(read_stream(&mut endless, 1 << 20)).unwrap();
        assert_eq!(result, Err(IngestError::TooLarge { limit: 1 << 20 }));
        assert!(endless.get_ref().served <= (1 << 20) + 4096);
    }

    #[test]
    fn an_output_read_one_byte_past_the_limit_is_cut_there() {
        let junk = r#"{"name":"renovate","msg":"x"}"#;
        let whole = log(&[FINDINGS, junk, junk, junk]);
        let limit = FINDINGS.len() + 3;
        let findings = parse_output_limited(&whole[..limit + 1], limit).unwrap();
        assert_eq!(findings.truncated_at, Some(limit));
        let report = br#"{"repositories":{"a/b":{"packageFiles":{}}}}"#;
        assert_eq!(
            parse_output_limited(report, 10),
            Err(IngestError::TooLarge { limit: 10 })
        );
        assert!(parse_output_limited(report, report.len()).is_ok());
    }

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size(" 64Mi "), Some(64 << 20));
        assert_eq!(parse_size("2Gi"), Some(2 << 30));
        assert_eq!(parse_size("4Ki"), Some(4096));
        for bad in ["", "64MB", "-1", "1.5Mi", "10", "Mi"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
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
