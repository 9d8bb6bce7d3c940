//! Reading the Secrets that Flux objects and ManagedApps name (Git credentials, signing keys,
//! chart source credentials), in the shape both the Git and chart-source code take them.

use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeMap;

/// The Secret's keys and values, `stringData` over `data` as the API server would merge them.
pub fn data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    data
}

/// The value of `key` as text without surrounding whitespace (files made with `--from-file`
/// end in a newline); `None` when missing or empty.
pub fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    data.get(key)
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|v| !v.is_empty())
}
