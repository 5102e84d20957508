//! What publishes with a run once its trainer has succeeded: a reward model's scores of the
//! project's responses, a `generate` run's new items, and the run's status, model and summary
//! — all in one transaction that first checks the run is still ours.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use rewardlab_protocol::{Done, Generated, MetricEvent};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncWriteExt;

use super::child::{run_child, Child};
use super::fence::Fence;
use super::inputs::Resolved;
use super::plan::{path_arg, Output, Plan};
use crate::db::worker::{self as dbw, Claimed};
use crate::domain::import::{check_kind, ImportItem, ResponseIn, Turn};
use crate::domain::runs::config_int;
use crate::domain::{ProjectId, ResponseId};

/// A reward model's reward for each response it scored.
pub type Scores = Vec<(ResponseId, f64)>;

/// Scores every response of the project with the reward model in `model`; None when the run
/// stopped being ours meanwhile.
pub async fn score_responses(pool: &PgPool, f: &Fence<'_>, trainer: &Path, c: &Claimed, dir: &Path, model: &Path) -> Result<Option<Scores>> {
    let items = dir.join("score-items.jsonl");
    let ids = write_score_items(pool, c.project_id, &items).await?;
    let out = dir.join("scores.jsonl");
    let args = ["score", "--model", &path_arg(model), "--data", &path_arg(&items), "--out", &path_arg(&out)].map(String::from);
    match run_child(f, trainer, &args).await? {
        Child::Lost => return Ok(None),
        Child::Exited { ok: false, status, last_line, .. } => bail!("scoring the project's responses: rewardlab-train score exited with {status}: {last_line}"),
        Child::Exited { ok: true, .. } => {}
    }
    let scores = read_scores(&out, &ids)?;
    f.log(&format!("[worker] scored {} responses of the project with the new reward model", scores.len())).await;
    Ok(Some(scores))
}

/// Writes every item of the project with its responses for `score`; returns the response ids
/// in the same order.
async fn write_score_items(pool: &PgPool, project: ProjectId, path: &Path) -> Result<Vec<Vec<ResponseId>>> {
    let mut conn = pool.acquire().await?;
    let mut rows = dbw::score_items(&mut conn, project);
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::from_std(crate::private_fs::create_file(path)?));
    let mut ids = Vec::new();
    while let Some((prompt, raw, rids, texts)) = rows.try_next().await? {
        let line = json!({"id": ids.len(), "prompt": crate::export::prompt_string(&prompt, &raw), "responses": texts});
        file.write_all(format!("{line}\n").as_bytes()).await?;
        ids.push(rids);
    }
    file.flush().await?;
    Ok(ids)
}

fn read_scores(path: &Path, ids: &[Vec<ResponseId>]) -> Result<Scores> {
    let mut out = Vec::new();
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let row = v["id"].as_u64().and_then(|i| ids.get(i as usize)).ok_or_else(|| anyhow!("{}:{}: unknown id", path.display(), n + 1))?;
        let rewards = v["rewards"].as_array().ok_or_else(|| anyhow!("{}:{}: no rewards", path.display(), n + 1))?;
        for (id, r) in row.iter().zip(rewards) {
            out.push((*id, r.as_f64().unwrap_or(f64::NAN)));
        }
    }
    Ok(out)
}

/// What the trainer left, ready to publish.
pub struct Outcome<'a> {
    pub plan: Plan,
    /// The attempt's directory.
    pub dir: PathBuf,
    /// The trainer's `done` line.
    pub summary: Option<Value>,
    pub scores: Scores,
    /// For `generate`: the policy sampled and the source items of its prompts.
    pub generated: Option<(&'a Resolved, Vec<String>)>,
}

