//! What the pages share: the layout and rendering (from [`crate::web::page`]), forms that carry
//! only their CSRF token, sanitized HTML, and the one-message page.

use askama::Template;

pub use crate::web::page::{html, html_with_status, redirect, Layout};

/// A form that carries nothing but its CSRF token.
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// HTML produced by the Markdown sanitizer, the only HTML a template emits unescaped.
pub struct SanitizedHtml(String);

impl SanitizedHtml {
    pub fn from_markdown(md: &str) -> Self {
        Self(crate::domain::markdown::render(md))
    }
}

impl std::fmt::Display for SanitizedHtml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for SanitizedHtml {}

/// A title, one sentence and the way back.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub title: &'static str,
    pub message: String,
    pub back: String,
}

/// `x` (a share from 0 to 1) as a percentage with one decimal, without the sign: `87.5`.
pub fn percent(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

/// The first `n` characters of `text` (a summary line; the whole text sits beside it).
pub fn first_chars(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}
