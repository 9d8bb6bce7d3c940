//! Crash points: a named place right after a side effect (a write to the API server, a Git
//! push) where a test can make the process die as SIGKILL would, to prove that a restarted
//! FluxUp converges from there. Compiled in only with the `failpoints` feature, which only test
//! builds turn on; otherwise [`point`] is empty.
//!
//! With the feature, `FLUXUP_CRASH_LOG=<file>` makes the process abort at the first point whose
//! name is not yet a line of that file, after appending it: each run of the process dies at the
//! next point not crashed at before, so restarting it until a run ends without a crash walks
//! every point an operation passes.

#[cfg(feature = "failpoints")]
pub fn point(name: &str) {
    use std::io::Write as _;
    let Ok(path) = std::env::var("FLUXUP_CRASH_LOG") else {
        return;
    };
    let Ok((kind, namespace)) = SCOPE.try_with(|s| s.clone()) else {
        return;
    };
    // Points of requests in other namespaces (other tests) are not this test's to crash at.
    if std::env::var("FLUXUP_CRASH_NAMESPACE").is_ok_and(|only| only != namespace) {
        return;
    }
    let name = format!("{kind}.{name}");
    let name = name.as_str();
    let done = std::fs::read_to_string(&path).unwrap_or_default();
    if done.lines().any(|l| l == name) {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
    {
        let _ = writeln!(f, "{name}");
        let _ = f.sync_all();
    }
    eprintln!("crash point {name}: aborting");
    std::process::abort();
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) {}

#[cfg(feature = "failpoints")]
tokio::task_local! {
    /// The kind (`upgrade`, `rollback`) and namespace of the request being reconciled: points
    /// are named after the kind, and `FLUXUP_CRASH_NAMESPACE` filters on the namespace.
    static SCOPE: (&'static str, String);
}

/// Runs `f` as the reconcile of a `kind` request in `namespace`.
pub async fn scope<F: std::future::Future>(
    kind: &'static str,
    namespace: String,
    f: F,
) -> F::Output {
    #[cfg(feature = "failpoints")]
    {
        SCOPE.scope((kind, namespace), f).await
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (kind, namespace);
        f.await
    }
}
