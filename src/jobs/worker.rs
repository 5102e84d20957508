//! `rewardlab worker`: claims queued runs and executes them with `rewardlab-train`.
//!
//! A claim (`FOR UPDATE SKIP LOCKED`, the condition re-checked by the outer `UPDATE`) takes a
//! queued run, or a running one whose lease has expired, and raises its `fence`. Every write
//! the worker makes afterwards — heartbeats, metric lines, log lines, the final status — names
//! that fence and changes nothing once the row carries another one (a later claim) or is no
//! longer running (cancelled): the worker then kills its trainer and publishes nothing.
//! Each attempt trains into its own directory (`runs/<id>/attempt-<fence>/model`), so a
//! fenced-out trainer that is still writing can never touch what the new owner publishes; a
//! new attempt resumes from the newest complete checkpoint an earlier attempt left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{config_int, store_area, trainer_flags, ParamType, RunKind, StoreArea};
use crate::domain::import::{check_kind, ImportItem, ResponseIn, Turn};
use crate::domain::{ExportId, ProjectId, TaskKind};
use crate::export::{Export, Format, Options};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// Shown on the runs page and in the runs table.
    pub name: String,
    /// Model store: runs write under `runs/<id>/`, `*_path` inputs are relative to it.
    pub store: PathBuf,
    /// The `rewardlab-train` binary.
    pub trainer: PathBuf,
    /// A claim lasts this long unless renewed; heartbeats renew it every third of it.
    pub lease: Duration,
    /// Wait between looks at an empty queue.
    pub poll: Duration,
    /// Stop when the queue is empty instead of waiting.
    pub once: bool,
}

/// The `rewardlab-train` next to the running executable, else the one on PATH.
pub fn default_trainer() -> PathBuf {
    std::env::current_exe().ok().map(|e| e.with_file_name("rewardlab-train")).filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("rewardlab-train"))
}

/// A run as claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: uuid::Uuid,
    pub project_id: ProjectId,
    pub project_kind: TaskKind,
    pub kind: String,
    pub config: Value,
    pub input: Value,
    pub export_id: Option<ExportId>,
    pub after_run: Option<uuid::Uuid>,
    pub fence: i64,
    pub attempts: i32,
}

