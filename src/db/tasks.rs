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
    pub responses: Vec<ShownResponse>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, serde::Serialize, sqlx::FromRow)]
pub struct ShownResponse {
    pub id: ResponseId,
    pub text: String,
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
        if still_wanted(conn, item, user, project.overlap).await? {
            let task = insert_task(conn, project, item, user, n).await?;
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
         ORDER BY i.seq LIMIT 1 FOR UPDATE OF i SKIP LOCKED",
    )
    .bind(project.id)
    .bind(user)
    .bind(project.overlap)
    .fetch_optional(conn)
    .await
}

/// Re-checks, under the item's row lock and with a fresh snapshot, that it still needs a labeller.
async fn still_wanted(conn: &mut PgConnection, item: ItemId, user: UserId, overlap: i32) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT i.done_count + (SELECT count(*) FROM tasks t WHERE t.item_id = i.id AND t.status = 'leased' AND t.expires_at > now()) < $3
                AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = $2)
         FROM items i WHERE i.id = $1",
    )
    .bind(item)
    .bind(user)
    .bind(overlap)
    .fetch_one(conn)
    .await
}

async fn insert_task(conn: &mut PgConnection, project: &Project, item: ItemId, user: UserId, n: i32) -> sqlx::Result<TaskId> {
    let mut order: Vec<i32> = (0..n).collect();
    order.shuffle(&mut rand::thread_rng());
    let id = TaskId::new();
    sqlx::query(
        "INSERT INTO tasks (id, project_id, item_id, user_id, display_order, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(id)
    .bind(project.id)
    .bind(item)
    .bind(user)
    .bind(&order)
    .bind(project.lease_seconds as f64)
    .execute(conn)
    .await?;
    Ok(id)
}

/// The task as shown to its own labeller (scoped to `user` in the query).
pub async fn view(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<TaskView>> {
    let head: Option<(Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT i.prompt, t.expires_at FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1 AND t.user_id = $2",
    )
    .bind(task)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((prompt, expires_at)) = head else { return Ok(None) };
    let responses = sqlx::query_as(
        "SELECT r.id, r.text FROM tasks t CROSS JOIN LATERAL unnest(t.display_order) WITH ORDINALITY AS o(pos, k)
         JOIN responses r ON r.item_id = t.item_id AND r.position = o.pos WHERE t.id = $1 AND t.user_id = $2 ORDER BY o.k",
    )
    .bind(task)
    .bind(user)
    .fetch_all(conn)
    .await?;
    Ok(Some(TaskView { task_id: task, prompt, responses, expires_at }))
}

/// A task row with the rules of its project, locked for the submission.
#[derive(Debug, sqlx::FromRow)]
pub struct TaskForSubmit {
    pub id: TaskId,
    pub item_id: ItemId,
    pub project_id: ProjectId,
    pub status: String,
    pub live: bool,
    pub display_order: Vec<i32>,
    pub elapsed_ms: i64,
}

/// Locks the caller's own task; `None` for anyone else's.
pub async fn lock_for_submit(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<TaskForSubmit>> {
    sqlx::query_as(
        "SELECT id, item_id, project_id, status, expires_at > now() AS live, display_order,
                (extract(epoch FROM now() - leased_at) * 1000)::bigint AS elapsed_ms
         FROM tasks WHERE id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(task)
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// The response ids of an item in position order.
pub async fn response_ids(conn: &mut PgConnection, item: ItemId) -> sqlx::Result<Vec<ResponseId>> {
    sqlx::query_scalar("SELECT id FROM responses WHERE item_id = $1 ORDER BY position").bind(item).fetch_all(conn).await
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
         FROM items i WHERE i.id = $1 FOR UPDATE",
    )
    .bind(item)
    .bind(user)
    .bind(overlap)
    .fetch_one(conn)
    .await
}

/// Stores the judgement, closes the task and counts it on the item.
pub async fn store_judgement(conn: &mut PgConnection, task: &TaskForSubmit, user: UserId, overlap: i32, s: &Submission) -> sqlx::Result<JudgementId> {
    let id = JudgementId::new();
    let flags: serde_json::Map<String, Value> = s.flags.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    sqlx::query(
        "INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, idempotency_key, ranks, display_order,
                                 strength, both_bad, demonstration, flags, rating, comment, time_on_task_ms)
         VALUES ($1, $2, $3, $4, $5, 'labeller', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id)
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
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE tasks SET status = 'submitted' WHERE id = $1").bind(task.id).execute(&mut *conn).await?;
    sqlx::query("UPDATE items SET done_count = done_count + 1, is_open = done_count + 1 < $2 WHERE id = $1")
        .bind(task.item_id)
        .bind(overlap)
        .execute(conn)
        .await?;
    Ok(id)
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
