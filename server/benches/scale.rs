//! Scale benchmark: creates N ManagedApps (default 1,000) with their HelmReleases, chart sources
//! and Kustomizations in the sandbox, starts the `fluxup` binary (release build) as the operator
//! on that namespace, and prints
//! - the time from the operator's start until every app has a status,
//! - the Kubernetes API requests the operator made (counted by the operator itself), and
//! - the operator process's resident memory once idle.
//!
//! The figures are the baseline later work is compared against (goals: no LIST per reconcile,
//! idle RSS under 40 MiB).

use anyhow::Context as _;
use fluxup_api::ManagedApp;
use fluxup_sandbox::Sandbox;
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HELM_REPOSITORIES: usize = 10;

fn objects(n: usize, ns: &str) -> Vec<Value> {
    let mut out: Vec<Value> = (0..HELM_REPOSITORIES)
        .map(|r| {
            json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                "metadata": {"name": format!("charts-{r}")},
                "spec": {"interval": "1h", "url": format!("https://charts-{r}.example.com")},
            })
        })
        .collect();
    for i in 0..n {
        let name = format!("app-{i}");
        // Half the apps take their chart from an OCIRepository (chartRef), half from a shared
        // HelmRepository (chart.spec), as fleets mix both.
        let chart = if i % 2 == 0 {
            out.push(json!({
                "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
                "metadata": {"name": name},
                "spec": {"interval": "1h", "url": format!("oci://registry.example.com/charts/{name}"),
                         "ref": {"tag": "1.0.0"}},
            }));
            json!({"chartRef": {"kind": "OCIRepository", "name": name}})
        } else {
            json!({"chart": {"spec": {"chart": name, "version": "1.0.0",
                   "sourceRef": {"kind": "HelmRepository", "name": format!("charts-{}", i % HELM_REPOSITORIES)}}}})
        };
        let mut spec = json!({"interval": "10m", "values": {
            "image": {"repository": format!("registry.example.com/images/{name}"), "tag": "1.0.0"}}});
        spec.as_object_mut()
            .unwrap()
            .extend(chart.as_object().unwrap().clone());
        out.push(
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                        "metadata": {"name": name}, "spec": spec}),
        );
        out.push(
            json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                        "metadata": {"name": name},
                        "spec": {"interval": "10m", "prune": true, "path": format!("./apps/{name}"),
                                 "sourceRef": {"kind": "GitRepository", "name": "fleet"}}}),
        );
        out.push(
            json!({"apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
                        "metadata": {"name": name},
                        "spec": {"helmReleaseRef": {"name": name},
                                 "kustomizationRef": {"name": name, "namespace": ns}}}),
        );
    }
    out
}

async fn apply_all(sb: &Sandbox, objects: Vec<Value>) -> anyhow::Result<()> {
    stream::iter(objects)
        .map(|o| sb.apply(o))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("FLUXUP_SCALE_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let sb = Sandbox::start("scale-bench").await?;
    let ns = sb.ns().to_string();

    let objects = objects(n, &ns);
    let count = objects.len();
    let t = Instant::now();
    apply_all(&sb, objects).await?;
    println!(
        "created {count} objects ({n} ManagedApps) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let apps: Api<ManagedApp> = sb.api();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_path = fluxup_sandbox::repo_root().join("target/scale-bench-operator.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxup"))
        .args(["serve", "--watch-namespace", &ns])
        .env("KUBECONFIG", sb.env("KUBECONFIG")?)
        .env("POD_NAMESPACE", &ns)
        .env("FLUXUP_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXUP_METRICS_LISTEN", "127.0.0.1:0")
        .env("FLUXUP_LOG_FORMAT", "json")
        .env("FLUXUP_NO_AUTH", "true")
        .env("RUST_LOG", "info,fluxup_operator::managed_app=warn")
        .stdout(Stdio::from(std::fs::File::create(&log_path)?))
        .stderr(Stdio::null())
        .spawn()
        .context("starting target/release/fluxup")?;
    let pid = child.id();
    let _stop_operator = StopOnDrop(pid);

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = apps.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|a| {
                a.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation.is_some())
            })
            .count();
        if done == n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} apps have a status after 2 minutes (operator log: {})",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until_status = started.elapsed();
    println!(
        "every app has status {:.2} s after the operator started",
        until_status.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_rss = rss_kib(pid)?;
    println!(
        "operator RSS once idle: {:.1} MiB",
        idle_rss as f64 / 1024.0
    );

    // The apps page, rendered on the server with every app in it (no login: --no-auth).
    let (first_bytes, whole, size, rows) = page_times(port, 30)?;
    anyhow::ensure!(rows >= n, "the apps page shows {rows} of {n} apps");
    println!(
        "apps page with {rows} apps ({:.0} KiB of HTML): time to first byte median {:.1} ms, p95 {:.1} ms; whole page median {:.1} ms (goal: first byte <= 50 ms)",
        size as f64 / 1024.0,
        percentile(&first_bytes, 50),
        percentile(&first_bytes, 95),
        percentile(&whole, 50),
    );

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    child.wait()?;
    let mut requests = None;
    for line in BufReader::new(std::fs::File::open(&log_path)?).lines() {
        let line = line?;
        if let Ok(record) = serde_json::from_str::<Value>(&line)
            && let Some(r) = record["requests"]
                .as_str()
                .or(record["fields"]["requests"].as_str())
        {
            requests = Some(r.to_string());
        }
    }
    let requests = requests.context("the operator logged no request counts")?;
    println!("API requests by the operator (start to idle):");
    let mut lists = 0;
    for item in requests.split(", ") {
        println!("  {item}");
        if let Some((key, count)) = item.split_once('=')
            && key.starts_with("LIST ")
        {
            lists += count.parse::<u64>().unwrap_or(0);
        }
    }
    println!(
        "LIST requests: {lists} for {n} apps (the caches start from streaming lists; reconciles read only them)"
    );
    Ok(())
}

/// Fetches `/` `times` times over plain HTTP/1.1: milliseconds to the first byte and to the
/// whole page, the page's size and how many app rows it has.
fn page_times(port: u16, times: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>, usize, usize)> {
    use std::io::{Read, Write};
    let (mut first, mut whole, mut size, mut rows) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..times {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        let started = Instant::now();
        // A server without logins answers only requests for localhost.
        stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        first.push(started.elapsed().as_secs_f64() * 1000.0);
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
        whole.push(started.elapsed().as_secs_f64() * 1000.0);
        let text = String::from_utf8_lossy(&rest);
        size = rest.len() + 1;
        rows = text.matches("<tr id=\"app-").count();
    }
    Ok((first, whole, size, rows))
}

/// The `p`th percentile of `values` (nearest rank).
fn percentile(values: &[f64], p: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Stops the operator when the benchmark ends early, so it does not outlive it.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
