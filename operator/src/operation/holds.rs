//! Holding Flux still, with an owner. An operation suspends the app's Kustomization *and* its
//! HelmRelease (helm-controller would otherwise keep reconciling the release on its interval,
//! with retries and drift correction, while the app is stopped or its claims are replaced), and
//! marks each with the request's uid ([`HELD_BY_ANNOTATION`]). It resumes only what still
//! carries its own uid: an object a person suspended, or one another operation holds, is never
//! touched. Both writes are conditional on the resourceVersion read, so two operations racing
//! for one object cannot both believe they hold it.

use super::crash;
use fluxup_api::Hold;
use fluxup_api::flux::{HelmRelease, Kustomization, RECONCILE_REQUESTED_AT};
use fluxup_api::ownership::{HELD_BY_ANNOTATION, HELD_FOR_ANNOTATION};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Who holds a Flux object now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: Flux reconciles it.
    Free,
    /// This operation.
    Me,
    /// Suspended without FluxUp's mark: a person did it (`flux suspend`), and only a person
    /// resumes it.
    Person,
    /// Another FluxUp operation (its `UpgradeRequest namespace/name`).
    Operation(String),
    /// The object does not exist.
    Gone,
}

impl Holder {
    /// Why an operation cannot take the object, in a person's words; `None` when it can.
    pub fn refusal(&self, hold: &Hold) -> Option<String> {
        match self {
            Holder::Free | Holder::Me => None,
            Holder::Person => Some(format!(
                "{} is suspended, not by FluxUp: only a person resumes it (flux resume {} {} \
                 -n {})",
                hold.describe(),
                flux_cli_kind(&hold.kind),
                hold.name,
                hold.namespace,
            )),
            Holder::Operation(other) => Some(format!("{} is held by {other}", hold.describe())),
            Holder::Gone => Some(format!("{} does not exist", hold.describe())),
        }
    }
}

fn flux_cli_kind(kind: &str) -> &'static str {
    if kind == "HelmRelease" { "hr" } else { "ks" }
}

fn api(client: &Client, hold: &Hold) -> Api<DynamicObject> {
    let resource = if hold.kind == "HelmRelease" {
        ApiResource::erase::<HelmRelease>(&())
    } else {
        ApiResource::erase::<Kustomization>(&())
    };
    Api::namespaced_with(client.clone(), &hold.namespace, &resource)
}

fn suspended(object: &DynamicObject) -> bool {
    object.data["spec"]["suspend"].as_bool() == Some(true)
}

/// Who holds `object`, as `me` (the request's uid) sees it.
fn holder_of(object: &DynamicObject, me: &str) -> Holder {
    let marked = object.annotations().get(HELD_BY_ANNOTATION);
    match marked {
        Some(uid) if uid == me => Holder::Me,
        // A mark left on an object that is no longer suspended (a person resumed it by hand
        // while it was held) holds nothing.
        _ if !suspended(object) => Holder::Free,
        Some(_) => Holder::Operation(
            object
                .annotations()
                .get(HELD_FOR_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| "another FluxUp operation".into()),
        ),
        None => Holder::Person,
    }
}

/// Who holds the object of `hold` now.
pub async fn observe(client: &Client, hold: &Hold, me: &str) -> kube::Result<Holder> {
    Ok(match api(client, hold).get_opt(&hold.name).await? {
        Some(object) => holder_of(&object, me),
        None => Holder::Gone,
    })
}

/// Suspends the object for `me` (uid) and marks it, if it is free (or already mine): returns
/// who holds it afterwards. A concurrent change of the object makes the write fail with a
/// conflict, and the step is decided again.
pub async fn take(client: &Client, hold: &Hold, me: &str, me_for: &str) -> kube::Result<Holder> {
    let api = api(client, hold);
    let Some(object) = api.get_opt(&hold.name).await? else {
        return Ok(Holder::Gone);
    };
    match holder_of(&object, me) {
        Holder::Free => {}
        other => return Ok(other),
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "annotations": {HELD_BY_ANNOTATION: me, HELD_FOR_ANNOTATION: me_for},
        },
        "spec": {"suspend": true},
    });
    api.patch(&hold.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    crash::point(&format!("take.{}", hold.kind));
    Ok(Holder::Me)
}

