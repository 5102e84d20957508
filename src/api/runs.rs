//! Training runs, schedules, the leaderboard and the reward model's agreement with people.
//! Everything here is for the project's leads (labellers are blind to model names).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::runs as dbr;
use crate::db::runs::{RmAgreement, Run};
use crate::db::schedules as dbs;
use crate::db::schedules::Schedule;
use crate::domain::leaderboard::Entry;
use crate::domain::runs::RunSpec;
use crate::domain::runs::{RunKind, RunStatus};
use crate::domain::{JudgementId, Role, RunId, ScheduleId};
use crate::services::runs::{self as service, ScheduleRequest};
use crate::services::watchdog::Watchdog;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// A run as the API and the runs page's form give it, before it is parsed into a [`RunSpec`].
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartBody {
    #[schema(value_type = RunKind)]
    pub kind: String,
    /// Hyper-parameters (see the runs page for each kind's); unknown keys are refused.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: Value,
    /// What the run starts from: `{"export_id"?, "base_model"?, "run_id"?, …}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
}

/// The id of what was created.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedId {
    pub id: uuid::Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// A run with the last value of each of its metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    /// The last value of each metric the trainer reported.
    #[schema(value_type = Object)]
    pub metrics: serde_json::Map<String, Value>,
}

/// Every metrics row a run's trainer reported, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunMetrics {
    pub id: RunId,
    pub status: RunStatus,
    /// `{"step", "loss", …}` per report.
    #[schema(value_type = Vec<Object>)]
    pub metrics: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// Runs cancelled (the run and those chained after it).
    pub cancelled: i64,
}

/// Queues a training run.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/runs", operation_id = "start_run", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = StartBody,
    responses((status = 201, description = "Queued.", body = CreatedId),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<StartBody>) -> Result<HttpResponse, ApiError> {
    let (p, body) = (project(&state, &auth, &slug, Role::Lead).await?, body.into_inner());
    let spec = RunSpec::parse(&body.kind, &body.config, &body.input, p.kind).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    let id = service::start_run(&mut conn, &p, auth.user.id, spec).await.map_err(AppError::from)?;
    Ok(HttpResponse::Created().json(CreatedId { id: id.0 }))
}

/// The project's runs, newest first (at most 200).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/runs", operation_id = "list_runs", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The runs.", body = RunList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(RunList { runs: dbr::list(&mut conn, p.id, 200).await? }))
}

/// An id from the path; one that does not parse names nothing.
fn path_id<T: std::str::FromStr>(text: &str) -> Result<T, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

/// A run and the last value of each of its metrics.
#[utoipa::path(get, path = "/api/v1/runs/{id}", operation_id = "get_run", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 200, description = "The run.", body = RunDetail),
              (status = 404, description = "No such run, or the caller is not a lead of its project.", body = ErrorBody)))]
pub async fn show(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let mut last = dbr::last_values(&mut conn, &[run.id]).await?;
    let metrics = last.remove(&run.id).unwrap_or_default();
    Ok(HttpResponse::Ok().json(RunDetail { run, metrics }))
}

/// Every metrics row of a run, in order (poll it to follow a run).
#[utoipa::path(get, path = "/api/v1/runs/{id}/metrics", operation_id = "run_metrics", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 200, description = "The run's status and metrics.", body = RunMetrics),
              (status = 404, description = "No such run, or the caller is not a lead of its project.", body = ErrorBody)))]
pub async fn metrics(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let metrics: Vec<Value> = dbr::metrics(&mut conn, run.id).await?.into_iter().map(|m| m.data).collect();
    Ok(HttpResponse::Ok().json(RunMetrics { id: run.id, status: run.status, metrics }))
}

/// Cancels a queued or running run and the runs chained after it.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 200, description = "Cancelled.", body = Cancelled),
              (status = 404, description = "No such run, or the caller is not a lead of its project.", body = ErrorBody),
              (status = 409, description = "The run has already finished.", body = ErrorBody)))]
pub async fn cancel(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let n = dbr::cancel(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    if n == 0 {
        return Err(AppError::Conflict("the run has already finished".into()).into());
    }
    Ok(HttpResponse::Ok().json(Cancelled { cancelled: n as i64 }))
}

/// A spot check's over-optimisation figures: per √KL-grid checkpoint of its PPO run, the
/// reward model's score, the ensemble's disagreement and people's win rate against the start
/// (with its count and 95% interval); Gao's curve fitted to the human points and its turnover;
/// and the gate a schedule's next step waits on.
#[utoipa::path(get, path = "/api/v1/runs/{id}/watchdog", operation_id = "run_watchdog", tag = "runs",
    params(("id" = String, Path, description = "The spotcheck run's id.")),
    responses((status = 200, description = "The figures (no points until the spot check has succeeded).", body = Watchdog),
              (status = 404, description = "No such spotcheck run, or the caller is not a lead of its project.", body = ErrorBody)))]
