//! Fuzzing the Renovate log parser on stable Rust, in every test run: whatever the bytes,
//! `parse_log` returns findings or an error that says what was wrong; it never panics, and a
//! real log damaged anywhere before the end of its findings record never yields findings.
//! (operator/fuzz/ holds the same target for cargo-fuzz, for long runs on a nightly toolchain.)

use fluxup_operator::renovate::{IngestError, parse_log};
use proptest::prelude::*;

const LOG: &str = concat!(
    r#"{"name":"renovate","level":30,"msg":"Repository started","renovateVersion":"39.264.1"}"#,
    "\n",
    r#"{"name":"renovate","level":20,"repository":"fleet","msg":"packageFiles with updates","config":{"flux":[{"packageFile":"apps/web/helmrelease.yaml","deps":[{"depName":"webapp","datasource":"helm","currentValue":"1.0.0","registryUrls":["http://charts"],"updates":[{"updateType":"minor","newVersion":"1.1.0"}]}]}]}}"#,
    "\n",
    r#"{"name":"renovate","level":30,"msg":"Repository finished"}"#,
    "\n",
);

/// Lines that look like Renovate's, to get the fuzzer past the cheap substring checks.
fn renovate_like_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{"name":"renovate","msg":"packageFiles with updates","config":"#.to_string()),
        Just(r#"{"name":"renovate","renovateVersion":"#.to_string()),
        any::<String>(),
        "[{}\\[\\]\":,a-z0-9 ]{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_log_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_log(&bytes);
    }

    #[test]
    fn parse_log_never_panics_on_renovate_like_lines(lines in proptest::collection::vec(renovate_like_line(), 0..20)) {
        let _ = parse_log(lines.join("\n").as_bytes());
    }

    #[test]
    fn a_damaged_real_log_is_refused_or_read_whole(cut in 0..=LOG.len(), flip_at in any::<usize>(), flip in any::<u8>()) {
        // The findings record is the second line.
        let findings_end = LOG.match_indices('\n').nth(1).map(|(i, _)| i).unwrap();
        let mut bytes = LOG.as_bytes()[..cut].to_vec();
        if !bytes.is_empty() {
            let i = flip_at % bytes.len();
            bytes[i] ^= flip;
        }
        match parse_log(&bytes) {
            // Findings only from a complete findings record.
            Ok(_) => prop_assert!(cut >= findings_end, "findings from a log cut at {}", cut),
            Err(IngestError::TooLarge { .. }) => prop_assert!(false, "a small log is never too large"),
            Err(_) => {}
        }
    }
}
