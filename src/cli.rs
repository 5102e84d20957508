//! The `rewardlab` command line. Every subcommand works against the same database as `serve`
//! (DATABASE_URL, or the data directory's private cluster, started if it is not running),
//! prints what it did, and exits non-zero with a clear message on failure.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::db::{projects as dbp, users};
use crate::domain::{check_password, Email, NewProject, Overlap, Role, TokenName};
use crate::export::{Format, Options};
use crate::services::{
    self,
    accounts::{hash_password, random_secret},
};
use crate::settings::Settings;

/// Prints a line of the command's output; a reader that went away (`| head -1`) is not an
/// error worth a panic, and the command still finishes and releases what it holds.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(name = "rewardlab", version, about = "The human side of RLHF: labelling, preference datasets, training runs")]
pub struct Cli {
    /// Data directory of the private PostgreSQL cluster and the session key.
    #[arg(long, global = true, env = "REWARDLAB_DATA")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web application and the API.
    Serve {
        /// The address to listen on; 0.0.0.0:8080 serves the local network, where teammates
        /// open http://<this machine's name or address>:8080 (plain HTTP works on a LAN).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// HTTP worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Seconds between the scheduler's looks at the project schedules.
        #[arg(long, default_value_t = 15)]
        schedule_every: u64,
        /// The URL browsers use, e.g. https://labels.example.org; with https the sign-in cookies
        /// are Secure, with http they cannot be. Without it: plain cookies, and a request's
        /// Origin is checked against its Host header (a proxy must pass Host on unchanged).
        #[arg(long, env = "REWARDLAB_PUBLIC_URL")]
        public_url: Option<String>,
        /// The header a reverse proxy in front puts the client's address in (its last entry counts),
        /// e.g. X-Forwarded-For; without one, the peer address is the client's.
        #[arg(long, env = "REWARDLAB_TRUSTED_PROXY_HEADER")]
        trusted_proxy_header: Option<String>,
        /// Serve Prometheus metrics at /metrics to callers sending `Authorization: Bearer
        /// <token>` (at least 16 characters). Without it or --metrics-bind there are no metrics.
        #[arg(long, env = "REWARDLAB_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// Serve /metrics on this separate address instead (e.g. 127.0.0.1:9464), without a
        /// token unless --metrics-token is also given.
        #[arg(long, env = "REWARDLAB_METRICS_BIND")]
        metrics_bind: Option<String>,
        /// Let webhooks reach loopback, private, link-local and unique-local addresses (refused
        /// by default, so that a project lead cannot make the server call into its network).
        #[arg(long, env = "REWARDLAB_ALLOW_PRIVATE_WEBHOOKS")]
        allow_private_webhooks: bool,
        /// Seconds before a failed webhook delivery's first retry; each later retry waits twice
        /// as long (at most an hour), plus up to a quarter more at random.
        #[arg(long, default_value_t = 30.0)]
        webhook_retry_base: f64,
        /// Attempts at a webhook delivery before it is marked failed.
        #[arg(long, default_value_t = 8)]
        webhook_attempts: u32,
    },
    /// Claim queued training runs and execute them with rewardlab-train.
    Worker {
        /// Model store shared by the workers and servers [default: DATA_DIR/models].
        #[arg(long, env = "REWARDLAB_MODEL_STORE")]
        model_store: Option<PathBuf>,
        /// The rewardlab-train binary [default: beside this one, else on PATH].
        #[arg(long, env = "REWARDLAB_TRAIN")]
        trainer: Option<PathBuf>,
        /// Open MPI's mpirun, for runs on several processes [default: mpirun on PATH]; used
        /// when the trainer was built with the `mpi` feature.
        #[arg(long, env = "REWARDLAB_MPIRUN")]
        mpirun: Option<PathBuf>,
        /// Name shown on the runs page [default: host:pid].
        #[arg(long)]
        name: Option<String>,
        /// Seconds a claim lasts without a heartbeat (heartbeats come every third of it).
        #[arg(long, default_value_t = 30.0)]
        lease_secs: f64,
        /// Seconds between looks at an empty queue.
        #[arg(long, default_value_t = 2.0)]
        poll_secs: f64,
        /// Exit when the queue is empty.
        #[arg(long)]
        once: bool,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Import a JSONL file (optionally gzipped) into a project.
    Import {
        #[arg(long)]
        project: String,
        file: PathBuf,
    },
    /// Take an export snapshot and write it to a file (preferences: a directory with train.jsonl and test.jsonl).
    Export {
        #[arg(long)]
        project: String,
        #[arg(long)]
        format: String,
        #[arg(long)]
        out: PathBuf,
        /// Add `margin` to preference rows.
        #[arg(long)]
        margin: bool,
        /// Percentage of prompts in the test split of `preferences`.
        #[arg(long)]
        test_percent: Option<u8>,
    },
    /// Replay a labelled preference file through queue strategies, retraining a reward model
    /// ensemble each round, and compare held-out accuracy against labels used (no database).
    Simulate(crate::simulate::SimulateArgs),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password comes from stdin or is generated and printed once.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set an account's password (from stdin, or generated and printed once) and revoke all
    /// its sessions and API tokens.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for an account; the token is printed alone on the last line.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        kind: String,
        #[arg(long, default_value_t = 3)]
        overlap: i32,
    },
    /// Add an account to a project as lead, reviewer or labeller.
    AddMember {
        #[arg(long)]
        project: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: String,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Simulate(args) = cli.command {
        return tokio::task::spawn_blocking(move || crate::simulate::run(args)).await?;
    }
    let settings = Settings::from_env(cli.data_dir);
    if let Command::Worker { lease_secs, poll_secs, .. } = &cli.command {
        if !(*lease_secs >= 1.0 && *poll_secs > 0.0) {
            bail!("--lease-secs must be at least 1 and --poll-secs positive");
        }
    }
    // Everything that needs no database is checked before a cluster is created or started.
    let prepared = prepare(&cli.command)?;
    // Registered before anything starts, so Ctrl-C or SIGTERM at any point below lets this
    // process release the cluster it may have started.
    let mut signals = Signals::new()?;
    let (pool, cluster) = tokio::select! {
        r = settings.connect() => r?,
        _ = signals.recv() => bail!("interrupted"),
    };
    let result = match cli.command {
        Command::Serve { bind, workers, schedule_every, metrics_bind, .. } => {
            let web = prepared.web.context("no web options were prepared")?;
            let cluster = cluster.as_ref().map(|c| c.cluster());
            serve(&settings, &pool, cluster, (&bind, metrics_bind.as_deref()), workers, schedule_every, web, &mut signals).await
        }
        Command::Worker { model_store, trainer, name, lease_secs, poll_secs, once, .. } => {
            let opts = crate::jobs::worker::WorkerOpts {
                name: name.unwrap_or_else(default_worker_name),
                store: model_store.unwrap_or_else(|| settings.data_dir.join("models")),
                trainer: trainer.unwrap_or_else(crate::jobs::worker::default_trainer),
                mpirun: prepared.mpirun,
                lease: std::time::Duration::from_secs_f64(lease_secs),
                poll: std::time::Duration::from_secs_f64(poll_secs),
                once,
            };
            tokio::select! {
                r = crate::jobs::worker::run_worker(pool.clone(), opts) => r,
                _ = signals.recv() => {
                    // A run in progress is left to its lease: another worker resumes it.
                    log::info!("worker stopping");
                    Ok(())
                }
            }
        }
        command => tokio::select! {
            r = self::command(&settings, &pool, command, prepared) => r,
            _ = signals.recv() => Err(anyhow::anyhow!("interrupted; an unfinished import or export stored nothing")),
        },
    };
    // Connections a cancelled call still holds are dropped, not waited for.
    if tokio::time::timeout(std::time::Duration::from_secs(5), pool.close()).await.is_err() {
        log::warn!("closing the database connections timed out");
    }
    if let Some(cluster) = cluster {
        if tokio::task::block_in_place(|| cluster.release())? {
            log::info!("PostgreSQL stopped cleanly");
        }
    }
    result
}

/// SIGINT and SIGTERM, listened for from the start.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
    }
}

