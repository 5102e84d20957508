//! Webhooks: the event types a project's endpoints subscribe to, a checked endpoint URL (no
//! private targets unless allowed), secrets in the Standard Webhooks form `whsec_<base64>`,
//! the v1 signature and the retry schedule. No I/O.

use std::net::IpAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;

/// Every event an endpoint may subscribe to, with what causes it.
pub const EVENTS: &[(&str, &str)] = &[
    ("items.imported", "items were imported (one event per import, with their count)"),
    ("judgements.stored", "labellers' judgements were stored (one event per submitted batch, with their count)"),
    ("item.completed", "an item has all its judgements"),
    ("export.created", "an export was created"),
    ("run.started", "a training run started"),
    ("run.succeeded", "a training run succeeded"),
    ("run.failed", "a training run failed"),
    ("schedule.fired", "a schedule fired and queued its runs"),
    ("labeller.paused", "a labeller was paused for their gold score"),
    ("agreement.below_threshold", "the agreement between labellers fell below the project's threshold"),
];

/// The event a "send test event" sends; no endpoint subscribes to it.
pub const TEST_EVENT: &str = "webhook.test";

/// The longest URL accepted.
const MAX_URL: usize = 2000;
/// The longest description accepted.
const MAX_DESCRIPTION: usize = 500;

/// A new endpoint's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEndpoint {
    pub url: EndpointUrl,
    pub events: Vec<String>,
    pub description: String,
}

impl NewEndpoint {
    /// Checks each field, naming the first that is wrong.
    pub fn parse(url: &str, events: &[String], description: &str, allow_private: bool) -> Result<Self, String> {
        let url = EndpointUrl::parse(url, allow_private)?;
        let events = parse_events(events)?;
        let description = description.trim();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(format!("description: expected at most {MAX_DESCRIPTION} characters"));
        }
        Ok(Self { url, events, description: description.to_string() })
    }
}

/// Known event types, without repeats, in [`EVENTS`]' order; at least one.
pub fn parse_events(events: &[String]) -> Result<Vec<String>, String> {
    if let Some(bad) = events.iter().find(|e| !EVENTS.iter().any(|(k, _)| k == e)) {
        let known: Vec<&str> = EVENTS.iter().map(|e| e.0).collect();
        return Err(format!("events: unknown event type {bad:?}; expected some of {}", known.join(", ")));
    }
    let chosen: Vec<String> = EVENTS.iter().filter(|(k, _)| events.iter().any(|e| e == k)).map(|(k, _)| k.to_string()).collect();
    if chosen.is_empty() {
        return Err("events: expected at least one event type".into());
    }
    Ok(chosen)
}

/// An http(s) URL without credentials whose host, when it is an address, is public (or private
/// targets are allowed). A host name is checked again at each delivery, against what it
/// resolves to then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(text: &str, allow_private: bool) -> Result<Self, String> {
        let text = text.trim();
        let bad = |why: &str| Err(format!("url: {why}"));
        if text.is_empty() {
            return bad("expected an http:// or https:// URL");
        }
        if text.len() > MAX_URL {
            return bad(&format!("expected at most {MAX_URL} characters"));
        }
        let Ok(url) = url::Url::parse(text) else {
            return bad(&format!("expected an http:// or https:// URL, got {text:?}"));
        };
        if !matches!(url.scheme(), "http" | "https") {
            return bad(&format!("expected an http:// or https:// URL, got scheme {:?}", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return bad("must not carry a user name or password");
        }
        let host = match url.host() {
            None => return bad("expected a host"),
            Some(url::Host::Domain(d)) if !allow_private && is_local_name(d) => {
                return bad(&format!("{d} is a local name; {PRIVATE_HINT}"));
            }
            Some(url::Host::Domain(_)) => None,
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        };
        if let Some(ip) = host.filter(|ip| !allow_private && is_private(*ip)) {
            return bad(&format!("{ip} is a loopback, private, link-local or unique-local address; {PRIVATE_HINT}"));
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A URL read back from the database (checked when it was stored).
    pub fn from_stored(url: String) -> Self {
        Self(url)
    }
}

/// What a refused private target says an admin can do.
pub const PRIVATE_HINT: &str = "webhooks to private networks are refused unless the server runs with --allow-private-webhooks";

/// `localhost` and names under it, which resolve to loopback by convention.
fn is_local_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Whether a delivery to `ip` would reach this machine or a private network: unspecified,
/// loopback, private (RFC 1918), carrier-grade NAT, link-local, unique-local, multicast or
/// broadcast addresses, and IPv4 addresses mapped into IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_unspecified()
                || a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = a.segments();
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// An endpoint's signing secret: `whsec_` and the base64 of its key bytes.
#[derive(Clone)]
pub struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// A secret for 32 random key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self(format!("whsec_{}", B64.encode(key)))
    }

    /// A stored secret; its key bytes are checked when used.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the base64-decoded part after `whsec_`.
    pub fn key(&self) -> Result<Vec<u8>, String> {
        let b64 = self.0.strip_prefix("whsec_").ok_or("a webhook secret starts with whsec_")?;
        B64.decode(b64).map_err(|_| "a webhook secret's key is not base64".to_string())
    }
}

