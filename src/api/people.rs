//! People: accounts for site admins (list, create with an invitation link, a new link,
//! deactivate, reactivate) and a project's members for its leads (list, remove; adding is
//! `POST /projects/{slug}/members`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::project;
use crate::domain::{Email, Role, UserId};
use crate::services::people::{self, Invite};
use crate::services::projects;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::{public_base, AppState};

fn user_id(text: &str) -> Result<UserId, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

fn invite_json(req: &HttpRequest, state: &AppState, id: UserId, invite: &Invite) -> serde_json::Value {
    json!({"id": id, "invite_url": format!("{}/invite/{}", public_base(req, state), invite.token), "expires_at": invite.expires_at})
}

pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({"users": people::accounts(&state.pool, &auth.user).await?})))
}

#[derive(Deserialize)]
pub struct CreateBody {
    email: String,
    #[serde(default)]
    admin: bool,
}

pub async fn create(state: web::Data<AppState>, auth: Auth, req: HttpRequest, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email).map_err(|e| AppError::Invalid(format!("email: {e}")))?;
    let (id, invite) = people::create(&state.pool, state.key.expose(), &auth.user, &email, body.admin).await?;
    let mut out = invite_json(&req, &state, id, &invite);
    out["email"] = json!(email.as_str());
    Ok(HttpResponse::Created().json(out))
}

pub async fn invite(state: web::Data<AppState>, auth: Auth, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    let invite = people::invite(&state.pool, state.key.expose(), &auth.user, id).await?;
    Ok(HttpResponse::Created().json(invite_json(&req, &state, id, &invite)))
}

pub async fn deactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    people::set_active(&state.pool, &auth.user, id, false).await?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "active": false})))
}

pub async fn reactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    people::set_active(&state.pool, &auth.user, id, true).await?;
    Ok(HttpResponse::Ok().json(json!({"id": id, "active": true})))
}

pub async fn members(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(json!({"members": projects::members(&state.pool, &p).await?})))
}

pub async fn remove_member(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, user) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let user = user_id(&user)?;
    projects::remove_member(&state.pool, &p, user).await?;
    Ok(HttpResponse::Ok().json(json!({"removed": user})))
}
