//! Leasing tasks and submitting judgements.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::project;
use crate::db::tasks::{self as dbt, Lease, Outcome, TaskView};
use crate::domain::ranking::{Rules, Submission, SubmissionInput};
use crate::domain::{JudgementId, Role, SkipReason, TaskId};
use crate::services::{labelling, quality};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::metrics::Metrics;
use crate::web::AppState;

#[derive(Deserialize, IntoParams)]
pub struct NextQuery {
    /// With `render=1` the task also carries its instructions and its Markdown rendered to
    /// sanitized HTML (`instructions`, `instructions_html`, and `html` beside each prompt turn
    /// and response), as the labelling page shows it.
    #[serde(default)]
    #[param(minimum = 0, maximum = 255)]
    render: Option<u8>,
}

/// Leases the caller's next task in the project (204 when none is left for them).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/tasks/next", operation_id = "next_task", tag = "labelling",
    params(("slug" = String, Path, description = "The project's slug."), NextQuery),
    responses((status = 200, description = "A task leased to the caller until `expires_at`.", body = TaskView),
              (status = 204, description = "No task is left for the caller."),
              (status = 403, description = "`paused`: the caller is paused in this project (the message says why).", body = ErrorBody),
              (status = 404, description = "No such project, or the caller is not a member.", body = ErrorBody)))]
pub async fn next(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<NextQuery>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let lease = dbt::lease_next(&mut conn, &slug, auth.user.id).await?.ok_or(AppError::NotFound)?;
    drop(conn);
    Ok(match lease {
        Lease::Task(view, rules) => {
            state.task_rules.remember(view.task_id, auth.user.id, rules);
            if q.render == Some(1) {
                HttpResponse::Ok().json(labelling::presented(&state.pool, &view, auth.user.id).await?)
            } else {
                HttpResponse::Ok().json(view)
            }
        }
        Lease::Paused(reason) => paused(&reason),
        Lease::Empty => HttpResponse::NoContent().finish(),
    })
}

/// The task as JSON: the API's view, or the page's (`render`).
async fn shown(state: &AppState, view: &dbt::TaskView, user: crate::domain::UserId, render: bool) -> Result<serde_json::Value, AppError> {
    if render {
        labelling::presented(&state.pool, view, user).await
    } else {
        Ok(serde_json::to_value(view).map_err(anyhow::Error::from)?)
    }
}

/// 403 `paused`: the caller gets no tasks in this project until a lead lifts their pause.
fn paused(reason: &str) -> HttpResponse {
    HttpResponse::Forbidden().json(serde_json::json!({"error": {"code": "paused", "message": format!("You are paused in this project: {reason}")}}))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Judgements the caller stored today (UTC).
    pub done_today: i64,
    /// Tasks still open to the caller.
    pub left: i64,
}

/// The caller's progress in the project.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/progress", operation_id = "progress", tag = "labelling",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The caller's progress.", body = Progress),
              (status = 404, description = "No such project, or the caller is not a member.", body = ErrorBody)))]
pub async fn progress(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let (done_today, left) = labelling::progress(&state.pool, &p, auth.user.id).await?;
    Ok(HttpResponse::Ok().json(Progress { done_today, left }))
}

#[derive(Deserialize, IntoParams)]
pub struct SubmitQuery {
    /// With `next=1` the answer also carries the caller's next task (`null` when none is
    /// left), saving the labelling page a round trip per task.
    #[serde(default)]
    #[param(minimum = 0, maximum = 255)]
    next: Option<u8>,
    /// With `render=1` that next task comes as the labelling page shows it (see [`NextQuery`]).
    #[serde(default)]
    render: Option<u8>,
}

/// A stored judgement (or a skipped task).
#[derive(Debug, Serialize, ToSchema)]
pub struct Stored {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement_id: Option<JudgementId>,
    pub task_id: TaskId,
    /// `stored` or `skipped`.
    pub status: &'static str,
    /// With `next=1`: the caller's next task, `null` when none is left.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable, value_type = Option<TaskView>)]
    pub next: Option<Option<serde_json::Value>>,
    /// After an onboarding gold task: the reference judgement and its explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub reference: Option<serde_json::Value>,
    /// With `next=1`, when the caller has just been paused: why (`next` is then `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// Submits the judgement of a leased task. Sending the same `idempotency_key` again answers
/// 200 with the judgement already stored.
#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/judgement", operation_id = "submit_judgement", tag = "labelling",
    params(("task_id" = String, Path, description = "The task's id."), SubmitQuery),
    request_body = SubmissionInput,
    responses((status = 201, description = "Stored.", body = Stored),
              (status = 200, description = "Already stored under this idempotency key.", body = Stored),
              (status = 404, description = "No such task leased to the caller.", body = ErrorBody),
              (status = 409, description = "The task was already submitted or skipped, the lease expired, or the key was used for another task.", body = ErrorBody)))]