/// What a command needs from outside the database, read and checked before connecting.
#[derive(Default)]
struct Prepared {
    /// `user add`, `user reset-password`: the password and whether it was generated.
    password: Option<(String, bool)>,
    /// `serve`: the public URL and proxy settings.
    web: Option<crate::settings::WebOptions>,
    /// `worker`: the mpirun it launches data-parallel runs with, if it can.
    mpirun: Option<PathBuf>,
}

fn prepare(command: &Command) -> Result<Prepared> {
    let email = |e: &str| Email::parse(e).map(|_| ()).map_err(anyhow::Error::msg);
    let mut prepared = Prepared::default();
    match command {
        Command::Serve { public_url, trusted_proxy_header, metrics_token, allow_private_webhooks, webhook_retry_base, webhook_attempts, .. } => {
            let mut web = crate::settings::WebOptions::parse(public_url.as_deref(), trusted_proxy_header.as_deref()).map_err(anyhow::Error::msg)?;
            web.webhooks =
                crate::settings::WebhookOptions::parse(*allow_private_webhooks, *webhook_retry_base, *webhook_attempts).map_err(anyhow::Error::msg)?;
            prepared.web = Some(web.with_metrics_token(metrics_token.as_deref()).map_err(anyhow::Error::msg)?);
        }
        Command::Worker { trainer, mpirun, .. } => {
            let trainer = trainer.clone().unwrap_or_else(crate::jobs::worker::default_trainer);
            crate::jobs::worker::check_trainer(&trainer)?;
            let (mpirun, why) = crate::jobs::worker::mpirun_capability(&trainer, mpirun.as_deref())?;
            log::info!("worker: {why}");
            prepared.mpirun = mpirun;
        }
        Command::User { command: UserCommand::Add { email: e, password_stdin, .. } | UserCommand::ResetPassword { email: e, password_stdin } } => {
            email(e)?;
            prepared.password = Some(new_password(*password_stdin)?);
        }
        Command::Token { command: TokenCommand::Create { email: e, name } } => {
            email(e)?;
            TokenName::parse(name).map_err(anyhow::Error::msg)?;
        }
        Command::Project { command: ProjectCommand::Create { slug, name, kind, overlap } } => {
            new_project(slug, name, kind, *overlap)?;
        }
        Command::Project { command: ProjectCommand::AddMember { email: e, role, .. } } => {
            email(e)?;
            role.parse::<Role>().map_err(anyhow::Error::msg)?;
        }
        Command::Import { file, .. } => {
            // Not opened here: a named pipe would lose its writer.
            std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
        }
        Command::Export { format, .. } => {
            format.parse::<Format>().map_err(anyhow::Error::msg)?;
        }
        Command::Simulate(_) => {}
    }
    Ok(prepared)
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Serves until SIGINT or SIGTERM. A server using the private cluster also watches it and
/// starts it again when its postmaster dies.
#[allow(clippy::too_many_arguments)]
async fn serve(
    settings: &Settings,
    pool: &sqlx::PgPool,
    cluster: Option<&crate::cluster::Cluster>,
    (bind, metrics_bind): (&str, Option<&str>),
    workers: Option<usize>,
    schedule_every: u64,
    web: crate::settings::WebOptions,
    signals: &mut Signals,
) -> Result<()> {
    let key = settings.session_key()?;
    let token = web.metrics_token.clone();
    // With its own address, /metrics is served there instead of beside the pages.
    let mut web = web;
    if metrics_bind.is_some() {
        web.metrics_token = None;
    }
    let webhooks = web.webhooks.clone();
    let app = crate::startup::Application::build(pool.clone(), key, bind, settings.data_dir.join("tmp"), workers, web)?;
    log::info!("rewardlab serving on http://{} (port {})", bind, app.port);
    if let Some(metrics_bind) = metrics_bind {
        let (metrics, port) = crate::web::metrics::separate_server(metrics_bind, pool.clone(), app.state.quality.clone(), app.metrics.clone(), token)?;
        log::info!("metrics on http://{metrics_bind}/metrics (port {port})");
        tokio::spawn(metrics);
    }
    let handle = app.server.handle();
    let server = tokio::spawn(app.server);
    let scheduler = tokio::spawn(crate::jobs::schedule::run_scheduler(pool.clone(), std::time::Duration::from_secs(schedule_every.max(1))));
    let deliveries = tokio::spawn(crate::jobs::webhooks::run(pool.clone(), app.state.quality.clone(), webhooks));
    let supervisor = cluster.cloned().map(|c| tokio::spawn(supervise(c)));
    signals.recv().await;
    scheduler.abort();
    deliveries.abort();
    if let Some(s) = supervisor {
        s.abort();
    }
    log::info!("shutting down: stopping the server, then the database");
    handle.stop(true).await;
    let _ = server.await;
    Ok(())
}

/// Looks at the private cluster every second and starts it again when it is down.
async fn supervise(cluster: crate::cluster::Cluster) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let c = cluster.clone();
        match tokio::task::spawn_blocking(move || c.start_if_down()).await {
            Ok(Ok(true)) => log::warn!("PostgreSQL was down and has been started again"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => log::error!("PostgreSQL is down and did not start again: {e:#}"),
            Err(e) => log::error!("the PostgreSQL supervisor failed: {e}"),
        }
    }
}

