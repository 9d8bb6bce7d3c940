//! Prometheus metrics of the operator, served at `/metrics` in the OpenMetrics text format:
//! upgrades and rollbacks by result with their durations, the time spent in each upgrade phase,
//! failed reconciles by controller and error category, notifications by sink type and result,
//! and, read from the watch caches at each scrape (so a deleted app leaves no series behind),
//! the apps with an update available and the snapshots FluxUp keeps for each app. Labels other
//! than an app's name are closed sets, so cardinality stays bounded by the number of apps;
//! every series of a closed set exists from the start.

use fluxup_api::snapshot::VolumeSnapshot;
use fluxup_api::{ManagedApp, UpgradePhase};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabel {
    sink_type: String,
    result: String,
}

/// The categories of `reconcile_errors`: what a person would look at first.
pub const ERROR_CATEGORIES: [&str; 7] = [
    "conflict",
    "not_found",
    "forbidden",
    "invalid",
    "api",
    "connection",
    "git",
];
/// The category of anything not in [`ERROR_CATEGORIES`].
pub const OTHER: &str = "other";

/// The category of a Kubernetes client error.
pub fn kube_category(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            404 => "not_found",
            401 | 403 => "forbidden",
            400 | 422 => "invalid",
            _ => "api",
        },
        _ => "connection",
    }
}

type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 s to about 2.3 h: an upgrade phase takes from under a second to a long snapshot.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 15))
}

struct Metrics {
    registry: Registry,
    upgrades: Family<ResultLabel, Counter>,
    upgrade_seconds: Durations<ResultLabel>,
    upgrade_phase_seconds: Durations<PhaseLabel>,
    rollbacks: Family<ResultLabel, Counter>,
    rollback_seconds: Durations<ResultLabel>,
    reconcile_errors: Family<ControllerLabel, Counter>,
    notifications: Family<NotificationLabel, Counter>,
}

/// The ManagedApp controller's cache, once it runs.
static APPS: Mutex<Option<Store<ManagedApp>>> = Mutex::new(None);

