//! Leasing tasks and storing judgements, through the server-side functions of the migrations
//! (`rl_next_task`, `rl_take`, `rl_submit_batch`): an item is handed to at most `overlap` distinct
//! labellers, its candidate row locked `FOR NO KEY UPDATE SKIP LOCKED` and its need re-checked
//! under the lock with a fresh snapshot, so concurrent requests never over-lease.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::domain::ranking::Submission;
use crate::domain::{JudgementId, ProjectId, ResponseId, SkipReason, TaskId, TaskKind, UserId};

/// A leased task, as the labeller sees it (no model names). The prompt and the responses are
/// passed on as PostgreSQL wrote them (checked JSON, never parsed into a tree and written again).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub task_id: TaskId,
    /// The prompt: its text, or its turns `[{"role", "content"}]`.
    #[schema(value_type = serde_json::Value)]
    pub prompt: Box<RawValue>,
    /// `[{"id", "text"}]` in display order.
    #[schema(value_type = Vec<Object>)]
    pub responses: Box<RawValue>,
    pub expires_at: DateTime<Utc>,
}

/// A lease's columns as `rl_next_task` answers them: the task as the labeller
/// sees it and the rules its submission is checked against.
#[derive(Debug)]
pub struct NextRow {
    member: Option<bool>,
    task: Option<TaskId>,
    prompt: Option<Json<Box<RawValue>>>,
    expires_at: Option<DateTime<Utc>>,
    responses: Option<Json<Box<RawValue>>>,
    response_ids: Option<Vec<ResponseId>>,
    kind: Option<TaskKind>,
    allow_ties: Option<bool>,
    rating_enabled: Option<bool>,
    flags: Option<Vec<String>>,
    check_kind: Option<String>,
    paused: Option<String>,
}

/// What a labeller gets when they ask for work.
#[derive(Debug)]
pub enum Lease {
    Task(TaskView, TaskRules),
    /// Nothing: they are paused in the project, for this reason.
    Paused(String),
    /// Nothing is left for them.
    Empty,
}

impl Lease {
    /// The leased task, if one was leased.
    pub fn task(self) -> Option<(TaskView, TaskRules)> {
        match self {
            Lease::Task(view, rules) => Some((view, rules)),
            _ => None,
        }
    }

    /// The leased task, borrowed, if one was leased.
    pub fn as_task(&self) -> Option<(&TaskView, &TaskRules)> {
        match self {
            Lease::Task(view, rules) => Some((view, rules)),
            _ => None,
        }
    }
}

impl NextRow {
    /// `None` when the caller may not see the project.
    fn into_lease(self, slug: &str) -> Option<Lease> {
        if self.member != Some(true) {
            return None;
        }
        if let (None, Some(reason)) = (self.task, &self.paused) {
            return Some(Lease::Paused(reason.clone()));
        }
        // The functions answer a task's responses as '[]' rather than NULL when it has none.
        Some(match (self.task, self.prompt, self.expires_at, self.kind, self.responses) {
            (Some(task_id), Some(Json(prompt)), Some(expires_at), Some(kind), Some(Json(responses))) => {
                let rules = TaskRules {
                    slug: slug.to_string(),
                    kind,
                    allow_ties: self.allow_ties.unwrap_or(false),
                    rating_enabled: self.rating_enabled.unwrap_or(false),
                    flags: self.flags.unwrap_or_default(),
                    response_ids: self.response_ids.unwrap_or_default(),
                    check_kind: self.check_kind,
                };
                Lease::Task(TaskView { task_id, prompt, responses, expires_at }, rules)
            }
            _ => Lease::Empty,
        })
    }
}

/// The caller's live lease in project `slug`, or a new one (`rl_next_task` and `rl_take`: the
/// candidate item is locked FOR NO KEY UPDATE SKIP LOCKED and its need re-checked under the
/// lock, so concurrent requests never over-lease), with the rules its submission is checked
/// against. `None` when the caller may not see the project.
pub async fn lease_next(conn: &mut PgConnection, slug: &str, user: UserId) -> sqlx::Result<Option<Lease>> {
    let row = sqlx::query_as!(
        NextRow,
        r#"SELECT member, task AS "task: TaskId", prompt AS "prompt: Json<Box<RawValue>>", expires_at,
                  responses AS "responses: Json<Box<RawValue>>", response_ids AS "response_ids: Vec<ResponseId>", kind AS "kind: TaskKind",
                  allow_ties, rating_enabled, flags, check_kind, paused
             FROM rl_next_task($1, $2, $3)"#,
        slug,
        user as UserId,
        TaskId::new() as TaskId,
    )
    .fetch_one(conn)
    .await?;
    Ok(row.into_lease(slug))
}

