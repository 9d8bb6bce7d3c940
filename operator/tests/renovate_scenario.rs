//! Scenario: the real Renovate CLI (npm, installed by scripts/setup) looks up updates in the
//! demo fleet repository in Gitea, against the sandbox's Helm repository and OCI registry; its
//! JSON log goes through FluxUp's ingestion, and the ManagedApp controller, running on the demo
//! apps that real Flux installed, shows each app's available update under its policy.

use anyhow::{Context as _, bail};
use fluxup_api::{ManagedApp, UpdateType};
use fluxup_operator::{Scope, ingest, managed_app, renovate};
use fluxup_sandbox::{Sandbox, demo_script, seed_demo};
use kube::Api;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Runs Renovate in lookup mode, the way config/renovate/cronjob.yaml does, and returns its
/// JSON log and its report file.
fn run_renovate(repo: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let log = PathBuf::from(demo_script("renovate", &[repo])?.trim());
    let report = log.with_file_name("renovate-report.json");
    Ok((std::fs::read(&log)?, std::fs::read(report)?))
}

struct Expected {
    app: &'static str,
    chart: &'static str,
    chart_type: UpdateType,
    chart_held: &'static [&'static str],
    image: &'static str,
    image_tag: &'static str,
    image_pinned: bool,
    image_held: &'static [&'static str],
}

