//! A lead takes an export snapshot from the project page.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::domain::Role;
use crate::export::{Format, Options};
use crate::routes::pages::redirect;
use crate::services::{exports, project};
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

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

impl ExportForm {
    /// The options ticked; a blank test share is the format's default.
    fn options(&self) -> Result<Options, String> {
        let test_percent = match self.test_percent.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(t.parse().map_err(|_| format!("test_percent: expected a whole number from 0 to 90, got {t:?}"))?),
        };
        Ok(Options {
            margin: self.margin.is_some(),
            include_ties: self.include_ties.is_some(),
            include_both_bad: self.include_both_bad.is_some(),
            test_percent,
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
    Ok(redirect(&format!("/projects/{slug}#exports")))
}
