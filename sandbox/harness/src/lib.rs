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
//!
//! Scenario tests that need Flux, the CSI snapshot stack, the OCI registry, the Helm repository
//! or Gitea call [`Sandbox::start_full`] instead: `sandbox/sandbox up --profile full` in a sandbox
//! of its own (`target/test-sandbox-full`, ports from 18000), so the core and the full sandbox can
//! run side by side. [`Sandbox::env`] gives the values of the sandbox's env file (`GITEA_URL`,
//! `CSI_STATE_DIR`, `REGISTRY_HOST`, ...), [`Sandbox::gitea`] a small client for Gitea's API.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Field manager for everything the harness applies.
const MANAGER: &str = "fluxup-test-harness";

/// The repository root (this crate lives in `<root>/sandbox/harness`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the harness sits in <root>/sandbox/harness")
        .to_path_buf()
}

/// Where the test sandbox keeps its state: `$SANDBOX_STATE`, or `target/test-sandbox`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("SANDBOX_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-sandbox"))
}

/// Where the full-profile test sandbox keeps its state: `$SANDBOX_FULL_STATE`, or
/// `target/test-sandbox-full`.
pub fn full_state_dir() -> PathBuf {
    std::env::var_os("SANDBOX_FULL_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-sandbox-full"))
}

/// Which components a sandbox runs (`sandbox/sandbox up --profile ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The control plane only: etcd, kube-apiserver, controller-manager, scheduler, kwok.
    Core,
    /// The control plane plus Flux, the CSI snapshot stack, an OCI registry, a Helm repository
    /// and Gitea.
    Full,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Core => "core",
            Profile::Full => "full",
        }
    }

    /// The state dir of this profile's test sandbox.
    pub fn state_dir(self) -> PathBuf {
        match self {
            Profile::Core => state_dir(),
            Profile::Full => full_state_dir(),
        }
    }

    fn port_base(self) -> String {
        match self {
            Profile::Core => std::env::var("SANDBOX_PORT_BASE").unwrap_or_else(|_| "17000".into()),
            Profile::Full => {
                std::env::var("SANDBOX_FULL_PORT_BASE").unwrap_or_else(|_| "18000".into())
            }
        }
    }
}

/// A running sandbox, seen from one test.
pub struct Sandbox {
    /// A client with cluster-admin rights: for what a test (a person) does.
    pub client: Client,
    /// A client as FluxUp's controllers run: ServiceAccount `fluxup-controller` with the roles
    /// of `config/rbac`, from a TokenRequest. Tests start controllers with it, so the shipped
    /// roles are proven sufficient.
    pub controller: Client,
    /// A client as FluxUp's dashboard runs: ServiceAccount `fluxup-dashboard`.
    pub dashboard: Client,
    /// The namespace made for this test; deleted when the test passes.
    pub namespace: TestNamespace,
    /// The sandbox's env file (`<state>/env`): `KUBECONFIG`, `SANDBOX_*`, and with the full
    /// profile `GITEA_URL`, `GITEA_TOKEN`, `CSI_STATE_DIR`, `REGISTRY_HOST`, `HELM_REPO_URL`, ...
    pub env: BTreeMap<String, String>,
}

impl Sandbox {
    /// Starts the shared sandbox if it is not running, installs FluxUp's CRDs, and makes a fresh
    /// namespace named after `test_name`.
    pub async fn start(test_name: &str) -> anyhow::Result<Sandbox> {
        Self::start_profile(Profile::Core, test_name).await
    }

    /// Like [`Sandbox::start`], with the full profile: Flux, CSI snapshots, the OCI registry, the
    /// Helm repository and Gitea, in a sandbox of its own (`target/test-sandbox-full`, ports from
    /// 18000). The first call of a test run may build the components (see sandbox/README.md).
    pub async fn start_full(test_name: &str) -> anyhow::Result<Sandbox> {
        Self::start_profile(Profile::Full, test_name).await
    }