async fn command(settings: &Settings, pool: &sqlx::PgPool, command: Command, prepared: Prepared) -> Result<()> {
    let mut conn = pool.acquire().await?;
    match command {
        Command::Serve { .. } | Command::Worker { .. } | Command::Simulate(_) => unreachable!("handled by run"),
        Command::User { command: UserCommand::Add { email, admin, .. } } => {
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let (password, generated) = prepared.password.context("no password was prepared")?;
            let hash = hash_password(password.clone()).await?;
            users::insert(&mut conn, &email, &hash, admin).await?.with_context(|| format!("an account with email {} exists", email.as_str()))?;
            say!("created {} {}", if admin { "admin" } else { "user" }, email.as_str());
            if generated {
                say!("password (shown once): {password}");
            }
        }
        Command::User { command: UserCommand::ResetPassword { email, .. } } => {
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let (user, _) = users::by_email(&mut conn, &email).await?.with_context(|| format!("no account has the email {}", email.as_str()))?;
            let (password, generated) = prepared.password.context("no password was prepared")?;
            services::accounts::set_password(pool, user.id, &password, true).await.context("resetting the password")?;
            say!("reset the password of {}; its sessions and API tokens are revoked", email.as_str());
            if generated {
                say!("password (shown once): {password}");
            }
        }
        Command::Token { command: TokenCommand::Create { email, name } } => {
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let (user, _) = users::by_email(&mut conn, &email).await?.with_context(|| format!("no account has the email {}", email.as_str()))?;
            let name = TokenName::parse(&name).map_err(anyhow::Error::msg)?;
            let token = services::accounts::issue_token(pool, settings.session_key()?.expose(), user.id, &name).await.context("creating the token")?;
            say!("created API token {:?} for {}", name.as_str(), email.as_str());
            say!("{token}");
        }
        Command::Project { command: ProjectCommand::Create { slug, name, kind, overlap } } => {
            let new = new_project(&slug, &name, &kind, overlap)?;
            services::projects::create(pool, None, &new).await.context("creating the project")?;
            say!("created {} project {} ({}), overlap {}", new.kind.as_str(), new.slug, new.name, new.overlap);
        }
        Command::Project { command: ProjectCommand::AddMember { project, email, role } } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            if !dbp::add_member_by_email(&mut conn, p.id, &email, role).await? {
                bail!("no account has the email {}; create it with `rewardlab user add`", email.as_str());
            }
            say!("{} is now a {} of {}", email.as_str(), role.as_str(), p.slug);
        }
        Command::Import { project, file } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            drop(conn);
            let report = import_with_progress(pool, &p, &file).await?;
            say!("{report}");
        }
        Command::Export { project, format, out, margin, test_percent } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            drop(conn);
            let format: Format = format.parse().map_err(anyhow::Error::msg)?;
            export_to_path(pool, &p, format, Options { margin, test_percent, ..Options::default() }, &out).await?;
        }
    }
    Ok(())
}

