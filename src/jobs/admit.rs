//! What a run must pass before it is queued, beyond the shape of its configuration (checked
//! in this module's parent): the exports, runs and model-store paths it names belong to its
//! project, and what it starts from exists. A `ppo`, `dpo` or `generate` run needs a policy and
//! a `ppo` run also a reward model: named in its input, made by an earlier step of its chain,
//! or a run of the project that made one (or is queued or running to make one).

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::{store_area, ParamType, RunKind, StoreArea};
use crate::db::runs as dbr;
use crate::domain::ProjectId;

/// Run kinds whose model is a policy, and those whose model is a reward model.
pub const POLICY_KINDS: [&str; 3] = ["sft", "ppo", "dpo"];
pub const REWARD_MODEL_KINDS: [&str; 1] = ["rm"];

/// A model a run starts from: its input fields' prefix, the kinds of run that make one, and the
/// kind to train first.
struct Need {
    role: &'static str,
    kinds: &'static [&'static str],
    first: &'static str,
}

const POLICY: Need = Need { role: "policy", kinds: &POLICY_KINDS, first: "sft" };
const REWARD_MODEL: Need = Need { role: "reward_model", kinds: &REWARD_MODEL_KINDS, first: "rm" };

/// One run to admit: alone, or a step of a schedule's chain.
pub struct Step<'a> {
    pub kind: RunKind,
    pub config: &'a Map<String, Value>,
    pub input: &'a Value,
}

/// Why a run is refused: something the lead can fix, or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Checks a run (`chain` false, one step) or a schedule's chain; messages name the field,
/// prefixed with `chain[i].` for a chain.
pub async fn check(conn: &mut PgConnection, project: ProjectId, steps: &[Step<'_>], chain: bool) -> Result<(), Refusal> {
    for (i, step) in steps.iter().enumerate() {
        let at = if chain { format!("chain[{i}].") } else { String::new() };
        check_names(conn, project, step, &at).await?;
        let earlier = &steps[..i];
        if step.kind.needs_policy() {
            let made = earlier.iter().any(|s| s.kind.makes_policy());
            need(conn, project, step, &at, made, &POLICY).await?;
        }
        if step.kind == RunKind::Ppo {
            let made = earlier.iter().any(|s| s.kind == RunKind::Rm);
            need(conn, project, step, &at, made, &REWARD_MODEL).await?;
        }
    }
    Ok(())
}

/// The exports, runs and store paths a step names are its project's.
async fn check_names(conn: &mut PgConnection, project: ProjectId, step: &Step<'_>, at: &str) -> Result<(), Refusal> {
    let input = step.input.as_object().into_iter().flatten().map(|(k, v)| (format!("input.{k}"), k.as_str(), v));
    let paths = step.kind.params().into_iter().filter(|p| p.ty == ParamType::StorePath).filter_map(|p| Some((format!("config.{}", p.name), "path", step.config.get(p.name)?)));
    for (field, key, v) in input.chain(paths).collect::<Vec<_>>() {
        let Some(text) = v.as_str() else { continue };
        let ok = match key {
            "export_id" => dbr::is_project_export(conn, project, parse_id(at, &field, text)?).await?,
            "policy_run" => dbr::is_project_run(conn, project, parse_id(at, &field, text)?, &POLICY_KINDS).await?,
            "reward_model_run" => dbr::is_project_run(conn, project, parse_id(at, &field, text)?, &REWARD_MODEL_KINDS).await?,
            _ => match store_area(text) {
                Some(StoreArea::Shared) => true,
                Some(StoreArea::Run(id)) => dbr::is_project_run(conn, project, id, &[]).await?,
                None => false,
            },
        };
        if !ok {
            let what = match key {
                "export_id" => "one of this project's exports".to_string(),
                "policy_run" => "one of this project's sft, ppo or dpo runs".to_string(),
                "reward_model_run" => "one of this project's rm runs".to_string(),
                _ => ParamType::StorePath.describe(),
            };
            return Err(Refusal::Invalid(format!("{at}{field}: expected {what}, got {text:?}")));
        }
    }
    Ok(())
}

fn parse_id(at: &str, field: &str, text: &str) -> Result<uuid::Uuid, Refusal> {
    text.parse().map_err(|_| Refusal::Invalid(format!("{at}{field}: expected an id, got {text:?}")))
}

/// Refuses a step that needs a model nobody provides.
async fn need(conn: &mut PgConnection, project: ProjectId, step: &Step<'_>, at: &str, in_chain: bool, need: &Need) -> Result<(), Refusal> {
    let role = need.role;
    let named = [format!("{role}_path"), format!("{role}_run")].iter().any(|k| step.input.get(k).is_some_and(|v| !v.is_null()));
    if named || in_chain || dbr::has_model_maker(conn, project, need.kinds).await? {
        return Ok(());
    }
    let chain = if at.is_empty() { "" } else { " (or earlier in the chain)" };
    Err(Refusal::Invalid(format!(
        "{at}kind: {kind} needs a {what}: set {at}input.{role}_path or {at}input.{role}_run, or train an {first} run first{chain}",
        kind = step.kind.as_str(),
        what = role.replace('_', " "),
        first = need.first,
    )))
}
