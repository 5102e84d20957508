//! A `spotcheck` run (issue 15): samples each √KL-grid checkpoint a PPO run kept and the
//! policy it started from on the same held-out prompts, with the same seed, and imports per
//! (checkpoint, prompt, sample) a blind pairwise item — the checkpoint's response against the
//! start's, in an order drawn from the run's id — whose provenance records the checkpoint, its
//! √KL and the PPO run. Labellers never see model names or metadata; the watchdog reads their
//! verdicts back through the responses' `spotcheck` role.
//!
//! Held-out prompts: the project's prompts now (a new `prompts` snapshot, or `input.export_id`)
//! that are not in the snapshot the PPO run trained on, earliest first, at most
//! `config.prompts` of them. A project whose every prompt the PPO run saw has none, and the run
//! fails saying so: import new prompts first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};

use super::child::{run_child, Child, Launcher};
use super::fence::Fence;
use super::inputs;
use super::plan::{path_arg, Plan};
use super::WorkerOpts;
use crate::db::spotcheck::{self as dbs, PpoRun};
use crate::db::worker::{self as dbw, Claimed};
use crate::domain::import::{check_kind, ImportItem, ResponseIn, Turn};
use crate::domain::runs::{config_int, trainer_flags, RunInput, RunKind};

/// One checkpoint of the PPO run's `kl-grid/manifest.json`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct GridEntry {
    name: String,
    point: f64,
    iteration: u64,
    sqrt_kl: f64,
    score: f64,
    #[serde(default)]
    ensemble_mean: Option<f64>,
    #[serde(default)]
    ensemble_std: Option<f64>,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    start: String,
    checkpoints: Vec<GridEntry>,
}

/// A policy the spot check samples: a grid checkpoint, or the start (`entry` None).
struct Sampled {
    entry: Option<GridEntry>,
    dir: PathBuf,
    label: String,
    out: PathBuf,
}

/// Whether the attempt published (false: the run stopped being ours).
pub async fn attempt(pool: &PgPool, opts: &WorkerOpts, c: &Claimed, f: &Fence<'_>) -> Result<bool> {
    let input = RunInput::from_stored(c.kind, &c.input).map_err(anyhow::Error::msg)?;
    let run_dir = opts.store.join("runs").join(c.id.to_string());
    let dir = run_dir.join(format!("attempt-{}", c.fence));
    crate::private_fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ppo = ppo_to_check(pool, c, &input).await?;
    let ppo_dir = PathBuf::from(ppo.model_dir.as_deref().ok_or_else(|| anyhow!("input.ppo_run: run {} has no model directory", ppo.id))?);
    let manifest = read_manifest(&ppo, &ppo_dir)?;
    let short = &ppo.id.0.simple().to_string()[..8];
    let start_label = ppo.input["resolved"]["policy"]["label"].as_str().map_or_else(|| format!("start-of-ppo-{short}"), str::to_string);
    let mut sampled = vec![Sampled { entry: None, dir: PathBuf::from(&manifest.start), label: start_label, out: dir.join("start.jsonl") }];
    for e in &manifest.checkpoints {
        let (ckpt_dir, label, out) = (ppo_dir.join("kl-grid").join(&e.name), format!("ppo-{short}@{}", e.name), dir.join(format!("{}.jsonl", e.name)));
        sampled.push(Sampled { entry: Some(e.clone()), dir: ckpt_dir, label, out });
    }

    let prompts = dir.join("prompts.jsonl");
    let sources = held_out_prompts(pool, c, f, &input, &ppo, &run_dir.join("input"), &prompts).await?;
    f.log(&format!(
        "[worker] spot check of ppo run {}: {} held-out prompts, {} grid checkpoints and the start",
        ppo.id,
        sources.len(),
        manifest.checkpoints.len()
    ))
    .await;
    f.set_resolved(&json!({"ppo_run": ppo.id, "start": {"dir": manifest.start, "label": sampled[0].label}, "prompts": sources.len()})).await?;

    let config = c.config.as_object().cloned().unwrap_or_default();
    let launcher = Launcher { trainer: &opts.trainer, mpirun: None };
    for s in &sampled {
        let mut args =
            vec!["generate".to_string(), "--model".into(), path_arg(&s.dir), "--prompts".into(), path_arg(&prompts), "--out".into(), path_arg(&s.out)];
        args.extend(trainer_flags(RunKind::Spotcheck, &config, &opts.store));
        match run_child(f, &launcher, &args).await? {
            Child::Lost => return Ok(false),
            Child::Exited { ok: false, status, last_line, .. } => {
                bail!("sampling {}: rewardlab-train generate exited with {status}: {last_line}", s.dir.display())
            }
            Child::Exited { ok: true, .. } => {}
        }
    }
    publish(pool, c, &ppo, &sampled, &sources, &dir).await
}

