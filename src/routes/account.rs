//! The account page: API tokens and the password.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::pages::{html, redirect, CsrfOnly, Layout};
use crate::db::users::TokenRow;
use crate::domain::{check_password, TokenId, TokenName};
use crate::services::accounts;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "account/show.html")]
pub struct AccountPage {
    pub layout: Layout,
    pub tokens: Vec<TokenRow>,
    pub new_token: Option<String>,
    pub message: Option<String>,
}

async fn page(state: &AppState, auth: &Auth, new_token: Option<String>, message: Option<String>) -> Result<HttpResponse, PageError> {
    let tokens = accounts::tokens(&state.pool, auth.user.id).await?;
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

pub async fn create_token(state: web::Data<AppState>, auth: Auth, form: web::Form<TokenForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let name = TokenName::parse(&form.name).map_err(AppError::Invalid)?;
    let token = accounts::issue_token(&state.pool, state.key.expose(), auth.user.id, &name).await?;
    page(&state, &auth, Some(token), None).await
}

pub async fn revoke_token(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let id: TokenId = id.parse().map_err(|_| AppError::NotFound)?;
    accounts::revoke_token(&state.pool, auth.user.id, id).await?;
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
    accounts::change_password(&state.pool, auth.user.id, &form.current, &form.new, form.revoke_tokens.is_some()).await?;
    Ok(redirect("/login"))
}
