//! Training runs, schedules, the leaderboard and the reward model's agreement with people.
//! Everything here is for the project's leads (labellers are blind to model names).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::project;
use crate::db::runs::{self as dbr, NewRun};
use crate::domain::Role;
use crate::jobs::admit;
use crate::jobs::schedule::{check_chain, next_after, parse_cron, ChainStep};
use crate::jobs::worker::check_input;
use crate::jobs::{resolve_config, RunKind};
use crate::web::auth::Auth;
use crate::web::json::Json;
use crate::web::error::{ApiError, AppError};
use crate::web::AppState;

#[derive(Debug, Deserialize)]
pub struct StartBody {
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub input: Value,
}

/// Checks and queues a run of the project the caller leads.
pub async fn start_run(state: &AppState, auth: &Auth, slug: &str, body: StartBody) -> Result<uuid::Uuid, AppError> {
    let p = project(state, auth, slug, Role::Lead).await?;
    let kind: RunKind = body.kind.parse().map_err(|e| AppError::Invalid(format!("kind: {e}")))?;
    let config = resolve_config(kind, &body.config).map_err(AppError::Invalid)?;
    crate::jobs::check_for_project(kind, &config, p.kind).map_err(AppError::Invalid)?;
    check_input(kind, &body.input).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    admit::check(&mut conn, p.id, &[admit::Step { kind, config: &config, input: &body.input }], false).await.map_err(refused)?;
    let new = NewRun { project: p.id, kind, config: Value::Object(config), input: body.input, after_run: None, schedule: None, by: Some(auth.user.id) };
    Ok(dbr::insert(&mut conn, &new).await?)
}

fn refused(e: admit::Refusal) -> AppError {
    match e {
        admit::Refusal::Invalid(message) => AppError::Invalid(message),
        admit::Refusal::Database(e) => e.into(),
    }
}

pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<StartBody>) -> Result<HttpResponse, ApiError> {
    let id = start_run(&state, &auth, &slug, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(json!({"id": id})))
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(json!({"runs": dbr::list(&mut conn, p.id, 200).await?})))
}

fn run_id(text: &str) -> Result<uuid::Uuid, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

pub async fn show(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, run_id(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let mut last = dbr::last_values(&mut conn, &[run.id]).await?;
    let mut out = serde_json::to_value(&run).map_err(anyhow::Error::from)?;
    out["metrics"] = Value::Object(last.remove(&run.id).unwrap_or_default());
    Ok(HttpResponse::Ok().json(out))
}

pub async fn metrics(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, run_id(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let rows: Vec<Value> = dbr::metrics(&mut conn, run.id).await?.into_iter().map(|m| m.data).collect();
    Ok(HttpResponse::Ok().json(json!({"id": run.id, "status": run.status, "metrics": rows})))
}

pub async fn cancel(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let n = dbr::cancel(&mut conn, run_id(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    if n == 0 {
        return Err(AppError::Conflict("the run has already finished".into()).into());
    }
    Ok(HttpResponse::Ok().json(json!({"cancelled": n})))
}

/// The leaderboard as JSON.
pub async fn leaderboard_json(state: &AppState, project: crate::domain::ProjectId) -> Result<Value, AppError> {
    let mut conn = state.pool.acquire().await?;
    let board = dbr::leaderboard(&mut conn, project).await?;
    let models: Vec<Value> = board
        .into_iter()
        .map(|(e, run)| {
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            v["run_id"] = json!(run);
            v
        })
        .collect();
    Ok(json!({"method": "Bradley–Terry (MM), ties as half wins, 95% bootstrap intervals over comparisons; strength in log-odds, elo = 1000 + 400·strength/ln 10", "models": models}))
}

pub async fn leaderboard(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(leaderboard_json(&state, p.id).await?))
}

pub async fn rm_agreement(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let a = dbr::rm_agreement(&mut conn, p.id).await?;
    let out = a.map(|a| {
        let mut v = serde_json::to_value(&a).unwrap_or_default();
        v["disagreements"] = a.disagreements.iter().map(|d| json!({"judgement_id": d.judgement_id, "labeller": d.labeller, "prompt": d.prompt(), "preferred": d.preferred,
            "other": d.other, "preferred_reward": d.preferred_reward, "other_reward": d.other_reward})).collect();
        v
    });
    Ok(HttpResponse::Ok().json(json!({"rm_agreement": out})))
}

#[derive(Debug, Deserialize)]
pub struct ScheduleBody {
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub min_new_comparisons: Option<i64>,
    pub chain: Vec<ChainStep>,
}

/// Checks and stores a schedule of the project the caller leads.
pub async fn create_schedule(state: &AppState, auth: &Auth, slug: &str, body: ScheduleBody) -> Result<uuid::Uuid, AppError> {
    let p = project(state, auth, slug, Role::Lead).await?;
    let cron = body.cron.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if let Some(c) = cron {
        parse_cron(c).map_err(AppError::Invalid)?;
        if next_after(c, chrono::Utc::now()).is_none() {
            return Err(AppError::Invalid(format!("cron: {c:?} never fires (no date matches it)")));
        }
    }
    if body.min_new_comparisons.is_some_and(|n| n < 1) {
        return Err(AppError::Invalid("min_new_comparisons: expected at least 1".into()));
    }
    if cron.is_none() && body.min_new_comparisons.is_none() {
        return Err(AppError::Invalid("a schedule needs a cron expression, min_new_comparisons, or both".into()));
    }
    let steps = check_chain(&body.chain, p.kind).map_err(AppError::Invalid)?;
    let chain = serde_json::to_value(&body.chain).map_err(anyhow::Error::from)?;
    let mut conn = state.pool.acquire().await?;
    let steps: Vec<admit::Step> = steps.iter().zip(&body.chain).map(|((kind, config), s)| admit::Step { kind: *kind, config, input: &s.input }).collect();
    admit::check(&mut conn, p.id, &steps, true).await.map_err(refused)?;
    Ok(dbr::insert_schedule(&mut conn, p.id, cron, body.min_new_comparisons, &chain, auth.user.id).await?)
}

pub async fn schedule_create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<ScheduleBody>) -> Result<HttpResponse, ApiError> {
    let id = create_schedule(&state, &auth, &slug, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(json!({"id": id})))
}

pub async fn schedule_list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(json!({"schedules": dbr::schedules(&mut conn, p.id).await?})))
}

pub async fn schedule_delete(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    if !dbr::delete_schedule(&mut conn, p.id, run_id(&id)?).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(HttpResponse::NoContent().finish())
}
