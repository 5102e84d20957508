//! Export records and the rows an export is written from. An export records the PostgreSQL
//! snapshot it was taken in; the row queries read judgements and items as of that snapshot
//! (`pg_visible_in_snapshot` on their creating transaction id), so replaying them gives the
//! same rows in the same order every time.

use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use futures_util::Stream;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::export::{Export, Format, Options, PartSummary};
use crate::domain::{ExportId, ItemId, JudgementId, ProjectId, ResponseId, UserId};

/// Makes the caller's transaction REPEATABLE READ and answers its snapshot (text form); must
/// be the transaction's first statement.
pub async fn snapshot(conn: &mut PgConnection) -> sqlx::Result<String> {
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *conn).await?;
    sqlx::query_scalar!(r#"SELECT pg_current_snapshot()::text AS "snapshot!""#).fetch_one(conn).await
}

/// An export row as stored.
struct ExportRow {
    id: ExportId,
    project_id: ProjectId,
    format: String,
    options: Json<Options>,
    snapshot: String,
    files: Json<Vec<PartSummary>>,
    created_at: DateTime<Utc>,
}

impl From<ExportRow> for Export {
    fn from(r: ExportRow) -> Self {
        Export { id: r.id, project_id: r.project_id, format: r.format, options: r.options.0, snapshot: r.snapshot, files: r.files.0, created_at: r.created_at }
    }
}

/// `query_as!` for [`ExportRow`]s (`e`: exports) with `$rest` (literal SQL) appended.
macro_rules! select_exports {
    ($rest:tt, $($arg:expr),*) => {
        sqlx::query_as!(
            ExportRow,
            r#"SELECT e.id, e.project_id, e.format, e.options AS "options: Json<Options>", e.snapshot::text AS "snapshot!",
                      e.files AS "files: Json<Vec<PartSummary>>", e.created_at
                 FROM exports e "# + $rest,
            $($arg),*
        )
    };
}

/// Records an export taken in `snapshot` (in the snapshot's own transaction).
pub async fn insert(
    conn: &mut PgConnection,
    project: ProjectId,
    format: Format,
    options: &Options,
    snapshot: &str,
    files: &[PartSummary],
    by: Option<UserId>,
) -> sqlx::Result<Export> {
    let row = sqlx::query_as!(
        ExportRow,
        r#"INSERT INTO exports (id, project_id, format, options, snapshot, files, created_by) VALUES ($1, $2, $3, $4, $5::text::pg_snapshot, $6, $7)
           RETURNING id, project_id, format, options AS "options: Json<Options>", snapshot::text AS "snapshot!",
                     files AS "files: Json<Vec<PartSummary>>", created_at"#,
        ExportId::new() as ExportId,
        project as ProjectId,
        format.to_string(),
        Json(options) as Json<&Options>,
        snapshot,
        Json(files) as Json<&[PartSummary]>,
        by as Option<UserId>,
    )
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// An export of a project the caller leads (or any, for an admin); scoped in the query.
pub async fn get_for_lead(conn: &mut PgConnection, id: ExportId, user: UserId) -> sqlx::Result<Option<Export>> {
    let row = select_exports!(
        "JOIN users u ON u.id = $2
         WHERE e.id = $1 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = e.project_id AND m.user_id = u.id AND m.role = 'lead'))",
        id as ExportId,
        user as UserId
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Export::from))
}

/// The exports of a project (the caller has been checked as its lead), newest first.
pub async fn list(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Export>> {
    let rows = select_exports!("WHERE e.project_id = $1 ORDER BY e.created_at DESC", project as ProjectId).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Export::from).collect())
}

/// An export by id, unscoped: for the worker, which acts for the project that queued the run.
pub async fn get(conn: &mut PgConnection, id: ExportId) -> sqlx::Result<Option<Export>> {
    let row = select_exports!("WHERE e.id = $1", id as ExportId).fetch_optional(conn).await?;
    Ok(row.map(Export::from))
}

/// An item as the `prompts` format writes it.
pub struct PromptRow {
    pub(crate) id: ItemId,
    pub(crate) external_id: String,
    pub(crate) prompt: Value,
    pub(crate) prompt_raw: Option<String>,
}

/// The project's items as of `snapshot`, in import order (less those excluded by then).
pub fn prompt_rows<'c>(conn: &'c mut PgConnection, project: ProjectId, snapshot: &'c str) -> impl Stream<Item = sqlx::Result<PromptRow>> + 'c {
    sqlx::query_as!(
        PromptRow,
        "SELECT i.id, i.external_id, i.prompt, i.prompt_raw FROM items i
         WHERE i.project_id = $1 AND pg_visible_in_snapshot(i.txid, $2::text::pg_snapshot) AND i.honeypot_of IS NULL
           AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = i.id AND pg_visible_in_snapshot(x.txid, $2::text::pg_snapshot))
         ORDER BY i.seq",
        project as ProjectId,
        snapshot,
    )
    .fetch(conn)
}

