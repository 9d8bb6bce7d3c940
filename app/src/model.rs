//! What the pages show, in the words of the page: rows of apps, an app's details, an operation's
//! phases. Built on the server from FluxUp's resources (the conversions are here, beside the
//! types, and unit-tested) and sent to the browser by server functions and the live feed.

use fluxup_api::{
    ManagedApp, RollbackPhase, RollbackRequest, Stay, UpdateType, UpgradePhase, UpgradeRequest,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// One line of the apps page.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AppRow {
    pub namespace: String,
    pub name: String,
    /// The chart's name.
    pub chart: Option<String>,
    /// The chart version running now.
    pub current: Option<String>,
    /// The best update the policy allows: a chart version, or an image.
    pub available: Option<String>,
    /// `major`, `minor`, `patch` or `digest`: the largest jump of `available` and `also`.
    pub update_type: Option<String>,
    /// The jump of `available` itself (the chart's, or the first image's), so that each part
    /// carries its own badge and an image's major is not read as the chart's.
    pub available_type: Option<String>,
    /// The image updates that come with `available`, each with its own jump.
    pub also: Vec<PartUpdate>,
    /// When the new version was released (RFC 3339), where known.
    pub released: Option<String>,
    /// How long ago that was, in words ("3 days ago"), as of when the row was made.
    pub released_ago: Option<String>,
    /// One word: UpToDate, UpdateAvailable, Upgrading, RollingBack, Degraded.
    pub state: String,
    /// The Ready condition: the HelmRelease is Ready and everything the app needs is found.
    pub ready: bool,
    /// Whether the app has a Ready condition at all (a new app has none yet).
    pub health_known: bool,
    /// Why the app is not ready, or what Flux says.
    pub ready_message: String,
    /// The last upgrade: request, versions, result.
    pub last_upgrade: Option<LastOperation>,
}

/// The most recent upgrade of an app, as its ManagedApp records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LastOperation {
    pub request: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Running, Succeeded, Failed, RollingBack, RolledBack, RollbackFailed.
    pub status: String,
    /// When it ended (RFC 3339), if it has.
    pub ended: Option<String>,
}

/// One part's update: `name:tag` and the size of its jump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PartUpdate {
    pub reference: String,
    pub update_type: Option<String>,
}

impl AppRow {
    /// Health in words, from the Ready condition (the HelmRelease's readiness and whether what
    /// the app needs is found): "healthy", "not healthy", or "not known yet".
    pub fn health_words(&self) -> &'static str {
        match (self.health_known, self.ready) {
            (false, _) => "not known yet",
            (true, true) => "healthy",
            (true, false) => "not healthy",
        }
    }

    /// Whether an upgrade or rollback of the app is running.
    pub fn operation_running(&self) -> bool {
        matches!(self.state.as_str(), "Upgrading" | "RollingBack")
            || self
                .last_upgrade
                .as_ref()
                .is_some_and(|l| l.status == "Running" || l.status == "RollingBack")
    }

    /// Whether the app's last upgrade (or the rollback of it) failed.
    pub fn last_failed(&self) -> bool {
        self.last_upgrade
            .as_ref()
            .is_some_and(|l| l.status.contains("Failed"))
    }
}

/// The state in the person's words: "up to date", "update available", "upgrading",
/// "rolling back", "degraded".
pub fn state_words(state: &str) -> String {
    let mut words = String::new();
    for (i, c) in state.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    words
}

/// Why an update is held back, in the page's words: the policy's field names are kubectl's
/// (`a minor update; autoUpdate is patch`).
pub fn held_back_words(reason: &str) -> String {
    if let Some((jump, allowed)) = reason.split_once("; autoUpdate is ") {
        return format!("{jump}, larger than the version policy allows (up to {allowed})");
    }
    if let Some(range) = reason.strip_prefix("outside the constraint ") {
        return format!(
            "outside the range it is pinned to ({})",
            range.trim_matches('"')
        );
    }
    reason.to_string()
}

/// What a condition of the app means, as a question the page answers yes or no.
pub fn condition_words(kind: &str) -> String {
    match kind {
        "Ready" => "Healthy (the HelmRelease and its workloads are ready, and everything the app needs is found)".into(),
        "UpdateAvailable" => "Update available".into(),
        "Scanned" => "Checked for updates".into(),
        other => state_words(other),
    }
}

/// The top of the apps page: how many apps have an update of each size (each app counted by
/// its largest), how many operations run, and the last failure.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Summary {
    pub major: usize,
    pub minor: usize,
    pub patch: usize,
    pub digest: usize,
    pub running: usize,
    pub failed: usize,
    /// The app whose upgrade failed last (`namespace/name`), by when it ended.
    pub last_failure: Option<String>,
}

impl Summary {
    pub fn of(rows: &[AppRow]) -> Self {
        let mut s = Summary::default();
        let mut last: Option<(&str, String)> = None;
        for r in rows {
            match r.update_type.as_deref() {
                Some("major") => s.major += 1,
                Some("minor") => s.minor += 1,
                Some("patch") => s.patch += 1,
                Some("digest") => s.digest += 1,
                _ => {}
            }
            if r.operation_running() {
                s.running += 1;
            }
            if r.last_failed() {
                s.failed += 1;
                let ended = r
                    .last_upgrade
                    .as_ref()
                    .and_then(|l| l.ended.as_deref())
                    .unwrap_or("");
                if last.as_ref().is_none_or(|(t, _)| ended > *t) {
                    last = Some((ended, format!("{}/{}", r.namespace, r.name)));
                }
            }
        }
        s.last_failure = last.map(|(_, app)| app);
        s
    }

