//! A project's guidelines, rendered from Markdown.

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::db::projects::Project;
use crate::domain::Role;
use crate::routes::pages::{html, Layout, SanitizedHtml};
use crate::services::project;
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/guidelines.html")]
pub struct GuidelinesPage {
    pub layout: Layout,
    pub project: Project,
    pub guidelines_html: SanitizedHtml,
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let guidelines_html = SanitizedHtml::from_markdown(if p.guidelines.trim().is_empty() { "*No guidelines yet.*" } else { &p.guidelines });
    Ok(html(&GuidelinesPage { layout: Layout::of(&auth), project: p, guidelines_html }))
}
