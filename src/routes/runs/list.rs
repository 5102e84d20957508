//! The Runs tab: the project's runs grouped by chain (a schedule's firing, or runs queued one
//! after another) with status, duration and the error of a failed run; the form that starts a
//! run with typed fields (the trainer's defaults and help beside each); schedules.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde_json::Value;

use crate::db::projects::Project;
use crate::db::runs::{self as dbr, Run};
use crate::db::schedules::{self as dbs, Schedule};
use crate::domain::runs::{ModelRole, Param, RunKind, RunStatus, RUN_KINDS};
use crate::domain::{Role, RunId, ScheduleId, TaskKind};
use crate::export::Export;
use crate::routes::pages::{first_chars, html, Layout};
use crate::routes::projects::tabs::TabBar;
use crate::services::exports;
use crate::web::auth::Auth;
use crate::web::chart::fmt_num;
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/runs.html")]
pub struct RunsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    pub groups: Vec<ChainGroup>,
    pub runs_total: usize,
    /// The kind the form is for, and every kind.
    pub kind: RunKind,
    pub kinds: [RunKind; 6],
    pub params: Vec<&'static Param>,
    /// The models the run may start from, per role it needs.
    pub models: Vec<ModelChoice>,
    pub exports: Vec<Export>,
    pub schedules: Vec<Schedule>,
    /// Why a schedule's chain waits on a spot check's gate: (schedule, spot check, reason).
    pub waiting: Vec<(Option<ScheduleId>, RunId, String)>,
}

/// A role's input field (its key and label) and the project's runs that made such a model.
pub type ModelChoice = (&'static str, &'static str, Vec<(RunId, String)>);

/// Runs that belong together, oldest first, with a heading when they are a chain.
pub struct ChainGroup {
    pub heading: Option<String>,
    pub runs: Vec<RunRow>,
}

/// A run as the list shows it.
pub struct RunRow {
    pub run: Run,
    /// Its latest headline metrics.
    pub latest: String,
    /// A later step of a chain.
    pub chained: bool,
}

impl RunRow {
    /// The first line of a failed run's error.
    pub fn error_line(&self) -> Option<String> {
        let e = self.run.error.as_deref().filter(|_| self.run.status == RunStatus::Failed)?;
        Some(first_chars(e.lines().next().unwrap_or(e), 140))
    }
}

impl RunsPage {
    /// Why the chain of schedule `s` is waiting, when a spot check's gate holds it.
    pub fn waiting_for(&self, s: &Schedule) -> Option<String> {
        let (_, run, reason) = self.waiting.iter().find(|(id, _, _)| *id == Some(s.id))?;
        Some(format!("The chain's next step waits for spot check {}: {reason}", &run.0.simple().to_string()[..8]))
    }

    /// What a run of the form's kind does, in a sentence.
    pub fn kind_help(&self) -> &'static str {
        match self.kind {
            RunKind::Rm => "A reward model, trained on the project's comparisons.",
            RunKind::Sft => "A policy fine-tuned on demonstrations (or on the preferred responses).",
            RunKind::Ppo => "A policy optimised against a reward model with PPO, kept near its start by a KL penalty.",
            RunKind::Dpo => "A policy optimised directly on the preferences (DPO), without a reward model.",
            RunKind::Generate => "New responses sampled from a policy for the project's prompts, imported as items to label.",
            RunKind::Spotcheck => {
                "A PPO run's √KL-grid checkpoints and its start sampled on held-out prompts, imported as blind pairs: people's verdicts show whether its rising reward is real (input.ppo_run)."
            }
        }
    }

    pub fn default_text(&self, p: &Param) -> String {
        let d = p.default_text();
        if d.is_empty() {
            "unset".into()
        } else {
            d
        }
    }
}