/// The PPO run to check: the input's, else the nearest up the chain.
async fn ppo_to_check(pool: &PgPool, c: &Claimed, input: &RunInput) -> Result<PpoRun> {
    let mut conn = pool.acquire().await?;
    let id = match input.ppo_run {
        Some(id) => id,
        None => {
            let up = dbw::model_up_chain(&mut conn, c.after_run, &[RunKind::Ppo]).await?;
            up.map(|(id, _, _)| id).ok_or_else(|| anyhow!("input.ppo_run: give the PPO run to check (no PPO run up this run's chain)"))?
        }
    };
    let ppo = dbs::ppo_run(&mut conn, c.project_id, id).await?.ok_or_else(|| anyhow!("input.ppo_run: {id} is not a PPO run of this project"))?;
    if ppo.status != crate::domain::runs::RunStatus::Succeeded {
        bail!("input.ppo_run: run {id} has not succeeded (it is {})", ppo.status);
    }
    Ok(ppo)
}

/// The PPO run's grid manifest, with at least one checkpoint.
fn read_manifest(ppo: &PpoRun, dir: &Path) -> Result<Manifest> {
    let path = dir.join("kl-grid").join("manifest.json");
    let none = || anyhow!("input.ppo_run: run {} kept no √KL-grid checkpoints (start PPO with config.kl_grid; √KL must pass its first multiple)", ppo.id);
    let text = std::fs::read_to_string(&path).map_err(|_| none())?;
    let mut m: Manifest = serde_json::from_str(&text).with_context(|| format!("{} is not a kl-grid manifest", path.display()))?;
    if m.checkpoints.is_empty() {
        return Err(none());
    }
    m.checkpoints.sort_by(|a, b| a.point.total_cmp(&b.point));
    Ok(m)
}

/// Writes the held-out prompts to `out`; returns their items' external ids.
async fn held_out_prompts(pool: &PgPool, c: &Claimed, f: &Fence<'_>, input: &RunInput, ppo: &PpoRun, input_dir: &Path, out: &Path) -> Result<Vec<String>> {
    let plan = Plan::new(RunKind::Spotcheck, c.project_kind);
    let export = inputs::ensure_export(pool, c, input, &plan, f, input_dir).await?;
    let candidates = inputs::materialize(pool, &export, input_dir).await?;
    let mut seen: HashSet<String> = HashSet::new();
    if let Some(id) = ppo.export_id {
        let trained = crate::db::exports::get(&mut *pool.acquire().await?, id).await?.ok_or_else(|| anyhow!("the PPO run's export {id} is gone"))?;
        for file in inputs::materialize(pool, &trained, input_dir).await? {
            seen.extend(prompt_lines(&file)?.into_iter().map(|(_, p)| p));
        }
    }
    let max = config_int(c.config.as_object().unwrap_or(&Default::default()), "prompts", 20) as usize;
    let (mut ids, mut w) = (Vec::new(), String::new());
    for file in &candidates {
        for (id, prompt) in prompt_lines(file)? {
            if ids.len() < max && seen.insert(prompt.clone()) {
                w.push_str(&format!("{}\n", json!({"id": id, "prompt": prompt})));
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        bail!("no held-out prompts: every prompt of export {} was in the snapshot PPO run {} trained on; import new prompts first", export.id, ppo.id);
    }
    std::fs::write(out, w)?;
    Ok(ids)
}

/// (id, prompt) of each line of a `prompts` export.
fn prompt_lines(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        if let (Some(id), Some(prompt)) = (v["id"].as_str(), v["prompt"].as_str()) {
            out.push((id.to_string(), prompt.to_string()));
        }
    }
    Ok(out)
}

/// The samples of one generate output by prompt id.
fn samples_by_id(path: &Path) -> Result<Vec<(String, Vec<Value>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let id = v["id"].as_str().ok_or_else(|| anyhow!("{}:{}: no id", path.display(), n + 1))?.to_string();
        out.push((id, v["responses"].as_array().cloned().unwrap_or_default()));
    }
    Ok(out)
}

/// Whether the policy's response goes first in item `ext` of run `run`: a hash of both, so
/// the order is random to a labeller and the same on every attempt.
pub fn policy_first(run: &str, ext: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run.bytes().chain([0]).chain(ext.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 29)) & 1 == 1
}

