//! The Labellers tab: each labeller's judgements, speed, skips and agreement with the others,
//! and the project's members (added and removed by `members`).

use actix_web::{web, HttpResponse};
use askama::Template;

use super::tabs::TabBar;
use crate::db::projects::{Member, Project};
use crate::db::stats::LabellerStats;
use crate::domain::Role;
use crate::routes::pages::{html, percent, Layout};
use crate::services::{self, project};
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/labellers.html")]
pub struct LabellersPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub labellers: Vec<LabellerStats>,
    pub members: Vec<Member>,
}

impl LabellersPage {
    /// Seconds with one decimal, or nothing.
    pub fn median(&self, l: &LabellerStats) -> String {
        l.median_seconds.map(|s| format!("{s:.1} s")).unwrap_or_default()
    }

    /// Agreement with the other labellers and over how many pairs.
    pub fn agreement(&self, l: &LabellerStats) -> String {
        l.agreement.map_or_else(|| "–".into(), |a| format!("{}% ({})", percent(a), l.agreement_pairs))
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let (labellers, members) = services::projects::people(&state.pool, &state.quality, &p).await?;
    Ok(html(&LabellersPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "labellers"), project: p, labellers, members }))
}
