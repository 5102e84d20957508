//! The lead's quality page: labellers' gold scores and careless-work signals, pauses (lifted
//! with a note), the project's agreement figures beside their chance levels, items where
//! labellers disagree, quality settings and honeypots; and marking an item gold from its page.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::db::projects::Project;
use crate::domain::agreement::Estimate;
use crate::domain::quality::{parse_letter_ranking, QualitySettings};
use crate::domain::{ItemId, Role, UserId};
use crate::routes::pages::{html, redirect, Layout};
use crate::services::{project, quality};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/quality.html")]
pub struct QualityPage {
    pub layout: Layout,
    pub project: Project,
    pub report: quality::Report,
}

impl QualityPage {
    pub fn est(&self, e: &Option<Estimate>) -> String {
        quality::estimate_text(e)
    }

    pub fn num(&self, x: &Option<f64>) -> String {
        x.map_or_else(|| "–".into(), |x| format!("{x:.2}"))
    }

    pub fn pct(&self, x: &f64) -> String {
        format!("{:.0}%", x * 100.0)
    }

    pub fn p_value(&self, p: &f64) -> String {
        if *p < 1e-4 {
            format!("{p:.1e}")
        } else {
            format!("{p:.4}")
        }
    }

    pub fn pause_below(&self) -> String {
        self.report.settings.pause_below.map(|b| b.to_string()).unwrap_or_default()
    }

    /// What a gold score means in this project.
    pub fn gold_meaning(&self) -> &'static str {
        if self.report.kind == crate::domain::TaskKind::Pairwise {
            "share of gold tasks answered as the reference (chance 0.5)"
        } else {
            "mean Kendall τ-b against the reference (honeypots: agreement on the pairs the reference orders; chance 0)"
        }
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let report = quality::report(&state.pool, &state.quality, &p).await?;
    Ok(html(&QualityPage { layout: Layout::of(&auth), project: p, report }))
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    gold_onboarding: String,
    gold_rate: String,
    #[serde(default)]
    pause_below: String,
    pause_min_gold: String,
    extra_max: String,
    extra_below: String,
    /// Absent from older forms: the current rate is kept.
    #[serde(default)]
    review_rate: Option<String>,
}

fn number<T: std::str::FromStr>(text: &str, field: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("{field}: expected a number, got {:?}", text.trim()))
}

impl SettingsForm {
    fn parse(&self, current: f64) -> Result<QualitySettings, String> {
        let below = self.pause_below.trim();
        QualitySettings {
            gold_onboarding: number(&self.gold_onboarding, "gold_onboarding")?,
            gold_rate: number(&self.gold_rate, "gold_rate")?,
            pause_below: if below.is_empty() { None } else { Some(number(below, "pause_below")?) },
            pause_min_gold: number(&self.pause_min_gold, "pause_min_gold")?,
            extra_max: number(&self.extra_max, "extra_max")?,
            extra_below: number(&self.extra_below, "extra_below")?,
            review_rate: match &self.review_rate {
                Some(r) => number(r, "review_rate")?,
                None => current,
            },
        }
        .checked()
    }
}

pub async fn settings(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<SettingsForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let current = quality::settings(&state.pool, &p).await?.review_rate;
    let s = form.parse(current).map_err(AppError::Invalid)?;
    quality::set_settings(&state.pool, &p, auth.user.id, &s).await?;
    Ok(redirect(&format!("/projects/{}/quality#settings", p.slug)))
}

#[derive(Deserialize)]
pub struct LiftForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

pub async fn lift(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<LiftForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, user) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let user: UserId = user.parse().map_err(|_| AppError::NotFound)?;
    quality::lift(&state.pool, &p, auth.user.id, user, &form.note).await?;
    Ok(redirect(&format!("/projects/{}/quality#labellers", p.slug)))
}

#[derive(Deserialize)]
pub struct HoneypotForm {
    #[serde(default)]
    csrf: String,
    count: String,
}

pub async fn honeypots(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<HoneypotForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let n: i64 = number(&form.count, "count").map_err(AppError::Invalid)?;
    quality::generate_honeypots(&state.pool, &p, n).await?;
    Ok(redirect(&format!("/projects/{}/quality#honeypots", p.slug)))
}

#[derive(Deserialize)]
pub struct GoldForm {
    #[serde(default)]
    csrf: String,
    /// Response letters best first: `B > A = C`; blank with `remove` unmarks.
    #[serde(default)]
    ranking: String,
    #[serde(default)]
    explanation: String,
    #[serde(default)]
    remove: Option<String>,
}

pub async fn gold(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<GoldForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, item) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let item: ItemId = item.parse().map_err(|_| AppError::NotFound)?;
    if form.remove.is_some() {
        quality::mark_gold(&state.pool, &p, auth.user.id, item, None).await?;
    } else {
        let ids = quality::response_ids(&state.pool, &p, item).await?;
        let tiers = parse_letter_ranking(&form.ranking, ids.len()).map_err(AppError::Invalid)?;
        let tiers: Vec<Vec<crate::domain::ResponseId>> = tiers.iter().map(|t| t.iter().map(|&i| ids[i]).collect()).collect();
        quality::mark_gold(&state.pool, &p, auth.user.id, item, Some((&tiers, &form.explanation))).await?;
    }
    Ok(redirect(&format!("/projects/{}/items/{item}#gold", p.slug)))
}

pub async fn extend(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    form: web::Form<crate::routes::pages::CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    quality::extend_disagreements(&state.pool, &p).await?;
    Ok(redirect(&format!("/projects/{}/quality#low-agreement", p.slug)))
}
