//! The Webhooks tab: a lead registers endpoints (the secret shown once), sees each endpoint's
//! delivery log, sends a test event, redelivers, rotates the secret or removes the endpoint.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::tabs::TabBar;
use crate::db::projects::Project;
use crate::db::webhooks::{Delivery, Endpoint};
use crate::domain::webhooks::{parse_agreement_below, NewEndpoint, EVENTS};
use crate::domain::{DeliveryId, Role, WebhookId};
use crate::routes::pages::{html, html_with_status, redirect, CsrfOnly, Layout};
use crate::services::{project, webhooks};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/webhooks.html")]
pub struct WebhooksPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub endpoints: Vec<Endpoint>,
    /// The secret of the endpoint just registered or rotated, shown this once.
    pub secret: Option<(String, String)>,
    /// Why the registration form was refused, with what was typed.
    pub error: Option<String>,
    pub url: String,
    pub description: String,
    /// The agreement alert's threshold.
    pub agreement_below: Option<f64>,
}

impl WebhooksPage {
    pub fn events(&self) -> &'static [(&'static str, &'static str)] {
        EVENTS
    }
}

#[derive(Template)]
#[template(path = "projects/webhook.html")]
pub struct WebhookPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub endpoint: Endpoint,
    pub deliveries: Vec<Delivery>,
}

impl WebhookPage {
    pub fn when(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
    }
}

async fn list_page(
    state: &AppState,
    auth: &Auth,
    p: Project,
    secret: Option<(String, String)>,
    error: Option<String>,
    typed: (String, String),
) -> Result<WebhooksPage, AppError> {
    let endpoints = webhooks::list(&state.pool, &p).await?;
    let agreement_below = webhooks::agreement_below(&state.pool, &p).await?;
    let (url, description) = typed;
    Ok(WebhooksPage { layout: Layout::of(auth), tabs: TabBar::new(&p, "webhooks"), project: p, endpoints, secret, error, url, description, agreement_below })
}

pub async fn show(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    Ok(html(&list_page(&state, &auth, p, None, None, Default::default()).await?))
}

/// Registers an endpoint from the form (`url`, `description`, one `event` field per ticked
/// type) and shows its secret once; a refused form comes back with the reason.
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth,
    slug: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    auth.check_csrf(&field("csrf"))?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let events: Vec<String> = form.iter().filter(|(k, _)| k == "event").map(|(_, v)| v.clone()).collect();
    let (url, description) = (field("url"), field("description"));
    match NewEndpoint::parse(&url, &events, &description, state.web.webhooks.allow_private) {
        Ok(new) => {
            let (endpoint, secret) = webhooks::create(&state.pool, &p, auth.user.id, &new).await?;
            let shown = Some((endpoint.url, secret.expose().to_string()));
            Ok(html(&list_page(&state, &auth, p, shown, None, Default::default()).await?))
        }
        Err(e) => Ok(html_with_status(actix_web::http::StatusCode::BAD_REQUEST, &list_page(&state, &auth, p, None, Some(e), (url, description)).await?)),
    }
}

#[derive(serde::Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    agreement_below: String,
}

/// Sets the agreement alert's threshold (blank: off).
pub async fn settings(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<SettingsForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let text = form.agreement_below.trim();
    let value = match text {
        "" => None,
        t => Some(t.parse::<f64>().map_err(|_| AppError::Invalid(format!("agreement_below: expected a number from -1 to 1, got {t:?}")))?),
    };
    let below = parse_agreement_below(value).map_err(AppError::Invalid)?;
    webhooks::set_agreement_below(&state.pool, &p, below).await?;
    Ok(redirect(&format!("/projects/{}/webhooks", p.slug)))
}

fn ids(text: &str) -> Result<WebhookId, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

pub async fn log(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, id) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let (endpoint, deliveries) = webhooks::log(&state.pool, &p, ids(&id)?).await?;
    Ok(html(&WebhookPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "webhooks"), project: p, endpoint, deliveries }))
}

pub async fn rotate(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let id = ids(&id)?;
    let secret = webhooks::rotate(&state.pool, &p, id).await?;
    let (endpoint, _) = webhooks::log(&state.pool, &p, id).await?;
    Ok(html(&list_page(&state, &auth, p, Some((endpoint.url, secret.expose().to_string())), None, Default::default()).await?))
}

pub async fn delete(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    webhooks::delete(&state.pool, &p, ids(&id)?).await?;
    Ok(redirect(&format!("/projects/{}/webhooks", p.slug)))
}

pub async fn test(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    webhooks::send_test(&state.pool, &p, ids(&id)?).await?;
    Ok(redirect(&format!("/projects/{}/webhooks/{id}", p.slug)))
}

pub async fn redeliver(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id, delivery) = path.into_inner();
    let p = project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let delivery: DeliveryId = delivery.parse().map_err(|_| AppError::NotFound)?;
    webhooks::redeliver(&state.pool, &p, ids(&id)?, delivery).await?;
    Ok(redirect(&format!("/projects/{}/webhooks/{id}", p.slug)))
}
