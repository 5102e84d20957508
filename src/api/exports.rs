//! Export snapshots: create, list, download (written from PostgreSQL to a file once, then
//! served from the file: a client that stops reading holds no database connection).

use actix_web::{web, HttpResponse};
use anyhow::Context;
use serde::Deserialize;

use super::project;
use crate::domain::{ExportId, Role};
use crate::export::{self, Export, Format, Options};
use crate::web::auth::Auth;
use crate::web::json::Json;
use crate::web::error::{ApiError, AppError};
use crate::web::AppState;

#[derive(Deserialize)]
pub struct CreateBody {
    pub format: String,
    #[serde(flatten)]
    pub options: Options,
}

/// Takes a snapshot of the project in `format` (the caller must lead it).
pub async fn create_export(state: &AppState, auth: &Auth, slug: &str, format: &str, options: Options) -> Result<Export, AppError> {
    let p = project(state, auth, slug, Role::Lead).await?;
    let format: Format = format.parse().map_err(AppError::Invalid)?;
    let options = options.checked(format).map_err(AppError::Invalid)?;
    Ok(export::create(&state.pool, p.id, format, options, Some(auth.user.id), |_| Ok(tokio::io::sink())).await?)
}

pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let e = create_export(&state, &auth, &slug, &body.format, body.options).await?;
    Ok(HttpResponse::Created().json(e))
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"exports": export::list(&mut conn, p.id).await?})))
}

#[derive(Deserialize)]
pub struct PartQuery {
    part: Option<String>,
}

pub async fn download(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, q: web::Query<PartQuery>) -> Result<HttpResponse, ApiError> {
    let id: ExportId = id.parse().map_err(|_| AppError::NotFound)?;
    let e = export::get_for_lead(&mut *state.pool.acquire().await?, id, auth.user.id).await?.ok_or(AppError::NotFound)?;
    let part = q.part.clone().unwrap_or_else(|| e.format().parts()[0].to_string());
    let summary = e.files.iter().find(|f| f.part == part).ok_or_else(|| AppError::Invalid(format!("part: this export has {:?}", e.format().parts())))?.clone();
    let path = export::part_file(&state.pool, &e, &summary, &state.tmp_dir.join("exports")).await.context("writing the export's file")?;
    let file = tokio::fs::File::open(&path).await.context("opening the export's file")?;
    let size = file.metadata().await.context("reading the export's file")?.len();
    let filename = format!("{}-{}-{}.jsonl", e.format, part, e.id);
    let body = crate::web::byte_stream(file);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{filename}\"")))
        .insert_header(("X-Rewardlab-Sha256", summary.sha256))
        .insert_header(("X-Rewardlab-Rows", summary.rows.to_string()))
        .no_chunking(size)
        .streaming(body))
}