    async fn start_profile(profile: Profile, test_name: &str) -> anyhow::Result<Sandbox> {
        let kubeconfig = ensure_running(profile)?;
        let env = read_env_file(&profile.state_dir().join("env"))?;
        let client = client_for(&kubeconfig).await?;
        install_crds_once(&client, profile).await?;
        let identities = identities_once(&client, profile, &kubeconfig).await?;
        let controller = client_for(&identities.controller).await?;
        let dashboard = client_for(&identities.dashboard).await?;
        let namespace = TestNamespace::create(&client, test_name, &kubeconfig).await?;
        Ok(Sandbox {
            client,
            controller,
            dashboard,
            namespace,
            env,
        })
    }

    /// Binds `user` to ClusterRole `role` in the test's namespace only (a RoleBinding): a tenant.
    pub async fn bind_tenant(&self, user: &str, role: &str) -> anyhow::Result<()> {
        self.apply(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }))
        .await?;
        Ok(())
    }

    /// A kubeconfig file for FluxUp's shipped ServiceAccount `account` (`fluxup-controller` or
    /// `fluxup-dashboard`), for a FluxUp process a test starts.
    pub fn kubeconfig_of(&self, account: &str) -> PathBuf {
        let state = Path::new(self.env.get("KUBECONFIG").map_or("", String::as_str))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        state.join(format!("kubeconfig-{account}"))
    }

    /// A value from the sandbox's env file, or an error naming the missing key.
    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.env.get(key).map(String::as_str).with_context(|| {
            format!(
                "{key} is not in the sandbox's env file: is the component built? \
                 (sandbox/sandbox build --profile full; see sandbox/README.md)"
            )
        })
    }

    /// A client for the sandbox's Gitea (full profile), as its admin user.
    pub fn gitea(&self) -> anyhow::Result<Gitea> {
        Ok(Gitea {
            url: self.env("GITEA_URL")?.to_string(),
            token: self.env("GITEA_TOKEN")?.to_string(),
            user: self.env("GITEA_ADMIN_USER")?.to_string(),
            ssh_port: parse_port(self.env("GITEA_SSH_PORT")?)?,
            ssh_user: self.env("GITEA_SSH_USER").unwrap_or("git").to_string(),
            ssh_known_hosts_file: PathBuf::from(self.env("GITEA_SSH_KNOWN_HOSTS")?),
        })
    }

    /// The plain Git server of the full profile (`git-ssh`: OpenSSH's sshd serving bare
    /// repositories, not Gitea), for testing FluxUp's Git backend against a server that has no
    /// API: repositories are made on disk, keys authorized by appending to its authorized_keys.
    pub fn plain_git(&self) -> anyhow::Result<PlainGit> {
        let root = PathBuf::from(self.env("PLAIN_GIT_ROOT")?);
        let authorized_keys = match self.env.get("PLAIN_GIT_AUTHORIZED_KEYS") {
            Some(path) => PathBuf::from(path),
            None => root
                .parent()
                .context("PLAIN_GIT_ROOT has no parent")?
                .join("authorized_keys"),
        };
        Ok(PlainGit {
            port: parse_port(self.env("PLAIN_GIT_SSH_PORT")?)?,
            user: self.env("PLAIN_GIT_USER")?.to_string(),
            known_hosts_file: PathBuf::from(self.env("PLAIN_GIT_KNOWN_HOSTS")?),
            authorized_keys_file: authorized_keys,
            root,
        })
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

    /// Server-side applies `object` (JSON with `apiVersion`, `kind` and `metadata.name`) in the
    /// test's namespace, as `kubectl apply --server-side --force-conflicts` would.
    pub async fn apply(&self, mut object: serde_json::Value) -> anyhow::Result<DynamicObject> {
        object["metadata"]["namespace"] = self.ns().into();
        let api_version = object["apiVersion"].as_str().context("apiVersion")?;
        let kind = object["kind"].as_str().context("kind")?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let name = object["metadata"]["name"]
            .as_str()
            .context("metadata.name")?
            .to_string();
        Api::<DynamicObject>::namespaced_with(self.client.clone(), self.ns(), &resource)
            .patch(
                &name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {kind} {name}"))
    }
}

/// Runs `sandbox/demo/<script>` against the full-profile test sandbox and returns what it
/// printed: `seed` (the demo repository and apps, idempotent; prints `GITEA_REPO=owner/name`)
/// or `renovate <owner/repo>` (the real Renovate CLI in lookup mode; prints its log's path and
/// writes its report beside it as `renovate-report.json`).
pub fn demo_script(script: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(repo_root().join("sandbox/demo").join(script))
        .args(args)
        .env("SANDBOX_STATE", full_state_dir())
        .output()?;
    if !out.status.success() {
        bail!(
            "sandbox/demo/{script} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Seeds the demo into the full-profile test sandbox and returns its repository (`owner/name`).
pub fn seed_demo() -> anyhow::Result<String> {
    demo_script("seed", &[])?
        .lines()
        .find_map(|l| l.strip_prefix("GITEA_REPO=").map(str::to_string))
        .context("seed printed no GITEA_REPO")
}

/// Polls `check` every 250 ms until it gives `Ok(Ok(value))`, or fails after `timeout` with the
/// last state it reported (`Ok(Err(state))`) or the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let start = std::time::Instant::now();
    loop {
        let last = match check().await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(state)) => state,
            Err(e) => format!("error: {e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `sandbox/sandbox up` once per process and profile (it returns at once when the sandbox is
/// already up) and returns the kubeconfig path.
fn ensure_running(profile: Profile) -> anyhow::Result<PathBuf> {
    static CORE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static FULL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let cell = match profile {
        Profile::Core => &CORE,
        Profile::Full => &FULL,
    };
    cell.get_or_init(|| start_sandbox(profile).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn start_sandbox(profile: Profile) -> anyhow::Result<PathBuf> {
    let state = profile.state_dir();
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
        .arg("--profile")
        .arg(profile.name())
        .env("SANDBOX_STATE", &state)
        .env("SANDBOX_PORT_BASE", profile.port_base())
        .env_remove("SANDBOX_PROFILE")
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

/// Reads a `KEY=value` file (the sandbox's env file).
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect())
}

/// Applies every CRD in `config/crd` and waits until the API server serves them.
async fn install_crds_once(client: &Client, profile: Profile) -> anyhow::Result<()> {
    static CORE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    static FULL: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cell = match profile {
        Profile::Core => &CORE,
        Profile::Full => &FULL,
    };
    cell.get_or_try_init(|| async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in read_documents::<CustomResourceDefinition>(&repo_root().join("config/crd"))? {
            let name = crd.metadata.name.clone().unwrap_or_default();
            apply_as_harness(&crds, &name, &crd)
                .await
                .with_context(|| format!("applying CRD {name}"))?;
            let established =
                await_condition(crds.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .with_context(|| format!("CRD {name} not established after 30 s"))??;
        }
        apply_manifests(client, &repo_root().join("config/admission")).await?;
        anyhow::Ok(())
    })
    .await?;
    Ok(())
}

/// The kubeconfig files of FluxUp's two ServiceAccounts.
struct Identities {
    controller: PathBuf,
    dashboard: PathBuf,
}

/// The namespace `config/` installs FluxUp in.
pub const FLUXUP_NAMESPACE: &str = "fluxup-system";

/// Applies `config/rbac` (the ServiceAccounts, roles and bindings FluxUp ships) and writes a
/// kubeconfig for each ServiceAccount with a token from the TokenRequest API; once per process.
async fn identities_once(
    client: &Client,
    profile: Profile,
    kubeconfig: &Path,
) -> anyhow::Result<&'static Identities> {
    static CORE: tokio::sync::OnceCell<Identities> = tokio::sync::OnceCell::const_new();
    static FULL: tokio::sync::OnceCell<Identities> = tokio::sync::OnceCell::const_new();
    let cell = match profile {
        Profile::Core => &CORE,
        Profile::Full => &FULL,
    };
    cell.get_or_try_init(|| async {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FLUXUP_NAMESPACE}}))?;
        apply_as_harness(&namespaces, FLUXUP_NAMESPACE, &namespace).await?;
        apply_manifests(client, &repo_root().join("config/rbac")).await?;
        let state = kubeconfig.parent().context("the kubeconfig's directory")?;
        let mut written = Vec::new();
        for account in ["fluxup-controller", "fluxup-dashboard"] {
            let token = service_account_token(client, account).await?;
            let path = state.join(format!("kubeconfig-{account}"));
            write_token_kubeconfig(kubeconfig, &token, &path)?;
            written.push(path);
        }
        let dashboard = written.pop().context("two accounts")?;
        let controller = written.pop().context("two accounts")?;
        anyhow::Ok(Identities {
            controller,
            dashboard,
        })
    })
    .await
}

/// A token for ServiceAccount `account` of FluxUp's namespace (a day long: longer than a run).
async fn service_account_token(client: &Client, account: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86400},
    }))?;
    let answer: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), FLUXUP_NAMESPACE)
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token for ServiceAccount {FLUXUP_NAMESPACE}/{account}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .context("the TokenRequest has no token")
}

