//! Review and send-back: the review stream (unreviewed ordinary judgements, sampled at the
//! project's rate or put first), reviews (append-only; a rejection also marks the judgement's
//! task 'rejected' and reopens its item for someone else), adjudications, and a labeller's
//! rejected work. Every read and write for a reviewer is scoped in the query to projects the
//! caller reviews (its leads and reviewers, or a site admin).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use crate::domain::{ItemId, JudgementId, ProjectId, ResponseId, TaskId, UserId};

/// A judgement in the review stream, with what the labeller was shown.
#[derive(Debug, Clone)]
pub struct StreamRow {
    pub id: JudgementId,
    pub item_id: ItemId,
    pub user_id: UserId,
    pub labeller: String,
    pub external_id: String,
    pub prompt: Value,
    pub prompt_raw: Option<String>,
    pub instructions: Option<String>,
    pub ranks: Option<Vec<i16>>,
    pub display_order: Option<Vec<i32>>,
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub demonstration: Option<String>,
    pub flags: Value,
    pub rating: Option<i16>,
    pub comment: String,
    pub time_on_task_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub ids: Vec<ResponseId>,
    pub texts: Vec<String>,
    /// Why other labellers skipped the item.
    pub skips: Vec<String>,
    pub low: bool,
    pub flagged: bool,
    /// How many judgements the whole stream holds (the same on every row).
    pub pending: i64,
}

/// A review-stream query: `$head`, then the stream's candidates (the `FROM judgements j WHERE …`
/// below, literal SQL shared by [`stream`] and [`pending`] so they cannot drift apart), then
/// `$tail`, given to `$query!` after `$lead` (`query_as!`'s type). Binds `$1` the project, `$2`
/// the rate, `$3` the low-agreement items and `$4` the flagged labellers; `$5` on are the
/// caller's. The candidates are unreviewed ordinary labeller judgements (not on gold items,
/// quality checks, excluded or adjudicated items) on `$3` items or by `$4` labellers, or drawn
/// at `$2` (see [`crate::domain::review::sample_point`]). The sample reads only the sampled
/// share of the project's judgements through the index `judgements_review_sample` (migration
/// 0014): the point, an integer `x`, is compared as `x < ⌈rate · 2³²⌉`, the same as
/// `x / 2³² < rate`.
macro_rules! with_candidates {
    ($($query:ident)::+, [$($lead:tt)*], $head:tt, $tail:tt, $($arg:expr),* $(,)?) => {
        $($query)::+!(
            $($lead)*
            $head
                + r#" FROM judgements j
                     WHERE j.project_id = $1 AND j.source = 'labeller' AND j.user_id IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM items g WHERE g.id = j.item_id AND g.project_id = $1 AND g.gold_ranks IS NOT NULL)
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)
                       AND NOT EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id)
                       AND NOT EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = j.item_id)
                       AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = j.item_id)
                       AND (j.item_id = ANY($3) OR j.user_id = ANY($4) OR ('x' || right(j.id::text, 8))::bit(32)::bigint < ceil($2::float8 * 4294967296.0)::bigint) "#
                + $tail,
            $($arg),*
        )
    };
}

