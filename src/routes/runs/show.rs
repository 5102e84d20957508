//! A run's page (status, progress and time left, the charts a lead reads first and the rest
//! folded, log tail, model files, cancel), the live fragment it polls, a model file's download,
//! and two runs' curves side by side.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::lead_run;
use crate::db::runs::{self as dbr, Run};
use crate::domain::runs::launch::Launch;
use crate::domain::runs::progress::Progress;
use crate::domain::runs::throughput::Throughput;
use crate::domain::runs::{RunKind, RunStatus};
use crate::routes::pages::{html, redirect, CsrfOnly, Layout};
use crate::web::auth::Auth;
use crate::web::chart::{charts, split, Chart};
use crate::web::error::{AppError, PageError};
use crate::web::watch_chart::WatchSection;
use crate::web::AppState;

#[derive(Template)]
#[template(path = "projects/run.html")]
pub struct RunPage {
    pub layout: Layout,
    pub run: Run,
    pub live: Live,
    pub files: Vec<(String, String)>,
    pub others: Vec<Run>,
    /// The data mixture's table (snapshot, taken, rows, trained on, new/old) and its sentence.
    pub mixture: Vec<[String; 5]>,
    pub mixture_note: Option<String>,
    /// A merge sweep's rows (α, accuracy, mean margin, kept) and its sentence.
    pub sweep: Vec<[String; 4]>,
    pub sweep_note: Option<String>,
    /// The figures on the regression set (set, figure, value, n).
    pub regression: Vec<[String; 4]>,
    /// A spot check's watchdog figures and charts.
    pub watch: Option<WatchSection>,
}

/// A merge sweep's table and sentence, from the run's summary.
fn sweep_table(summary: &serde_json::Value) -> (Vec<[String; 4]>, Option<String>) {
    let s = &summary["merge_sweep"];
    let Some(results) = s["results"].as_array() else { return (Vec::new(), None) };
    let num = |v: &serde_json::Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.4}"));
    let rows = results
        .iter()
        .map(|r| [r["alpha"].to_string(), num(&r["accuracy"]), num(&r["margin"]), if r["alpha"] == s["best_alpha"] { "kept".into() } else { String::new() }])
        .collect();
    let note = format!(
        "Merged with {} at each α (θ = (1 − α)·θ_new + α·θ_old), measured on the regression set {} ({} pairs: {}); kept α {}: {}.",
        s["old"].as_str().unwrap_or("the earlier model"),
        s["set"],
        s["pairs"],
        s["metric"].as_str().unwrap_or_default(),
        s["best_alpha"],
        s["rule"].as_str().unwrap_or("the highest accuracy")
    );
    (rows, Some(note))
}

/// The run's figures on the regression set, from its summary.
fn regression_table(summary: &serde_json::Value) -> Vec<[String; 4]> {
    let r = &summary["regression"];
    let Some(figures) = r["figures"].as_object() else { return Vec::new() };
    let set = r["set"].as_str().unwrap_or_default();
    figures.iter().map(|(k, v)| [set.to_string(), k.clone(), v["value"].as_f64().map_or("–".into(), |x| format!("{x:.4}")), v["n"].to_string()]).collect()
}

#[derive(Template)]
#[template(path = "projects/run_live.html")]
pub struct RunLive {
    pub run: Run,
    pub live: Live,
}

/// What the run page refreshes while the run is active.
pub struct Live {
    pub progress: Option<Progress>,
    /// Steps, or PPO iterations.
    pub unit: &'static str,
    /// The charts a lead reads first (loss, accuracy, reward, KL), and the rest.
    pub charts: Vec<Chart>,
    pub more: Vec<Chart>,
    pub log: Vec<String>,
    /// "2 processes on node1,node2": what the run asks for.
    pub ranks: String,
    /// Its recent speed, once it has trained a step.
    pub throughput: Option<String>,
}

impl Live {
    /// The progress bar's value from 0 to 1000, when the plan is known.
    pub fn permille(&self) -> Option<i64> {
        self.progress.as_ref().and_then(Progress::fraction).map(|f| (f * 1000.0).round() as i64)
    }
}

#[derive(Template)]
#[template(path = "projects/compare.html")]
pub struct ComparePage {
    pub layout: Layout,
    pub slug: String,
    pub a: Run,
    pub b: Run,
    pub charts: Vec<Chart>,
}

async fn live_parts(state: &AppState, run: &Run) -> Result<Live, AppError> {
    let mut conn = state.pool.acquire().await?;
    let metrics = dbr::metrics(&mut conn, run.id).await?;
    let log = dbr::log_tail(&mut conn, run.id, 200).await?;
    let progress = dbr::pace(&mut conn, run.id).await?.map(|p| Progress::from_pace(p, run.status == RunStatus::Succeeded));
    let unit = if run.kind == RunKind::Ppo { "iterations" } else { "steps" };
    let launch = run.config.as_object().and_then(|c| Launch::of(c).ok()).unwrap_or(Launch::SINGLE);
    let steps = metrics.iter().filter(|m| m.event == "step" || m.event == "iteration").map(|m| &m.data);
    let throughput = Throughput::from_metrics(steps, launch.processes).map(|t| t.summary());
    let (charts, more) = split(charts(&[(String::new(), &metrics)]));
    Ok(Live { progress, unit, charts, more, log, ranks: launch.describe(), throughput })
}

