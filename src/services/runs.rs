//! Training runs and schedules: queueing a run and storing a schedule, for a project whose
//! lead the caller has been checked to be. The run or chain arrives parsed ([`RunSpec`]);
//! what needs the database (the exports, runs and store paths it names are the project's, what
//! it starts from exists) is checked here by `jobs::admit`.

use chrono::Utc;
use sqlx::PgConnection;

use crate::db::projects::Project;
use crate::db::runs::{self as dbr, NewRun};
use crate::db::schedules::{self as dbs, NewSchedule};
use crate::domain::runs::{ChainStep, RunSpec};
use crate::domain::{RunId, ScheduleId, UserId};
use crate::jobs::admit;
use crate::jobs::schedule::{next_after, parse_cron};

pub use crate::jobs::admit::Refusal;

/// Checks and queues a run of `project`.
pub async fn start_run(conn: &mut PgConnection, project: &Project, by: UserId, spec: RunSpec) -> Result<RunId, Refusal> {
    admit::check(conn, project.id, std::slice::from_ref(&spec), false).await?;
    let new = NewRun { project: project.id, spec, after_run: None, schedule: None, by: Some(by) };
    Ok(dbr::insert(conn, &new).await?)
}

/// A schedule as a lead asks for it: a cron expression and/or a comparisons threshold, and
/// the chain each firing queues.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct ScheduleRequest {
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub min_new_comparisons: Option<i64>,
    pub chain: Vec<ChainStep>,
}

/// Checks and stores a schedule of `project`; a chain step that would not run is refused now.
pub async fn create_schedule(conn: &mut PgConnection, project: &Project, by: UserId, req: &ScheduleRequest) -> Result<ScheduleId, Refusal> {
    let cron = req.cron.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let next = check_trigger(cron, req.min_new_comparisons).map_err(Refusal::Invalid)?;
    let specs = RunSpec::parse_chain(&req.chain, project.kind).map_err(Refusal::Invalid)?;
    admit::check(conn, project.id, &specs, true).await?;
    let new = NewSchedule { project: project.id, cron, next, min_new: req.min_new_comparisons, chain: &req.chain, by };
    Ok(dbs::insert(conn, &new).await?)
}

/// A schedule's trigger is a cron expression that fires, a threshold of at least 1, or both;
/// returns the expression's next occurrence.
fn check_trigger(cron: Option<&str>, min_new: Option<i64>) -> Result<Option<chrono::DateTime<Utc>>, String> {
    let next = match cron {
        Some(c) => {
            parse_cron(c)?;
            Some(next_after(c, Utc::now()).ok_or_else(|| format!("cron: {c:?} never fires (no date matches it)"))?)
        }
        None => None,
    };
    if min_new.is_some_and(|n| n < 1) {
        return Err("min_new_comparisons: expected at least 1".into());
    }
    if cron.is_none() && min_new.is_none() {
        return Err("a schedule needs a cron expression, min_new_comparisons, or both".into());
    }
    Ok(next)
}
