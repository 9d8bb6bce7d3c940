//! The committed files under `config/` that `fluxup generate` writes must match the Rust types.

use std::path::Path;

#[test]
fn generated_config_matches_the_rust_types() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut drifted = Vec::new();
    for (relative, expected) in fluxup::generate::generated_files().unwrap() {
        let path = config.join(&relative);
        match std::fs::read_to_string(&path) {
            Ok(actual) if actual == expected => {}
            Ok(_) => drifted.push(format!("{relative} differs")),
            Err(e) => drifted.push(format!("{relative} cannot be read: {e}")),
        }
    }
    assert!(
        drifted.is_empty(),
        "config/ has drifted from the Rust types; run `cargo run -p fluxup -- generate` and commit:\n  {}",
        drifted.join("\n  ")
    );
}

#[test]
fn crds_command_prints_every_crd() {
    let yaml = fluxup::generate::crds_yaml().unwrap();
    for kind in ["ManagedApp", "UpgradeRequest", "RollbackRequest"] {
        assert!(
            yaml.contains(&format!("kind: {kind}\n")),
            "{kind} missing from `fluxup crds`"
        );
    }
}
