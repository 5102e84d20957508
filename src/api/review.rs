//! Review and send-back for a project's reviewers and leads: the review stream, accepting or
//! rejecting a judgement, adjudicating an item whose labellers disagree; the lead's bulk send
//! back; and a labeller's own rejected work with the reasons.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::project;
use crate::db::review::Rejected;
use crate::domain::review::Decision;
use crate::domain::{ItemId, JudgementId, ResponseId, Role};
use crate::services::review::{self, AdjudicationInput, Outcome, Stream};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

#[derive(Deserialize, IntoParams)]
pub struct StreamQuery {
    /// Judgements to answer (1 to 100; default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The review stream: unreviewed judgements, those on items whose labellers disagree and by
/// flagged labellers first, then a sample at the project's review rate; each as the labeller
/// made it (the responses in the order shown, ranks, flags, comment, rating, time, and the
/// item's skip reasons).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/review", operation_id = "review_stream", tag = "review",
    params(("slug" = String, Path, description = "The project's slug."), StreamQuery),
    responses((status = 200, description = "The stream's first judgements.", body = Stream),
              (status = 400, description = "`limit` out of range.", body = ErrorBody),
              (status = 403, description = "The caller is not a reviewer or lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn stream(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<StreamQuery>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Reviewer).await?;
    Ok(HttpResponse::Ok().json(review::stream(&state.pool, &state.quality, &p, auth.user.id, q.limit.unwrap_or(20)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `accept` or `reject`.
    #[schema(example = "reject")]
    decision: String,
    /// Why (required to reject; the labeller is shown it). 1 to 2000 characters.
    #[serde(default)]
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Reviewed {
    pub judgement_id: JudgementId,
    pub review: Outcome,
}

/// Accepts or rejects a judgement. A rejected one leaves every later export, stops counting
/// towards its item's overlap, and the item goes back to the queue for another labeller.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/judgements/{judgement}/review", operation_id = "review_judgement", tag = "review",
    params(("slug" = String, Path, description = "The project's slug."), ("judgement" = String, Path, description = "The judgement's id.")),
    request_body = ReviewBody,
    responses((status = 200, description = "Reviewed.", body = Reviewed),
              (status = 400, description = "A bad `decision`, or a rejection without a `reason`.", body = ErrorBody),
              (status = 403, description = "The caller is not a reviewer or lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project, or no such ordinary judgement in it.", body = ErrorBody),
              (status = 409, description = "The judgement was rejected already.", body = ErrorBody)))]
pub async fn review_judgement(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    body: Json<ReviewBody>,
) -> Result<HttpResponse, ApiError> {
    let (slug, judgement) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Reviewer).await?;
    let judgement: JudgementId = judgement.parse().map_err(|_| AppError::NotFound)?;
    let decision: Decision = body.decision.parse().map_err(AppError::Invalid)?;
    let outcome = review::review(&state.pool, &p, auth.user.id, judgement, decision, &body.reason).await?;
    Ok(HttpResponse::Ok().json(Reviewed { judgement_id: judgement, review: outcome }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjudicationBody {
    /// Tiers of the item's response ids, best first (every response once).
    #[schema(value_type = Vec<Vec<String>>)]
    ranking: Vec<Vec<ResponseId>>,
    /// Pairwise only: 1 (slightly) to 3 (much) better; default 2.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3)]
    strength: Option<i16>,
    /// Pairwise only: both responses are bad.
    #[serde(default)]
    both_bad: bool,
    /// Why, for the record (at most 2000 characters).
    #[serde(default)]
    note: String,
}

/// Records the final judgement of an item whose labellers disagree; exports use it for the item
/// instead of the labellers' judgements.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items/{item}/adjudication", operation_id = "adjudicate_item", tag = "review",
    params(("slug" = String, Path, description = "The project's slug."), ("item" = String, Path, description = "The item's id.")),
    request_body = AdjudicationBody,
    responses((status = 201, description = "Recorded.", body = Object),
              (status = 400, description = "A bad `ranking`, `strength`, `both_bad` or `note`.", body = ErrorBody),
              (status = 403, description = "The caller is not a reviewer or lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or item.", body = ErrorBody),
              (status = 409, description = "The item has a final judgement already, or its labellers do not disagree.", body = ErrorBody)))]
pub async fn adjudicate(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    body: Json<AdjudicationBody>,
) -> Result<HttpResponse, ApiError> {
    let (slug, item) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Reviewer).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    let input = AdjudicationInput { ranking: &body.ranking, strength: body.strength, both_bad: body.both_bad, note: &body.note };
    review::adjudicate(&state.pool, &p, auth.user.id, item, &input).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"item": item, "review": "adjudicated"})))
}

/// The caller's own rejected work in the project, with the reviewers' reasons (newest first).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/rejected", operation_id = "my_rejected_work", tag = "review",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The caller's rejected judgements.", body = Vec<Rejected>),
              (status = 404, description = "No such project, or the caller is not a member.", body = ErrorBody)))]
pub async fn rejected(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    Ok(HttpResponse::Ok().json(review::rejected(&state.pool, &p, auth.user.id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBackBody {
    #[schema(value_type = Vec<String>)]
    items: Vec<ItemId>,
    /// Why (1 to 2000 characters; each labeller is shown it).
    reason: String,
}

/// Sends items back: rejects every judgement of each not yet rejected, with the reason, and
/// reopens the items for other labellers (the project's leads).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items/send-back", operation_id = "send_back_items", tag = "items",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = SendBackBody,
    responses((status = 200, description = "Sent back.", body = Object),
              (status = 400, description = "No `items`, too many, one not in the project, or no `reason`.", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn send_back(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<SendBackBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let n = review::send_back_items(&state.pool, &p, auth.user.id, &body.items, &body.reason).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"rejected": n})))
}