/// Lets `/metrics` read the apps' available updates from the ManagedApp controller's cache. A
/// controller started again (after losing and regaining the Lease) replaces the old cache.
pub fn watch_apps(apps: Store<ManagedApp>) {
    if let Ok(mut slot) = APPS.lock() {
        *slot = Some(apps);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppUpdateLabels {
    namespace: String,
    app: String,
    update_type: String,
}

/// `fluxup_updates_available`: one series per app with an update its policy allows.
#[derive(Debug)]
struct AvailableUpdates;

impl Collector for AvailableUpdates {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let apps = APPS
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|store| store.state()))
            .unwrap_or_default();
        let mut metric = encoder.encode_descriptor(
            "updates_available",
            "Apps with an update their version policy allows, by the size of the update",
            None,
            MetricType::Gauge,
        )?;
        for app in apps {
            let Some(update) = app
                .status
                .as_ref()
                .and_then(|s| s.available_update.as_ref())
            else {
                continue;
            };
            let update_type = update
                .update_type
                .map(|t| format!("{t:?}").to_lowercase())
                .unwrap_or_else(|| "unknown".into());
            let labels = AppUpdateLabels {
                namespace: app.namespace().unwrap_or_default(),
                app: app.name_any(),
                update_type,
            };
            ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The VolumeSnapshots FluxUp took (labelled with their app), once the ManagedApp controller
/// watches them.
static SNAPSHOTS: Mutex<Option<Store<VolumeSnapshot>>> = Mutex::new(None);

/// Lets `/metrics` count each app's snapshots from the watch cache.
pub fn watch_snapshots(snapshots: Store<VolumeSnapshot>) {
    if let Ok(mut slot) = SNAPSHOTS.lock() {
        *slot = Some(snapshots);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct AppLabels {
    namespace: String,
    app: String,
}

/// `fluxup_snapshots`: how many VolumeSnapshots FluxUp keeps for each app (retention shows here).
#[derive(Debug)]
struct Snapshots;

impl Collector for Snapshots {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots = SNAPSHOTS
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(|store| store.state()))
            .unwrap_or_default();
        let mut by_app = std::collections::BTreeMap::<AppLabels, i64>::new();
        for snapshot in snapshots {
            if let Some(app) = snapshot.labels().get(crate::snapshots::APP_LABEL) {
                let labels = AppLabels {
                    namespace: snapshot.namespace().unwrap_or_default(),
                    app: app.clone(),
                };
                *by_app.entry(labels).or_default() += 1;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "snapshots",
            "VolumeSnapshots FluxUp keeps for each app",
            None,
            MetricType::Gauge,
        )?;
        for (labels, count) in by_app {
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("fluxup");
    registry.register_collector(Box::new(AvailableUpdates));
    registry.register_collector(Box::new(Snapshots));
    let upgrades = Family::<ResultLabel, Counter>::default();
    registry.register(
        "upgrades",
        "Upgrades that ended, by result (succeeded, failed, dry_run)",
        upgrades.clone(),
    );
    let upgrade_seconds: Durations<ResultLabel> = Family::new_with_constructor(seconds);
    registry.register(
        "upgrade_duration_seconds",
        "Time from an UpgradeRequest's creation to its end, by result",
        upgrade_seconds.clone(),
    );
    let upgrade_phase_seconds: Durations<PhaseLabel> = Family::new_with_constructor(seconds);
    registry.register(
        "upgrade_phase_duration_seconds",
        "Time an upgrade spent in each phase",
        upgrade_phase_seconds.clone(),
    );
    let rollbacks = Family::<ResultLabel, Counter>::default();
    registry.register(
        "rollbacks",
        "Rollbacks that ended, by result (succeeded, failed, dry_run)",
        rollbacks.clone(),
    );
    let rollback_seconds: Durations<ResultLabel> = Family::new_with_constructor(seconds);
    registry.register(
        "rollback_duration_seconds",
        "Time from a RollbackRequest's creation to its end, by result",
        rollback_seconds.clone(),
    );
    let reconcile_errors = Family::<ControllerLabel, Counter>::default();
    registry.register(
        "reconcile_errors",
        "Reconciles that failed and were retried, by controller and error category",
        reconcile_errors.clone(),
    );
    let notifications = Family::<NotificationLabel, Counter>::default();
    registry.register(
        "notifications",
        "Notifications by sink type and result (delivered, or failed after every retry)",
        notifications.clone(),
    );
    for sink_type in ["slack", "webhook", "flux"] {
        for result in ["delivered", "failed"] {
            let _ = notifications.get_or_create(&NotificationLabel {
                sink_type: sink_type.into(),
                result: result.into(),
            });
        }
    }
    // Every series exists from the start, at zero: `increase()` over the first failure would
    // otherwise see nothing, and dashboards would have no series to show.
    for result in ["succeeded", "failed", "dry_run"] {
        let label = ResultLabel {
            result: result.into(),
        };
        let _ = upgrades.get_or_create(&label);
        let _ = rollbacks.get_or_create(&label);
        let _ = upgrade_seconds.get_or_create(&label);
        let _ = rollback_seconds.get_or_create(&label);
    }
    for phase in UpgradePhase::STEPS {
        let _ = upgrade_phase_seconds.get_or_create(&PhaseLabel {
            phase: format!("{phase:?}"),
        });
    }
    for controller in ["managed_app", "renovate_jobs", "upgrade", "rollback"] {
        for category in ERROR_CATEGORIES.iter().chain([&OTHER]) {
            let _ = reconcile_errors.get_or_create(&ControllerLabel {
                controller: controller.into(),
                category: (*category).into(),
            });
        }
    }
    Metrics {
        registry,
        upgrades,
        upgrade_seconds,
        upgrade_phase_seconds,
        rollbacks,
        rollback_seconds,
        reconcile_errors,
        notifications,
    }
});

/// What kind of operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Upgrade,
    Rollback,
}

/// Counts an upgrade or rollback that ended with `result`, and how long it took.
pub fn ended(operation: Operation, result: &str, took: Duration) {
    let label = ResultLabel {
        result: result.into(),
    };
    let m = &*METRICS;
    let (count, seconds) = match operation {
        Operation::Upgrade => (&m.upgrades, &m.upgrade_seconds),
        Operation::Rollback => (&m.rollbacks, &m.rollback_seconds),
    };
    count.get_or_create(&label).inc();
    seconds.get_or_create(&label).observe(took.as_secs_f64());
}

/// Records the time an upgrade spent in `phase`.
pub fn upgrade_phase(phase: &str, took: Duration) {
    METRICS
        .upgrade_phase_seconds
        .get_or_create(&PhaseLabel {
            phase: phase.into(),
        })
        .observe(took.as_secs_f64());
}

/// Counts a failed reconcile of `controller`; `category` is one of [`ERROR_CATEGORIES`] (anything
/// else counts as `other`).
pub fn reconcile_error(controller: &str, category: &str) {
    let category = if ERROR_CATEGORIES.contains(&category) {
        category
    } else {
        OTHER
    };
    METRICS
        .reconcile_errors
        .get_or_create(&ControllerLabel {
            controller: controller.into(),
            category: category.into(),
        })
        .inc();
}

/// Counts a notification that was delivered to, or given up on by, a sink of `sink_type`.
pub fn notification(sink_type: &str, result: &str) {
    METRICS
        .notifications
        .get_or_create(&NotificationLabel {
            sink_type: sink_type.into(),
            result: result.into(),
        })
        .inc();
}

/// Every metric, in the OpenMetrics text format.
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_are_named_the_prometheus_way() {
        ended(Operation::Upgrade, "succeeded", Duration::from_secs(9));
        ended(Operation::Rollback, "failed", Duration::from_secs(3));
        upgrade_phase("Snapshotting", Duration::from_millis(2200));
        reconcile_error("upgrade", "conflict");
        reconcile_error("rollback", "something new");
        notification("webhook", "delivered");
        let text = encode();
        for line in [
            "fluxup_upgrades_total{result=\"succeeded\"} 1",
            "fluxup_rollbacks_total{result=\"failed\"} 1",
            "fluxup_upgrade_duration_seconds_count{result=\"succeeded\"} 1",
            "fluxup_upgrade_phase_duration_seconds_bucket{le=\"4.0\",phase=\"Snapshotting\"} 1",
            "fluxup_reconcile_errors_total{controller=\"upgrade\",category=\"conflict\"} 1",
            "fluxup_reconcile_errors_total{controller=\"rollback\",category=\"other\"} 1",
            "fluxup_reconcile_errors_total{controller=\"managed_app\",category=\"git\"} 0",
            "fluxup_notifications_total{sink_type=\"webhook\",result=\"delivered\"} 1",
            "fluxup_notifications_total{sink_type=\"slack\",result=\"failed\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The alerts and the dashboard in config/monitoring name only metrics that exist.
    #[test]
    fn the_example_alerts_and_dashboard_use_real_metric_names() {
        let declared: Vec<String> = encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(String::from)
            .collect();
        for (file, text) in [
            (
                "prometheus-rule.yaml",
                include_str!("../../config/monitoring/prometheus-rule.yaml"),
            ),
            (
                "grafana-dashboard.json",
                include_str!("../../config/monitoring/grafana-dashboard.json"),
            ),
        ] {
            let mut used = 0;
            for (i, _) in text.match_indices("fluxup_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    declared.iter().any(|d| d == family),
                    "{file} uses {name}, which FluxUp does not export ({declared:?})"
                );
                used += 1;
            }
            assert!(used > 0, "{file} names no metric");
        }
    }
}
