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

mod child;
mod fence;
mod inputs;
mod mixture;
mod plan;
mod publish;
mod regression;
mod spotcheck;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use sqlx::PgPool;

pub use crate::db::worker::{claim, claim_capable, Claimed};
use crate::domain::runs::launch::Launch;
use crate::domain::runs::{config_int, trainer_flags, ParamType, RunInput, RunKind};
use child::{run_child, Child, Launcher};
pub use fence::{Fence, Owned};
use inputs::Resolved;
use plan::{Inputs, Output, Plan};
use publish::Outcome;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOpts {
    /// Shown on the runs page and in the runs table.
    pub name: String,
    /// Model store: runs write under `runs/<id>/`, `*_path` inputs are relative to it.
    pub store: PathBuf,
    /// The `rewardlab-train` binary.
    pub trainer: PathBuf,
    /// mpirun, when this worker runs data-parallel runs (its trainer was built with `mpi`; see
    /// [`mpirun_capability`]); without it the worker leaves them to another.
    pub mpirun: Option<PathBuf>,
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

/// Fails, saying how to get one, unless `trainer` names an executable file (a bare name is
/// looked up on PATH): a worker without its trainer would take runs only to fail them.
pub fn check_trainer(trainer: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let found = if trainer.components().count() > 1 {
        executable(trainer)
    } else {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(trainer))))
    };
    if !found {
        bail!(
            "the trainer {} was not found (the worker looks next to its own executable, then on PATH): build it with \
             `cargo build --release -p rewardlab-trainer`, or give its path with --trainer",
            trainer.display()
        );
    }
    Ok(())
}

