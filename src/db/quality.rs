//! Label quality: gold references on items, generated honeypots, the judgements quality is
//! computed from, labeller pauses, the project's quality settings and extra labellers for
//! items where labellers disagree. Lead-only reads and writes are scoped by the caller's role
//! in the query.

use sqlx::PgConnection;

use crate::domain::quality::{Judged, QualitySettings};
use crate::domain::{ItemId, ProjectId, ResponseId, TaskId, TaskKind, UserId};

/// A project's quality settings.
pub async fn settings(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<QualitySettings> {
    sqlx::query_as!(
        QualitySettings,
        "SELECT gold_onboarding, gold_rate, pause_below, pause_min_gold, extra_max, extra_below, review_rate FROM projects WHERE id = $1",
        project as ProjectId,
    )
    .fetch_one(conn)
    .await
}

/// Stores checked quality settings (the caller must lead the project).
pub async fn set_settings(conn: &mut PgConnection, project: ProjectId, lead: UserId, s: &QualitySettings) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE projects SET gold_onboarding = $3, gold_rate = $4, pause_below = $5, pause_min_gold = $6, extra_max = $7, extra_below = $8, review_rate = $9
         WHERE id = $1 AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))",
        project as ProjectId,
        lead as UserId,
        s.gold_onboarding,
        s.gold_rate,
        s.pause_below,
        s.pause_min_gold,
        s.extra_max,
        s.extra_below,
        s.review_rate,
    )
    .execute(&mut *conn)
    .await?;
    // New thresholds: every complete item is checked again.
    sqlx::query!("UPDATE items SET checked_extra = -1 WHERE project_id = $1 AND checked_extra <> -1", project as ProjectId).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Marks an item gold with reference ranks (by position) and an explanation, or unmarks it
/// (`None`); a gold item leaves the ordinary queue, an unmarked one rejoins it. False when the
/// item is not in the project or the caller does not lead it.
pub async fn set_gold(conn: &mut PgConnection, project: ProjectId, lead: UserId, item: ItemId, reference: Option<(&[i16], &str)>) -> sqlx::Result<bool> {
    // An excluded item stays closed.
    let done = sqlx::query!(
        "UPDATE items i SET gold_ranks = $4, gold_explanation = $5,
                is_open = $4::smallint[] IS NULL AND (SELECT count(*) FROM tasks t WHERE t.item_id = i.id AND t.status = 'submitted')
                                         < (SELECT p.overlap FROM projects p WHERE p.id = $1) + i.extra_labellers
                          AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = i.id)
         WHERE i.id = $3 AND i.project_id = $1 AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))",
        project as ProjectId,
        lead as UserId,
        item as ItemId,
        reference.map(|(r, _)| r.to_vec()) as Option<Vec<i16>>,
        reference.map(|(_, e)| e.to_string()),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An item's gold reference, when it has one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Gold {
    pub ranks: Vec<i16>,
    pub explanation: String,
    pub honeypot: bool,
    pub response_ids: Vec<ResponseId>,
}

pub async fn gold_of(conn: &mut PgConnection, item: ItemId) -> sqlx::Result<Option<Gold>> {
    sqlx::query_as!(
        Gold,
        r#"SELECT i.gold_ranks AS "ranks!", COALESCE(i.gold_explanation, '') AS "explanation!", i.honeypot_of IS NOT NULL AS "honeypot!",
                COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = i.id), '{}') AS "response_ids!: Vec<ResponseId>"
           FROM items i WHERE i.id = $1 AND i.gold_ranks IS NOT NULL"#,
        item as ItemId,
    )
    .fetch_optional(conn)
    .await
}

/// A submitted quality check: its project, the check kind, the labeller's ranks and the reference.
#[derive(Debug)]
pub struct Check {
    pub project_id: ProjectId,
    pub kind: TaskKind,
    pub item_id: ItemId,
    pub check_kind: String,
    pub pause_below: Option<f64>,
    pub pause_min_gold: i32,
}

