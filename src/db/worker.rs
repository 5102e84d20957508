//! The worker's SQL: claiming a run, and every write it makes afterwards. Each write names
//! the claim's fence and changes nothing once the row carries another one (a later claim) or
//! is no longer running (cancelled); the `bool` results say whether it still did.

use futures_util::{Stream, TryStreamExt};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::domain::runs::RunKind;
use crate::domain::{ExportId, ItemId, ProjectId, ResponseId, RunId, TaskKind};

/// A run as claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: RunId,
    pub project_id: ProjectId,
    pub project_kind: TaskKind,
    pub kind: RunKind,
    pub config: Value,
    pub input: Value,
    pub export_id: Option<ExportId>,
    pub after_run: Option<RunId>,
    pub fence: i64,
    pub attempts: i32,
}

/// Claims the oldest runnable run: queued (its chain predecessor, if any, succeeded, and
/// passed its gate when it is a gated spot check), or running with an expired lease; raises its fence.
pub async fn claim(pool: &PgPool, worker: &str, lease: std::time::Duration) -> sqlx::Result<Option<Claimed>> {
    claim_capable(pool, worker, lease, true).await
}

/// [`claim`] for a worker that launches runs under mpirun (`mpirun`) or not: one that does not
/// leaves runs asking for several processes or a host list to one that does.
pub async fn claim_capable(pool: &PgPool, worker: &str, lease: std::time::Duration, mpirun: bool) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as!(
        Claimed,
        r#"UPDATE runs r SET status = 'running', fence = r.fence + 1, attempts = r.attempts + 1, worker = $1,
                lease_expires_at = now() + make_interval(secs => $2), started_at = COALESCE(r.started_at, now())
         WHERE r.id = (SELECT c.id FROM runs c
                       WHERE (c.status = 'queued' OR (c.status = 'running' AND c.lease_expires_at < now()))
                         AND (c.after_run IS NULL OR EXISTS (SELECT 1 FROM runs p WHERE p.id = c.after_run AND p.status = 'succeeded'
                                                               AND (p.gate_passed_at IS NOT NULL OR p.config->>'gate_win_rate' IS NULL)))
                         AND ($3 OR (COALESCE((c.config->>'processes')::int, 1) = 1 AND c.config->>'hosts' IS NULL))
                       ORDER BY c.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
           AND (r.status = 'queued' OR (r.status = 'running' AND r.lease_expires_at < now()))
         RETURNING r.id, r.project_id, (SELECT p.kind FROM projects p WHERE p.id = r.project_id) AS "project_kind!: TaskKind",
                   r.kind AS "kind: RunKind", r.config, r.input, r.export_id AS "export_id: ExportId", r.after_run AS "after_run: RunId", r.fence,
                   r.attempts"#,
        worker,
        lease.as_secs_f64(),
        mpirun,
    )
    .fetch_optional(pool)
    .await
}

