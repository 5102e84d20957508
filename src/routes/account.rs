//! The account page: API tokens and the password.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::pages::{html, AccountPage, CsrfOnly, Layout};
use crate::db::users;
use crate::domain::{check_password, TokenId};
use crate::web::auth::{hash_password, keyed_hash, random_secret, verify_password, Auth};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

async fn page(state: &AppState, auth: &Auth, new_token: Option<String>, message: Option<String>) -> Result<HttpResponse, PageError> {
    let tokens = users::tokens(&mut *state.pool.acquire().await?, auth.user.id).await?;
    Ok(html(&AccountPage { layout: Layout::of(auth), tokens, new_token, message }))
}

pub async fn show(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, PageError> {
    page(&state, &auth, None, None).await
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

/// Creates a token and stores its keyed hash; the token itself is returned once.
pub async fn issue_token(state: &AppState, user: crate::domain::UserId, name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(AppError::Invalid("name: 1-100 characters".into()));
    }
    let token = random_secret("rl_");
    users::insert_token(&mut *state.pool.acquire().await?, user, name, &keyed_hash(state.key.expose(), &token)).await?;
    Ok(token)
}

pub async fn create_token(state: web::Data<AppState>, auth: Auth, form: web::Form<TokenForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let token = issue_token(&state, auth.user.id, &form.name).await?;
    page(&state, &auth, Some(token), None).await
}

pub async fn revoke_token(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let id: TokenId = id.parse().map_err(|_| AppError::NotFound)?;
    if !users::revoke_token(&mut *state.pool.acquire().await?, auth.user.id, id).await? {
        return Err(AppError::NotFound.into());
    }
    page(&state, &auth, None, Some("Token revoked.".into())).await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: String,
    new: String,
    /// The checkbox "also revoke my API tokens" (absent when unticked).
    #[serde(default)]
    revoke_tokens: Option<String>,
}

pub async fn password(state: web::Data<AppState>, auth: Auth, form: web::Form<PasswordForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    check_password(&form.new).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    let stored = users::password_hash(&mut conn, auth.user.id).await?;
    if !verify_password(form.current.clone(), stored).await? {
        return Err(AppError::Forbidden("the current password is wrong".into()).into());
    }
    let hash = hash_password(form.new.clone()).await?;
    users::set_password(&mut conn, auth.user.id, &hash, form.revoke_tokens.is_some()).await?;
    Ok(super::pages::redirect("/login"))
}
