//! Label quality for leads: the report (labellers' gold scores, careless-work signals, pauses,
//! agreement with chance levels), quality settings, lifting a pause, gold items, honeypots and
//! extra labellers for items where labellers disagree.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::quality as dbq;
use crate::domain::quality::QualitySettings;
use crate::domain::{ItemId, ResponseId, Role, UserId};
use crate::services::{self, quality};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// The quality report: per labeller their gold score (with its count and 95% interval), pause
/// and careless-work signals; agreement figures beside their chance levels; the settings.
/// `computed_at` and `judgements_counted` say which judgements the figures are from; on a large
/// project `updating: true` says newer ones are being counted in the background.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/quality", operation_id = "quality_report", tag = "quality", params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The report.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn report(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(quality::report(&state.pool, &state.quality, &p).await?))
}

/// Settings to change; fields left out keep their value (`pause_below: null` turns pausing off).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Gold tasks a new labeller gets first, each followed by its reference.
    gold_onboarding: Option<i32>,
    /// Share of later tasks that are gold (0 to 1).
    gold_rate: Option<f64>,
    /// Pause a labeller whose gold score's whole 95% interval is below this (`null`: never).
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<f64>, nullable)]
    pause_below: Option<Option<f64>>,
    pause_min_gold: Option<i32>,
    extra_max: Option<i32>,
    extra_below: Option<f64>,
    /// Share of judgements the review stream samples (0 to 1).
    review_rate: Option<f64>,
}

/// A field that may be absent (keep), `null` (clear) or a value.
mod serde_with_null {
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
        serde::Deserialize::deserialize(d).map(Some)
    }
}

impl SettingsBody {
    /// `current` with this body's fields applied, checked.
    pub fn apply(self, current: QualitySettings) -> Result<QualitySettings, String> {
        QualitySettings {
            gold_onboarding: self.gold_onboarding.unwrap_or(current.gold_onboarding),
            gold_rate: self.gold_rate.unwrap_or(current.gold_rate),
            pause_below: self.pause_below.unwrap_or(current.pause_below),
            pause_min_gold: self.pause_min_gold.unwrap_or(current.pause_min_gold),
            extra_max: self.extra_max.unwrap_or(current.extra_max),
            extra_below: self.extra_below.unwrap_or(current.extra_below),
            review_rate: self.review_rate.unwrap_or(current.review_rate),
        }
        .checked()
    }
}

/// Changes the quality settings (fields left out keep their value).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/quality/settings", operation_id = "quality_settings", tag = "quality", params(("slug" = String, Path, description = "The project's slug.")),
    request_body = SettingsBody,
    responses((status = 200, description = "The settings now.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn settings(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<SettingsBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let current = dbq::settings(&mut *state.pool.acquire().await?, p.id).await?;
    let new = body.into_inner().apply(current).map_err(AppError::Invalid)?;
    quality::set_settings(&state.pool, &p, auth.user.id, &new).await?;
    Ok(HttpResponse::Ok().json(new))
}

#[derive(Deserialize, ToSchema)]
pub struct LiftBody {
    /// Why the pause is lifted (kept with it).
    note: String,
}

/// Lifts a labeller's pause, with a note.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/quality/pauses/{user}/lift", operation_id = "lift_pause", tag = "quality",
    params(("slug" = String, Path, description = "The project's slug."), ("user" = String, Path, description = "The labeller's account id.")),
    request_body = LiftBody,
    responses((status = 200, description = "Lifted.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody),
              (status = 409, description = "The labeller is not paused in the project.", body = ErrorBody)))]
pub async fn lift(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, body: Json<LiftBody>) -> Result<HttpResponse, ApiError> {
    let (slug, user) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let user: UserId = user.parse().map_err(|_| AppError::NotFound)?;
    quality::lift(&state.pool, &p, auth.user.id, user, &body.note).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"user": user, "paused": false})))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoldBody {
    /// Tiers of the item's response ids, best first.
    ranking: Vec<Vec<ResponseId>>,
    #[serde(default)]
    explanation: String,
}

/// Marks an item gold with its reference judgement.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items/{item}/gold", operation_id = "mark_gold", tag = "quality", params(("slug" = String, Path, description = "The project's slug."), ("item" = String, Path, description = "The item's id.")),
    request_body = GoldBody,
    responses((status = 200, description = "Gold.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or item.", body = ErrorBody)))]
pub async fn mark_gold(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, body: Json<GoldBody>) -> Result<HttpResponse, ApiError> {
    let (slug, item) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    quality::mark_gold(&state.pool, &p, auth.user.id, item, Some((&body.ranking, &body.explanation))).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"item": item, "gold": true})))
}

/// Makes a gold item an ordinary one again.
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/items/{item}/gold", operation_id = "unmark_gold", tag = "quality", params(("slug" = String, Path, description = "The project's slug."), ("item" = String, Path, description = "The item's id.")),
    responses((status = 200, description = "No longer gold.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or item.", body = ErrorBody)))]
pub async fn unmark_gold(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, item) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    quality::mark_gold(&state.pool, &p, auth.user.id, item, None).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"item": item, "gold": false})))
}

#[derive(Deserialize, ToSchema)]
pub struct HoneypotBody {
    /// Honeypots to make from the project's own items.
    count: i64,
}

/// Makes honeypots: copies of the project's items with a clearly worse response added that must rank last.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/quality/honeypots", operation_id = "make_honeypots", tag = "quality", params(("slug" = String, Path, description = "The project's slug.")),
    request_body = HoneypotBody,
    responses((status = 201, description = "Made.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn honeypots(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<HoneypotBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let added = quality::generate_honeypots(&state.pool, &p, body.count).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"added": added})))
}

/// Gives items whose labellers disagree one more labeller each (up to the maximum) now.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/quality/extend", operation_id = "extend_disagreements", tag = "quality", params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "Items reopened.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn extend(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let reopened = services::quality::extend_disagreements(&state.pool, &p).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"reopened": reopened})))
}
