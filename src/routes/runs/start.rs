//! A lead starts a run from the Runs tab's form: the configuration as typed fields (`c.<name>`,
//! blank for the trainer's default), the input as choices (`i.<name>`), and JSON for either as
//! an advanced option whose keys override the fields.

use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};

use crate::domain::runs::{config_from_fields, RunKind, RunSpec};
use crate::domain::Role;
use crate::routes::pages::redirect;
use crate::services::runs as service;
use crate::web::auth::Auth;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

/// A form field holding JSON; blank is none.
pub fn json_field(name: &str, text: &str) -> Result<Value, AppError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(t).map_err(|e| AppError::Invalid(format!("{name}: not valid JSON ({e})")))
}

/// The inputs a form may choose (`i.<name>`).
const INPUTS: [&str; 6] = ["export_id", "policy_run", "reward_model_run", "policy_path", "reward_model_path", "ppo_run"];

/// The run a start form asks for, before it is parsed into a [`RunSpec`]: kind, configuration
/// and input as JSON.
#[derive(Debug, PartialEq)]
pub struct StartRequest {
    pub csrf: String,
    pub kind: String,
    pub config: Value,
    pub input: Value,
}

impl StartRequest {
    /// Reads the form's fields; messages name the field.
    pub fn from_fields(fields: &[(String, String)]) -> Result<Self, String> {
        let one = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
        let kind_text = one("kind").to_string();
        let kind: RunKind = kind_text.parse().map_err(|e| format!("kind: {e}"))?;
        let typed = fields.iter().filter_map(|(k, v)| Some((k.strip_prefix("c.")?, v.as_str())));
        let mut config = config_from_fields(kind, typed)?;
        let mut input = Map::new();
        for (k, v) in fields.iter().filter_map(|(k, v)| Some((k.strip_prefix("i.")?, v.trim()))) {
            if !INPUTS.contains(&k) {
                return Err(format!("input.{k}: not an input a run takes"));
            }
            if !v.is_empty() {
                input.insert(k.to_string(), Value::from(v));
            }
        }
        merge(&mut config, "config", one("config"))?;
        merge(&mut input, "input", one("input"))?;
        Ok(Self { csrf: one("csrf").to_string(), kind: kind_text, config: Value::Object(config), input: Value::Object(input) })
    }
}

/// The advanced JSON field `name` over the fields' values: its keys win.
fn merge(into: &mut Map<String, Value>, name: &str, text: &str) -> Result<(), String> {
    match json_field(name, text).map_err(|e| e.to_string())? {
        Value::Null => Ok(()),
        Value::Object(m) => {
            into.extend(m);
            Ok(())
        }
        _ => Err(format!("{name}: expected a JSON object")),
    }
}

pub async fn start(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<Vec<(String, String)>>) -> Result<HttpResponse, PageError> {
    let csrf = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    auth.check_csrf(csrf)?;
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let req = StartRequest::from_fields(&form).map_err(AppError::Invalid)?;
    let spec = RunSpec::parse(&req.kind, &req.config, &req.input, p.kind).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    let id = service::start_run(&mut conn, &p, auth.user.id, spec).await.map_err(AppError::from)?;
    Ok(redirect(&format!("/projects/{slug}/runs/{id}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn typed_fields_and_choices_make_the_run_and_json_overrides_them() {
        let r = StartRequest::from_fields(&fields(&[
            ("csrf", "t"),
            ("kind", "ppo"),
            ("c.iterations", "3"),
            ("c.kl_coef", ""),
            ("i.policy_run", ""),
            ("i.reward_model_path", "shared/rm"),
            ("config", "{\"iterations\": 5}"),
            ("input", ""),
        ]))
        .unwrap();
        assert_eq!((r.kind.as_str(), r.config.clone(), r.input.clone()), ("ppo", json!({"iterations": 5}), json!({"reward_model_path": "shared/rm"})));
    }

    #[test]
    fn each_refusal_names_its_field() {
        let err = |pairs: &[(&str, &str)]| StartRequest::from_fields(&fields(pairs)).unwrap_err();
        assert!(err(&[("kind", "rn")]).starts_with("kind:"));
        assert!(err(&[("kind", "rm"), ("c.epochs", "many")]).starts_with("config.epochs: expected a whole number"));
        assert!(err(&[("kind", "rm"), ("i.data", "x")]).starts_with("input.data:"));
        assert!(err(&[("kind", "rm"), ("config", "{")]).starts_with("config: not valid JSON"));
        assert_eq!(err(&[("kind", "rm"), ("config", "[1]")]), "config: expected a JSON object");
    }
}