/// Up to `limit` judgements of the project for review, most urgent first: the stream's
/// candidates (see `with_candidates!`) on low-agreement items, then by flagged labellers, then
/// the sample, each in the order they were stored. Empty unless `reviewer` reviews the project.
/// Each row also says how many the whole stream holds.
pub async fn stream(
    conn: &mut PgConnection,
    project: ProjectId,
    reviewer: UserId,
    rate: f64,
    low: &[ItemId],
    flagged: &[UserId],
    limit: i64,
) -> sqlx::Result<Vec<StreamRow>> {
    with_candidates!(
        sqlx::query_as,
        [StreamRow,],
        r#"WITH c AS (SELECT j.id, j.item_id = ANY($3) AS low, j.user_id = ANY($4) AS flagged, j.seq"#,
        r#"AND EXISTS (SELECT 1 FROM users u WHERE u.id = $5 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role IN ('lead', 'reviewer'))))),
           n AS (SELECT count(*) AS pending FROM c),
           top AS (SELECT * FROM c ORDER BY c.low DESC, c.flagged DESC, c.seq LIMIT $6)
           SELECT j.id, j.item_id, j.user_id AS "user_id!: UserId", u.pseudonym AS labeller, i.external_id, i.prompt, i.prompt_raw, i.instructions,
                  j.ranks, j.display_order, j.strength, j.both_bad, j.demonstration, j.flags, j.rating, j.comment, j.time_on_task_ms, j.created_at,
                  rs.ids AS "ids!: Vec<ResponseId>", rs.texts AS "texts!",
                  COALESCE((SELECT array_agg(t.skip_reason ORDER BY t.leased_at) FROM tasks t WHERE t.item_id = j.item_id AND t.status = 'skipped' AND t.skip_reason IS NOT NULL), '{}') AS "skips!",
                  c.low AS "low!", c.flagged AS "flagged!", n.pending AS "pending!"
           FROM top c CROSS JOIN n JOIN judgements j ON j.id = c.id JOIN items i ON i.id = j.item_id JOIN users u ON u.id = j.user_id
           CROSS JOIN LATERAL (SELECT COALESCE(array_agg(r.id ORDER BY r.position), '{}') AS ids, COALESCE(array_agg(r.text ORDER BY r.position), '{}') AS texts
                               FROM responses r WHERE r.item_id = j.item_id) rs
           ORDER BY c.low DESC, c.flagged DESC, c.seq"#,
        project as ProjectId,
        rate,
        low as &[ItemId],
        flagged as &[UserId],
        reviewer as UserId,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// How many judgements the stream holds now (as [`stream`] without its limit).
pub async fn pending(conn: &mut PgConnection, project: ProjectId, rate: f64, low: &[ItemId], flagged: &[UserId]) -> sqlx::Result<i64> {
    with_candidates!(sqlx::query_scalar, [], r#"SELECT count(*) AS "n!""#, "", project as ProjectId, rate, low as &[ItemId], flagged as &[UserId])
        .fetch_one(conn)
        .await
}

/// An ordinary labeller judgement of the project as a review sees it: its item and task and
/// its current state ('accepted', 'rejected' or NULL), locked against a concurrent review.
/// `None` unless `reviewer` reviews the project.
pub struct ReviewTarget {
    pub item_id: ItemId,
    pub task_id: Option<TaskId>,
    pub user_id: Option<UserId>,
    pub state: Option<String>,
}

pub async fn target(conn: &mut PgConnection, project: ProjectId, reviewer: UserId, judgement: JudgementId) -> sqlx::Result<Option<ReviewTarget>> {
    sqlx::query_as!(
        ReviewTarget,
        r#"SELECT j.item_id, j.task_id AS "task_id: TaskId", j.user_id AS "user_id: UserId",
                  (SELECT CASE WHEN bool_or(r.decision = 'rejected') THEN 'rejected' ELSE 'accepted' END FROM judgement_reviews r WHERE r.judgement_id = j.id HAVING count(*) > 0) AS state
           FROM judgements j JOIN items i ON i.id = j.item_id
           WHERE j.id = $3 AND j.project_id = $1 AND j.source = 'labeller' AND i.gold_ranks IS NULL
             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role IN ('lead', 'reviewer'))))
           FOR NO KEY UPDATE OF j"#,
        project as ProjectId,
        reviewer as UserId,
        judgement as JudgementId,
    )
    .fetch_optional(conn)
    .await
}

