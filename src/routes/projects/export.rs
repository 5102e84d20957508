//! The Exports tab: every option of an export snapshot as a form, and the snapshots taken, each
//! file downloadable with the manifest beside it.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::tabs::TabBar;
use crate::db::projects::Project;
use crate::domain::Role;
use crate::export::{Aggregate, Export, Format, Options, DEFAULT_TEST_PERCENT, MAX_TEST_PERCENT};
use crate::routes::pages::{html, redirect, Layout};
use crate::services::{exports, project};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/exports.html")]
pub struct ExportsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub exports: Vec<Export>,
    pub default_test_percent: u8,
    pub max_test_percent: u8,
}

impl ExportsPage {
    /// The start of a sha256, enough to tell files apart.
    pub fn short_sha<'a>(&self, sha: &'a str) -> &'a str {
        sha.get(..12).unwrap_or(sha)
    }

    /// The options an export was taken with, in words.
    pub fn options(&self, e: &Export) -> String {
        let o = &e.options;
        let mut parts: Vec<String> = Vec::new();
        for (on, name) in [(o.margin, "margin"), (o.include_ties, "ties kept"), (o.include_both_bad, "\"both bad\" kept")] {
            if on {
                parts.push(name.into());
            }
        }
        if let Some(t) = o.test_percent {
            parts.push(format!("test {t}%"));
        }
        if o.exclude_paused {
            parts.push(format!("paused labellers left out ({})", o.excluded_labellers.len()));
        }
        if let Some(m) = o.min_agreement {
            parts.push(format!("agreement ≥ {m}"));
        }
        match o.aggregate {
            Some(Aggregate::Majority) => parts.push("aggregated by majority".into()),
            Some(Aggregate::BradleyTerry) => parts.push("aggregated by Bradley–Terry".into()),
            None => {}
        }
        if parts.is_empty() {
            "defaults".into()
        } else {
            parts.join(", ")
        }
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let exports = exports::list(&state.pool, &p).await?;
    let page = ExportsPage {
        layout: Layout::of(&auth),
        tabs: TabBar::new(&p, "exports"),
        project: p,
        exports,
        default_test_percent: DEFAULT_TEST_PERCENT,
        max_test_percent: MAX_TEST_PERCENT,
    };
    Ok(html(&page))
}

#[derive(Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    csrf: String,
    format: String,
    #[serde(default)]
    margin: Option<String>,
    #[serde(default)]
    include_ties: Option<String>,
    #[serde(default)]
    include_both_bad: Option<String>,
    #[serde(default)]
    test_percent: Option<String>,
    #[serde(default)]
    exclude_paused: Option<String>,
    #[serde(default)]
    min_agreement: Option<String>,
    #[serde(default)]
    aggregate: Option<String>,
    /// Ticked: rejected judgements stay in (comparisons only), marked by their review state.
    #[serde(default)]
    keep_rejected: Option<String>,
}

impl ExportForm {
    /// The options ticked; a blank test share is the format's default.
    fn options(&self) -> Result<Options, String> {
        let test_percent = match self.test_percent.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| format!("test_percent: expected a whole number from 0 to 90, got {t:?}"))?),
        };
        let min_agreement = match self.min_agreement.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| format!("min_agreement: expected a number from 0 to 1, got {t:?}"))?),
        };
        let aggregate = match self.aggregate.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some("majority") => Some(Aggregate::Majority),
            Some("bradley_terry") => Some(Aggregate::BradleyTerry),
            Some(other) => return Err(format!("aggregate: expected majority or bradley_terry, got {other:?}")),
        };
        Ok(Options {
            margin: self.margin.is_some(),
            include_ties: self.include_ties.is_some(),
            include_both_bad: self.include_both_bad.is_some(),
            test_percent,
            exclude_paused: self.exclude_paused.is_some(),
            min_agreement,
            aggregate,
            drop_rejected: self.keep_rejected.is_none(),
            ..Options::default()
        })
    }
}

pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<ExportForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let options = form.options().map_err(AppError::Invalid)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let format: Format = form.format.parse().map_err(AppError::Invalid)?;
    exports::create(&state.pool, &state.tmp_dir, &p, &auth.user, format, options).await?;
    Ok(redirect(&format!("/projects/{slug}/exports")))
}
