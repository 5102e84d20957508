//! Guidelines in Markdown rendered to HTML that is safe to embed: raw HTML in the source is
//! shown as text, and links or images may only use http(s), mailto or relative URLs.

use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};

/// Renders untrusted Markdown to sanitized HTML.
pub fn render(source: &str) -> String {
    let events = Parser::new_ext(source, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => Event::Start(Tag::Link { link_type, dest_url: safe_url(dest_url), title, id }),
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => Event::Start(Tag::Image { link_type, dest_url: safe_url(dest_url), title, id }),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    out
}

fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim().to_ascii_lowercase();
    let scheme = lower.split_once(':').map(|(s, _)| s.to_string());
    let relative = scheme.as_deref().is_none_or(|s| s.contains('/') || s.contains('?') || s.contains('#'));
    if relative || matches!(scheme.as_deref(), Some("http" | "https" | "mailto")) {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn raw_html_and_script_urls_are_neutralised() {
        let out = render("# Rules\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>");
        assert!(out.contains("<h1>Rules</h1>"));
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(!out.contains("javascript:"), "{out}");
        assert!(render("[ok](https://example.org)").contains("href=\"https://example.org\""));
    }
}