pub async fn watchdog(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let run = dbr::get_for_lead(&mut conn, path_id::<RunId>(&id)?, auth.user.id).await?.ok_or(AppError::NotFound)?;
    Ok(HttpResponse::Ok().json(crate::services::watchdog::figures(&mut conn, &run).await?))
}

const METHOD: &str = "Bradley–Terry (MM), ties as half wins, 95% bootstrap intervals over comparisons; strength in log-odds, elo = 1000 + 400·strength/ln 10";

/// A model on the leaderboard and the run that made it, if one did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardModel {
    #[serde(flatten)]
    pub entry: Entry,
    pub run_id: Option<RunId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Leaderboard {
    /// How the strengths are fitted.
    pub method: &'static str,
    pub models: Vec<LeaderboardModel>,
}

/// The models ranked by the people's pairwise judgements.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/leaderboard", operation_id = "leaderboard", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The leaderboard.", body = Leaderboard),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn leaderboard(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let models = dbr::leaderboard(&mut conn, p.id).await?.into_iter().map(|(entry, run_id)| LeaderboardModel { entry, run_id }).collect();
    Ok(HttpResponse::Ok().json(Leaderboard { method: METHOD, models }))
}

/// A comparison the reward model orders against the labeller.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisagreementView {
    pub judgement_id: JudgementId,
    pub labeller: String,
    pub prompt: String,
    pub preferred: String,
    pub other: String,
    pub preferred_reward: f64,
    pub other_reward: f64,
}

/// The newest reward model's agreement with people, with its disagreements listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgreementView {
    #[serde(flatten)]
    #[schema(inline)]
    pub agreement: AgreementFigures,
    pub disagreements: Vec<DisagreementView>,
}

/// [`RmAgreement`]'s figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgreementFigures {
    pub run_id: RunId,
    /// Share of human comparisons the model orders the same way.
    pub overall: Option<f64>,
    pub pairs: i64,
    /// `[labeller, agreement, pairs]` per labeller.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub per_labeller: Vec<(String, Option<f64>, i64)>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RmAgreementBody {
    /// `null` until a reward model has been trained and scored.
    pub rm_agreement: Option<AgreementView>,
}

impl From<RmAgreement> for AgreementView {
    fn from(a: RmAgreement) -> Self {
        let disagreements = a
            .disagreements
            .iter()
            .map(|d| DisagreementView {
                judgement_id: d.judgement_id,
                labeller: d.labeller.clone(),
                prompt: d.prompt(),
                preferred: d.preferred.clone(),
                other: d.other.clone(),
                preferred_reward: d.preferred_reward,
                other_reward: d.other_reward,
            })
            .collect();
        let agreement = AgreementFigures { run_id: a.run_id, overall: a.overall, pairs: a.pairs, per_labeller: a.per_labeller };
        Self { agreement, disagreements }
    }
}

/// How often the newest reward model orders a human comparison the same way.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/rm-agreement", operation_id = "rm_agreement", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The agreement, or `null`.", body = RmAgreementBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn rm_agreement(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let a = dbr::rm_agreement(&mut conn, p.id).await?;
    Ok(HttpResponse::Ok().json(RmAgreementBody { rm_agreement: a.map(AgreementView::from) }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

/// Schedules a chain of runs: on a cron expression and/or once enough new comparisons came in.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/schedules", operation_id = "create_schedule", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = ScheduleRequest,
    responses((status = 201, description = "Created.", body = CreatedId),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn schedule_create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<ScheduleRequest>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let id = service::create_schedule(&mut conn, &p, auth.user.id, &body.into_inner()).await.map_err(AppError::from)?;
    Ok(HttpResponse::Created().json(CreatedId { id: id.0 }))
}

/// The project's schedules.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/schedules", operation_id = "list_schedules", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The schedules.", body = ScheduleList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn schedule_list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(ScheduleList { schedules: dbs::list(&mut conn, p.id).await? }))
}

/// Deletes a schedule (runs it already queued stay).
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/schedules/{id}", operation_id = "delete_schedule", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The schedule's id.")),
    responses((status = 204, description = "Deleted."),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or schedule.", body = ErrorBody)))]

pub async fn schedule_delete(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    if !dbs::delete(&mut conn, p.id, path_id::<ScheduleId>(&id)?).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(HttpResponse::NoContent().finish())
}
