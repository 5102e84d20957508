//! Frozen regression sets (see [`crate::domain::regression`]): a set and its pairs are written
//! once, when a lead freezes them (a trigger refuses any later change but which set is active),
//! and each rm, dpo and ppo run's figures on the active set are stored beside the run. Reads
//! take a project the caller has been checked to lead.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::regression::SetName;
use crate::domain::runs::RunKind;
use crate::domain::{ExportId, ProjectId, RegressionSetId, RunId, UserId};

/// A frozen set as pages and the API show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RegressionSet {
    pub id: RegressionSetId,
    pub name: String,
    /// The export whose test split it was frozen from.
    pub export_id: ExportId,
    pub pairs: i32,
    /// Distinct prompts among the pairs.
    pub prompts: i32,
    /// The set every rm, dpo and ppo run is measured on (one at most per project).
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// A set to freeze, with its pairs (prompt, chosen, rejected) in order.
pub struct NewSet<'a> {
    pub project: ProjectId,
    pub name: &'a SetName,
    pub export: ExportId,
    pub pairs: &'a [(String, String, String)],
    pub active: bool,
    pub by: UserId,
}

/// Records a set and its pairs (in the caller's transaction).
pub async fn insert(conn: &mut PgConnection, s: &NewSet<'_>) -> sqlx::Result<RegressionSetId> {
    let id = RegressionSetId::new();
    let prompts = s.pairs.iter().map(|p| p.0.as_str()).collect::<std::collections::HashSet<_>>().len() as i32;
    sqlx::query!(
        "INSERT INTO regression_sets (id, project_id, name, export_id, pairs, prompts, active, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id as RegressionSetId,
        s.project as ProjectId,
        s.name.as_str(),
        s.export as ExportId,
        s.pairs.len() as i32,
        prompts,
        s.active,
        s.by as UserId,
    )
    .execute(&mut *conn)
    .await?;
    let (p, c, r): (Vec<&str>, Vec<&str>, Vec<&str>) =
        (s.pairs.iter().map(|x| x.0.as_str()).collect(), s.pairs.iter().map(|x| x.1.as_str()).collect(), s.pairs.iter().map(|x| x.2.as_str()).collect());
    sqlx::query!(
        "INSERT INTO regression_pairs (set_id, n, prompt, chosen, rejected)
         SELECT $1, u.n - 1, u.p, u.c, u.r FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS u(p, c, r, n)",
        id as RegressionSetId,
        &p as &[&str],
        &c as &[&str],
        &r as &[&str],
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// Whether the project has a set called `name`.
pub async fn name_taken(conn: &mut PgConnection, project: ProjectId, name: &SetName) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM regression_sets WHERE project_id = $1 AND name = $2) AS "exists!""#,
        project as ProjectId,
        name.as_str()
    )
    .fetch_one(conn)
    .await
}

/// Whether the project has an active set.
pub async fn has_active(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM regression_sets WHERE project_id = $1 AND active) AS "exists!""#, project as ProjectId)
        .fetch_one(conn)
        .await
}

/// Makes `set` the project's active set; false when the project has no such set. Two
/// statements (the one-active index is checked row by row): run it in a transaction.
pub async fn activate(conn: &mut PgConnection, project: ProjectId, set: RegressionSetId) -> sqlx::Result<bool> {
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM regression_sets WHERE project_id = $1 AND id = $2) AS "exists!""#,
        project as ProjectId,
        set as RegressionSetId
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(false);
    }
    sqlx::query!("UPDATE regression_sets SET active = false WHERE project_id = $1 AND active AND id <> $2", project as ProjectId, set as RegressionSetId)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("UPDATE regression_sets SET active = true WHERE project_id = $1 AND id = $2 AND NOT active", project as ProjectId, set as RegressionSetId)
        .execute(conn)
        .await?;
    Ok(true)
}

/// `query_as!` for [`RegressionSet`]s (`s`: regression_sets) with `$rest` (literal SQL) appended.
macro_rules! select_sets {
    ($rest:tt, $($arg:expr),*) => {
        sqlx::query_as!(
            RegressionSet,
            r#"SELECT s.id AS "id: RegressionSetId", s.name, s.export_id AS "export_id: ExportId", s.pairs, s.prompts, s.active, s.created_at
                 FROM regression_sets s "# + $rest,
            $($arg),*
        )
    };
}

/// The project's sets, the newest first.
pub async fn list(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<RegressionSet>> {
    select_sets!("WHERE s.project_id = $1 ORDER BY s.created_at DESC, s.name", project as ProjectId).fetch_all(conn).await
}

/// The project's active set, if it has one.
pub async fn active(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Option<RegressionSet>> {
    select_sets!("WHERE s.project_id = $1 AND s.active", project as ProjectId).fetch_optional(conn).await
}

/// A set's pairs (prompt, chosen, rejected), in the order they were frozen.
pub async fn pairs(conn: &mut PgConnection, set: RegressionSetId) -> sqlx::Result<Vec<(String, String, String)>> {
    let rows =
        sqlx::query!("SELECT prompt, chosen, rejected FROM regression_pairs WHERE set_id = $1 ORDER BY n", set as RegressionSetId).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (r.prompt, r.chosen, r.rejected)).collect())
}

/// Stores a run's figures on a set (in the transaction that publishes the run).
pub async fn insert_results(conn: &mut PgConnection, run: RunId, set: RegressionSetId, metrics: &[String], values: &[f64], ns: &[i32]) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO regression_results (run_id, set_id, metric, value, n)
         SELECT $1, $2, u.m, u.v, u.n FROM UNNEST($3::text[], $4::float8[], $5::int4[]) AS u(m, v, n)
         ON CONFLICT (run_id, set_id, metric) DO UPDATE SET value = EXCLUDED.value, n = EXCLUDED.n",
        run as RunId,
        set as RegressionSetId,
        metrics,
        values,
        ns,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A run's figure on a set.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub set_id: RegressionSetId,
    pub metric: String,
    pub run_id: RunId,
    pub kind: RunKind,
    pub run_created_at: DateTime<Utc>,
    pub value: f64,
    pub n: i32,
}

/// Every figure of the project's runs (at most the newest 500 per set and figure), by set and
/// figure, the runs in creation order.
pub async fn results(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<ResultRow>> {
    sqlx::query_as!(
        ResultRow,
        r#"SELECT x.set_id AS "set_id!: RegressionSetId", x.metric AS "metric!", x.run_id AS "run_id!: RunId", x.kind AS "kind!: RunKind",
                  x.created_at AS "run_created_at!", x.value AS "value!", x.n AS "n!"
             FROM (SELECT rr.set_id, rr.metric, rr.run_id, r.kind, r.created_at, r.seq, rr.value, rr.n,
                          row_number() OVER (PARTITION BY rr.set_id, rr.metric ORDER BY r.seq DESC) AS k
                     FROM regression_results rr
                     JOIN runs r ON r.id = rr.run_id
                     JOIN regression_sets s ON s.id = rr.set_id
                    WHERE r.project_id = $1 AND s.project_id = $1) x
            WHERE x.k <= 500
            ORDER BY x.set_id, x.metric, x.seq"#,
        project as ProjectId
    )
    .fetch_all(conn)
    .await
}