/// A succeeded run's own output as its worker recorded it (`…/runs/<id>/attempt-<n>/model`,
/// or `…/generated.jsonl` for a generate run), and nothing else.
fn own_output(run: &Run) -> Option<&std::path::Path> {
    let path = std::path::Path::new(run.model_dir.as_deref().filter(|_| run.status == RunStatus::Succeeded)?);
    let mut back = path.iter().rev().map(|c| c.to_str());
    let (last, attempt, id, runs) = (back.next()??, back.next()??, back.next()??, back.next()??);
    let own = matches!(last, "model" | "generated.jsonl") && attempt.starts_with("attempt-") && id == run.id.to_string() && runs == "runs";
    own.then_some(path)
}

/// Top-level files of a finished run's model directory, with their sizes.
fn model_files(run: &Run) -> Vec<(String, String)> {
    let Some(path) = own_output(run) else { return Vec::new() };
    let entries: Vec<std::path::PathBuf> = if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        std::fs::read_dir(path).map(|it| it.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
    };
    let mut files: Vec<(String, String)> = entries
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::symlink_metadata(&p).ok().filter(|m| m.is_file())?;
            let name = p.file_name()?.to_str()?.to_string();
            Some((name, format!("{:.1} kB", meta.len() as f64 / 1000.0)))
        })
        .collect();
    files.sort();
    files
}

pub async fn show(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, id) = path.into_inner();
    let run = lead_run(&state, &auth, &slug, &id).await?;
    let live = live_parts(&state, &run).await?;
    let files = model_files(&run);
    let mut conn = state.pool.acquire().await?;
    let others = dbr::list(&mut conn, run.project_id, 100).await?.into_iter().filter(|r| r.id != run.id).collect();
    let mix = &run.input["resolved"]["data_mixture"];
    let mixture = crate::domain::runs::mixture::table(mix);
    let mixture_note = mix["used"]["total"].as_u64().map(|total| {
        let pct = |v: &serde_json::Value| format!("{:.0}%", v.as_f64().unwrap_or(0.0) * 100.0);
        let replay = mix["replay_share"].as_f64().map_or("the whole export".to_string(), |r| format!("replay share {r}, seed {}", mix["seed"]));
        format!("Trained on {total} rows: {} new, {} old ({replay}).", pct(&mix["share"]["new"]), pct(&mix["share"]["old"]))
    });
    let summary = run.summary.clone().unwrap_or_default();
    let (sweep, sweep_note) = sweep_table(&summary);
    let regression = regression_table(&summary);
    // A spot check shows its watchdog; a PPO run, its newest spot check's.
    let spot = match run.kind {
        RunKind::Spotcheck => Some(run.clone()),
        RunKind::Ppo => match crate::db::spotcheck::newest_of(&mut conn, run.project_id, run.id).await? {
            Some(id) => dbr::get_for_lead(&mut conn, id, auth.user.id).await?,
            None => None,
        },
        _ => None,
    };
    let watch = match spot {
        Some(s) => Some(WatchSection::of(crate::services::watchdog::figures(&mut conn, &s).await?)),
        None => None,
    };
    Ok(html(&RunPage { layout: Layout::of(&auth), run, live, files, others, mixture, mixture_note, sweep, sweep_note, regression, watch }))
}

pub async fn live(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, id) = path.into_inner();
    let run = lead_run(&state, &auth, &slug, &id).await?;
    let live = live_parts(&state, &run).await?;
    Ok(html(&RunLive { run, live }))
}

pub async fn cancel(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let run = lead_run(&state, &auth, &slug, &id).await?;
    let mut conn = state.pool.acquire().await?;
    dbr::cancel(&mut conn, run.id, auth.user.id).await?;
    Ok(redirect(&format!("/projects/{slug}/runs/{}", run.id)))
}

/// Streams one file of a succeeded run's model directory; only names in its listing are served.
pub async fn file(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, id, name) = path.into_inner();
    let run = lead_run(&state, &auth, &slug, &id).await?;
    if !model_files(&run).iter().any(|(n, _)| *n == name) {
        return Err(AppError::NotFound.into());
    }
    let dir = own_output(&run).ok_or(AppError::NotFound)?.to_path_buf();
    let full = if dir.is_file() { dir } else { dir.join(&name) };
    let file = tokio::fs::File::open(&full).await.map_err(|_| AppError::NotFound)?;
    let len = file.metadata().await.map_err(anyhow::Error::from)?.len();
    let body = crate::web::byte_stream(file);
    let safe: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{safe}\"")))
        .insert_header(("Content-Length", len.to_string()))
        .streaming(body))
}

#[derive(Deserialize)]
pub struct CompareQuery {
    a: String,
    b: String,
}

pub async fn compare(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, q: web::Query<CompareQuery>) -> Result<HttpResponse, PageError> {
    let a = lead_run(&state, &auth, &slug, &q.a).await?;
    let b = lead_run(&state, &auth, &slug, &q.b).await?;
    let mut conn = state.pool.acquire().await?;
    let (ma, mb) = (dbr::metrics(&mut conn, a.id).await?, dbr::metrics(&mut conn, b.id).await?);
    let charts = charts(&[(a.short(), &ma), (b.short(), &mb)]);
    Ok(html(&ComparePage { layout: Layout::of(&auth), slug: slug.into_inner(), a, b, charts }))
}
