//! The status the ManagedApp controller writes: what runs now, the best update the policy
//! allows, what it holds back, and the `Ready` and `UpdateAvailable` conditions. Pure.

use super::resolve::Resolution;
use crate::policy::{Constraint, judge};
use fluxup_api::condition::{READY, UPDATE_AVAILABLE};
use fluxup_api::{
    AppState, AutoUpdate, AvailableUpdate, Condition, DetectedUpdate, HeldBackUpdate,
    ImageUpdateType, ImageVersion, LastUpgrade, ManagedApp, ManagedAppStatus, Time, UpdateType,
};
use k8s_openapi::jiff::Timestamp;

/// The fields of the status this controller owns (server-side apply field manager
/// `fluxup-managedapp`). `detected`, `lastUpgrade` and the `Scanned` condition belong to others.
pub fn desired_status(app: &ManagedApp, res: &Resolution, now: Timestamp) -> ManagedAppStatus {
    let old = app.status.clone().unwrap_or_default();
    let generation = app.metadata.generation;
    let policy = app.spec.version_policy.clone().unwrap_or_default();
    let detected: &[DetectedUpdate] = old.detected.as_ref().map_or(&[], |d| &d.updates);
    let current = res.current.clone().unwrap_or_default();

    let mut held_back = Vec::new();
    let mut notes = Vec::new(); // what the UpdateAvailable message says
    let mut update = AvailableUpdate::default();

    // The chart.
    let chart_policy = policy.chart.clone().unwrap_or_default();
    let chart_entries: Vec<&DetectedUpdate> =
        detected.iter().filter(|u| u.name == "chart").collect();
    let chart_current = current
        .chart
        .clone()
        .or_else(|| chart_entries.iter().find_map(|u| u.current.clone()));
    let mut policy_error = None;
    let constraint = match chart_policy.constraint.as_deref().map(Constraint::parse) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            policy_error = Some(format!("the chart constraint is not usable: {e}"));
            None
        }
        None => None,
    };
    if let (Some(cur), None) = (&chart_current, &policy_error) {
        let candidates: Vec<String> = chart_entries.iter().map(|u| u.version.clone()).collect();
        let verdicts = judge(
            cur,
            &candidates,
            chart_policy.auto_update,
            constraint.as_ref(),
            &chart_policy.skip,
        );
        for v in &verdicts {
            match &v.held_back {
                None => update.candidates.push(v.version.clone()),
                Some(reason) => held_back.push(HeldBackUpdate {
                    name: "chart".into(),
                    version: v.version.clone(),
                    update_type: Some(v.update_type),
                    reason: reason.clone(),
                }),
            }
        }
        if let Some(best) = verdicts.iter().find(|v| v.held_back.is_none()) {
            let entry = chart_entries.iter().find(|u| u.version == best.version);
            update.chart = Some(best.version.clone());
            update.update_type = Some(best.update_type);
            update.chart_update_type = Some(best.update_type);
            update.release_timestamp = entry
                .and_then(|u| u.release_timestamp.as_deref())
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(Time);
            update.changelog_url = entry.and_then(|u| u.changelog_url.clone());
            update.source_url = entry.and_then(|u| u.source_url.clone());
            notes.push(format!(
                "chart {} ({})",
                best.version,
                word(best.update_type)
            ));
        }
    }

    // Each image: a newer tag, or a new digest for the same tag.
    for image in &current.images {
        let rule = policy.images.iter().find(|r| r.name == image.name);
        let auto = rule.map_or(AutoUpdate::None, |r| r.auto_update);
        let constraint = match rule
            .and_then(|r| r.constraint.as_deref())
            .map(Constraint::parse)
        {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                policy_error = Some(format!(
                    "the constraint for image {} is not usable: {e}",
                    image.name
                ));
                continue;
            }
            None => None,
        };
        let entries: Vec<&DetectedUpdate> =
            detected.iter().filter(|u| u.name == image.name).collect();
        let Some(tag) = image.tag.clone() else {
            continue;
        };
        let candidates: Vec<String> = entries
            .iter()
            .filter(|u| u.version != tag)
            .map(|u| u.version.clone())
            .collect();
        let skip = rule.map(|r| r.skip.as_slice()).unwrap_or_default();
        let verdicts = judge(&tag, &candidates, auto, constraint.as_ref(), skip);
        for v in verdicts.iter().filter(|v| v.held_back.is_some()) {
            held_back.push(HeldBackUpdate {
                name: image.name.clone(),
                version: v.version.clone(),
                update_type: Some(v.update_type),
                reason: v.held_back.clone().unwrap_or_default(),
            });
        }
        let offered = verdicts.iter().find(|v| v.held_back.is_none());
        let (new, kind) = match offered {
            Some(v) => {
                let digest = entries
                    .iter()
                    .find(|u| u.version == v.version)
                    .and_then(|u| u.digest.clone());
                // A pinned image stays pinned: only offer a tag whose digest is known.
                if image.digest.is_some() && digest.is_none() {
                    (None, v.update_type)
                } else {
                    (Some((v.version.clone(), digest)), v.update_type)
                }
            }
            None => {
                let new_digest = entries
                    .iter()
                    .find(|u| u.version == tag && u.digest.is_some() && u.digest != image.digest)
                    .and_then(|u| u.digest.clone());
                (
                    new_digest.map(|d| (tag.clone(), Some(d))),
                    UpdateType::Digest,
                )
            }
        };
        if let Some((version, digest)) = new {
            notes.push(format!("image {} {version} ({})", image.name, word(kind)));
            update.update_type = update.update_type.max(Some(kind));
            // The links describe the chart's update when there is one, else the first image's.
            if update.chart.is_none()
                && update.source_url.is_none()
                && update.changelog_url.is_none()
            {
                let entry = entries.iter().find(|u| u.version == version);
                update.source_url = entry.and_then(|u| u.source_url.clone());
                update.changelog_url = entry.and_then(|u| u.changelog_url.clone());
            }
            update.images.push(ImageVersion {
                name: image.name.clone(),
                tag: Some(version),
                digest,
            });
            // Each part's own size, so a page or `kubectl get` does not show an image's major
            // beside a chart's patch.
            update.image_update_types.push(ImageUpdateType {
                name: image.name.clone(),
                update_type: kind,
            });
        }
    }

    let available = (update.chart.is_some() || !update.images.is_empty()).then(|| {
        // Keep when it was first seen while the offer stays the same.
        let same = old
            .available_update
            .as_ref()
            .filter(|o| o.chart == update.chart && o.images == update.images);
        update.detected_at = same.and_then(|o| o.detected_at.clone()).or(Some(Time(now)));
        update
    });

    // Conditions.
    let ready = if let Some(first) = res.problems.first() {
        let message = res
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        ("False", first.reason.to_string(), message)
    } else if let Some((reason, message)) = &res.release_not_ready {
        let hr = res
            .resolved
            .as_ref()
            .map_or("", |r| r.helm_release.as_str());
        (
            "False",
            "HelmReleaseNotReady".into(),
            format!("HelmRelease {hr} is not Ready ({reason}): {message}"),
        )
    } else {
        let hr = res
            .resolved
            .as_ref()
            .map_or("", |r| r.helm_release.as_str());
        let chart = current.chart.as_deref().unwrap_or("an unknown version");
        let release = format!("HelmRelease {hr} is Ready at chart {chart}");
        let not_ready: Vec<String> = res
            .workloads
            .iter()
            .filter(|w| !w.is_ready())
            .map(|w| w.describe())
            .collect();
        match res.workloads.len() {
            _ if !not_ready.is_empty() => (
                "False",
                "WorkloadsNotReady".into(),
                format!("{release}, but not its workloads: {}", not_ready.join("; ")),
            ),
            0 => ("True", "Resolved".into(), release),
            1 => (
                "True",
                "Resolved".into(),
                format!("{release}; its workload is ready"),
            ),
            n => (
                "True",
                "Resolved".into(),
                format!("{release}; its {n} workloads are ready"),
            ),
        }
    };
    let held_note = (!held_back.is_empty()).then(|| {
        let list: Vec<String> = held_back
            .iter()
            .map(|h| {
                let what = if h.name == "chart" {
                    "chart".to_string()
                } else {
                    format!("image {}", h.name)
                };
                format!("{what} {} ({})", h.version, h.reason)
            })
            .collect();
        format!("held back by policy: {}", list.join(", "))
    });
    let update_condition = if let Some(e) = &policy_error {
        ("False", "InvalidPolicy".to_string(), e.clone())
    } else if available.is_some() {
        let mut m = format!("{} available", notes.join(", "));
        if let Some(h) = &held_note {
            m.push_str("; ");
            m.push_str(h);
        }
        ("True", "UpdateAvailable".into(), m)
    } else if old.detected.is_none() {
        (
            "False",
            "NotScanned".into(),
            "no Renovate findings for this app yet".into(),
        )
    } else {
        let mut m = "no update the version policy allows".to_string();
        if let Some(h) = &held_note {
            m.push_str("; ");
            m.push_str(h);
        }
        ("False", "UpToDate".into(), m)
    };
    let is_ready = ready.0 == "True";
    let conditions = vec![
        condition(&old.conditions, READY, ready, generation, now),
        condition(
            &old.conditions,
            UPDATE_AVAILABLE,
            update_condition,
            generation,
            now,
        ),
    ];

    // The upgrade controller writes `lastUpgrade`; while it runs, the app is upgrading (and
    // may look degraded, with its workloads stopped for the snapshot).
    let upgrading = old
        .last_upgrade
        .as_ref()
        .is_some_and(|u| u.status.as_deref() == Some(LastUpgrade::RUNNING));
    let rolling_back = old
        .last_upgrade
        .as_ref()
        .is_some_and(|u| u.status.as_deref() == Some(LastUpgrade::ROLLING_BACK));
    let state = if upgrading {
        AppState::Upgrading
    } else if rolling_back {
        AppState::RollingBack
    } else if !is_ready {
        AppState::Degraded
    } else if available.is_some() {
        AppState::UpdateAvailable
    } else {
        AppState::UpToDate
    };
    ManagedAppStatus {
        observed_generation: generation,
        state: Some(state),
        current_version: res.current.clone(),
        available_update: available,
        held_back,
        resolved: res.resolved.clone(),
        workloads: res.workloads.clone(),
        conditions,
        ..Default::default()
    }
}