/// Imports the pairs and publishes the run, if it is still ours.
async fn publish(pool: &PgPool, c: &Claimed, ppo: &PpoRun, sampled: &[Sampled], sources: &[String], dir: &Path) -> Result<bool> {
    let start = samples_by_id(&sampled[0].out)?;
    let mut tx = pool.begin().await?;
    if !dbw::lock_if_ours(&mut tx, c.id, c.fence).await? {
        return Ok(false);
    }
    let (mut batch, mut checkpoints) = (Vec::new(), Vec::new());
    for s in &sampled[1..] {
        let Some(entry) = s.entry.as_ref() else { continue };
        let before = batch.len();
        for (ext, policy) in samples_by_id(&s.out)? {
            let Some((_, base)) = start.iter().find(|(id, _)| *id == ext) else { continue };
            for (k, (p, b)) in policy.iter().zip(base).enumerate() {
                if let Some(item) = pair_item(&mut tx, c, ppo, s, &sampled[0], entry, &ext, k, p, b).await? {
                    batch.push(item);
                }
            }
        }
        let mut e = serde_json::to_value(entry)?;
        e["items"] = json!(batch.len() - before);
        checkpoints.push(e);
    }
    let added = crate::db::items::insert_batch(&mut tx, c.project_id, &batch).await?;
    let summary = json!({"spotcheck": {"ppo_run": ppo.id, "prompts": sources.len(), "start": {"dir": sampled[0].dir, "label": sampled[0].label},
        "checkpoints": checkpoints, "items_added": added.items, "responses_added": added.responses}});
    dbw::succeed(&mut tx, c.id, c.fence, &dir.display().to_string(), &summary).await?;
    tx.commit().await?;
    Ok(true)
}

/// The blind pair of checkpoint `s`'s sample `k` for prompt `ext` against the start's; None
/// when the source item is gone or the pair would not suit the project.
#[allow(clippy::too_many_arguments)]
async fn pair_item(
    tx: &mut PgConnection,
    c: &Claimed,
    ppo: &PpoRun,
    s: &Sampled,
    start: &Sampled,
    entry: &GridEntry,
    ext: &str,
    k: usize,
    policy: &Value,
    base: &Value,
) -> Result<Option<ImportItem>> {
    let Some((_, prompt, prompt_raw)) = dbw::item_by_external_id(tx, c.project_id, ext).await? else { return Ok(None) };
    let provenance = |role: &str, sampled: &Sampled, r: &Value| {
        let mut meta = if r["metadata"].is_object() { r["metadata"].clone() } else { json!({}) };
        meta["spotcheck"] = json!(role);
        meta["spotcheck_run"] = json!(c.id);
        meta["checkpoint"] = json!(sampled.dir);
        if role == "policy" {
            meta["run_id"] = json!(ppo.id);
            meta["sqrt_kl"] = json!(entry.sqrt_kl);
        }
        let text = crate::domain::text::sampled(r["text"].as_str().unwrap_or_default());
        ResponseIn { model: sampled.label.clone(), text, metadata: Some(meta) }
    };
    let short = &c.id.0.simple().to_string()[..8];
    let external_id = format!("spot-{short}-{}-{ext}-{k}", entry.name);
    let mut responses = vec![provenance("policy", s, policy), provenance("start", start, base)];
    if !policy_first(&c.id.to_string(), &external_id) {
        responses.reverse();
    }
    let item = ImportItem {
        metadata: Some(json!({"spotcheck_run": c.id, "ppo_run": ppo.id, "grid_checkpoint": entry.name, "point": entry.point, "sqrt_kl": entry.sqrt_kl,
            "iteration": entry.iteration, "source_item": ext, "sample": k, "sampling": {"temperature": c.config["temperature"], "top_p": c.config["top_p"],
            "max_new_tokens": c.config["max_new_tokens"], "seed": c.config["seed"]}})),
        external_id,
        prompt: serde_json::from_value::<Vec<Turn>>(prompt).unwrap_or_default(),
        prompt_raw,
        responses,
        instructions: None,
        imported_choice: false,
        gold: None,
    };
    Ok(check_kind(&item, c.project_kind).is_ok().then_some(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_goes_first_in_about_half_the_pairs_the_same_way_every_time() {
        let run = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let firsts = (0..1000).filter(|i| policy_first(run, &format!("spot-x-sqrt-kl-0.500-q{i}-0"))).count();
        assert!((400..600).contains(&firsts), "{firsts}");
        assert_eq!(policy_first(run, "a"), policy_first(run, "a"));
    }
}
