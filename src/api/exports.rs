//! Export snapshots: create, list, download (see [`crate::services::exports`]).

use actix_web::{web, HttpResponse};
use anyhow::Context;
use serde::Deserialize;

use super::project;
use crate::domain::{ExportId, Role};
use crate::export::{Format, Options};
use crate::services::exports;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

#[derive(Deserialize)]
pub struct CreateBody {
    pub format: String,
    #[serde(flatten)]
    pub options: Options,
}

pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let format: Format = body.format.parse().map_err(AppError::Invalid)?;
    let e = exports::create(&state.pool, &state.tmp_dir, &p, &auth.user, format, body.options).await?;
    Ok(HttpResponse::Created().json(e))
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"exports": exports::list(&state.pool, &p).await?})))
}

#[derive(Deserialize)]
pub struct PartQuery {
    part: Option<String>,
}

pub async fn download(state: web::Data<AppState>, auth: Auth, id: web::Path<String>, q: web::Query<PartQuery>) -> Result<HttpResponse, ApiError> {
    let id: ExportId = id.parse().map_err(|_| AppError::NotFound)?;
    let (e, summary, path) = exports::part_file(&state.pool, &state.tmp_dir, &auth.user, id, q.part.as_deref()).await?;
    let file = tokio::fs::File::open(&path).await.context("opening the export's file")?;
    let size = file.metadata().await.context("reading the export's file")?.len();
    let filename = format!("{}-{}-{}.jsonl", e.format, summary.part, e.id);
    let body = crate::web::byte_stream(file);
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{filename}\"")))
        .insert_header(("X-Rewardlab-Sha256", summary.sha256))
        .insert_header(("X-Rewardlab-Rows", summary.rows.to_string()))
        .no_chunking(size)
        .streaming(body))
}

/// The export's `manifest.json` (the CLI writes the same beside a `preferences` directory).
pub async fn manifest(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: ExportId = id.parse().map_err(|_| AppError::NotFound)?;
    let e = exports::get(&state.pool, &auth.user, id).await?;
    let body = serde_json::to_vec_pretty(&e.manifest()).context("writing the manifest")?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"manifest-{}.json\"", e.id)))
        .body(body))
}
