//! What the lead's dashboard is computed from: the item counts (live: leases change them), the
//! skips, and the judgements and items the judgement-derived figures come from (computed in
//! `domain::dashboard` and kept with the project's quality figures). Gold items and honeypots
//! (quality checks with a reference) are left out of the item counts, the judgement count and
//! the agreement between labellers; honeypots out of the models' figures.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::db::projects::Project;
use crate::domain::dashboard::{ItemModels, Ranked};
use crate::domain::{ItemId, ProjectId, UserId};

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub items_total: i64,
    pub items_complete: i64,
    pub items_in_progress: i64,
    pub judgements: i64,
    pub labellers: Vec<LabellerStats>,
    pub agreement_overall: Option<f64>,
    pub agreement_pairs: i64,
    pub models: Vec<ModelStats>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LabellerStats {
    pub email: String,
    pub judgements: i64,
    pub median_seconds: Option<f64>,
    pub skipped: i64,
    pub agreement: Option<f64>,
    pub agreement_pairs: i64,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelStats {
    pub model: String,
    pub wins: i64,
    pub losses: i64,
    pub ties: i64,
    pub win_rate: Option<f64>,
}

/// The item counts of the dashboard: every ordinary item, those with `overlap` submitted
/// tasks, and those under way (a submitted task or a live lease, not yet complete).
pub struct ItemCounts {
    pub total: i64,
    pub complete: i64,
    pub in_progress: i64,
}

pub async fn item_counts(conn: &mut PgConnection, p: &Project) -> sqlx::Result<ItemCounts> {
    sqlx::query_as!(
        ItemCounts,
        r#"WITH t AS (SELECT item_id, count(*) FILTER (WHERE status = 'submitted') AS done,
                             count(*) FILTER (WHERE status = 'leased' AND expires_at > now()) AS live
                      FROM tasks WHERE project_id = $1 GROUP BY item_id)
           SELECT count(*) AS "total!", count(*) FILTER (WHERE COALESCE(t.done, 0) >= $2) AS "complete!",
                  count(*) FILTER (WHERE COALESCE(t.done, 0) < $2 AND COALESCE(t.done, 0) + COALESCE(t.live, 0) > 0) AS "in_progress!"
           FROM items i LEFT JOIN t ON t.item_id = i.id WHERE i.project_id = $1 AND i.gold_ranks IS NULL"#,
        p.id as ProjectId,
        p.overlap.get() as i64,
    )
    .fetch_one(conn)
    .await
}

/// Skipped tasks by labeller.
pub async fn skips(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<(UserId, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT user_id AS "user_id: UserId", count(*) AS "n!" FROM tasks WHERE project_id = $1 AND status = 'skipped' GROUP BY user_id"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.n)).collect())
}

/// Every judgement of the project as the dashboard counts it.
pub async fn ranked(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Ranked>> {
    sqlx::query_as!(
        Ranked,
        r#"SELECT item_id AS "item: ItemId", user_id AS "user: UserId", source = 'labeller' AS "labeller!", ranks, time_on_task_ms AS time_ms
           FROM judgements WHERE project_id = $1"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await
}

/// Every item's kind and the model of each response, by position.
pub async fn item_models(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<HashMap<ItemId, ItemModels>> {
    let rows = sqlx::query!(
        r#"SELECT i.id AS "id: ItemId", i.gold_ranks IS NOT NULL AS "gold!", i.honeypot_of IS NOT NULL AS "honeypot!", COALESCE(m.models, '{}') AS "models!"
           FROM items i LEFT JOIN (SELECT r.item_id, array_agg(r.model ORDER BY r.position) AS models FROM responses r JOIN items ri ON ri.id = r.item_id
                                   WHERE ri.project_id = $1 GROUP BY r.item_id) m ON m.item_id = i.id
           WHERE i.project_id = $1"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, ItemModels { gold: r.gold, honeypot: r.honeypot, models: r.models })).collect())
}
