//! A project's queue strategy, and what its newest reward model said about its items: each
//! response's ensemble scores (in `response_scores`) and each item's priority and members' best
//! responses, which `rl_take` (migrations/0008_queue.sql) orders leases by.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::queue::QueueStrategy;
use crate::domain::{ProjectId, ResponseId, RunId};

/// A project's queue: its strategy and the reward model its priorities come from.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueState {
    pub strategy: QueueStrategy,
    /// The rm run whose scores order the queue (`null`: none yet).
    pub scored_by: Option<RunId>,
    /// Its ensemble members (1 for a single model, 0 before any).
    pub members: i32,
    pub scored_at: Option<DateTime<Utc>>,
    /// Open items with a priority, and open items in all (gold items aside).
    pub scored_open_items: i64,
    pub open_items: i64,
}

pub async fn state(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<QueueState> {
    sqlx::query_as!(
        QueueState,
        r#"SELECT p.queue_strategy AS "strategy: QueueStrategy", p.queue_run AS "scored_by: RunId", p.queue_members AS members, p.queue_scored_at AS scored_at,
                  (SELECT count(*) FROM items i WHERE i.project_id = p.id AND i.is_open AND i.queue_priority IS NOT NULL) AS "scored_open_items!",
                  (SELECT count(*) FROM items i WHERE i.project_id = p.id AND i.is_open) AS "open_items!"
             FROM projects p WHERE p.id = $1"#,
        project as ProjectId,
    )
    .fetch_one(conn)
    .await
}

pub async fn set_strategy(conn: &mut PgConnection, project: ProjectId, strategy: QueueStrategy) -> sqlx::Result<()> {
    sqlx::query!("UPDATE projects SET queue_strategy = $2 WHERE id = $1", project as ProjectId, strategy as QueueStrategy).execute(conn).await?;
    Ok(())
}

/// One item as a reward model scored it: its first response (which names the item), its
/// priority and each member's best response.
#[derive(Debug, Clone)]
pub struct ItemQueue {
    pub first_response: ResponseId,
    pub priority: Option<f64>,
    /// Postgres array text, e.g. `{0,1,0}`.
    pub best: String,
}

/// Replaces the project's queue priorities with `run`'s (an ensemble of `members`): every
/// item's priority is cleared, then set for the items scored.
pub async fn replace_priorities(conn: &mut PgConnection, project: ProjectId, run: RunId, members: i32, items: &[ItemQueue]) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE items SET queue_priority = NULL, queue_best = NULL WHERE project_id = $1 AND (queue_priority IS NOT NULL OR queue_best IS NOT NULL)",
        project as ProjectId
    )
    .execute(&mut *conn)
    .await?;
    let firsts: Vec<ResponseId> = items.iter().map(|i| i.first_response).collect();
    let priorities: Vec<f64> = items.iter().map(|i| i.priority.unwrap_or(f64::NAN)).collect();
    let best: Vec<String> = items.iter().map(|i| i.best.clone()).collect();
    sqlx::query!(
        "UPDATE items i SET queue_priority = NULLIF(u.p, 'NaN'::float8), queue_best = u.b::smallint[]
           FROM UNNEST($2::uuid[], $3::float8[], $4::text[]) AS u(r, p, b) JOIN responses r ON r.id = u.r
          WHERE i.id = r.item_id AND i.project_id = $1",
        project as ProjectId,
        firsts as Vec<ResponseId>,
        &priorities,
        &best,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("UPDATE projects SET queue_run = $2, queue_members = $3, queue_scored_at = now() WHERE id = $1", project as ProjectId, run as RunId, members)
        .execute(conn)
        .await?;
    Ok(())
}
