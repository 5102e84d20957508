//! The API's JSON body: read whole up to a limit, refused with the path of the string that holds
//! a NUL character (PostgreSQL cannot store one), and parsed so that a type error names its
//! field (`overlap: invalid type: string "3", expected a whole number from …`), not only a line and column.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::error::{ApiError, AppError};
use crate::domain::text::{json_may_hold_nul, nul_path};

/// The largest JSON body accepted.
pub const LIMIT: usize = 4 << 20;

/// A JSON request body of type `T`.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parses a JSON body; the error says which field is wrong and why.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if json_may_hold_nul(body) {
        // A body the tree parser refuses may still pass the typed one (which skips unknown
        // fields without checking them): refuse it here rather than let its NUL through.
        let value = serde_json::from_slice::<serde_json::Value>(body).map_err(|e| format!("the JSON body is not valid: {e}"))?;
        if let Some(path) = nul_path(&value) {
            let at = if path.is_empty() { "the body".to_string() } else { path };
            return Err(format!("{at}: text may not contain the NUL character (\\u0000)"));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            format!("the JSON body is not valid: {inner}")
        } else {
            format!("{path}: {}", plain_types(&inner.to_string()))
        }
    })?;
    de.end().map_err(|e| format!("the JSON body is not valid: {e}"))?;
    Ok(value)
}

/// serde's messages name Rust's integer types (`expected i16`); people read "a whole number"
/// and its range.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (ty, words) in [
        ("i16", "a whole number from -32768 to 32767"),
        ("u8", "a whole number from 0 to 255"),
        ("i32", "a whole number from -2147483648 to 2147483647"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("i64", "a whole number"),
        ("u64", "a whole number from 0"),
        ("usize", "a whole number from 0"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        out = out.replace(&format!("expected {ty}"), &format!("expected {words}"));
    }
    out
}

fn is_json(req: &HttpRequest) -> bool {
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = is_json(req);
        let mut payload = payload.take();
        Box::pin(async move {
            let invalid = |m: String| -> actix_web::Error { ApiError(AppError::Invalid(m)).into() };
            if !json {
                return Err(invalid("the body must be JSON, sent with Content-Type: application/json".into()));
            }
            use futures_util::StreamExt;
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| invalid(format!("the body could not be read: {e}")))?;
                if body.len() + chunk.len() > LIMIT {
                    return Err(ApiError(AppError::TooLarge(format!("the JSON body is larger than {} MiB", LIMIT >> 20))).into());
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(Json).map_err(invalid)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        overlap: Option<u8>,
        flags: Option<Vec<String>>,
    }

    #[test]
    fn a_type_error_names_its_field() {
        let e = parse::<Body>(br#"{"name": "x", "overlap": 300}"#).unwrap_err();
        assert!(e.starts_with("overlap: "), "{e}");
        assert!(e.contains("expected a whole number from 0 to 255") && !e.contains("u8"), "no Rust type names: {e}");
        let e = parse::<Body>(br#"{"name": "x", "flags": ["a", 3]}"#).unwrap_err();
        assert!(e.starts_with("flags[1]: "), "{e}");
        let e = parse::<Body>(br#"{"name": "x\u0000"}"#).unwrap_err();
        assert!(e.starts_with("name: text may not contain the NUL"), "{e}");
        let e = parse::<Body>(br#"{"name": "#).unwrap_err();
        assert!(e.starts_with("the JSON body is not valid"), "{e}");
        assert_eq!(parse::<Body>(br#"{"name": "\\u0000"}"#).unwrap().name, "\\u0000");
        // An unknown field the typed parser would skip unchecked does not carry a NUL past.
        let e = parse::<Body>(br#"{"name": "x\u0000", "zz": 1e400}"#).unwrap_err();
        assert!(e.starts_with("the JSON body is not valid"), "{e}");
    }
}
