//! Training runs, metrics, logs, and what reward models said about responses. Reads for the
//! web are scoped to the project's leads (or admins) in the SQL itself; the worker's writes
//! (`db::worker`) carry its fence and change nothing once another claim has raised it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use rewardlab_protocol::MetricEvent;

use crate::domain::leaderboard::{Cell, Entry};
use crate::domain::runs::{RunKind, RunSpec, RunStatus};
use crate::domain::{ExportId, ItemId, JudgementId, ProjectId, RunId, ScheduleId, UserId};

/// A run to queue: alone, or a step of a schedule's chain after the one before.
pub struct NewRun {
    pub project: ProjectId,
    pub spec: RunSpec,
    pub after_run: Option<RunId>,
    pub schedule: Option<ScheduleId>,
    pub by: Option<UserId>,
}

pub async fn insert(conn: &mut PgConnection, r: &NewRun) -> sqlx::Result<RunId> {
    let id = RunId(uuid::Uuid::new_v4());
    sqlx::query!(
        "INSERT INTO runs (id, project_id, kind, config, input, after_run, schedule_id, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id as RunId,
        r.project as ProjectId,
        r.spec.kind as RunKind,
        Value::Object(r.spec.config.clone()),
        r.spec.input.to_json(),
        r.after_run as Option<RunId>,
        r.schedule as Option<ScheduleId>,
        r.by as Option<UserId>,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// A run as the web shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Run {
    pub id: RunId,
    pub project_id: ProjectId,
    pub slug: String,
    pub kind: RunKind,
    #[schema(value_type = Object)]
    pub config: Value,
    #[schema(value_type = Object)]
    pub input: Value,
    pub export_id: Option<ExportId>,
    pub after_run: Option<RunId>,
    pub schedule_id: Option<ScheduleId>,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub attempts: i32,
    pub model_dir: Option<String>,
    pub resumed_from: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
}

impl Run {
    pub fn short(&self) -> String {
        self.id.0.simple().to_string()[..8].to_string()
    }
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }
    pub fn config_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.config).unwrap_or_default()
    }
    pub fn input_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.input).unwrap_or_default()
    }
    pub fn duration(&self) -> String {
        match (self.started_at, self.finished_at.or_else(|| self.started_at.map(|_| Utc::now()))) {
            (Some(a), Some(b)) => format!("{:.0} s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => "–".into(),
        }
    }
}

/// `query_as!` for [`Run`]s (`r`: runs, `p`: projects) with `$rest` (literal SQL: a WHERE clause and
/// what follows) appended.
macro_rules! select_runs {
    ($rest:tt, $($arg:expr),*) => {
        sqlx::query_as!(
            Run,
            r#"SELECT r.id, r.project_id, p.slug, r.kind AS "kind: RunKind", r.config, r.input, r.export_id AS "export_id: ExportId",
                      r.after_run AS "after_run: RunId", r.schedule_id AS "schedule_id: ScheduleId",
                      r.status AS "status: RunStatus", r.created_at, r.started_at, r.finished_at, r.worker, r.attempts, r.model_dir,
                      r.resumed_from, r.error, r.summary
                 FROM runs r JOIN projects p ON p.id = r.project_id "# + $rest,
            $($arg),*
        )
    };
}

/// The run `id` if the caller leads its project, or is a site admin.
pub async fn get_for_lead(conn: &mut PgConnection, id: RunId, user: UserId) -> sqlx::Result<Option<Run>> {
    select_runs!(
        "WHERE r.id = $1 AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS
            (SELECT 1 FROM memberships m WHERE m.project_id = r.project_id AND m.user_id = u.id AND m.role = 'lead')))",
        id as RunId,
        user as UserId
    )
    .fetch_optional(conn)
    .await
}

/// Runs of a project (the caller has been checked as its lead).
pub async fn list(conn: &mut PgConnection, project: ProjectId, limit: i64) -> sqlx::Result<Vec<Run>> {
    select_runs!("WHERE r.project_id = $1 ORDER BY r.seq DESC LIMIT $2", project as ProjectId, limit).fetch_all(conn).await
}

/// Whether `id` is a run of the project, of one of `kinds` (any kind when empty).
pub async fn is_project_run(conn: &mut PgConnection, project: ProjectId, id: RunId, kinds: &[RunKind]) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1 AND project_id = $2 AND (cardinality($3::run_kind[]) = 0 OR kind = ANY($3))) AS "exists!""#,
        id as RunId,
        project as ProjectId,
        kinds as &[RunKind],
    )
    .fetch_one(conn)
    .await
}

