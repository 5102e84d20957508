//! Export snapshots: create, list, download (see [`crate::services::exports`]).

use actix_web::{web, HttpResponse};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::project;
use crate::domain::export::{Export, ExportDoc};
use crate::domain::{ExportId, Role};
use crate::export::{Format, Options};
use crate::services::exports;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// An export to take: its format and options.
#[derive(Deserialize, ToSchema)]
#[schema(as = NewExportBody)]
pub struct CreateBody {
    #[schema(value_type = Format)]
    pub format: String,
    #[serde(flatten)]
    pub options: Options,
}

#[derive(Serialize, ToSchema)]
pub struct ExportList {
    #[schema(value_type = Vec<ExportDoc>)]
    pub exports: Vec<Export>,
}

/// Takes a snapshot of the project's judgements and writes its files.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/exports", operation_id = "create_export", tag = "exports",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = CreateBody,
    responses((status = 201, description = "The export, its files written.", body = ExportDoc),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let format: Format = body.format.parse().map_err(AppError::Invalid)?;
    let e = exports::create(&state.pool, &state.tmp_dir, &p, &auth.user, format, body.options).await?;
    Ok(HttpResponse::Created().json(e))
}

/// The project's exports, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/exports", operation_id = "list_exports", tag = "exports",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The exports.", body = ExportList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(ExportList { exports: exports::list(&state.pool, &p).await? }))
}

#[derive(Deserialize, IntoParams)]
pub struct PartQuery {
    /// The file to download (`train`, `test`, …; see the export's `files`); by default the first.
    part: Option<String>,
}

/// Downloads one file of an export as JSON Lines.
#[utoipa::path(get, path = "/api/v1/exports/{id}/download", operation_id = "download_export", tag = "exports",
    params(("id" = String, Path, description = "The export's id."), PartQuery),
    responses((status = 200, description = "The file's rows, one JSON object a line.", content_type = "application/x-ndjson", body = String,
                headers(("X-Rewardlab-Sha256" = String, description = "SHA-256 of the file, hex."),
                        ("X-Rewardlab-Rows" = String, description = "Rows in the file."))),
              (status = 400, description = "The export has no such part; the message lists its parts.", body = ErrorBody),
              (status = 404, description = "No such export, or the caller is not a lead of its project.", body = ErrorBody)))]
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
#[utoipa::path(get, path = "/api/v1/exports/{id}/manifest", operation_id = "export_manifest", tag = "exports",
    params(("id" = String, Path, description = "The export's id.")),
    responses((status = 200, description = "The manifest: the export's id, format, schema version, options, files (rows, sha256) and features.",
                content_type = "application/json", body = Object),
              (status = 404, description = "No such export, or the caller is not a lead of its project.", body = ErrorBody)))]
pub async fn manifest(state: web::Data<AppState>, auth: Auth, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: ExportId = id.parse().map_err(|_| AppError::NotFound)?;
    let e = exports::get(&state.pool, &auth.user, id).await?;
    let body = serde_json::to_vec_pretty(&e.manifest()).context("writing the manifest")?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"manifest-{}.json\"", e.id)))
        .body(body))
}
