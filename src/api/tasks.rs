//! Leasing tasks and submitting judgements.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::project;
use crate::db::tasks::{self as dbt, Lease, Outcome};
use crate::domain::ranking::{Rules, Submission, SubmissionInput};
use crate::domain::{Role, SkipReason, TaskId};
use crate::services::{labelling, quality};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

pub async fn next(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(match dbt::lease_next(&mut conn, &slug, auth.user.id).await?.ok_or(AppError::NotFound)? {
        Lease::Task(view, rules) => {
            state.task_rules.remember(view.task_id, auth.user.id, rules);
            HttpResponse::Ok().json(view)
        }
        Lease::Paused(reason) => paused(&reason),
        Lease::Empty => HttpResponse::NoContent().finish(),
    })
}

/// 403 `paused`: the caller gets no tasks in this project until a lead lifts their pause.
fn paused(reason: &str) -> HttpResponse {
    HttpResponse::Forbidden().json(serde_json::json!({"error": {"code": "paused", "message": format!("You are paused in this project: {reason}")}}))
}

pub async fn progress(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let (done_today, left) = labelling::progress(&state.pool, &p, auth.user.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"done_today": done_today, "left": left})))
}

#[derive(Deserialize)]
pub struct SubmitQuery {
    /// With `next=1` the answer also carries the caller's next task (`null` when none is
    /// left), saving the labelling page a round trip per task.
    #[serde(default)]
    next: Option<u8>,
}

pub async fn submit(
    state: web::Data<AppState>,
    auth: Auth,
    task: web::Path<String>,
    q: web::Query<SubmitQuery>,
    body: Json<SubmissionInput>,
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
        Outcome::Stored(j) => (actix_web::http::StatusCode::CREATED, j),
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
    let mut body = stored(judgement, task_id);
    let mut next = next;
    if status == actix_web::http::StatusCode::CREATED && rules.check_kind.is_some() {
        // A quality check: score it (maybe pausing the labeller, whose next lease is then
        // given back); after an onboarding task the labeller sees the reference.
        let checked = quality::after_check(&state.pool, task_id, user).await?;
        if let Some(reference) = checked.reference {
            body["reference"] = serde_json::to_value(reference).map_err(anyhow::Error::from)?;
        }
        if let (Some(reason), Some(_)) = (checked.paused, &next) {
            next = Some(Lease::Paused(reason));
        }
    }
    match next {
        Some(Lease::Task(view, rules)) => {
            body["next"] = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
            state.task_rules.remember(view.task_id, user, rules);
        }
        Some(Lease::Paused(reason)) => {
            body["next"] = serde_json::Value::Null;
            body["paused"] = serde_json::json!(format!("You are paused in this project: {reason}"));
        }
        Some(Lease::Empty) => body["next"] = serde_json::Value::Null,
        None => {}
    }
    Ok(HttpResponse::build(status).json(body))
}

fn stored(judgement: crate::domain::JudgementId, task: TaskId) -> serde_json::Value {
    serde_json::json!({"judgement_id": judgement, "task_id": task, "status": "stored"})
}

#[derive(Deserialize)]
pub struct SkipBody {
    reason: String,
}

pub async fn skip(state: web::Data<AppState>, auth: Auth, task: web::Path<String>, body: Json<SkipBody>) -> Result<HttpResponse, ApiError> {
    let task_id: TaskId = task.parse().map_err(|_| AppError::NotFound)?;
    let reason = SkipReason::parse(&body.reason).map_err(AppError::Invalid)?;
    labelling::skip(&state.pool, task_id, auth.user.id, &reason).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"task_id": task_id, "status": "skipped"})))
}
