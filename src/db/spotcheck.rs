//! Spot checks (issue 15): the PPO run a spot check samples, people's verdicts on the blind
//! pairs it imported, and the gate a schedule's next step waits on. Callers have checked the
//! project (its lead, or the worker's claim); every query is scoped by it.

use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::runs::RunStatus;
use crate::domain::{ExportId, ProjectId, RunId, ScheduleId};

/// A PPO run as a spot check sees it.
#[derive(Debug, Clone)]
pub struct PpoRun {
    pub id: RunId,
    pub status: RunStatus,
    /// Its configuration's `kl_grid` (None: it kept no grid checkpoints).
    pub kl_grid: Option<f64>,
    pub model_dir: Option<String>,
    pub export_id: Option<ExportId>,
    /// Its input, with the models the worker resolved (`resolved.policy`: the start).
    pub input: Value,
}

/// The project's PPO run `id`, if it is one.
pub async fn ppo_run(conn: &mut PgConnection, project: ProjectId, id: RunId) -> sqlx::Result<Option<PpoRun>> {
    sqlx::query_as!(
        PpoRun,
        r#"SELECT id AS "id: RunId", status AS "status: RunStatus", (config->>'kl_grid')::float8 AS kl_grid, model_dir,
                  export_id AS "export_id: ExportId", input
             FROM runs WHERE id = $1 AND project_id = $2 AND kind = 'ppo'"#,
        id as RunId,
        project as ProjectId,
    )
    .fetch_optional(conn)
    .await
}

/// One judgement of a spot check's pair: the grid checkpoint, and the ranks (1 = best) people
/// gave the policy's and the start's response.
pub struct Verdict {
    pub checkpoint: String,
    pub policy_rank: i16,
    pub start_rank: i16,
}

/// Every judgement of the pairs spot check `run` imported into `project`.
pub async fn verdicts(conn: &mut PgConnection, project: ProjectId, run: RunId) -> sqlx::Result<Vec<Verdict>> {
    sqlx::query_as!(
        Verdict,
        r#"SELECT i.metadata->>'grid_checkpoint' AS "checkpoint!", j.ranks[p.position + 1] AS "policy_rank!", j.ranks[s.position + 1] AS "start_rank!"
             FROM items i
             JOIN judgements j ON j.item_id = i.id
             JOIN responses p ON p.item_id = i.id AND p.metadata->>'spotcheck' = 'policy'
             JOIN responses s ON s.item_id = i.id AND s.metadata->>'spotcheck' = 'start'
            WHERE i.project_id = $1 AND i.metadata ? 'spotcheck_run' AND i.metadata->>'spotcheck_run' = $2
              AND j.ranks IS NOT NULL AND j.ranks[p.position + 1] IS NOT NULL AND j.ranks[s.position + 1] IS NOT NULL"#,
        project as ProjectId,
        run.to_string(),
    )
    .fetch_all(conn)
    .await
}

/// A gated spot check some run waits on: succeeded, its gate not yet passed, a run chained
/// after it still queued.
pub struct Held {
    pub spotcheck: RunId,
    pub project_id: ProjectId,
    pub config: Value,
    pub summary: Option<Value>,
    /// The schedule whose chain waits, if any.
    pub schedule_id: Option<ScheduleId>,
}

macro_rules! held {
    ($where:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            Held,
            r#"SELECT s.id AS "spotcheck: RunId", s.project_id AS "project_id: ProjectId", s.config, s.summary, s.schedule_id AS "schedule_id: ScheduleId"
                 FROM runs s
                WHERE s.kind = 'spotcheck' AND s.status = 'succeeded' AND s.gate_passed_at IS NULL AND s.config->>'gate_win_rate' IS NOT NULL
                  AND EXISTS (SELECT 1 FROM runs n WHERE n.after_run = s.id AND n.status = 'queued') "# + $where,
            $($arg),*
        )
    };
}

/// Every gated spot check a queued run waits on.
pub async fn all_held(conn: &mut PgConnection) -> sqlx::Result<Vec<Held>> {
    held!("ORDER BY s.seq").fetch_all(conn).await
}

/// The gated spot checks a queued run of `project` waits on.
pub async fn held_in(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Held>> {
    held!("AND s.project_id = $1 ORDER BY s.seq", project as ProjectId).fetch_all(conn).await
}

/// Opens a spot check's gate: the runs chained after it become claimable.
pub async fn pass_gate(conn: &mut PgConnection, run: RunId) -> sqlx::Result<()> {
    sqlx::query!("UPDATE runs SET gate_passed_at = now() WHERE id = $1 AND gate_passed_at IS NULL", run as RunId).execute(conn).await.map(drop)
}

/// The newest succeeded spot check of PPO run `ppo` in `project`.
pub async fn newest_of(conn: &mut PgConnection, project: ProjectId, ppo: RunId) -> sqlx::Result<Option<RunId>> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id: RunId" FROM runs
            WHERE project_id = $1 AND kind = 'spotcheck' AND status = 'succeeded' AND summary->'spotcheck'->>'ppo_run' = $2
            ORDER BY finished_at DESC LIMIT 1"#,
        project as ProjectId,
        ppo.to_string(),
    )
    .fetch_optional(conn)
    .await
}
