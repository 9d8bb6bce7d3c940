//! Counts the Kubernetes API requests the controllers make, by verb and resource, so a person
//! (and the scale benchmark) can see that reconciles read from watch caches: a LIST per watch
//! at start, then only WATCHes and the status writes that changed something.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// A tower layer for kube's client stack; clones share one tally.
#[derive(Clone, Default)]
pub struct ApiRequests(Arc<Mutex<BTreeMap<String, u64>>>);

impl ApiRequests {
    /// A client for `config` whose requests are counted here.
    pub fn client(&self, config: kube::Config) -> kube::Result<kube::Client> {
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(self)
            .build())
    }

    /// Requests so far, keyed `VERB resource[/subresource]`, e.g. `LIST helmreleases` or
    /// `PATCH managedapps/status`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// One line for the log: `LIST helmreleases=1, PATCH managedapps/status=1000, …`.
    pub fn summary(&self) -> String {
        self.counts()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn count<B>(&self, request: &http::Request<B>) {
        let key = classify(request.method(), request.uri());
        if let Ok(mut map) = self.0.lock() {
            *map.entry(key).or_default() += 1;
        }
    }
}

/// `GET /apis/g/v/namespaces/ns/things?watch=true` → `WATCH things`, and so on.
pub fn classify(method: &http::Method, uri: &http::Uri) -> String {
    let parts: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => return format!("{method} {}", uri.path()),
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, name, sub) = (rest.first(), rest.get(1), rest.get(2));
    let resource = match (resource, sub) {
        (Some(r), Some(s)) => format!("{r}/{s}"),
        (Some(r), None) => r.to_string(),
        (None, _) => "(root)".to_string(),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "WATCH",
        http::Method::GET if name.is_none() => "LIST",
        http::Method::GET => "GET",
        ref m => m.as_str(),
    };
    format!("{verb} {resource}")
}

impl<S> Layer<S> for ApiRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            tally: self.clone(),
        }
    }
}

/// The counting service.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    tally: ApiRequests,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.tally.count(&request);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::classify;
    use http::Method;

    fn c(method: Method, uri: &str) -> String {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources() {
        assert_eq!(
            c(
                Method::GET,
                "/apis/helm.toolkit.fluxcd.io/v2/helmreleases?limit=500"
            ),
            "LIST helmreleases"
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/helm.toolkit.fluxcd.io/v2/namespaces/a/helmreleases?watch=true&resourceVersion=1"
            ),
            "WATCH helmreleases"
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/a/persistentvolumeclaims/data"
            ),
            "GET persistentvolumeclaims"
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/fluxup.dev/v1alpha1/namespaces/a/managedapps/web/status?fieldManager=x"
            ),
            "PATCH managedapps/status"
        );
        assert_eq!(c(Method::GET, "/api/v1/namespaces"), "LIST namespaces");
        assert_eq!(
            c(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"),
            "POST events"
        );
    }
}
