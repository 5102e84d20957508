//! Project pages: the list, the project (the lead's dashboard, members, import, exports,
//! settings), guidelines and the labelling page.

use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::pages::{html, redirect, CsrfOnly, GuidelinesPage, IndexPage, LabelPage, Layout, ProjectPage, SanitizedHtml};
use crate::api::{add_member_checked, create_export, create_project, import_body, project, CreateBody};
use crate::db::{projects as dbp, stats};
use crate::domain::{Role, UserId};
use crate::export::Options;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

pub async fn index(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, PageError> {
    let mut conn = state.pool.acquire().await?;
    let projects = dbp::list_for_user(&mut conn, auth.user.id).await?;
    let may_create = dbp::may_create(&mut conn, &auth.user).await?;
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

pub async fn create(state: web::Data<AppState>, auth: Auth, form: web::Form<CreateForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let form = form.into_inner();
    let overlap = parse_overlap(form.overlap.as_deref())?;
    let body = CreateBody { slug: form.slug, name: form.name, kind: form.kind, overlap, flags: None, allow_ties: None, rating: None, guidelines: None };
    let slug = create_project(&state, &auth, body).await?;
    Ok(redirect(&format!("/projects/{}", slug.as_str())))
}

fn parse_overlap(text: Option<&str>) -> Result<Option<i32>, AppError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| AppError::Invalid(format!("overlap: expected a whole number, got {t:?}"))),
    }
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let mut conn = state.pool.acquire().await?;
    let (dashboard, members, exports, leaderboard, rm) = if p.is_lead() {
        (
            Some(stats::dashboard(&mut conn, &p).await?),
            dbp::members(&mut conn, p.id).await?,
            crate::export::list(&mut conn, p.id).await?,
            super::pages::LeaderRow::rows(crate::db::runs::leaderboard(&mut conn, p.id).await?),
            crate::db::runs::rm_agreement(&mut conn, p.id).await?,
        )
    } else {
        (None, Vec::new(), Vec::new(), Vec::new(), None)
    };
    let role = p.role.as_str();
    Ok(html(&ProjectPage { layout: Layout::of(&auth), project: p, role, dashboard, members, exports, leaderboard, rm }))
}

pub async fn guidelines(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let guidelines_html = SanitizedHtml::from_markdown(if p.guidelines.trim().is_empty() { "*No guidelines yet.*" } else { &p.guidelines });
    Ok(html(&GuidelinesPage { layout: Layout::of(&auth), project: p, guidelines_html }))
}

pub async fn label(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state, &auth, &slug, Role::Labeller).await?;
    let config_json = serde_json::json!({
        "slug": p.slug, "kind": p.kind, "flags": p.flags, "allow_ties": p.allow_ties,
        "rating_enabled": p.rating_enabled, "csrf": auth.csrf(),
    })
    .to_string();
    Ok(html(&LabelPage { layout: Layout::of(&auth), project: p, config_json }))
}

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    csrf: String,
    email: String,
    role: String,
}

pub async fn add_member(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<MemberForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    add_member_checked(&state, &p, &form.email, &form.role).await?;
    Ok(redirect(&format!("/projects/{}#members", p.slug)))
}

pub async fn remove_member(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, user) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let user: UserId = user.parse().map_err(|_| AppError::NotFound)?;
    if !dbp::remove_member(&mut *state.pool.acquire().await?, p.id, user).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(redirect(&format!("/projects/{}#members", p.slug)))
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

pub async fn settings(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<SettingsForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let overlap = parse_overlap(Some(&form.overlap))?.unwrap_or(p.overlap);
    if !(1..=100).contains(&overlap) {
        return Err(AppError::Invalid(format!("overlap: expected 1 to 100, got {overlap}")).into());
    }
    let name = form.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::Invalid("name: 1-200 characters".into()).into());
    }
    let flags: Vec<String> = form.flags.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let mut tx = state.pool.begin().await?;
    dbp::update(&mut tx, p.id, name, &form.guidelines, &flags, overlap, form.allow_ties.is_some(), form.rating.is_some()).await?;
    tx.commit().await?;
    Ok(redirect(&format!("/projects/{}#settings", p.slug)))
}

#[derive(Deserialize)]
pub struct CsrfQuery {
    #[serde(default)]
    csrf: String,
}

pub async fn import(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<CsrfQuery>, mut form: Multipart) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&q.csrf)?;
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let field = form
        .try_next()
        .await
        .map_err(|e| AppError::Invalid(format!("the upload is not valid: {e}")))?
        .ok_or_else(|| AppError::Invalid("choose a file to import".into()))?;
    let report = import_body(&state, &p, field.map(|c| c.map_err(|e| e.to_string()))).await?;
    let page = super::pages::MessagePage { layout: Layout::of(&auth), title: "Imported", message: report.to_string(), back: format!("/projects/{}", p.slug) };
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
}

pub async fn export(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<ExportForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let test_percent = match form.test_percent.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse().map_err(|_| AppError::Invalid(format!("test_percent: expected a whole number from 0 to 90, got {t:?}")))?),
    };
    let options = Options { margin: form.margin.is_some(), include_ties: form.include_ties.is_some(), include_both_bad: form.include_both_bad.is_some(), test_percent, ..Options::default() };
    create_export(&state, &auth, &slug, &form.format, options).await?;
    Ok(redirect(&format!("/projects/{slug}#exports")))
}
