//! FluxUp's CRDs on a real kube-apiserver: they install, the samples apply, and each CEL rule
//! refuses a bad spec with its message.

use fluxup_api::{ManagedApp, RollbackRequest, UpgradeRequest};
use fluxup_sandbox::{Sandbox, repo_root};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn dynamic_api<K: kube::Resource<DynamicType = ()>>(sandbox: &Sandbox) -> Api<DynamicObject> {
    Api::namespaced_with(
        sandbox.client.clone(),
        sandbox.ns(),
        &ApiResource::erase::<K>(&()),
    )
}

fn api_for_kind(sandbox: &Sandbox, kind: &str) -> Api<DynamicObject> {
    match kind {
        "ManagedApp" => dynamic_api::<ManagedApp>(sandbox),
        "UpgradeRequest" => dynamic_api::<UpgradeRequest>(sandbox),
        "RollbackRequest" => dynamic_api::<RollbackRequest>(sandbox),
        other => panic!("unexpected kind {other}"),
    }
}

/// Creates `object` in the test's namespace and returns the API server's answer.
async fn create(sandbox: &Sandbox, mut object: Value) -> Result<DynamicObject, kube::Error> {
    object["metadata"]["namespace"] = json!(sandbox.ns());
    let kind = object["kind"].as_str().unwrap().to_string();
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api_for_kind(sandbox, &kind)
        .create(&PostParams::default(), &object)
        .await
}

fn refusal_message(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(o) => panic!("the API server accepted {:?}", o.metadata.name),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn managed_app(name: &str, spec_extra: Value) -> Value {
    let mut spec = json!({
        "helmReleaseRef": {"name": "my-app"},
        "kustomizationRef": {"name": "my-app"},
    });
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp", "metadata": {"name": name}, "spec": spec})
}

/// Whether every field of `written` is in `stored` with the same value.
fn is_subset(written: &Value, stored: &Value) -> bool {
    match (written, stored) {
        (Value::Object(w), Value::Object(s)) => w
            .iter()
            .all(|(k, v)| s.get(k).is_some_and(|sv| is_subset(v, sv))),
        (Value::Array(w), Value::Array(s)) => {
            w.len() == s.len() && w.iter().zip(s).all(|(a, b)| is_subset(a, b))
        }
        (w, s) => w == s,
    }
}

fn request(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "fluxup.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn samples_apply_to_the_real_api_server() {
    let sandbox = Sandbox::start("samples-apply").await.unwrap();
    let dir = repo_root().join("config/samples");
    let mut applied = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let sample: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let created = create(&sandbox, sample.clone())
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        // The API server pruned nothing the sample says (it may add defaults).
        assert!(
            is_subset(&sample["spec"], &created.data["spec"]),
            "{}: the API server stored {}",
            path.display(),
            created.data["spec"]
        );
        applied.push(created.metadata.name.unwrap());
    }
    assert_eq!(applied.len(), 4, "{applied:?}");

    // Defaults the schema declares are filled in by the API server, and the typed client reads
    // back what it wrote.
    let apps: Api<ManagedApp> = sandbox.api();
    let app = apps.get("my-app").await.unwrap();
    assert!(
        app.spec.volume_snapshots.unwrap().stop_workloads,
        "stopWorkloads defaults to true"
    );
    let oci = apps.get("podinfo").await.unwrap();
    assert!(oci.spec.auto_rollback);
    assert_eq!(oci.kustomization_namespace(), "flux-system");
}

