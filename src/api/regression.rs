//! Frozen regression sets and the figures of the project's runs on them (leads only).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::project;
use crate::db::regression::RegressionSet;
use crate::domain::{RegressionSetId, Role};
use crate::services::regression::{self as service, parse_threshold, FreezeRequest, RegressionReport};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct RegressionSetList {
    pub sets: Vec<RegressionSet>,
}

#[derive(Deserialize, IntoParams)]
pub struct ReportQuery {
    /// The largest drop from one run to the next that is not flagged (0 to 1; default 0.05).
    threshold: Option<String>,
}

/// Freezes the test split of one of the project's `preferences` exports as a regression set.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/regression-sets", operation_id = "freeze_regression_set", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = FreezeRequest,
    responses((status = 201, description = "Frozen.", body = RegressionSet),
              (status = 400, description = "A name or export that will not do (the message names the field).", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody),
              (status = 409, description = "The project already has a set of that name.", body = ErrorBody)))]
pub async fn freeze(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<FreezeRequest>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let set = service::freeze(&state.pool, &state.tmp_dir, &p, &auth.user, &body.into_inner()).await?;
    Ok(HttpResponse::Created().json(set))
}

/// The project's regression sets, the newest first.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/regression-sets", operation_id = "list_regression_sets", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The sets.", body = RegressionSetList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(RegressionSetList { sets: crate::db::regression::list(&mut conn, p.id).await? }))
}

/// Makes a set the project's active one: later rm, dpo and ppo runs are measured on it.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/regression-sets/{id}/activate", operation_id = "activate_regression_set", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The set's id.")),
    responses((status = 200, description = "The sets, the chosen one active.", body = RegressionSetList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or set.", body = ErrorBody)))]
pub async fn activate(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let id: RegressionSetId = id.parse().map_err(|_| AppError::NotFound)?;
    service::activate(&state.pool, &p, id).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(RegressionSetList { sets: crate::db::regression::list(&mut conn, p.id).await? }))
}

/// Each regression figure of the project's rm, dpo and ppo runs, per set, in creation order; a
/// drop beyond the threshold from one run to the next is flagged.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/regression", operation_id = "regression_report", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug."), ReportQuery),
    responses((status = 200, description = "The figures.", body = RegressionReport),
              (status = 400, description = "A threshold that is not a number from 0 to 1.", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn report(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<ReportQuery>) -> Result<HttpResponse, ApiError> {
    let threshold = parse_threshold(q.threshold.as_deref())?;
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(service::report(&state.pool, &p, threshold).await?))
}
