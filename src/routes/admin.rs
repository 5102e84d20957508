//! The admin's Users page: every account with its status, a form that creates one with a
//! one-time invitation link, a new link for an account, and deactivating or reactivating one.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::pages::{html, redirect, CsrfOnly, Layout};
use crate::db::people::Account;
use crate::domain::{Email, UserId};
use crate::services::people::{self, Invite};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::{public_base, AppState};

#[derive(Template)]
#[template(path = "admin/users.html")]
pub struct UsersPage {
    pub layout: Layout,
    pub accounts: Vec<Account>,
    /// A link just made: for whom, the link, until when (shown once).
    pub invited: Option<(String, String, String)>,
    pub me: UserId,
}

impl UsersPage {
    pub fn status(&self, a: &Account) -> String {
        match (a.deactivated_at, a.invited_until) {
            (Some(at), _) => format!("deactivated {}", at.format("%Y-%m-%d")),
            (None, Some(until)) => format!("invited (link works until {})", until.format("%Y-%m-%d %H:%M UTC")),
            (None, None) => "active".into(),
        }
    }
}

async fn page(state: &AppState, auth: &Auth, invited: Option<(String, String, String)>) -> Result<HttpResponse, PageError> {
    let accounts = people::accounts(&state.pool, &auth.user).await?;
    Ok(html(&UsersPage { layout: Layout::of(auth), accounts, invited, me: auth.user.id }))
}

/// The link, for whom, and until when, as the page shows them.
fn shown(req: &HttpRequest, state: &AppState, email: &str, invite: &Invite) -> (String, String, String) {
    let link = format!("{}/invite/{}", public_base(req, state), invite.token);
    (email.to_string(), link, invite.expires_at.format("%Y-%m-%d %H:%M UTC").to_string())
}

pub async fn show(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, PageError> {
    page(&state, &auth, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    email: String,
    #[serde(default)]
    admin: Option<String>,
}

pub async fn create(state: web::Data<AppState>, auth: Auth, req: HttpRequest, form: web::Form<CreateForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let email = Email::parse(&form.email).map_err(|e| AppError::Invalid(format!("email: {e}")))?;
    let (_, invite) = people::create(&state.pool, state.key.expose(), &auth.user, &email, form.admin.is_some()).await?;
    page(&state, &auth, Some(shown(&req, &state, email.as_str(), &invite))).await
}

fn user_id(text: &str) -> Result<UserId, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

pub async fn invite(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let id = user_id(&id)?;
    let invite = people::invite(&state.pool, state.key.expose(), &auth.user, id).await?;
    let accounts = people::accounts(&state.pool, &auth.user).await?;
    let email = accounts.iter().find(|a| a.id == id).map(|a| a.email.clone()).unwrap_or_default();
    Ok(html(&UsersPage { layout: Layout::of(&auth), invited: Some(shown(&req, &state, &email, &invite)), accounts, me: auth.user.id }))
}

pub async fn deactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    people::set_active(&state.pool, &auth.user, user_id(&id)?, false).await?;
    Ok(redirect("/admin/users"))
}

pub async fn reactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    people::set_active(&state.pool, &auth.user, user_id(&id)?, true).await?;
    Ok(redirect("/admin/users"))
}
