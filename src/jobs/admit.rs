//! What a run must pass before it is queued, beyond the shape of its configuration (checked
//! by `domain::runs`): the exports, runs and model-store paths it names belong to its
//! project, and what it starts from exists. A `ppo`, `dpo` or `generate` run needs a policy and
//! a `ppo` run also a reward model: named in its input, made by an earlier step of its chain,
//! or a run of the project that made one (or is queued or running to make one). A `spotcheck`
//! needs a succeeded PPO run of the project that kept √KL-grid checkpoints, or a PPO step with
//! `kl_grid` earlier in its chain.

use sqlx::PgConnection;

use crate::db::runs as dbr;
use crate::domain::runs::{store_area, ModelRole, ModelSource, ParamType, RunKind, RunSpec, StoreArea};
use crate::domain::ProjectId;

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
pub async fn check(conn: &mut PgConnection, project: ProjectId, steps: &[RunSpec], chain: bool) -> Result<(), Refusal> {
    for (i, step) in steps.iter().enumerate() {
        let at = if chain { format!("chain[{i}].") } else { String::new() };
        check_names(conn, project, step, &at).await?;
        for role in step.kind.needs() {
            let made = steps[..i].iter().any(|s| role.kinds().contains(&s.kind));
            need(conn, project, step, &at, made, *role).await?;
        }
        conservative_needs_ensemble(conn, project, step, &steps[..i], &at).await?;
        sweep_needs_a_regression_set(conn, project, step, &at).await?;
        if step.kind == RunKind::Spotcheck {
            check_spotcheck(conn, project, step, &steps[..i], &at).await?;
        }
    }
    Ok(())
}

/// A spot check names a succeeded PPO run of the project that kept grid checkpoints, or
/// follows a PPO step with `kl_grid` in its chain.
async fn check_spotcheck(conn: &mut PgConnection, project: ProjectId, step: &RunSpec, before: &[RunSpec], at: &str) -> Result<(), Refusal> {
    let invalid = |m: String| Err(Refusal::Invalid(m));
    let Some(id) = step.input.ppo_run else {
        let has_grid = |s: &&RunSpec| s.config.get("kl_grid").is_some_and(|v| !v.is_null());
        return match before.iter().rev().find(|s| s.kind == RunKind::Ppo) {
            Some(ppo) if has_grid(&ppo) => Ok(()),
            Some(_) => invalid(format!("{at}input.ppo_run: the PPO step before this spot check keeps no checkpoints to check: set its config.kl_grid")),
            None => invalid(format!("{at}input.ppo_run: expected the id of a succeeded PPO run of this project (or a PPO step earlier in the chain)")),
        };
    };
    let Some(ppo) = crate::db::spotcheck::ppo_run(conn, project, id).await? else {
        return invalid(format!("{at}input.ppo_run: expected one of this project's ppo runs, got {:?}", id.to_string()));
    };
    if ppo.kl_grid.is_none() {
        return invalid(format!("{at}input.ppo_run: run {id} was started without config.kl_grid, so it kept no √KL-grid checkpoints to check"));
    }
    if ppo.status != crate::domain::runs::RunStatus::Succeeded {
        return invalid(format!(
            "{at}input.ppo_run: run {id} is {}; expected a succeeded PPO run (or chain the spot check after it in a schedule)",
            ppo.status
        ));
    }
    Ok(())
}

/// A merge sweep measures each α on the project's active regression set: it needs one.
async fn sweep_needs_a_regression_set(conn: &mut PgConnection, project: ProjectId, step: &RunSpec, at: &str) -> Result<(), Refusal> {
    if step.config.get("merge_sweep").is_none_or(serde_json::Value::is_null) || crate::db::regression::active(conn, project).await?.is_some() {
        return Ok(());
    }
    Err(Refusal::Invalid(format!(
        "{at}config.merge_sweep: each α is measured on the project's active regression set, and it has none yet; freeze one (Runs → Regression sets) first"
    )))
}

