//! Commit messages of FluxUp's version bumps: a subject a person reads in `git log`, what was
//! snapshotted, and trailers a restarted operator uses to tell whether its commit happened.

/// The trailer naming the UpgradeRequest (or RollbackRequest) a commit belongs to, for people.
pub const REQUEST_TRAILER: &str = "FluxUp-Request";
/// The trailer with the request's uid: how a restarted FluxUp finds its own commit. (The name
/// alone would find the commit of an older request that had the same name.)
pub const OPERATION_TRAILER: &str = "FluxUp-Operation";

/// What a version-bump commit says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BumpMessage {
    /// The app, as people call it (the ManagedApp's name).
    pub app: String,
    /// `chart`, or an image's name, with its new version: `("chart", "12.5.0")`.
    pub changes: Vec<(String, String)>,
    /// The chart version before, for the `Previous-Version` trailer.
    pub previous_version: Option<String>,
    /// VolumeSnapshots taken before the commit.
    pub snapshots: Vec<String>,
    /// `namespace/name` of the request.
    pub request: String,
    /// The request's uid.
    pub operation: String,
}

impl BumpMessage {
    pub fn render(&self) -> String {
        let what = describe(&self.changes);
        let mut out = format!(
            "chore(deps): update {} to {what}\n\nUpgrade approved in FluxUp.\n",
            self.app
        );
        if !self.snapshots.is_empty() {
            out.push_str("Pre-upgrade snapshots:\n");
            for s in &self.snapshots {
                out.push_str(&format!("- {s}\n"));
            }
        }
        out.push_str("\nManaged-By: fluxup\n");
        if let Some(previous) = &self.previous_version {
            out.push_str(&format!("Previous-Version: {previous}\n"));
        }
        out.push_str(&format!("{REQUEST_TRAILER}: {}\n", self.request));
        out.push_str(&format!("{OPERATION_TRAILER}: {}\n", self.operation));
        out
    }
}

/// What a rollback's commit says: which versions come back, and which upgrade it undoes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevertMessage {
    /// The app, as people call it.
    pub app: String,
    /// `chart` or an image's name, with the version restored.
    pub changes: Vec<(String, String)>,
    /// `namespace/name` of the UpgradeRequest undone, and its commit if it made one.
    pub upgrade: String,
    pub reverts: Option<String>,
    /// VolumeSnapshots the data was restored from.
    pub snapshots: Vec<String>,
    /// `namespace/name` of the RollbackRequest.
    pub request: String,
    /// The RollbackRequest's uid.
    pub operation: String,
}

impl RevertMessage {
    pub fn render(&self) -> String {
        let what = describe(&self.changes);
        let mut out = format!(
            "revert: roll {} back to {what}\n\nRolled back in FluxUp, undoing {}.\n",
            self.app, self.upgrade
        );
        if !self.snapshots.is_empty() {
            out.push_str("Data restored from:\n");
            for s in &self.snapshots {
                out.push_str(&format!("- {s}\n"));
            }
        }
        out.push_str("\nManaged-By: fluxup\n");
        if let Some(sha) = &self.reverts {
            out.push_str(&format!("Reverts: {sha}\n"));
        }
        out.push_str(&format!("{REQUEST_TRAILER}: {}\n", self.request));
        out.push_str(&format!("{OPERATION_TRAILER}: {}\n", self.operation));
        out
    }
}

/// `12.5.0, ghcr.io/x/app 1.2.3`: the chart version bare, images by name.
fn describe(changes: &[(String, String)]) -> String {
    changes
        .iter()
        .map(|(name, version)| {
            if name == "chart" {
                version.clone()
            } else {
                format!("{name} {version}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of trailer `key` in a commit message (the last paragraph's `Key: value` lines).
pub fn trailer<'m>(message: &'m str, key: &str) -> Option<&'m str> {
    let last_paragraph = message.trim_end().rsplit("\n\n").next()?;
    last_paragraph.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revert_says_what_comes_back_and_what_it_undoes() {
        let message = RevertMessage {
            app: "db".into(),
            changes: vec![("chart".into(), "1.0.0".into())],
            upgrade: "apps/db-1.1.0".into(),
            reverts: Some("abc123".into()),
            snapshots: vec!["db-1.1.0-data-db-0".into()],
            request: "apps/db-1.1.0-rollback".into(),
            operation: "0f9d".into(),
        }
        .render();
        assert!(message.starts_with(
            "revert: roll db back to 1.0.0\n\nRolled back in FluxUp, undoing apps/db-1.1.0.\n"
        ));
        assert_eq!(trailer(&message, "Reverts"), Some("abc123"));
        assert_eq!(
            trailer(&message, REQUEST_TRAILER),
            Some("apps/db-1.1.0-rollback")
        );
    }

    #[test]
    fn the_message_reads_well_and_its_trailers_can_be_found() {
        let message = BumpMessage {
            app: "my-app".into(),
            changes: vec![("chart".into(), "12.5.0".into())],
            previous_version: Some("12.4.0".into()),
            snapshots: vec!["my-app-data-up-1a2b".into()],
            request: "apps/my-app-12.5.0".into(),
            operation: "7c1e".into(),
        }
        .render();
        assert_eq!(
            message,
            "chore(deps): update my-app to 12.5.0\n\nUpgrade approved in FluxUp.\nPre-upgrade snapshots:\n\
             - my-app-data-up-1a2b\n\nManaged-By: fluxup\nPrevious-Version: 12.4.0\n\
             FluxUp-Request: apps/my-app-12.5.0\nFluxUp-Operation: 7c1e\n"
        );
        assert_eq!(
            trailer(&message, REQUEST_TRAILER),
            Some("apps/my-app-12.5.0")
        );
        assert_eq!(trailer(&message, OPERATION_TRAILER), Some("7c1e"));
        assert_eq!(trailer(&message, "Previous-Version"), Some("12.4.0"));
        // Only trailers count, not the same words in the body.
        assert_eq!(trailer("FluxUp-Request: x\n\nbody", REQUEST_TRAILER), None);
    }
}
