//! A lead uploads a JSONL file of items from the project page.

use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::domain::Role;
use crate::routes::pages::{html, Layout, MessagePage};
use crate::services::imports::Importer;
use crate::services::project;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Deserialize)]
pub struct CsrfQuery {
    #[serde(default)]
    csrf: String,
}

pub async fn upload(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    q: web::Query<CsrfQuery>,
    mut form: Multipart,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&q.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let field = form
        .try_next()
        .await
        .map_err(|e| AppError::Invalid(format!("the upload is not valid: {e}")))?
        .ok_or_else(|| AppError::Invalid("choose a file to import".into()))?;
    let importer = Importer { pool: &state.pool, uploads: &state.uploads, slots: &state.import_slots };
    let report = importer.import(&p, field.map(|c| c.map_err(|e| e.to_string()))).await?;
    let page = MessagePage { layout: Layout::of(&auth), title: "Imported", message: report.to_string(), back: format!("/projects/{}/items", p.slug) };
    Ok(html(&page))
}