    /// How many apps have an update of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        match kind {
            "major" => self.major,
            "minor" => self.minor,
            "patch" => self.patch,
            "digest" => self.digest,
            _ => 0,
        }
    }
}

impl AppRow {
    /// Whether `query` (lower case) is in the app's namespace, name, chart or versions.
    pub fn matches(&self, query: &str) -> bool {
        let query = query.trim().to_lowercase();
        query.is_empty()
            || [
                Some(&self.namespace),
                Some(&self.name),
                self.chart.as_ref(),
                self.current.as_ref(),
                self.available.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|field| field.to_lowercase().contains(&query))
    }
}

impl From<&ManagedApp> for AppRow {
    fn from(app: &ManagedApp) -> Self {
        let status = app.status.clone().unwrap_or_default();
        let update = status.available_update.as_ref();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == fluxup_api::condition::READY);
        AppRow {
            namespace: app.metadata.namespace.clone().unwrap_or_default(),
            name: app.metadata.name.clone().unwrap_or_default(),
            chart: status.resolved.as_ref().and_then(|r| r.chart.clone()),
            current: status
                .current_version
                .as_ref()
                .and_then(|v| v.chart.clone()),
            available: update.and_then(|u| {
                u.chart
                    .clone()
                    .or_else(|| u.images.first().map(|i| i.reference()))
            }),
            update_type: update.and_then(|u| u.update_type).map(update_type_word),
            available_type: update.and_then(|u| {
                if u.chart.is_some() {
                    u.chart_update_type.map(update_type_word)
                } else {
                    u.images.first().and_then(|i| image_type(u, &i.name))
                }
            }),
            also: update.map_or_else(Vec::new, |u| {
                // `available` is the chart, else the first image: the rest come along.
                let shown = usize::from(u.chart.is_none());
                u.images
                    .iter()
                    .skip(shown)
                    .map(|i| PartUpdate {
                        reference: i.reference(),
                        update_type: image_type(u, &i.name),
                    })
                    .collect()
            }),
            released: update
                .and_then(|u| u.release_timestamp.as_ref())
                .map(|t| t.0.to_string()),
            released_ago: update
                .and_then(|u| u.release_timestamp.as_ref())
                .and_then(|t| seconds_since(t.0))
                .map(age_in_words),
            state: status
                .state
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "Unknown".into()),
            ready: ready.is_some_and(|c| c.status == "True"),
            health_known: ready.is_some(),
            ready_message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            last_upgrade: status.last_upgrade.map(|l| LastOperation {
                request: l.request_name.unwrap_or_default(),
                from: l.from_version,
                to: l.to_version,
                status: l.status.unwrap_or_default(),
                ended: l.completed_at.map(|t| t.0.to_string()),
            }),
        }
    }
}

/// The jump of the image `name` in `update`, where the operator recorded it.
fn image_type(update: &fluxup_api::AvailableUpdate, name: &str) -> Option<String> {
    update
        .image_update_types
        .iter()
        .find(|t| t.name == name)
        .map(|t| update_type_word(t.update_type))
}

/// Seconds from `t` to now. Rows are made on the server; in the browser (wasm32) jiff has no
/// clock without its `js` feature, and no row is made there.
fn seconds_since(t: k8s_openapi::jiff::Timestamp) -> Option<i64> {
    #[cfg(not(target_arch = "wasm32"))]
    return Some(k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second());
    #[cfg(target_arch = "wasm32")]
    {
        let _ = t;
        None
    }
}

/// An age in words, as people say it of a release: "today", "yesterday", "5 days ago",
/// "3 months ago", "2 years ago".
pub fn age_in_words(seconds: i64) -> String {
    const DAY: i64 = 24 * 60 * 60;
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match seconds.max(0) / DAY {
        0 => "today".into(),
        1 => "yesterday".into(),
        days @ 2..60 => plural(days, "day"),
        days @ 60..730 => plural(days / 30, "month"),
        days => plural(days / 365, "year"),
    }
}

/// `major`, `minor`, `patch`, `digest`.
pub fn update_type_word(t: UpdateType) -> String {
    format!("{t:?}").to_lowercase()
}

/// `url` if it is a web address (`http` or `https`) and nothing else: a link from Renovate's
/// output must never run script (`javascript:`) or carry data (`data:`) on FluxUp's pages.
pub fn web_link(url: &str) -> Option<String> {
    let lower = url.trim_start().to_ascii_lowercase();
    let web = lower.starts_with("https://") || lower.starts_with("http://");
    let clean = !url.chars().any(|c| c.is_control() || c.is_whitespace());
    let host = lower
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    (web && clean && !host.is_empty()).then(|| url.to_string())
}

