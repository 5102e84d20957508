//! Leasing tasks and storing judgements. An item is handed to at most `overlap` distinct
//! labellers: the candidate row is locked with `FOR UPDATE SKIP LOCKED` and the condition is
//! re-checked under the lock with a fresh snapshot, so concurrent requests never over-lease.

use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use serde_json::Value;
use sqlx::PgConnection;

use crate::db::projects::Project;
use crate::domain::ranking::Submission;
use crate::domain::{ItemId, JudgementId, ProjectId, ResponseId, TaskId, UserId};

/// A leased task, as the labeller sees it (no model names).
#[derive(Debug, serde::Serialize)]
pub struct TaskView {
    pub task_id: TaskId,
    pub prompt: Value,
    /// `[{"id", "text"}]` in display order.
    pub responses: Value,
    pub expires_at: DateTime<Utc>,
}

/// The caller's live lease in this project, or a new one; `None` when nothing is left for them.
pub async fn lease_next(conn: &mut PgConnection, project: &Project, user: UserId) -> sqlx::Result<Option<TaskView>> {
    let live: Option<TaskId> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE user_id = $1 AND project_id = $2 AND status = 'leased' AND expires_at > now() ORDER BY leased_at LIMIT 1",
    )
    .bind(user)
    .bind(project.id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(task) = live {
        return view(conn, task, user).await;
    }
    for _ in 0..20 {
        let Some((item, n)) = candidate(conn, project, user).await? else {
            return Ok(None);
        };
        if let Some(task) = insert_if_still_wanted(conn, project, item, user, n).await? {
            return view(conn, task, user).await;
        }
    }
    Ok(None)
}

async fn candidate(conn: &mut PgConnection, project: &Project, user: UserId) -> sqlx::Result<Option<(ItemId, i32)>> {
    sqlx::query_as(
        "SELECT i.id, i.n_responses FROM items i
         WHERE i.project_id = $1 AND i.is_open
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = $2)
           AND i.done_count + (SELECT count(*) FROM tasks t WHERE t.item_id = i.id AND t.status = 'leased' AND t.expires_at > now()) < $3
         ORDER BY i.seq LIMIT 1 FOR NO KEY UPDATE OF i SKIP LOCKED",
    )
    .bind(project.id)
    .bind(user)
    .bind(project.overlap)
    .fetch_optional(conn)
    .await
}

/// Leases the item to `user` if, re-checked under the item's row lock with this statement's
/// fresh snapshot, it still needs a labeller and the user has never had it.
async fn insert_if_still_wanted(conn: &mut PgConnection, project: &Project, item: ItemId, user: UserId, n: i32) -> sqlx::Result<Option<TaskId>> {
    let mut order: Vec<i32> = (0..n).collect();
    order.shuffle(&mut rand::thread_rng());
    sqlx::query_scalar(
        "INSERT INTO tasks (id, project_id, item_id, user_id, display_order, expires_at)
         SELECT $1, $2, $3, $4, $5, now() + make_interval(secs => $6)
         WHERE (SELECT i.done_count + (SELECT count(*) FROM tasks t WHERE t.item_id = i.id AND t.status = 'leased' AND t.expires_at > now()) < $7
                FROM items i WHERE i.id = $3)
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = $3 AND t.user_id = $4)
         RETURNING id",
    )
    .bind(TaskId::new())
    .bind(project.id)
    .bind(item)
    .bind(user)
    .bind(&order)
    .bind(project.lease_seconds as f64)
    .bind(project.overlap)
    .fetch_optional(conn)
    .await
}

/// The task as shown to its own labeller (scoped to `user` in the query), responses in the
/// recorded display order.
pub async fn view(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<TaskView>> {
    let row: Option<(Value, DateTime<Utc>, Option<Value>)> = sqlx::query_as(
        "SELECT i.prompt, t.expires_at,
                (SELECT json_agg(json_build_object('id', r.id, 'text', r.text) ORDER BY o.k)
                 FROM unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
                 JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos) AS responses
         FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1 AND t.user_id = $2",
    )
    .bind(task)
    .bind(user)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(prompt, expires_at, responses)| TaskView { task_id: task, prompt, responses: responses.unwrap_or_else(|| Value::Array(vec![])), expires_at }))
}