/// A judgement with its item and the item's responses (in position order), as the
/// comparison, preference and SFT formats write them.
pub struct JudgementRow {
    pub(crate) id: JudgementId,
    pub(crate) item_id: ItemId,
    pub(crate) user_id: Option<UserId>,
    pub(crate) external_id: String,
    pub(crate) prompt: Value,
    pub(crate) prompt_raw: Option<String>,
    pub(crate) source: String,
    pub(crate) labeller: String,
    pub(crate) ranks: Option<Vec<i16>>,
    pub(crate) display_order: Option<Vec<i32>>,
    pub(crate) strength: Option<i16>,
    pub(crate) both_bad: bool,
    pub(crate) demonstration: Option<String>,
    pub(crate) flags: Value,
    pub(crate) rating: Option<i16>,
    pub(crate) comment: String,
    pub(crate) time_on_task_ms: Option<i64>,
    pub(crate) created_at: DateTime<Utc>,
    /// `unreviewed`, `accepted`, `rejected` or `adjudicated` (see [`crate::domain::review::ReviewState`]).
    pub(crate) review: String,
    /// Whether the row carries its item's responses (`ids` to `metas`): every row in store
    /// order; only each item's first row when grouped by item.
    pub(crate) first: bool,
    pub(crate) ids: Vec<ResponseId>,
    pub(crate) models: Vec<String>,
    pub(crate) texts: Vec<String>,
    pub(crate) metas: Value,
}

/// `query_as!` for the [`JudgementRow`]s of project `$1` as of snapshot `$2`, less gold items,
/// quality checks and items excluded by then; an item adjudicated by then gives its
/// adjudication (source `adjudication`, by the reviewer) instead of its labellers' judgements;
/// with `$3` rejected judgements are left out. `$first` (literal SQL over the filtered rows
/// `j`) says which rows carry their item's responses (the others have none: the caller keeps
/// them from the item's first row); `$order` (literal SQL) is appended.
macro_rules! judgement_rows {
    ($first:tt, $order:tt, $project:expr, $snapshot:expr, $drop_rejected:expr) => {
        sqlx::query_as!(
            JudgementRow,
            r#"SELECT j.id AS "id!: JudgementId", j.item_id AS "item_id!: ItemId", j.user_id AS "user_id: UserId", j.external_id AS "external_id!",
                      j.prompt AS "prompt!", j.prompt_raw, j.source AS "source!", j.labeller AS "labeller!", j.ranks, j.display_order, j.strength,
                      j.both_bad AS "both_bad!", j.demonstration, j.flags AS "flags!", j.rating, j.comment AS "comment!", j.time_on_task_ms,
                      j.created_at AS "created_at!", j.review AS "review!", j.first AS "first!",
                      COALESCE(rs.ids, '{}') AS "ids!: Vec<ResponseId>", COALESCE(rs.models, '{}') AS "models!", COALESCE(rs.texts, '{}') AS "texts!",
                      COALESCE(rs.metas, '[]') AS "metas!"
               FROM (SELECT j.*, i.external_id, i.prompt, i.prompt_raw, COALESCE(u.pseudonym, 'import') AS labeller, "#
                + $first
                + r#" AS first
                     FROM (SELECT j.id, j.seq, j.item_id, j.user_id, j.source, j.ranks, j.display_order, j.strength, j.both_bad, j.demonstration, j.flags,
                                  j.rating, j.comment, j.time_on_task_ms, j.created_at,
                                  CASE WHEN EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id AND r.decision = 'rejected'
                                                    AND pg_visible_in_snapshot(r.txid, $2::text::pg_snapshot)) THEN 'rejected'
                                       WHEN EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id AND r.decision = 'accepted'
                                                    AND pg_visible_in_snapshot(r.txid, $2::text::pg_snapshot)) THEN 'accepted'
                                       ELSE 'unreviewed' END AS review
                           FROM judgements j
                           WHERE j.project_id = $1 AND pg_visible_in_snapshot(j.txid, $2::text::pg_snapshot)
                             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)
                             AND NOT EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = j.item_id AND pg_visible_in_snapshot(a.txid, $2::text::pg_snapshot))
                           UNION ALL
                           SELECT a.id, a.seq, a.item_id, a.reviewer, 'adjudication', a.ranks, NULL::int[], a.strength, a.both_bad, NULL::text, '{}'::jsonb,
                                  NULL::smallint, a.note, NULL::bigint, a.created_at, 'adjudicated'
                           FROM adjudications a
                           WHERE a.project_id = $1 AND pg_visible_in_snapshot(a.txid, $2::text::pg_snapshot)) j
                     JOIN items i ON i.id = j.item_id
                     LEFT JOIN users u ON u.id = j.user_id
                     WHERE i.gold_ranks IS NULL AND (NOT $3 OR j.review <> 'rejected')
                       AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = j.item_id AND pg_visible_in_snapshot(x.txid, $2::text::pg_snapshot))) j
               LEFT JOIN LATERAL (SELECT array_agg(r.id ORDER BY r.position) AS ids, array_agg(r.model ORDER BY r.position) AS models,
                                         array_agg(r.text ORDER BY r.position) AS texts, jsonb_agg(r.metadata ORDER BY r.position) AS metas
                                  FROM responses r WHERE j.first AND r.item_id = j.item_id) rs ON true "#
                + $order,
            $project as ProjectId,
            $snapshot,
            $drop_rejected
        )
    };
}

/// The project's judgements as of `snapshot` (less gold items, quality checks and items
/// excluded by then; adjudications instead of the judgements of the items they settle; with
/// `drop_rejected`, less rejected judgements): in the order they were stored, or with
/// `by_item` grouped by item (for aggregated exports).
pub fn judgement_rows<'c>(
    conn: &'c mut PgConnection,
    project: ProjectId,
    snapshot: &'c str,
    by_item: bool,
    drop_rejected: bool,
) -> BoxStream<'c, sqlx::Result<JudgementRow>> {
    match by_item {
        false => judgement_rows!("true", "ORDER BY j.seq", project, snapshot, drop_rejected).fetch(conn),
        // An item's responses once, with its first row.
        true => judgement_rows!("row_number() OVER (PARTITION BY j.item_id ORDER BY j.seq) = 1", "ORDER BY j.item_id, j.seq", project, snapshot, drop_rejected)
            .fetch(conn),
    }
}