/// Resumes the object if `me` still holds it, removes the mark and asks Flux to reconcile it
/// now. Returns whether it released anything: an object that is no longer mine is left as it is.
pub async fn release(client: &Client, hold: &Hold, me: &str) -> kube::Result<bool> {
    let api = api(client, hold);
    let Some(object) = api.get_opt(&hold.name).await? else {
        return Ok(false);
    };
    if object
        .annotations()
        .get(HELD_BY_ANNOTATION)
        .map(String::as_str)
        != Some(me)
    {
        return Ok(false);
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": object.resource_version(),
            "annotations": {
                HELD_BY_ANNOTATION: null,
                HELD_FOR_ANNOTATION: null,
                RECONCILE_REQUESTED_AT: Timestamp::now().to_string(),
            },
        },
        "spec": {"suspend": null},
    });
    api.patch(&hold.name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    crash::point(&format!("release.{}", hold.kind));
    Ok(true)
}

/// The next object to take, or why it cannot be taken now; `None` once every one is held.
pub fn next_to_take(holders: &[(Hold, Holder)]) -> Option<Result<Hold, String>> {
    holders
        .iter()
        .find(|(_, h)| *h != Holder::Me)
        .map(|(hold, h)| match h {
            Holder::Free => Ok(hold.clone()),
            other => Err(other.refusal(hold).unwrap_or_default()),
        })
}

/// The next object this operation still holds, to release: the Kustomization first.
pub fn next_to_release(holders: &[(Hold, Holder)]) -> Option<Hold> {
    holders
        .iter()
        .find(|(_, h)| *h == Holder::Me)
        .map(|(hold, _)| hold.clone())
}

/// What an operation on `app` holds: its Kustomization, then its HelmRelease.
pub fn of_app(app: &fluxup_api::ManagedApp) -> Vec<Hold> {
    let app_ns = app.metadata.namespace.clone().unwrap_or_default();
    vec![
        Hold {
            kind: "Kustomization".into(),
            namespace: app.kustomization_namespace().to_string(),
            name: app.spec.kustomization_ref.name.clone(),
        },
        Hold {
            kind: "HelmRelease".into(),
            namespace: app.helm_release_namespace().unwrap_or(&app_ns).to_string(),
            name: app.spec.helm_release_ref.name.clone(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(suspend: Option<bool>, held_by: Option<&str>) -> DynamicObject {
        let mut annotations = serde_json::Map::new();
        if let Some(uid) = held_by {
            annotations.insert(HELD_BY_ANNOTATION.into(), uid.into());
            annotations.insert(HELD_FOR_ANNOTATION.into(), "UpgradeRequest a/b".into());
        }
        serde_json::from_value(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system", "annotations": annotations},
            "spec": {"suspend": suspend},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_mark_with_my_uid_is_mine_and_a_bare_suspend_is_a_persons() {
        assert_eq!(holder_of(&object(None, None), "me"), Holder::Free);
        assert_eq!(holder_of(&object(Some(false), None), "me"), Holder::Free);
        assert_eq!(holder_of(&object(Some(true), None), "me"), Holder::Person);
        assert_eq!(holder_of(&object(Some(true), Some("me")), "me"), Holder::Me);
        assert_eq!(
            holder_of(&object(Some(true), Some("other")), "me"),
            Holder::Operation("UpgradeRequest a/b".into())
        );
        // Resumed by hand while another operation held it: free to take.
        assert_eq!(holder_of(&object(None, Some("other")), "me"), Holder::Free);
        // Mine even if a person resumed it meanwhile: releasing removes my mark.
        assert_eq!(holder_of(&object(None, Some("me")), "me"), Holder::Me);
    }
}
