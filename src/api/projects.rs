//! Projects: list, create, import, members, dashboard.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::project;
use crate::db::projects::{self as dbp, NewProject};
use crate::domain::{Email, Role, Slug, TaskKind, DEFAULT_FLAGS};
use crate::import::{import_file, ImportError};
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::AppState;

pub async fn list(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let projects = dbp::list_for_user(&mut conn, auth.user.id).await?;
    let out: Vec<_> = projects
        .iter()
        .map(|p| serde_json::json!({"slug": p.slug, "name": p.name, "kind": p.kind, "overlap": p.overlap, "role": p.role}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"projects": out})))
}

/// The fields of a new project, from JSON or a form.
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

/// Checks the fields and creates the project with the caller as lead.
pub async fn create_project(state: &AppState, auth: &Auth, body: CreateBody) -> Result<Slug, AppError> {
    let mut conn = state.pool.acquire().await?;
    if !dbp::may_create(&mut conn, &auth.user).await? {
        return Err(AppError::Forbidden("only site admins and project leads may create projects".into()));
    }
    let slug = Slug::parse(body.slug.trim()).map_err(AppError::Invalid)?;
    let kind: TaskKind = body.kind.parse().map_err(AppError::Invalid)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::Invalid("name: 1-200 characters".into()));
    }
    let overlap = body.overlap.unwrap_or(3);
    if !(1..=100).contains(&overlap) {
        return Err(AppError::Invalid(format!("overlap: expected 1 to 100, got {overlap}")));
    }
    let flags = body.flags.unwrap_or_else(|| DEFAULT_FLAGS.iter().map(|s| s.to_string()).collect());
    let new = NewProject {
        slug: &slug,
        name,
        kind,
        overlap,
        flags,
        allow_ties: body.allow_ties.unwrap_or(true),
        rating_enabled: body.rating.unwrap_or(false),
        guidelines: body.guidelines.as_deref().unwrap_or(""),
    };
    dbp::insert(&mut conn, &new, Some(auth.user.id)).await?.ok_or_else(|| AppError::Conflict(format!("a project with slug {:?} exists", slug.as_str())))?;
    Ok(slug)
}

pub async fn create(state: web::Data<AppState>, auth: Auth, body: web::Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let slug = create_project(&state, &auth, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({"slug": slug.as_str()})))
}

/// Streams a request body to a temporary file (bounded memory), imports it, removes the file.
pub async fn import_body(state: &AppState, p: &dbp::Project, mut body: impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin) -> Result<crate::import::ImportReport, AppError> {
    let path = state.tmp_dir.join(format!("upload-{}.jsonl", uuid::Uuid::new_v4()));
    let result = async {
        let mut file = tokio::fs::File::from_std(crate::private_fs::create_file(&path).map_err(anyhow::Error::from)?);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AppError::Invalid(format!("the upload broke off: {e}")))?;
            file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
        }
        file.flush().await.map_err(anyhow::Error::from)?;
        import_file(&state.pool, p.id, p.kind, &path, Arc::default()).await.map_err(|e| match e {
            ImportError::Line { .. } | ImportError::Io(_) => AppError::Invalid(format!("nothing was imported: {e}")),
            ImportError::Db(db) => AppError::Unexpected(db.into()),
        })
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    result
}

pub async fn import(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let report = import_body(&state, &p, body.map(|c| c.map_err(|e| e.to_string()))).await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
pub struct MemberBody {
    email: String,
    role: String,
}

pub async fn add_member(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: web::Json<MemberBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    add_member_checked(&state, &p, &body.email, &body.role).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"email": body.email, "role": body.role})))
}

/// Parses and adds a member; an unknown email is a clear error.
pub async fn add_member_checked(state: &AppState, p: &dbp::Project, email: &str, role: &str) -> Result<(), AppError> {
    let email = Email::parse(email).map_err(AppError::Invalid)?;
    let role: Role = role.parse().map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    if !dbp::add_member_by_email(&mut conn, p.id, &email, role).await? {
        return Err(AppError::Invalid(format!("no account has the email {}; an admin creates it with `rewardlab user add`", email.as_str())));
    }
    Ok(())
}

pub async fn dashboard(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let stats = crate::db::stats::dashboard(&mut conn, &p).await?;
    Ok(HttpResponse::Ok().json(stats))
}