fn word(t: UpdateType) -> &'static str {
    match t {
        UpdateType::Digest => "digest",
        UpdateType::Patch => "patch",
        UpdateType::Minor => "minor",
        UpdateType::Major => "major",
    }
}

/// A condition, keeping its last transition time while its status stays the same.
fn condition(
    old: &[Condition],
    type_: &str,
    (status, reason, message): (&str, String, String),
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether writing `desired` would change what the app's status says (this controller's
/// fields only).
pub fn changes(app: &ManagedApp, desired: &ManagedAppStatus) -> bool {
    let Some(old) = &app.status else { return true };
    let ours = |c: &&Condition| c.type_ == READY || c.type_ == UPDATE_AVAILABLE;
    old.observed_generation != desired.observed_generation
        || old.state != desired.state
        || old.current_version != desired.current_version
        || old.available_update != desired.available_update
        || old.held_back != desired.held_back
        || old.resolved != desired.resolved
        || old.workloads != desired.workloads
        || old
            .conditions
            .iter()
            .filter(ours)
            .ne(desired.conditions.iter().filter(ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed_app::resolve::{Problem, Resolution};
    use fluxup_api::{
        ChartPolicy, DetectedUpdates, ImagePolicy, ManagedAppSpec, ResolvedApp, VersionPolicy,
        VersionSet,
    };

    fn update(name: &str, version: &str, kind: UpdateType, digest: Option<&str>) -> DetectedUpdate {
        DetectedUpdate {
            name: name.into(),
            version: version.into(),
            update_type: Some(kind),
            digest: digest.map(str::to_string),
            ..Default::default()
        }
    }

    fn app(policy: VersionPolicy, updates: Vec<DetectedUpdate>) -> ManagedApp {
        let mut app = ManagedApp::new(
            "web",
            ManagedAppSpec {
                version_policy: Some(policy),
                ..Default::default()
            },
        );
        app.metadata.generation = Some(3);
        app.status = Some(ManagedAppStatus {
            detected: Some(DetectedUpdates {
                source: "run".into(),
                updates,
                ..Default::default()
            }),
            ..Default::default()
        });
        app
    }

    fn ready(chart: &str, images: Vec<ImageVersion>) -> Resolution {
        Resolution {
            resolved: Some(ResolvedApp {
                helm_release: "apps/web".into(),
                ..Default::default()
            }),
            current: Some(VersionSet {
                chart: Some(chart.into()),
                images,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn image(name: &str, tag: &str, digest: Option<&str>) -> ImageVersion {
        ImageVersion {
            name: name.into(),
            tag: Some(tag.into()),
            digest: digest.map(str::to_string),
        }
    }

    #[test]
    fn a_pinned_image_is_offered_only_a_tag_whose_digest_is_known() {
        let policy = VersionPolicy::default();
        let res = ready("1.0.0", vec![image("db", "1.0.0", Some("sha256:a"))]);
        let without_digest = app(
            policy.clone(),
            vec![update("db", "1.1.0", UpdateType::Minor, None)],
        );
        let status = desired_status(&without_digest, &res, Timestamp::UNIX_EPOCH);
        assert_eq!(status.available_update, None);

        let with_digest = app(
            policy,
            vec![update("db", "1.1.0", UpdateType::Minor, Some("sha256:b"))],
        );
        let status = desired_status(&with_digest, &res, Timestamp::UNIX_EPOCH);
        let offered = &status.available_update.unwrap().images[0];
        assert_eq!(
            (offered.tag.as_deref(), offered.digest.as_deref()),
            (Some("1.1.0"), Some("sha256:b"))
        );
    }

    #[test]
    fn per_image_rules_apply_to_their_image_only() {
        let policy = VersionPolicy {
            images: vec![ImagePolicy {
                name: "web".into(),
                auto_update: AutoUpdate::Patch,
                ..Default::default()
            }],
            ..Default::default()
        };
        let res = ready(
            "1.0.0",
            vec![image("web", "2.0.0", None), image("cache", "7.0.0", None)],
        );
        let app = app(
            policy,
            vec![
                update("web", "2.1.0", UpdateType::Minor, None),
                update("cache", "8.0.0", UpdateType::Major, None),
            ],
        );
        let status = desired_status(&app, &res, Timestamp::UNIX_EPOCH);
        let offered: Vec<_> = status
            .available_update
            .unwrap()
            .images
            .into_iter()
            .map(|i| (i.name, i.tag.unwrap()))
            .collect();
        assert_eq!(offered, [("cache".to_string(), "8.0.0".to_string())]);
        assert_eq!(
            status.held_back[0].reason,
            "a minor update; autoUpdate is patch"
        );
    }

    #[test]
    fn each_part_has_its_own_update_type_and_the_largest_is_the_apps() {
        let res = ready(
            "1.0.0",
            vec![
                image("web", "2.0.0", None),
                image("db", "7.0.0", Some("sha256:a")),
            ],
        );
        let app = app(
            VersionPolicy::default(),
            vec![
                update("chart", "1.0.1", UpdateType::Patch, None),
                update("web", "3.0.0", UpdateType::Major, None),
                update("db", "7.0.0", UpdateType::Digest, Some("sha256:b")),
            ],
        );
        let update = desired_status(&app, &res, Timestamp::UNIX_EPOCH)
            .available_update
            .unwrap();
        assert_eq!(update.chart_update_type, Some(UpdateType::Patch));
        assert_eq!(
            update.image_update_types,
            [
                ImageUpdateType {
                    name: "web".into(),
                    update_type: UpdateType::Major
                },
                ImageUpdateType {
                    name: "db".into(),
                    update_type: UpdateType::Digest
                },
            ]
        );
        assert_eq!(update.update_type, Some(UpdateType::Major), "the largest");

        // Only an image: no chart type.
        let app_images_only = self::app(
            VersionPolicy::default(),
            vec![update_entry("web", "2.0.1", UpdateType::Patch)],
        );
        let update = desired_status(&app_images_only, &res, Timestamp::UNIX_EPOCH)
            .available_update
            .unwrap();
        assert_eq!(update.chart_update_type, None);
        assert_eq!(update.update_type, Some(UpdateType::Patch));
    }

    fn update_entry(name: &str, version: &str, kind: UpdateType) -> DetectedUpdate {
        update(name, version, kind, None)
    }

    #[test]
    fn an_unusable_constraint_is_said_not_ignored() {
        let policy = VersionPolicy {
            chart: Some(ChartPolicy {
                constraint: Some(">= banana".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let app = app(
            policy,
            vec![update("chart", "1.1.0", UpdateType::Minor, None)],
        );
        let status = desired_status(&app, &ready("1.0.0", vec![]), Timestamp::UNIX_EPOCH);
        let cond = status
            .conditions
            .iter()
            .find(|c| c.type_ == "UpdateAvailable")
            .unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "InvalidPolicy")
        );
        assert!(
            cond.message
                .starts_with("the chart constraint is not usable"),
            "{}",
            cond.message
        );
        assert_eq!(status.available_update, None);
    }

    #[test]
    fn a_skipped_chart_version_is_held_back_and_the_next_offered() {
        let policy = VersionPolicy {
            chart: Some(ChartPolicy {
                skip: vec!["1.1.0".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let app = app(
            policy,
            vec![
                update("chart", "1.1.0", UpdateType::Minor, None),
                update("chart", "1.0.1", UpdateType::Patch, None),
            ],
        );
        let status = desired_status(&app, &ready("1.0.0", vec![]), Timestamp::UNIX_EPOCH);
        assert_eq!(
            status.available_update.and_then(|u| u.chart).as_deref(),
            Some("1.0.1")
        );
        let held: Vec<(&str, &str)> = status
            .held_back
            .iter()
            .map(|h| (h.version.as_str(), h.reason.as_str()))
            .collect();
        assert_eq!(
            held,
            [("1.1.0", "skipped by a person (versionPolicy skip)")]
        );
    }

    #[test]
    fn a_problem_makes_the_app_degraded_and_keeps_transition_times() {
        let mut app = app(VersionPolicy::default(), vec![]);
        let res = Resolution {
            problems: vec![Problem {
                reason: "HelmReleaseNotFound",
                message: "HelmRelease apps/web not found".into(),
            }],
            ..Default::default()
        };
        let first = desired_status(&app, &res, Timestamp::UNIX_EPOCH);
        assert_eq!(first.state, Some(AppState::Degraded));
        assert_eq!(first.observed_generation, Some(3));
        // Later, the same condition keeps the time it first became False.
        app.status.as_mut().unwrap().conditions = first.conditions.clone();
        let later = Timestamp::from_second(1_000).unwrap();
        let second = desired_status(&app, &res, later);
        assert_eq!(
            second.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
        assert!(!changes(
            &ManagedApp {
                status: Some(ManagedAppStatus {
                    conditions: second.conditions.clone(),
                    ..first.clone()
                }),
                ..app
            },
            &second
        ));
    }

    #[test]
    fn health_is_the_releases_and_its_workloads() {
        let app = app(VersionPolicy::default(), vec![]);
        let workload = |name: &str, ready: i32| fluxup_api::WorkloadHealth {
            kind: "Deployment".into(),
            name: format!("apps/{name}"),
            replicas: 2,
            ready_replicas: ready,
            rolled_out: true,
        };
        let mut res = ready("1.0.0", vec![]);
        res.workloads = vec![workload("web", 2), workload("worker", 2)];
        let healthy = desired_status(&app, &res, Timestamp::UNIX_EPOCH);
        let cond = &healthy.conditions[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("True", "Resolved")
        );
        assert_eq!(
            cond.message,
            "HelmRelease apps/web is Ready at chart 1.0.0; its 2 workloads are ready"
        );
        assert_eq!(healthy.workloads, res.workloads);

        // The release is Ready but a workload is not: not healthy, and the page says which.
        res.workloads[1].ready_replicas = 1;
        let sick = desired_status(&app, &res, Timestamp::UNIX_EPOCH);
        let cond = &sick.conditions[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "WorkloadsNotReady")
        );
        assert_eq!(
            cond.message,
            "HelmRelease apps/web is Ready at chart 1.0.0, but not its workloads: \
             Deployment apps/worker: 1 of 2 replicas ready"
        );
        assert_eq!(sick.state, Some(AppState::Degraded));
        assert!(changes(
            &ManagedApp {
                status: Some(healthy),
                ..app
            },
            &sick
        ));
    }
}