/// Everything the app page shows.
/// The chart versions FluxUp knows from the app's status alone (the best update, then those held
/// back), newest first: what the picker offers when the chart source cannot be listed.
pub fn known_versions(detail: &AppDetail) -> Vec<String> {
    let mut out: Vec<String> = detail.row.available.iter().cloned().collect();
    for held in detail.held_back.iter().filter(|h| h.name == "chart") {
        if !out.contains(&held.version) {
            out.push(held.version.clone());
        }
    }
    out
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct AppDetail {
    pub row: AppRow,
    /// The app version the chart ships, where known.
    pub app_version: Option<String>,
    /// Images: name, version running, version offered.
    pub images: Vec<ImageLine>,
    pub changelog_url: Option<String>,
    pub source_url: Option<String>,
    pub held_back: Vec<HeldBack>,
    /// What a person pinned or skipped, per part (the chart first, then each image).
    pub policy: Vec<PartPolicy>,
    pub conditions: Vec<ConditionLine>,
    /// The release's workloads, each with how many replicas are ready, in words.
    pub workloads: Vec<WorkloadLine>,
    pub snapshots: Vec<SnapshotLine>,
    /// Upgrades and rollbacks, newest first.
    pub history: Vec<Operation>,
    /// Whether the person looking may ask for an upgrade / a rollback (RBAC).
    pub can_upgrade: bool,
    pub can_roll_back: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ImageLine {
    pub name: String,
    pub current: Option<String>,
    pub available: Option<String>,
    /// The size of the jump to `available`.
    pub update_type: Option<String>,
}

/// One part's pin and skips, from the ManagedApp's `versionPolicy`, with the ranges the page
/// offers to pin it to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PartPolicy {
    /// `chart`, or an image's name.
    pub part: String,
    /// The range it must stay in (`versionPolicy…constraint`).
    pub constraint: Option<String>,
    /// Versions a person skipped.
    pub skip: Vec<String>,
    /// "Stay on 12.x" and "Stay on 12.4.x" for the version running now, where it is one.
    pub stay_major: Option<String>,
    pub stay_minor: Option<String>,
}

/// A change a person makes to one part's version policy, from the page or `POST
/// /api/v1/apps/{namespace}/{name}/policy`; stored in the ManagedApp's spec, as the person.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum PolicyChange {
    /// Never offer this version.
    Skip { version: String },
    /// Offer a skipped version again.
    Unskip { version: String },
    /// Offer only versions on the running version's major (`12.x`) or minor (`12.4.x`).
    StayOn { on: Stay },
    /// Offer any version again (removes the range).
    Unpin,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct HeldBack {
    pub name: String,
    pub version: String,
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ConditionLine {
    pub kind: String,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct WorkloadLine {
    /// `Deployment web/api: 1 of 2 replicas ready`.
    pub words: String,
    pub ready: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SnapshotLine {
    pub name: String,
    /// The upgrade it was taken for.
    pub upgrade: Option<String>,
    pub ready: bool,
    /// RFC 3339.
    pub created: Option<String>,
    /// Bytes, where the CSI driver says.
    pub size: Option<String>,
}

impl AppDetail {
    /// The page's data from the app, its requests and its snapshots.
    pub fn new(
        app: &ManagedApp,
        upgrades: &[UpgradeRequest],
        rollbacks: &[RollbackRequest],
        snapshots: Vec<SnapshotLine>,
    ) -> Self {
        let status = app.status.clone().unwrap_or_default();
        let update = status.available_update.clone().unwrap_or_default();
        let current = status.current_version.clone().unwrap_or_default();
        let images = current
            .images
            .iter()
            .map(|i| ImageLine {
                name: i.name.clone(),
                current: i.tag.clone().or(i.digest.clone()),
                available: update
                    .images
                    .iter()
                    .find(|u| u.name == i.name)
                    .and_then(|u| u.tag.clone().or(u.digest.clone())),
                update_type: image_type(&update, &i.name),
            })
            .collect();
        let mut history: Vec<Operation> = upgrades
            .iter()
            .map(Operation::from)
            .chain(rollbacks.iter().map(Operation::from))
            .collect();
        history.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
        AppDetail {
            row: AppRow::from(app),
            app_version: current.app_version,
            images,
            changelog_url: update.changelog_url.as_deref().and_then(web_link),
            source_url: update.source_url.as_deref().and_then(web_link),
            held_back: status
                .held_back
                .iter()
                .map(|h| HeldBack {
                    name: h.name.clone(),
                    version: h.version.clone(),
                    reason: held_back_words(&h.reason),
                })
                .collect(),
            policy: part_policies(app),
            conditions: status
                .conditions
                .iter()
                .map(|c| ConditionLine {
                    kind: c.type_.clone(),
                    ok: c.status == "True",
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                })
                .collect(),
            workloads: status
                .workloads
                .iter()
                .map(|w| WorkloadLine {
                    words: w.describe(),
                    ready: w.is_ready(),
                })
                .collect(),
            snapshots,
            history,
            can_upgrade: false,
            can_roll_back: false,
        }
    }
}

/// The chart's and each running image's pins and skips (a part with none is listed too, so the
/// page can offer to pin it).
pub fn part_policies(app: &ManagedApp) -> Vec<PartPolicy> {
    let policy = app.spec.version_policy.clone().unwrap_or_default();
    let current = app
        .status
        .as_ref()
        .and_then(|s| s.current_version.clone())
        .unwrap_or_default();
    let chart = policy.chart.unwrap_or_default();
    let stay = |v: Option<&str>, on| v.and_then(|v| fluxup_api::stay_on(v, on));
    let mut out = vec![PartPolicy {
        part: "chart".into(),
        constraint: chart.constraint,
        skip: chart.skip,
        stay_major: stay(current.chart.as_deref(), Stay::Major),
        stay_minor: stay(current.chart.as_deref(), Stay::Minor),
    }];
    for image in &current.images {
        let rule = policy.images.iter().find(|p| p.name == image.name);
        out.push(PartPolicy {
            part: image.name.clone(),
            constraint: rule.and_then(|r| r.constraint.clone()),
            skip: rule.map(|r| r.skip.clone()).unwrap_or_default(),
            stay_major: stay(image.tag.as_deref(), Stay::Major),
            stay_minor: stay(image.tag.as_deref(), Stay::Minor),
        });
    }
    out
}

/// The versions the picker offers: the policy's best first, then every other version of the
/// chart newest first, releases before pre-releases (so the default is never a release
/// candidate the policy did not choose); the version running now is left out.
pub fn picker_versions(all: &[String], best: Option<&str>, current: Option<&str>) -> Vec<String> {
    let mut picked: Vec<String> = best.map(String::from).into_iter().collect();
    let others = all
        .iter()
        .filter(|v| Some(v.as_str()) != best && Some(v.as_str()) != current);
    let (pre, released): (Vec<&String>, Vec<&String>) = others.partition(|v| v.contains('-'));
    picked.extend(released.into_iter().chain(pre).cloned());
    picked
}

/// A Flux HelmRelease that could become a ManagedApp.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub chart: Option<String>,
    /// The chart version Flux installed last.
    pub version: Option<String>,
    /// The Kustomization that applies it (`namespace/name`), from kustomize-controller's labels.
    pub kustomization: Option<String>,
    /// The ManagedApp that already manages it (`namespace/name`).
    pub managed_by: Option<String>,
}

/// The ManagedApp FluxUp proposes for a HelmRelease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Proposal {
    pub namespace: String,
    pub name: String,
    pub helm_release: String,
    /// `namespace/name` of the Flux Kustomization to pause during upgrades.
    pub kustomization: String,
    /// Claims to snapshot before each upgrade.
    pub pvcs: Vec<String>,
    pub snapshot_class: Option<String>,
    /// The ManagedApp as YAML, as it would be created.
    pub manifest: String,
}

impl Proposal {
    /// The ManagedApp this proposes.
    pub fn managed_app(&self) -> serde_json::Value {
        let (ks_namespace, ks_name) = self
            .kustomization
            .split_once('/')
            .unwrap_or(("flux-system", self.kustomization.as_str()));
        let mut spec = serde_json::json!({
            "helmReleaseRef": {"name": self.helm_release},
            "kustomizationRef": {"name": ks_name, "namespace": ks_namespace},
        });
        if let (false, Some(class)) = (self.pvcs.is_empty(), &self.snapshot_class) {
            spec["volumeSnapshots"] = serde_json::json!({
                "volumeSnapshotClassName": class,
                "pvcs": self.pvcs.iter().map(|p| serde_json::json!({"name": p})).collect::<Vec<_>>(),
            });
        }
        serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1",
            "kind": "ManagedApp",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        })
    }
}

