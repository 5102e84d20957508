//! Markdown from outside (guidelines, item instructions, prompts and model responses) rendered to
//! HTML that is safe to embed. pulldown-cmark parses it, with raw HTML in the source shown as
//! text; ammonia then sanitizes the result against an allow-list of formatting tags, so no
//! attribute can run script and links or images may only use http(s), mailto or relative URLs.
//! Characters that would print as nothing (or as `�`) are shown visibly: a C0 control as its
//! control picture (`␇`, `␛`), other invisible or format characters as a `\u{…}` badge.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use pulldown_cmark::{html, CowStr, Event, Options, Parser};

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    b.url_schemes(HashSet::from(["http", "https", "mailto"]))
        .allowed_classes(HashMap::from([("span", HashSet::from(["ctl"]))]))
        .add_tag_attributes("span", ["title"])
        .link_rel(Some("noopener noreferrer nofollow"));
    b
});

/// Renders untrusted Markdown to sanitized HTML.
pub fn render(source: &str) -> String {
    let events = Parser::new_ext(source, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => visible(raw),
        Event::Text(text) => visible(text),
        Event::Code(code) if code.chars().any(|c| shown_as(c).is_some()) => Event::Html(format!("<code>{}</code>", escape_visibly(&code)).into()),
        other => other,
    });
    let mut out = String::new();
    html::push_html(&mut out, events);
    SANITIZER.clean(&out).to_string()
}

/// Text as an event that prints every character visibly.
fn visible(text: CowStr<'_>) -> Event<'_> {
    if text.chars().any(|c| shown_as(c).is_some()) {
        Event::Html(escape_visibly(&text).into())
    } else {
        Event::Text(text)
    }
}

/// How a character that would not print is shown: its control picture, or `\u{…}`.
pub fn shown_as(c: char) -> Option<String> {
    match c {
        '\t' | '\n' | '\r' => None,
        '\0'..='\x1f' => char::from_u32(0x2400 + c as u32).map(String::from),
        '\x7f' => Some("\u{2421}".into()),
        '\u{80}'..='\u{9f}'
        | '\u{200b}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{fffd}'..='\u{ffff}' => Some(format!("\\u{{{:x}}}", c as u32)),
        _ => None,
    }
}

/// `text` HTML-escaped, with each character that would not print as a `span.ctl` badge.
fn escape_visibly(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        match (c, shown_as(c)) {
            (_, Some(shown)) => out.push_str(&format!("<span class=\"ctl\" title=\"U+{:04X}\">{shown}</span>", c as u32)),
            ('<', _) => out.push_str("&lt;"),
            ('>', _) => out.push_str("&gt;"),
            ('&', _) => out.push_str("&amp;"),
            ('"', _) => out.push_str("&quot;"),
            (c, None) => out.push(c),
        }
    }
    out
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

    #[test]
    fn tables_code_blocks_and_inline_code_render() {
        let out = render("| a | b |\n|---|---|\n| 1 | `x<y` |\n\n```rust\nfn main() {}\n```\n\n**bold**");
        assert!(out.contains("<table>") && out.contains("<td>1</td>"), "{out}");
        assert!(out.contains("<code>x&lt;y</code>"), "{out}");
        assert!(out.contains("<pre><code>fn main() {}\n</code></pre>"), "{out}");
        assert!(out.contains("<strong>bold</strong>"), "{out}");
    }

    #[test]
    fn characters_that_would_not_print_are_shown_as_badges() {
        let out = render("bell\u{7} esc\u{1b} zw\u{200b} bad\u{fffd} c1\u{85} `nul\u{1}`");
        assert!(out.contains("<span class=\"ctl\" title=\"U+0007\">\u{2407}</span>"), "{out}");
        assert!(out.contains("\u{241b}") && out.contains("\\u{200b}") && out.contains("\\u{fffd}") && out.contains("\\u{85}"), "{out}");
        assert!(out.contains("<code>nul<span class=\"ctl\" title=\"U+0001\">\u{2401}</span></code>"), "{out}");
        assert!(!out.contains('\u{7}') && !out.contains('\u{fffd}'), "{out}");
        assert!(render("emoji \u{1f468}\u{200d}\u{1f469} stay").contains("<p>emoji \u{1f468}\u{200d}\u{1f469} stay</p>"));
    }

    #[test]
    fn a_badge_is_the_only_class_and_title_the_sanitizer_lets_through() {
        let out = render("<span class=\"ctl evil\" title=x onclick=alert(1)>hi</span>\u{7}");
        assert!(out.starts_with("<p>&lt;span class=\"ctl evil\" title=x onclick=alert(1)&gt;hi&lt;/span&gt;<span class=\"ctl\""), "{out}");
    }

    /// The payloads of `tests/fixtures/xss-payloads.txt`, which the browser tests load too.
    pub fn xss_corpus() -> Vec<String> {
        include_str!("../../tests/fixtures/xss-payloads.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("# "))
            .map(|l| l.replace("\\n", "\n"))
            .collect()
    }

    /// Every tag in sanitized output: (name, [(attribute, value)]). Text never holds a raw `<`.
    fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut out = Vec::new();
        for part in html.split('<').skip(1) {
            let inner = &part[..part.find('>').expect("a tag closes")];
            let inner = inner.trim_start_matches('/').trim_end_matches('/');
            let (name, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
            let mut attrs = Vec::new();
            while let Some((key, after)) = rest.trim_start().split_once("=\"") {
                let (value, next) = after.split_once('"').expect("a quoted value");
                attrs.push((key.to_string(), value.to_string()));
                rest = next;
            }
            assert!(rest.trim().is_empty(), "unquoted attribute in <{inner}>");
            out.push((name.to_string(), attrs));
        }
        out
    }

    #[test]
    fn the_xss_corpus_renders_inert() {
        const TAGS: &str = "p br em strong del code pre a img h1 h2 h3 h4 h5 h6 ul ol li blockquote hr table thead tbody tr th td span";
        let corpus = xss_corpus();
        assert!(corpus.len() >= 70, "{}", corpus.len());
        for payload in &corpus {
            let out = render(payload);
            for (name, attrs) in tags(&out) {
                assert!(TAGS.split(' ').any(|t| t == name), "<{name}> from {payload:?}: {out}");
                for (key, value) in attrs {
                    match key.as_str() {
                        "href" | "src" => {
                            let scheme = value.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
                            let ok = scheme.as_deref().is_none_or(|s| ["http", "https", "mailto"].contains(&s) || s.contains('/'));
                            assert!(ok, "{key}={value:?} from {payload:?}: {out}");
                        }
                        "class" => assert_eq!(value, "ctl", "{payload:?}: {out}"),
                        "title" | "alt" | "rel" | "start" | "align" => {}
                        other => panic!("attribute {other} from {payload:?}: {out}"),
                    }
                }
            }
        }
    }
}