/// Whether `id` is an export of the project.
pub async fn is_project_export(conn: &mut PgConnection, project: ProjectId, id: ExportId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM exports WHERE id = $1 AND project_id = $2) AS "exists!""#, id as ExportId, project as ProjectId)
        .fetch_one(conn)
        .await
}

/// Whether a run of the project of one of `kinds` made its model or is queued or running to.
pub async fn has_model_maker(conn: &mut PgConnection, project: ProjectId, kinds: &[RunKind]) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM runs WHERE project_id = $1 AND kind = ANY($2) AND status IN ('queued', 'running', 'succeeded')) AS "exists!""#,
        project as ProjectId,
        kinds as &[RunKind],
    )
    .fetch_one(conn)
    .await
}

/// The ensemble size (`config.ensemble`, 1 when unset) of the project's rm run `run`, or with
/// none of its newest rm run that made a model or is queued or running to; `None` when there is
/// no such run.
pub async fn rm_ensemble(conn: &mut PgConnection, project: ProjectId, run: Option<RunId>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE((config->>'ensemble')::bigint, 1) AS "members!" FROM runs
            WHERE project_id = $1 AND kind = 'rm' AND ($2::uuid IS NULL AND status IN ('queued', 'running', 'succeeded') OR id = $2)
            ORDER BY seq DESC LIMIT 1"#,
        project as ProjectId,
        run as Option<RunId>,
    )
    .fetch_optional(conn)
    .await
}

/// Cancels a queued or running run of a project the caller leads, and the runs chained after
/// it. A running run's worker sees the status at its next heartbeat and stops its trainer.
pub async fn cancel(conn: &mut PgConnection, id: RunId, user: UserId) -> sqlx::Result<Option<u64>> {
    let Some(run) = get_for_lead(conn, id, user).await? else { return Ok(None) };
    let done = sqlx::query!(
        "WITH RECURSIVE chain(id) AS (SELECT $1::uuid UNION SELECT r.id FROM runs r JOIN chain c ON r.after_run = c.id)
         UPDATE runs SET status = 'cancelled', finished_at = now(), error = COALESCE(error, 'cancelled by a lead')
         WHERE id IN (SELECT id FROM chain) AND status IN ('queued', 'running')",
        run.id as RunId,
    )
    .execute(conn)
    .await?;
    Ok(Some(done.rows_affected()))
}

/// One metric event (the highest fence's value for each event and step).
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub event: String,
    pub step: Option<i64>,
    pub data: Value,
}

pub async fn metrics(conn: &mut PgConnection, run: RunId) -> sqlx::Result<Vec<MetricRow>> {
    sqlx::query_as!(
        MetricRow,
        r#"SELECT event AS "event!", step, data AS "data!" FROM (
             SELECT DISTINCT ON (event, COALESCE(step, -id)) event, step, data, id FROM run_metrics WHERE run_id = $1
             ORDER BY event, COALESCE(step, -id), fence DESC, id DESC) m
         ORDER BY step NULLS LAST, id"#,
        run as RunId,
    )
    .fetch_all(conn)
    .await
}

/// The last value of every figure of each run (by event: `step.loss`, `eval.accuracy`, …),
/// from the newest line of each event the trainer's protocol knows.
pub async fn last_values(conn: &mut PgConnection, runs: &[RunId]) -> sqlx::Result<std::collections::HashMap<RunId, serde_json::Map<String, Value>>> {
    let rows = sqlx::query!(
        "SELECT DISTINCT ON (run_id, event) run_id, event, data FROM run_metrics WHERE run_id = ANY($1) ORDER BY run_id, event, id DESC",
        runs as &[RunId],
    )
    .fetch_all(conn)
    .await?;
    let mut out: std::collections::HashMap<RunId, serde_json::Map<String, Value>> = runs.iter().map(|r| (*r, serde_json::Map::new())).collect();
    for row in rows {
        // Events this build does not know are left out.
        let Some(event) = MetricEvent::from_value(&row.data) else { continue };
        let values = out.entry(RunId(row.run_id)).or_default();
        for (name, v) in event.figures() {
            values.insert(format!("{}.{name}", event.name()), Value::from(v));
        }
    }
    Ok(out)
}

