//! Schedules: a cron expression and/or "at least N new comparisons since the last firing",
//! and a chain of runs one firing enqueues (each waits for the previous to succeed).
//!
//! With a cron expression alone the schedule fires at each occurrence; with a threshold alone
//! as soon as enough new comparisons have arrived; with both, at an occurrence when enough
//! have arrived (else it waits for the next occurrence). Whatever its trigger, a schedule
//! fires only when every run of its previous firing has finished (succeeded, failed or
//! cancelled); an occurrence that comes while they are queued or running is skipped, and new
//! comparisons keep counting from the last firing. Every `rewardlab serve` calls
//! [`tick`]; a firing happens inside a transaction holding the schedule's row lock
//! (`FOR UPDATE SKIP LOCKED`), and moves `next_fire_at` / `comparisons_at_last` before it
//! commits, so however many servers tick at once, a firing enqueues its runs exactly once.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::{resolve_config, RunKind};
use crate::db::runs::{self as dbr, NewRun};
use crate::domain::ProjectId;

/// Parses a cron expression: the usual five fields (minute hour day month weekday), or six
/// with seconds first.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 | 7 => expr.to_string(),
        _ => return Err(format!("cron: expected five fields (minute hour day month weekday), got {fields}")),
    };
    cron::Schedule::from_str(&full).map_err(|e| format!("cron: {expr:?} is not a valid expression ({e})"))
}

/// The next occurrence strictly after `after`.
pub fn next_after(expr: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    parse_cron(expr).ok()?.after(&after).next()
}

/// A step's kind and full configuration.
pub type Resolved = (RunKind, Map<String, Value>);

/// One step of a chain as given by a lead.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ChainStep {
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub input: Value,
}

/// Checks a chain: known kinds, valid configurations that suit the project, 1 to 8 steps;
/// returns each step's kind and full configuration.
pub fn check_chain(chain: &[ChainStep], project: crate::domain::TaskKind) -> Result<Vec<Resolved>, String> {
    if chain.is_empty() || chain.len() > 8 {
        return Err("chain: expected 1 to 8 runs".into());
    }
    let steps = resolve_chain(chain)?;
    for (i, ((kind, config), s)) in steps.iter().zip(chain).enumerate() {
        super::check_for_project(*kind, config, project).map_err(|e| format!("chain[{i}].{e}"))?;
        super::worker::check_input(*kind, &s.input).map_err(|e| format!("chain[{i}].{e}"))?;
    }
    Ok(steps)
}

#[derive(sqlx::FromRow)]
struct Due {
    id: uuid::Uuid,
    project_id: ProjectId,
    cron: Option<String>,
    min_new_comparisons: Option<i64>,
    chain: sqlx::types::Json<Vec<ChainStep>>,
    next_fire_at: Option<DateTime<Utc>>,
    comparisons_at_last: i64,
    created_by: Option<crate::domain::UserId>,
    /// A run of its last firing is still queued or running.
    busy: bool,
}

/// Comparisons (ordered pairs of different rank, and ties) the project's judgements imply.
pub const COMPARISONS_SQL: &str = "SELECT COALESCE(sum(n * (n - 1) / 2), 0)::bigint FROM (SELECT array_length(ranks, 1)::bigint AS n FROM judgements WHERE project_id = $1 AND ranks IS NOT NULL) j";

/// Each step's kind and full configuration, as stored.
fn resolve_chain(chain: &[ChainStep]) -> Result<Vec<Resolved>, String> {
    let step = |(i, s): (usize, &ChainStep)| {
        let kind: RunKind = s.kind.parse().map_err(|e| format!("chain[{i}].kind: {e}"))?;
        Ok((kind, resolve_config(kind, &s.config).map_err(|e| format!("chain[{i}].{e}"))?))
    };
    chain.iter().enumerate().map(step).collect()
}

/// Fires every due schedule once; returns the ids of the first run of each firing.
pub async fn tick(pool: &PgPool) -> anyhow::Result<Vec<uuid::Uuid>> {
    let mut tx = pool.begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "SELECT s.id, s.project_id, s.cron, s.min_new_comparisons, s.chain, s.next_fire_at, s.comparisons_at_last, s.created_by,
                EXISTS (SELECT 1 FROM runs r WHERE r.schedule_id = s.id AND r.status IN ('queued', 'running')) AS busy
         FROM schedules s WHERE s.enabled AND (s.cron IS NULL OR s.next_fire_at <= now()) FOR UPDATE OF s SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut *tx).await?;
    let mut fired = Vec::new();
    for s in due {
        let comparisons: i64 = sqlx::query_scalar(COMPARISONS_SQL).bind(s.project_id).fetch_one(&mut *tx).await?;
        let enough = s.min_new_comparisons.is_none_or(|n| comparisons - s.comparisons_at_last >= n);
        let at_occurrence = s.cron.is_none() || s.next_fire_at.is_some_and(|t| t <= now);
        if let Some(expr) = &s.cron {
            // Past the occurrence either way: the next one is the next chance.
            sqlx::query("UPDATE schedules SET next_fire_at = $2 WHERE id = $1").bind(s.id).bind(next_after(expr, now)).execute(&mut *tx).await?;
        }
        if s.busy || !(enough && at_occurrence) {
            continue;
        }
        let steps = match resolve_chain(&s.chain.0) {
            Ok(steps) => steps,
            Err(e) => {
                // Stored before a check that refuses it now: it would fail at every tick.
                log::warn!("schedule {} disabled: {e}", s.id);
                sqlx::query("UPDATE schedules SET enabled = false WHERE id = $1").bind(s.id).execute(&mut *tx).await?;
                continue;
            }
        };
        let mut previous = None;
        let mut first = None;
        for ((kind, config), step) in steps.into_iter().zip(&s.chain.0) {
            let new = NewRun { project: s.project_id, kind, config: Value::Object(config), input: step.input.clone(), after_run: previous, schedule: Some(s.id), by: s.created_by };
            let id = dbr::insert(&mut tx, &new).await?;
            first.get_or_insert(id);
            previous = Some(id);
        }
        sqlx::query("UPDATE schedules SET last_fired_at = now(), comparisons_at_last = $2 WHERE id = $1").bind(s.id).bind(comparisons).execute(&mut *tx).await?;
        if let Some(id) = first {
            log::info!("schedule {} fired: {} runs queued, starting with {id}", s.id, s.chain.0.len());
            fired.push(id);
        }
    }
    tx.commit().await?;
    Ok(fired)
}

/// Runs [`tick`] every `every` until the process ends.
pub async fn run_scheduler(pool: PgPool, every: std::time::Duration) {
    loop {
        if let Err(e) = tick(&pool).await {
            log::warn!("scheduler: {e:#}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_expressions_parse_and_step_forward() {
        let t: DateTime<Utc> = "2026-11-28T10:07:30Z".parse().unwrap();
        assert_eq!(next_after("*/15 * * * *", t).unwrap().to_rfc3339(), "2026-11-28T10:15:00+00:00");
        assert_eq!(next_after("0 3 * * *", t).unwrap().to_rfc3339(), "2026-11-29T03:00:00+00:00");
        assert!(parse_cron("* * *").unwrap_err().contains("five fields"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("0 0 31 2 *").is_ok(), "it parses…");
        assert_eq!(next_after("0 0 31 2 *", t), None, "…but February has no 31st");
    }
}