/// What the settings page shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Settings {
    pub user: String,
    pub groups: Vec<String>,
    /// How people log in here, in words.
    pub auth: String,
    /// `namespace/name` of the notification settings ConfigMap.
    pub notifications_source: String,
    /// Why the notification settings cannot be used, if so.
    pub notifications_error: Option<String>,
    pub sinks: Vec<SinkLine>,
    /// Every event a sink can be sent, for the page's choices.
    pub events: Vec<String>,
}

/// A notification sink, without its address or keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SinkLine {
    pub name: String,
    pub kind: String,
    pub events: Vec<String>,
    pub namespaces: Vec<String>,
}

/// An operation a page shows. On (re)connecting, the page sends the live feed the list of them
/// and gets each one's current version: what changed while it was away is not missed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub kind: OperationKind,
    pub namespace: String,
    pub name: String,
}

/// Upgrade or rollback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OperationKind {
    #[default]
    Upgrade,
    Rollback,
}

/// Where one phase of an operation stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhaseState {
    Done,
    Current,
    Failed,
    Waiting,
    Skipped,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PhaseLine {
    pub name: String,
    pub state: PhaseState,
}

/// An upgrade or rollback as the progress view shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Operation {
    pub kind: OperationKind,
    pub namespace: String,
    pub name: String,
    pub app: String,
    /// The phase now, as the request's status says.
    pub phase: String,
    pub ended: bool,
    pub succeeded: bool,
    pub dry_run: bool,
    /// What is happening, in words.
    pub message: String,
    /// RFC 3339.
    pub created: String,
    /// When the current phase started (RFC 3339).
    pub phase_started: Option<String>,
    pub phases: Vec<PhaseLine>,
    /// The version asked for (upgrades) or restored (rollbacks).
    pub target: Option<String>,
    pub requested_by: Option<String>,
    /// A dry run's checks and the exact Git diff.
    pub checks: Vec<Check>,
    pub diff: Option<String>,
    /// For upgrades: whether a rollback can undo it (it changed something and is not undone).
    pub can_roll_back: bool,
    /// Pull-request mode: the pull request's number and web page (an http(s) link only).
    pub pull_request: Option<(i64, String)>,
    /// After the rollout: each health check (release, workloads, http) with its result.
    pub health: Vec<Check>,
    /// The health checks' state (`Pending`, `Soaking`, `Passed`, `Failed`), and with a soak
    /// time, since when the app is healthy (RFC 3339) and for how long it must stay so.
    pub health_state: Option<String>,
    pub soak: Option<Soak>,
}

/// The soak after an upgrade: healthy since, for how long it must stay healthy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Soak {
    pub since: Option<String>,
    pub duration: String,
}