#[tokio::test]
async fn real_renovate_output_becomes_each_demo_apps_available_update() -> anyhow::Result<()> {
    let sb = Sandbox::start_full("renovate-scenario").await?;
    let repo = seed_demo()?;
    let registry = sb.env("REGISTRY_HOST")?.to_string();

    let stop = CancellationToken::new();
    let token = stop.clone();
    let controller = tokio::spawn(managed_app::run(
        sb.client.clone(),
        Scope::default(),
        async move { token.cancelled().await },
    ));

    let (log, report) = run_renovate(&repo)?;
    let findings = renovate::parse_log(&log).context("parsing Renovate's real log")?;
    assert!(
        findings.renovate_version.is_some(),
        "the log names Renovate's version"
    );
    // Read as the Job controller reads a pod's log, as a stream up to the limit: the same.
    let streamed = futures::executor::block_on(renovate::read_stream(
        futures::io::Cursor::new(&log),
        renovate::DEFAULT_LOG_LIMIT,
    ))??;
    assert_eq!(streamed, findings);
    // Ingestion maps by the apps' resolved status: wait until the controller has written it.
    for app in ["webapp", "api", "datastore", "notes"] {
        wait(
            app,
            "resolved",
            |a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| s.resolved.is_some() && s.current_version.is_some())
            },
            &sb,
        )
        .await?;
    }
    // The report file says the same as the log, app by app.
    let apps = Api::<ManagedApp>::all(sb.client.clone())
        .list(&Default::default())
        .await?
        .items;
    let from_report = renovate::parse_output(&report).context("parsing Renovate's report file")?;
    assert!(!from_report.package_files.is_empty());
    assert_eq!(
        ingest::assign(&from_report, &apps).updates,
        ingest::assign(&findings, &apps).updates
    );
    let summary = ingest::record(
        &sb.client,
        &Scope::default(),
        "renovate-scenario",
        &Ok(findings),
    )
    .await?;
    assert!(
        summary.unmatched.is_empty(),
        "updates that belong to no app: {:?}",
        summary.unmatched
    );
    assert!(
        summary.refused.is_empty(),
        "real output refused: {:?}",
        summary.refused
    );

    // The demo publishes charts 1.0.0, 1.0.1, 1.1.0, 2.0.0 and images 1.0.0, 1.0.1, 1.2.0, 2.0.0;
    // everything runs 1.0.0. The apps' policies (sandbox/demo/repo/apps/*/managedapp.yaml):
    let expected = [
        // chart: autoUpdate patch; image: autoUpdate none (any size, with approval).
        Expected {
            app: "webapp",
            chart: "1.0.1",
            chart_type: UpdateType::Patch,
            chart_held: &["2.0.0", "1.1.0"],
            image: "demo/webapp",
            image_tag: "2.0.0",
            image_pinned: false,
            image_held: &[],
        },
        // chart from an OCIRepository: autoUpdate minor; image pinned by digest: autoUpdate patch.
        Expected {
            app: "api",
            chart: "1.1.0",
            chart_type: UpdateType::Minor,
            chart_held: &["2.0.0"],
            image: "demo/api",
            image_tag: "1.0.1",
            image_pinned: true,
            image_held: &["2.0.0", "1.2.0"],
        },
        // chart from an OCIRepository: autoUpdate patch; pinned image without a rule.
        Expected {
            app: "datastore",
            chart: "1.0.1",
            chart_type: UpdateType::Patch,
            chart_held: &["2.0.0", "1.1.0"],
            image: "demo/datastore",
            image_tag: "2.0.0",
            image_pinned: true,
            image_held: &[],
        },
    ];
    for e in expected {
        let image_name = format!("{registry}/{}", e.image);
        let app = wait(
            e.app,
            "an available update",
            |a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| s.available_update.is_some())
            },
            &sb,
        )
        .await?;
        let status = app.status.unwrap();
        let update = status.available_update.clone().unwrap();
        assert_eq!(update.chart.as_deref(), Some(e.chart), "{}: chart", e.app);
        assert_eq!(
            update.candidates.first().map(String::as_str),
            Some(e.chart),
            "{}",
            e.app
        );
        let image = update
            .images
            .iter()
            .find(|i| i.name == image_name)
            .with_context(|| {
                format!("{}: no update for {image_name}: {:?}", e.app, update.images)
            })?;
        assert_eq!(
            image.tag.as_deref(),
            Some(e.image_tag),
            "{}: image tag",
            e.app
        );
        assert_eq!(
            image
                .digest
                .as_deref()
                .is_some_and(|d| d.starts_with("sha256:")),
            e.image_pinned,
            "{}: a pinned image gets the new digest, an unpinned one none",
            e.app
        );
        let largest = if e.image_tag == "2.0.0" {
            UpdateType::Major
        } else {
            e.chart_type
        };
        assert_eq!(update.update_type, Some(largest), "{}", e.app);
        let held = |name: &str| -> Vec<String> {
            status
                .held_back
                .iter()
                .filter(|h| h.name == name)
                .map(|h| h.version.clone())
                .collect()
        };
        assert_eq!(held("chart"), e.chart_held, "{}: chart held back", e.app);
        assert_eq!(
            held(&image_name),
            e.image_held,
            "{}: image held back",
            e.app
        );
        let detected = status.detected.clone().context("detected")?;
        assert_eq!(detected.source, "renovate-scenario");
        // The chart's file is where Renovate found it.
        assert!(
            detected.updates.iter().any(|u| u.name == "chart"
                && u.package_file
                    .as_deref()
                    .is_some_and(|f| f.starts_with(&format!("apps/{}/", e.app)))),
            "{}: {:?}",
            e.app,
            detected.updates
        );
        for u in &detected.updates {
            for link in [&u.changelog_url, &u.source_url].into_iter().flatten() {
                assert!(
                    link.starts_with("https://") || link.starts_with("http://"),
                    "{link}"
                );
            }
        }
        let scanned = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Scanned")
            .context("Scanned")?;
        assert_eq!(scanned.status, "True");
    }

    stop.cancel();
    controller.await?;
    Ok(())
}

async fn wait(
    name: &str,
    what: &str,
    check: impl Fn(&ManagedApp) -> bool,
    sb: &Sandbox,
) -> anyhow::Result<ManagedApp> {
    let api: Api<ManagedApp> = Api::namespaced(sb.client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(app) = api.get(name).await
            && check(&app)
        {
            return Ok(app);
        }
        if Instant::now() > deadline {
            let app = api.get(name).await?;
            bail!(
                "{name}: timed out waiting for {what}:\n{}",
                serde_yaml::to_string(&app.status)?
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
