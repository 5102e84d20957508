//! A project's queue strategy over JSON: what it is and how far the newest reward model's
//! scores reach, and changing it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::queue::QueueState;
use crate::domain::queue::QueueStrategy;
use crate::domain::Role;
use crate::services::queue;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// The queue strategy, the rm run whose scores order the queue and how many open items it scored.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/queue", operation_id = "queue_state", tag = "projects", params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The queue.", body = QueueState),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(queue::state(&state.pool, &p).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    /// fifo (import order), newest-first, uncertainty or thompson.
    #[schema(value_type = QueueStrategy)]
    strategy: String,
}

/// Sets the queue strategy.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/queue", operation_id = "set_queue_strategy", tag = "projects", params(("slug" = String, Path, description = "The project's slug.")),
    request_body = QueueBody,
    responses((status = 200, description = "The queue now.", body = QueueState),
              (status = 400, description = "Not a strategy.", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn set(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<QueueBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let strategy: QueueStrategy = body.strategy.parse().map_err(|e| AppError::Invalid(format!("strategy: {e}")))?;
    Ok(HttpResponse::Ok().json(queue::set_strategy(&state.pool, &p, strategy).await?))
}
