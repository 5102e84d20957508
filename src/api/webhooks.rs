//! A project's webhooks for its leads: register an endpoint (its secret answered once), list,
//! the delivery log, rotate the secret, remove, send a test event, redeliver; the agreement
//! alert's threshold (see [`crate::services::webhooks`]).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::project;
use crate::db::webhooks::{Delivery, Endpoint};
use crate::domain::webhooks::{parse_agreement_below, NewEndpoint};
use crate::domain::{DeliveryId, Role, WebhookId};
use crate::services::webhooks;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::json::Json;
use crate::web::AppState;

/// An endpoint to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where events are POSTed (http or https; private networks only where the server allows them).
    url: String,
    /// The event types to send: some of `items.imported`, `judgements.stored`, `item.completed`,
    /// `export.created`, `run.started`, `run.succeeded`, `run.failed`, `schedule.fired`,
    /// `labeller.paused`, `agreement.below_threshold`.
    events: Vec<String>,
    #[serde(default)]
    description: String,
}

/// A registered endpoint with its signing secret, which is shown only here.
#[derive(Serialize, ToSchema)]
pub struct NewWebhook {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// `whsec_<base64>`: the HMAC key is the base64-decoded part after `whsec_`.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    webhooks: Vec<Endpoint>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryLog {
    webhook: Endpoint,
    /// The newest deliveries first (at most 200).
    deliveries: Vec<Delivery>,
}

#[derive(Serialize, ToSchema)]
pub struct NewSecret {
    secret: String,
}

fn webhook_id(text: &str) -> Result<WebhookId, AppError> {
    text.parse().map_err(|_| AppError::NotFound)
}

/// Registers an endpoint; the answer carries its secret, never shown again.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks", operation_id = "create_webhook", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = WebhookBody,
    responses((status = 201, description = "Registered.", body = NewWebhook),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn create(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<WebhookBody>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let new = NewEndpoint::parse(&body.url, &body.events, &body.description, state.web.webhooks.allow_private).map_err(AppError::Invalid)?;
    let (endpoint, secret) = webhooks::create(&state.pool, &p, auth.user.id, &new).await?;
    Ok(HttpResponse::Created().json(NewWebhook { endpoint, secret: secret.expose().to_string() }))
}

/// The project's endpoints, oldest first.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug.")),
    responses((status = 200, description = "The endpoints.", body = EndpointList),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    Ok(HttpResponse::Ok().json(EndpointList { webhooks: webhooks::list(&state.pool, &p).await? }))
}

/// An endpoint and its delivery log: each delivery's attempts, last status, latency, error and next retry.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks/{id}", operation_id = "webhook_log", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The endpoint's id.")),
    responses((status = 200, description = "The endpoint and its deliveries.", body = DeliveryLog),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or endpoint.", body = ErrorBody)))]
pub async fn show(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let (webhook, deliveries) = webhooks::log(&state.pool, &p, webhook_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(DeliveryLog { webhook, deliveries }))
}

/// Removes an endpoint with its deliveries.
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The endpoint's id.")),
    responses((status = 204, description = "Removed."),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or endpoint.", body = ErrorBody)))]
pub async fn delete(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    webhooks::delete(&state.pool, &p, webhook_id(&id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replaces the endpoint's secret; the new one is shown only here, the old one stops at once.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks/{id}/rotate", operation_id = "rotate_webhook_secret", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The endpoint's id.")),
    responses((status = 200, description = "The new secret.", body = NewSecret),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or endpoint.", body = ErrorBody)))]
pub async fn rotate(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let secret = webhooks::rotate(&state.pool, &p, webhook_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(NewSecret { secret: secret.expose().to_string() }))
}

/// Queues a `webhook.test` event for this endpoint alone.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks/{id}/test", operation_id = "test_webhook", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The endpoint's id.")),
    responses((status = 202, description = "Queued; its delivery shows in the log.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project or endpoint.", body = ErrorBody)))]
pub async fn test(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    webhooks::send_test(&state.pool, &p, webhook_id(&id)?).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"queued": true})))
}

/// Sends a delivery again from its first attempt (the same `webhook-id`).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks/{id}/deliveries/{delivery}/redeliver", operation_id = "redeliver_webhook", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug."), ("id" = String, Path, description = "The endpoint's id."),
           ("delivery" = String, Path, description = "The delivery's id.")),
    responses((status = 202, description = "Queued again.", body = Object),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project, endpoint or delivery.", body = ErrorBody)))]
pub async fn redeliver(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String, String)>) -> Result<HttpResponse, ApiError> {
    let (slug, id, delivery) = path.into_inner();
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let delivery: DeliveryId = delivery.parse().map_err(|_| AppError::NotFound)?;
    webhooks::redeliver(&state.pool, &p, webhook_id(&id)?, delivery).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"queued": true})))
}

/// The agreement alert: send `agreement.below_threshold` when the project's agreement falls below this.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Krippendorff's α from -1 to 1; `null` turns the alert off.
    #[schema(nullable)]
    agreement_below: Option<f64>,
}

/// Sets the threshold of the agreement alert (checked every half minute by the servers).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks/settings", operation_id = "webhook_settings", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug.")),
    request_body = WebhookSettings,
    responses((status = 200, description = "The settings now.", body = WebhookSettings),
              (status = 403, description = "The caller is not a lead of the project.", body = ErrorBody),
              (status = 404, description = "No such project.", body = ErrorBody)))]
pub async fn settings(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, body: Json<WebhookSettings>) -> Result<HttpResponse, ApiError> {
    let p = project(&state, &auth, &slug, Role::Lead).await?;
    let below = parse_agreement_below(body.agreement_below).map_err(AppError::Invalid)?;
    webhooks::set_agreement_below(&state.pool, &p, below).await?;
    Ok(HttpResponse::Ok().json(WebhookSettings { agreement_below: below }))
}
