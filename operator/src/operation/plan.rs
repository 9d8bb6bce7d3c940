//! What an upgrade or a rollback writes to Git: for each version (the chart, each image), the
//! file, the document in it, the field and the new value — found from where the ManagedApp
//! controller resolved each version to live.

use crate::git::bump::{VersionEdit, apply_edits};
use crate::git::{self, GitBackend};
use crate::yaml_edit::{Document, image_tag_value};
use fluxup_api::{ImageVersion, ManagedApp, UpgradeRequest};
use fluxup_api::{PreflightCheck, object_parts};
use kube::Client;
use similar::TextDiff;
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
    /// The object's namespace: a document naming another one is not it.
    pub namespace: String,
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
        // Wherever the file was named (the spec, or Renovate's output), FluxUp edits only the
        // app's own part of the repository.
        let file = match file_inside(&file, resolved.kustomization_path.as_deref()) {
            Ok(file) => file,
            Err(why) => {
                out.problems.push(format!("the Git file of {name}: {why}"));
                continue;
            }
        };
        let (kind, namespace, object) = object_parts(&location.object);
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
            namespace: namespace.to_string(),
            field: location.field.clone(),
            value,
        });
    }
    out
}

/// `file` as a clean path from the repository's root, if it lies inside `kustomization_path`
/// (the part of the repository the app's Kustomization applies); else why not. Rule: a relative
/// path, no `.`/`..`/empty segments, no backslashes or control characters.
pub fn file_inside(file: &str, kustomization_path: Option<&str>) -> Result<String, String> {
    let clean = |path: &str, what: &str| -> Result<Vec<String>, String> {
        if path.starts_with('/') || path.contains('\\') || path.chars().any(char::is_control) {
            return Err(format!(
                "{path:?} is not a relative path in the repository ({what})"
            ));
        }
        let parts: Vec<String> = path
            .trim_start_matches("./")
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if parts.iter().any(|p| p == "." || p == "..") {
            return Err(format!("{path:?} may not contain `.` or `..` ({what})"));
        }
        Ok(parts)
    };
    let parts = clean(file, "git.file")?;
    if parts.is_empty() {
        return Err(format!("{file:?} names no file"));
    }
    let Some(root) = kustomization_path else {
        return Err("the app's Kustomization path is not resolved yet".into());
    };
    let root_parts = clean(root, "the Kustomization's path")?;
    if !parts.starts_with(&root_parts) || parts.len() == root_parts.len() {
        return Err(format!(
            "{file} is outside {root}, the path the app's Kustomization applies (rule: FluxUp \
             edits only files of the app's own Kustomization)"
        ));
    }
    Ok(parts.join("/"))
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
                namespace: Some(e.namespace.as_str()).filter(|n| !n.is_empty()),
            },
            field: &e.field,
            value: e.value.clone(),
        })
        .collect()
}

/// The diff a person reviews, as `git diff` shows it: per changed file a unified diff with
/// `--- a/{path}` / `+++ b/{path}` headers, `@@` hunks and 3 lines of context. Unchanged files
/// are left out.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (path, old) in before {
        let new = &after[path];
        if old == new {
            continue;
        }
        let lines = TextDiff::from_lines(old.as_str(), new.as_str());
        let unified = lines
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{path}"), &format!("b/{path}"))
            .to_string();
        out.push_str(&unified);
    }
    out
}

/// A branch name a pull request's push is checked with (never pushed: a dry run).
const PROBE_BRANCH: &str = "fluxup/preflight";

