//! The runs area's regression page: the project's frozen regression sets (freeze one from a
//! `preferences` export's test split, choose the active one) and, per set, each figure of the
//! rm, dpo and ppo runs measured on it plotted across runs in creation order, with a table
//! where a drop beyond the threshold is flagged.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db::projects::Project;
use crate::db::regression::RegressionSet;
use crate::domain::{RegressionSetId, Role};
use crate::export::{Export, Format};
use crate::routes::pages::{html, redirect, CsrfOnly, Layout};
use crate::routes::projects::tabs::TabBar;
use crate::services::regression::{self as service, parse_threshold, FreezeRequest, RegressionReport, RegressionSeries};
use crate::web::auth::Auth;
use crate::web::chart::{chart, fmt_num, Chart};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/regression.html")]
pub struct RegressionPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub report: RegressionReport,
    /// Per set (in the report's order), a chart and table rows per figure.
    pub sets: Vec<SetView>,
    /// The project's `preferences` exports whose test split is not empty (newest first).
    pub exports: Vec<Export>,
}

/// A set and its figures.
pub struct SetView {
    pub set: RegressionSet,
    pub figures: Vec<Figure>,
}

/// A figure of a set across runs: its chart (one) and its table.
pub struct Figure {
    pub metric: String,
    pub help: String,
    pub charts: Vec<Chart>,
    pub rows: Vec<FigureRow>,
}

/// A run's value in a figure's table.
pub struct FigureRow {
    pub index: usize,
    pub run_id: String,
    pub short: String,
    pub kind: String,
    pub created: String,
    pub value: String,
    pub n: i32,
    pub change: String,
    pub flagged: bool,
}

impl RegressionPage {
    pub fn threshold(&self) -> String {
        fmt_num(self.report.threshold)
    }

    pub fn test_rows(&self, e: &Export) -> u64 {
        test_rows(e)
    }
}

fn test_rows(e: &Export) -> u64 {
    e.files.iter().filter(|f| f.part == "test").map(|f| f.rows).sum()
}

fn figure(s: &RegressionSeries, set_name: &str) -> Figure {
    let points: Vec<(f64, f64)> = s.points.iter().enumerate().map(|(i, p)| ((i + 1) as f64, p.value)).collect();
    let mut c = chart(s.metric.clone(), vec![(set_name.to_string(), points)]);
    c.x_ticks = c.x_ticks.into_iter().map(|(x, t)| (x, format!("run {t}"))).collect();
    let rows = s
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let id = p.run_id.0.simple().to_string();
            FigureRow {
                index: i + 1,
                run_id: p.run_id.to_string(),
                short: id[..8].to_string(),
                kind: p.kind.to_string(),
                created: p.run_created_at.format("%Y-%m-%d %H:%M").to_string(),
                value: format!("{:.4}", p.value),
                n: p.n,
                change: p.change.map_or_else(|| "–".into(), |c| format!("{c:+.4}")),
                flagged: p.flagged,
            }
        })
        .collect();
    Figure { metric: s.metric.clone(), help: s.help.clone(), charts: vec![c], rows }
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    threshold: Option<String>,
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<PageQuery>) -> Result<HttpResponse, PageError> {
    let threshold = parse_threshold(q.threshold.as_deref())?;
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let report = service::report(&state.pool, &p, threshold).await?;
    let sets = report
        .sets
        .iter()
        .map(|s| SetView { set: s.set.clone(), figures: s.series.iter().filter(|x| !x.points.is_empty()).map(|x| figure(x, &s.set.name)).collect() })
        .collect();
    let mut exports: Vec<Export> =
        crate::services::exports::list(&state.pool, &p).await?.into_iter().filter(|e| e.format() == Format::Preferences && test_rows(e) > 0).collect();
    exports.truncate(20);
    let page = RegressionPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "runs"), project: p, report, sets, exports };
    Ok(html(&page))
}

#[derive(Deserialize)]
pub struct FreezeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    export_id: String,
    /// A ticked checkbox sends "on".
    #[serde(default)]
    activate: Option<String>,
}

pub async fn freeze(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<FreezeForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let req = FreezeRequest { name: form.name.clone(), export_id: form.export_id.clone(), activate: form.activate.as_ref().map(|_| true) };
    service::freeze(&state.pool, &state.tmp_dir, &p, &auth.user, &req).await?;
    Ok(redirect(&format!("/projects/{slug}/runs/regression")))
}

pub async fn activate(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let id: RegressionSetId = id.parse().map_err(|_| AppError::NotFound)?;
    service::activate(&state.pool, &p, id).await?;
    Ok(redirect(&format!("/projects/{slug}/runs/regression")))
}