impl Operation {
    /// Names the operation across updates: kind, namespace, name.
    pub fn key(&self) -> String {
        format!("{:?}/{}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub message: String,
}

const UPGRADE_PHASES: [UpgradePhase; 8] = UpgradePhase::STEPS;
const ROLLBACK_PHASES: [RollbackPhase; 6] = RollbackPhase::STEPS;

/// The phases of an operation that stands at `at` (an index into `all`, or past the end when it
/// ended): before it done, it current (or failed), after it waiting. A dry run stops after the
/// first phase: the rest are skipped.
fn phase_lines(
    names: &[String],
    at: usize,
    ended: bool,
    succeeded: bool,
    dry_run: bool,
) -> Vec<PhaseLine> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let state = if dry_run && i > 0 {
                PhaseState::Skipped
            } else if (ended && succeeded) || i < at {
                PhaseState::Done
            } else if i == at && ended {
                PhaseState::Failed
            } else if i == at {
                PhaseState::Current
            } else {
                PhaseState::Waiting
            };
            PhaseLine {
                name: name.clone(),
                state,
            }
        })
        .collect()
}

fn meta_strings(meta: &ObjectMeta) -> (String, String, String, Option<String>) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(fluxup_api::REQUESTED_BY_ANNOTATION))
            .cloned(),
    )
}

fn checks_of(checks: &[fluxup_api::PreflightCheck]) -> Vec<Check> {
    checks
        .iter()
        .map(|c| Check {
            name: c.name.clone(),
            passed: c.passed,
            message: c.message.clone().unwrap_or_default(),
        })
        .collect()
}

fn checks_and_diff(result: Option<&fluxup_api::DryRunResult>) -> (Vec<Check>, Option<String>) {
    let Some(result) = result else {
        return (Vec::new(), None);
    };
    (checks_of(&result.checks), result.diff.clone())
}

impl From<&UpgradeRequest> for Operation {
    fn from(req: &UpgradeRequest) -> Self {
        let status = req.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let (namespace, name, created, requested_by) = meta_strings(&req.metadata);
        let ended = phase.is_terminal();
        let succeeded = phase == UpgradePhase::Succeeded;
        // A failed upgrade stopped in the phase its `message` names; the status keeps the last
        // phase only as `Failed`, so the failed line is the first not done.
        // Waiting for a merge is a phase only of upgrades proposed as pull requests or pushed
        // to another branch.
        let steps: Vec<UpgradePhase> = UPGRADE_PHASES
            .into_iter()
            .filter(|p| {
                *p != UpgradePhase::AwaitingMerge
                    || status.pull_request.is_some()
                    || status.pushed.is_some()
                    || phase == UpgradePhase::AwaitingMerge
            })
            .collect();
        let at = steps.iter().position(|p| *p == phase).unwrap_or(if ended {
            failed_at(&status, &steps)
        } else {
            0
        });
        let names: Vec<String> = steps.iter().map(|p| format!("{p:?}")).collect();
        let (checks, diff) = checks_and_diff(status.dry_run.as_ref());
        let record = status.upgrade.clone().unwrap_or_default();
        Operation {
            kind: OperationKind::Upgrade,
            app: req.spec.managed_app_ref.name.clone(),
            phase: format!("{phase:?}"),
            ended,
            succeeded,
            dry_run: req.spec.dry_run,
            message: status.message.clone().unwrap_or_default(),
            phase_started: status.phase_started_at.as_ref().map(|t| t.0.to_string()),
            phases: phase_lines(&names, at, ended, succeeded, req.spec.dry_run),
            target: req
                .spec
                .target_version
                .as_ref()
                .and_then(|t| {
                    t.chart
                        .clone()
                        .or_else(|| t.images.first().map(|i| i.reference()))
                })
                .or(record.new_version.clone()),
            requested_by,
            checks,
            diff,
            can_roll_back: !req.spec.dry_run
                && record.git_commit.is_some()
                && phase != UpgradePhase::RolledBack,
            pull_request: status
                .pull_request
                .as_ref()
                .and_then(|pr| web_link(&pr.url).map(|url| (pr.number, url))),
            health: status
                .health_check
                .as_ref()
                .map(|h| checks_of(&h.checks))
                .unwrap_or_default(),
            health_state: status.health_check.as_ref().map(|h| h.status.clone()),
            soak: status.health_check.as_ref().and_then(|h| {
                h.soak.clone().map(|duration| Soak {
                    since: h.healthy_since.as_ref().map(|t| t.0.to_string()),
                    duration,
                })
            }),
            namespace,
            name,
            created,
        }
    }
}

/// Where a failed upgrade stopped: past Committing when it committed, at Snapshotting when it
/// took snapshots, at the merge when it opened a pull request (or pushed to another branch),
/// else at Preflight.
fn failed_at(status: &fluxup_api::UpgradeRequestStatus, steps: &[UpgradePhase]) -> usize {
    let committed = status
        .upgrade
        .as_ref()
        .is_some_and(|u| u.git_commit.is_some());
    let at = if committed {
        UpgradePhase::Reconciling
    } else if status.snapshot.is_some() {
        UpgradePhase::Snapshotting
    } else if status.pull_request.is_some() || status.pushed.is_some() {
        UpgradePhase::AwaitingMerge
    } else {
        return 0;
    };
    steps.iter().position(|p| *p == at).unwrap_or(0)
}

