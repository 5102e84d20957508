//! Projects: list, create, import, members, dashboard.

use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;

use super::project;
use crate::domain::{Email, Flags, Guidelines, NewProject, Overlap, Role};
use crate::services::{self, imports::Importer};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let (projects, _) = services::projects::list(&state.pool, &auth.user).await?;
    let out: Vec<_> =
        projects.iter().map(|p| serde_json::json!({"slug": p.slug, "name": p.name, "kind": p.kind, "overlap": p.overlap, "role": p.role})).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"projects": out})))
}

/// The fields of a new project.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    pub slug: String,
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub overlap: Option<i32>,
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    #[serde(default)]
    pub allow_ties: Option<bool>,
    #[serde(default)]
    pub rating: Option<bool>,
    #[serde(default)]
    pub guidelines: Option<String>,
}

impl CreateBody {
    fn parse(self) -> Result<NewProject, String> {
        let mut new = NewProject::parse(&self.slug, &self.name, &self.kind)?;
        if let Some(overlap) = self.overlap {
            new.overlap = Overlap::parse(overlap)?;
        }
        new.flags = self.flags.map(Flags::new).unwrap_or(new.flags);
        new.allow_ties = self.allow_ties.unwrap_or(new.allow_ties);
        new.rating_enabled = self.rating.unwrap_or(new.rating_enabled);
        new.guidelines = self.guidelines.map(Guidelines::new).unwrap_or(new.guidelines);
        Ok(new)
    }
}

pub async fn create(state: web::Data<AppState>, auth: Auth, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().parse().map_err(AppError::Invalid)?;
    let slug = services::projects::create(&state.pool, Some(&auth.user), &new).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"slug": slug})))
}

pub async fn import(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let importer = Importer { pool: &state.pool, uploads: &state.uploads, slots: &state.import_slots };
    let report = importer.import(&p, body.map(|c| c.map_err(|e| e.to_string()))).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
pub struct MemberBody {
    email: String,
    role: String,
}

pub async fn add_member(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<MemberBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let email = Email::parse(&body.email).map_err(AppError::Invalid)?;
    let role: Role = body.role.parse().map_err(AppError::Invalid)?;
    services::projects::add_member(&state.pool, &p, &email, role).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"email": body.email, "role": body.role})))
}

pub async fn dashboard(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(services::projects::dashboard(&state.pool, &p).await?))
}

#[derive(Deserialize)]
pub struct ExcludeBody {
    items: Vec<crate::domain::ItemId>,
}

/// Excludes items: leased no more, in no later export.
pub async fn exclude_items(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<ExcludeBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let n = services::items::exclude(&state.pool, &p, &auth.user, &body.items).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"excluded": n})))
}