/// The `webhook-signature` header's value: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's key.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The agreement alert's threshold: Krippendorff's α from -1 to 1, or none.
pub fn parse_agreement_below(value: Option<f64>) -> Result<Option<f64>, String> {
    match value {
        Some(v) if !(-1.0..=1.0).contains(&v) || v.is_nan() => Err(format!("agreement_below: expected a number from -1 to 1 (Krippendorff's alpha), got {v}")),
        v => Ok(v),
    }
}

/// How long to wait after failed attempt `attempt` (1 = the first) before the next: `base`
/// doubled each time, at most an hour, plus `jitter` (0 to 1) of a quarter of it.
pub fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let delay = doubled.min(Duration::from_secs(3600));
    delay + delay.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (its reference libraries' test).
        let secret = SigningSecret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&secret.key().unwrap(), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        for bad in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://[fd00::1]/",
            "http://localhost:80/",
            "http://192.168.0.10/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let e = EndpointUrl::parse(bad, false).unwrap_err();
            assert!(e.starts_with("url:") && e.contains("--allow-private-webhooks"), "{bad}: {e}");
            assert!(EndpointUrl::parse(bad, true).is_ok(), "{bad} allowed");
        }
        assert!(EndpointUrl::parse("https://hooks.example.org/rl", false).is_ok());
        assert!(EndpointUrl::parse("http://93.184.216.34/", false).is_ok());
        for bad in ["", "ftp://x.org/", "https://user:pw@x.org/", "not a url", "https:///"] {
            assert!(EndpointUrl::parse(bad, true).unwrap_err().starts_with("url:"), "{bad}");
        }
    }

    #[test]
    fn events_are_known_and_at_least_one() {
        assert_eq!(parse_events(&["run.failed".into(), "items.imported".into(), "run.failed".into()]).unwrap(), ["items.imported", "run.failed"]);
        assert!(parse_events(&[]).unwrap_err().starts_with("events:"));
        assert!(parse_events(&["run.exploded".into()]).unwrap_err().contains("run.exploded"));
    }

    #[test]
    fn the_agreement_threshold_is_an_alpha() {
        assert_eq!(parse_agreement_below(Some(0.4)), Ok(Some(0.4)));
        assert_eq!(parse_agreement_below(None), Ok(None));
        assert!(parse_agreement_below(Some(1.5)).unwrap_err().starts_with("agreement_below:"));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour_with_a_bounded_jitter() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1, 0.0), base);
        assert_eq!(backoff(base, 3, 0.0), Duration::from_secs(120));
        assert_eq!(backoff(base, 30, 0.0), Duration::from_secs(3600));
        assert_eq!(backoff(base, 2, 1.0), Duration::from_secs(75));
    }
}
