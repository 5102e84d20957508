//! Rules every text from outside obeys before it reaches PostgreSQL, which refuses the NUL
//! character in `text` and in `jsonb` strings and keys.

use serde_json::Value;

/// The path (`responses[1].text`, `flags.abc[0]`, `` for the value itself) of the first string
/// or object key in `value` that contains a NUL character.
pub fn nul_path(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_path(v).map(|rest| format!("[{i}]{}", dotted(&rest)))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                return Some(k.replace('\0', "\\u0000"));
            }
            nul_path(v).map(|rest| format!("{k}{}", dotted(&rest)))
        }),
        _ => None,
    }
}

/// Text a model sampled, made storable: each NUL character (which a tiny or untrained policy
/// can sample, and PostgreSQL refuses) becomes U+FFFD, the replacement character.
pub fn sampled(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn dotted(rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        rest.to_string()
    } else {
        format!(".{rest}")
    }
}

/// Whether JSON text may hold a NUL character: an unescaped `\u0000` escape. Cheap enough to
/// run on every body; only when it answers true is the body walked with [`nul_path`].
pub fn json_may_hold_nul(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(&json[from..], b"u0000").map(|i| i + from) {
        let slashes = json[..at].iter().rev().take_while(|&&b| b == b'\\').count();
        if slashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sampled_text_has_no_nul_left() {
        assert_eq!(super::sampled("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(super::sampled("plain"), "plain");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn the_path_names_the_string_or_key_that_holds_the_nul() {
        assert_eq!(nul_path(&json!({"a": [1, {"b": "x\u{0}"}]})).as_deref(), Some("a[1].b"));
        assert_eq!(nul_path(&json!({"flags": {"k\u{0}": []}})).as_deref(), Some("flags.k\\u0000"));
        assert_eq!(nul_path(&json!(["ok", ["\u{0}"]])).as_deref(), Some("[1][0]"));
        assert_eq!(nul_path(&json!({"a": "fine", "b": [null, 3]})), None);
    }

    #[test]
    fn only_a_real_escape_counts_as_a_nul() {
        assert!(json_may_hold_nul(br#"{"a": "x\u0000"}"#));
        assert!(json_may_hold_nul(br#"{"a": "\\\u0000"}"#));
        assert!(!json_may_hold_nul(br#"{"a": "\\u0000"}"#));
        assert!(!json_may_hold_nul(br#"{"a": "u0000"}"#));
    }
}
