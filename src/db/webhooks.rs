//! Webhooks: a project's endpoints, the delivery log, and the outbox the background delivery
//! claims from. Events themselves are written by the triggers of migration 0007, in the
//! transaction of their cause. Every lookup of an endpoint or delivery is scoped by the project
//! the caller was authorized for.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::webhooks::{NewEndpoint, SigningSecret, TEST_EVENT};
use crate::domain::{DeliveryId, ProjectId, TaskKind, UserId, WebhookId};

/// An endpoint as leads see it (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: WebhookId,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// Deliveries waiting for their next attempt.
    pub pending: i64,
    /// Deliveries that gave up after the last attempt.
    pub failed: i64,
}

/// One delivery of an event to an endpoint, with its latest attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: DeliveryId,
    /// The event's id, sent as `webhook-id` (the same on every attempt and redelivery).
    pub event: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the latest attempt, if it got an answer.
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

macro_rules! select_endpoints {
    ($rest:tt, $($arg:expr),*) => {
        sqlx::query_as!(
            Endpoint,
            r#"SELECT w.id AS "id: WebhookId", w.url, w.description, w.events, w.enabled, w.created_at, w.rotated_at,
                      (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.status = 'pending') AS "pending!",
                      (SELECT count(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.status = 'failed') AS "failed!"
               FROM webhook_endpoints w "# + $rest,
            $($arg),*
        )
    };
}

pub async fn insert_endpoint(conn: &mut PgConnection, project: ProjectId, new: &NewEndpoint, secret: &SigningSecret, by: UserId) -> sqlx::Result<WebhookId> {
    let id = WebhookId::new();
    sqlx::query!(
        "INSERT INTO webhook_endpoints (id, project_id, url, description, events, secret, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id as WebhookId,
        project as ProjectId,
        new.url.as_str(),
        new.description,
        &new.events,
        secret.expose(),
        by as UserId,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn endpoints(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Endpoint>> {
    select_endpoints!("WHERE w.project_id = $1 ORDER BY w.created_at", project as ProjectId).fetch_all(conn).await
}

pub async fn endpoint(conn: &mut PgConnection, project: ProjectId, id: WebhookId) -> sqlx::Result<Option<Endpoint>> {
    select_endpoints!("WHERE w.project_id = $1 AND w.id = $2", project as ProjectId, id as WebhookId).fetch_optional(conn).await
}

/// Replaces the endpoint's secret; false when the project has no such endpoint.
pub async fn rotate_secret(conn: &mut PgConnection, project: ProjectId, id: WebhookId, secret: &SigningSecret) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE webhook_endpoints SET secret = $3, rotated_at = now() WHERE project_id = $1 AND id = $2",
        project as ProjectId,
        id as WebhookId,
        secret.expose()
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the endpoint with its deliveries; false when the project has no such endpoint.
pub async fn delete_endpoint(conn: &mut PgConnection, project: ProjectId, id: WebhookId) -> sqlx::Result<bool> {
    let done = sqlx::query!("DELETE FROM webhook_endpoints WHERE project_id = $1 AND id = $2", project as ProjectId, id as WebhookId).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// The endpoint's newest deliveries, newest first.
pub async fn deliveries(conn: &mut PgConnection, project: ProjectId, endpoint: WebhookId, limit: i64) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"SELECT d.id AS "id: DeliveryId", e.id AS event, e.type AS event_type, d.status, d.attempts,
                  CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
                  d.last_status, d.last_latency_ms, d.last_error, d.created_at, d.delivered_at
           FROM webhook_deliveries d
           JOIN webhook_endpoints w ON w.id = d.endpoint_id
           JOIN webhook_events e ON e.id = d.event_id
           WHERE w.project_id = $1 AND d.endpoint_id = $2
           ORDER BY d.created_at DESC, d.id DESC LIMIT $3"#,
        project as ProjectId,
        endpoint as WebhookId,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Queues a test event for this endpoint alone; false when the project has no such endpoint.
pub async fn queue_test(conn: &mut PgConnection, project: ProjectId, endpoint: WebhookId, data: &Value) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"WITH w AS (SELECT id FROM webhook_endpoints WHERE project_id = $1 AND id = $2),
                ev AS (INSERT INTO webhook_events (id, project_id, type, data) SELECT gen_random_uuid(), $1, $3, $4 FROM w RETURNING id)
           INSERT INTO webhook_deliveries (id, event_id, endpoint_id) SELECT gen_random_uuid(), ev.id, w.id FROM ev, w"#,
        project as ProjectId,
        endpoint as WebhookId,
        TEST_EVENT,
        data
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sends a delivery again from its first attempt (its attempts stay in the log); false when the
/// endpoint has no such delivery.
pub async fn redeliver(conn: &mut PgConnection, project: ProjectId, endpoint: WebhookId, delivery: DeliveryId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
         FROM webhook_endpoints w WHERE w.id = d.endpoint_id AND w.project_id = $1 AND d.endpoint_id = $2 AND d.id = $3",
        project as ProjectId,
        endpoint as WebhookId,
        delivery as DeliveryId
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery claimed for an attempt, with what it sends.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: DeliveryId,
    pub attempts: i32,
    pub event: uuid::Uuid,
    pub event_type: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
}

/// Claims up to `limit` due deliveries, locked until the transaction ends and skipped by every
/// other server's claim meanwhile.
pub async fn claim_due(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as!(
        Due,
        r#"SELECT d.id AS "id: DeliveryId", d.attempts, e.id AS event, e.type AS event_type, e.data, e.created_at, w.url, w.secret
           FROM webhook_deliveries d
           JOIN webhook_events e ON e.id = d.event_id
           JOIN webhook_endpoints w ON w.id = d.endpoint_id
           WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           ORDER BY d.next_attempt_at LIMIT $1
           FOR UPDATE OF d SKIP LOCKED"#,
        limit
    )
    .fetch_all(conn)
    .await
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    /// The delivery's state after it: `delivered`, `pending` (retried after `retry_in`) or `failed`.
    pub outcome: &'static str,
    pub retry_in: std::time::Duration,
}

/// Logs an attempt and moves its delivery on.
pub async fn record_attempt(conn: &mut PgConnection, delivery: DeliveryId, number: i32, a: &Attempt) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5)",
        delivery as DeliveryId,
        number,
        a.status_code,
        a.latency_ms,
        a.error
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, last_status = $4, last_latency_ms = $5, last_error = $6,
                next_attempt_at = now() + make_interval(secs => $7), delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
         WHERE id = $1",
        delivery as DeliveryId,
        a.outcome,
        number,
        a.status_code,
        a.latency_ms,
        a.error,
        a.retry_in.as_secs_f64()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` deliveries that ended (delivered, or failed after their last attempt)
/// before `before`, with their attempts; then up to `limit` events from before `before` that
/// no delivery refers to any more. Returns how many of each went.
pub async fn prune(conn: &mut PgConnection, before: DateTime<Utc>, limit: i64) -> sqlx::Result<(u64, u64)> {
    let deliveries = sqlx::query!(
        "DELETE FROM webhook_deliveries WHERE id IN (
           SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND COALESCE(delivered_at, next_attempt_at) < $1 LIMIT $2)",
        before,
        limit
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let events = sqlx::query!(
        "DELETE FROM webhook_events WHERE id IN (
           SELECT e.id FROM webhook_events e WHERE e.created_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) LIMIT $2)",
        before,
        limit
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok((deliveries, events))
}

/// Deliveries by state over all projects, for `/metrics`.
pub async fn delivery_counts(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT p.slug AS "slug!", d.status AS "status!", count(*) AS "n!"
           FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id JOIN projects p ON p.id = w.project_id
           GROUP BY p.slug, d.status ORDER BY 1, 2"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.slug, r.status, r.n)).collect())
}

/// A project whose agreement is watched: its threshold and whether an alert is out.
#[derive(Debug, Clone)]
pub struct Watched {
    pub id: ProjectId,
    pub slug: String,
    pub kind: TaskKind,
    pub threshold: f64,
    pub alerted: bool,
}

/// The projects with an agreement threshold and an enabled endpoint subscribed to its alert.
pub async fn agreement_watched(conn: &mut PgConnection) -> sqlx::Result<Vec<Watched>> {
    sqlx::query_as!(
        Watched,
        r#"SELECT p.id AS "id: ProjectId", p.slug, p.kind AS "kind: TaskKind", p.agreement_below AS "threshold!", p.agreement_alerted AS alerted
           FROM projects p
           WHERE p.agreement_below IS NOT NULL
             AND EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.project_id = p.id AND w.enabled AND 'agreement.below_threshold' = ANY (w.events))
           ORDER BY p.slug"#
    )
    .fetch_all(conn)
    .await
}

/// Records whether the project's agreement is below its threshold; when it newly is, writes the
/// `agreement.below_threshold` event (with `data`) in the same statement.
pub async fn set_agreement_alert(conn: &mut PgConnection, project: ProjectId, below: bool, data: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        r#"WITH up AS (UPDATE projects SET agreement_alerted = $2 WHERE id = $1 AND agreement_alerted <> $2 RETURNING id)
           SELECT count(rl_webhook_emit(up.id, 'agreement.below_threshold', $3, NULL)) AS "emitted!" FROM up WHERE $2"#,
        project as ProjectId,
        below,
        data
    )
    .fetch_one(conn)
    .await
    .map(drop)
}

/// Sets the agreement alert's threshold (`None`: no alert); the alert starts afresh.
pub async fn set_agreement_below(conn: &mut PgConnection, project: ProjectId, below: Option<f64>) -> sqlx::Result<()> {
    sqlx::query!("UPDATE projects SET agreement_below = $2, agreement_alerted = false WHERE id = $1", project as ProjectId, below).execute(conn).await.map(drop)
}

/// The project's agreement alert threshold.
pub async fn agreement_below(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar!("SELECT agreement_below FROM projects WHERE id = $1", project as ProjectId).fetch_one(conn).await
}
