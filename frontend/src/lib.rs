//! The wasm entry point. `cargo leptos` builds this crate for the browser; the page the server
//! rendered becomes interactive once `hydrate` runs.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // A split build's lazy routes load their chunk before they hydrate: that needs the async
    // hydration.
    #[cfg(feature = "split")]
    leptos::mount::hydrate_lazy(fluxup_app::App);
    #[cfg(not(feature = "split"))]
    leptos::mount::hydrate_body(fluxup_app::App);
}
