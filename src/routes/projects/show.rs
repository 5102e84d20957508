//! The project page: for a labeller the way in; for a lead the Overview tab (progress and
//! agreement between labellers). The lead's other tabs have their own pages (see `tabs`).

use actix_web::{web, HttpResponse};
use askama::Template;

use super::tabs::TabBar;
use crate::db::projects::Project;
use crate::db::stats::Dashboard;
use crate::domain::Role;
use crate::routes::pages::{html, percent, Layout};
use crate::services::{self, project};
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/show.html")]
pub struct ProjectPage {
    pub layout: Layout,
    pub project: Project,
    pub role: &'static str,
    pub tabs: TabBar,
    /// The lead's overview; none for a labeller.
    pub overview: Option<Overview>,
}

/// What the Overview tab shows.
pub struct Overview {
    pub d: Dashboard,
}

impl Overview {
    /// Share of items complete, as a percentage with one decimal.
    pub fn complete_percent(&self) -> String {
        percent(self.d.items_complete as f64 / self.d.items_total.max(1) as f64)
    }

    /// The overall agreement in words, with what chance would give.
    pub fn agreement(&self) -> String {
        match self.d.agreement_overall {
            Some(a) => format!("{}% over {} pairs", percent(a), self.d.agreement_pairs),
            None => "no shared items yet".into(),
        }
    }

    /// Labellers who judged or skipped anything.
    pub fn active_labellers(&self) -> usize {
        self.d.labellers.len()
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let overview = if p.is_lead() { Some(Overview { d: services::projects::dashboard(&state.pool, &state.quality, &p).await? }) } else { None };
    let (role, tabs) = (p.role.as_str(), TabBar::new(&p, "overview"));
    Ok(html(&ProjectPage { layout: Layout::of(&auth), project: p, role, tabs, overview }))
}