/// The check `task` of `user`, when it is one and was submitted.
pub async fn check(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<Check>> {
    sqlx::query_as!(
        Check,
        r#"SELECT t.project_id, p.kind AS "kind: TaskKind", t.item_id, t.check_kind AS "check_kind!", p.pause_below, p.pause_min_gold
           FROM tasks t JOIN projects p ON p.id = t.project_id
           WHERE t.id = $1 AND t.user_id = $2 AND t.status = 'submitted' AND t.check_kind IS NOT NULL"#,
        task as TaskId,
        user as UserId,
    )
    .fetch_optional(conn)
    .await
}

/// (ranks, reference) of every check `user` submitted in the project since their last lifted pause.
pub async fn checks_since_lift(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<Vec<(Vec<i16>, Vec<i16>)>> {
    let rows = sqlx::query!(
        r#"SELECT j.ranks AS "ranks!", i.gold_ranks AS "gold!" FROM tasks t JOIN judgements j ON j.task_id = t.id JOIN items i ON i.id = t.item_id
           WHERE t.user_id = $2 AND t.project_id = $1 AND t.check_kind IS NOT NULL AND j.ranks IS NOT NULL AND i.gold_ranks IS NOT NULL
             AND j.created_at > COALESCE((SELECT max(p.lifted_at) FROM labeller_pauses p WHERE p.project_id = $1 AND p.user_id = $2), '-infinity')"#,
        project as ProjectId,
        user as UserId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.ranks, r.gold)).collect())
}

/// Pauses `user` in the project (unless already paused) and gives back their live leases
/// there, so they get no more work; true when a new pause began.
pub async fn pause(conn: &mut PgConnection, project: ProjectId, user: UserId, reason: &str, score: f64, count: i32) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO labeller_pauses (id, project_id, user_id, reason, score, gold_count) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (project_id, user_id) WHERE lifted_at IS NULL DO NOTHING",
        uuid::Uuid::now_v7(),
        project as ProjectId,
        user as UserId,
        reason,
        score,
        count,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE tasks SET status = 'skipped', skip_reason = 'paused' WHERE user_id = $2 AND project_id = $1 AND status = 'leased'",
        project as ProjectId,
        user as UserId,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lifts `user`'s pause with a note (the caller must lead the project); false when none was active.
pub async fn lift(conn: &mut PgConnection, project: ProjectId, lead: UserId, user: UserId, note: &str) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE labeller_pauses SET lifted_at = now(), lifted_by = $2, lift_note = $4
         WHERE project_id = $1 AND user_id = $3 AND lifted_at IS NULL AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id AND m.role = 'lead')))",
        project as ProjectId,
        lead as UserId,
        user as UserId,
        note,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The caller's active pause in the project, if any: (reason, since).
pub async fn active_pause(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<Option<(String, chrono::DateTime<chrono::Utc>)>> {
    let row = sqlx::query!(
        "SELECT reason, paused_at FROM labeller_pauses WHERE project_id = $1 AND user_id = $2 AND lifted_at IS NULL",
        project as ProjectId,
        user as UserId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.reason, r.paused_at)))
}

/// A pause, current or lifted, for the lead's list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PauseRow {
    pub user_id: UserId,
    pub email: String,
    pub reason: String,
    pub score: Option<f64>,
    pub gold_count: Option<i32>,
    pub paused_at: chrono::DateTime<chrono::Utc>,
    pub lifted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub lifted_by: Option<String>,
    pub lift_note: Option<String>,
}

pub async fn pauses(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<PauseRow>> {
    sqlx::query_as!(
        PauseRow,
        r#"SELECT p.user_id, u.email, p.reason, p.score, p.gold_count, p.paused_at, p.lifted_at, l.email AS "lifted_by?", p.lift_note
           FROM labeller_pauses p JOIN users u ON u.id = p.user_id LEFT JOIN users l ON l.id = p.lifted_by
           WHERE p.project_id = $1 ORDER BY p.paused_at DESC LIMIT 500"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await
}

/// Every labeller's email in the project's judgements and members.
pub async fn emails(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<(UserId, String)>> {
    let rows = sqlx::query!(
        "SELECT u.id, u.email FROM users u WHERE EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = $1 AND m.user_id = u.id)
            OR EXISTS (SELECT 1 FROM tasks t WHERE t.project_id = $1 AND t.user_id = u.id)",
        project as ProjectId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id.into(), r.email)).collect())
}

/// What changes a project's quality figures, read cheaply: the newest judgement and review
/// and how many there are among the last [`TAIL`] sequence numbers (a transaction that took a
/// number earlier can commit after a later one: with the newest unchanged, the count catches
/// it), the pauses and lifts, and the gold references. Equal fingerprints mean equal figures;
/// the settings are compared apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub judgement_seq: i64,
    pub judgement_tail: i64,
    pub review_seq: i64,
    pub review_tail: i64,
    pub pauses: i64,
    pub gold: i64,
}