/// The mpirun this worker launches data-parallel runs with, if it can: its trainer lists `mpi`
/// in `rewardlab-train capabilities` and mpirun (`given`, else `mpirun` on PATH) is an
/// executable. `Ok(None)` with the reason when it cannot; an error when `given` cannot be used.
pub fn mpirun_capability(trainer: &Path, given: Option<&Path>) -> Result<(Option<PathBuf>, String)> {
    let out = std::process::Command::new(trainer).arg("capabilities").stdin(std::process::Stdio::null()).output();
    let has_mpi = out.as_ref().is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "mpi"));
    let mpirun = given.map(Path::to_path_buf).or_else(|| find_on_path("mpirun"));
    match (has_mpi, mpirun) {
        (true, Some(m)) if is_executable(&m) => Ok((Some(m.clone()), format!("runs on several processes with {}", m.display()))),
        (_, Some(m)) if given.is_some() && !is_executable(&m) => bail!("--mpirun {} is not an executable file", m.display()),
        (false, _) if given.is_some() => bail!(
            "--mpirun was given, but the trainer {} was not built with the `mpi` feature (cargo build --release -p rewardlab-trainer --features mpi)",
            trainer.display()
        ),
        (false, _) => Ok((None, "one-process runs only: the trainer was built without the `mpi` feature".into())),
        (true, _) => Ok((None, "one-process runs only: no mpirun on PATH (install Open MPI, or give --mpirun)".into())),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

/// Claims and executes runs until the queue is empty (`once`) or forever.
pub async fn run_worker(pool: PgPool, opts: WorkerOpts) -> Result<()> {
    crate::private_fs::create_dir_all(&opts.store)
        .and_then(|_| crate::private_fs::create_dir_all(&opts.store.join("runs")))
        .with_context(|| format!("creating the model store {}", opts.store.display()))?;
    let mpirun = opts.mpirun.as_ref().map_or_else(|| "one-process runs only".to_string(), |m| format!("mpirun {}", m.display()));
    log::info!("worker {} polling for runs (model store {}, trainer {}, {mpirun})", opts.name, opts.store.display(), opts.trainer.display());
    loop {
        match claim_capable(&pool, &opts.name, opts.lease, opts.mpirun.is_some()).await {
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
        Ok(Ended::Lost) => {
            log::warn!("run {}: no longer ours (cancelled, or its lease passed to another worker); its trainer was stopped and nothing was published", c.id)
        }
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

/// An attempt's trainer command and what it needs to publish.
struct Prepared {
    args: Vec<String>,
    models: Vec<Resolved>,
    /// For `generate`: the source items of the prompts it samples.
    sources: Vec<String>,
}

/// One attempt: inputs, the trainer, the reward model's scores, the regression set, then
/// publishing.
async fn attempt(pool: &PgPool, opts: &WorkerOpts, c: &Claimed, f: &Fence<'_>) -> Result<Ended> {
    if c.kind == RunKind::Spotcheck {
        return Ok(if spotcheck::attempt(pool, opts, c, f).await? { Ended::Succeeded } else { Ended::Lost });
    }
    let input = RunInput::from_stored(c.kind, &c.input).map_err(anyhow::Error::msg)?;
    let plan = Plan::new(c.kind, c.project_kind);
    let run_dir = opts.store.join("runs").join(c.id.to_string());
    let dir = run_dir.join(format!("attempt-{}", c.fence));
    crate::private_fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let launch = Launch::of(c.config.as_object().unwrap_or(&Default::default())).map_err(anyhow::Error::msg)?;
    let mpirun = match (launch.uses_mpirun(), &opts.mpirun) {
        (false, _) => None,
        (true, Some(m)) => Some((m.clone(), launch)),
        (true, None) => bail!("this worker cannot launch mpirun (its trainer lacks the `mpi` feature, or there is no mpirun)"),
    };
    let prepared = prepare(pool, opts, c, f, &input, &plan, &run_dir).await?;
    let launcher = Launcher { trainer: &opts.trainer, mpirun };
    let summary = match run_child(f, &launcher, &prepared.args).await? {
        Child::Lost => return Ok(Ended::Lost),
        Child::Exited { ok: false, status, last_line, .. } => bail!("rewardlab-train {} exited with {status}: {last_line}", c.kind),
        Child::Exited { ok: true, summary, .. } => summary,
    };
    let ctx = regression::Ctx { pool, f, trainer: &opts.trainer, c, dir: &dir };
    let model = plan.output_path(&dir);
    let sweep = match c.config.get("merge_sweep").and_then(Value::as_str) {
        Some(alphas) => {
            let old = c.config.get("merge_with").and_then(Value::as_str).context("config.merge_sweep: merge_with is not set")?;
            let old = inputs::owned_store_dir(pool, c, &opts.store, "config.merge_with", old).await?;
            match regression::sweep(&ctx, &model, &old, alphas).await? {
                regression::Swept::Lost => return Ok(Ended::Lost),
                regression::Swept::Done(report) => Some(report),
            }
        }
        None => None,
    };
    let scores = match plan.scores_responses {
        true => match publish::score_responses(pool, f, &opts.trainer, c, &dir, &plan.output_path(&dir)).await? {
            Some(scores) => scores,
            None => return Ok(Ended::Lost),
        },
        false => publish::Scores::default(),
    };
    let regression = match regression::measure(&ctx, plan.kind, &model, &prepared.models).await {
        regression::Measure::Lost => return Ok(Ended::Lost),
        regression::Measure::Skipped => None,
        regression::Measure::Done(m) => Some(m),
    };
    let generated = (plan.output == Output::Generated).then(|| (&prepared.models[0], prepared.sources));
    let outcome = Outcome { plan, dir, summary, scores, generated, regression, sweep };
    Ok(if publish::publish(pool, c, outcome).await? { Ended::Succeeded } else { Ended::Lost })
}

/// Gathers the attempt's inputs (export files, models, prompts, the checkpoint to resume
/// from), records them on the run, and builds the trainer's arguments.
async fn prepare(pool: &PgPool, opts: &WorkerOpts, c: &Claimed, f: &Fence<'_>, input: &RunInput, plan: &Plan, run_dir: &Path) -> Result<Prepared> {
    let dir = run_dir.join(format!("attempt-{}", c.fence));
    let input_dir = run_dir.join("input");
    let export = inputs::ensure_export(pool, c, input, plan, f, &input_dir).await?;
    let files = inputs::materialize(pool, &export, &input_dir).await?;
    f.log(&format!("[worker] input: export {} ({}, {} rows)", export.id, export.format, export.rows())).await;
    let config = c.config.as_object().cloned().unwrap_or_default();
    let mut resolved = serde_json::Map::new();
    // What a model trains on: the export's rows, new and old (with replay_share, the new ones
    // and a seeded share of old ones).
    let files = match plan.output {
        Output::Model => {
            let (files, mix) = mixture::apply(pool, c, &export, files, &config, &input_dir).await?;
            f.log(&format!(
                "[worker] data mixture: {} new and {} old rows in the export, training on {} ({} old) from {} snapshot(s)",
                mix["rows"]["new"],
                mix["rows"]["old"],
                mix["used"]["total"],
                mix["used"]["old"],
                mix["snapshots"].as_array().map_or(0, Vec::len)
            ))
            .await;
            resolved.insert("data_mixture".into(), mix);
            files
        }
        Output::Generated => files,
    };

    let mut models = Vec::new();
    for role in plan.needs() {
        let m = inputs::resolve_model(pool, c, input, *role, &opts.store).await?;
        resolved.insert(role.key().into(), m.to_json());
        models.push(m);
    }
    // rm and sft models built from scratch share the project's tokenizer.
    let tokenizer = match plan.kind {
        RunKind::Rm | RunKind::Sft if config.get("init").is_none_or(Value::is_null) => inputs::shared_tokenizer(pool, c).await?,
        _ => None,
    };
    if let Some(t) = &tokenizer {
        f.log(&format!("[worker] tokenizer: {}'s ({})", t.label, t.dir.display())).await;
        resolved.insert("tokenizer".into(), t.to_json());
    }
    let prompts = dir.join("prompts.jsonl");
    let sources = match plan.output {
        Output::Generated => inputs::distinct_prompts(&files[0], &prompts, config_int(&config, "max_prompts", 100) as usize)?,
        Output::Model => Vec::new(),
    };
    f.set_resolved(&Value::Object(resolved)).await?;
    let resume = match plan.output {
        Output::Model => resume_from(f, run_dir, c.fence).await?,
        Output::Generated => None,
    };
    check_store_paths(pool, opts, c, &config).await?;

    let dirs: Vec<PathBuf> = models.iter().map(|m| m.dir.clone()).collect();
    let prompts = (plan.output == Output::Generated).then_some(prompts.as_path());
    let mut args = plan.input_args(&Inputs { data: &files, prompts, models: &dirs });
    args.extend(plan.output_args(&dir, resume.as_deref()));
    // A sweep merges after training itself: the trainer is not asked to merge.
    let mut flag_config = config.clone();
    if flag_config.get("merge_sweep").is_some_and(|v| !v.is_null()) {
        flag_config.remove("merge_with");
    }
    args.extend(trainer_flags(c.kind, &flag_config, &opts.store));
    if let Some(t) = &tokenizer {
        args.extend(["--tokenizer".to_string(), t.dir.display().to_string()]);
    }
    Ok(Prepared { args, models, sources })
}

/// The newest complete checkpoint an earlier attempt left, recorded on the run.
async fn resume_from(f: &Fence<'_>, run_dir: &Path, fence: i64) -> Result<Option<PathBuf>> {
    let Some(prev) = inputs::previous_checkpoint(run_dir, fence) else { return Ok(None) };
    f.log(&format!("[worker] resuming from {}", prev.display())).await;
    f.set_resumed_from(&prev.display().to_string()).await?;
    Ok(Some(prev))
}

/// The store paths of the configuration are still the project's where they are read.
async fn check_store_paths(pool: &PgPool, opts: &WorkerOpts, c: &Claimed, config: &serde_json::Map<String, Value>) -> Result<()> {
    for p in c.kind.params().into_iter().filter(|p| p.ty == ParamType::StorePath) {
        if let Some(rel) = config.get(p.name).and_then(Value::as_str) {
            inputs::owned_store_dir(pool, c, &opts.store, &format!("config.{}", p.name), rel).await?;
        }
    }
    Ok(())
}
