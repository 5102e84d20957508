//! The page structs (one per template) and rendering helpers.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;

use crate::db::projects::{Member, Project};
use crate::db::stats::Dashboard;
use crate::db::users::TokenRow;
use crate::export::Export;

/// What the base layout needs: the signed-in email and the CSRF token for forms.
#[derive(Default)]
pub struct Layout {
    pub email: Option<String>,
    pub csrf: String,
}

impl Layout {
    pub fn of(auth: &crate::web::auth::Auth) -> Self {
        Self { email: Some(auth.user.email.clone()), csrf: auth.csrf().to_string() }
    }
}

/// A form that carries nothing but its CSRF token.
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// HTML produced by the Markdown sanitizer, the only HTML a template emits unescaped.
pub struct SanitizedHtml(String);

impl SanitizedHtml {
    pub fn from_markdown(md: &str) -> Self {
        Self(crate::domain::markdown::render(md))
    }
}

impl std::fmt::Display for SanitizedHtml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for SanitizedHtml {}

pub fn html<T: Template>(page: &T) -> HttpResponse {
    html_with_status(StatusCode::OK, page)
}

pub fn html_with_status<T: Template>(status: StatusCode, page: &T) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body),
        Err(e) => {
            log::error!("rendering a page: {e}");
            HttpResponse::InternalServerError().body("rendering failed")
        }
    }
}

pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", to)).finish()
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub message: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "index.html")]
pub struct IndexPage {
    pub layout: Layout,
    pub projects: Vec<Project>,
    pub may_create: bool,
}

#[derive(Template)]
#[template(path = "project.html")]
pub struct ProjectPage {
    pub layout: Layout,
    pub project: Project,
    pub role: &'static str,
    pub dashboard: Option<Dashboard>,
    pub members: Vec<Member>,
    pub exports: Vec<Export>,
    pub leaderboard: Vec<LeaderRow>,
    pub rm: Option<crate::db::runs::RmAgreement>,
}

/// A leaderboard row with its confidence interval placed on a common 0–160 px scale.
pub struct LeaderRow {
    pub e: crate::domain::leaderboard::Entry,
    pub run: Option<crate::domain::RunId>,
    pub x_low: f64,
    pub x_high: f64,
    pub x: f64,
}

impl LeaderRow {
    pub fn rows(board: Vec<(crate::domain::leaderboard::Entry, Option<crate::domain::RunId>)>) -> Vec<Self> {
        let lo = board.iter().map(|(e, _)| e.ci_low).fold(f64::MAX, f64::min);
        let hi = board.iter().map(|(e, _)| e.ci_high).fold(f64::MIN, f64::max);
        let span = (hi - lo).max(1e-9);
        let at = |v: f64| 4.0 + (v - lo) / span * 152.0;
        board.into_iter().map(|(e, run)| Self { x_low: at(e.ci_low), x_high: at(e.ci_high), x: at(e.strength), e, run }).collect()
    }
}

#[derive(Template)]
#[template(path = "guidelines.html")]
pub struct GuidelinesPage {
    pub layout: Layout,
    pub project: Project,
    pub guidelines_html: SanitizedHtml,
}

#[derive(Template)]
#[template(path = "label.html")]
pub struct LabelPage {
    pub layout: Layout,
    pub project: Project,
    pub config_json: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub layout: Layout,
    pub tokens: Vec<TokenRow>,
    pub new_token: Option<String>,
    pub message: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub title: &'static str,
    pub message: String,
    pub back: String,
}