impl From<&RollbackRequest> for Operation {
    fn from(req: &RollbackRequest) -> Self {
        let status = req.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let (namespace, name, created, requested_by) = meta_strings(&req.metadata);
        let ended = phase.is_terminal();
        let succeeded = phase == RollbackPhase::Succeeded;
        let at = ROLLBACK_PHASES
            .iter()
            .position(|p| *p == phase)
            .unwrap_or(0);
        let names: Vec<String> = ROLLBACK_PHASES.iter().map(|p| format!("{p:?}")).collect();
        let (checks, diff) = checks_and_diff(status.dry_run.as_ref());
        Operation {
            kind: OperationKind::Rollback,
            app: req
                .spec
                .managed_app_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            phase: format!("{phase:?}"),
            ended,
            succeeded,
            dry_run: req.spec.dry_run,
            message: status.message.clone().unwrap_or_default(),
            phase_started: status.phase_started_at.as_ref().map(|t| t.0.to_string()),
            phases: phase_lines(&names, at, ended, succeeded, req.spec.dry_run),
            target: status
                .restored_from
                .as_ref()
                .and_then(|r| r.chart_version.clone()),
            requested_by,
            checks,
            diff,
            can_roll_back: false,
            pull_request: None,
            health: Vec::new(),
            health_state: None,
            soak: None,
            namespace,
            name,
            created,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_web_links_become_links() {
        for good in [
            "https://github.com/x/y/releases",
            "http://charts.example.com/notes",
        ] {
            assert_eq!(web_link(good).as_deref(), Some(good));
        }
        for evil in [
            "javascript:alert(1)",
            " JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:x",
            "//evil.example",
            "/relative",
            "https://x.example/\nset-cookie",
            "https://x.example/a b",
            "https://",
            "java\tscript:alert(1)",
        ] {
            assert_eq!(web_link(evil), None, "{evil:?}");
        }
    }

    fn upgrade(status: serde_json::Value, dry_run: bool) -> UpgradeRequest {
        serde_json::from_value(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "UpgradeRequest",
            "metadata": {"name": "web-1", "namespace": "shop",
                         "creationTimestamp": "2026-11-30T10:00:00Z",
                         "annotations": {"fluxup.dev/requested-by": "alice"}},
            "spec": {"managedAppRef": {"name": "web"}, "dryRun": dry_run,
                     "targetVersion": {"chart": "2.0.0"}},
            "status": status,
        }))
        .unwrap()
    }

    fn states(op: &Operation) -> Vec<(String, PhaseState)> {
        op.phases
            .iter()
            .map(|p| (p.name.clone(), p.state))
            .collect()
    }

    #[test]
    fn a_running_upgrade_shows_done_current_and_waiting_phases() {
        let op = Operation::from(&upgrade(json!({"phase": "Snapshotting"}), false));
        use PhaseState::*;
        let want = [
            ("Preflight", Done),
            ("Suspending", Done),
            ("Quiescing", Done),
            ("Snapshotting", Current),
            ("Committing", Waiting),
            ("Reconciling", Waiting),
            ("HealthChecking", Waiting),
        ];
        assert_eq!(states(&op), want.map(|(n, s)| (n.to_string(), s)).to_vec());
        assert!(!op.ended);
        assert_eq!(op.target.as_deref(), Some("2.0.0"));
        assert_eq!(op.requested_by.as_deref(), Some("alice"));
    }

    #[test]
    fn an_upgrade_by_pull_request_waits_for_the_merge_and_links_it() {
        let pr = json!({"number": 7, "url": "https://git.example.com/fleet/pulls/7",
                        "branch": "fluxup/web-1-abcd", "state": "open"});
        let op = Operation::from(&upgrade(
            json!({"phase": "AwaitingMerge", "pullRequest": pr}),
            false,
        ));
        use PhaseState::*;
        assert_eq!(
            states(&op)[..4],
            [
                ("Preflight".to_string(), Done),
                ("Suspending".to_string(), Done),
                ("AwaitingMerge".to_string(), Current),
                ("Quiescing".to_string(), Waiting),
            ]
        );
        assert_eq!(
            op.pull_request,
            Some((7, "https://git.example.com/fleet/pulls/7".to_string()))
        );
        // Closed unmerged: it failed at the merge. A link that is not a web page is not shown.
        let mut closed = pr.clone();
        closed["url"] = json!("javascript:alert(1)");
        let failed = Operation::from(&upgrade(
            json!({"phase": "Failed", "pullRequest": closed}),
            false,
        ));
        let at = failed.phases.iter().find(|p| p.state == Failed).unwrap();
        assert_eq!(at.name, "AwaitingMerge");
        assert_eq!(failed.pull_request, None);
    }

    #[test]
    fn a_failed_upgrade_marks_where_it_stopped_and_a_dry_run_skips_the_rest() {
        let failed = Operation::from(&upgrade(
            json!({"phase": "Failed", "upgrade": {"gitCommit": "abc"}}),
            false,
        ));
        let failed_line = failed
            .phases
            .iter()
            .find(|p| p.state == PhaseState::Failed)
            .unwrap();
        assert_eq!(failed_line.name, "Reconciling");
        assert!(failed.ended && !failed.succeeded && failed.can_roll_back);

        let dry = Operation::from(&upgrade(
            json!({"phase": "Succeeded", "dryRun": {"checks": [{"name": "git", "passed": true}],
                   "diff": "+ version: 2.0.0"}}),
            true,
        ));
        assert_eq!(dry.phases[0].state, PhaseState::Done);
        assert!(
            dry.phases[1..]
                .iter()
                .all(|p| p.state == PhaseState::Skipped)
        );
        assert_eq!(dry.checks[0].name, "git");
        assert_eq!(dry.diff.as_deref(), Some("+ version: 2.0.0"));
        assert!(!dry.can_roll_back, "a dry run changed nothing to undo");
    }

