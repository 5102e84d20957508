//! Webhook delivery, in the background of every `rewardlab serve` (never on a request's path):
//! claims due deliveries from the outbox with `FOR UPDATE SKIP LOCKED` (so several servers
//! share one database, each delivery sent by one of them at a time), sends each signed per
//! Standard Webhooks v1, and logs the attempt. A failed attempt is retried after an
//! exponential backoff with jitter, until the attempts run out and the delivery is marked
//! failed. At least once: a server that dies mid-attempt leaves the delivery pending.
//!
//! The same task checks, every half minute, the agreement of projects that want an alert when
//! it falls below their threshold (a derived figure, so not written by a trigger), and once an
//! hour prunes the log: deliveries that ended over 30 days ago ([`KEEP`]), with their attempts
//! and the events no delivery needs any more.
//!
//! Targets on private networks are refused unless allowed: the host's addresses are checked
//! by the resolver the connection itself uses, so a name cannot resolve to a public address
//! for a check and to a private one for the connection (DNS rebinding).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;

use crate::db::webhooks::{self as dbw, Attempt, Due};
use crate::domain::webhooks::{self as dw, is_private, EndpointUrl, SigningSecret, PRIVATE_HINT};
use crate::settings::WebhookOptions;

/// Deliveries one claim takes at most (sent concurrently).
const CLAIM: i64 = 16;
/// How long the loop sleeps when nothing was due.
const IDLE: Duration = Duration::from_millis(500);
/// The most of an answer's body read (for the log); the rest is dropped.
const MAX_BODY: usize = 4096;
/// How often the agreement of watched projects is checked.
const AGREEMENT_EVERY: Duration = Duration::from_secs(30);
/// The longest error text logged.
const MAX_ERROR: usize = 300;
/// How long a delivery that ended (delivered or given up) stays in the log, with its attempts
/// and its event; older ones are pruned.
pub const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows one pruning statement deletes at most (short transactions on a large log).
const PRUNE_BATCH: i64 = 10_000;

/// Delivers due webhooks until the task is dropped.
pub async fn run(pool: PgPool, quality: std::sync::Arc<crate::services::quality_cache::Cache>, options: WebhookOptions) {
    let client = match client(options.allow_private) {
        Ok(c) => c,
        Err(e) => return log::error!("webhooks are not delivered: building the HTTP client: {e:#}"),
    };
    let mut agreement_checked = Instant::now();
    let mut pruned: Option<Instant> = None;
    loop {
        if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            match prune(&pool, KEEP).await {
                Ok((0, 0)) => {}
                Ok((deliveries, events)) => log::info!("webhooks: pruned {deliveries} deliveries and {events} events that ended over 30 days ago"),
                Err(e) => log::warn!("pruning the webhook log: {e:#}"),
            }
        }
        if agreement_checked.elapsed() >= AGREEMENT_EVERY {
            agreement_checked = Instant::now();
            if let Err(e) = crate::services::webhooks::check_agreement(&pool, &quality).await {
                log::warn!("checking agreement for webhooks: {e:#}");
            }
        }
        match deliver_due(&pool, &client, &options).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => log::warn!("delivering webhooks: {e:#}"),
        }
        tokio::time::sleep(IDLE).await;
    }
}

/// Deletes the deliveries that ended more than `keep` ago (with their attempts) and the events
/// no delivery needs any more, in batches; returns how many deliveries and events went.
pub async fn prune(pool: &PgPool, keep: Duration) -> anyhow::Result<(u64, u64)> {
    let before = chrono::Utc::now() - chrono::Duration::from_std(keep)?;
    let mut total = (0, 0);
    loop {
        let (deliveries, events) = dbw::prune(&mut *pool.acquire().await?, before, PRUNE_BATCH).await?;
        total = (total.0 + deliveries, total.1 + events);
        if deliveries < PRUNE_BATCH as u64 && events < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The HTTP client: short timeouts, no redirects, the checking resolver.
pub fn client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rewardlab-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckingResolver { allow_private }))
        .build()?)
}

/// Claims, sends and records one batch of due deliveries; how many there were.
pub async fn deliver_due(pool: &PgPool, client: &reqwest::Client, options: &WebhookOptions) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let due = dbw::claim_due(&mut tx, CLAIM).await?;
    let attempts = futures_util::future::join_all(due.iter().map(|d| attempt(client, d, options))).await;
    for (d, a) in due.iter().zip(&attempts) {
        dbw::record_attempt(&mut tx, d.id, d.attempts + 1, a).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// One attempt at a delivery and what it leaves the delivery as.
async fn attempt(client: &reqwest::Client, d: &Due, options: &WebhookOptions) -> Attempt {
    let start = Instant::now();
    let result = send(client, d, options.allow_private).await;
    let latency_ms = start.elapsed().as_millis().min(i32::MAX as u128) as i32;
    let number = d.attempts as u32 + 1;
    let (status_code, error) = match result {
        Ok((code, _)) if (200..300).contains(&code) => (Some(code as i32), None),
        Ok((code, body)) => (Some(code as i32), Some(clip(&format!("HTTP {code}: {body}")))),
        Err(e) => (None, Some(clip(&e))),
    };
    let outcome = match (&error, number >= options.max_attempts) {
        (None, _) => "delivered",
        (Some(_), false) => "pending",
        (Some(_), true) => "failed",
    };
    let retry_in = dw::backoff(options.retry_base, number, rand::thread_rng().gen());
    Attempt { status_code, latency_ms, error, outcome, retry_in }
}

/// The body every attempt of a delivery sends (Standard Webhooks' `type`, `timestamp`, `data`).
pub fn body(d: &Due) -> Vec<u8> {
    let payload = serde_json::json!({"type": d.event_type, "timestamp": d.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "data": d.data});
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Sends the signed request: the answer's status and the start of its body, or why none came.
async fn send(client: &reqwest::Client, d: &Due, allow_private: bool) -> Result<(u16, String), String> {
    // An address written in the URL is not resolved, so it is checked here (the stored URL was
    // checked when it was registered, perhaps under another setting).
    let url = EndpointUrl::parse(&d.url, allow_private).map_err(|e| format!("refused: {e}"))?;
    let key = SigningSecret::from_stored(d.secret.clone()).key()?;
    let body = body(d);
    let id = d.event.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = dw::sign(&key, &id, timestamp, &body);
    let response = client
        .post(url.as_str())
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    Ok((status, read_start(response).await))
}

/// Up to [`MAX_BODY`] bytes of an answer's body, as text.
async fn read_start(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A request error with its causes (the refusal of a private address among them).
fn describe(e: reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Resolves host names for the delivery client, refusing any name with a private address
/// unless allowed.
struct CheckingResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !allow_private && is_private(a.ip())) {
                let e: Box<dyn std::error::Error + Send + Sync> = format!("refused: {host} resolves to {}; {PRIVATE_HINT}", bad.ip()).into();
                return Err(e);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