/// How many sequence numbers below the newest [`fingerprint`] counts rows in.
pub const TAIL: i64 = 1000;

/// The project's [`Fingerprint`].
pub async fn fingerprint(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Fingerprint> {
    sqlx::query_as!(
        Fingerprint,
        r#"WITH top AS (SELECT COALESCE((SELECT max(seq) FROM judgements WHERE project_id = $1), 0) AS j,
                               COALESCE((SELECT max(seq) FROM judgement_reviews WHERE project_id = $1), 0) AS r)
           SELECT top.j AS "judgement_seq!",
                  (SELECT count(*) FROM judgements WHERE project_id = $1 AND seq > top.j - $2) AS "judgement_tail!",
                  top.r AS "review_seq!",
                  (SELECT count(*) FROM judgement_reviews WHERE project_id = $1 AND seq > top.r - $2) AS "review_tail!",
                  (SELECT count(*) + count(lifted_at) FROM labeller_pauses WHERE project_id = $1) AS "pauses!",
                  (SELECT COALESCE(sum(hashtextextended(id::text || gold_ranks::text, 0) % 1000000007), 0)::bigint + count(*)
                   FROM items WHERE project_id = $1 AND gold_ranks IS NOT NULL) AS "gold!"
           FROM top"#,
        project as ProjectId,
        TAIL,
    )
    .fetch_one(conn)
    .await
}

struct JudgementRow {
    user_id: UserId,
    item_id: ItemId,
    ranks: Vec<i16>,
    display_order: Option<Vec<i32>>,
    time_on_task_ms: Option<i64>,
    is_check: bool,
    since_lift: bool,
}

struct ItemLengths {
    id: ItemId,
    gold_ranks: Option<Vec<i16>>,
    prompt_chars: i32,
    chars: Vec<i32>,
}

/// The labellers' ranking judgements of the project: ordinary ones on ordinary items and
/// quality checks with their reference (judgements made on an item before it became gold, and
/// judgements a reviewer rejected, are left out).
/// With `snapshot`, only the judgements visible in that export snapshot.
pub async fn judged(conn: &mut PgConnection, project: ProjectId, snapshot: Option<&str>) -> sqlx::Result<Vec<Judged>> {
    judged_of(conn, project, snapshot, None).await
}

