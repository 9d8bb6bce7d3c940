//! The apps page: every ManagedApp with its current and available version.

use super::Layout;
use leptos::prelude::*;

/// The landing page. Lists ManagedApps once the ManagedApp controller feeds them; until then it
/// explains how to add one.
#[component]
pub fn AppsPage() -> impl IntoView {
    view! {
        <Layout>
            <h1 class="text-2xl font-semibold">"Apps"</h1>
            <section class="mt-6 rounded-lg border border-dashed border-slate-300 p-8 text-center dark:border-slate-600">
                <h2 class="text-lg font-medium">"No managed apps yet"</h2>
                <p class="mt-2 text-slate-600 dark:text-slate-300">
                    "Create a ManagedApp for a Flux HelmRelease and FluxUp will show its updates here."
                </p>
                <pre class="mt-4 inline-block rounded bg-slate-100 px-3 py-2 text-left text-sm dark:bg-slate-800">
                    "kubectl apply -f config/samples/managedapp.yaml"
                </pre>
            </section>
        </Layout>
    }
}