/// Renews the lease for `lease` seconds.
pub async fn heartbeat(db: impl PgExecutor<'_>, run: RunId, fence: i64, lease: std::time::Duration) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) WHERE id = $1 AND fence = $2 AND status = 'running'",
        run as RunId,
        fence,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends a log line while the run is ours.
pub async fn log(db: impl PgExecutor<'_>, run: RunId, fence: i64, line: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO run_logs (run_id, fence, line) SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND fence = $2 AND status = 'running')",
        run as RunId,
        fence,
        line,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Appends a metric line while the run is ours.
pub async fn metric(db: impl PgExecutor<'_>, run: RunId, fence: i64, event: &str, step: Option<i64>, data: &Value) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO run_metrics (run_id, fence, event, step, data)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND fence = $2 AND status = 'running')",
        run as RunId,
        fence,
        event,
        step,
        data,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the models the worker found for the run under `input.resolved`.
pub async fn set_resolved(db: impl PgExecutor<'_>, run: RunId, fence: i64, resolved: &Value) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE runs SET input = input || jsonb_build_object('resolved', $3::jsonb) WHERE id = $1 AND fence = $2 AND status = 'running'",
        run as RunId,
        fence,
        resolved,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the checkpoint the attempt resumes from.
pub async fn set_resumed_from(db: impl PgExecutor<'_>, run: RunId, fence: i64, checkpoint: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!("UPDATE runs SET resumed_from = $3 WHERE id = $1 AND fence = $2 AND status = 'running'", run as RunId, fence, checkpoint)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the export the run trains on, so a takeover trains on the same data.
pub async fn set_export(db: impl PgExecutor<'_>, run: RunId, fence: i64, export: ExportId) -> sqlx::Result<bool> {
    let done = sqlx::query!("UPDATE runs SET export_id = $3 WHERE id = $1 AND fence = $2 AND status = 'running'", run as RunId, fence, export as ExportId)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the run failed if it is still ours; true when it did.
pub async fn fail(conn: &mut PgConnection, run: RunId, fence: i64, error: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE runs SET status = 'failed', error = $3, finished_at = now(), lease_expires_at = NULL WHERE id = $1 AND fence = $2 AND status = 'running'",
        run as RunId,
        fence,
        error,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Cancels the queued runs chained after `run`, giving `why`.
pub async fn cancel_dependents(conn: &mut PgConnection, run: RunId, why: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "WITH RECURSIVE chain(id) AS (SELECT id FROM runs WHERE after_run = $1 UNION SELECT r.id FROM runs r JOIN chain c ON r.after_run = c.id)
         UPDATE runs SET status = 'cancelled', finished_at = now(), error = $2 WHERE id IN (SELECT id FROM chain) AND status = 'queued'",
        run as RunId,
        why,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the run's row if it is still ours; false when it is not.
pub async fn lock_if_ours(conn: &mut PgConnection, run: RunId, fence: i64) -> sqlx::Result<bool> {
    let ours = sqlx::query_scalar!("SELECT fence FROM runs WHERE id = $1 AND fence = $2 AND status = 'running' FOR UPDATE", run as RunId, fence)
        .fetch_optional(conn)
        .await?;
    Ok(ours.is_some())
}

/// Stores what the run's reward model said about responses: the reward (an ensemble's mean), the
/// ensemble's spread (NaN: none) and its members' rewards as Postgres array text ('': none).
pub async fn insert_scores(
    conn: &mut PgConnection,
    run: RunId,
    responses: &[ResponseId],
    rewards: &[f64],
    stds: &[f64],
    members: &[String],
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO response_scores (run_id, response_id, reward, reward_std, member_rewards)
         SELECT $1, u.r, u.w, NULLIF(u.s, 'NaN'::float8), NULLIF(u.m, '')::float8[] FROM UNNEST($2::uuid[], $3::float8[], $4::float8[], $5::text[]) AS u(r, w, s, m)
         ON CONFLICT DO NOTHING",
        run as RunId,
        responses as &[ResponseId],
        rewards,
        stds,
        members,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Publishes the run: succeeded, with its model directory and summary, and a last log line.
pub async fn succeed(conn: &mut PgConnection, run: RunId, fence: i64, model_dir: &str, summary: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE runs SET status = 'succeeded', finished_at = now(), lease_expires_at = NULL, model_dir = $3, summary = $4 WHERE id = $1 AND fence = $2",
        run as RunId,
        fence,
        model_dir,
        summary,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("INSERT INTO run_logs (run_id, fence, line) VALUES ($1, $2, $3)", run as RunId, fence, format!("[worker] succeeded: {summary}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// A model a run made: the run, its kind, its directory.
pub type MadeModel = (RunId, RunKind, String);

/// The model `id` made, if it is a succeeded run of the project of one of `kinds`.
pub async fn model_of_run(conn: &mut PgConnection, project: ProjectId, id: RunId, kinds: &[RunKind]) -> sqlx::Result<Option<MadeModel>> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: RunId", kind AS "kind: RunKind", model_dir AS "model_dir!" FROM runs
            WHERE id = $1 AND project_id = $2 AND status = 'succeeded' AND kind = ANY($3) AND model_dir IS NOT NULL"#,
        id as RunId,
        project as ProjectId,
        kinds as &[RunKind],
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.kind, r.model_dir)))
}

/// The model of the nearest run up the chain from `after` (itself first) of one of `kinds`.
pub async fn model_up_chain(conn: &mut PgConnection, after: Option<RunId>, kinds: &[RunKind]) -> sqlx::Result<Option<MadeModel>> {
    let row = sqlx::query!(
        r#"WITH RECURSIVE up(id, depth) AS (SELECT $1::uuid, 0 UNION ALL SELECT r.after_run, up.depth + 1 FROM runs r JOIN up ON r.id = up.id WHERE r.after_run IS NOT NULL)
           SELECT r.id AS "id: RunId", r.kind AS "kind: RunKind", r.model_dir AS "model_dir!" FROM up JOIN runs r ON r.id = up.id
           WHERE r.kind = ANY($2) AND r.status = 'succeeded' AND r.model_dir IS NOT NULL ORDER BY up.depth LIMIT 1"#,
        after as Option<RunId>,
        kinds as &[RunKind],
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.kind, r.model_dir)))
}

/// The model of the project's newest succeeded run of one of `kinds`.
pub async fn newest_model(conn: &mut PgConnection, project: ProjectId, kinds: &[RunKind]) -> sqlx::Result<Option<MadeModel>> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: RunId", kind AS "kind: RunKind", model_dir AS "model_dir!" FROM runs
            WHERE project_id = $1 AND kind = ANY($2) AND status = 'succeeded' AND model_dir IS NOT NULL ORDER BY finished_at DESC LIMIT 1"#,
        project as ProjectId,
        kinds as &[RunKind],
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.kind, r.model_dir)))
}

/// An item to score: its prompt (as stored), its responses' ids and texts in order.
pub type ScoreItem = (Value, Option<String>, Vec<ResponseId>, Vec<String>);

/// Every item of the project with its responses, in import order.
pub fn score_items(conn: &mut PgConnection, project: ProjectId) -> impl Stream<Item = sqlx::Result<ScoreItem>> + '_ {
    sqlx::query!(
        r#"SELECT i.prompt, i.prompt_raw, array_agg(r.id ORDER BY r.position) AS "ids!: Vec<ResponseId>",
                  array_agg(r.text ORDER BY r.position) AS "texts!"
             FROM items i JOIN responses r ON r.item_id = i.id WHERE i.project_id = $1 GROUP BY i.id ORDER BY min(i.seq)"#,
        project as ProjectId,
    )
    .fetch(conn)
    .map_ok(|r| (r.prompt, r.prompt_raw, r.ids, r.texts))
}

/// The project's item with `external_id`: its id and prompt (as stored).
pub async fn item_by_external_id(conn: &mut PgConnection, project: ProjectId, external_id: &str) -> sqlx::Result<Option<(ItemId, Value, Option<String>)>> {
    let row = sqlx::query!(
        r#"SELECT id AS "id: ItemId", prompt, prompt_raw FROM items WHERE project_id = $1 AND external_id = $2"#,
        project as ProjectId,
        external_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.prompt, r.prompt_raw)))
}

/// Up to `limit` responses of an item (in order) from models other than `model`.
pub async fn other_responses(conn: &mut PgConnection, item: ItemId, model: &str, limit: i64) -> sqlx::Result<Vec<(String, String, Option<Value>)>> {
    let rows =
        sqlx::query!("SELECT model, text, metadata FROM responses WHERE item_id = $1 AND model <> $2 ORDER BY position LIMIT $3", item as ItemId, model, limit)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.model, r.text, r.metadata)).collect())
}
