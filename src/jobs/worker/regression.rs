//! After an rm, dpo or ppo run's trainer has succeeded, the new model (merged, when the run
//! merges) is measured on the project's active regression set with `rewardlab-train
//! eval-regression`: a reward model's pairwise accuracy, a DPO policy's implicit-reward accuracy
//! against its starting policy, a PPO policy's mean reward and win rate against its starting
//! policy by the run's reward model. The figures publish with the run. A measurement that fails
//! is logged and leaves the run's model as it is (the model is not the set's fault). A run with
//! `merge_sweep` first keeps the best of its merges with an earlier model, measured on the set.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use sqlx::PgPool;

use super::child::{run_child, Child, Launcher};
use super::fence::Fence;
use super::inputs::Resolved;
use super::plan::path_arg;
use crate::db::regression::{self as db, RegressionSet};
use crate::db::worker::Claimed;
use crate::domain::regression::{measures, PPO_PROMPTS};
use crate::domain::runs::RunKind;
use crate::domain::RegressionSetId;

/// A run's figures on a set.
#[derive(Debug, Clone)]
pub struct Measured {
    pub set: RegressionSetId,
    pub name: String,
    /// (figure, value, pairs or prompts measured).
    pub figures: Vec<(String, f64, i32)>,
}

impl Measured {
    /// As the run's summary records it.
    pub fn to_json(&self) -> Value {
        let figures: serde_json::Map<String, Value> = self.figures.iter().map(|(m, v, n)| (m.clone(), json!({"value": v, "n": n}))).collect();
        json!({"set_id": self.set, "set": self.name, "figures": figures})
    }
}

/// What measuring came to.
pub enum Measure {
    /// Nothing to measure (no active set, a kind that is not measured), or it failed (logged).
    Skipped,
    /// The run stopped being ours meanwhile.
    Lost,
    Done(Measured),
}

/// What measuring needs: the pool, the fence, the trainer, the claimed run and the attempt's
/// directory.
pub struct Ctx<'a> {
    pub pool: &'a PgPool,
    pub f: &'a Fence<'a>,
    pub trainer: &'a Path,
    pub c: &'a Claimed,
    pub dir: &'a Path,
}

impl Ctx<'_> {
    /// The project's active set, its pairs written into the attempt's directory.
    async fn active_set(&self) -> Result<Option<(RegressionSet, PathBuf)>> {
        let (set, pairs) = {
            let mut conn = self.pool.acquire().await?;
            let Some(set) = db::active(&mut conn, self.c.project_id).await? else { return Ok(None) };
            let pairs = db::pairs(&mut conn, set.id).await?;
            (set, pairs)
        };
        let data = self.dir.join(format!("regression-{}.jsonl", set.id));
        let mut w = std::io::BufWriter::new(crate::private_fs::create_file(&data).with_context(|| format!("creating {}", data.display()))?);
        for (prompt, chosen, rejected) in &pairs {
            writeln!(w, "{}", json!({"prompt": prompt, "chosen": chosen, "rejected": rejected}))?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(Some((set, data)))
    }

    /// Runs the trainer with `args`; false when the run stopped being ours.
    async fn trainer(&self, args: &[String]) -> Result<bool> {
        match run_child(self.f, &Launcher { trainer: self.trainer, mpirun: None }, args).await? {
            Child::Lost => Ok(false),
            Child::Exited { ok: false, status, last_line, .. } => Err(anyhow!("rewardlab-train {} exited with {status}: {last_line}", args[0])),
            Child::Exited { ok: true, .. } => Ok(true),
        }
    }
}

/// Measures the model in `model` (a run of `kind`) on the active set.
pub async fn measure(ctx: &Ctx<'_>, kind: RunKind, model: &Path, models: &[Resolved]) -> Measure {
    if !measures(kind) {
        return Measure::Skipped;
    }
    match try_measure(ctx, kind, model, models).await {
        Ok(m) => m,
        Err(e) => {
            ctx.f.log(&format!("[worker] regression set: not measured: {e:#}")).await;
            Measure::Skipped
        }
    }
}

