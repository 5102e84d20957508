//! The lead's dashboard figures, computed in SQL from the immutable judgements; gold items and
//! honeypots (quality checks with a reference) are left out of the item counts, the judgement
//! count and the agreement between labellers.

use sqlx::PgConnection;

use crate::db::projects::Project;
use crate::domain::ProjectId;

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

pub async fn dashboard(conn: &mut PgConnection, p: &Project) -> sqlx::Result<Dashboard> {
    let counts = sqlx::query!(
        r#"WITH c AS (SELECT i.id, count(t.id) FILTER (WHERE t.status = 'submitted') AS done,
                             count(t.id) FILTER (WHERE t.status = 'leased' AND t.expires_at > now()) AS live
                      FROM items i LEFT JOIN tasks t ON t.item_id = i.id WHERE i.project_id = $1 AND i.gold_ranks IS NULL GROUP BY i.id)
           SELECT count(*) AS "total!", count(*) FILTER (WHERE done >= $2) AS "complete!",
                  count(*) FILTER (WHERE done < $2 AND done + live > 0) AS "in_progress!",
                  (SELECT count(*) FROM judgements j WHERE j.project_id = $1 AND j.source = 'labeller'
                     AND NOT EXISTS (SELECT 1 FROM items g WHERE g.id = j.item_id AND g.gold_ranks IS NOT NULL)) AS "judgements!"
           FROM c"#,
        p.id as ProjectId,
        p.overlap.get() as i64,
    )
    .fetch_one(&mut *conn)
    .await?;
    let (items_total, items_complete, items_in_progress, judgements) = (counts.total, counts.complete, counts.in_progress, counts.judgements);
    let labellers = labellers(conn, p).await?;
    let (agreed, pairs): (i64, i64) =
        labellers.iter().fold((0, 0), |(a, n), l| (a + (l.agreement.unwrap_or(0.0) * l.agreement_pairs as f64).round() as i64, n + l.agreement_pairs));
    let models = models(conn, p).await?;
    Ok(Dashboard {
        items_total,
        items_complete,
        items_in_progress,
        judgements,
        agreement_overall: (pairs > 0).then(|| agreed as f64 / pairs as f64),
        agreement_pairs: pairs / 2,
        labellers,
        models,
    })
}

/// Per labeller: judgements, median time, skips, and how often their pairwise preferences
/// agree with other labellers' on the same items (ties count as their own answer).
pub async fn labellers(conn: &mut PgConnection, p: &Project) -> sqlx::Result<Vec<LabellerStats>> {
    sqlx::query_as!(
        LabellerStats,
        r#"WITH j AS (SELECT user_id, item_id, ranks FROM judgements WHERE project_id = $1 AND source = 'labeller' AND ranks IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM items g WHERE g.id = judgements.item_id AND g.gold_ranks IS NOT NULL)),
         cmp AS (SELECT a.user_id, sign(a.ranks[x] - a.ranks[y]) = sign(b.ranks[x] - b.ranks[y]) AS agree
                 FROM j a JOIN j b ON a.item_id = b.item_id AND a.user_id <> b.user_id
                 CROSS JOIN LATERAL generate_series(1, array_length(a.ranks, 1)) x
                 CROSS JOIN LATERAL generate_series(x + 1, array_length(a.ranks, 1)) y),
         agr AS (SELECT user_id, count(*) AS n, avg(agree::int)::float8 AS rate FROM cmp GROUP BY user_id),
         per AS (SELECT user_id, count(*) AS n, (percentile_cont(0.5) WITHIN GROUP (ORDER BY time_on_task_ms) / 1000.0)::float8 AS med
                 FROM judgements WHERE project_id = $1 AND source = 'labeller' GROUP BY user_id),
         sk AS (SELECT user_id, count(*) AS n FROM tasks WHERE project_id = $1 AND status = 'skipped' GROUP BY user_id)
         SELECT u.email, COALESCE(per.n, 0) AS "judgements!", per.med AS median_seconds, COALESCE(sk.n, 0) AS "skipped!",
                agr.rate AS agreement, COALESCE(agr.n, 0) AS "agreement_pairs!"
         FROM users u LEFT JOIN per ON per.user_id = u.id LEFT JOIN sk ON sk.user_id = u.id LEFT JOIN agr ON agr.user_id = u.id
         WHERE per.n IS NOT NULL OR sk.n IS NOT NULL ORDER BY 2 DESC, u.email"#,
        p.id as ProjectId,
    )
    .fetch_all(conn)
    .await
}

/// Win rates of the models whose responses were compared (a tie counts half; honeypots left out).
async fn models(conn: &mut PgConnection, p: &Project) -> sqlx::Result<Vec<ModelStats>> {
    sqlx::query_as!(
        ModelStats,
        r#"WITH r AS (SELECT j.id, res.position, res.model, j.ranks[res.position + 1] AS rank
                    FROM judgements j JOIN responses res ON res.item_id = j.item_id WHERE j.project_id = $1 AND j.ranks IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM items h WHERE h.id = j.item_id AND h.honeypot_of IS NOT NULL)),
         m AS (SELECT a.model, count(*) FILTER (WHERE a.rank < b.rank) AS wins, count(*) FILTER (WHERE a.rank > b.rank) AS losses,
                      count(*) FILTER (WHERE a.rank = b.rank) AS ties
               FROM r a JOIN r b ON a.id = b.id AND a.position <> b.position GROUP BY a.model)
         SELECT model AS "model!", wins AS "wins!", losses AS "losses!", ties AS "ties!",
                ((wins + 0.5 * ties) / NULLIF(wins + losses + ties, 0))::float8 AS win_rate
         FROM m ORDER BY win_rate DESC NULLS LAST, model"#,
        p.id as ProjectId,
    )
    .fetch_all(conn)
    .await
}
