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
use sqlx::PgConnection;
use sqlx::PgPool;

use crate::db::runs::{self as dbr, NewRun};
use crate::db::schedules::{self as dbs, Due};
use crate::domain::runs::RunSpec;
use crate::domain::RunId;

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

/// Fires every due schedule once; returns the ids of the first run of each firing.
pub async fn tick(pool: &PgPool) -> anyhow::Result<Vec<RunId>> {
    let mut tx = pool.begin().await?;
    let due = dbs::lock_due(&mut tx).await?;
    let now = dbs::now(&mut tx).await?;
    let mut fired = Vec::new();
    for s in due {
        fired.extend(consider(&mut tx, &s, now).await?);
    }
    tx.commit().await?;
    Ok(fired)
}

/// Fires one due schedule if its trigger holds and its previous chain has finished; moves its
/// next occurrence either way. Returns the first run it queued.
async fn consider(tx: &mut PgConnection, s: &Due, now: DateTime<Utc>) -> sqlx::Result<Option<RunId>> {
    let comparisons = dbs::comparisons(tx, s.project_id).await?;
    let enough = s.min_new_comparisons.is_none_or(|n| comparisons - s.comparisons_at_last >= n);
    let at_occurrence = s.cron.is_none() || s.next_fire_at.is_some_and(|t| t <= now);
    if let Some(expr) = &s.cron {
        // Past the occurrence either way: the next one is the next chance.
        dbs::set_next_fire(tx, s.id, next_after(expr, now)).await?;
    }
    if s.busy || !(enough && at_occurrence) {
        return Ok(None);
    }
    let specs = match RunSpec::from_stored_chain(&s.chain.0) {
        Ok(specs) => specs,
        Err(e) => {
            // Stored before a check that refuses it now: it would fail at every tick.
            log::warn!("schedule {} disabled: {e}", s.id);
            dbs::disable(tx, s.id).await?;
            return Ok(None);
        }
    };
    let first = enqueue_chain(tx, s, specs).await?;
    dbs::mark_fired(tx, s.id, comparisons).await?;
    if let Some(id) = first {
        log::info!("schedule {} fired: {} runs queued, starting with {id}", s.id, s.chain.0.len());
    }
    Ok(first)
}

/// Queues a chain's runs, each after the one before; returns the first.
async fn enqueue_chain(tx: &mut PgConnection, s: &Due, specs: Vec<RunSpec>) -> sqlx::Result<Option<RunId>> {
    let (mut previous, mut first) = (None, None);
    for spec in specs {
        let new = NewRun { project: s.project_id, spec, after_run: previous, schedule: Some(s.id), by: s.created_by };
        let id = dbr::insert(tx, &new).await?;
        first.get_or_insert(id);
        previous = Some(id);
    }
    Ok(first)
}

/// Runs [`tick`] every `every` until the process ends.
pub async fn run_scheduler(pool: PgPool, every: std::time::Duration) {
    loop {
        if let Err(e) = tick(&pool).await {
            log::warn!("scheduler: {e:#}");
        }
        // A chain held after a gated spot check goes on once people's verdicts pass it.
        if let Err(e) = crate::services::watchdog::open_gates(&pool).await {
            log::warn!("spot-check gates: {e:?}");
        }
        // Items where labellers disagree get one more labeller (projects that ask for it).
        if let Err(e) = crate::services::quality::extend_all(&pool).await {
            log::warn!("extra labellers: {e:?}");
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
