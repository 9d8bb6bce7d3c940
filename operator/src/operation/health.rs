//! Whether the app is healthy after a rollout, check by check: its workloads rolled out and
//! ready (unless the app sets `healthCheck.waitForReady: false`) and its HTTP check
//! (`healthCheck.httpGet`), each with what was seen in words. The HelmRelease's own Ready at
//! the new version comes first and is the caller's (it knows the version).
//!
//! The HTTP check calls a Service in the ManagedApp's namespace, chosen by whoever may write
//! that ManagedApp, so it is hostile input: the Service is read first and must have a cluster
//! IP (an `ExternalName` Service could send FluxUp anywhere); in the cluster FluxUp calls that
//! IP, outside it the API server's service proxy, which only forwards to the Service's pods.

use fluxup_api::{HttpHealthCheck, ManagedApp, PreflightCheck};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, ResourceExt};
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

/// How long one HTTP check may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is read (enough for the API server's error in words).
const BODY_LIMIT: usize = 4096;

/// The names of the checks, as status and the dashboard show them.
pub const RELEASE: &str = "release";
pub const WORKLOADS: &str = "workloads";
pub const HTTP: &str = "http";

pub fn check(name: &str, passed: bool, message: impl Into<String>) -> PreflightCheck {
    PreflightCheck {
        name: name.into(),
        passed,
        message: Some(message.into()),
    }
}

/// The checks that do not pass, each in words.
pub fn failed(checks: &[PreflightCheck]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.message.clone().unwrap_or_else(|| c.name.clone()))
        .collect()
}

/// The checks after the release's own: the workloads and the HTTP check, as the app asks.
/// Errors are the API server's (a retry may help); a check that fails is a result.
pub async fn of_app(client: &Client, app: &ManagedApp) -> kube::Result<Vec<PreflightCheck>> {
    let spec = app.spec.health_check.clone().unwrap_or_default();
    let mut checks = Vec::new();
    if spec.wait_for_ready {
        checks.push(match super::release::workloads_ready(client, app).await? {
            Ok(0) => check(WORKLOADS, true, "no Deployment or StatefulSet to wait for"),
            Ok(1) => check(WORKLOADS, true, "its workload is rolled out and ready"),
            Ok(n) => check(
                WORKLOADS,
                true,
                format!("all {n} workloads rolled out and ready"),
            ),
            Err(not_ready) => check(WORKLOADS, false, not_ready),
        });
    }
    if let Some(http) = &spec.http_get {
        let (passed, message) = http_get(client, app, http).await?;
        checks.push(check(HTTP, passed, message));
    }
    Ok(checks)
}

/// What the check asks for, validated again here (the CRD validates too, but an older CRD
/// or a direct write to etcd must not turn the service name into a path).
struct Target {
    namespace: String,
    service: String,
    port: u16,
    path: String,
}

impl Target {
    fn of(app: &ManagedApp, http: &HttpHealthCheck) -> Result<Target, String> {
        let service = http
            .service
            .clone()
            .unwrap_or_else(|| app.spec.helm_release_ref.name.clone());
        let dns_label = !service.is_empty()
            && service.len() <= 63
            && service.starts_with(|c: char| c.is_ascii_lowercase())
            && !service.ends_with('-')
            && service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !dns_label {
            return Err(format!(
                "healthCheck.httpGet.service {service:?} is not a Service name"
            ));
        }
        let port = u16::try_from(http.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("healthCheck.httpGet.port {} is not a port", http.port))?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let path_ok = path.starts_with('/')
            && path.len() <= 1024
            && !path.contains("..")
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._~!$&()*+,;=:@%/?-".contains(c));
        if !path_ok {
            return Err(format!(
                "healthCheck.httpGet.path {path:?} must start with / and hold only URL path characters, without .."
            ));
        }
        Ok(Target {
            namespace: app.namespace().unwrap_or_default(),
            service,
            port,
            path,
        })
    }

    fn describe(&self) -> String {
        format!(
            "GET {} on Service {}/{}:{}",
            self.path, self.namespace, self.service, self.port
        )
    }
}

