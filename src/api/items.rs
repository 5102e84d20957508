//! The lead's item browser as JSON: a page of items matching the filters (those of the Items
//! tab: words, status, model, labeller, flag, source, dates, gold, review state, agreement) and
//! marking items gold in bulk from their adjudicated or unanimous judgements.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::project;
use crate::domain::item_filter::{parse_cursor, ItemFilter, ItemQuery};
use crate::domain::{ItemId, Role};
use crate::services::{self, review::GoldOutcome};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// The filters; each left out filters nothing.
#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Words the prompt contains (word prefixes).
    q: Option<String>,
    /// `1`: search the responses too.
    responses: Option<String>,
    /// `unlabelled`, `in_progress`, `complete` or `excluded`.
    status: Option<String>,
    model: Option<String>,
    /// A labeller's email.
    labeller: Option<String>,
    /// A flag's name, or `*` for any.
    flag: Option<String>,
    /// `imported` or `generated`.
    source: Option<String>,
    /// Imported on or after (YYYY-MM-DD).
    from: Option<String>,
    /// Imported on or before (YYYY-MM-DD).
    to: Option<String>,
    /// `yes` (gold items and honeypots) or `no`.
    gold: Option<String>,
    /// `unreviewed`, `accepted`, `rejected` or `adjudicated`.
    review: Option<String>,
    /// Kendall's W at least (0 to 1).
    min_agreement: Option<String>,
    /// Kendall's W at most (0 to 1).
    max_agreement: Option<String>,
    /// The cursor from the previous page's `next`.
    before: Option<String>,
}

impl ListQuery {
    fn into_query(self) -> ItemQuery {
        let t = |s: Option<String>| s.unwrap_or_default();
        ItemQuery {
            q: t(self.q),
            responses: t(self.responses),
            status: t(self.status),
            model: t(self.model),
            labeller: t(self.labeller),
            flag: t(self.flag),
            source: t(self.source),
            from: t(self.from),
            to: t(self.to),
            gold: t(self.gold),
            review: t(self.review),
            min_agreement: t(self.min_agreement),
            max_agreement: t(self.max_agreement),
            before: t(self.before),
        }
    }
}

/// An item as the browser lists it.
#[derive(Serialize, ToSchema)]
pub struct ListedItem {
    id: ItemId,
    external_id: String,
    /// The start of the prompt.
    prompt: String,
    models: String,
    judgements: i64,
    /// Judgements that flag a response.
    flagged: i64,
    /// Submitted judgements that count towards the overlap.
    done: i64,
    excluded: bool,
    generated: bool,
    gold: bool,
    /// `adjudicated`, `rejected`, `accepted` (some judgement was), or empty.
    review: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct ItemList {
    items: Vec<ListedItem>,
    /// The cursor of the next page (`before`), none on the last.
    next: Option<i64>,
}

/// A page (50) of the project's items matching the filters, newest first (its leads).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/items", operation_id = "list_items", tag = "items",
    params(("slug" = String, Path, description = "The project's slug."), ListQuery),
    responses((status = 200, description = "The items.", body = ItemList),
              (status = 400, description = "A filter that does not parse (the message names it).", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner().into_query();
    let filter = ItemFilter::parse(&q).map_err(AppError::Invalid)?;
    let before = parse_cursor(&q.before).map_err(AppError::Invalid)?;
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let page = services::items::browse(&state.pool, &state.quality, &p, &auth.user, &filter, before).await?;
    let items = page
        .items
        .into_iter()
        .map(|i| ListedItem {
            id: i.id,
            external_id: i.external_id,
            prompt: i.prompt,
            models: i.models,
            judgements: i.judgements,
            flagged: i.flagged,
            done: i.done,
            excluded: i.excluded,
            generated: i.generated,
            gold: i.gold,
            review: i.review,
            created_at: i.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ItemList { items, next: page.next }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkGoldBody {
    #[schema(value_type = Vec<String>)]
    items: Vec<ItemId>,
}

/// Marks items gold, each with its adjudicated judgement, else its labellers' unanimous one; an
/// item with neither is refused, with the reason, and the others are still marked.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items/mark-gold", operation_id = "mark_items_gold", tag = "items",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = MarkGoldBody,
    responses((status = 200, description = "Each item's outcome.", body = Vec<GoldOutcome>),
              (status = 400, description = "No `items`, or too many.", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn mark_gold(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<MarkGoldBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(services::review::mark_gold_from_judgements(&state.pool, &p, auth.user.id, &body.items).await?))
}
