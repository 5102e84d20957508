//! The projects a user belongs to, and the form that creates one.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db::projects::Project;
use crate::domain::{NewProject, Overlap};
use crate::routes::pages::{html, redirect, Layout};
use crate::services;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/index.html")]
pub struct IndexPage {
    pub layout: Layout,
    pub projects: Vec<Project>,
    pub may_create: bool,
}

pub async fn show(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, PageError> {
    let (projects, may_create) = services::projects::list(&state.pool, &auth.user).await?;
    Ok(html(&IndexPage { layout: Layout::of(&auth), projects, may_create }))
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    slug: String,
    name: String,
    kind: String,
    overlap: Option<String>,
}

impl CreateForm {
    fn parse(&self) -> Result<NewProject, String> {
        let overlap = Overlap::parse_field(self.overlap.as_deref())?;
        let mut new = NewProject::parse(&self.slug, &self.name, &self.kind)?;
        new.overlap = overlap.unwrap_or(new.overlap);
        Ok(new)
    }
}

pub async fn create(state: web::Data<AppState>, auth: Auth, form: web::Form<CreateForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let new = form.parse().map_err(AppError::Invalid)?;
    let slug = services::projects::create(&state.pool, Some(&auth.user), &new).await?;
    Ok(redirect(&format!("/projects/{slug}")))
}