/// Publishes the run if it is still ours; false when it is not (nothing was written).
pub async fn publish(pool: &PgPool, c: &Claimed, outcome: Outcome<'_>) -> Result<bool> {
    let mut tx = pool.begin().await?;
    if !dbw::lock_if_ours(&mut tx, c.id, c.fence).await? {
        return Ok(false);
    }
    let mut summary = outcome.summary.unwrap_or_else(|| json!({}));
    if !outcome.scores.is_empty() {
        let (ids, rewards): (Vec<ResponseId>, Vec<f64>) = outcome.scores.into_iter().unzip();
        dbw::insert_scores(&mut tx, c.id, &ids, &rewards).await?;
        summary["scored_responses"] = ids.len().into();
    }
    let out = outcome.plan.output_path(&outcome.dir);
    if let (Output::Generated, Some((policy, sources))) = (outcome.plan.output, &outcome.generated) {
        summary = import_generated(&mut tx, c, policy, sources, &out).await?;
    }
    let model_dir = std::fs::canonicalize(&out).unwrap_or(out);
    dbw::succeed(&mut tx, c.id, c.fence, &model_dir.display().to_string(), &summary).await?;
    tx.commit().await?;
    Ok(true)
}

/// Imports what a `generate` run sampled as new items: each prompt's new responses beside
/// `compare_with` earlier responses to the same prompt, with their provenance.
async fn import_generated(tx: &mut PgConnection, c: &Claimed, policy: &Resolved, sources: &[String], path: &Path) -> Result<Value> {
    let config = c.config.as_object().cloned().unwrap_or_default();
    let compare_with = config_int(&config, "compare_with", 1).max(0);
    let mut batch = Vec::new();
    let mut skipped = 0usize;
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let ext = v["id"].as_str().map(str::to_string).or_else(|| sources.get(n).cloned()).ok_or_else(|| anyhow!("{}:{}: no id", path.display(), n + 1))?;
        match generated_item(tx, c, policy, &ext, &v, compare_with).await? {
            Some(item) => batch.push(item),
            None => skipped += 1,
        }
    }
    let added = crate::db::items::insert_batch(tx, c.project_id, &batch).await?;
    let generated = Generated { prompts: sources.len(), items_added: added.items, responses_added: added.responses, skipped, policy: policy.label.clone() };
    Ok(serde_json::to_value(MetricEvent::Done(Done { generated: Some(generated), ..Done::default() }))?)
}

/// One generated line as a new item beside its source item's earlier responses; None when
/// its source is gone or the item would not suit the project.
async fn generated_item(tx: &mut PgConnection, c: &Claimed, policy: &Resolved, ext: &str, v: &Value, compare_with: i64) -> Result<Option<ImportItem>> {
    let Some((source_id, prompt, prompt_raw)) = dbw::item_by_external_id(tx, c.project_id, ext).await? else { return Ok(None) };
    let mut responses: Vec<ResponseIn> = v["responses"].as_array().map(|rs| rs.iter().map(|r| new_response(c, policy, r)).collect()).unwrap_or_default();
    let earlier = dbw::other_responses(tx, source_id, &policy.label, compare_with).await?;
    responses.extend(earlier.into_iter().map(|(model, text, metadata)| ResponseIn { model, text, metadata }));
    let short = &c.id.0.simple().to_string()[..8];
    let item = ImportItem {
        external_id: format!("gen-{short}-{ext}"),
        prompt: serde_json::from_value::<Vec<Turn>>(prompt).unwrap_or_default(),
        prompt_raw,
        responses,
        metadata: Some(json!({"generated_by_run": c.id, "policy": policy.label, "policy_run": policy.run, "checkpoint": policy.dir, "source_item": ext,
            "sampling": {"temperature": c.config["temperature"], "top_p": c.config["top_p"], "max_new_tokens": c.config["max_new_tokens"], "seed": c.config["seed"], "samples": c.config["samples"]}})),
        instructions: None,
        imported_choice: false,
        gold: None,
    };
    Ok((check_kind(&item, c.project_kind).is_ok() && !item.responses.is_empty()).then_some(item))
}

/// A sampled response with its provenance.
fn new_response(c: &Claimed, policy: &Resolved, r: &Value) -> ResponseIn {
    let mut meta = r["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["run_id"] = json!(policy.run);
    meta["generate_run"] = json!(c.id);
    meta["checkpoint"] = json!(policy.dir);
    ResponseIn { model: policy.label.clone(), text: r["text"].as_str().unwrap_or_default().to_string(), metadata: Some(meta) }
}