/// FluxUp runs in a cluster (in a pod, with the API server's Service in its environment).
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Calls the app's HTTP check once: whether it answered 2xx, and what happened in words.
async fn http_get(
    client: &Client,
    app: &ManagedApp,
    http: &HttpHealthCheck,
) -> kube::Result<(bool, String)> {
    let target = match Target::of(app, http) {
        Ok(t) => t,
        Err(why) => return Ok((false, why)),
    };
    let what = target.describe();
    let service = Api::<Service>::namespaced(client.clone(), &target.namespace)
        .get_opt(&target.service)
        .await?;
    let Some(service) = service else {
        return Ok((false, format!("{what}: the Service does not exist")));
    };
    let spec = service.spec.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok((
            false,
            format!(
                "{what}: an ExternalName Service is not checked (it names a host outside the cluster)"
            ),
        ));
    }
    if !spec
        .ports
        .iter()
        .flatten()
        .any(|p| p.port == i32::from(target.port))
    {
        return Ok((
            false,
            format!("{what}: the Service has no port {}", target.port),
        ));
    }
    let answer = if in_cluster() {
        match spec.cluster_ip.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(ip)) if !ip.is_loopback() && !ip.is_unspecified() => direct(ip, &target).await,
            _ => Err("the Service has no cluster IP (a headless Service is not checked)".into()),
        }
    } else {
        proxied(client, &target).await
    };
    Ok(match answer {
        Ok(code) if (200..300).contains(&code) => (true, format!("{what} answered {code}")),
        Ok(code) => (false, format!("{what} answered {code}")),
        Err(why) => (false, format!("{what}: {why}")),
    })
}

/// In the cluster: the Service's cluster IP, no redirects, no proxy from the environment.
async fn direct(ip: IpAddr, target: &Target) -> Result<u16, String> {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("a plain HTTP client builds")
    });
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let url = format!("http://{host}:{}{}", target.port, target.path);
    let response = CLIENT
        .get(&url)
        .header(
            reqwest::header::HOST,
            format!(
                "{}.{}.svc:{}",
                target.service, target.namespace, target.port
            ),
        )
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", HTTP_TIMEOUT.as_secs())
            } else {
                format!("could not connect: {e}")
            }
        })?;
    Ok(response.status().as_u16())
}

/// Outside the cluster: the API server's service proxy (`services/proxy`), which forwards
/// only to the Service's pods. Its own refusals (no pod ready behind the Service) come back
/// as a Kubernetes `Status`, told apart from the app's answer by their content.
async fn proxied(client: &Client, target: &Target) -> Result<u16, String> {
    let uri = format!(
        "/api/v1/namespaces/{}/services/http:{}:{}/proxy{}",
        target.namespace, target.service, target.port, target.path
    );
    let request = http::Request::get(uri)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(HTTP_TIMEOUT, client.send(request))
        .await
        .map_err(|_| format!("no answer within {} s", HTTP_TIMEOUT.as_secs()))?
        .map_err(|e| format!("the API server's service proxy failed: {e}"))?;
    let code = response.status().as_u16();
    if (200..300).contains(&code) {
        return Ok(code);
    }
    let body = tokio::time::timeout(
        HTTP_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), BODY_LIMIT).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|b| b.to_bytes())
    .unwrap_or_default();
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match (status["kind"].as_str(), status["message"].as_str()) {
        (Some("Status"), Some(message)) => Err(format!(
            "the API server could not reach it ({code}: {message})"
        )),
        _ => Ok(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxup_api::{ManagedAppSpec, NamespacedObjectReference};

    fn app() -> ManagedApp {
        let mut app = ManagedApp::new(
            "web",
            ManagedAppSpec {
                helm_release_ref: NamespacedObjectReference {
                    name: "web".into(),
                    namespace: None,
                },
                ..Default::default()
            },
        );
        app.metadata.namespace = Some("apps".into());
        app
    }

    fn http(service: Option<&str>, port: i32, path: Option<&str>) -> HttpHealthCheck {
        HttpHealthCheck {
            service: service.map(Into::into),
            port,
            path: path.map(Into::into),
        }
    }

    #[test]
    fn the_target_defaults_to_the_release_and_the_root() {
        let t = Target::of(&app(), &http(None, 8080, None)).unwrap();
        assert_eq!(t.describe(), "GET / on Service apps/web:8080");
        let t = Target::of(&app(), &http(Some("api"), 80, Some("/healthz?full=1"))).unwrap();
        assert_eq!(t.describe(), "GET /healthz?full=1 on Service apps/api:80");
    }

    #[test]
    fn a_target_that_could_leave_the_service_is_refused() {
        for service in ["../secrets", "web/proxy", "Web", "a:80", "-web", ""] {
            let e = Target::of(&app(), &http(Some(service), 80, None)).err();
            assert!(
                e.is_some_and(|e| e.contains("is not a Service name")),
                "{service}"
            );
        }
        for path in [
            "healthz",
            "/../../api/v1/secrets",
            "/a b",
            "/a#b",
            "/\u{e9}",
        ] {
            let e = Target::of(&app(), &http(None, 80, Some(path))).err();
            assert!(e.is_some_and(|e| e.contains("must start with /")), "{path}");
        }
        for port in [0, 65536, -1] {
            assert!(
                Target::of(&app(), &http(None, port, None)).is_err(),
                "{port}"
            );
        }
    }
}
