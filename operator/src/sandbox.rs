//! Test harness for the sandbox: a real kube-apiserver (with etcd, controller-manager,
//! scheduler and kwok) started as local processes by `sandbox/sandbox`.
//!
//! Every integration test calls [`Sandbox::start`] for a client and a fresh namespace. The first
//! caller of a test run starts the sandbox (under a file lock, so parallel test binaries share one
//! sandbox and never collide on ports or data directories); later callers reuse it. FluxUp's CRDs
//! from `config/crd` are applied once per process.
//!
//! Test sandboxes keep their state in `target/test-sandbox` on ports from 17000, apart from the
//! demo's `.sandbox` (16000), so a running demo and a test run do not disturb each other.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Field manager for everything the harness applies.
const MANAGER: &str = "fluxup-test-harness";

/// The repository root (this crate lives in `<root>/operator`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator crate sits in the repository root")
        .to_path_buf()
}

/// Where the test sandbox keeps its state: `$SANDBOX_STATE`, or `target/test-sandbox`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("SANDBOX_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-sandbox"))
}

/// A running sandbox, seen from one test.
pub struct Sandbox {
    /// A client with cluster-admin rights.
    pub client: Client,
    /// The namespace made for this test; deleted when the test passes.
    pub namespace: TestNamespace,
}

impl Sandbox {
    /// Starts the shared sandbox if it is not running, installs FluxUp's CRDs, and makes a fresh
    /// namespace named after `test_name`.
    pub async fn start(test_name: &str) -> anyhow::Result<Sandbox> {
        let kubeconfig = ensure_running()?;
        let client = client_for(&kubeconfig).await?;
        install_crds_once(&client).await?;
        let namespace = TestNamespace::create(&client, test_name).await?;
        Ok(Sandbox { client, namespace })
    }

    /// The test's namespace.
    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// A typed API in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.ns())
    }
}

/// Runs `sandbox/sandbox up` once per process (it returns at once when the sandbox is already
/// up) and returns the kubeconfig path.
fn ensure_running() -> anyhow::Result<PathBuf> {
    static KUBECONFIG: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KUBECONFIG
        .get_or_init(|| start_sandbox().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn start_sandbox() -> anyhow::Result<PathBuf> {
    let state = state_dir();
    std::fs::create_dir_all(&state)?;
    let script = repo_root().join("sandbox/sandbox");
    let lock = state.with_extension("lock");
    // flock(1) serializes test binaries that start at the same moment. `--close` keeps the lock
    // out of the daemons `up` starts, which would otherwise hold it for as long as they run.
    let output = Command::new("flock")
        .arg("--close")
        .arg(&lock)
        .arg(&script)
        .arg("up")
        .env("SANDBOX_STATE", &state)
        .env(
            "SANDBOX_PORT_BASE",
            std::env::var("SANDBOX_PORT_BASE").unwrap_or_else(|_| "17000".into()),
        )
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "sandbox/sandbox up failed ({}):\n{}\n{}\nComponent logs: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            state.join("logs").display()
        );
    }
    Ok(state.join("kubeconfig"))
}

/// A client for the sandbox's kubeconfig.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Applies every CRD in `config/crd` and waits until the API server serves them.
async fn install_crds_once(client: &Client) -> anyhow::Result<()> {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in read_crds(&repo_root().join("config/crd"))? {
                let name = crd.metadata.name.clone().unwrap_or_default();
                crds.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying CRD {name}"))?;
                let established =
                    await_condition(crds.clone(), &name, conditions::is_crd_established());
                tokio::time::timeout(Duration::from_secs(30), established)
                    .await
                    .with_context(|| format!("CRD {name} not established after 30 s"))??;
            }
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

/// Reads every CRD document in the YAML files of `dir`.
pub fn read_crds(dir: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    paths.sort();
    let mut crds = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            crds.push(
                serde_yaml::from_value(value)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    Ok(crds)
}

use serde::Deserialize as _;

/// A namespace for one test. Deleted when the test passes; kept, with a pointer to the
/// components' logs, when it fails.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
}

impl TestNamespace {
    async fn create(client: &Client, test_name: &str) -> anyhow::Result<Self> {
        let slug: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let suffix = format!("{:x}", std::process::id() ^ (nanos() as u32));
        let name = format!("{}-{}", slug.trim_matches('-'), suffix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("fluxup.dev/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns).await?;
        Ok(TestNamespace { name })
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: namespace {} kept for inspection; sandbox logs in {}",
                self.name,
                state_dir().join("logs").display()
            );
            return;
        }
        // Drop cannot await, and the test's client is tied to the test's runtime, which this
        // thread blocks: delete with a new client on a thread and runtime of our own.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = client_for(&state_dir().join("kubeconfig")).await?;
                let api: Api<Namespace> = Api::all(client);
                api.delete(&name, &DeleteParams::background()).await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}
