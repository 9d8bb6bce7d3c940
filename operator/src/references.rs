//! Objects in other namespaces: FluxUp acts on them only for a person who may act on them
//! themselves.
//!
//! A ManagedApp may name a HelmRelease or a Kustomization outside its own namespace (Flux's
//! Kustomizations often live in `flux-system`). FluxUp's service account could suspend or commit
//! to any of them, so a tenant with rights in one namespace could borrow those rights. The rule:
//! a reference stays in the ManagedApp's namespace, unless the person who asked (recorded on the
//! object by the API server, `config/admission`) may `patch` the other object, as a
//! SubjectAccessReview for them says.

use fluxup_api::{ManagedApp, REQUESTED_BY_ANNOTATION, REQUESTED_BY_GROUPS_ANNOTATION};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

/// The words every refusal ends with, so a person can find the rule.
pub const RULE: &str = "rule: references stay in the ManagedApp's namespace unless the person \
    who asked may change the other object themselves";

/// Who asked, as the API server recorded them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Person {
    pub name: String,
    pub groups: Vec<String>,
}

/// The person recorded on `meta`, if any.
pub fn person_of(meta: &ObjectMeta) -> Option<Person> {
    let annotations = meta.annotations.as_ref()?;
    let name = annotations
        .get(REQUESTED_BY_ANNOTATION)
        .filter(|n| !n.is_empty())?;
    let groups = annotations
        .get(REQUESTED_BY_GROUPS_ANNOTATION)
        .map(|g| {
            g.split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(Person {
        name: name.clone(),
        groups,
    })
}

/// One object FluxUp would act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Target {
    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The objects `app` names outside its own namespace.
pub fn elsewhere(app: &ManagedApp) -> Vec<Target> {
    let own = app.namespace().unwrap_or_default();
    let hr_ns = app.helm_release_namespace().unwrap_or(&own).to_string();
    let ks_ns = app.kustomization_namespace().to_string();
    let mut out = Vec::new();
    if hr_ns != own {
        out.push(Target {
            kind: "HelmRelease",
            group: "helm.toolkit.fluxcd.io",
            resource: "helmreleases",
            namespace: hr_ns,
            name: app.spec.helm_release_ref.name.clone(),
        });
    }
    if ks_ns != own {
        out.push(Target {
            kind: "Kustomization",
            group: "kustomize.toolkit.fluxcd.io",
            resource: "kustomizations",
            namespace: ks_ns,
            name: app.spec.kustomization_ref.name.clone(),
        });
    }
    out
}

/// Whether `person` may patch every one of `targets`: `Ok` or the refusal, in words, naming
/// each object refused and the rule.
pub async fn check(
    client: &Client,
    own_namespace: &str,
    person: Option<&Person>,
    targets: &[Target],
) -> Result<(), String> {
    if targets.is_empty() {
        return Ok(());
    }
    let Some(person) = person else {
        let names: Vec<String> = targets.iter().map(Target::describe).collect();
        return Err(format!(
            "{} {} outside namespace {own_namespace}, and no one is recorded as having asked \
             (config/admission records who did) ({RULE})",
            names.join(" and "),
            if names.len() == 1 { "is" } else { "are" },
        ));
    };
    let mut refused = Vec::new();
    for target in targets {
        match may_patch(client, person, target).await {
            Ok(true) => {}
            Ok(false) => refused.push(format!(
                "{} may not patch {} (it is outside namespace {own_namespace})",
                person.name,
                target.describe()
            )),
            Err(e) => refused.push(format!(
                "whether {} may patch {} could not be asked: {e}",
                person.name,
                target.describe()
            )),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({RULE})", refused.join("; ")))
    }
}

/// The `references` preflight check: whether the person who asked may have FluxUp act on the
/// objects `app` names outside its namespace.
pub async fn preflight(
    client: &Client,
    app: &ManagedApp,
    person: Option<&Person>,
) -> fluxup_api::PreflightCheck {
    let own = app.namespace().unwrap_or_default();
    let targets = elsewhere(app);
    let answer = check(client, &own, person, &targets).await;
    fluxup_api::PreflightCheck {
        name: "references".into(),
        passed: answer.is_ok(),
        message: Some(match answer {
            Ok(()) if targets.is_empty() => format!("every object is in namespace {own}"),
            Ok(()) => format!(
                "{} may change {}",
                person.map_or("the requester", |p| p.name.as_str()),
                targets
                    .iter()
                    .map(Target::describe)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            Err(why) => why,
        }),
    }
}

async fn may_patch(client: &Client, person: &Person, target: &Target) -> kube::Result<bool> {
    may(client, person, "patch", target).await
}

/// Whether `person` may read Secret `namespace/name`: FluxUp uses a Secret a ManagedApp names
/// (Git credentials, a signing key) only then, so naming one cannot borrow FluxUp's `get`.
pub async fn may_read_secret(
    client: &Client,
    person: &Person,
    namespace: &str,
    name: &str,
) -> kube::Result<bool> {
    let target = Target {
        kind: "Secret",
        group: "",
        resource: "secrets",
        namespace: namespace.into(),
        name: name.into(),
    };
    may(client, person, "get", &target).await
}

/// Whether `person` may create Jobs in `namespace`: FluxUp creates a verification Job from a
/// CronJob a ManagedApp names only then.
pub async fn may_create_jobs(
    client: &Client,
    person: &Person,
    namespace: &str,
) -> kube::Result<bool> {
    let target = Target {
        kind: "Job",
        group: "batch",
        resource: "jobs",
        namespace: namespace.into(),
        name: String::new(),
    };
    may(client, person, "create", &target).await
}

async fn may(client: &Client, person: &Person, verb: &str, target: &Target) -> kube::Result<bool> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(person.name.clone()),
            groups: Some(person.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(target.group.into()),
                resource: Some(target.resource.into()),
                verb: Some(verb.into()),
                namespace: Some(target.namespace.clone()),
                name: Some(target.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The user name FluxUp's own client acts as (asked once): requests it creates itself, such
/// as auto-rollbacks, are recorded with it.
pub async fn own_name(client: &Client) -> Option<String> {
    static NAME: tokio::sync::OnceCell<Option<String>> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(|| async {
        let review = SelfSubjectReview::default();
        match Api::<SelfSubjectReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r.status.and_then(|s| s.user_info).and_then(|u| u.username),
            Err(e) => {
                tracing::warn!(error = %e, "FluxUp could not learn its own user name");
                None
            }
        }
    })
    .await
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(ns: &str, hr_ns: Option<&str>, ks_ns: Option<&str>) -> ManagedApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fluxup.dev/v1alpha1", "kind": "ManagedApp",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"helmReleaseRef": {"name": "web", "namespace": hr_ns},
                     "kustomizationRef": {"name": "apps", "namespace": ks_ns}},
        }))
        .unwrap()
    }

    #[test]
    fn only_objects_of_other_namespaces_need_a_person() {
        assert!(elsewhere(&app("team-a", None, Some("team-a"))).is_empty());
        let both = elsewhere(&app("team-a", Some("team-b"), None));
        let names: Vec<String> = both.iter().map(Target::describe).collect();
        assert_eq!(
            names,
            ["HelmRelease team-b/web", "Kustomization flux-system/apps"]
        );
    }

    #[test]
    fn the_person_and_their_groups_come_from_the_annotations() {
        let meta: ObjectMeta = serde_json::from_value(serde_json::json!({
            "annotations": {REQUESTED_BY_ANNOTATION: "oidc:alice",
                            REQUESTED_BY_GROUPS_ANNOTATION: "oidc:ops,system:authenticated"}
        }))
        .unwrap();
        assert_eq!(
            person_of(&meta),
            Some(Person {
                name: "oidc:alice".into(),
                groups: vec!["oidc:ops".into(), "system:authenticated".into()]
            })
        );
        assert_eq!(person_of(&ObjectMeta::default()), None);
    }
}