/// The `git` preflight check: the files of `plan` are readable on the branch Flux follows, the
/// token may push to it (in pull-request mode: may push a new branch, and the forge's API
/// answers), and the edits apply. Returns the check and the diff they would commit.
pub async fn check_git(
    client: &Client,
    app: &ManagedApp,
    plan: &Plan,
) -> (PreflightCheck, Option<String>) {
    let outcome = async {
        let repo = git::cluster::repository(client, app)
            .await
            .map_err(|e| e.to_string())?;
        let (git, branch) = (&repo.git, repo.branch.clone());
        // Branch mode: the bump is read and committed on the app's own branch.
        let push_to = app.spec.git.as_ref().and_then(|g| g.branch.clone());
        let read_on = push_to.clone().unwrap_or(branch.clone());
        let mut before = BTreeMap::new();
        for PlannedEdit { file, .. } in &plan.edits {
            let read = git
                .read_file(&read_on, file)
                .await
                .map_err(|e| e.to_string())?;
            before.insert(file.clone(), read.content);
        }
        let said = match (&repo.forge, &push_to) {
            (_, Some(to)) => {
                git.check_writable(to).await.map_err(|e| e.to_string())?;
                format!(
                    "branch {to} readable and writable; the bump rolls out once it reaches branch {branch}"
                )
            }
            // Pull-request mode: a new branch may be pushed, and the forge's API answers.
            (Some(forge), None) => {
                git.check_writable_to(&branch, PROBE_BRANCH)
                    .await
                    .map_err(|e| e.to_string())?;
                forge
                    .pull_request_for(PROBE_BRANCH)
                    .await
                    .map_err(|e| format!("the forge's pull-request API: {e}"))?;
                format!(
                    "branch {branch} readable; the bump is proposed as a pull request at {}",
                    forge.web_url()
                )
            }
            (None, None) => {
                git.check_writable(&branch)
                    .await
                    .map_err(|e| e.to_string())?;
                format!("branch {branch} readable and writable")
            }
        };
        let after = apply_edits(&before, &version_edits(plan)).map_err(|e| e.to_string())?;
        Ok::<_, String>((said, diff(&before, &after)))
    }
    .await;
    match outcome {
        Ok((said, diff)) => (
            PreflightCheck {
                name: "git".into(),
                passed: true,
                message: Some(said),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{diff, file_inside};

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    }

    /// One file before and after, diffed.
    fn one(old: &str, new: &str) -> String {
        diff(
            &files(&[("app/release.yaml", old)]),
            &files(&[("app/release.yaml", new)]),
        )
    }

    const RELEASE: &str = "kind: HelmRelease\nspec:\n  chart:\n    spec:\n      version: 1.0.0\n  values:\n    replicas: 2\n";

    #[test]
    fn a_changed_line_is_shown_with_its_context() {
        let new = RELEASE.replace("1.0.0", "2.0.0");
        assert_eq!(
            one(RELEASE, &new),
            "--- a/app/release.yaml\n+++ b/app/release.yaml\n@@ -2,6 +2,6 @@\n spec:\n   chart:\n     \
             spec:\n-      version: 1.0.0\n+      version: 2.0.0\n   values:\n     replicas: 2\n"
        );
    }

    #[test]
    fn an_added_line_is_only_added() {
        let new = RELEASE.replace("    replicas: 2\n", "    replicas: 2\n    debug: true\n");
        assert_eq!(
            one(RELEASE, &new),
            "--- a/app/release.yaml\n+++ b/app/release.yaml\n@@ -5,3 +5,4 @@\n       version: \
             1.0.0\n   values:\n     replicas: 2\n+    debug: true\n"
        );
    }

    #[test]
    fn a_removed_line_is_only_removed() {
        let new = RELEASE.replace("kind: HelmRelease\n", "");
        assert_eq!(
            one(RELEASE, &new),
            "--- a/app/release.yaml\n+++ b/app/release.yaml\n@@ -1,4 +1,3 @@\n-kind: HelmRelease\n \
             spec:\n   chart:\n     spec:\n"
        );
    }

    #[test]
    fn changes_far_apart_are_two_hunks() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old
            .replace("line 2\n", "line two\n")
            .replace("line 19\n", "line nineteen\n");
        assert_eq!(
            one(&old, &new),
            "--- a/app/release.yaml\n+++ b/app/release.yaml\n\
             @@ -1,5 +1,5 @@\n line 1\n-line 2\n+line two\n line 3\n line 4\n line 5\n\
             @@ -16,5 +16,5 @@\n line 16\n line 17\n line 18\n-line 19\n+line nineteen\n line 20\n"
        );
    }

    #[test]
    fn unchanged_files_are_left_out() {
        let before = files(&[("a.yaml", "x: 1\n"), ("b.yaml", "y: 1\n")]);
        let after = files(&[("a.yaml", "x: 1\n"), ("b.yaml", "y: 2\n")]);
        assert_eq!(
            diff(&before, &after),
            "--- a/b.yaml\n+++ b/b.yaml\n@@ -1 +1 @@\n-y: 1\n+y: 2\n"
        );
        assert_eq!(diff(&before, &before), "");
    }

    #[test]
    fn files_stay_inside_the_kustomizations_path() {
        let root = Some("./apps/web");
        assert_eq!(
            file_inside("apps/web/release.yaml", root).unwrap(),
            "apps/web/release.yaml"
        );
        assert_eq!(
            file_inside("./apps/web//sub/x.yaml", root).unwrap(),
            "apps/web/sub/x.yaml"
        );
        assert_eq!(file_inside("a/b.yaml", Some("./")).unwrap(), "a/b.yaml");
        for evil in [
            "apps/web/../other/release.yaml",
            "/apps/web/release.yaml",
            "apps/webapp/release.yaml",
            "apps/other/release.yaml",
            "apps/web",
            "apps\\web\\x.yaml",
            "apps/web/./x.yaml",
            "apps/web/x\n.yaml",
            "",
        ] {
            assert!(file_inside(evil, root).is_err(), "{evil:?}");
        }
        assert!(
            file_inside("apps/web/x.yaml", None)
                .unwrap_err()
                .contains("not resolved")
        );
        assert!(
            file_inside("apps/other/x.yaml", root)
                .unwrap_err()
                .contains("rule: FluxUp edits only files of the app's own Kustomization")
        );
    }
}
