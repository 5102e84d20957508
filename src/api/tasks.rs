//! Leasing tasks and submitting judgements.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::project;
use crate::db::tasks as dbt;
use crate::domain::ranking::{Rules, Submission, SubmissionInput};
use crate::domain::{Role, TaskId};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::AppState;

pub async fn next(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let mut tx = state.pool.begin().await?;
    let task = dbt::lease_next(&mut tx, &p, auth.user.id).await?;
    tx.commit().await?;
    Ok(match task {
        Some(t) => HttpResponse::Ok().json(t),
        None => HttpResponse::NoContent().finish(),
    })
}

pub async fn progress(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let mut conn = state.pool.acquire().await?;
    let (done_today, left) = dbt::progress(&mut conn, p.id, auth.user.id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"done_today": done_today, "left": left})))
}

pub async fn submit(state: web::Data<AppState>, auth: Auth, task: web::Path<String>, body: web::Json<SubmissionInput>) -> Result<HttpResponse, ApiError> {
    let task_id: TaskId = task.parse().map_err(|_| AppError::NotFound)?;
    let user = auth.user.id;
    let mut tx = state.pool.begin().await?;
    let task = dbt::lock_for_submit(&mut tx, task_id, user).await?.ok_or(AppError::NotFound)?;
    let input = body.into_inner();
    // A fresh statement after the lock: it sees a concurrent submit of the same key.
    if let Some((judgement, of_task)) = dbt::by_idempotency_key(&mut tx, user, input.idempotency_key.trim()).await? {
        if of_task != Some(task_id) {
            return Err(AppError::Conflict("this idempotency_key was already used for another task".into()).into());
        }
        return Ok(HttpResponse::Ok().json(stored(judgement, task_id)));
    }
    match task.status.as_str() {
        "submitted" => return Err(AppError::Conflict("this task was already submitted".into()).into()),
        "skipped" => return Err(AppError::Conflict("this task was skipped".into()).into()),
        _ => {}
    }
    let rules = Rules { kind: task.kind, allow_ties: task.allow_ties, rating_enabled: task.rating_enabled, flags: &task.flags };
    let submission = Submission::parse(input, &task.response_ids, &rules).map_err(AppError::Invalid)?;
    if !task.live && !dbt::room_for_late_submit(&mut tx, task.item_id, user, task.overlap).await? {
        return Err(AppError::Conflict("your lease on this task expired and other labellers have since taken it; your work is not stored".into()).into());
    }
    let judgement = dbt::store_judgement(&mut tx, &task, user, &submission).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(stored(judgement, task_id)))
}

fn stored(judgement: crate::domain::JudgementId, task: TaskId) -> serde_json::Value {
    serde_json::json!({"judgement_id": judgement, "task_id": task, "status": "stored"})
}

#[derive(Deserialize)]
pub struct SkipBody {
    reason: String,
}

pub async fn skip(state: web::Data<AppState>, auth: Auth, task: web::Path<String>, body: web::Json<SkipBody>) -> Result<HttpResponse, ApiError> {
    let task_id: TaskId = task.parse().map_err(|_| AppError::NotFound)?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(AppError::Invalid("reason: say in 1-1000 characters why you skip this task".into()).into());
    }
    let mut conn = state.pool.acquire().await?;
    if !dbt::skip(&mut conn, task_id, auth.user.id, reason).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"task_id": task_id, "status": "skipped"})))
}
