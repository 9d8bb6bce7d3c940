//! The bump the Git tests make: the radarr HelmRelease of the YAML corpus
//! (`tests/yaml-corpus/app-template.yaml`), its chart (an OCIRepository tag) and image tag.

use fluxup_operator::git::bump::VersionEdit;
use fluxup_operator::git::message::BumpMessage;
use fluxup_operator::yaml_edit::Document;
use std::path::Path;

pub const FILE: &str = "apps/radarr/helmrelease.yaml";
pub const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

pub fn edits(chart: &str, tag: &str) -> Vec<VersionEdit<'static>> {
    vec![
        VersionEdit {
            file: FILE,
            document: Document {
                kind: Some("OCIRepository"),
                name: Some("app-template"),
                namespace: None,
            },
            field: "spec.ref.tag",
            value: chart.into(),
        },
        VersionEdit {
            file: FILE,
            document: Document {
                kind: Some("HelmRelease"),
                name: None,
                namespace: None,
            },
            field: "spec.values.controllers.radarr.containers.app.image.tag",
            value: format!("{tag}@{DIGEST}"),
        },
    ]
}

pub fn message(request: &str, chart: &str) -> String {
    BumpMessage {
        app: "radarr".into(),
        changes: vec![("chart".into(), chart.into())],
        previous_version: Some("4.2.0".into()),
        snapshots: vec![],
        request: request.into(),
        operation: request.into(),
    }
    .render()
}

pub fn original() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/yaml-corpus/app-template.yaml"),
    )?)
}
