//! Schedules: what the runs page lists, and what the scheduler reads and moves when one fires
//! (the caller's transaction holds the due rows' locks until it commits).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::runs::ChainStep;
use crate::domain::{ProjectId, ScheduleId, UserId};

/// A schedule as the runs page shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: ScheduleId,
    pub cron: Option<String>,
    pub min_new_comparisons: Option<i64>,
    #[schema(value_type = Vec<ChainStep>)]
    pub chain: Json<Vec<ChainStep>>,
    pub enabled: bool,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub comparisons_at_last: i64,
}

impl Schedule {
    /// The chain's kinds: "rm → ppo → generate".
    pub fn chain_text(&self) -> String {
        self.chain.0.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>().join(" → ")
    }
}

/// A schedule to store: its trigger (`next` is the cron expression's next occurrence) and chain.
pub struct NewSchedule<'a> {
    pub project: ProjectId,
    pub cron: Option<&'a str>,
    pub next: Option<DateTime<Utc>>,
    pub min_new: Option<i64>,
    pub chain: &'a [ChainStep],
    pub by: UserId,
}

pub async fn insert(conn: &mut PgConnection, s: &NewSchedule<'_>) -> sqlx::Result<ScheduleId> {
    let id = ScheduleId(uuid::Uuid::new_v4());
    // A threshold counts comparisons from now on.
    let comparisons = comparisons(conn, s.project).await?;
    sqlx::query!(
        "INSERT INTO schedules (id, project_id, cron, min_new_comparisons, chain, next_fire_at, created_by, comparisons_at_last)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id as ScheduleId,
        s.project as ProjectId,
        s.cron,
        s.min_new,
        Json(s.chain) as Json<&[ChainStep]>,
        s.next,
        s.by as UserId,
        comparisons,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn list(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Schedule>> {
    sqlx::query_as!(
        Schedule,
        r#"SELECT id, cron, min_new_comparisons, chain AS "chain: Json<Vec<ChainStep>>", enabled, next_fire_at, last_fired_at, comparisons_at_last
             FROM schedules WHERE project_id = $1 ORDER BY created_at"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, project: ProjectId, id: ScheduleId) -> sqlx::Result<bool> {
    Ok(sqlx::query!("DELETE FROM schedules WHERE id = $1 AND project_id = $2", id as ScheduleId, project as ProjectId).execute(conn).await?.rows_affected()
        == 1)
}

/// Comparisons (ordered pairs of different rank, and ties) the project's judgements imply.
pub async fn comparisons(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE(sum(n * (n - 1) / 2), 0)::bigint AS "n!"
             FROM (SELECT array_length(ranks, 1)::bigint AS n FROM judgements WHERE project_id = $1 AND ranks IS NOT NULL) j"#,
        project as ProjectId,
    )
    .fetch_one(conn)
    .await
}

/// An enabled schedule whose time has come (or that has no cron expression), locked.
pub struct Due {
    pub id: ScheduleId,
    pub project_id: ProjectId,
    pub cron: Option<String>,
    pub min_new_comparisons: Option<i64>,
    pub chain: Json<Vec<ChainStep>>,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub comparisons_at_last: i64,
    pub created_by: Option<UserId>,
    /// A run of its last firing is still queued or running.
    pub busy: bool,
}

/// Locks and returns the due schedules no other transaction holds.
pub async fn lock_due(conn: &mut PgConnection) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as!(
        Due,
        r#"SELECT s.id, s.project_id, s.cron, s.min_new_comparisons, s.chain AS "chain: Json<Vec<ChainStep>>", s.next_fire_at, s.comparisons_at_last,
                  s.created_by AS "created_by: UserId",
                  EXISTS (SELECT 1 FROM runs r WHERE r.schedule_id = s.id AND r.status IN ('queued', 'running')) AS "busy!"
             FROM schedules s WHERE s.enabled AND (s.cron IS NULL OR s.next_fire_at <= now()) FOR UPDATE OF s SKIP LOCKED"#,
    )
    .fetch_all(conn)
    .await
}

/// The transaction's time.
pub async fn now(conn: &mut PgConnection) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(conn).await
}

pub async fn set_next_fire(conn: &mut PgConnection, id: ScheduleId, next: Option<DateTime<Utc>>) -> sqlx::Result<()> {
    sqlx::query!("UPDATE schedules SET next_fire_at = $2 WHERE id = $1", id as ScheduleId, next).execute(conn).await.map(drop)
}

pub async fn disable(conn: &mut PgConnection, id: ScheduleId) -> sqlx::Result<()> {
    sqlx::query!("UPDATE schedules SET enabled = false WHERE id = $1", id as ScheduleId).execute(conn).await.map(drop)
}

/// Records a firing: new comparisons count from `comparisons` on.
pub async fn mark_fired(conn: &mut PgConnection, id: ScheduleId, comparisons: i64) -> sqlx::Result<()> {
    sqlx::query!("UPDATE schedules SET last_fired_at = now(), comparisons_at_last = $2 WHERE id = $1", id as ScheduleId, comparisons)
        .execute(conn)
        .await
        .map(drop)
}