/// Claims the oldest runnable run: queued (its chain predecessor, if any, succeeded), or
/// running with an expired lease.
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<Claimed>> {
    sqlx::query_as(
        "UPDATE runs r SET status = 'running', fence = r.fence + 1, attempts = r.attempts + 1, worker = $1,
                lease_expires_at = now() + make_interval(secs => $2), started_at = COALESCE(r.started_at, now())
         WHERE r.id = (SELECT c.id FROM runs c
                       WHERE (c.status = 'queued' OR (c.status = 'running' AND c.lease_expires_at < now()))
                         AND (c.after_run IS NULL OR EXISTS (SELECT 1 FROM runs p WHERE p.id = c.after_run AND p.status = 'succeeded'))
                       ORDER BY c.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
           AND (r.status = 'queued' OR (r.status = 'running' AND r.lease_expires_at < now()))
         RETURNING r.id, r.project_id, (SELECT p.kind FROM projects p WHERE p.id = r.project_id) AS project_kind, r.kind, r.config, r.input,
                   r.export_id, r.after_run, r.fence, r.attempts",
    )
    .bind(worker)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Claims and executes runs until the queue is empty (`once`) or forever.
pub async fn run_worker(pool: PgPool, opts: WorkerOpts) -> Result<()> {
    crate::private_fs::create_dir_all(&opts.store).and_then(|_| crate::private_fs::create_dir_all(&opts.store.join("runs"))).with_context(|| format!("creating the model store {}", opts.store.display()))?;
    log::info!("worker {} polling for runs (model store {}, trainer {})", opts.name, opts.store.display(), opts.trainer.display());
    loop {
        match claim(&pool, &opts.name, opts.lease).await {
            Ok(Some(c)) => execute(&pool, &opts, c).await,
            Ok(None) if opts.once => return Ok(()),
            Ok(None) => tokio::time::sleep(opts.poll).await,
            Err(e) => {
                log::warn!("claiming a run: {e}");
                tokio::time::sleep(opts.poll).await;
            }
        }
    }
}

/// The claim's handle: every write goes through it and carries the fence.
pub struct Fence<'a> {
    pub pool: &'a PgPool,
    pub run: uuid::Uuid,
    pub fence: i64,
    pub lease: Duration,
}

/// Still the run's owner?
pub type Owned = bool;

impl Fence<'_> {
    pub async fn heartbeat(&self) -> Owned {
        let r = sqlx::query("UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) WHERE id = $1 AND fence = $2 AND status = 'running'")
            .bind(self.run)
            .bind(self.fence)
            .bind(self.lease.as_secs_f64())
            .execute(self.pool)
            .await;
        match r {
            Ok(done) => done.rows_affected() == 1,
            Err(e) => {
                // The database may be back in a moment; a later write decides.
                log::warn!("heartbeat of run {}: {e}", self.run);
                true
            }
        }
    }

    pub async fn log(&self, line: &str) -> Owned {
        let line: String = line.chars().take(4000).collect();
        let r = sqlx::query(
            "INSERT INTO run_logs (run_id, fence, line) SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND fence = $2 AND status = 'running')",
        )
        .bind(self.run)
        .bind(self.fence)
        .bind(line)
        .execute(self.pool)
        .await;
        r.map(|d| d.rows_affected() == 1).unwrap_or(true)
    }

    pub async fn metric(&self, data: &Value) -> Owned {
        let event = data["event"].as_str().unwrap_or("metric");
        let step = data.get("step").or_else(|| data.get("iteration")).and_then(Value::as_i64);
        let r = sqlx::query(
            "INSERT INTO run_metrics (run_id, fence, event, step, data)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1 AND fence = $2 AND status = 'running')",
        )
        .bind(self.run)
        .bind(self.fence)
        .bind(event)
        .bind(step)
        .bind(data)
        .execute(self.pool)
        .await;
        r.map(|d| d.rows_affected() == 1).unwrap_or(true)
    }

    async fn set(&self, column_sql: &str, value: Value) -> Result<Owned> {
        let done = sqlx::query(&format!("UPDATE runs SET {column_sql} WHERE id = $1 AND fence = $2 AND status = 'running'"))
            .bind(self.run)
            .bind(self.fence)
            .bind(value)
            .execute(self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the run failed (if still ours) and cancels the runs chained after it.
    async fn fail(&self, error: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'failed', error = $3, finished_at = now(), lease_expires_at = NULL WHERE id = $1 AND fence = $2 AND status = 'running'",
        )
        .bind(self.run)
        .bind(self.fence)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            cancel_dependents(&mut tx, self.run, "an earlier run of its chain failed").await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn cancel_dependents(conn: &mut sqlx::PgConnection, run: uuid::Uuid, why: &str) -> sqlx::Result<()> {
    sqlx::query(
        "WITH RECURSIVE chain(id) AS (SELECT id FROM runs WHERE after_run = $1 UNION SELECT r.id FROM runs r JOIN chain c ON r.after_run = c.id)
         UPDATE runs SET status = 'cancelled', finished_at = now(), error = $2 WHERE id IN (SELECT id FROM chain) AND status = 'queued'",
    )
    .bind(run)
    .bind(why)
    .execute(conn)
    .await?;
    Ok(())
}

enum Ended {
    Succeeded,
    Lost,
}

async fn execute(pool: &PgPool, opts: &WorkerOpts, c: Claimed) {
    let f = Fence { pool, run: c.id, fence: c.fence, lease: opts.lease };
    log::info!("run {} ({}): attempt {} (fence {})", c.id, c.kind, c.attempts, c.fence);
    f.log(&format!("[worker] attempt {} (fence {}) on {}", c.attempts, c.fence, opts.name)).await;
    match attempt(pool, opts, &c, &f).await {
        Ok(Ended::Succeeded) => log::info!("run {} succeeded", c.id),
        Ok(Ended::Lost) => log::warn!("run {}: no longer ours (cancelled, or its lease passed to another worker); its trainer was stopped and nothing was published", c.id),
        Err(e) => {
            let message = format!("{e:#}");
            log::warn!("run {} failed: {message}", c.id);
            f.log(&format!("[worker] failed: {message}")).await;
            if let Err(e) = f.fail(&message).await {
                log::error!("recording the failure of run {}: {e:#}", c.id);
            }
        }
    }
}

async fn attempt(pool: &PgPool, opts: &WorkerOpts, c: &Claimed, f: &Fence<'_>) -> Result<Ended> {
    let kind: RunKind = c.kind.parse().map_err(anyhow::Error::msg)?;
    let config = c.config.as_object().cloned().unwrap_or_default();
    let run_dir = opts.store.join("runs").join(c.id.to_string());
    let dir = run_dir.join(format!("attempt-{}", c.fence));
    crate::private_fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join("model");

    let input_dir = run_dir.join("input");
    let export = ensure_export(pool, c, kind, f, &input_dir).await?;
    let files = materialize(pool, &export, &input_dir).await?;
    f.log(&format!("[worker] input: export {} ({}, {} rows)", export.id, export.format, export.rows())).await;

    let mut args: Vec<String> = vec![kind.as_str().into()];
    let mut resolved = serde_json::Map::new();
    let policy = if kind.needs_policy() { Some(resolve_model(pool, c, Role::Policy, &opts.store).await?) } else { None };
    if let Some(p) = &policy {
        resolved.insert("policy".into(), json!({"dir": p.dir, "run": p.run, "label": p.label}));
    }
    let data_flag = |files: &[PathBuf]| -> Vec<String> { std::iter::once("--data".to_string()).chain(files.iter().map(|p| p.display().to_string())).collect() };
    let mut generate_sources = Vec::new();
    match kind {
        RunKind::Rm | RunKind::Sft => args.extend(data_flag(&files)),
        RunKind::Dpo => {
            args.extend(["--policy".into(), path_arg(&policy.as_ref().expect("dpo has a policy").dir)]);
            args.extend(data_flag(&files));
        }
        RunKind::Ppo => {
            let rm = resolve_model(pool, c, Role::RewardModel, &opts.store).await?;
            resolved.insert("reward_model".into(), json!({"dir": rm.dir, "run": rm.run, "label": rm.label}));
            args.extend(["--policy".into(), path_arg(&policy.as_ref().expect("ppo has a policy").dir), "--reward-model".into(), path_arg(&rm.dir)]);
            args.extend(["--prompts".into(), path_arg(&files[0])]);
        }
        RunKind::Generate => {
            let prompts = dir.join("prompts.jsonl");
            generate_sources = distinct_prompts(&files[0], &prompts, config_int(&c.config, "max_prompts", 100) as usize)?;
            args.extend(["--model".into(), path_arg(&policy.as_ref().expect("generate has a policy").dir), "--prompts".into(), path_arg(&prompts)]);
        }
    }
    f.set("input = input || jsonb_build_object('resolved', $3::jsonb)", Value::Object(resolved)).await?;
    if kind == RunKind::Generate {
        args.extend(["--out".into(), path_arg(&dir.join("generated.jsonl"))]);
    } else {
        args.extend(["--out".into(), path_arg(&model), "--metrics".into(), "-".into()]);
        if let Some(prev) = previous_checkpoint(&run_dir, c.fence) {
            f.log(&format!("[worker] resuming from {}", prev.display())).await;
            f.set("resumed_from = $3 #>> '{}'", json!(prev.display().to_string())).await?;
            args.extend(["--resume".into(), path_arg(&prev)]);
        }
    }
    for p in kind.params().into_iter().filter(|p| p.ty == ParamType::StorePath) {
        if let Some(rel) = config.get(p.name).and_then(Value::as_str) {
            owned_store_dir(pool, c, &opts.store, &format!("config.{}", p.name), rel).await?;
        }
    }
    args.extend(trainer_flags(kind, &config, &opts.store));

    let summary = match run_child(f, &opts.trainer, &args).await? {
        Child::Lost => return Ok(Ended::Lost),
        Child::Exited { ok: false, status, last_line, .. } => bail!("rewardlab-train {} exited with {status}: {last_line}", kind.as_str()),
        Child::Exited { ok: true, summary, .. } => summary,
    };

    // Work that publishes with the run: scores of the project's responses, generated items.
    let mut scores = Vec::new();
    if kind == RunKind::Rm {
        let items = dir.join("score-items.jsonl");
        let ids = write_score_items(pool, c.project_id, &items).await?;
        let out = dir.join("scores.jsonl");
        let args = ["score", "--model", &path_arg(&model), "--data", &path_arg(&items), "--out", &path_arg(&out)].map(String::from);
        match run_child(f, &opts.trainer, &args).await? {
            Child::Lost => return Ok(Ended::Lost),
            Child::Exited { ok: false, status, last_line, .. } => bail!("scoring the project's responses: rewardlab-train score exited with {status}: {last_line}"),
            Child::Exited { ok: true, .. } => {}
        }
        scores = read_scores(&out, &ids)?;
        f.log(&format!("[worker] scored {} responses of the project with the new reward model", scores.len())).await;
    }
    let mut tx = pool.begin().await?;
    let ours: Option<i64> = sqlx::query_scalar("SELECT fence FROM runs WHERE id = $1 AND fence = $2 AND status = 'running' FOR UPDATE").bind(c.id).bind(c.fence).fetch_optional(&mut *tx).await?;
    if ours.is_none() {
        return Ok(Ended::Lost);
    }
    let mut summary = summary.unwrap_or_else(|| json!({}));
    if !scores.is_empty() {
        let (ids, rewards): (Vec<uuid::Uuid>, Vec<f64>) = scores.into_iter().unzip();
        sqlx::query("INSERT INTO response_scores (run_id, response_id, reward) SELECT $1, * FROM UNNEST($2::uuid[], $3::float8[]) ON CONFLICT DO NOTHING")
            .bind(c.id)
            .bind(&ids)
            .bind(&rewards)
            .execute(&mut *tx)
            .await?;
        summary["scored_responses"] = ids.len().into();
    }
    if kind == RunKind::Generate {
        let p = policy.as_ref().expect("generate has a policy");
        let report = import_generated(&mut tx, c, p, &generate_sources, &dir.join("generated.jsonl")).await?;
        summary = report;
    }
    let model_dir = if kind == RunKind::Generate { dir.join("generated.jsonl") } else { model };
    let model_dir = std::fs::canonicalize(&model_dir).unwrap_or(model_dir);
    sqlx::query(
        "UPDATE runs SET status = 'succeeded', finished_at = now(), lease_expires_at = NULL, model_dir = $3, summary = $4 WHERE id = $1 AND fence = $2",
    )
    .bind(c.id)
    .bind(c.fence)
    .bind(model_dir.display().to_string())
    .bind(&summary)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO run_logs (run_id, fence, line) VALUES ($1, $2, $3)").bind(c.id).bind(c.fence).bind(format!("[worker] succeeded: {summary}")).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Ended::Succeeded)
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Which input an input field names, and which kinds of run can supply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Policy,
    RewardModel,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::RewardModel => "reward_model",
        }
    }
    fn kinds(self) -> Vec<String> {
        match self {
            Self::Policy => vec!["sft".into(), "ppo".into(), "dpo".into()],
            Self::RewardModel => vec!["rm".into()],
        }
    }
}

/// Checks a run's `input`: `export_id`, `policy_run` / `policy_path` (ppo, dpo, generate),
/// `reward_model_run` / `reward_model_path` (ppo). Paths are relative to the model store.
pub fn check_input(kind: RunKind, input: &Value) -> Result<(), String> {
    let obj = match input {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        _ => return Err("input: expected an object".into()),
    };
    for (k, v) in obj {
        let allowed = match k.as_str() {
            "export_id" => true,
            "policy_run" | "policy_path" => kind.needs_policy(),
            "reward_model_run" | "reward_model_path" => kind == RunKind::Ppo,
            _ => false,
        };
        if !allowed {
            return Err(format!("input.{k}: not an input of {} runs", kind.as_str()));
        }
        let s = v.as_str().ok_or_else(|| format!("input.{k}: expected a string"))?;
        if k.ends_with("_path") {
            store_area(s).ok_or_else(|| format!("input.{k}: expected {}, got {s:?}", super::ParamType::StorePath.describe()))?;
        } else if uuid::Uuid::parse_str(s).is_err() {
            return Err(format!("input.{k}: expected an id, got {s:?}"));
        }
    }
    Ok(())
}

/// A store path a run names, checked again where it is read (the API checked it when the run
/// was queued): under `shared/`, or under `runs/<id>/` of a run of the run's own project and
/// still inside that run's directory once symlinks are followed.
async fn owned_store_dir(pool: &PgPool, c: &Claimed, store: &Path, field: &str, rel: &str) -> Result<PathBuf> {
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
struct Resolved {
    dir: PathBuf,
    run: Option<uuid::Uuid>,
    /// The name its generated responses carry (`<kind>-<run>` or `store:<path>`).
    label: String,
}

/// The model for `role`: the input's run or path; else the nearest run of the chain that made
/// one; else the project's newest successful run that made one.
async fn resolve_model(pool: &PgPool, c: &Claimed, role: Role, store: &Path) -> Result<Resolved> {
    if let Some(p) = c.input.get(format!("{}_path", role.key())).and_then(Value::as_str) {
        let dir = owned_store_dir(pool, c, store, &format!("input.{}_path", role.key()), p).await?;
        if !dir.join("config.json").exists() {
            bail!("input.{}_path: {} has no config.json", role.key(), dir.display());
        }
        return Ok(Resolved { dir, run: None, label: format!("store:{p}") });
    }
    let row: Option<(uuid::Uuid, String, String)> = if let Some(id) = c.input.get(format!("{}_run", role.key())).and_then(Value::as_str) {
        let id: uuid::Uuid = id.parse().map_err(|_| anyhow!("input.{}_run: not an id", role.key()))?;
        let found = sqlx::query_as("SELECT id, kind, model_dir FROM runs WHERE id = $1 AND project_id = $2 AND status = 'succeeded' AND kind = ANY($3) AND model_dir IS NOT NULL")
            .bind(id)
            .bind(c.project_id)
            .bind(role.kinds())
            .fetch_optional(pool)
            .await?;
        Some(found.ok_or_else(|| anyhow!("input.{}_run: {id} is not a succeeded {} run of this project", role.key(), role.kinds().join("/")))?)
    } else {
        let chain = sqlx::query_as(
            "WITH RECURSIVE up(id, depth) AS (SELECT $1::uuid, 0 UNION ALL SELECT r.after_run, up.depth + 1 FROM runs r JOIN up ON r.id = up.id WHERE r.after_run IS NOT NULL)
             SELECT r.id, r.kind, r.model_dir FROM up JOIN runs r ON r.id = up.id
             WHERE r.kind = ANY($2) AND r.status = 'succeeded' AND r.model_dir IS NOT NULL ORDER BY up.depth LIMIT 1",
        )
        .bind(c.after_run)
        .bind(role.kinds())
        .fetch_optional(pool)
        .await?;
        match chain {
            Some(r) => Some(r),
            None => sqlx::query_as(
                "SELECT id, kind, model_dir FROM runs WHERE project_id = $1 AND kind = ANY($2) AND status = 'succeeded' AND model_dir IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
            )
            .bind(c.project_id)
            .bind(role.kinds())
            .fetch_optional(pool)
            .await?,
        }
    };
    let (id, kind, dir) = row.ok_or_else(|| {
        anyhow!("no {} to start from: give input.{}_run or input.{}_path, or run {} first", role.key().replace('_', " "), role.key(), role.key(), role.kinds()[0])
    })?;
    Ok(Resolved { dir: PathBuf::from(dir), run: Some(id), label: format!("{kind}-{}", &id.simple().to_string()[..8]) })
}

/// Where an export's part lies in a run's input directory.
fn export_file(dir: &Path, e: &Export, part: &str) -> PathBuf {
    dir.join(format!("{}-{}-{part}.jsonl", e.format, e.id))
}

/// The run's export snapshot: the one it names, or a new one (recorded on the run, so a
/// takeover trains on the same data), whose files are written into `dir` as it is taken.
async fn ensure_export(pool: &PgPool, c: &Claimed, kind: RunKind, f: &Fence<'_>, dir: &Path) -> Result<Export> {
    let named = c.export_id.or_else(|| c.input.get("export_id").and_then(Value::as_str).and_then(|s| s.parse().ok()));
    let format = match kind {
        RunKind::Rm => Format::Comparisons,
        RunKind::Sft if c.project_kind == TaskKind::Demonstration => Format::Sft,
        RunKind::Sft | RunKind::Dpo => Format::Preferences,
        RunKind::Ppo | RunKind::Generate => Format::Prompts,
    };
    if let Some(id) = named {
        let mut conn = pool.acquire().await?;
        let e = crate::export::get(&mut conn, id).await?.filter(|e| e.project_id == c.project_id).ok_or_else(|| anyhow!("input.export_id: no export {id} in this project"))?;
        if c.export_id.is_none() {
            f.set("export_id = ($3 #>> '{}')::uuid", json!(e.id)).await?;
        }
        return Ok(e);
    }
    let options = Options::default();
    crate::private_fs::create_dir_all(dir)?;
    let pending = |part: &str| dir.join(format!(".pending-{}-{part}", c.fence));
    let export = crate::export::create(pool, c.project_id, format, options, None, |part| {
        let file = crate::private_fs::create_file(&pending(part)).with_context(|| format!("creating {}", pending(part).display()))?;
        Ok(tokio::io::BufWriter::new(tokio::fs::File::from_std(file)))
    })
    .await?;
    for part in &export.files {
        std::fs::File::open(pending(&part.part))?.sync_all()?;
        std::fs::rename(pending(&part.part), export_file(dir, &export, &part.part))?;
    }
    if export.rows() == 0 {
        bail!("the project's {format} export is empty: nothing to {} on", if kind == RunKind::Generate { "sample" } else { "train" });
    }
    f.set("export_id = ($3 #>> '{}')::uuid", json!(export.id)).await?;
    Ok(export)
}

/// The export's files under `dir`: written when the export was taken here, else replayed from
/// its snapshot (the same bytes, checked against the recorded sha256) and kept for later attempts.
async fn materialize(pool: &PgPool, e: &Export, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::private_fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for part in &e.files {
        let path = export_file(dir, e, &part.part);
        if !path.exists() {
            let tmp = dir.join(format!(".{}-{}.partial-{}", e.id, part.part, uuid::Uuid::new_v4().simple()));
            let mut file = tokio::io::BufWriter::new(tokio::fs::File::from_std(crate::private_fs::create_file(&tmp)?));
            let mut conn = pool.acquire().await?;
            crate::export::write_part(&mut conn, e.project_id, e.format(), &e.options, &e.snapshot, &part.part, &mut file).await.and_then(|(_, sha)| {
                if sha == part.sha256 {
                    Ok(())
                } else {
                    Err(anyhow!("export {} replayed with sha256 {sha}, recorded {}", e.id, part.sha256))
                }
            })?;
            file.flush().await?;
            file.into_inner().sync_all().await?;
            std::fs::rename(&tmp, &path)?;
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
fn previous_checkpoint(run_dir: &Path, fence: i64) -> Option<PathBuf> {
    let mut attempts: Vec<(i64, PathBuf)> = std::fs::read_dir(run_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.strip_prefix("attempt-")?.parse().ok()?, e.path())))
        .filter(|(n, _)| *n < fence)
        .collect();
    attempts.sort_by_key(|a| std::cmp::Reverse(a.0));
    attempts.into_iter().map(|(_, p)| p.join("model")).find(|m| {
        std::fs::read_dir(m.join("checkpoints")).map(|mut it| it.any(|e| e.is_ok_and(|e| e.path().join("COMPLETE").exists()))).unwrap_or(false)
    })
}

enum Child {
    Lost,
    Exited { ok: bool, status: String, last_line: String, summary: Option<Value> },
}

enum Event {
    Out(Option<String>),
    Err(Option<String>),
    Beat,
    Exit(std::io::Result<std::process::ExitStatus>),
}

/// Runs the trainer: metric lines (stdout) and log lines (stderr) into PostgreSQL as they
/// come, heartbeats meanwhile; kills it as soon as the run is no longer ours.
async fn run_child(f: &Fence<'_>, trainer: &Path, args: &[String]) -> Result<Child> {
    let mut cmd = tokio::process::Command::new(trainer);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .env_remove("DATABASE_URL")
        .env_remove("REWARDLAB_SESSION_KEY");
    die_with_parent(&mut cmd);
    f.log(&format!("[worker] $ rewardlab-train {}", args.join(" "))).await;
    let mut child = cmd.spawn().with_context(|| format!("starting {}", trainer.display()))?;
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut beat = tokio::time::interval(f.lease / 3);
    beat.tick().await;
    let (mut out_open, mut err_open) = (true, true);
    let (mut last_line, mut summary) = (String::new(), None);
    loop {
        let event = tokio::select! {
            l = out.next_line(), if out_open => Event::Out(l.ok().flatten()),
            l = err.next_line(), if err_open => Event::Err(l.ok().flatten()),
            _ = beat.tick() => Event::Beat,
            s = child.wait(), if !out_open && !err_open => Event::Exit(s),
        };
        let owned = match event {
            Event::Out(None) => {
                out_open = false;
                true
            }
            Event::Err(None) => {
                err_open = false;
                true
            }
            Event::Out(Some(line)) => match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("event").is_some() => {
                    if v["event"] == "done" {
                        summary = Some(v.clone());
                    }
                    f.metric(&v).await
                }
                _ => f.log(&line).await,
            },
            Event::Err(Some(line)) => {
                if !line.trim().is_empty() {
                    last_line = line.clone();
                }
                f.log(&line).await
            }
            Event::Beat => f.heartbeat().await,
            Event::Exit(status) => {
                let status = status?;
                let shown = status.code().map_or_else(|| format!("signal {}", std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)), |c| format!("status {c}"));
                return Ok(Child::Exited { ok: status.success(), status: shown, last_line, summary });
            }
        };
        if !owned {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Ok(Child::Lost);
        }
    }
}

/// Asks Linux to kill the trainer when the worker dies (a SIGKILLed worker must not leave a
/// trainer writing on), and gives it umask 077 so the models it writes are private.
/// Safety: `prctl` and `umask` are async-signal-safe and touch no memory.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Picks up to `max` distinct prompts (earliest first) from a `prompts` export.
fn distinct_prompts(export: &Path, out: &Path, max: usize) -> Result<Vec<String>> {
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

/// Writes every item of the project with its responses for `score`; returns the response ids
/// in the same order.
async fn write_score_items(pool: &PgPool, project: ProjectId, path: &Path) -> Result<Vec<Vec<uuid::Uuid>>> {
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query_as::<_, (Value, Option<String>, Vec<uuid::Uuid>, Vec<String>)>(
        "SELECT i.prompt, i.prompt_raw, array_agg(r.id ORDER BY r.position), array_agg(r.text ORDER BY r.position)
         FROM items i JOIN responses r ON r.item_id = i.id WHERE i.project_id = $1 GROUP BY i.id ORDER BY min(i.seq)",
    )
    .bind(project)
    .fetch(&mut *conn);
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

fn read_scores(path: &Path, ids: &[Vec<uuid::Uuid>]) -> Result<Vec<(uuid::Uuid, f64)>> {
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

/// Imports what a `generate` run sampled as new items: each prompt's new responses beside
/// `compare_with` earlier responses to the same prompt, with their provenance.
async fn import_generated(tx: &mut sqlx::PgConnection, c: &Claimed, policy: &Resolved, sources: &[String], path: &Path) -> Result<Value> {
    let compare_with = config_int(&c.config, "compare_with", 1).max(0) as usize;
    let short = &c.id.simple().to_string()[..8];
    let mut batch = Vec::new();
    let mut skipped = 0;
    for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        let ext = v["id"].as_str().map(str::to_string).or_else(|| sources.get(n).cloned()).ok_or_else(|| anyhow!("{}:{}: no id", path.display(), n + 1))?;
        let source: Option<(uuid::Uuid, Value, Option<String>)> =
            sqlx::query_as("SELECT id, prompt, prompt_raw FROM items WHERE project_id = $1 AND external_id = $2").bind(c.project_id).bind(&ext).fetch_optional(&mut *tx).await?;
        let Some((source_id, prompt, prompt_raw)) = source else {
            skipped += 1;
            continue;
        };
        let mut responses: Vec<ResponseIn> = v["responses"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let mut meta = r["metadata"].clone();
                        if !meta.is_object() {
                            meta = json!({});
                        }
                        meta["run_id"] = json!(policy.run);
                        meta["generate_run"] = json!(c.id);
                        meta["checkpoint"] = json!(policy.dir);
                        ResponseIn { model: policy.label.clone(), text: r["text"].as_str().unwrap_or_default().to_string(), metadata: Some(meta) }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let earlier: Vec<(String, String, Option<Value>)> = sqlx::query_as("SELECT model, text, metadata FROM responses WHERE item_id = $1 AND model <> $2 ORDER BY position LIMIT $3")
            .bind(source_id)
            .bind(&policy.label)
            .bind(compare_with as i64)
            .fetch_all(&mut *tx)
            .await?;
        responses.extend(earlier.into_iter().map(|(model, text, metadata)| ResponseIn { model, text, metadata }));
        let item = ImportItem {
            external_id: format!("gen-{short}-{ext}"),
            prompt: serde_json::from_value::<Vec<Turn>>(prompt).unwrap_or_default(),
            prompt_raw,
            responses,
            metadata: Some(json!({"generated_by_run": c.id, "policy": policy.label, "policy_run": policy.run, "checkpoint": policy.dir, "source_item": ext,
                "sampling": {"temperature": c.config["temperature"], "top_p": c.config["top_p"], "max_new_tokens": c.config["max_new_tokens"], "seed": c.config["seed"], "samples": c.config["samples"]}})),
            imported_choice: false,
        };
        if check_kind(&item, c.project_kind).is_err() || item.responses.is_empty() {
            skipped += 1;
            continue;
        }
        batch.push(item);
    }
    let added = crate::db::items::insert_batch(tx, c.project_id, &batch).await?;
    Ok(json!({"event": "done", "prompts": sources.len(), "items_added": added.items, "responses_added": added.responses, "skipped": skipped, "policy": policy.label}))
}
