//! The YAML editor on manifests written the way public Flux repositories write them
//! (tests/yaml-corpus/): a version bump changes the version and nothing else. Checked two ways:
//! every other byte of the file is identical (one line differs), and the parsed documents equal
//! the originals with only that value replaced.

use fluxup_operator::yaml_edit::{Document, set_scalar};
use proptest::prelude::*;
use serde::Deserialize;
use serde_yaml::Value;
use std::path::PathBuf;

/// (file, kind, name, path): the version fields of the corpus.
const TARGETS: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "podinfo-helmrepository.yaml",
        "HelmRelease",
        None,
        "spec.chart.spec.version",
    ),
    (
        "podinfo-helmrepository.yaml",
        "HelmRelease",
        None,
        "spec.values.redis.tag",
    ),
    (
        "app-template.yaml",
        "OCIRepository",
        Some("app-template"),
        "spec.ref.tag",
    ),
    (
        "app-template.yaml",
        "HelmRelease",
        None,
        "spec.values.controllers.radarr.containers.app.image.tag",
    ),
    (
        "grafana-crlf.yaml",
        "HelmRelease",
        Some("grafana"),
        "spec.chart.spec.version",
    ),
    (
        "grafana-crlf.yaml",
        "HelmRelease",
        Some("grafana"),
        "spec.values.image.tag",
    ),
    (
        "flow-style.yaml",
        "HelmRelease",
        Some("cache"),
        "spec.chart.spec.version",
    ),
    (
        "flow-style.yaml",
        "HelmRelease",
        Some("cache"),
        "spec.values.image.tag",
    ),
];

fn corpus(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/yaml-corpus")
        .join(file);
    std::fs::read_to_string(path).unwrap()
}

fn documents(source: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(source)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn at<'v>(value: &'v mut Value, path: &str) -> &'v mut Value {
    path.split('.').fold(value, |v, key| match v {
        Value::Sequence(items) => &mut items[key.parse::<usize>().unwrap()],
        other => &mut other[key],
    })
}

/// Applies one edit and checks both properties; returns the edited file.
fn check(file: &str, kind: &str, name: Option<&str>, path: &str, version: &str) -> String {
    let source = corpus(file);
    let document = Document {
        kind: Some(kind),
        name,
        namespace: None,
    };
    let edited = set_scalar(&source, document, path, version).unwrap();

    // Bytes: everything but one line is identical, line ends included.
    let before: Vec<&str> = source.split_inclusive('\n').collect();
    let after: Vec<&str> = edited.split_inclusive('\n').collect();
    assert_eq!(before.len(), after.len(), "{file}: line count changed");
    let changed: Vec<usize> = (0..before.len())
        .filter(|i| before[*i] != after[*i])
        .collect();
    assert!(changed.len() <= 1, "{file}: lines {changed:?} changed");
    if let [i] = changed[..] {
        assert_eq!(
            before[i].ends_with("\r\n"),
            after[i].ends_with("\r\n"),
            "{file}: line end"
        );
        // A comment after the value stays, spaces before it included.
        if let Some(pos) = before[i].find(" #") {
            assert!(
                after[i].ends_with(&before[i][pos..]),
                "{file}: the comment after the value was lost: {:?}",
                after[i]
            );
        }
    }

    // Meaning: the documents are the originals with that one value replaced.
    let mut expected = documents(&source);
    let index = expected
        .iter()
        .position(|d| d["kind"] == *kind && name.is_none_or(|n| d["metadata"]["name"] == *n))
        .unwrap();
    *at(&mut expected[index], path) = Value::from(version);
    assert_eq!(documents(&edited), expected, "{file}: {path}");
    edited
}

#[test]
fn every_version_field_of_the_corpus_is_bumped_in_place() {
    for (file, kind, name, path) in TARGETS {
        let edited = check(file, kind, *name, path, "9.8.7");
        assert!(edited.contains("9.8.7"), "{file}: {path}");
    }
    // The digest pinned next to a tag is replaced with it.
    let edited = check(
        "app-template.yaml",
        "HelmRelease",
        None,
        "spec.values.controllers.radarr.containers.app.image.tag",
        "5.27.0.10200@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
    assert!(edited.contains("tag: 5.27.0.10200@sha256:0000"));
    // Quoted stays quoted; a plain value that would read as a number is quoted.
    let edited = check(
        "grafana-crlf.yaml",
        "HelmRelease",
        Some("grafana"),
        "spec.values.image.tag",
        "11.4.0",
    );
    assert!(edited.contains("tag: '11.4.0'\r\n"));
    let edited = check(
        "grafana-crlf.yaml",
        "HelmRelease",
        Some("grafana"),
        "spec.chart.spec.version",
        "8.10",
    );
    assert!(edited.contains("version: \"8.10\"\r\n"));
}

fn version() -> impl Strategy<Value = String> {
    (
        0u32..100,
        0u32..100,
        0u32..1000,
        any::<bool>(),
        proptest::option::of("[a-z]{1,6}\\.[0-9]{1,3}"),
    )
        .prop_map(|(a, b, c, v, pre)| {
            let base = format!("{}{a}.{b}.{c}", if v { "v" } else { "" });
            match pre {
                Some(p) => format!("{base}-{p}"),
                None => base,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_version_into_any_field_changes_only_that_value(target in 0..TARGETS.len(), version in version()) {
        let (file, kind, name, path) = TARGETS[target];
        check(file, kind, name, path, &version);
    }

    #[test]
    fn short_numeric_versions_keep_their_type(target in 0..TARGETS.len(), a in 0u32..50, b in 0u32..50) {
        // "1.10" would be the number 1.1 if written plain: the editor must quote it.
        let (file, kind, name, path) = TARGETS[target];
        check(file, kind, name, path, &format!("{a}.{b}"));
    }
}
