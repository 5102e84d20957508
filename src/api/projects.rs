//! Projects: list, create, import, members, dashboard.

use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::stats::Dashboard;
use crate::domain::{Email, Flags, Guidelines, NewProject, Overlap, Role, TaskKind};
use crate::import::ImportReport;
use crate::services::{self, imports::Importer};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// A project the caller is a member of (or any project, for an admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSummary {
    pub slug: String,
    pub name: String,
    pub kind: TaskKind,
    /// Judgements wanted per item.
    pub overlap: i32,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectSummary>,
}

/// The caller's projects.
#[utoipa::path(get, path = "/api/v1/projects", operation_id = "list_projects", tag = "projects",
    responses((status = 200, description = "The caller's projects.", body = ProjectList)))]
pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let (projects, _) = services::projects::list(&state.pool, &auth.user).await?;
    let projects = projects
        .iter()
        .map(|p| ProjectSummary { slug: p.slug.to_string(), name: p.name.clone(), kind: p.kind, overlap: p.overlap.get(), role: p.role })
        .collect();
    Ok(HttpResponse::Ok().json(ProjectList { projects }))
}

/// The fields of a new project.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewProjectBody)]
pub struct CreateBody {
    /// 2–64 of `a-z0-9-`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,63}$")]
    pub slug: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(value_type = TaskKind)]
    pub kind: String,
    /// Judgements wanted per item (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub overlap: Option<i32>,
    /// The flags labellers may put on a response.
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    #[serde(default)]
    pub allow_ties: Option<bool>,
    /// Whether labellers also rate responses 1–7.
    #[serde(default)]
    pub rating: Option<bool>,
    /// Markdown shown to labellers.
    #[serde(default)]
    pub guidelines: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub slug: String,
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

/// Creates a project; the caller becomes its lead.
#[utoipa::path(post, path = "/api/v1/projects", operation_id = "create_project", tag = "projects", request_body = CreateBody,
    responses((status = 201, description = "Created.", body = Created),
              (status = 403, description = "The caller may not create projects.", body = ErrorBody),
              (status = 409, description = "The slug is taken.", body = ErrorBody)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().parse().map_err(AppError::Invalid)?;
    let slug = services::projects::create(&state.pool, Some(&auth.user), &new).await?;
    Ok(HttpResponse::Created().json(Created { slug: slug.to_string() }))
}

/// Imports items from JSON Lines, one item a line; an item already present (same id) is counted
/// as a duplicate, not imported again.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items", operation_id = "import_items", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One item a line: `{\"id\"?, \"prompt\", \"responses\": [{\"id\"?, \"text\", \"model\"?}], \"metadata\"?}`."),
    responses((status = 200, description = "What the import did.", body = ImportReport),
              (status = 400, description = "A line is not a valid item; the message names the line and field.", body = ErrorBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody),
              (status = 413, description = "The body is too large.", body = ErrorBody),
              (status = 429, description = "Too many imports are running; try again shortly.", body = ErrorBody)))]
pub async fn import(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let importer = Importer { pool: &state.pool, uploads: &state.uploads, slots: &state.import_slots };
    let report = importer.import(&p, body.map(|c| c.map_err(|e| e.to_string()))).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// A member to add (an existing account) and their role.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct MemberBody {
    #[schema(format = Email)]
    email: String,
    #[schema(value_type = Role)]
    role: String,
}

/// Adds an existing account to the project, or changes its role.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/members", operation_id = "add_member", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = MemberBody,
    responses((status = 200, description = "The member and role.", body = MemberBody),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or account.", body = ErrorBody)))]
pub async fn add_member(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<MemberBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let email = Email::parse(&body.email).map_err(AppError::Invalid)?;
    let role: Role = body.role.parse().map_err(AppError::Invalid)?;
    services::projects::add_member(&state.pool, &p, &email, role).await?;
    Ok(HttpResponse::Ok().json(body.into_inner()))
}

/// The lead's figures: items, judgements, labellers, agreement, models.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/dashboard", operation_id = "dashboard", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The dashboard.", body = Dashboard),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn dashboard(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(services::projects::dashboard(&state.pool, &state.quality, &p).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct ExcludeBody {
    #[schema(value_type = Vec<String>)]
    items: Vec<crate::domain::ItemId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Excluded {
    /// Items newly excluded (ones already excluded, or of other projects, are not counted).
    pub excluded: u64,
}

/// Excludes items: leased no more, in no later export (its leads only).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/items/exclude", operation_id = "exclude_items", tag = "items",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = ExcludeBody,
    responses((status = 200, description = "Excluded.", body = Excluded),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn exclude_items(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<ExcludeBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let n = services::items::exclude(&state.pool, &p, &auth.user, &body.items).await?;
    Ok(HttpResponse::Ok().json(Excluded { excluded: n }))
}
