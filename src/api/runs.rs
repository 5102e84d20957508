//! Training runs, schedules, the leaderboard and the reward model's agreement with people.
//! Everything here is for the project's leads (labellers are blind to model names).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::project;
use crate::db::runs as dbr;
use crate::db::schedules as dbs;
use crate::domain::runs::RunSpec;
use crate::domain::{Role, RunId, ScheduleId};
use crate::services::runs::{self as service, ScheduleRequest};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// A run as the API and the runs page's form give it, before it is parsed into a [`RunSpec`].
#[derive(Debug, Deserialize)]
pub struct StartBody {
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub input: Value,
}

pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<StartBody>) -> Result<HttpResponse, ApiError> {
    let (p, body) = (project(&state, &auth, &slug, Role::Lead).await?, body.into_inner());
    let spec = RunSpec::parse(&body.kind, &body.config, &body.input, p.kind).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    let id = service::start_run(&mut conn, &p, auth.user.id, spec).await.map_err(AppError::from)?;
    Ok(HttpResponse::Created().json(json!({"id": id})))
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(json!({"runs": dbr::list(&mut conn, p.id, 200).await?})))
}

/// An id from the path; one that does not parse names nothing.
fn path_id<T: std::str::FromStr>(text: &str) -> Result<T, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

pub async fn show(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let mut last = dbr::last_values(&mut conn, &[run.id]).await?;
    let mut out = serde_json::to_value(&run).map_err(anyhow::Error::from)?;
    out["metrics"] = Value::Object(last.remove(&run.id).unwrap_or_default());
    Ok(HttpResponse::Ok().json(out))
}

pub async fn metrics(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let rows: Vec<Value> = dbr::metrics(&mut conn, run.id).await?.into_iter().map(|m| m.data).collect();
    Ok(HttpResponse::Ok().json(json!({"id": run.id, "status": run.status, "metrics": rows})))
}

pub async fn cancel(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let n = dbr::cancel(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
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
    Ok(
        json!({"method": "Bradley–Terry (MM), ties as half wins, 95% bootstrap intervals over comparisons; strength in log-odds, elo = 1000 + 400·strength/ln 10", "models": models}),
    )
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
        v["disagreements"] = a
            .disagreements
            .iter()
            .map(|d| {
                json!({"judgement_id": d.judgement_id, "labeller": d.labeller, "prompt": d.prompt(), "preferred": d.preferred,
            "other": d.other, "preferred_reward": d.preferred_reward, "other_reward": d.other_reward})
            })
            .collect();
        v
    });
    Ok(HttpResponse::Ok().json(json!({"rm_agreement": out})))
}

pub async fn schedule_create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<ScheduleRequest>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let id = service::create_schedule(&mut conn, &p, auth.user.id, &body.into_inner()).await.map_err(AppError::from)?;
    Ok(HttpResponse::Created().json(json!({"id": id})))
}

pub async fn schedule_list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(json!({"schedules": dbs::list(&mut conn, p.id).await?})))
}

pub async fn schedule_delete(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    if !dbs::delete(&mut conn, p.id, path_id::<ScheduleId>(&id)?).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(HttpResponse::NoContent().finish())
}