/// What a submission is checked against: the task's project rules and its responses in
/// position order. Only for the caller's own task in a project they still belong to.
#[derive(Debug, Clone)]
pub struct TaskRules {
    pub slug: String,
    pub kind: TaskKind,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub flags: Vec<String>,
    pub response_ids: Vec<ResponseId>,
    /// 'onboarding' or 'gold' when the task is a quality check (never shown to the labeller).
    pub check_kind: Option<String>,
}

pub async fn rules(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<TaskRules>> {
    sqlx::query_as!(
        TaskRules,
        r#"SELECT p.slug, p.kind AS "kind: TaskKind", p.allow_ties, p.rating_enabled, p.flags, t.check_kind,
                  COALESCE((SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = t.item_id), '{}')
                      AS "response_ids!: Vec<ResponseId>"
             FROM tasks t JOIN projects p ON p.id = t.project_id JOIN users u ON u.id = t.user_id
             LEFT JOIN memberships m ON m.project_id = p.id AND m.user_id = u.id
            WHERE t.id = $1 AND t.user_id = $2 AND (m.user_id IS NOT NULL OR u.is_admin)"#,
        task as TaskId,
        user as UserId,
    )
    .fetch_optional(conn)
    .await
}

/// What became of a submission.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored(JudgementId),
    Repeat(JudgementId),
    KeyReused,
    NotFound,
    AlreadySubmitted,
    Skipped,
    Expired,
    /// The lease had lapsed and the batch could not wait for the item's lock: send it again
    /// alone (`wait`).
    Retry,
}

fn outcome(outcome: &str, judgement: Option<JudgementId>) -> Outcome {
    match (outcome, judgement) {
        ("stored", Some(j)) => Outcome::Stored(j),
        ("repeat", Some(j)) => Outcome::Repeat(j),
        ("key_reused", _) => Outcome::KeyReused,
        ("submitted", _) => Outcome::AlreadySubmitted,
        ("skipped", _) => Outcome::Skipped,
        ("expired", _) => Outcome::Expired,
        ("retry", _) => Outcome::Retry,
        _ => Outcome::NotFound,
    }
}

/// One checked submission, as `rl_submit_batch` reads it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubmitEntry {
    pub task: TaskId,
    pub user: UserId,
    pub judgement: JudgementId,
    pub key: String,
    pub ranks: Option<Vec<i16>>,
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub demonstration: Option<String>,
    pub flags: serde_json::Map<String, Value>,
    pub rating: Option<i16>,
    pub comment: String,
    /// Whether a stored or repeated judgement also leases the caller's next task.
    pub next: bool,
    pub next_task: TaskId,
    /// The project's slug, kept with the next lease's rules (not sent).
    #[serde(skip)]
    pub slug: String,
}

impl SubmitEntry {
    pub fn new(task: TaskId, user: UserId, s: &Submission, slug: &str, next: bool) -> Self {
        SubmitEntry {
            task,
            user,
            judgement: JudgementId::new(),
            key: s.idempotency_key.clone(),
            ranks: s.ranking.as_ref().map(|r| r.ranks().to_vec()),
            strength: s.strength,
            both_bad: s.both_bad,
            demonstration: s.demonstration.clone(),
            flags: s.flags.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect(),
            rating: s.rating,
            comment: s.comment.clone(),
            next,
            next_task: TaskId::new(),
            slug: slug.to_string(),
        }
    }
}

/// What a submission came to: its outcome and, when the next task was asked for and the
/// judgement was stored or repeated, the caller's next lease.
pub type Submitted = (Outcome, Option<Lease>);

