//! The Settings tab: a lead changes a project's name, overlap, ties, rating, flags and
//! guidelines, and its queue strategy (a form of its own).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::tabs::TabBar;
use crate::db::projects::Project;
use crate::db::queue::QueueState;
use crate::domain::queue::QueueStrategy;
use crate::domain::{Flags, Guidelines, Overlap, ProjectName, ProjectSettings, Role};
use crate::routes::pages::{html, redirect, Layout};
use crate::services::{self, project};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/settings.html")]
pub struct SettingsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub queue: QueueState,
}

impl SettingsPage {
    /// The strategies to choose from, as (value, label, selected).
    pub fn strategies(&self) -> Vec<(&'static str, &'static str, bool)> {
        let label = |q: QueueStrategy| match q {
            QueueStrategy::Fifo => "first in, first out (import order)",
            QueueStrategy::NewestFirst => "newest first (a run's samples first)",
            QueueStrategy::Uncertainty => "uncertainty (pairs the reward model ensemble is least sure of first)",
            QueueStrategy::Thompson => "Thompson (double Thompson sampling over the ensemble)",
        };
        QueueStrategy::ALL.into_iter().map(|q| (q.as_str(), label(q), q == self.queue.strategy)).collect()
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let queue = services::queue::state(&state.pool, &p).await?;
    Ok(html(&SettingsPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "settings"), project: p, queue }))
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    name: String,
    overlap: String,
    #[serde(default)]
    allow_ties: Option<String>,
    #[serde(default)]
    rating: Option<String>,
    #[serde(default)]
    flags: String,
    #[serde(default)]
    guidelines: String,
}

impl SettingsForm {
    /// The settings; a blank overlap keeps the project's.
    fn parse(&self, p: &Project) -> Result<ProjectSettings, String> {
        let overlap = Overlap::parse_field(Some(&self.overlap))?.unwrap_or(p.overlap);
        Ok(ProjectSettings {
            name: ProjectName::parse(&self.name)?,
            guidelines: Guidelines::new(self.guidelines.clone()),
            flags: Flags::from_lines(&self.flags),
            overlap,
            allow_ties: self.allow_ties.is_some(),
            rating_enabled: self.rating.is_some(),
        })
    }
}

pub async fn update(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<SettingsForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let settings = form.parse(&p).map_err(AppError::Invalid)?;
    services::projects::update_settings(&state.pool, &p, &settings).await?;
    Ok(redirect(&format!("/projects/{}/settings", p.slug)))
}

#[derive(Deserialize)]
pub struct QueueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    strategy: String,
}

pub async fn queue(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<QueueForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let strategy: QueueStrategy = form.strategy.parse().map_err(|e| AppError::Invalid(format!("strategy: {e}")))?;
    services::queue::set_strategy(&state.pool, &p, strategy).await?;
    Ok(redirect(&format!("/projects/{}/settings", p.slug)))
}
