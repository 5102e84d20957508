//! The over-optimisation watchdog (issue 15): a spot check's figures — per √KL-grid
//! checkpoint of its PPO run, the reward model's score and the ensemble's disagreement (from the
//! PPO run's `kl-grid/manifest.json`, recorded with the spot check), people's win rate against
//! the start (from the judgements of its blind pairs), and Gao's curve fitted to the human
//! points — for the run page and the API alike; and the gates a schedule's next step waits on.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::db::runs::Run;
use crate::db::spotcheck::{self as dbs, Held};
use crate::domain::overoptimisation::{Gate, HumanFit, Tally, WatchPoint};
use crate::domain::runs::{RunKind, RunStatus};
use crate::domain::{RunId, ScheduleId};
use crate::services::AppError;

const METHOD: &str = "win rate of the checkpoint against the starting policy on blind pairs (ties half), 95% Wilson intervals; \
                      Gao et al. 2023's R(d) = d(α − β·log d) fitted by least squares to win rate − ½ at d = √KL, turning over at d* = exp(α/β − 1)";

/// A spot check's gate and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GateView {
    pub win_rate: f64,
    pub min_judgements: u64,
    pub passed: bool,
    /// Why it passes or holds, in a sentence.
    pub reason: String,
}

/// A spot check's figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Watchdog {
    pub run_id: RunId,
    pub status: RunStatus,
    /// The PPO run checked (None until the worker resolved it).
    pub ppo_run: Option<RunId>,
    /// One per grid checkpoint, by √KL.
    pub points: Vec<WatchPoint>,
    /// Gao's curve fitted to the human points (two or more √KL with judgements).
    pub fit: Option<HumanFit>,
    pub gate: Option<GateView>,
    pub method: &'static str,
}

/// The gate a spot check's configuration sets, if any.
fn gate_of(config: &Value) -> Option<Gate> {
    let win_rate = config.get("gate_win_rate")?.as_f64()?;
    let min_judgements = config.get("gate_min_judgements").and_then(Value::as_u64).unwrap_or(1);
    Some(Gate { win_rate, min_judgements })
}

/// The grid checkpoints a spot check recorded, with people's tallies on each.
async fn points(conn: &mut PgConnection, project: crate::domain::ProjectId, run: RunId, summary: Option<&Value>) -> Result<Vec<WatchPoint>, AppError> {
    let Some(recorded) = summary.and_then(|s| s["spotcheck"]["checkpoints"].as_array()) else { return Ok(Vec::new()) };
    let verdicts = dbs::verdicts(conn, project, run).await?;
    let mut out: Vec<WatchPoint> = recorded
        .iter()
        .filter_map(|c| {
            let name = c["name"].as_str()?.to_string();
            let mut tally = Tally::default();
            verdicts.iter().filter(|v| v.checkpoint == name).for_each(|v| tally.add(v.policy_rank, v.start_rank));
            let p = WatchPoint {
                point: c["point"].as_f64()?,
                sqrt_kl: c["sqrt_kl"].as_f64()?,
                iteration: c["iteration"].as_u64().unwrap_or(0),
                rm_score: c["score"].as_f64()?,
                ensemble_std: c["ensemble_std"].as_f64(),
                checkpoint: name,
                judgements: 0,
                wins: 0,
                ties: 0,
                win_rate: None,
                ci_low: None,
                ci_high: None,
            };
            Some(p.with_tally(tally))
        })
        .collect();
    out.sort_by(|a, b| a.sqrt_kl.total_cmp(&b.sqrt_kl));
    Ok(out)
}

/// The figures of spot check `run` (whose project's lead the caller is).
pub async fn figures(conn: &mut PgConnection, run: &Run) -> Result<Watchdog, AppError> {
    if run.kind != RunKind::Spotcheck {
        return Err(AppError::NotFound);
    }
    let points = points(conn, run.project_id, run.id, run.summary.as_ref()).await?;
    let fit = HumanFit::of(&points);
    let gate = gate_of(&run.config).map(|g| {
        let (passed, reason) = g.check(&points);
        GateView { win_rate: g.win_rate, min_judgements: g.min_judgements, passed, reason }
    });
    let ppo_run = run.input["ppo_run"].as_str().or_else(|| run.summary.as_ref()?["spotcheck"]["ppo_run"].as_str()).and_then(|s| s.parse().ok());
    Ok(Watchdog { run_id: run.id, status: run.status, ppo_run, points, fit, gate, method: METHOD })
}

/// Where a held spot check's gate stands.
async fn check_held(conn: &mut PgConnection, h: &Held) -> Result<Option<(bool, String)>, AppError> {
    let Some(gate) = gate_of(&h.config) else { return Ok(None) };
    let points = points(conn, h.project_id, h.spotcheck, h.summary.as_ref()).await?;
    Ok(Some(gate.check(&points)))
}

/// Opens every gate that now passes (the scheduler calls this on each tick); returns the
/// spot checks whose gates opened.
pub async fn open_gates(pool: &PgPool) -> Result<Vec<RunId>, AppError> {
    let mut tx = pool.begin().await.map_err(AppError::from)?;
    let mut opened = Vec::new();
    for h in dbs::all_held(&mut tx).await? {
        if let Some((true, reason)) = check_held(&mut tx, &h).await? {
            dbs::pass_gate(&mut tx, h.spotcheck).await?;
            log::info!("spot check {}: gate open ({reason})", h.spotcheck);
            opened.push(h.spotcheck);
        }
    }
    tx.commit().await.map_err(AppError::from)?;
    Ok(opened)
}

/// Why each of the project's schedules is waiting on a spot check's gate: (schedule, spot
/// check, sentence).
pub async fn waiting(conn: &mut PgConnection, project: crate::domain::ProjectId) -> Result<Vec<(Option<ScheduleId>, RunId, String)>, AppError> {
    let mut out = Vec::new();
    for h in dbs::held_in(conn, project).await? {
        if let Some((_, reason)) = check_held(conn, &h).await? {
            out.push((h.schedule_id, h.spotcheck, reason));
        }
    }
    Ok(out)
}