/// Stores checked judgements in one call and one transaction (`rl_submit_batch`: per entry,
/// locks the task in task order, checks the caller still belongs to the project, honours the
/// idempotency key, refuses a lapsed lease whose slot others have taken, and counts the item;
/// with `next`, leases the caller's next task). Without `wait`, a submission on a lapsed lease
/// comes back as [`Outcome::Retry`]. Results are in the entries' order.
pub async fn submit_batch(conn: &mut PgConnection, entries: &[SubmitEntry], wait: bool) -> sqlx::Result<Vec<Submitted>> {
    let rows = sqlx::query!(
        r#"SELECT idx, outcome, judgement AS "judgement: JudgementId",
                  member, task AS "task: TaskId", prompt AS "prompt: Json<Box<RawValue>>", expires_at,
                  responses AS "responses: Json<Box<RawValue>>", response_ids AS "response_ids: Vec<ResponseId>", kind AS "kind: TaskKind",
                  allow_ties, rating_enabled, flags, check_kind, paused
             FROM rl_submit_batch($1, $2)"#,
        Json(entries) as Json<&[SubmitEntry]>,
        wait,
    )
    .fetch_all(conn)
    .await?;
    let mut results: Vec<Option<Submitted>> = entries.iter().map(|_| None).collect();
    for row in rows {
        let Some(i) = row.idx.and_then(|i| usize::try_from(i).ok()).and_then(|i| i.checked_sub(1)).filter(|&i| i < entries.len()) else { continue };
        let outcome = outcome(row.outcome.as_deref().unwrap_or(""), row.judgement);
        let next_row = NextRow {
            member: row.member,
            task: row.task,
            prompt: row.prompt,
            expires_at: row.expires_at,
            responses: row.responses,
            response_ids: row.response_ids,
            kind: row.kind,
            allow_ties: row.allow_ties,
            rating_enabled: row.rating_enabled,
            flags: row.flags,
            check_kind: row.check_kind,
            paused: row.paused,
        };
        let next = (entries[i].next && matches!(outcome, Outcome::Stored(_) | Outcome::Repeat(_)))
            .then(|| next_row.into_lease(&entries[i].slug).unwrap_or(Lease::Empty));
        results[i] = Some((outcome, next));
    }
    results.into_iter().map(|r| r.ok_or_else(|| sqlx::Error::Protocol("rl_submit_batch answered no row for an entry".into()))).collect()
}

/// Whether a task exists at all (whoever holds it).
pub async fn exists(conn: &mut PgConnection, task: TaskId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1) AS "exists!""#, task as TaskId).fetch_one(conn).await
}

/// The instructions of the item behind `user`'s task (`None` when it has none or is not theirs).
pub async fn instructions(conn: &mut PgConnection, task: TaskId, user: UserId) -> sqlx::Result<Option<String>> {
    let row = sqlx::query_scalar!(
        "SELECT i.instructions FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1 AND t.user_id = $2",
        task as TaskId,
        user as UserId,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.flatten())
}

/// Gives a leased task back with a reason; the labeller will not be offered the item again.
/// Only while they are still a member of the project (or a site admin), as for a submission.
pub async fn skip(conn: &mut PgConnection, task: TaskId, user: UserId, reason: &SkipReason) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE tasks SET status = 'skipped', skip_reason = $3 WHERE id = $1 AND user_id = $2 AND status = 'leased'
           AND (EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = tasks.project_id AND m.user_id = $2)
                OR EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.is_admin))",
        task as TaskId,
        user as UserId,
        reason.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Progress for the labelling page: judged today by the caller, and items still open to them.
pub async fn progress(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM judgements WHERE project_id = $1 AND user_id = $2 AND created_at >= date_trunc('day', now())) AS "today!",
                (SELECT count(*) FROM items i JOIN projects p ON p.id = i.project_id WHERE i.project_id = $1 AND i.is_open
                   AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = $2 AND t.status <> 'leased')
                   AND (rl_taken(i.id) < p.overlap
                        OR EXISTS (SELECT 1 FROM tasks t WHERE t.item_id = i.id AND t.user_id = $2 AND t.status = 'leased' AND t.expires_at > now())))
                   AS "left!""#,
        project as ProjectId,
        user as UserId,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.today, row.left))
}