/// As [`judged`], only for `items` when given.
///
/// Two narrow reads joined here: the judgements, and each item's reference and lengths
/// (stored with the rows, so no text is read). They run with plans made for the project at
/// hand (the server's connections otherwise keep generic plans, which expect a few rows and
/// loop over them) and room to sort in memory.
pub async fn judged_of(conn: &mut PgConnection, project: ProjectId, snapshot: Option<&str>, items: Option<&[ItemId]>) -> sqlx::Result<Vec<Judged>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    super::plan_for_arguments(&mut tx).await?;
    let judgements: Vec<JudgementRow> = sqlx::query_as!(
        JudgementRow,
        r#"SELECT j.user_id AS "user_id!: UserId", j.item_id, j.ranks AS "ranks!", j.display_order, j.time_on_task_ms,
                c.id IS NOT NULL AS "is_check!", j.created_at > COALESCE(lp.lifted_at, '-infinity') AS "since_lift!"
         FROM judgements j
         LEFT JOIN (SELECT t.id FROM tasks t WHERE t.project_id = $1 AND t.check_kind IS NOT NULL) c ON c.id = j.task_id
         LEFT JOIN (SELECT p.user_id, max(p.lifted_at) AS lifted_at FROM labeller_pauses p WHERE p.project_id = $1 GROUP BY p.user_id) lp ON lp.user_id = j.user_id
         WHERE j.project_id = $1 AND j.source = 'labeller' AND j.user_id IS NOT NULL AND j.ranks IS NOT NULL
           AND ($2::text IS NULL OR pg_visible_in_snapshot(j.txid, $2::text::pg_snapshot))
           AND ($3::uuid[] IS NULL OR j.item_id = ANY($3))
           AND NOT EXISTS (SELECT 1 FROM judgement_reviews rv WHERE rv.project_id = $1 AND rv.judgement_id = j.id AND rv.decision = 'rejected'
                           AND ($2::text IS NULL OR pg_visible_in_snapshot(rv.txid, $2::text::pg_snapshot)))
         ORDER BY j.seq"#,
        project as ProjectId,
        snapshot,
        items as Option<&[ItemId]>,
    )
    .fetch_all(&mut *tx)
    .await?;
    let lengths: Vec<ItemLengths> = sqlx::query_as!(
        ItemLengths,
        r#"SELECT i.id AS "id!: ItemId", i.gold_ranks, COALESCE(i.prompt_chars, 0) AS "prompt_chars!",
                COALESCE(rs.chars, '{}') AS "chars!"
         FROM items i
         LEFT JOIN (SELECT r.item_id, array_agg(r.chars ORDER BY r.position) AS chars FROM responses r JOIN items ri ON ri.id = r.item_id
                    WHERE ri.project_id = $1 AND ($2::uuid[] IS NULL OR ri.id = ANY($2)) GROUP BY r.item_id) rs ON rs.item_id = i.id
         WHERE i.project_id = $1 AND ($2::uuid[] IS NULL OR i.id = ANY($2))"#,
        project as ProjectId,
        items as Option<&[ItemId]>,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let by_item: std::collections::HashMap<ItemId, ItemLengths> = lengths.into_iter().map(|l| (l.id, l)).collect();
    Ok(judgements
        .into_iter()
        .filter_map(|r| {
            let item = by_item.get(&r.item_id)?;
            // A check counts with its reference; an ordinary judgement only on an ordinary item.
            if r.is_check != item.gold_ranks.is_some() {
                return None;
            }
            Some(Judged {
                user: r.user_id,
                item: r.item_id,
                ranks: r.ranks,
                display_order: r.display_order.unwrap_or_default(),
                time_ms: r.time_on_task_ms,
                lengths: item.chars.clone(),
                chars_shown: i64::from(item.prompt_chars) + item.chars.iter().map(|c| i64::from(*c)).sum::<i64>(),
                reference: if r.is_check { item.gold_ranks.clone() } else { None },
                since_lift: r.since_lift,
            })
        })
        .collect())
}

