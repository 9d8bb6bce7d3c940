//! The colour theme: the system's until the person picks one. The choice lives in a cookie so
//! the server renders the page in it too (no flash of the other theme on load).

/// Which theme the page uses; its class on the page's root element selects Tailwind's `dark:`
/// variant (see style/main.css).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Theme {
    /// Follow the operating system's light or dark setting.
    System,
    Dark,
    Light,
}

const COOKIE: &str = "fluxup-theme";

impl Theme {
    /// The theme a `Cookie` header (or `document.cookie`) names; the system's if none.
    pub fn from_cookies(cookies: &str) -> Theme {
        cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| match value {
                "dark" => Theme::Dark,
                "light" => Theme::Light,
                _ => Theme::System,
            })
            .unwrap_or(Theme::System)
    }

    /// The next choice of the theme button: system → dark → light → system.
    pub fn next(self) -> Theme {
        match self {
            Theme::System => Theme::Dark,
            Theme::Dark => Theme::Light,
            Theme::Light => Theme::System,
        }
    }

    /// The class on the page's root element.
    pub fn class(self) -> &'static str {
        match self {
            Theme::System => "system",
            Theme::Dark => "dark",
            Theme::Light => "light",
        }
    }

    /// The theme button's words.
    pub fn label(self) -> &'static str {
        match self {
            Theme::System => "Theme: system",
            Theme::Dark => "Theme: dark",
            Theme::Light => "Theme: light",
        }
    }

    /// The cookie that keeps this choice for a year.
    pub fn cookie(self) -> String {
        format!(
            "{COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
            self.class()
        )
    }

    /// The theme of the request being rendered (server) or of the page (browser).
    pub fn current() -> Theme {
        #[cfg(feature = "ssr")]
        {
            let parts = leptos::prelude::use_context::<http::request::Parts>();
            let cookies = parts.as_ref().and_then(|p| {
                p.headers
                    .get(http::header::COOKIE)
                    .and_then(|v| v.to_str().ok())
            });
            Theme::from_cookies(cookies.unwrap_or_default())
        }
        #[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
        {
            let cookies = js_sys::Reflect::get(&leptos::prelude::document(), &"cookie".into())
                .ok()
                .and_then(|v| v.as_string());
            Theme::from_cookies(&cookies.unwrap_or_default())
        }
        #[cfg(not(any(feature = "ssr", all(feature = "hydrate", target_arch = "wasm32"))))]
        Theme::System
    }

    /// Keeps the choice for the next pages (browser only; a no-op elsewhere).
    pub fn remember(self) {
        #[cfg(all(feature = "hydrate", target_arch = "wasm32"))]
        let _ = js_sys::Reflect::set(
            &leptos::prelude::document(),
            &"cookie".into(),
            &self.cookie().into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Theme;

    #[test]
    fn the_cookie_names_the_theme_among_others() {
        assert_eq!(Theme::from_cookies(""), Theme::System);
        assert_eq!(
            Theme::from_cookies("fluxup-session=abc; fluxup-theme=dark"),
            Theme::Dark
        );
        assert_eq!(
            Theme::from_cookies("fluxup-theme=light;other=1"),
            Theme::Light
        );
        assert_eq!(Theme::from_cookies("fluxup-theme=purple"), Theme::System);
        assert_eq!(Theme::from_cookies("not-fluxup-theme=dark"), Theme::System);
    }

    #[test]
    fn the_button_cycles_through_the_three_choices_and_the_cookie_reads_back() {
        let mut theme = Theme::System;
        let mut seen = vec![];
        for _ in 0..3 {
            theme = theme.next();
            seen.push(theme);
            let cookie = theme.cookie();
            let pair = cookie.split(';').next().unwrap();
            assert_eq!(Theme::from_cookies(pair), theme);
        }
        assert_eq!(seen, [Theme::Dark, Theme::Light, Theme::System]);
    }
}
