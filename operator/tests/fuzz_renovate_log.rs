//! Fuzzing the Renovate log parser on stable Rust, in every test run: whatever the bytes,
//! `parse_log` returns findings or an error that says what was wrong; it never panics, and a
//! real log damaged anywhere before the end of its findings record never yields findings.
//! The streaming reader gives the same answer whatever the chunks, and a limit never yields
//! findings from a record the limit cut.
//! (operator/fuzz/ holds the same target for cargo-fuzz, for long runs on a nightly toolchain.)

use fluxup_operator::renovate::{IngestError, LogParser, parse_log, read_stream};
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

    #[test]
    fn chunks_read_as_the_whole(lines in proptest::collection::vec(renovate_like_line(), 0..20),
                                sizes in proptest::collection::vec(1usize..64, 1..8)) {
        let whole = format!("{LOG}{}", lines.join("\n")).into_bytes();
        let mut parser = LogParser::new();
        let mut rest = &whole[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            parser.feed(chunk);
            rest = tail;
        }
        prop_assert_eq!(parser.finish(None), parse_log(&whole));
    }

    #[test]
    fn a_limit_never_yields_a_cut_record(limit in 1usize..=LOG.len() + 10, buffer in 1usize..200) {
        let findings_end = LOG.match_indices('\n').nth(1).map(|(i, _)| i).unwrap();
        let reader = futures::io::BufReader::with_capacity(buffer, futures::io::Cursor::new(LOG.as_bytes()));
        let result = futures::executor::block_on(read_stream(reader, limit)).unwrap();
        match result {
            Ok(findings) => {
                prop_assert!(limit > findings_end, "findings from a log cut at {}", limit);
                prop_assert_eq!(findings.truncated_at.is_some(), limit < LOG.len());
            }
            Err(IngestError::TooLarge { limit: l }) => {
                prop_assert_eq!(l, limit);
                prop_assert!(limit <= findings_end);
            }
            Err(e) => prop_assert!(false, "{e} at limit {limit}"),
        }
    }
}