/// Writes `admin`'s kubeconfig with its user replaced by `token`.
fn write_token_kubeconfig(admin: &Path, token: &str, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(admin)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let users = config["users"]
        .as_sequence_mut()
        .context("the kubeconfig has no users")?;
    for user in users.iter_mut() {
        user["user"] = serde_yaml::to_value(BTreeMap::from([("token", token)]))?;
    }
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// Server-side applies every document in the YAML files of `dir` (the admission policies in
/// `config/admission`, the RBAC of `config/rbac`), finding each kind through discovery.
async fn apply_manifests(client: &Client, dir: &Path) -> anyhow::Result<()> {
    for object in read_documents::<DynamicObject>(dir)? {
        let types = object
            .types
            .clone()
            .context("a manifest without apiVersion/kind")?;
        let (resource, _) =
            kube::discovery::pinned_kind(client, &GroupVersionKind::try_from(&types)?).await?;
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let name = object.metadata.name.clone().unwrap_or_default();
        apply_as_harness(&api, &name, &object)
            .await
            .with_context(|| format!("applying {} {name} from {}", types.kind, dir.display()))?;
    }
    Ok(())
}

/// Server-side applies `object` as the harness, taking over fields others set.
async fn apply_as_harness<K>(api: &Api<K>, name: &str, object: &K) -> kube::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// The YAML files of `dir` but its `kustomization.yaml`, sorted.
fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads every document in the YAML files of `dir` as a `T`.
pub fn read_documents<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<Vec<T>> {
    let mut documents = Vec::new();
    for path in yaml_files(dir)? {
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            documents.push(
                serde_yaml::from_value(value)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    Ok(documents)
}

use serde::Deserialize as _;

/// A namespace for one test. Deleted when the test passes; kept, with a pointer to the
/// components' logs, when it fails.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    /// The kubeconfig of the sandbox it lives in (for the deletion in `Drop`).
    kubeconfig: PathBuf,
}

impl TestNamespace {
    async fn create(client: &Client, test_name: &str, kubeconfig: &Path) -> anyhow::Result<Self> {
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
        Ok(TestNamespace {
            name,
            kubeconfig: kubeconfig.to_path_buf(),
        })
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
                self.kubeconfig.with_file_name("logs").display()
            );
            return;
        }
        // Drop cannot await, and the test's client is tied to the test's runtime, which this
        // thread blocks: delete with a new client on a thread and runtime of our own.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let client = client_for(&kubeconfig).await?;
                let api: Api<Namespace> = Api::all(client);
                api.delete(&name, &DeleteParams::background()).await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// A minimal client for Gitea's HTTP API (`/api/v1`), as the sandbox admin (API token).
#[derive(Clone, Debug)]
pub struct Gitea {
    /// Base URL, e.g. `http://127.0.0.1:18030`.
    pub url: String,
    /// API token of [`Gitea::user`] (all scopes).
    pub token: String,
    /// The admin user that owns the repositories the harness creates.
    pub user: String,
    /// The port of Gitea's built-in SSH server on 127.0.0.1 (`GITEA_SSH_PORT`).
    pub ssh_port: u16,
    /// The user name of every SSH URL (`git`, `GITEA_SSH_USER`): the built-in server refuses any
    /// other; the key decides who is logged in.
    pub ssh_user: String,
    /// A known_hosts file with the SSH server's host key (`GITEA_SSH_KNOWN_HOSTS`).
    pub ssh_known_hosts_file: PathBuf,
}

impl Gitea {
    /// Calls the API: `method` on `/api/v1{path}` with an optional JSON body. Returns the status
    /// code and the JSON answer (`Null` when empty). Fails on transport errors only.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}/api/v1{}", self.url, path);
        let (status, text) = http(
            method,
            &url,
            &[
                ("Authorization", &format!("token {}", self.token)),
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            body.map(|b| b.to_string()).as_deref(),
        )?;
        let json = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok((status, json))
    }

    /// Like [`Gitea::call`], failing unless the status is 2xx.
    pub fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, json) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("Gitea {method} {path}: HTTP {status}: {json}");
        }
        Ok(json)
    }

    /// Creates a private repository of the admin user with an initial commit on `main`, and
    /// returns its `owner/name`.
    pub fn create_repo(&self, name: &str) -> anyhow::Result<String> {
        self.ok(
            "POST",
            "/user/repos",
            Some(&serde_json::json!({
                "name": name, "private": true, "auto_init": true, "default_branch": "main",
                "readme": "Default", "description": "FluxUp sandbox test repository",
            })),
        )?;
        Ok(format!("{}/{}", self.user, name))
    }

    /// The clone URL of `owner/name` (http, without credentials).
    pub fn clone_url(&self, repo: &str) -> String {
        format!("{}/{}.git", self.url, repo)
    }

    /// The SSH clone URL of `owner/name`: `ssh://git@127.0.0.1:PORT/owner/name.git`. Access needs
    /// a key Gitea knows, e.g. a deploy key ([`Gitea::add_deploy_key`]).
    pub fn ssh_url(&self, repo: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}/{}.git",
            self.ssh_user, self.ssh_port, repo
        )
    }

    /// The known_hosts contents for Gitea's SSH server (`[127.0.0.1]:PORT ssh-ed25519 AAAA…`),
    /// as FluxUp (or a Flux Git secret) would be given them.
    pub fn ssh_known_hosts(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.ssh_known_hosts_file)
            .with_context(|| format!("reading {}", self.ssh_known_hosts_file.display()))
    }

    /// Adds `public_key` (an OpenSSH public key line) as a deploy key of `repo` (`owner/name`),
    /// titled `title` (unique per repository); `writable` lets it push.
    pub fn add_deploy_key(
        &self,
        repo: &str,
        title: &str,
        public_key: &str,
        writable: bool,
    ) -> anyhow::Result<()> {
        self.ok(
            "POST",
            &format!("/repos/{repo}/keys"),
            Some(&serde_json::json!({
                "title": title, "key": public_key.trim(), "read_only": !writable,
            })),
        )?;
        Ok(())
    }

    /// Commits `files` (path, content) to `branch` of `repo` (`owner/name`) in one commit through
    /// the contents API, creating or updating each file. Returns the new commit's SHA.
    pub fn commit_files(
        &self,
        repo: &str,
        branch: &str,
        message: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut ops = Vec::new();
        for (path, content) in files {
            let (status, current) = self.call(
                "GET",
                &format!("/repos/{repo}/contents/{path}?ref={branch}"),
                None,
            )?;
            let encoded = base64(content.as_bytes());
            let op = if status == 200 {
                serde_json::json!({"operation": "update", "path": path, "content": encoded,
                                   "sha": current["sha"]})
            } else {
                serde_json::json!({"operation": "create", "path": path, "content": encoded})
            };
            ops.push(op);
        }
        let answer = self.ok(
            "POST",
            &format!("/repos/{repo}/contents"),
            Some(&serde_json::json!({"branch": branch, "message": message, "files": ops})),
        )?;
        answer["commit"]["sha"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no commit SHA in Gitea's answer: {answer}"))
    }
}