/// Records a review (`decision`: 'accepted' or 'rejected').
pub async fn insert(
    conn: &mut PgConnection,
    project: ProjectId,
    judgement: JudgementId,
    item: ItemId,
    reviewer: UserId,
    decision: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO judgement_reviews (id, project_id, judgement_id, item_id, reviewer, decision, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        uuid::Uuid::now_v7(),
        project as ProjectId,
        judgement as JudgementId,
        item as ItemId,
        reviewer as UserId,
        decision,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sends a rejected judgement's item back: its task no longer counts towards the overlap (its
/// row keeps the labeller from being given the item again), and the item reopens unless it is
/// gold, excluded or adjudicated.
pub async fn send_back(conn: &mut PgConnection, task: Option<TaskId>, item: ItemId) -> sqlx::Result<()> {
    if let Some(task) = task {
        sqlx::query!("UPDATE tasks SET status = 'rejected' WHERE id = $1 AND status = 'submitted'", task as TaskId).execute(&mut *conn).await?;
    }
    sqlx::query!(
        "UPDATE items i SET is_open = true WHERE i.id = $1 AND NOT i.is_open AND i.gold_ranks IS NULL
           AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = i.id)
           AND NOT EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = i.id)",
        item as ItemId,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An item as an adjudication needs it: its response ids (by position), the ranks of its kept
/// (not rejected) ordinary judgements, and whether it is adjudicated already. Locked; `None`
/// unless `reviewer` reviews the project and the item is an ordinary one of it.
pub struct AdjudicationTarget {
    pub ids: Vec<ResponseId>,
    pub ranks: Vec<String>,
    pub adjudicated: bool,
}

pub async fn adjudication_target(conn: &mut PgConnection, project: ProjectId, reviewer: UserId, item: ItemId) -> sqlx::Result<Option<AdjudicationTarget>> {
    sqlx::query_as!(
        AdjudicationTarget,
        r#"SELECT COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = i.id), '{}') AS "ids!: Vec<ResponseId>",
                  COALESCE((SELECT array_agg(DISTINCT j.ranks::text) FROM judgements j WHERE j.item_id = i.id AND j.source = 'labeller' AND j.ranks IS NOT NULL
                              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND (t.check_kind IS NOT NULL OR t.status = 'rejected'))
                              AND NOT EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id AND r.decision = 'rejected')), '{}') AS "ranks!",
                  EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = i.id) AS "adjudicated!"
           FROM items i
           WHERE i.id = $3 AND i.project_id = $1 AND i.gold_ranks IS NULL
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role IN ('lead', 'reviewer'))))
           FOR NO KEY UPDATE OF i"#,
        project as ProjectId,
        reviewer as UserId,
        item as ItemId,
    )
    .fetch_optional(conn)
    .await
}

/// A checked adjudication to store.
pub struct NewAdjudication<'a> {
    pub ranks: &'a [i16],
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub note: &'a str,
}

/// Stores the item's adjudication and closes the item (it needs no more labellers); false when
/// the item has one already.
pub async fn adjudicate(conn: &mut PgConnection, project: ProjectId, item: ItemId, reviewer: UserId, a: &NewAdjudication<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO adjudications (id, project_id, item_id, reviewer, ranks, strength, both_bad, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (item_id) DO NOTHING",
        uuid::Uuid::now_v7(),
        project as ProjectId,
        item as ItemId,
        reviewer as UserId,
        a.ranks,
        a.strength,
        a.both_bad,
        a.note,
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query!("UPDATE items SET is_open = false WHERE id = $1 AND is_open", item as ItemId).execute(conn).await?;
    Ok(true)
}

/// A labeller's rejected judgement with the reviewer's reason, as they made it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rejected {
    pub judgement_id: JudgementId,
    pub item_id: ItemId,
    /// The prompt as the labeller saw it (turns).
    #[schema(value_type = Object)]
    pub prompt: Value,
    /// The responses in the order the labeller saw them.
    pub shown: Vec<String>,
    /// The labeller's ranks of the responses in that order (1 = best).
    pub ranks: Vec<i16>,
    pub comment: String,
    pub reason: String,
    pub judged_at: DateTime<Utc>,
    pub rejected_at: DateTime<Utc>,
}