    #[test]
    fn ages_read_as_people_say_them() {
        let day = 24 * 60 * 60;
        let said = [
            -5,
            0,
            day - 1,
            day,
            2 * day,
            59 * day,
            60 * day,
            400 * day,
            730 * day,
        ]
        .map(age_in_words);
        assert_eq!(
            said,
            [
                "today",
                "today",
                "today",
                "yesterday",
                "2 days ago",
                "59 days ago",
                "2 months ago",
                "13 months ago",
                "2 years ago"
            ]
        );
    }

    #[test]
    fn rows_say_versions_update_type_and_match_searches() {
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "web"}},
            "status": {"state": "UpdateAvailable",
                       "currentVersion": {"chart": "1.0.0"},
                       "availableUpdate": {"chart": "1.1.0", "updateType": "minor",
                                           "images": [{"name": "web", "tag": "1.4.2"}],
                                           "releaseTimestamp": "2020-01-01T00:00:00Z",
                                           "candidates": ["2.0.0", "1.1.0", "1.0.1"]},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                       "message": "runs", "lastTransitionTime": "2026-11-30T10:00:00Z"}]},
        }))
        .unwrap();
        let row = AppRow::from(&app);
        assert_eq!(row.current.as_deref(), Some("1.0.0"));
        assert_eq!(row.available.as_deref(), Some("1.1.0"));
        assert_eq!(row.update_type.as_deref(), Some("minor"));
        assert_eq!(
            row.also,
            [PartUpdate {
                reference: "web:1.4.2".into(),
                update_type: None
            }],
            "the image comes with the chart"
        );
        assert_eq!(row.state, "UpdateAvailable");
        assert!(row.ready);
        assert!(row.matches("SHOP") && row.matches("1.1") && !row.matches("db"));
        let ago = row.released_ago.clone().unwrap();
        assert!(ago.ends_with(" years ago"), "released in 2020: {ago}");
        let all = ["2.0.0", "1.1.0", "1.0.1", "1.0.0"].map(String::from);
        assert_eq!(
            picker_versions(&all, Some("1.1.0"), Some("1.0.0")),
            ["1.1.0", "2.0.0", "1.0.1"]
        );
        assert_eq!(
            picker_versions(&all, None, Some("2.0.0")),
            ["1.1.0", "1.0.1", "1.0.0"]
        );
        let with_rc = ["2.1.0-rc.1", "2.0.0", "1.0.0"].map(String::from);
        assert_eq!(
            picker_versions(&with_rc, None, Some("1.0.0")),
            ["2.0.0", "2.1.0-rc.1"]
        );
        let detail = AppDetail::new(&app, &[], &[], Vec::new());
        assert_eq!(detail.row, row);
        let proposal = Proposal {
            namespace: "shop".into(),
            name: "web".into(),
            helm_release: "web".into(),
            kustomization: "flux-system/apps".into(),
            pvcs: vec!["data-web-0".into()],
            snapshot_class: Some("csi".into()),
            manifest: String::new(),
        };
        let app: ManagedApp = serde_json::from_value(proposal.managed_app()).unwrap();
        assert_eq!(app.kustomization_namespace(), "flux-system");
        assert_eq!(app.spec.kustomization_ref.name, "apps");
        let volumes = app.spec.volume_snapshots.unwrap();
        assert_eq!(volumes.pvcs[0].name, "data-web-0");
        let without_class = Proposal {
            snapshot_class: None,
            ..proposal
        };
        assert!(
            without_class.managed_app()["spec"]
                .get("volumeSnapshots")
                .is_none()
        );
    }

    #[test]
    fn the_page_shows_each_parts_pin_and_skips_and_offers_ranges_of_what_runs() {
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "web"},
                     "versionPolicy": {"chart": {"skip": ["12.5.0"]},
                                       "images": [{"name": "nginx", "constraint": ">=1.21.0"}]}},
            "status": {"currentVersion": {"chart": "12.4.1", "images": [
                {"name": "nginx", "tag": "1.21.5"}, {"name": "sidecar", "tag": "latest"}]}},
        }))
        .unwrap();
        let parts = part_policies(&app);
        let got: Vec<_> = parts
            .iter()
            .map(|p| {
                (
                    p.part.as_str(),
                    p.constraint.as_deref(),
                    p.skip.clone(),
                    p.stay_major.as_deref(),
                    p.stay_minor.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "chart",
                    None,
                    vec!["12.5.0".to_string()],
                    Some("12.x"),
                    Some("12.4.x")
                ),
                (
                    "nginx",
                    Some(">=1.21.0"),
                    vec![],
                    Some("1.x"),
                    Some("1.21.x")
                ),
                // A tag that is not a version cannot be kept on a major.
                ("sidecar", None, vec![], None, None),
            ]
        );
        let change: PolicyChange =
            serde_json::from_value(json!({"action": "stayOn", "on": "minor"})).unwrap();
        assert_eq!(change, PolicyChange::StayOn { on: Stay::Minor });
    }

    fn row_of(status: serde_json::Value) -> AppRow {
        let app: ManagedApp = serde_json::from_value(json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "web"}},
            "status": status,
        }))
        .unwrap();
        AppRow::from(&app)
    }

    #[test]
    fn each_part_carries_its_own_update_type() {
        // A chart patch that brings an image's major: the badge beside the chart says patch.
        let row = row_of(json!({
            "state": "UpdateAvailable",
            "availableUpdate": {"chart": "1.0.1", "updateType": "major", "chartUpdateType": "patch",
                                "images": [{"name": "web", "tag": "2.0.0"}, {"name": "db", "tag": "7.1.0"}],
                                "imageUpdateTypes": [{"name": "web", "updateType": "major"},
                                                     {"name": "db", "updateType": "minor"}]},
        }));
        assert_eq!(row.available.as_deref(), Some("1.0.1"));
        assert_eq!(row.available_type.as_deref(), Some("patch"));
        assert_eq!(
            row.update_type.as_deref(),
            Some("major"),
            "the app's largest"
        );
        let also: Vec<_> = row
            .also
            .iter()
            .map(|p| (p.reference.as_str(), p.update_type.as_deref()))
            .collect();
        assert_eq!(
            also,
            [("web:2.0.0", Some("major")), ("db:7.1.0", Some("minor"))]
        );

        // Only images: the first is shown as `available`, with its own type.
        let row = row_of(json!({
            "availableUpdate": {"updateType": "minor",
                                "images": [{"name": "web", "tag": "2.0.1"}, {"name": "db", "tag": "7.1.0"}],
                                "imageUpdateTypes": [{"name": "web", "updateType": "patch"},
                                                     {"name": "db", "updateType": "minor"}]},
        }));
        assert_eq!(row.available.as_deref(), Some("web:2.0.1"));
        assert_eq!(row.available_type.as_deref(), Some("patch"));
        assert_eq!(row.also[0].update_type.as_deref(), Some("minor"));
        let detail = AppDetail::new(
            &serde_json::from_value(json!({
                "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"helmReleaseRef": {"name": "web"}, "kustomizationRef": {"name": "web"}},
                "status": {"currentVersion": {"images": [{"name": "db", "tag": "7.0.0"}]},
                           "availableUpdate": {"images": [{"name": "db", "tag": "7.1.0"}],
                                               "imageUpdateTypes": [{"name": "db", "updateType": "minor"}]}},
            }))
            .unwrap(),
            &[],
            &[],
            Vec::new(),
        );
        assert_eq!(detail.images[0].update_type.as_deref(), Some("minor"));
    }

    #[test]
    fn health_comes_from_the_ready_condition_and_the_state_is_in_words() {
        let ready = |status: &str| {
            json!([{"type": "Ready", "status": status, "reason": "HelmReleaseNotReady",
                    "message": "m", "lastTransitionTime": "2026-11-30T10:00:00Z"}])
        };
        let healthy = row_of(json!({"state": "UpdateAvailable", "conditions": ready("True")}));
        assert_eq!(healthy.health_words(), "healthy");
        assert_eq!(state_words(&healthy.state), "update available");
        let sick = row_of(json!({"state": "Degraded", "conditions": ready("False")}));
        assert_eq!(sick.health_words(), "not healthy");
        assert_eq!(row_of(json!({})).health_words(), "not known yet");
        assert_eq!(state_words("UpToDate"), "up to date");
        assert_eq!(state_words("RollingBack"), "rolling back");
        assert_eq!(state_words("RollbackFailed"), "rollback failed");
        assert!(!condition_words("Ready").contains("Ready"));
        assert_eq!(
            held_back_words("a minor update; autoUpdate is patch"),
            "a minor update, larger than the version policy allows (up to patch)"
        );
        assert_eq!(
            held_back_words("outside the constraint \"1.0.x\""),
            "outside the range it is pinned to (1.0.x)"
        );
    }

    #[test]
    fn the_summary_counts_updates_by_size_running_operations_and_the_last_failure() {
        let row =
            |name: &str, kind: Option<&str>, state: &str, last: Option<(&str, &str)>| AppRow {
                namespace: "ns".into(),
                name: name.into(),
                update_type: kind.map(String::from),
                state: state.into(),
                last_upgrade: last.map(|(status, ended)| LastOperation {
                    status: status.into(),
                    ended: Some(ended.into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
        let rows = [
            row("a", Some("major"), "UpdateAvailable", None),
            row(
                "b",
                Some("major"),
                "UpdateAvailable",
                Some(("Failed", "2026-11-01T00:00:00Z")),
            ),
            row("c", Some("patch"), "Upgrading", Some(("Running", ""))),
            row(
                "d",
                None,
                "UpToDate",
                Some(("RollbackFailed", "2026-11-02T00:00:00Z")),
            ),
            row(
                "e",
                Some("digest"),
                "UpdateAvailable",
                Some(("Succeeded", "2026-11-03T00:00:00Z")),
            ),
        ];
        let s = Summary::of(&rows);
        assert_eq!((s.major, s.minor, s.patch, s.digest), (2, 0, 1, 1));
        assert_eq!(s.running, 1);
        assert_eq!(s.failed, 2);
        assert_eq!(
            s.last_failure.as_deref(),
            Some("ns/d"),
            "the later of the two"
        );
        assert_eq!(Summary::of(&[]), Summary::default());
    }
}
