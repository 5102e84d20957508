//! The labelling page. Its script reads what the project asks of a labeller from a JSON block.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Serialize;

use crate::db::projects::Project;
use crate::domain::{Role, Slug, TaskKind};
use crate::routes::pages::{html, Layout};
use crate::services::project;
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/label.html")]
pub struct LabelPage {
    pub layout: Layout,
    pub project: Project,
    pub config: LabelConfig,
}

/// What static/label.js needs, read from `<script type="application/json" id="config">`.
#[derive(Serialize)]
pub struct LabelConfig {
    pub slug: Slug,
    pub kind: TaskKind,
    pub flags: Vec<String>,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub csrf: String,
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let config = LabelConfig {
        slug: p.slug.clone(),
        kind: p.kind,
        flags: p.flags.clone(),
        allow_ties: p.allow_ties,
        rating_enabled: p.rating_enabled,
        csrf: auth.csrf().to_string(),
    };
    Ok(html(&LabelPage { layout: Layout::of(&auth), project: p, config }))
}
