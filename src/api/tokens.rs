//! API tokens for scripts: a caller (with a token or a browser session) creates more tokens for
//! itself, lists and revokes them (see [`crate::services::accounts`]).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::doc::ErrorBody;
use crate::domain::{TokenId, TokenName};
use crate::services::accounts;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// What the token is for (1 to 100 characters), shown in the token list.
    name: String,
}

/// A new token, shown only here.
#[derive(Serialize, ToSchema)]
pub struct NewToken {
    name: String,
    /// `rl_…`: send it as `Authorization: Bearer <token>`.
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenDoc {
    id: TokenId,
    name: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenDoc>,
}

/// Creates an API token for the caller; the answer is the only time it is shown.
#[utoipa::path(post, path = "/api/v1/tokens", operation_id = "create_token", tag = "tokens", request_body = TokenBody,
    responses((status = 201, description = "Created; the token is shown only here.", body = NewToken)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, body: Json<TokenBody>) -> Result<HttpResponse, ApiError> {
    let name = TokenName::parse(&body.name).map_err(AppError::Invalid)?;
    let token = accounts::issue_token(&state.pool, state.key.expose(), auth.user.id, &name).await?;
    Ok(HttpResponse::Created().json(NewToken { name: name.as_str().to_string(), token }))
}

/// The caller's live tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/tokens", operation_id = "list_tokens", tag = "tokens",
    responses((status = 200, description = "The tokens.", body = TokenList)))]
pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let tokens = accounts::tokens(&state.pool, auth.user.id).await?;
    let tokens = tokens.into_iter().map(|t| TokenDoc { id: t.id, name: t.name, created_at: t.created_at, last_used_at: t.last_used_at }).collect();
    Ok(HttpResponse::Ok().json(TokenList { tokens }))
}

/// Revokes one of the caller's tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", operation_id = "revoke_token", tag = "tokens",
    params(("id" = String, Path, description = "The token's id.")),
    responses((status = 204, description = "Revoked."),
              (status = 404, description = "The caller has no such token.", body = ErrorBody)))]
pub async fn revoke(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: TokenId = id.parse().map_err(|_| AppError::NotFound)?;
    accounts::revoke_token(&state.pool, auth.user.id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