#[tokio::test]
async fn cel_rules_refuse_bad_specs_with_clear_messages() {
    let sandbox = Sandbox::start("cel-rules").await.unwrap();
    let pvcs = json!([{"name": "data"}]);
    let cases = [
        (
            "a Git file outside the repository",
            managed_app(
                "git-traversal",
                json!({"versionPolicy": {"chart": {"git": {"file": "apps/../../etc/x.yaml"}}}}),
            ),
            r#"spec.versionPolicy.chart.git.file: Invalid value: "apps/../../etc/x.yaml""#,
        ),
        (
            "an absolute Git file",
            managed_app(
                "git-absolute",
                json!({"versionPolicy": {"chart": {"git": {"file": "/apps/x.yaml"}}}}),
            ),
            r#"spec.versionPolicy.chart.git.file: Invalid value: "/apps/x.yaml""#,
        ),
        (
            "a control character in a target version",
            request(
                "UpgradeRequest",
                "newline-version",
                json!({"managedAppRef": {"name": "web"}, "targetVersion": {"chart": "1.0.0\n[ok] fake"}}),
            ),
            "spec.targetVersion.chart: Invalid value",
        ),
        (
            "unknown autoUpdate level",
            managed_app(
                "bad-level",
                json!({"versionPolicy": {"chart": {"autoUpdate": "weekly"}}}),
            ),
            r#"Unsupported value: "weekly": supported values: "none", "patch", "minor", "major""#,
        ),
        (
            "snapshot retention of zero",
            managed_app(
                "keep-zero",
                json!({"volumeSnapshots": {"pvcs": pvcs, "retentionPolicy": {"keepLast": 0}}}),
            ),
            "retentionPolicy.keepLast must be at least 1",
        ),
        (
            "maxAge in days",
            managed_app(
                "max-age-days",
                json!({"volumeSnapshots": {"pvcs": pvcs, "retentionPolicy": {"maxAge": "7d"}}}),
            ),
            "retentionPolicy.maxAge must be a duration such as 168h",
        ),
        (
            "claims listed and left out at once",
            managed_app(
                "pvcs-and-excludes",
                json!({"volumeSnapshots": {"pvcs": pvcs, "excludePVCs": [{"name": "cache"}]}}),
            ),
            "volumeSnapshots.excludePVCs leaves out claims FluxUp finds itself",
        ),
        (
            "health check timeout in words",
            managed_app(
                "bad-timeout",
                json!({"healthCheck": {"timeout": "five minutes"}}),
            ),
            "healthCheck.timeout must be a duration",
        ),
        (
            "health check port out of range",
            managed_app(
                "bad-port",
                json!({"healthCheck": {"httpGet": {"port": 70000}}}),
            ),
            "healthCheck.httpGet.port must be between 1 and 65535",
        ),
        (
            "missing helmReleaseRef",
            request(
                "ManagedApp",
                "no-release",
                json!({"kustomizationRef": {"name": "x"}}),
            ),
            "spec.helmReleaseRef: Required value",
        ),
        (
            "rollback naming both an upgrade and a snapshot",
            request(
                "RollbackRequest",
                "both",
                json!({"upgradeRequestRef": {"name": "u"}, "snapshotRef": {"name": "s"}, "managedAppRef": {"name": "a"}}),
            ),
            "set exactly one of upgradeRequestRef",
        ),
        (
            "rollback naming neither",
            request(
                "RollbackRequest",
                "neither",
                json!({"managedAppRef": {"name": "a"}}),
            ),
            "set exactly one of upgradeRequestRef",
        ),
        (
            "rollback to a snapshot without its app",
            request(
                "RollbackRequest",
                "snap-no-app",
                json!({"snapshotRef": {"name": "s"}}),
            ),
            "a rollback to a snapshotRef must name the managedAppRef",
        ),
        (
            "upgrade with an empty target",
            request(
                "UpgradeRequest",
                "empty-target",
                json!({"managedAppRef": {"name": "a"}, "targetVersion": {}}),
            ),
            "targetVersion must name a chart version or at least one image",
        ),
    ];
    let mut failures = Vec::new();
    for (what, object, expected) in cases {
        match create(&sandbox, object).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) if status.message.contains(expected) => {}
            Err(e) => failures.push(format!("{what}: expected {expected:?}, got {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An UpgradeRequest's spec may change while it is Pending, never once it has started.
#[tokio::test]
async fn upgrade_spec_is_frozen_once_started() {
    let sandbox = Sandbox::start("upgrade-frozen").await.unwrap();
    let api = dynamic_api::<UpgradeRequest>(&sandbox);
    let spec = json!({"managedAppRef": {"name": "a"}, "targetVersion": {"chart": "1.1.0"}});
    create(&sandbox, request("UpgradeRequest", "up", spec))
        .await
        .unwrap();
    let edit = |chart: &str| json!({"spec": {"targetVersion": {"chart": chart}}});
    let params = PatchParams::default();

    // Not started yet: the person may still change their mind.
    api.patch("up", &params, &Patch::Merge(edit("1.2.0")))
        .await
        .unwrap();
    // The operator starts it.
    let status = json!({"status": {"phase": "Preflight"}});
    api.patch_status("up", &params, &Patch::Merge(status))
        .await
        .unwrap();

    let message = refusal_message(api.patch("up", &params, &Patch::Merge(edit("1.3.0"))).await);
    assert!(
        message.contains("cannot change once the upgrade has started"),
        "{message}"
    );
    let stored = api.get("up").await.unwrap();
    assert_eq!(
        stored.data["spec"]["targetVersion"]["chart"], "1.2.0",
        "the refused edit changed nothing"
    );
    // Labels stay editable.
    let labels = json!({"metadata": {"labels": {"team": "a"}}});
    api.patch("up", &params, &Patch::Merge(labels))
        .await
        .unwrap();
}

#[tokio::test]
async fn rollback_spec_is_frozen_once_started() {
    let sandbox = Sandbox::start("rollback-frozen").await.unwrap();
    let api = dynamic_api::<RollbackRequest>(&sandbox);
    let spec = json!({"upgradeRequestRef": {"name": "up"}});
    create(&sandbox, request("RollbackRequest", "rb", spec))
        .await
        .unwrap();
    let params = PatchParams::default();
    let status = json!({"status": {"phase": "StoppingApp"}});
    api.patch_status("rb", &params, &Patch::Merge(status))
        .await
        .unwrap();
    let edit = json!({"spec": {"dryRun": true}});
    let message = refusal_message(api.patch("rb", &params, &Patch::Merge(edit)).await);
    assert!(
        message.contains("cannot change once the rollback has started"),
        "{message}"
    );
}