/// `user`'s rejected judgements in the project (newest rejection first, at most 200).
pub async fn rejected_of(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<Vec<Rejected>> {
    sqlx::query_as!(
        Rejected,
        r#"SELECT j.id AS judgement_id, j.item_id, i.prompt,
                  COALESCE((SELECT array_agg(r.text ORDER BY o.k) FROM unnest(j.display_order) WITH ORDINALITY AS o(pos, k)
                            JOIN responses r ON r.item_id = j.item_id AND r.position = o.pos), '{}') AS "shown!",
                  COALESCE((SELECT array_agg(j.ranks[o.pos + 1] ORDER BY o.k) FROM unnest(j.display_order) WITH ORDINALITY AS o(pos, k)), '{}') AS "ranks!",
                  j.comment, rv.reason, j.created_at AS judged_at, rv.created_at AS rejected_at
           FROM judgement_reviews rv JOIN judgements j ON j.id = rv.judgement_id JOIN items i ON i.id = j.item_id
           WHERE rv.project_id = $1 AND rv.decision = 'rejected' AND j.user_id = $2
           ORDER BY rv.seq DESC LIMIT 200"#,
        project as ProjectId,
        user as UserId,
    )
    .fetch_all(conn)
    .await
}

/// The review state of each of the item's judgements ('accepted', 'rejected'), for its page.
pub async fn states_of_item(conn: &mut PgConnection, item: ItemId) -> sqlx::Result<Vec<(JudgementId, String, String)>> {
    let rows = sqlx::query!(
        "SELECT DISTINCT ON (r.judgement_id) r.judgement_id, r.decision, r.reason FROM judgement_reviews r WHERE r.item_id = $1
         ORDER BY r.judgement_id, r.decision = 'rejected' DESC, r.seq DESC",
        item as ItemId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.judgement_id.into(), r.decision, r.reason)).collect())
}

/// The item's adjudication: (ranks, strength, both_bad, note, reviewer's pseudonym).
pub async fn adjudication_of(conn: &mut PgConnection, item: ItemId) -> sqlx::Result<Option<(Vec<i16>, Option<i16>, bool, String, String)>> {
    let row = sqlx::query!(
        r#"SELECT a.ranks, a.strength, a.both_bad, a.note, COALESCE(u.pseudonym, '') AS "who!" FROM adjudications a LEFT JOIN users u ON u.id = a.reviewer WHERE a.item_id = $1"#,
        item as ItemId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.ranks, r.strength, r.both_bad, r.note, r.who)))
}

/// The ordinary labeller judgements of `item` not yet rejected; `None` when the item is not
/// one of the project's or `reviewer` does not review the project.
pub async fn kept_of_item(conn: &mut PgConnection, project: ProjectId, reviewer: UserId, item: ItemId) -> sqlx::Result<Option<Vec<JudgementId>>> {
    let row = sqlx::query_scalar!(
        r#"SELECT COALESCE((SELECT array_agg(j.id ORDER BY j.seq) FROM judgements j
                            WHERE j.item_id = i.id AND j.source = 'labeller'
                              AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)
                              AND NOT EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id AND r.decision = 'rejected')), '{}') AS "ids!: Vec<JudgementId>"
           FROM items i
           WHERE i.id = $3 AND i.project_id = $1 AND i.gold_ranks IS NULL
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role IN ('lead', 'reviewer'))))"#,
        project as ProjectId,
        reviewer as UserId,
        item as ItemId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row)
}

/// What a gold reference can be taken from, for an item of the project led by `lead`: whether
/// it is gold already, its adjudication's ranks, and its kept (not rejected) ordinary ranking
/// judgements: how many, how many different rankings, and the first one.
pub struct GoldSource {
    pub gold: bool,
    pub adjudicated: Option<Vec<i16>>,
    pub kept: i64,
    pub distinct: i64,
    pub first: Option<Vec<i16>>,
}

pub async fn gold_source(conn: &mut PgConnection, project: ProjectId, lead: UserId, item: ItemId) -> sqlx::Result<Option<GoldSource>> {
    sqlx::query_as!(
        GoldSource,
        r#"WITH k AS (SELECT j.ranks, j.seq FROM judgements j WHERE j.item_id = $3 AND j.source = 'labeller' AND j.ranks IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)
                        AND NOT EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id AND r.decision = 'rejected'))
           SELECT i.gold_ranks IS NOT NULL AS "gold!", (SELECT a.ranks FROM adjudications a WHERE a.item_id = i.id) AS adjudicated,
                  (SELECT count(*) FROM k) AS "kept!", (SELECT count(DISTINCT k.ranks) FROM k) AS "distinct!",
                  (SELECT k.ranks FROM k ORDER BY k.seq LIMIT 1) AS first
           FROM items i
           WHERE i.id = $3 AND i.project_id = $1
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))
           FOR NO KEY UPDATE OF i"#,
        project as ProjectId,
        lead as UserId,
        item as ItemId,
    )
    .fetch_optional(conn)
    .await
}