/// The headline of a run for the list: its last loss, accuracy or score.
fn headline(last: &serde_json::Map<String, Value>) -> String {
    ["eval.accuracy", "eval.loss", "iteration.score", "iteration.kl", "step.loss"]
        .iter()
        .filter_map(|k| last.get(*k).and_then(Value::as_f64).map(|v| format!("{k} {}", fmt_num(v))))
        .take(2)
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Groups runs (newest first, as listed) by chain: each run with those queued after it, the
/// newest chain first, each chain oldest first.
pub fn group(runs: Vec<RunRow>, schedules: &[Schedule]) -> Vec<ChainGroup> {
    let ids: Vec<RunId> = runs.iter().map(|r| r.run.id).collect();
    let parent = |i: usize| runs[i].run.after_run.and_then(|a| ids.iter().position(|id| *id == a));
    let root = |mut i: usize| {
        while let Some(p) = parent(i) {
            i = p;
        }
        i
    };
    let roots: Vec<usize> = (0..runs.len()).map(root).collect();
    let mut order: Vec<usize> = Vec::new();
    for r in &roots {
        if !order.contains(r) {
            order.push(*r);
        }
    }
    let mut slots: Vec<Vec<RunRow>> = order.iter().map(|_| Vec::new()).collect();
    for (i, row) in runs.into_iter().enumerate().rev() {
        let g = order.iter().position(|r| *r == roots[i]).expect("every root is in order");
        slots[g].push(row);
    }
    slots
        .into_iter()
        .map(|mut rows| {
            let first = &rows[0].run;
            let heading = match first.schedule_id {
                Some(s) => Some(format!("Schedule firing, {}{}", first.created_at.format("%Y-%m-%d %H:%M"), trigger(schedules, s))),
                None if rows.len() > 1 => Some(format!("Chain of {} runs", rows.len())),
                None => None,
            };
            for r in rows.iter_mut().skip(1) {
                r.chained = true;
            }
            ChainGroup { heading, runs: rows }
        })
        .collect()
}

/// " (cron 0 3 * * *, ≥ 500 new comparisons)" for the schedule, or nothing when it is gone.
fn trigger(schedules: &[Schedule], id: crate::domain::ScheduleId) -> String {
    let Some(s) = schedules.iter().find(|s| s.id == id) else { return String::new() };
    let mut parts = Vec::new();
    if let Some(c) = &s.cron {
        parts.push(format!("cron {c}"));
    }
    if let Some(n) = s.min_new_comparisons {
        parts.push(format!("≥ {n} new comparisons"));
    }
    format!(" ({}): {}", parts.join(", "), s.chain_text())
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    kind: Option<String>,
}

/// The models of the project a run of `kind` may start from, per role.
fn model_choices(kind: RunKind, runs: &[Run]) -> Vec<ModelChoice> {
    kind.needs()
        .iter()
        .map(|role| {
            let label = match role {
                ModelRole::Policy => "Policy",
                ModelRole::RewardModel => "Reward model",
            };
            let made: Vec<(RunId, String)> = runs
                .iter()
                .filter(|r| r.status == RunStatus::Succeeded && role.kinds().contains(&r.kind))
                .map(|r| (r.id, format!("{} {} ({})", r.kind, r.short(), r.created_at.format("%Y-%m-%d %H:%M"))))
                .collect();
            (role.key(), label, made)
        })
        .collect()
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<ListQuery>) -> Result<HttpResponse, PageError> {
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let default = if p.kind == TaskKind::Demonstration { RunKind::Sft } else { RunKind::Rm };
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => k.parse().map_err(|e| AppError::Invalid(format!("kind: {e}")))?,
        None => default,
    };
    let mut conn = state.pool.acquire().await?;
    let list = dbr::list(&mut conn, p.id, 100).await?;
    let last = dbr::last_values(&mut conn, &list.iter().map(|r| r.id).collect::<Vec<RunId>>()).await?;
    let schedules = dbs::list(&mut conn, p.id).await?;
    let waiting = crate::services::watchdog::waiting(&mut conn, p.id).await?;
    drop(conn);
    let models = model_choices(kind, &list);
    let mut exports = exports::list(&state.pool, &p).await?;
    exports.truncate(20);
    let runs_total = list.len();
    let rows = list.into_iter().map(|run| RunRow { latest: last.get(&run.id).map(headline).unwrap_or_default(), run, chained: false }).collect();
    let groups = group(rows, &schedules);
    let page = RunsPage {
        layout: Layout::of(&auth),
        tabs: TabBar::new(&p, "runs"),
        project: p,
        groups,
        runs_total,
        kind,
        kinds: RUN_KINDS,
        params: kind.params(),
        models,
        exports,
        schedules,
        waiting,
    };
    Ok(html(&page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProjectId, ScheduleId};

    fn run(seq: i64, after: Option<RunId>, schedule: Option<ScheduleId>) -> RunRow {
        let run = Run {
            id: RunId(uuid::Uuid::from_u128(seq as u128)),
            project_id: ProjectId(uuid::Uuid::nil()),
            slug: "p".into(),
            kind: RunKind::Rm,
            config: Value::Null,
            input: Value::Null,
            export_id: None,
            after_run: after,
            schedule_id: schedule,
            status: RunStatus::Queued,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            worker: None,
            attempts: 0,
            model_dir: None,
            resumed_from: None,
            error: None,
            summary: None,
        };
        RunRow { run, latest: String::new(), chained: false }
    }

    fn id(seq: u128) -> Option<RunId> {
        Some(RunId(uuid::Uuid::from_u128(seq)))
    }

    #[test]
    fn a_chain_is_one_group_oldest_first_and_a_lone_run_has_no_heading() {
        let firing = Some(ScheduleId(uuid::Uuid::from_u128(9)));
        // Newest first, as listed: 5 alone, the firing 2 → 3 → 4, 1 alone.
        let runs = vec![run(5, None, None), run(4, id(3), firing), run(3, id(2), firing), run(2, None, firing), run(1, None, None)];
        let groups = group(runs, &[]);
        let seqs: Vec<Vec<u128>> = groups.iter().map(|g| g.runs.iter().map(|r| r.run.id.0.as_u128()).collect()).collect();
        assert_eq!(seqs, [vec![5], vec![2, 3, 4], vec![1]]);
        assert!(groups[0].heading.is_none() && groups[1].heading.as_deref().unwrap().starts_with("Schedule firing"));
        assert_eq!(groups[1].runs.iter().map(|r| r.chained).collect::<Vec<_>>(), [false, true, true]);
    }

    #[test]
    fn a_chain_whose_start_is_off_the_list_still_groups_what_is_listed() {
        let runs = vec![run(7, id(6), None), run(6, id(1), None)];
        let groups = group(runs, &[]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].heading.as_deref(), Some("Chain of 2 runs"));
    }
}