/// Gives each of `items` (closed ordinary items of the project) one more labeller and reopens it.
pub async fn add_labeller(conn: &mut PgConnection, project: ProjectId, items: &[ItemId]) -> sqlx::Result<u64> {
    // Excluded items stay closed.
    let done = sqlx::query!(
        "UPDATE items i SET extra_labellers = extra_labellers + 1, is_open = true
         WHERE project_id = $1 AND id = ANY($2) AND gold_ranks IS NULL AND NOT is_open
           AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = i.id)",
        project as ProjectId,
        items as &[ItemId],
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Complete ordinary items whose agreement was not checked since they last completed, with
/// their extra labellers so far.
pub async fn unchecked_items(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<(ItemId, i32)>> {
    let rows = sqlx::query!(
        r#"SELECT id AS "id: ItemId", extra_labellers FROM items WHERE project_id = $1 AND NOT is_open AND gold_ranks IS NULL AND checked_extra <> extra_labellers"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.extra_labellers)).collect())
}

/// Records that `items` were checked at their current number of extra labellers.
pub async fn mark_checked(conn: &mut PgConnection, project: ProjectId, items: &[ItemId]) -> sqlx::Result<()> {
    sqlx::query!("UPDATE items SET checked_extra = extra_labellers WHERE project_id = $1 AND id = ANY($2)", project as ProjectId, items as &[ItemId])
        .execute(conn)
        .await?;
    Ok(())
}

/// Projects that give extra labellers where labellers disagree.
pub async fn extending_projects(conn: &mut PgConnection) -> sqlx::Result<Vec<ProjectId>> {
    sqlx::query_scalar!(r#"SELECT id AS "id: ProjectId" FROM projects WHERE extra_max > 0 AND kind <> 'demonstration'"#).fetch_all(conn).await
}

/// A source for a honeypot: an ordinary item with its responses (by position).
#[derive(Debug, Clone)]
pub struct HoneypotSource {
    pub id: ItemId,
    pub external_id: String,
    pub texts: Vec<String>,
    pub models: Vec<String>,
}

/// Up to `n` random ordinary items of the project with two or more responses that have no
/// honeypot yet.
pub async fn honeypot_sources(conn: &mut PgConnection, project: ProjectId, n: i64) -> sqlx::Result<Vec<HoneypotSource>> {
    sqlx::query_as!(
        HoneypotSource,
        r#"SELECT s.id AS "id!: ItemId", s.external_id AS "external_id!",
                COALESCE((SELECT array_agg(r.text ORDER BY r.position) FROM responses r WHERE r.item_id = s.id), '{}') AS "texts!",
                COALESCE((SELECT array_agg(r.model ORDER BY r.position) FROM responses r WHERE r.item_id = s.id), '{}') AS "models!"
         FROM (SELECT i.id, i.external_id FROM items i
               WHERE i.project_id = $1 AND i.gold_ranks IS NULL AND i.n_responses >= 2
                 AND NOT EXISTS (SELECT 1 FROM items h WHERE h.honeypot_of = i.id)
               ORDER BY random() LIMIT $2) s"#,
        project as ProjectId,
        n,
    )
    .fetch_all(conn)
    .await
}

/// A generated honeypot to store.
#[derive(Debug, Clone)]
pub struct NewHoneypot {
    pub source: ItemId,
    pub external_id: String,
    pub texts: Vec<String>,
    pub models: Vec<String>,
    pub ranks: Vec<i16>,
    pub explanation: String,
}

/// Stores honeypots as closed gold items (prompt copied from the source), with their responses.
pub async fn insert_honeypots(conn: &mut PgConnection, project: ProjectId, pots: &[NewHoneypot]) -> sqlx::Result<u64> {
    let mut added = 0;
    for h in pots {
        let id = ItemId::new();
        let done = sqlx::query!(
            "INSERT INTO items (id, project_id, external_id, prompt, prompt_raw, metadata, n_responses, is_open, gold_ranks, gold_explanation, honeypot_of)
             SELECT $1, s.project_id, $3, s.prompt, s.prompt_raw, jsonb_build_object('honeypot_of', s.external_id), $4, false, $5, $6, s.id
             FROM items s WHERE s.id = $2 AND s.project_id = $7
             ON CONFLICT (project_id, external_id) DO NOTHING",
            id as ItemId,
            h.source as ItemId,
            h.external_id,
            h.texts.len() as i32,
            h.ranks.as_slice(),
            h.explanation,
            project as ProjectId,
        )
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            continue;
        }
        let positions: Vec<i32> = (0..h.texts.len() as i32).collect();
        let ids: Vec<ResponseId> = h.texts.iter().map(|_| ResponseId::new()).collect();
        sqlx::query!(
            "INSERT INTO responses (id, item_id, position, model, text)
             SELECT u.id, $1, u.pos, u.model, u.text FROM UNNEST($2::uuid[], $3::int[], $4::text[], $5::text[]) AS u(id, pos, model, text)",
            id as ItemId,
            ids.as_slice() as &[ResponseId],
            positions.as_slice(),
            h.models.as_slice(),
            h.texts.as_slice(),
        )
        .execute(&mut *conn)
        .await?;
        added += 1;
    }
    Ok(added)
}

/// The response ids of an item of the project, in position order; `None` when no such item.
pub async fn item_response_ids(conn: &mut PgConnection, project: ProjectId, item: ItemId) -> sqlx::Result<Option<Vec<ResponseId>>> {
    sqlx::query_scalar!(
        r#"SELECT COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = i.id), '{}') AS "ids!: Vec<ResponseId>"
           FROM items i WHERE i.id = $1 AND i.project_id = $2"#,
        item as ItemId,
        project as ProjectId,
    )
    .fetch_optional(conn)
    .await
}

/// The project's kind.
pub async fn project_kind(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<TaskKind> {
    sqlx::query_scalar!(r#"SELECT kind AS "kind: TaskKind" FROM projects WHERE id = $1"#, project as ProjectId).fetch_one(conn).await
}

/// The labellers paused in the project now, in id order.
pub async fn paused_labellers(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<UserId>> {
    sqlx::query_scalar!(
        r#"SELECT user_id AS "user_id: UserId" FROM labeller_pauses WHERE project_id = $1 AND lifted_at IS NULL ORDER BY user_id"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await
}
