//! The Models and leaderboard tab: one table of the models (Bradley–Terry strength with its
//! interval, Elo, win rate, wins, losses, ties) and the newest reward model's agreement with
//! people, with the comparisons where it disagrees most confidently.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::tabs::TabBar;
use crate::db::projects::Project;
use crate::db::runs::{Disagreement, RmAgreement};
use crate::domain::leaderboard::Entry;
use crate::domain::{Role, RunId};
use crate::routes::pages::{first_chars, html, percent, Layout};
use crate::services::{self, project};
use crate::web::auth::Auth;
use crate::web::error::PageError;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/models.html")]
pub struct ModelsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub leaderboard: Vec<LeaderRow>,
    pub rm: Option<RmAgreement>,
}

impl ModelsPage {
    /// A share from 0 to 1 as a percentage with one decimal: `87.5`.
    pub fn percent(&self, x: &f64) -> String {
        percent(*x)
    }

    /// The first `n` characters of `text`, for a summary line.
    pub fn first_chars(&self, text: &str, n: usize) -> String {
        first_chars(text, n)
    }

    /// How much more reward the model gave the response people did not prefer.
    pub fn gap(&self, d: &Disagreement) -> String {
        format!("{:.3}", d.gap())
    }
}

/// A leaderboard row with its confidence interval placed on a common 0–160 px scale.
pub struct LeaderRow {
    pub e: Entry,
    pub run: Option<RunId>,
    pub x_low: f64,
    pub x_high: f64,
    pub x: f64,
}

impl LeaderRow {
    pub fn rows(board: Vec<(Entry, Option<RunId>)>) -> Vec<Self> {
        let lo = board.iter().map(|(e, _)| e.ci_low).fold(f64::MAX, f64::min);
        let hi = board.iter().map(|(e, _)| e.ci_high).fold(f64::MIN, f64::max);
        let span = (hi - lo).max(1e-9);
        let at = |v: f64| 4.0 + (v - lo) / span * 152.0;
        board.into_iter().map(|(e, run)| Self { x_low: at(e.ci_low), x_high: at(e.ci_high), x: at(e.strength), e, run }).collect()
    }

    /// The strength with its sign and two decimals: `+0.42`.
    pub fn strength(&self) -> String {
        format!("{:+.2}", self.e.strength)
    }

    /// The 95% interval: `-0.10 … +0.95`.
    pub fn interval(&self) -> String {
        format!("{:+.2} … {:+.2}", self.e.ci_low, self.e.ci_high)
    }

    pub fn elo(&self) -> String {
        format!("{:.0}", self.e.elo)
    }

    pub fn win_rate(&self) -> String {
        percent(self.e.win_rate)
    }

    /// A count of comparisons (ties count half a win each way, so halves can appear).
    pub fn count(&self, x: &f64) -> String {
        crate::web::chart::fmt_num(*x)
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let (board, rm) = services::projects::models(&state.pool, &p).await?;
    let leaderboard = LeaderRow::rows(board);
    Ok(html(&ModelsPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "models"), project: p, leaderboard, rm }))
}
