//! Checks on the generated CRD schemas and the samples in `config/samples`, without a cluster.
//! (The sandbox tests in the operator crate apply both to a real API server.)

use fluxup_api::{ManagedApp, RollbackRequest, UpgradeRequest};
use serde_json::Value;
use std::path::Path;

/// Every property of every CRD has a description: it is what `kubectl explain` shows.
#[test]
fn every_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                // metadata, apiVersion and kind come from Kubernetes itself.
                let built_in =
                    path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
                if !built_in
                    && prop
                        .get("description")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in fluxup_api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(
            &crd.spec.names.kind,
            &schema["openAPIV3Schema"],
            &mut missing,
        );
    }
    // Condition comes from Kubernetes and is documented there.
    missing.retain(|p| !p.contains(".conditions[]"));
    assert!(
        missing.is_empty(),
        "fields without a doc comment:\n{}",
        missing.join("\n")
    );
}

#[test]
fn conditions_are_a_list_map_keyed_on_type() {
    for crd in fluxup_api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{}",
            crd.spec.names.kind
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }
}

#[test]
fn printer_columns_show_versions_and_state() {
    let crd = fluxup_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "ManagedApp")
        .unwrap();
    let columns: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Current",
            "Available",
            "Chart-Update",
            "Largest-Update",
            "Healthy",
            "State",
            "Age"
        ]
    );
    assert!(
        crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["mapp".to_string(), "mapps".to_string()][..])
    );
}

fn samples() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((
            path.display().to_string(),
            serde_yaml::from_str(&text).unwrap(),
        ));
    }
    out
}

/// The samples use only fields the types know: a typo in a sample would otherwise be silently
/// dropped by the API server's pruning.
#[test]
fn samples_deserialize_without_unknown_fields() {
    let all = samples();
    assert!(all.len() >= 4);
    for (path, value) in all {
        let back = match value["kind"].as_str().unwrap() {
            "ManagedApp" => {
                serde_json::to_value(serde_json::from_value::<ManagedApp>(value.clone()).unwrap())
            }
            "UpgradeRequest" => serde_json::to_value(
                serde_json::from_value::<UpgradeRequest>(value.clone()).unwrap(),
            ),
            "RollbackRequest" => serde_json::to_value(
                serde_json::from_value::<RollbackRequest>(value.clone()).unwrap(),
            ),
            other => panic!("{path}: unexpected kind {other}"),
        }
        .unwrap();
        assert_spec_subset(&path, "spec", &value["spec"], &back["spec"]);
    }
}

fn assert_spec_subset(file: &str, path: &str, written: &Value, parsed: &Value) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (k, v) in w {
                let here = format!("{path}.{k}");
                // Fields at their default (`false`) are not serialized back.
                if v == &Value::Bool(false) && !p.contains_key(k) {
                    continue;
                }
                let Some(pv) = p.get(k) else {
                    panic!("{file}: {here} is not a field of the type")
                };
                assert_spec_subset(file, &here, v, pv);
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            for (i, (wv, pv)) in w.iter().zip(p).enumerate() {
                assert_spec_subset(file, &format!("{path}[{i}]"), wv, pv);
            }
        }
        (w, p) => assert_eq!(w, p, "{file}: {path}"),
    }
}