async fn try_measure(ctx: &Ctx<'_>, kind: RunKind, model: &Path, models: &[Resolved]) -> Result<Measure> {
    let Some((set, data)) = ctx.active_set().await? else { return Ok(Measure::Skipped) };
    let report = ctx.dir.join(format!("regression-{}.json", set.id));
    if !ctx.trainer(&eval_args(kind, model, &data, &report, models)).await? {
        return Ok(Measure::Lost);
    }
    let figures = read_report(&report)?;
    let text: Vec<String> = figures.iter().map(|(m, v, n)| format!("{m} {v:.4} (n {n})")).collect();
    ctx.f.log(&format!("[worker] regression set {:?}: {}", set.name, text.join(", "))).await;
    Ok(Measure::Done(Measured { set: set.id, name: set.name, figures }))
}

/// What a merge sweep came to: its report, or the run stopped being ours.
pub enum Swept {
    Lost,
    Done(Value),
}

/// `merge_sweep`: the trained `model` merged with `old` at each of `alphas`, each measured on
/// the active regression set (`rewardlab-train merge-sweep`: a reward model's pairwise accuracy,
/// a policy's share of pairs whose chosen response has the higher mean log-probability per
/// token). The best α (the highest accuracy; on a tie the smallest α, the most of the new
/// model) is kept: its weights replace the model's, the trained ones kept in
/// `unmerged.safetensors` as `--merge-with` does, and `config.json` records the sweep.
pub async fn sweep(ctx: &Ctx<'_>, model: &Path, old: &Path, alphas: &str) -> Result<Swept> {
    let (set, data) = ctx.active_set().await?.ok_or_else(|| anyhow!("config.merge_sweep: the project has no active regression set to measure each α on"))?;
    let (merged, report) = (ctx.dir.join("merge-sweep"), ctx.dir.join("merge-sweep.json"));
    let args = ["merge-sweep", "--new", &path_arg(model), "--old", &path_arg(old), "--data", &path_arg(&data), "--alphas", alphas]
        .into_iter()
        .chain(["--out", &path_arg(&merged), "--report", &path_arg(&report)])
        .map(String::from)
        .collect::<Vec<_>>();
    if !ctx.trainer(&args).await? {
        return Ok(Swept::Lost);
    }
    let mut report: Value = serde_json::from_str(&std::fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?)?;
    let unmerged = model.join("unmerged.safetensors");
    if !unmerged.exists() {
        std::fs::rename(model.join("model.safetensors"), &unmerged).context("keeping the trained weights")?;
    }
    std::fs::rename(merged.join("model.safetensors"), model.join("model.safetensors")).context("keeping the best merge")?;
    std::fs::rename(merged.join("config.json"), model.join("config.json")).context("keeping the best merge's config")?;
    let _ = std::fs::remove_dir_all(&merged);
    report["set"] = json!(set.name);
    report["set_id"] = json!(set.id);
    report["rule"] = json!("the highest accuracy on the regression set; on a tie the smallest α (the most of the new model)");
    ctx.f.log(&format!("[worker] merge sweep on {:?}: kept α {} (accuracy {})", set.name, report["best_alpha"], report["best_accuracy"])).await;
    Ok(Swept::Done(report))
}

/// The trainer's arguments: the model, the set, and what a policy is measured against (the
/// run's starting policy; a PPO run's reward model).
fn eval_args(kind: RunKind, model: &Path, data: &Path, report: &Path, models: &[Resolved]) -> Vec<String> {
    let mut args: Vec<String> =
        ["eval-regression", "--model", &path_arg(model), "--data", &path_arg(data), "--out", &path_arg(report)].map(String::from).to_vec();
    if matches!(kind, RunKind::Dpo | RunKind::Ppo) {
        if let Some(start) = models.first() {
            args.extend(["--reference".into(), path_arg(&start.dir)]);
        }
    }
    if kind == RunKind::Ppo {
        if let Some(rm) = models.get(1) {
            args.extend(["--reward-model".into(), path_arg(&rm.dir), "--max-prompts".into(), PPO_PROMPTS.to_string()]);
        }
    }
    args
}

/// The figures of an `eval-regression` report.
fn read_report(path: &Path) -> Result<Vec<(String, f64, i32)>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?;
    let figures = v["figures"].as_array().ok_or_else(|| anyhow!("{}: no figures", path.display()))?;
    figures
        .iter()
        .map(|f| {
            let name = f["metric"].as_str().ok_or_else(|| anyhow!("{}: a figure without a metric", path.display()))?;
            let value = f["value"].as_f64().filter(|v| v.is_finite()).ok_or_else(|| anyhow!("{}: {name} is not a number", path.display()))?;
            Ok((name.to_string(), value, f["n"].as_i64().unwrap_or(0) as i32))
        })
        .collect()
}