/// A PPO step whose `reward_ensemble` is `min` or `mean-minus-std` needs a reward model with at
/// least two members (there is no spread to be conservative about otherwise): the reward model
/// it names by run, else the nearest rm step before it in the chain, else the project's newest
/// rm run (as the worker will pick). A model named by store path is checked by the trainer.
async fn conservative_needs_ensemble(conn: &mut PgConnection, project: ProjectId, step: &RunSpec, before: &[RunSpec], at: &str) -> Result<(), Refusal> {
    let how = step.config.get("reward_ensemble").and_then(serde_json::Value::as_str).unwrap_or("mean");
    if step.kind != RunKind::Ppo || how == "mean" {
        return Ok(());
    }
    let members = |config: &crate::domain::runs::params::Config| config.get("ensemble").and_then(serde_json::Value::as_i64).unwrap_or(1);
    let (members, which) = match step.input.model(ModelRole::RewardModel) {
        Some(ModelSource::Path(_)) => return Ok(()),
        Some(ModelSource::Run(id)) => (dbr::rm_ensemble(conn, project, Some(*id)).await?.unwrap_or(1), format!("rm run {}", short(*id))),
        None => match before.iter().rev().find(|s| s.kind == RunKind::Rm) {
            Some(rm) => (members(&rm.config), "the chain's rm step".to_string()),
            None => match dbr::rm_ensemble(conn, project, None).await? {
                Some(n) => (n, "the project's newest rm run".to_string()),
                None => return Ok(()),
            },
        },
    };
    if members >= 2 {
        return Ok(());
    }
    Err(Refusal::Invalid(format!(
        "{at}config.reward_ensemble: {how} needs an ensemble reward model (an rm run with ensemble of 2 or more), but the reward model this run \
         would use ({which}) is a single model; use mean, or train the reward model with ensemble ≥ 2"
    )))
}

fn short(id: crate::domain::RunId) -> String {
    id.0.simple().to_string()[..8].to_string()
}

/// What a step names: an export, a run in a role, or a store path.
enum Named<'a> {
    Export(crate::domain::ExportId),
    Run(ModelRole, crate::domain::RunId),
    Path(&'a str),
}

/// The exports, runs and store paths a step names, with their fields, in the order the
/// messages check them.
fn named(step: &RunSpec) -> Vec<(String, Named<'_>)> {
    let mut out: Vec<(String, Named)> = step.input.export.map(|e| ("input.export_id".to_string(), Named::Export(e))).into_iter().collect();
    for role in [ModelRole::Policy, ModelRole::RewardModel] {
        match step.input.model(role) {
            Some(ModelSource::Path(p)) => out.push((format!("input.{}_path", role.key()), Named::Path(p))),
            Some(ModelSource::Run(id)) => out.push((format!("input.{}_run", role.key()), Named::Run(role, *id))),
            None => {}
        }
    }
    let paths = step.kind.params().into_iter().filter(|p| p.ty == ParamType::StorePath);
    out.extend(paths.filter_map(|p| Some((format!("config.{}", p.name), Named::Path(step.config.get(p.name)?.as_str()?)))));
    out
}

/// The exports, runs and store paths a step names are its project's.
async fn check_names(conn: &mut PgConnection, project: ProjectId, step: &RunSpec, at: &str) -> Result<(), Refusal> {
    for (field, named) in named(step) {
        let (ok, what, text) = match named {
            Named::Export(id) => (dbr::is_project_export(conn, project, id).await?, "one of this project's exports".to_string(), id.to_string()),
            Named::Run(role, id) => {
                let what = format!("one of this project's {} runs", kinds_text(role.kinds()));
                (dbr::is_project_run(conn, project, id, role.kinds()).await?, what, id.to_string())
            }
            Named::Path(text) => {
                let ok = match store_area(text) {
                    Some(StoreArea::Shared) => true,
                    Some(StoreArea::Run(id)) => dbr::is_project_run(conn, project, id, &[]).await?,
                    None => false,
                };
                (ok, ParamType::StorePath.describe(), text.to_string())
            }
        };
        if !ok {
            return Err(Refusal::Invalid(format!("{at}{field}: expected {what}, got {text:?}")));
        }
    }
    Ok(())
}

/// "sft, ppo or dpo".
fn kinds_text(kinds: &[RunKind]) -> String {
    let words: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

/// Refuses a step that needs a model nobody provides.
async fn need(conn: &mut PgConnection, project: ProjectId, step: &RunSpec, at: &str, in_chain: bool, role: ModelRole) -> Result<(), Refusal> {
    if step.input.model(role).is_some() || in_chain || dbr::has_model_maker(conn, project, role.kinds()).await? {
        return Ok(());
    }
    let key = role.key();
    let chain = if at.is_empty() { "" } else { " (or earlier in the chain)" };
    Err(Refusal::Invalid(format!(
        "{at}kind: {kind} needs a {what}: set {at}input.{key}_path or {at}input.{key}_run, or train an {first} run first{chain}",
        kind = step.kind,
        what = key.replace('_', " "),
        first = role.kinds()[0],
    )))
}
