//! Adding and removing a project's members (leads only).

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::domain::{Email, Role, UserId};
use crate::routes::pages::{redirect, CsrfOnly};
use crate::services::{self, project};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    csrf: String,
    email: String,
    role: String,
}

pub async fn add(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<MemberForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let email = Email::parse(&form.email).map_err(AppError::Invalid)?;
    let role: Role = form.role.parse().map_err(AppError::Invalid)?;
    services::projects::add_member(&state.pool, &p, &email, role).await?;
    Ok(redirect(&format!("/projects/{}/labellers#members", p.slug)))
}

pub async fn remove(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, user) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let user: UserId = user.parse().map_err(|_| AppError::NotFound)?;
    services::projects::remove_member(&state.pool, &p, user).await?;
    Ok(redirect(&format!("/projects/{}/labellers#members", p.slug)))
}
