//! A lead adds and deletes a project's schedules from the Runs tab: the chain is chosen as
//! kinds in order, or given as JSON (advanced).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::start::json_field;
use crate::db::schedules as dbs;
use crate::domain::runs::ChainStep;
use crate::domain::{Role, ScheduleId};
use crate::routes::pages::{redirect, CsrfOnly};
use crate::services::runs::{self as service, ScheduleRequest};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Deserialize)]
pub struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    min_new_comparisons: String,
    /// The chain as kinds chosen in order (blank steps left out), each with its defaults…
    #[serde(default)]
    step1: String,
    #[serde(default)]
    step2: String,
    #[serde(default)]
    step3: String,
    #[serde(default)]
    step4: String,
    /// …or as JSON (advanced), which wins when given.
    #[serde(default)]
    chain: String,
}

impl ScheduleForm {
    /// The chain: the JSON when given, else the chosen kinds.
    fn chain(&self) -> Result<Vec<ChainStep>, AppError> {
        if !self.chain.trim().is_empty() {
            return serde_json::from_value(json_field("chain", &self.chain)?)
                .map_err(|e| AppError::Invalid(format!("chain: expected a list of {{\"kind\", \"config\"?}} ({e})")));
        }
        let kinds = [&self.step1, &self.step2, &self.step3, &self.step4];
        Ok(kinds
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| ChainStep { kind: k.to_string(), config: Value::Null, input: Value::Null })
            .collect())
    }
}

pub async fn add_schedule(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<ScheduleForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let min = match form.min_new_comparisons.trim() {
        "" => None,
        t => Some(t.parse().map_err(|_| AppError::Invalid(format!("min_new_comparisons: expected a whole number, got {t:?}")))?),
    };
    let chain = form.chain()?;
    let req = ScheduleRequest { cron: Some(form.cron.clone()), min_new_comparisons: min, chain };
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    service::create_schedule(&mut conn, &p, auth.user.id, &req).await.map_err(AppError::from)?;
    Ok(redirect(&format!("/projects/{slug}/runs")))
}

pub async fn delete_schedule(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let id: ScheduleId = id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    if !dbs::delete(&mut conn, p.id, id).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(redirect(&format!("/projects/{slug}/runs")))
}