pub async fn submit(
    state: web::Data<AppState>,
    auth: Auth,
    task: web::Path<String>,
    q: web::Query<SubmitQuery>,
    body: Json<SubmissionInput>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let task_id: TaskId = task.parse().map_err(|_| AppError::NotFound)?;
    let user = auth.user.id;
    let cached = state.task_rules.get(task_id, user);
    let leased_here = cached.is_some();
    let rules = match cached {
        Some(r) => r,
        None => {
            let mut conn = state.pool.acquire().await?;
            std::sync::Arc::new(dbt::rules(&mut conn, task_id, user).await?.ok_or(AppError::NotFound)?)
        }
    };
    let checked = Rules { kind: rules.kind, allow_ties: rules.allow_ties, rating_enabled: rules.rating_enabled, flags: &rules.flags };
    let submission = Submission::parse(body.into_inner(), &rules.response_ids, &checked).map_err(AppError::Invalid)?;
    let conflict = |m: &str| Err(ApiError(AppError::Conflict(m.into())));
    let entry = dbt::SubmitEntry::new(task_id, user, &submission, &rules.slug, q.next == Some(1));
    let (outcome, next) = state.submits.submit(entry).await?;
    state.task_rules.forget(task_id);
    let (status, judgement) = match outcome {
        Outcome::Stored(j) => {
            metrics.judgement_stored(&rules.slug);
            (actix_web::http::StatusCode::CREATED, j)
        }
        Outcome::Repeat(j) => (actix_web::http::StatusCode::OK, j),
        Outcome::KeyReused => return conflict("this idempotency_key was already used for another task"),
        Outcome::AlreadySubmitted => return conflict("this task was already submitted"),
        Outcome::Skipped => return conflict("this task was skipped"),
        Outcome::Expired => return conflict("your lease on this task expired and other labellers have since taken it; your work is not stored"),
        Outcome::NotFound | Outcome::Retry => {
            // This server leased the task, yet the database has no such task: its lease, which
            // commits without waiting for the disk, was lost when PostgreSQL restarted.
            if leased_here && !dbt::exists(&mut *state.pool.acquire().await?, task_id).await? {
                return conflict("your lease on this task was lost when the database restarted; your judgement was not stored; reload the page (or ask for the next task) to go on");
            }
            return Err(AppError::NotFound.into());
        }
    };
    let mut reference = None;
    let mut next = next;
    if status == actix_web::http::StatusCode::CREATED && rules.check_kind.is_some() {
        // A quality check: score it (maybe pausing the labeller, whose next lease is then
        // given back); after an onboarding task the labeller sees the reference.
        let checked = quality::after_check(&state.pool, task_id, user).await?;
        if let Some(r) = checked.reference {
            reference = Some(serde_json::to_value(r).map_err(anyhow::Error::from)?);
        }
        if let (Some(reason), Some(_)) = (checked.paused, &next) {
            next = Some(Lease::Paused(reason));
        }
    }
    let mut paused = None;
    let next = match next {
        None => None,
        Some(Lease::Task(view, rules)) => {
            state.task_rules.remember(view.task_id, user, rules);
            Some(Some(shown(&state, &view, user, q.render == Some(1)).await?))
        }
        Some(Lease::Paused(reason)) => {
            paused = Some(format!("You are paused in this project: {reason}"));
            Some(None)
        }
        Some(Lease::Empty) => Some(None),
    };
    Ok(HttpResponse::build(status).json(Stored { judgement_id: Some(judgement), task_id, status: "stored", next, reference, paused }))
}

#[derive(Deserialize, ToSchema)]
pub struct SkipBody {
    /// Why the task is skipped.
    #[schema(min_length = 1, max_length = 1000)]
    reason: String,
}

/// Skips a leased task; it goes to another labeller.
#[utoipa::path(post, path = "/api/v1/tasks/{task_id}/skip", operation_id = "skip_task", tag = "labelling",
    params(("task_id" = String, Path, description = "The task's id.")),
    request_body = SkipBody,
    responses((status = 200, description = "Skipped.", body = Stored),
              (status = 404, description = "No such task leased to the caller.", body = ErrorBody),
              (status = 409, description = "The task was already submitted or skipped.", body = ErrorBody)))]
pub async fn skip(state: web::Data<AppState>, auth: Auth, task: web::Path<String>, body: Json<SkipBody>) -> Result<HttpResponse, ApiError> {
    let task_id: TaskId = task.parse().map_err(|_| AppError::NotFound)?;
    let reason = SkipReason::parse(&body.reason).map_err(AppError::Invalid)?;
    labelling::skip(&state.pool, task_id, auth.user.id, &reason).await?;
    Ok(HttpResponse::Ok().json(Stored { judgement_id: None, task_id, status: "skipped", next: None, reference: None, paused: None }))
}
