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
use crate::domain::{check_password, Email, Role, Slug, TaskKind, DEFAULT_FLAGS};
use crate::export::{Format, Options};
use crate::settings::Settings;
use crate::web::auth::{hash_password, keyed_hash, random_secret};

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
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// HTTP worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
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
    /// Add an account to a project as lead or labeller.
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
    let settings = Settings::from_env(cli.data_dir);
    if let Command::Serve { bind, workers } = cli.command {
        return serve(&settings, &bind, workers).await;
    }
    let (pool, cluster) = settings.connect().await?;
    let result = command(&settings, &pool, cli.command).await;
    pool.close().await;
    if let Some((cluster, true)) = cluster {
        tokio::task::block_in_place(|| cluster.stop())?;
    }
    result
}

async fn serve(settings: &Settings, bind: &str, workers: Option<usize>) -> Result<()> {
    let (pool, cluster) = settings.connect().await?;
    let key = settings.session_key()?;
    let app = crate::web::Application::build(pool.clone(), key, bind, settings.data_dir.join("tmp"), workers)?;
    log::info!("rewardlab serving on http://{} (port {})", bind, app.port);
    let handle = app.server.handle();
    let server = tokio::spawn(app.server);
    shutdown_signal().await;
    log::info!("shutting down: stopping the server, then the database");
    handle.stop(true).await;
    let _ = server.await;
    pool.close().await;
    if let Some((cluster, _)) = cluster {
        tokio::task::block_in_place(|| cluster.stop())?;
        log::info!("PostgreSQL stopped cleanly");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

async fn command(settings: &Settings, pool: &sqlx::PgPool, command: Command) -> Result<()> {
    let mut conn = pool.acquire().await?;
    match command {
        Command::Serve { .. } => unreachable!("handled by run"),
        Command::User { command: UserCommand::Add { email, admin, password_stdin } } => {
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let (password, generated) = if password_stdin {
                let mut p = String::new();
                std::io::stdin().read_to_string(&mut p)?;
                (p.trim_end_matches(['\n', '\r']).to_string(), false)
            } else {
                (random_secret("")[..20].to_string(), true)
            };
            check_password(&password).map_err(anyhow::Error::msg)?;
            let hash = hash_password(password.clone()).await?;
            users::insert(&mut conn, &email, &hash, admin).await?.with_context(|| format!("an account with email {} exists", email.as_str()))?;
            println!("created {} {}", if admin { "admin" } else { "user" }, email.as_str());
            if generated {
                println!("password (shown once): {password}");
            }
        }
        Command::Token { command: TokenCommand::Create { email, name } } => {
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let (user, _) = users::by_email(&mut conn, &email).await?.with_context(|| format!("no account has the email {}", email.as_str()))?;
            let token = random_secret("rl_");
            users::insert_token(&mut conn, user.id, &name, &keyed_hash(settings.session_key()?.expose(), &token)).await?;
            println!("created API token {name:?} for {}", email.as_str());
            println!("{token}");
        }
        Command::Project { command: ProjectCommand::Create { slug, name, kind, overlap } } => {
            let slug = Slug::parse(&slug).map_err(anyhow::Error::msg)?;
            let kind: TaskKind = kind.parse().map_err(anyhow::Error::msg)?;
            if !(1..=100).contains(&overlap) {
                bail!("--overlap must be 1 to 100, got {overlap}");
            }
            let flags = DEFAULT_FLAGS.iter().map(|s| s.to_string()).collect();
            let new = dbp::NewProject { slug: &slug, name: &name, kind, overlap, flags, allow_ties: true, rating_enabled: false, guidelines: "" };
            dbp::insert(&mut conn, &new, None).await?.with_context(|| format!("a project with slug {:?} exists", slug.as_str()))?;
            println!("created {} project {} ({name}), overlap {overlap}", kind.as_str(), slug.as_str());
        }
        Command::Project { command: ProjectCommand::AddMember { project, email, role } } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            let email = Email::parse(&email).map_err(anyhow::Error::msg)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            if !dbp::add_member_by_email(&mut conn, p.id, &email, role).await? {
                bail!("no account has the email {}; create it with `rewardlab user add`", email.as_str());
            }
            println!("{} is now a {} of {}", email.as_str(), role.as_str(), p.slug);
        }
        Command::Import { project, file } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            drop(conn);
            let report = import_with_progress(pool, &p, &file).await?;
            println!("{report}");
        }
        Command::Export { project, format, out, margin, test_percent } => {
            let p = dbp::by_slug_for_cli(&mut conn, &project).await?.with_context(|| format!("no project has the slug {project:?}"))?;
            drop(conn);
            let format: Format = format.parse().map_err(anyhow::Error::msg)?;
            export_to_path(pool, &p, format, Options { margin, include_ties: false, test_percent }, &out).await?;
        }
    }
    Ok(())
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
    result.with_context(|| format!("nothing from {} was imported", file.display()))
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
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
        println!("wrote {} ({} rows, sha256 {})", target(&f.part).display(), f.rows, f.sha256);
    }
    if dir_mode {
        let manifest = serde_json::json!({"export_id": export.id, "format": export.format, "schema_version": crate::export::SCHEMA_VERSION,
            "created_at": export.created_at, "options": export.options, "files": export.files});
        std::fs::write(out.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("export {} of {}: {} {} rows in {:.2} s ({:.0} rows/s)", export.id, p.slug, export.rows(), format, secs, export.rows() as f64 / secs.max(1e-9));
    Ok(())
}
