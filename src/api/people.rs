//! People: accounts for site admins (list, create with an invitation link, a new link,
//! deactivate, reactivate) and a project's members for its leads (list, remove; adding is
//! `POST /projects/{slug}/members`).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::people::Account;
use crate::db::projects::Member;
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

/// A one-time invitation link.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    pub id: UserId,
    /// The account's email (when it was just created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The link the invitee opens to set their password (once, before `expires_at`).
    pub invite_url: String,
    pub expires_at: DateTime<Utc>,
}

fn invitation(req: &HttpRequest, state: &AppState, id: UserId, invite: &Invite, email: Option<&Email>) -> Invitation {
    Invitation {
        id,
        email: email.map(|e| e.as_str().to_string()),
        invite_url: format!("{}/invite/{}", public_base(req, state), invite.token),
        expires_at: invite.expires_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<Account>,
}

/// Every account (site admins only).
#[utoipa::path(get, path = "/api/v1/users", operation_id = "list_users", tag = "people",
    responses((status = 200, description = "The accounts.", body = UserList),
              (status = 403, description = "The caller is not a site admin.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(UserList { users: people::accounts(&state.pool, &auth.user).await? }))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateUserBody {
    email: String,
    /// A site admin.
    #[serde(default)]
    admin: bool,
}

/// Creates an account and its invitation link (site admins only).
#[utoipa::path(post, path = "/api/v1/users", operation_id = "create_user", tag = "people",
    request_body = CreateUserBody,
    responses((status = 201, description = "Created, with its invitation link.", body = Invitation),
              (status = 403, description = "The caller is not a site admin.", body = ErrorBody),
              (status = 409, description = "An account has this email.", body = ErrorBody)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, req: HttpRequest, body: Json<CreateUserBody>) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email).map_err(|e| AppError::Invalid(format!("email: {e}")))?;
    let (id, invite) = people::create(&state.pool, state.key.expose(), &auth.user, &email, body.admin).await?;
    Ok(HttpResponse::Created().json(invitation(&req, &state, id, &invite, Some(&email))))
}

/// A new invitation link for an account (older unused links stop working; site admins only).
#[utoipa::path(post, path = "/api/v1/users/{id}/invite", operation_id = "invite_user", tag = "people",
    params(("id" = String, Path, description = "The account's id.")),
    responses((status = 201, description = "The new link.", body = Invitation),
              (status = 403, description = "The caller is not a site admin.", body = ErrorBody),
              (status = 404, description = "No such active account.", body = ErrorBody)))]
pub async fn invite(state: web::Data<AppState>, auth: Auth, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    let invite = people::invite(&state.pool, state.key.expose(), &auth.user, id).await?;
    Ok(HttpResponse::Created().json(invitation(&req, &state, id, &invite, None)))
}

/// Whether an account is active now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activity {
    pub id: UserId,
    pub active: bool,
}

/// Deactivates an account: its sessions, tokens and links stop at once (site admins only).
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", operation_id = "deactivate_user", tag = "people",
    params(("id" = String, Path, description = "The account's id.")),
    responses((status = 200, description = "Deactivated.", body = Activity),
              (status = 403, description = "The caller is not a site admin.", body = ErrorBody),
              (status = 404, description = "No such account (or the caller's own).", body = ErrorBody)))]
pub async fn deactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    people::set_active(&state.pool, &auth.user, id, false).await?;
    Ok(HttpResponse::Ok().json(Activity { id, active: false }))
}

/// Reactivates an account (site admins only).
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", operation_id = "reactivate_user", tag = "people",
    params(("id" = String, Path, description = "The account's id.")),
    responses((status = 200, description = "Active again.", body = Activity),
              (status = 403, description = "The caller is not a site admin.", body = ErrorBody),
              (status = 404, description = "No such account (or the caller's own).", body = ErrorBody)))]
pub async fn reactivate(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = user_id(&id)?;
    people::set_active(&state.pool, &auth.user, id, true).await?;
    Ok(HttpResponse::Ok().json(Activity { id, active: true }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

/// The project's members (its leads only).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/members", operation_id = "list_members", tag = "people",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The members.", body = MemberList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn members(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(MemberList { members: projects::members(&state.pool, &p).await? }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Removed {
    pub removed: UserId,
}

/// Removes a member (never the project's last lead; its leads only).
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/members/{user}", operation_id = "remove_member", tag = "people",
    params(("slug" = String, Path, description = "The project's slug."), ("user" = String, Path, description = "The member's account id.")),
    responses((status = 200, description = "Removed.", body = Removed),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or member.", body = ErrorBody),
              (status = 409, description = "The project's last lead.", body = ErrorBody)))]
pub async fn remove_member(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, user) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let user = user_id(&user)?;
    projects::remove_member(&state.pool, &p, user).await?;
    Ok(HttpResponse::Ok().json(Removed { removed: user }))
}
