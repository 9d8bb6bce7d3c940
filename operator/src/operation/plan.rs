//! What an upgrade or a rollback writes to Git: for each version (the chart, each image), the
//! file, the document in it, the field and the new value — found from where the ManagedApp
//! controller resolved each version to live.

use crate::git::bump::{VersionEdit, apply_edits};
use crate::git::{self, GitBackend};
use crate::yaml_edit::{Document, image_tag_value};
use fluxup_api::{ImageVersion, ManagedApp, UpgradeRequest};
use fluxup_api::{PreflightCheck, object_parts};
use kube::Client;
use std::collections::BTreeMap;

/// Where the versions go: the edits, and the Git repository and branch.
pub struct Plan {
    /// The chart version to write, if the chart changes.
    pub chart: Option<String>,
    /// The image versions to write.
    pub images: Vec<ImageVersion>,
    pub edits: Vec<PlannedEdit>,
    /// Why the versions cannot be written, in words; empty when they can.
    pub problems: Vec<String>,
}

/// One version to write: what it is (`chart` or an image), where, and the new value.
pub struct PlannedEdit {
    pub what: String,
    pub file: String,
    pub kind: String,
    pub name: String,
    pub field: String,
    pub value: String,
}

/// The versions an UpgradeRequest moves to (its target, or the app's available update) and where
/// they are written.
pub fn for_request(req: &UpgradeRequest, app: &ManagedApp) -> Plan {
    let status = app.status.clone().unwrap_or_default();
    let target = req.spec.target_version.clone();
    let available = status.available_update.clone().unwrap_or_default();
    let chart = target
        .as_ref()
        .and_then(|t| t.chart.clone())
        .or_else(|| target.is_none().then(|| available.chart.clone()).flatten());
    let images = match &target {
        Some(t) => t.images.clone(),
        None => available.images.clone(),
    };
    let mut out = to_versions(app, chart, images);
    if out.chart.is_none() && out.images.is_empty() {
        out.problems.insert(
            0,
            "no target version, and the app has no available update".into(),
        );
    }
    out
}

/// Where `chart` and `images` are written for `app`, and the value each field gets.
pub fn to_versions(app: &ManagedApp, chart: Option<String>, images: Vec<ImageVersion>) -> Plan {
    let status = app.status.clone().unwrap_or_default();
    let mut out = Plan {
        chart: chart.clone(),
        images: images.clone(),
        edits: Vec::new(),
        problems: Vec::new(),
    };
    let resolved = status.resolved.clone().unwrap_or_default();
    let detected = status.detected.clone().unwrap_or_default().updates;
    let file_of = |name: &str, explicit: &Option<String>| {
        explicit.clone().or_else(|| {
            detected
                .iter()
                .filter(|u| u.name == name)
                .find_map(|u| u.package_file.clone())
        })
    };
    let mut wanted: Vec<(String, String)> = Vec::new();
    if let Some(c) = &chart {
        wanted.push(("chart".into(), c.clone()));
    }
    let current_images = status.current_version.clone().unwrap_or_default().images;
    for image in &images {
        let Some(tag) = &image.tag else { continue };
        let old = current_images.iter().find(|i| i.name == image.name);
        let old_tag = match old.and_then(|o| o.digest.as_ref()) {
            Some(digest) => format!("{tag}@{digest}"),
            None => tag.clone(),
        };
        let Ok(value) = image_tag_value(&old_tag, tag, image.digest.as_deref()) else {
            out.problems.push(format!(
                "image {} is pinned by digest; the new digest is not known",
                image.name
            ));
            continue;
        };
        wanted.push((image.name.clone(), value));
    }
    for (name, value) in wanted {
        let Some(location) = resolved.locations.iter().find(|l| l.name == name) else {
            out.problems
                .push(format!("where {name} is written is not known"));
            continue;
        };
        let Some(file) = file_of(&name, &location.file) else {
            out.problems.push(format!(
                "the Git file holding {name} is not known: set versionPolicy.*.git.file, or let Renovate find it"
            ));
            continue;
        };
        let (kind, _, object) = object_parts(&location.object);
        // A string image reference (`image: repo:tag`) is rewritten whole.
        let value = if location.field.ends_with(".tag") || name == "chart" {
            value
        } else {
            format!("{name}:{value}")
        };
        out.edits.push(PlannedEdit {
            what: name.clone(),
            file,
            kind: kind.to_string(),
            name: object.to_string(),
            field: location.field.clone(),
            value,
        });
    }
    out
}

/// The edits as the Git bump takes them.
pub fn version_edits(plan: &Plan) -> Vec<VersionEdit<'_>> {
    plan.edits
        .iter()
        .map(|e| VersionEdit {
            file: &e.file,
            document: Document {
                kind: Some(&e.kind),
                name: Some(&e.name),
            },
            field: &e.field,
            value: e.value.clone(),
        })
        .collect()
}

/// The unified lines a person reviews: `-old` / `+new` per changed line, by file.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (path, old) in before {
        let new = &after[path];
        if old == new {
            continue;
        }
        out.push_str(&format!("--- a/{path}\n+++ b/{path}\n"));
        for (a, b) in old.lines().zip(new.lines()) {
            if a != b {
                out.push_str(&format!("-{a}\n+{b}\n"));
            }
        }
    }
    out
}

/// The `git` preflight check: the files of `plan` are readable on the branch Flux follows, the
/// token may push to it, and the edits apply. Returns the check and the diff they would commit.
pub async fn check_git(
    client: &Client,
    app: &ManagedApp,
    plan: &Plan,
) -> (PreflightCheck, Option<String>) {
    let outcome = async {
        let (git, branch) = git::cluster::for_app(client, app)
            .await
            .map_err(|e| e.to_string())?;
        let mut before = BTreeMap::new();
        for PlannedEdit { file, .. } in &plan.edits {
            let read = git
                .read_file(&branch, file)
                .await
                .map_err(|e| e.to_string())?;
            before.insert(file.clone(), read.content);
        }
        git.check_writable(&branch)
            .await
            .map_err(|e| e.to_string())?;
        let after = apply_edits(&before, &version_edits(plan)).map_err(|e| e.to_string())?;
        Ok::<_, String>((branch, diff(&before, &after)))
    }
    .await;
    match outcome {
        Ok((branch, diff)) => (
            PreflightCheck {
                name: "git".into(),
                passed: true,
                message: Some(format!("branch {branch} readable and writable")),
            },
            Some(diff),
        ),
        Err(why) => (
            PreflightCheck {
                name: "git".into(),
                passed: false,
                message: Some(why),
            },
            None,
        ),
    }
}