/// The pace of a run's current attempt (its highest fence): its first and last step (or PPO
/// iteration) with seconds since the run was created, and the steps the trainer plans.
pub async fn pace(conn: &mut PgConnection, run: RunId) -> sqlx::Result<Option<crate::domain::runs::progress::Pace>> {
    let row = sqlx::query!(
        r#"WITH m AS (SELECT m.step, extract(epoch FROM m.at - r.created_at)::float8 AS t, m.data FROM run_metrics m JOIN runs r ON r.id = m.run_id
                    WHERE m.run_id = $1 AND m.event IN ('step', 'iteration') AND m.step IS NOT NULL
                      AND m.fence = (SELECT max(fence) FROM run_metrics WHERE run_id = $1))
         SELECT (SELECT step FROM m ORDER BY step LIMIT 1) AS s0, (SELECT t FROM m ORDER BY step LIMIT 1) AS t0,
                (SELECT step FROM m ORDER BY step DESC LIMIT 1) AS s1, (SELECT t FROM m ORDER BY step DESC LIMIT 1) AS t1,
                (SELECT max(COALESCE(data->>'total_steps', data->>'total_iterations')::bigint) FROM m) AS planned"#,
        run as RunId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| Some(crate::domain::runs::progress::Pace { first: (r.s0?, r.t0?), last: (r.s1?, r.t1?), planned: r.planned })))
}

pub async fn log_tail(conn: &mut PgConnection, run: RunId, lines: i64) -> sqlx::Result<Vec<String>> {
    let mut v: Vec<String> =
        sqlx::query_scalar!("SELECT line FROM run_logs WHERE run_id = $1 ORDER BY id DESC LIMIT $2", run as RunId, lines).fetch_all(conn).await?;
    v.reverse();
    Ok(v)
}

