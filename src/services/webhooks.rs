//! Webhooks for a project's leads: registering an endpoint (its secret shown once), rotating
//! the secret, removing it, the delivery log, a test event and redelivery. The caller has
//! already been authorized as a lead of `p`; every query is scoped by `p`.

use std::sync::Arc;

use rand::RngCore;
use sqlx::PgPool;

use super::error::{AppError, DbContext};
use super::quality_cache::Cache;
use crate::db::projects::Project;
use crate::db::webhooks::{self as dbw, Delivery, Endpoint};
use crate::domain::webhooks::{NewEndpoint, SigningSecret};
use crate::domain::{DeliveryId, UserId, WebhookId};

/// The most deliveries a log shows.
pub const LOG_LIMIT: i64 = 200;

/// A new random secret.
fn new_secret() -> SigningSecret {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    SigningSecret::from_key(&key)
}

/// Registers an endpoint; answers it with its secret, which is never shown again.
pub async fn create(pool: &PgPool, p: &Project, by: UserId, new: &NewEndpoint) -> Result<(Endpoint, SigningSecret), AppError> {
    let secret = new_secret();
    let mut tx = pool.begin().await?;
    let id = dbw::insert_endpoint(&mut tx, p.id, new, &secret, by).await.context("registering a webhook")?;
    let endpoint = dbw::endpoint(&mut tx, p.id, id).await.context("reading a new webhook")?.ok_or(AppError::NotFound)?;
    tx.commit().await.context("registering a webhook")?;
    Ok((endpoint, secret))
}

pub async fn list(pool: &PgPool, p: &Project) -> Result<Vec<Endpoint>, AppError> {
    dbw::endpoints(&mut *pool.acquire().await?, p.id).await.context("listing webhooks")
}

/// The endpoint and its newest deliveries.
pub async fn log(pool: &PgPool, p: &Project, id: WebhookId) -> Result<(Endpoint, Vec<Delivery>), AppError> {
    let mut conn = pool.acquire().await?;
    let endpoint = dbw::endpoint(&mut conn, p.id, id).await.context("finding a webhook")?.ok_or(AppError::NotFound)?;
    let deliveries = dbw::deliveries(&mut conn, p.id, id, LOG_LIMIT).await.context("reading a webhook's deliveries")?;
    Ok((endpoint, deliveries))
}

/// A new secret for the endpoint, shown once; the old one stops signing at once.
pub async fn rotate(pool: &PgPool, p: &Project, id: WebhookId) -> Result<SigningSecret, AppError> {
    let secret = new_secret();
    let found = dbw::rotate_secret(&mut *pool.acquire().await?, p.id, id, &secret).await.context("rotating a webhook's secret")?;
    found.then_some(secret).ok_or(AppError::NotFound)
}

pub async fn delete(pool: &PgPool, p: &Project, id: WebhookId) -> Result<(), AppError> {
    let found = dbw::delete_endpoint(&mut *pool.acquire().await?, p.id, id).await.context("removing a webhook")?;
    found.then_some(()).ok_or(AppError::NotFound)
}

/// Queues a `webhook.test` event for this endpoint alone.
pub async fn send_test(pool: &PgPool, p: &Project, id: WebhookId) -> Result<(), AppError> {
    let data = serde_json::json!({"project": p.slug.as_str(), "message": "a test event sent from rewardlab"});
    let found = dbw::queue_test(&mut *pool.acquire().await?, p.id, id, &data).await.context("queueing a test event")?;
    found.then_some(()).ok_or(AppError::NotFound)
}

/// Sends a delivery again, from its first attempt.
pub async fn redeliver(pool: &PgPool, p: &Project, id: WebhookId, delivery: DeliveryId) -> Result<(), AppError> {
    let found = dbw::redeliver(&mut *pool.acquire().await?, p.id, id, delivery).await.context("redelivering a webhook")?;
    found.then_some(()).ok_or(AppError::NotFound)
}

/// The project's agreement alert threshold.
pub async fn agreement_below(pool: &PgPool, p: &Project) -> Result<Option<f64>, AppError> {
    dbw::agreement_below(&mut *pool.acquire().await?, p.id).await.context("reading the agreement threshold")
}

/// Sets the agreement alert's threshold (checked by the caller); `None` turns the alert off.
pub async fn set_agreement_below(pool: &PgPool, p: &Project, below: Option<f64>) -> Result<(), AppError> {
    dbw::set_agreement_below(&mut *pool.acquire().await?, p.id, below).await.context("setting the agreement threshold")
}

/// Looks at the agreement (Krippendorff's α, from the project's kept quality figures) of every
/// project that has a threshold and an endpoint for its alert: one that fell below sends
/// `agreement.below_threshold` once, until it recovers. Answers how many alerts were written.
pub async fn check_agreement(pool: &PgPool, quality: &Arc<Cache>) -> Result<usize, AppError> {
    let mut conn = pool.acquire().await?;
    let mut sent = 0;
    for w in dbw::agreement_watched(&mut conn).await.context("finding watched projects")? {
        let figures = quality.figures(pool, w.id, w.kind).await?;
        let agreement = &figures.computed.agreement;
        let Some(alpha) = agreement.alpha.map(|e| e.value) else { continue };
        let below = alpha < w.threshold;
        if below != w.alerted {
            let data = serde_json::json!({"project": w.slug, "alpha": alpha, "threshold": w.threshold, "items_compared": agreement.items_compared});
            dbw::set_agreement_alert(&mut conn, w.id, below, &data).await.context("recording an agreement alert")?;
            sent += usize::from(below);
        }
    }
    Ok(sent)
}