/// The plain Git server of the full profile (`git-ssh`, see [`Sandbox::plain_git`]): OpenSSH's
/// sshd on 127.0.0.1, key-only login as the user running the sandbox, bare repositories under
/// [`PlainGit::root`] reached by their absolute path.
#[derive(Clone, Debug)]
pub struct PlainGit {
    /// The sshd port on 127.0.0.1 (`PLAIN_GIT_SSH_PORT`).
    pub port: u16,
    /// The SSH user name (`PLAIN_GIT_USER`: the user running the sandbox, root in CI).
    pub user: String,
    /// A known_hosts file with sshd's host key (`PLAIN_GIT_KNOWN_HOSTS`).
    pub known_hosts_file: PathBuf,
    /// The authorized_keys file sshd reads (`PLAIN_GIT_AUTHORIZED_KEYS`).
    pub authorized_keys_file: PathBuf,
    root: PathBuf,
}

impl PlainGit {
    /// The directory holding the bare repositories (`PLAIN_GIT_ROOT`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SSH URL of repository `name` (`ssh://USER@127.0.0.1:PORT/<root>/name.git`); `name`
    /// may carry the `.git` suffix or not.
    pub fn ssh_url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.repo_dir(name).display()
        )
    }

    fn repo_dir(&self, name: &str) -> PathBuf {
        let name = name.strip_suffix(".git").unwrap_or(name);
        self.root.join(format!("{name}.git"))
    }

    /// Creates an empty bare repository `name` whose default branch is `main` (the first push
    /// makes it), unless it exists; returns its SSH URL.
    pub fn create_repo(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty() || name.split('/').any(|part| part.is_empty() || part == "..") {
            bail!("invalid repository name {name:?}");
        }
        let dir = self.repo_dir(name);
        if !dir.join("HEAD").exists() {
            let output = Command::new("git")
                .args(["init", "--quiet", "--bare", "--initial-branch=main"])
                .arg(&dir)
                .output()
                .context("running git init")?;
            if !output.status.success() {
                bail!(
                    "git init --bare {} failed: {}",
                    dir.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        Ok(self.ssh_url(name))
    }

    /// The known_hosts contents for the server (`[127.0.0.1]:PORT ssh-ed25519 AAAA…`).
    pub fn known_hosts(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.known_hosts_file)
            .with_context(|| format!("reading {}", self.known_hosts_file.display()))
    }

    /// Lets `public_key` (an OpenSSH public key line) log in, with full read and write access to
    /// every repository: appends it to the authorized_keys file unless a line with the same key
    /// (type and base64, whatever the comment) is there already.
    pub fn authorize(&self, public_key: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let line = public_key.trim();
        fn key_of(line: &str) -> Vec<&str> {
            line.split_whitespace().take(2).collect()
        }
        let wanted = key_of(line);
        if wanted.len() != 2 || line.contains('\n') {
            bail!("not an OpenSSH public key line: {line:?}");
        }
        let path = &self.authorized_keys_file;
        let current = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if current.lines().any(|l| key_of(l) == wanted) {
            return Ok(());
        }
        let separator = if current.is_empty() || current.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        // One write in append mode, so tests authorizing keys at once do not mix their lines.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{separator}{line}\n").as_bytes()))
            .with_context(|| format!("appending to {}", path.display()))
    }
}

/// Makes an SSH key pair for a test (ed25519, no passphrase) as `dir/name` and `dir/name.pub`,
/// creating `dir`, or reuses the pair if it is there. Returns the private key's path (for
/// `ssh -i`, or the contents for a Git secret) and the public key line (for
/// [`Gitea::add_deploy_key`] or [`PlainGit::authorize`]).
pub fn ssh_keypair(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let private = dir.join(name);
    let public = dir.join(format!("{name}.pub"));
    if !(private.exists() && public.exists()) {
        let _ = std::fs::remove_file(&private);
        let _ = std::fs::remove_file(&public);
        let output = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-C")
            .arg(format!("fluxup-sandbox-{name}"))
            .arg("-f")
            .arg(&private)
            .output()
            .context("running ssh-keygen")?;
        if !output.status.success() {
            bail!(
                "ssh-keygen for {} failed: {}",
                private.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let line = std::fs::read_to_string(&public)
        .with_context(|| format!("reading {}", public.display()))?;
    Ok((private, line.trim().to_string()))
}

/// A `GIT_SSH_COMMAND` for the git CLI that logs in with `private_key` only and trusts only the
/// host keys in `known_hosts_file` (strict checking: an unknown or changed key fails with "Host
/// key verification failed").
pub fn git_ssh_command(private_key: &Path, known_hosts_file: &Path) -> String {
    format!(
        "ssh -i '{}' -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
         -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes",
        private_key.display(),
        known_hosts_file.display()
    )
}

fn parse_port(value: &str) -> anyhow::Result<u16> {
    value
        .parse()
        .with_context(|| format!("not a port number: {value:?}"))
}

/// One HTTP request. Returns the status code and the body; fails on transport errors only.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body.unwrap_or_default().to_string())?;
    let response = agent
        .run(request)
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string()?;
    Ok((status, text))
}

/// Standard base64 with padding (Gitea's contents API wants file contents in it).
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Compares what FluxUp's ServiceAccount `account` asked (`used`: the counting layer's
/// `VERB resource` keys) with what the ClusterRole and Role `files` of `config/rbac` grant, and
/// prints the table: every request must be granted, and every grant used here or named in
/// `elsewhere` (resource, verb, where it is used) — a grant nothing uses is an error.
pub fn compare_grants<'a>(
    account: &str,
    used: impl IntoIterator<Item = &'a String>,
    files: &[&str],
    elsewhere: &[(&str, &str, &str)],
) -> anyhow::Result<()> {
    let used: std::collections::BTreeSet<(String, String)> =
        used.into_iter().flat_map(|k| as_rbac(k)).collect();
    let granted = granted(files)?;
    println!("granted to {account}, and used:");
    for (resource, verb) in &granted {
        let why = if used.contains(&(resource.clone(), verb.clone())) {
            "used here".to_string()
        } else {
            elsewhere
                .iter()
                .find(|(r, v, _)| r == resource && v == verb)
                .map(|(_, _, why)| format!("not here: {why}"))
                .unwrap_or_else(|| "UNUSED".into())
        };
        println!("  {verb:>11} {resource:<28} {why}");
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{account} asked without a grant: {missing:?}"
    );
    let unused: Vec<_> = granted
        .iter()
        .filter(|g| !used.contains(*g))
        .filter(|(r, v)| !elsewhere.iter().any(|(er, ev, _)| er == r && ev == v))
        .collect();
    anyhow::ensure!(
        unused.is_empty(),
        "granted to {account} but never used (remove it, or say where it is used): {unused:?}"
    );
    let stale: Vec<_> = elsewhere
        .iter()
        .filter(|(r, v, _)| !granted.contains(&(r.to_string(), v.to_string())))
        .collect();
    anyhow::ensure!(
        stale.is_empty(),
        "listed for {account} but not granted: {stale:?}"
    );
    Ok(())
}

/// `VERB resource` as the counting layer writes it, as RBAC's (resource, verb) pairs. A watch
/// cache needs `list` as well: it lists when the API server has no streaming lists.
fn as_rbac(key: &str) -> Vec<(String, String)> {
    let Some((verb, resource)) = key.split_once(' ') else {
        return Vec::new();
    };
    let verbs: &[&str] = match verb {
        "GET" => &["get"],
        "LIST" => &["list"],
        "WATCH" => &["list", "watch"],
        "POST" => &["create"],
        "PATCH" => &["patch"],
        "PUT" => &["update"],
        "DELETE" => &["delete"],
        _ => &[],
    };
    verbs
        .iter()
        .map(|v| (resource.to_string(), v.to_string()))
        .collect()
}

/// Every (resource, verb) the ClusterRole and Role `files` of `config/rbac` grant.
fn granted(files: &[&str]) -> anyhow::Result<std::collections::BTreeSet<(String, String)>> {
    use serde::Deserialize as _;
    let mut out = std::collections::BTreeSet::new();
    for file in files {
        let path = repo_root().join("config/rbac").join(file);
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = serde_yaml::Value::deserialize(doc)?;
            for rule in doc["rules"].as_sequence().into_iter().flatten() {
                for resource in rule["resources"].as_sequence().into_iter().flatten() {
                    for verb in rule["verbs"].as_sequence().into_iter().flatten() {
                        out.insert((
                            resource.as_str().unwrap_or_default().to_string(),
                            verb.as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}
