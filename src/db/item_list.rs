//! The lead's item browser: a project's items filtered ([`ItemFilter`]) and paged by keyset
//! (newest first, `seq < cursor`), so every page costs the same on 100,000 items. Word search
//! over prompts uses the GIN index of `rl_prompt_doc` (migration 0005); responses, which have no
//! such index (it would slow imports several times), are searched with `ILIKE` when asked.
//! Scoped to the project's leads (or admins) in the query itself.

use sqlx::PgConnection;

use crate::domain::item_filter::ItemFilter;
use crate::domain::{ItemId, ProjectId, UserId};

/// An item as the browser lists it.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub id: ItemId,
    pub seq: i64,
    pub external_id: String,
    /// The start of the prompt (its first turn).
    pub prompt: String,
    pub n_responses: i32,
    pub models: String,
    pub judgements: i64,
    pub flagged: i64,
    /// Labellers' submitted judgements (what the overlap counts).
    pub done: i64,
    pub excluded: bool,
    pub generated: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// A gold item or honeypot.
    pub gold: bool,
    /// `adjudicated`, else `rejected` or `accepted` when a judgement of it was, else empty.
    pub review: String,
}

/// One page of items matching `f`, older than `before` (a `seq`), at most `limit`; `overlap` is
/// the project's, which decides what is complete. `in_agreement`: the items whose agreement is
/// in the filter's range (computed by the caller), when it asks for one.
#[allow(clippy::too_many_arguments)]
pub async fn page(
    conn: &mut PgConnection,
    project: ProjectId,
    user: UserId,
    overlap: i32,
    f: &ItemFilter,
    before: Option<i64>,
    limit: i64,
    in_agreement: Option<&[ItemId]>,
) -> sqlx::Result<Vec<ItemRow>> {
    let (from, to) = f.created_range();
    let patterns = f.response_patterns();
    sqlx::query_as!(
        ItemRow,
        r#"SELECT i.id, i.seq, i.external_id, left(COALESCE(i.prompt_raw, i.prompt->0->>'content', ''), 160) AS "prompt!", i.n_responses,
                COALESCE((SELECT string_agg(DISTINCT r.model, ', ') FROM responses r WHERE r.item_id = i.id), '') AS "models!",
                (SELECT count(*) FROM judgements j WHERE j.item_id = i.id) AS "judgements!",
                (SELECT count(*) FROM judgements j WHERE j.item_id = i.id AND EXISTS (SELECT 1 FROM jsonb_each(j.flags) e
                     WHERE jsonb_typeof(e.value) = 'array' AND jsonb_array_length(e.value) > 0)) AS "flagged!",
                done.n AS "done!", x.excluded AS "excluded!", COALESCE(i.metadata ? 'generated_by_run', false) AS "generated!", i.created_at,
                i.gold_ranks IS NOT NULL AS "gold!",
                CASE WHEN EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = i.id) THEN 'adjudicated'
                     WHEN EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.item_id = i.id AND r.decision = 'rejected') THEN 'rejected'
                     WHEN EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.item_id = i.id) THEN 'accepted' ELSE '' END AS "review!"
         FROM items i
         CROSS JOIN LATERAL (SELECT count(*) AS n FROM tasks t WHERE t.item_id = i.id AND t.status = 'submitted') done
         CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM item_exclusions e WHERE e.item_id = i.id) AS excluded) x
         WHERE i.project_id = $1
           AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin
                       OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))
           AND ($3::bigint IS NULL OR i.seq < $3)
           AND ($4::text IS NULL
                OR i.id IN (SELECT m.id FROM items m WHERE m.project_id = $1 AND rl_prompt_doc(m.prompt) @@ to_tsquery('simple', $4))
                OR ($14::text[] IS NOT NULL AND EXISTS (SELECT 1 FROM responses r WHERE r.item_id = i.id AND r.text ILIKE ALL ($14))))
           AND ($5::text IS NULL OR ($5 = 'excluded') = x.excluded)
           AND ($5::text IS NULL OR $5 = 'excluded' OR ($5 = 'unlabelled' AND done.n = 0) OR ($5 = 'in_progress' AND done.n > 0 AND done.n < $6)
                OR ($5 = 'complete' AND done.n >= $6))
           AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM responses r WHERE r.item_id = i.id AND r.model = $7))
           AND ($8::text IS NULL OR EXISTS (SELECT 1 FROM judgements j JOIN users u ON u.id = j.user_id WHERE j.item_id = i.id AND u.email = $8))
           AND ($9::text IS NULL OR EXISTS (SELECT 1 FROM judgements j CROSS JOIN LATERAL jsonb_each(j.flags) e
                WHERE j.item_id = i.id AND jsonb_typeof(e.value) = 'array' AND jsonb_array_length(e.value) > 0 AND ($9 = '*' OR e.value ? $9)))
           AND ($10::boolean IS NULL OR COALESCE(i.metadata ? 'generated_by_run', false) = $10)
           AND ($11::timestamptz IS NULL OR i.created_at >= $11)
           AND ($12::timestamptz IS NULL OR i.created_at < $12)
           AND ($15::uuid[] IS NULL OR i.id = ANY($15))
           AND ($16::boolean IS NULL OR (i.gold_ranks IS NOT NULL) = $16)
           AND ($17::text IS NULL
                OR ($17 = 'adjudicated' AND EXISTS (SELECT 1 FROM adjudications a WHERE a.item_id = i.id))
                OR ($17 = 'rejected' AND EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.item_id = i.id AND r.decision = 'rejected'))
                OR ($17 = 'accepted' AND EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.item_id = i.id AND r.decision = 'accepted'
                                                 AND NOT EXISTS (SELECT 1 FROM judgement_reviews o WHERE o.judgement_id = r.judgement_id AND o.decision = 'rejected')))
                OR ($17 = 'unreviewed' AND EXISTS (SELECT 1 FROM judgements j WHERE j.item_id = i.id AND j.source = 'labeller'
                                                   AND NOT EXISTS (SELECT 1 FROM judgement_reviews r WHERE r.judgement_id = j.id))))
         ORDER BY i.seq DESC
         LIMIT $13"#,
        project as ProjectId,
        user as UserId,
        before,
        f.tsquery(),
        f.status_word(),
        i64::from(overlap),
        f.model.as_deref(),
        f.labeller.as_ref().map(|e| e.as_str()),
        f.flag_word(),
        f.generated(),
        from,
        to,
        limit,
        patterns.as_deref(),
        in_agreement as Option<&[ItemId]>,
        f.gold,
        f.review_word(),
    )
    .fetch_all(conn)
    .await
}

/// Excludes items of `project` for `user`, its lead (or an admin; the gate is in the query):
/// each is recorded once and closed, so it is leased no more and leaves later exports. Returns
/// how many were newly excluded; ids of other projects' items change nothing.
pub async fn exclude(conn: &mut PgConnection, project: ProjectId, user: UserId, items: &[ItemId]) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "INSERT INTO item_exclusions (item_id, project_id, excluded_by)
         SELECT i.id, i.project_id, $2 FROM items i
         WHERE i.id = ANY($3) AND i.project_id = $1
           AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin
                       OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))
         ON CONFLICT (item_id) DO NOTHING",
        project as ProjectId,
        user as UserId,
        items as &[ItemId],
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE items SET is_open = false WHERE project_id = $1 AND is_open AND id IN (SELECT item_id FROM item_exclusions WHERE item_id = ANY($2))",
        project as ProjectId,
        items as &[ItemId],
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
