//! The project page: for a labeller the way in; for a lead also the dashboard, leaderboard,
//! the reward model's agreement with people, members, import, exports and settings.

use actix_web::{web, HttpResponse};
use askama::Template;

use crate::db::projects::{Member, Project};
use crate::db::runs::{Disagreement, RmAgreement};
use crate::db::stats::Dashboard;
use crate::domain::leaderboard::Entry;
use crate::domain::Role;
use crate::export::Export;
use crate::routes::pages::{first_chars, html, percent, Layout};
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
    pub dashboard: Option<Dashboard>,
    pub members: Vec<Member>,
    pub exports: Vec<Export>,
    pub leaderboard: Vec<LeaderRow>,
    pub rm: Option<RmAgreement>,
}

impl ProjectPage {
    /// A share from 0 to 1 as a percentage with one decimal: `87.5`.
    pub fn percent(&self, x: &f64) -> String {
        percent(*x)
    }

    /// The first `n` characters of `text`, for a summary line.
    pub fn first_chars(&self, text: &str, n: usize) -> String {
        first_chars(text, n)
    }

    /// Seconds with one decimal.
    pub fn seconds(&self, s: &f64) -> String {
        format!("{s:.1}")
    }

    /// How much more reward the model gave the response people did not prefer.
    pub fn gap(&self, d: &Disagreement) -> String {
        format!("{:.3}", d.gap())
    }

    /// The start of a sha256, enough to tell files apart.
    pub fn short_sha<'a>(&self, sha: &'a str) -> &'a str {
        sha.get(..12).unwrap_or(sha)
    }
}

/// A leaderboard row with its confidence interval placed on a common 0–160 px scale.
pub struct LeaderRow {
    pub e: Entry,
    pub run: Option<crate::domain::RunId>,
    pub x_low: f64,
    pub x_high: f64,
    pub x: f64,
}

impl LeaderRow {
    pub fn rows(board: Vec<(Entry, Option<crate::domain::RunId>)>) -> Vec<Self> {
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
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Labeller).await?;
    let (dashboard, members, exports, leaderboard, rm) = if p.is_lead() {
        let v = services::projects::lead_view(&state.pool, &p).await?;
        (Some(v.dashboard), v.members, v.exports, LeaderRow::rows(v.leaderboard), v.rm)
    } else {
        (None, Vec::new(), Vec::new(), Vec::new(), None)
    };
    let role = p.role.as_str();
    Ok(html(&ProjectPage { layout: Layout::of(&auth), project: p, role, dashboard, members, exports, leaderboard, rm }))
}
