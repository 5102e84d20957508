//! What an attempt starts from: the run's export snapshot as files, the models it names or
//! finds, the store paths it names (checked again where they are read), and the checkpoint an
//! earlier attempt left.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sqlx::PgPool;

use super::fence::Fence;
use super::plan::Plan;
use crate::db::worker::{self as dbw, Claimed};
use crate::domain::runs::{store_area, ModelRole, ModelSource, RunInput, RunKind, StoreArea};
use crate::export::{Export, Options};

/// Where an export's part lies in a run's input directory.
fn export_file(dir: &Path, e: &Export, part: &str) -> PathBuf {
    dir.join(format!("{}-{}-{part}.jsonl", e.format, e.id))
}

/// The run's export snapshot: the one it names, or a new one (recorded on the run, so a
/// takeover trains on the same data), whose files are written into `dir` as it is taken.
pub async fn ensure_export(pool: &PgPool, c: &Claimed, input: &RunInput, plan: &Plan, f: &Fence<'_>, dir: &Path) -> Result<Export> {
    if let Some(id) = c.export_id.or(input.export) {
        let mut conn = pool.acquire().await?;
        let e = crate::db::exports::get(&mut conn, id)
            .await?
            .filter(|e| e.project_id == c.project_id)
            .ok_or_else(|| anyhow!("input.export_id: no export {id} in this project"))?;
        if c.export_id.is_none() {
            f.set_export(e.id).await?;
        }
        return Ok(e);
    }
    let export = take_export(pool, c, plan, dir).await?;
    if export.rows() == 0 {
        let what = if plan.output == super::plan::Output::Generated { "sample" } else { "train" };
        bail!("the project's {} export is empty: nothing to {what} on", plan.format);
    }
    f.set_export(export.id).await?;
    Ok(export)
}

/// Takes a new export of the plan's format, its files written under `dir`.
async fn take_export(pool: &PgPool, c: &Claimed, plan: &Plan, dir: &Path) -> Result<Export> {
    crate::private_fs::create_dir_all(dir)?;
    let pending = |part: &str| dir.join(format!(".pending-{}-{part}", c.fence));
    let export = crate::export::create(pool, c.project_id, plan.format, Options::default(), None, |part| {
        let file = crate::private_fs::create_file(&pending(part)).with_context(|| format!("creating {}", pending(part).display()))?;
        Ok(tokio::io::BufWriter::new(tokio::fs::File::from_std(file)))
    })
    .await?;
    for part in &export.files {
        std::fs::File::open(pending(&part.part))?.sync_all()?;
        std::fs::rename(pending(&part.part), export_file(dir, &export, &part.part))?;
    }
    Ok(export)
}

/// The export's files under `dir`: written when the export was taken here, else replayed from
/// its snapshot (the same bytes, checked against the recorded sha256) and kept for later attempts.
pub async fn materialize(pool: &PgPool, e: &Export, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::private_fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for part in &e.files {
        let path = export_file(dir, e, &part.part);
        if !path.exists() {
            crate::export::replay_to(pool, e, part, &path).await?;
        }
        if part.rows > 0 {
            out.push(path);
        }
    }
    if out.is_empty() {
        bail!("export {} has no rows", e.id);
    }
    Ok(out)
}

/// The newest complete checkpoint an earlier attempt left.
pub fn previous_checkpoint(run_dir: &Path, fence: i64) -> Option<PathBuf> {
    let mut attempts: Vec<(i64, PathBuf)> = std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix("attempt-")?.parse().ok()?, e.path())))
        .filter(|(n, _)| *n < fence)
        .collect();
    attempts.sort_by_key(|a| std::cmp::Reverse(a.0));
    attempts
        .into_iter()
        .map(|(_, p)| p.join("model"))
        .find(|m| std::fs::read_dir(m.join("checkpoints")).map(|mut it| it.any(|e| e.is_ok_and(|e| e.path().join("COMPLETE").exists()))).unwrap_or(false))
}

/// A store path a run names, checked again where it is read (the API checked it when the run
/// was queued): under `shared/`, or under `runs/<id>/` of a run of the run's own project and
/// still inside that run's directory once symlinks are followed.
pub async fn owned_store_dir(pool: &PgPool, c: &Claimed, store: &Path, field: &str, rel: &str) -> Result<PathBuf> {
    let area = store_area(rel).ok_or_else(|| anyhow!("{field}: {rel:?} is not under shared/ or runs/<id>/ of the model store"))?;
    let dir = store.join(rel);
    if let StoreArea::Run(id) = area {
        let mut conn = pool.acquire().await?;
        if !crate::db::runs::is_project_run(&mut conn, c.project_id, id, &[]).await? {
            bail!("{field}: {rel} is not a run of this project");
        }
        if let (Ok(real), Ok(root)) = (std::fs::canonicalize(&dir), std::fs::canonicalize(store.join("runs").join(id.to_string()))) {
            if !real.starts_with(&root) {
                bail!("{field}: {rel} leads out of its run's directory");
            }
        }
    }
    Ok(dir)
}