/// Model-versus-model comparisons of a project: every pair of differently-named responses
/// a judgement ranked, aggregated per (model, model); honeypots (with their planted
/// response) are left out.
pub async fn model_cells(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Cell>> {
    let rows = sqlx::query!(
        r#"SELECT a.model AS a, b.model AS b,
                count(*) FILTER (WHERE j.ranks[a.position + 1] < j.ranks[b.position + 1]) AS "a_wins!",
                count(*) FILTER (WHERE j.ranks[a.position + 1] > j.ranks[b.position + 1]) AS "b_wins!",
                count(*) FILTER (WHERE j.ranks[a.position + 1] = j.ranks[b.position + 1]) AS "ties!"
         FROM judgements j
         JOIN responses a ON a.item_id = j.item_id
         JOIN responses b ON b.item_id = j.item_id AND a.position < b.position AND a.model <> b.model
         WHERE j.project_id = $1 AND j.ranks IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM items h WHERE h.id = j.item_id AND h.honeypot_of IS NOT NULL)
         GROUP BY 1, 2"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await?;
    // Fold (a, b) and (b, a) into one cell.
    let mut cells: Vec<Cell> = Vec::new();
    for row in rows {
        let (a, b, aw, bw, t) = (row.a, row.b, row.a_wins, row.b_wins, row.ties);
        let (a, b, aw, bw) = if a <= b { (a, b, aw, bw) } else { (b, a, bw, aw) };
        match cells.iter_mut().find(|c| c.a == a && c.b == b) {
            Some(c) => {
                c.a_wins += aw as f64;
                c.b_wins += bw as f64;
                c.ties += t as f64;
            }
            None => cells.push(Cell { a, b, a_wins: aw as f64, b_wins: bw as f64, ties: t as f64 }),
        }
    }
    Ok(cells)
}

/// The leaderboard of a project, with where each model came from (the run that generated it).
pub async fn leaderboard(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<(Entry, Option<RunId>)>> {
    let cells = model_cells(conn, project).await?;
    let total: f64 = cells.iter().map(|c| c.a_wins + c.b_wins + c.ties).sum();
    let rounds = ((2_000_000.0 / total.max(1.0)) as usize).clamp(20, 200);
    let board = crate::domain::leaderboard::leaderboard(&cells, rounds, 0x5eed);
    let models: Vec<&str> = board.iter().map(|e| e.model.as_str()).collect();
    let runs = sqlx::query!(
        "SELECT DISTINCT ON (r.model) r.model, r.metadata->>'run_id' AS run FROM responses r JOIN items i ON i.id = r.item_id
         WHERE i.project_id = $1 AND r.model = ANY($2) AND r.metadata ? 'run_id' ORDER BY r.model",
        project as ProjectId,
        &models as &[&str],
    )
    .fetch_all(conn)
    .await?;
    Ok(board
        .into_iter()
        .map(|e| {
            let run = runs.iter().find(|r| r.model == e.model).and_then(|r| r.run.as_deref()).and_then(|r| r.parse().ok());
            (e, run)
        })
        .collect())
}

/// How often the newest reward model of a project orders a human comparison the same way.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RmAgreement {
    pub run_id: RunId,
    pub overall: Option<f64>,
    pub pairs: i64,
    pub per_labeller: Vec<(String, Option<f64>, i64)>,
    pub disagreements: Vec<Disagreement>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Disagreement {
    pub judgement_id: JudgementId,
    pub item_id: ItemId,
    pub labeller: String,
    #[serde(skip)]
    pub prompt_json: Value,
    #[serde(skip)]
    pub prompt_raw: Option<String>,
    pub preferred: String,
    pub other: String,
    pub preferred_reward: f64,
    pub other_reward: f64,
}

impl Disagreement {
    pub fn prompt(&self) -> String {
        self.prompt_raw.clone().unwrap_or_else(|| {
            crate::domain::import::prompt_text(&serde_json::from_value::<Vec<crate::domain::import::Turn>>(self.prompt_json.clone()).unwrap_or_default())
        })
    }
    pub fn gap(&self) -> f64 {
        self.other_reward - self.preferred_reward
    }
}

/// `query_as!` over the human comparisons (non-tied pairs) of project `$1` with both responses
/// scored by run `$2`, as `s`: `$head` selects from them, `$tail` follows.
macro_rules! over_scored_pairs {
    ($record:path, $head:tt, $tail:tt, $project:expr, $run:expr) => {
        sqlx::query_as!(
            $record,
            $head
                + r#" FROM (
                SELECT j.id AS judgement_id, j.item_id, COALESCE(u.email, 'imported') AS labeller, i.prompt AS prompt_json, i.prompt_raw,
                       a.text AS preferred, b.text AS other, sa.reward AS preferred_reward, sb.reward AS other_reward
                FROM judgements j
                JOIN items i ON i.id = j.item_id
                LEFT JOIN users u ON u.id = j.user_id
                JOIN responses a ON a.item_id = j.item_id
                JOIN responses b ON b.item_id = j.item_id AND j.ranks[a.position + 1] < j.ranks[b.position + 1]
                JOIN response_scores sa ON sa.response_id = a.id AND sa.run_id = $2
                JOIN response_scores sb ON sb.response_id = b.id AND sb.run_id = $2
                WHERE j.project_id = $1 AND j.ranks IS NOT NULL) s "#
                + $tail,
            $project as ProjectId,
            $run as RunId
        )
    };
}

/// One labeller's comparisons the reward model orders the same way.
struct LabellerAgreement {
    labeller: String,
    agree: i64,
    pairs: i64,
}

pub async fn rm_agreement(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Option<RmAgreement>> {
    let run = sqlx::query_scalar!(
        r#"SELECT r.id AS "id: RunId" FROM runs r WHERE r.project_id = $1 AND r.kind = 'rm' AND r.status = 'succeeded'
             AND EXISTS (SELECT 1 FROM response_scores s WHERE s.run_id = r.id) ORDER BY r.finished_at DESC LIMIT 1"#,
        project as ProjectId,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(run) = run else { return Ok(None) };
    let per: Vec<LabellerAgreement> = over_scored_pairs!(
        LabellerAgreement,
        r#"SELECT labeller AS "labeller!", count(*) FILTER (WHERE preferred_reward > other_reward) AS "agree!", count(*) AS "pairs!""#,
        "GROUP BY labeller ORDER BY labeller",
        project,
        run
    )
    .fetch_all(&mut *conn)
    .await?;
    let (agree, pairs) = per.iter().fold((0, 0), |(a, n), l| (a + l.agree, n + l.pairs));
    let disagreements: Vec<Disagreement> = over_scored_pairs!(
        Disagreement,
        r#"SELECT judgement_id AS "judgement_id!", item_id AS "item_id!", labeller AS "labeller!", prompt_json AS "prompt_json!", prompt_raw,
                  preferred AS "preferred!", other AS "other!", preferred_reward AS "preferred_reward!", other_reward AS "other_reward!""#,
        "WHERE other_reward > preferred_reward ORDER BY other_reward - preferred_reward DESC LIMIT 20",
        project,
        run
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(RmAgreement {
        run_id: run,
        overall: (pairs > 0).then(|| agree as f64 / pairs as f64),
        pairs,
        per_labeller: per.into_iter().map(|l| (l.labeller, (l.pairs > 0).then(|| l.agree as f64 / l.pairs as f64), l.pairs)).collect(),
        disagreements,
    }))
}
