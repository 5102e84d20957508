//! What publishes with a run once its trainer has succeeded: a reward model's scores of the
//! project's responses (and the queue priorities of its items), a `generate` run's new items, the
//! model's figures on the regression set, and the run's status, model and summary
//! — all in one transaction that first checks the run is still ours.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use rewardlab_protocol::{Done, Generated, MetricEvent};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncWriteExt;

use super::child::{run_child, Child, Launcher};
use super::fence::Fence;
use super::inputs::Resolved;
use super::plan::{path_arg, Output, Plan};
use crate::db::queue::ItemQueue;
use crate::db::worker::{self as dbw, Claimed};
use crate::domain::import::{check_kind, ImportItem, ResponseIn, Turn};
use crate::domain::queue;
use crate::domain::runs::config_int;
use crate::domain::{ProjectId, ResponseId};

/// What a reward model said: per response its reward (an ensemble's mean), the ensemble's
/// spread and members' rewards, and per item its queue priority (see [`crate::domain::queue`]).
#[derive(Debug, Default)]
pub struct Scores {
    pub responses: Vec<ScoredResponse>,
    pub items: Vec<ItemQueue>,
    /// Ensemble members (1 for a single model).
    pub members: i32,
}

#[derive(Debug)]
pub struct ScoredResponse {
    pub id: ResponseId,
    pub reward: f64,
    pub std: Option<f64>,
    pub members: Vec<f64>,
}

impl Scores {
    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }
}

/// Scores every response of the project with the reward model in `model`; None when the run
/// stopped being ours meanwhile.
pub async fn score_responses(pool: &PgPool, f: &Fence<'_>, trainer: &Path, c: &Claimed, dir: &Path, model: &Path) -> Result<Option<Scores>> {
    let items = dir.join("score-items.jsonl");
    let ids = write_score_items(pool, c.project_id, &items).await?;
    let out = dir.join("scores.jsonl");
    let args = ["score", "--model", &path_arg(model), "--data", &path_arg(&items), "--out", &path_arg(&out)].map(String::from);
    match run_child(f, &Launcher { trainer, mpirun: None }, &args).await? {
        Child::Lost => return Ok(None),
        Child::Exited { ok: false, status, last_line, .. } => bail!("scoring the project's responses: rewardlab-train score exited with {status}: {last_line}"),
        Child::Exited { ok: true, .. } => {}
    }
    let scores = read_scores(&out, &ids)?;
    f.log(&format!(
        "[worker] scored {} responses of the project with the new reward model ({} ensemble member(s)); {} items have a queue priority",
        scores.responses.len(),
        scores.members,
        scores.items.iter().filter(|i| i.priority.is_some()).count()
    ))
    .await;
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
    let mut out = Scores::default();
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: Value = serde_json::from_str(line).with_context(at)?;
        let row = v["id"].as_u64().and_then(|i| ids.get(i as usize)).ok_or_else(|| anyhow!("{}: unknown id", at()))?;
        let rewards = v["rewards"].as_array().ok_or_else(|| anyhow!("{}: no rewards", at()))?;
        let stds = v["reward_std"].as_array();
        let members = v["member_rewards"].as_array();
        let mut per_member = Vec::new();
        for (i, (id, r)) in row.iter().zip(rewards).enumerate() {
            let reward = r.as_f64().unwrap_or(f64::NAN);
            let ms: Vec<f64> = match members.and_then(|m| m.get(i)).and_then(Value::as_array) {
                Some(ms) => ms.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect(),
                None => vec![reward],
            };
            per_member.push(ms.clone());
            let std = stds.and_then(|s| s.get(i)).and_then(Value::as_f64);
            out.responses.push(ScoredResponse { id: *id, reward, std, members: ms });
        }
        out.members = out.members.max(per_member.first().map_or(0, |m| m.len() as i32));
        if let Some(first) = row.first() {
            let best = queue::member_best(&per_member).iter().map(i16::to_string).collect::<Vec<_>>().join(",");
            out.items.push(ItemQueue { first_response: *first, priority: queue::item_priority(&per_member), best: format!("{{{best}}}") });
        }
    }
    Ok(out)
}

/// Postgres array text of `xs` (`''` for none).
fn array_text(xs: &[f64]) -> String {
    match xs.len() {
        0 => String::new(),
        _ => format!("{{{}}}", xs.iter().map(|x| if x.is_finite() { x.to_string() } else { "NaN".to_string() }).collect::<Vec<_>>().join(",")),
    }
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
    /// The model's figures on the project's active regression set.
    pub regression: Option<super::regression::Measured>,
    /// A merge sweep's report (each α's accuracy, the α kept).
    pub sweep: Option<Value>,
}

/// Publishes the run if it is still ours; false when it is not (nothing was written).
pub async fn publish(pool: &PgPool, c: &Claimed, outcome: Outcome<'_>) -> Result<bool> {
    let mut tx = pool.begin().await?;
    if !dbw::lock_if_ours(&mut tx, c.id, c.fence).await? {
        return Ok(false);
    }
    let mut summary = outcome.summary.unwrap_or_else(|| json!({}));
    if !outcome.scores.is_empty() {
        let rs = &outcome.scores.responses;
        let ids: Vec<ResponseId> = rs.iter().map(|r| r.id).collect();
        let rewards: Vec<f64> = rs.iter().map(|r| r.reward).collect();
        let stds: Vec<f64> = rs.iter().map(|r| r.std.unwrap_or(f64::NAN)).collect();
        let members: Vec<String> = rs.iter().map(|r| if outcome.scores.members > 1 { array_text(&r.members) } else { String::new() }).collect();
        dbw::insert_scores(&mut tx, c.id, &ids, &rewards, &stds, &members).await?;
        crate::db::queue::replace_priorities(&mut tx, c.project_id, c.id, outcome.scores.members, &outcome.scores.items).await?;
        summary["scored_responses"] = ids.len().into();
        summary["queue_items_scored"] = outcome.scores.items.len().into();
    }
    let out = outcome.plan.output_path(&outcome.dir);
    if let (Output::Generated, Some((policy, sources))) = (outcome.plan.output, &outcome.generated) {
        summary = import_generated(&mut tx, c, policy, sources, &out).await?;
    }
    if let Some(report) = outcome.sweep {
        summary["merge_sweep"] = report;
    }
    if let Some(m) = &outcome.regression {
        let names: Vec<String> = m.figures.iter().map(|f| f.0.clone()).collect();
        let values: Vec<f64> = m.figures.iter().map(|f| f.1).collect();
        let ns: Vec<i32> = m.figures.iter().map(|f| f.2).collect();
        crate::db::regression::insert_results(&mut tx, c.id, m.set, &names, &values, &ns).await?;
        summary["regression"] = m.to_json();
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
    ResponseIn { model: policy.label.clone(), text: crate::domain::text::sampled(r["text"].as_str().unwrap_or_default()), metadata: Some(meta) }
}