/// A model a run starts from.
pub struct Resolved {
    pub dir: PathBuf,
    pub run: Option<crate::domain::RunId>,
    /// The name its generated responses carry (`<kind>-<run>` or `store:<path>`).
    pub label: String,
}

impl Resolved {
    /// As recorded under the run's `input.resolved`.
    pub fn to_json(&self) -> Value {
        json!({"dir": self.dir, "run": self.run, "label": self.label})
    }
}

/// The model directory an input's `<role>_path` names.
async fn model_at_path(pool: &PgPool, c: &Claimed, store: &Path, role: ModelRole, rel: &str) -> Result<Resolved> {
    let key = role.key();
    let dir = owned_store_dir(pool, c, store, &format!("input.{key}_path"), rel).await?;
    if !dir.join("config.json").exists() {
        bail!("input.{key}_path: {} has no config.json", dir.display());
    }
    Ok(Resolved { dir, run: None, label: format!("store:{rel}") })
}

/// The model for `role`: the input's run or path; else the nearest run of the chain that made
/// one; else the project's newest successful run that made one.
pub async fn resolve_model(pool: &PgPool, c: &Claimed, input: &RunInput, role: ModelRole, store: &Path) -> Result<Resolved> {
    let key = role.key();
    let made = match input.model(role) {
        Some(ModelSource::Path(p)) => return model_at_path(pool, c, store, role, p).await,
        Some(ModelSource::Run(id)) => {
            let found = dbw::model_of_run(&mut *pool.acquire().await?, c.project_id, *id, role.kinds()).await?;
            let kinds: Vec<&str> = role.kinds().iter().map(|k| k.as_str()).collect();
            Some(found.ok_or_else(|| anyhow!("input.{key}_run: {id} is not a succeeded {} run of this project", kinds.join("/")))?)
        }
        None => {
            let mut conn = pool.acquire().await?;
            match dbw::model_up_chain(&mut conn, c.after_run, role.kinds()).await? {
                Some(m) => Some(m),
                None => dbw::newest_model(&mut conn, c.project_id, role.kinds()).await?,
            }
        }
    };
    let (id, kind, dir) =
        made.ok_or_else(|| anyhow!("no {} to start from: give input.{key}_run or input.{key}_path, or run {} first", key.replace('_', " "), role.kinds()[0]))?;
    Ok(Resolved { dir: PathBuf::from(dir), run: Some(id), label: format!("{kind}-{}", &id.0.simple().to_string()[..8]) })
}

/// The tokenizer a model trained from scratch shares with the project's others: the nearest
/// model up the chain, else the project's newest (any kind; `None` for the first). Models that
/// share one can be combined (a PPO value network starts from the reward model).
pub async fn shared_tokenizer(pool: &PgPool, c: &Claimed) -> Result<Option<Resolved>> {
    const ANY: &[RunKind] = &[RunKind::Rm, RunKind::Sft, RunKind::Dpo, RunKind::Ppo];
    let mut conn = pool.acquire().await?;
    let made = match dbw::model_up_chain(&mut conn, c.after_run, ANY).await? {
        Some(m) => Some(m),
        None => dbw::newest_model(&mut conn, c.project_id, ANY).await?,
    };
    Ok(made
        .map(|(id, kind, dir)| Resolved { dir: PathBuf::from(dir), run: Some(id), label: format!("{kind}-{}", &id.0.simple().to_string()[..8]) })
        .filter(|m| m.dir.join("tokenizer.json").exists()))
}

/// Picks up to `max` distinct prompts (earliest first) from a `prompts` export.
pub fn distinct_prompts(export: &Path, out: &Path, max: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(export)?;
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    let mut w = String::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        let (Some(id), Some(prompt)) = (v["id"].as_str(), v["prompt"].as_str()) else { continue };
        if ids.len() == max || !seen.insert(prompt.to_string()) {
            continue;
        }
        ids.push(id.to_string());
        w.push_str(&json!({"id": id, "prompt": prompt}).to_string());
        w.push('\n');
    }
    std::fs::write(out, w)?;
    Ok(ids)
}