/// The project the flags describe, checked as the API and the forms check it.
fn new_project(slug: &str, name: &str, kind: &str, overlap: i32) -> Result<NewProject> {
    let mut new = NewProject::parse(slug, name, kind).map_err(anyhow::Error::msg)?;
    new.overlap = Overlap::parse(overlap).map_err(anyhow::Error::msg)?;
    Ok(new)
}

/// A checked password from stdin, or a generated one (true: print it once).
fn new_password(from_stdin: bool) -> Result<(String, bool)> {
    let (password, generated) = if from_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        (p.trim_end_matches(['\n', '\r']).to_string(), false)
    } else {
        (random_secret("")[..20].to_string(), true)
    };
    check_password(&password).map_err(anyhow::Error::msg)?;
    Ok((password, generated))
}

async fn import_with_progress(pool: &sqlx::PgPool, p: &dbp::Project, file: &std::path::Path) -> Result<crate::import::ImportReport> {
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    let read = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(size, "importing");
    let ticker = {
        let (read, bar) = (read.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(read.load(Ordering::Relaxed));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    };
    let result = crate::import::import_file(pool, p.id, p.kind, file, read).await;
    ticker.abort();
    bar.finish_and_clear();
    if let Some(mib) = peak_memory_mib() {
        log::info!("import: peak memory {mib} MiB");
    }
    result.with_context(|| format!("nothing from {} was imported", file.display()))
}

/// This process's peak resident memory (Linux `VmHWM`), in MiB.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// Writes an export: one file, or for `preferences` a directory with `train.jsonl`,
/// `test.jsonl` and `manifest.json`. Files are written under a temporary name and renamed.
async fn export_to_path(pool: &sqlx::PgPool, p: &dbp::Project, format: Format, options: Options, out: &std::path::Path) -> Result<()> {
    let started = std::time::Instant::now();
    let dir_mode = format == Format::Preferences;
    if dir_mode {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let target = |part: &str| if dir_mode { out.join(format!("{part}.jsonl")) } else { out.to_path_buf() };
    let tmp = |part: &str| {
        let t = target(part);
        t.with_file_name(format!(".{}.partial", t.file_name().and_then(|n| n.to_str()).unwrap_or("export")))
    };
    let export = crate::export::create(pool, p.id, format, options, None, |part| {
        let file = std::fs::File::create(tmp(part)).with_context(|| format!("creating {}", tmp(part).display()))?;
        Ok(tokio::io::BufWriter::new(tokio::fs::File::from_std(file)))
    })
    .await?;
    for f in &export.files {
        std::fs::rename(tmp(&f.part), target(&f.part))?;
        say!("wrote {} ({} rows, sha256 {})", target(&f.part).display(), f.rows, f.sha256);
    }
    if dir_mode {
        std::fs::write(out.join("manifest.json"), serde_json::to_vec_pretty(&export.manifest())?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    say!("export {} of {}: {} {} rows in {:.2} s ({:.0} rows/s)", export.id, p.slug, export.rows(), format, secs, export.rows() as f64 / secs.max(1e-9));
    Ok(())
}