/// A task row with the rules of its project and its responses, locked for the submission.
#[derive(Debug, sqlx::FromRow)]
pub struct TaskForSubmit {
    pub id: TaskId,
    pub item_id: ItemId,
    pub project_id: ProjectId,
    pub status: String,
    pub live: bool,
    pub display_order: Vec<i32>,
    pub elapsed_ms: i64,
    pub kind: crate::domain::TaskKind,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub flags: Vec<String>,
    pub overlap: i32,
    pub response_ids: Vec<ResponseId>,
}

/// Locks the caller's own task in a project they still belong to; `None` for anyone else's.
pub async fn lock_for_submit(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<TaskForSubmit>> {
    sqlx::query_as(
        "SELECT t.id, t.item_id, t.project_id, t.status, t.expires_at > now() AS live, t.display_order,
                (extract(epoch FROM now() - t.leased_at) * 1000)::bigint AS elapsed_ms,
                p.kind, p.allow_ties, p.rating_enabled, p.flags, p.overlap,
                COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}') AS response_ids
         FROM tasks t JOIN projects p ON p.id = t.project_id JOIN users u ON u.id = t.user_id
         LEFT JOIN memberships m ON m.project_id = p.id AND m.user_id = u.id
         WHERE t.id = $1 AND t.user_id = $2 AND (m.user_id IS NOT NULL OR u.is_admin)
         FOR UPDATE OF t",
    )
    .bind(task)
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// The judgement the caller already stored under this idempotency key, with its task.
pub async fn by_idempotency_key(conn: &mut PgConnection, user: UserId, key: &str) -> sqlx::Result<Option<(JudgementId, Option<TaskId>)>> {
    sqlx::query_as("SELECT id, task_id FROM judgements WHERE user_id = $1 AND idempotency_key = $2")
        .bind(user)
        .bind(key)
        .fetch_optional(conn)
        .await
}

/// Locks the item and says whether a lapsed lease may still be honoured: the item must still
/// need a judgement once every live lease of other labellers is counted.
pub async fn room_for_late_submit(conn: &mut PgConnection, item: ItemId, user: UserId, overlap: i32) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT i.done_count + (SELECT count(*) FROM tasks t WHERE t.item_id = i.id AND t.user_id <> $2 AND t.status = 'leased' AND t.expires_at > now()) < $3
         FROM items i WHERE i.id = $1 FOR NO KEY UPDATE",
    )
    .bind(item)
    .bind(user)
    .bind(overlap)
    .fetch_one(conn)
    .await
}

/// Stores the judgement, closes the task and counts it on the item, in one statement.
pub async fn store_judgement(conn: &mut PgConnection, task: &TaskForSubmit, user: UserId, s: &Submission) -> sqlx::Result<JudgementId> {
    let flags: serde_json::Map<String, Value> = s.flags.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    sqlx::query_scalar(
        "WITH j AS (INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, idempotency_key, ranks, display_order,
                                            strength, both_bad, demonstration, flags, rating, comment, time_on_task_ms)
                    VALUES ($1, $2, $3, $4, $5, 'labeller', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id),
              t AS (UPDATE tasks SET status = 'submitted' WHERE id = $4),
              i AS (UPDATE items SET done_count = done_count + 1, is_open = done_count + 1 < $16 WHERE id = $3)
         SELECT id FROM j",
    )
    .bind(JudgementId::new())
    .bind(task.project_id)
    .bind(task.item_id)
    .bind(task.id)
    .bind(user)
    .bind(&s.idempotency_key)
    .bind(s.ranking.as_ref().map(|r| r.ranks().to_vec()))
    .bind(&task.display_order)
    .bind(s.strength)
    .bind(s.both_bad)
    .bind(&s.demonstration)
    .bind(Value::Object(flags))
    .bind(s.rating)
    .bind(&s.comment)
    .bind(task.elapsed_ms)
    .bind(task.overlap)
    .fetch_one(conn)
    .await
}

/// Gives a leased task back with a reason; the labeller will not be offered the item again.
pub async fn skip(conn: &mut PgConnection, task: TaskId, user: UserId, reason: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE tasks SET status = 'skipped', skip_reason = $3 WHERE id = $1 AND user_id = $2 AND status = 'leased'")
        .bind(task)
        .bind(user)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Progress for the labelling page: judged today by the caller, and items still open to them.
pub async fn progress(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM judgements WHERE project_id = $1 AND user_id = $2 AND created_at >= date_trunc('day', now())),
                (SELECT count(*) FROM items i WHERE i.project_id = $1 AND i.is_open
                   AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = $2 AND t.status <> 'leased'))",
    )
    .bind(project)
    .bind(user)
    .fetch_one(conn)
    .await
}
