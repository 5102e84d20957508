//! The runs pages: the list with the start-a-run and schedule forms, a page per run (live
//! status, charts, log tail, model files, cancel), and two runs' curves side by side.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use super::pages::{html, redirect, CsrfOnly, Layout};
use crate::db::projects::Project;
use crate::db::runs::{self as dbr, Run};
use crate::db::schedules::{self as dbs, Schedule};
use crate::domain::runs::{RunKind, RunSpec, RunStatus, RUN_KINDS};
use crate::domain::{Role, RunId, ScheduleId};
use crate::routes::projects::tabs::TabBar;
use crate::services::runs::{self as service, ScheduleRequest};
use crate::web::auth::Auth;
use crate::web::chart::{charts, fmt_num, Chart};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

/// A hyperparameter as the runs page lists it: name, default, help, range.
pub type ParamRow = (&'static str, String, &'static str, String);

#[derive(Template)]
#[template(path = "projects/runs.html")]
pub struct RunsPage {
    pub layout: Layout,
    pub project: Project,
    pub tabs: TabBar,
    /// Each run with its latest headline metric.
    pub runs: Vec<(Run, String)>,
    pub kinds: [RunKind; 5],
    pub params: Vec<(&'static str, Vec<ParamRow>)>,
    pub schedules: Vec<Schedule>,
}

#[derive(Template)]
#[template(path = "run.html")]
pub struct RunPage {
    pub layout: Layout,
    pub run: Run,
    pub charts: Vec<Chart>,
    pub log: Vec<String>,
    pub files: Vec<(String, String)>,
    pub others: Vec<Run>,
}

#[derive(Template)]
#[template(path = "run_live.html")]
pub struct RunLive {
    pub run: Run,
    pub charts: Vec<Chart>,
    pub log: Vec<String>,
}

#[derive(Template)]
#[template(path = "compare.html")]
pub struct ComparePage {
    pub layout: Layout,
    pub slug: String,
    pub a: Run,
    pub b: Run,
    pub charts: Vec<Chart>,
}

/// The headline of a run for the list: its last loss, accuracy or score.
fn headline(last: &serde_json::Map<String, Value>) -> String {
    ["eval.accuracy", "eval.loss", "iteration.score", "iteration.kl", "step.loss"]
        .iter()
        .filter_map(|k| last.get(*k).and_then(Value::as_f64).map(|v| format!("{k} {}", fmt_num(v))))
        .take(2)
        .collect::<Vec<_>>()
        .join(" · ")
}

pub async fn list(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>) -> Result<HttpResponse, PageError> {
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    let list = dbr::list(&mut conn, p.id, 100).await?;
    let last = dbr::last_values(&mut conn, &list.iter().map(|r| r.id).collect::<Vec<RunId>>()).await?;
    let runs = list
        .into_iter()
        .map(|r| {
            let h = last.get(&r.id).map(headline).unwrap_or_default();
            (r, h)
        })
        .collect();
    let params = RUN_KINDS
        .iter()
        .map(|k| {
            let ps = k.params().into_iter().map(|p| (p.name, p.default.to_string().replace("null", "unset"), p.help, p.ty.describe())).collect();
            (k.as_str(), ps)
        })
        .collect();
    let schedules = dbs::list(&mut conn, p.id).await?;
    Ok(html(&RunsPage { layout: Layout::of(&auth), tabs: TabBar::new(&p, "runs"), project: p, runs, kinds: RUN_KINDS, params, schedules }))
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    csrf: String,
    kind: String,
    #[serde(default)]
    config: String,
    #[serde(default)]
    input: String,
}

fn json_field(name: &str, text: &str) -> Result<Value, AppError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(t).map_err(|e| AppError::Invalid(format!("{name}: not valid JSON ({e})")))
}

pub async fn start(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<StartForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (config, input) = (json_field("config", &form.config)?, json_field("input", &form.input)?);
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let spec = RunSpec::parse(&form.kind, &config, &input, p.kind).map_err(AppError::Invalid)?;
    let mut conn = state.pool.acquire().await?;
    let id = service::start_run(&mut conn, &p, auth.user.id, spec).await.map_err(AppError::from)?;
    Ok(redirect(&format!("/projects/{slug}/runs/{id}")))
}

#[derive(Deserialize)]
pub struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    cron: String,
    #[serde(default)]
    min_new_comparisons: String,
    chain: String,
}

pub async fn add_schedule(state: web::Data<AppState>, auth: Auth, slug: web::Path<String>, form: web::Form<ScheduleForm>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let min = match form.min_new_comparisons.trim() {
        "" => None,
        t => Some(t.parse().map_err(|_| AppError::Invalid(format!("min_new_comparisons: expected a whole number, got {t:?}")))?),
    };
    let chain = serde_json::from_value(json_field("chain", &form.chain)?)
        .map_err(|e| AppError::Invalid(format!("chain: expected a list of {{\"kind\", \"config\"?}} ({e})")))?;
    let req = ScheduleRequest { cron: Some(form.cron.clone()), min_new_comparisons: min, chain };
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let mut conn = state.pool.acquire().await?;
    service::create_schedule(&mut conn, &p, auth.user.id, &req).await.map_err(AppError::from)?;
    Ok(redirect(&format!("/projects/{slug}/runs")))
}

pub async fn delete_schedule(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    let (slug, id) = path.into_inner();
    let p = crate::services::project(&state.pool, &auth.user, &slug, Role::Lead).await?;
    let id: ScheduleId = id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    if !dbs::delete(&mut conn, p.id, id).await? {
        return Err(AppError::NotFound.into());
    }
    Ok(redirect(&format!("/projects/{slug}/runs")))
}

/// The run if the caller leads its project and it belongs to `slug`.
async fn lead_run(state: &AppState, auth: &Auth, slug: &str, id: &str) -> Result<Run, AppError> {
    let id: RunId = id.parse().map_err(|_| AppError::NotFound)?;
    let mut conn = state.pool.acquire().await?;
    dbr::get_for_lead(&mut conn, id, auth.user.id).await?.filter(|r| r.slug == slug).ok_or(AppError::NotFound)
}

async fn live_parts(state: &AppState, run: &Run) -> Result<(Vec<Chart>, Vec<String>), AppError> {
    let mut conn = state.pool.acquire().await?;
    let metrics = dbr::metrics(&mut conn, run.id).await?;
    let log = dbr::log_tail(&mut conn, run.id, 200).await?;
    Ok((charts(&[(String::new(), &metrics)]), log))
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
    let (charts, log) = live_parts(&state, &run).await?;
    let files = model_files(&run);
    let mut conn = state.pool.acquire().await?;
    let others = dbr::list(&mut conn, run.project_id, 100).await?.into_iter().filter(|r| r.id != run.id).collect();
    Ok(html(&RunPage { layout: Layout::of(&auth), run, charts, log, files, others }))
}

pub async fn live(state: web::Data<AppState>, auth: Auth, path: web::Path<(String, String)>) -> Result<HttpResponse, PageError> {
    let (slug, id) = path.into_inner();
    let run = lead_run(&state, &auth, &slug, &id).await?;
    let (charts, log) = live_parts(&state, &run).await?;
    Ok(html(&RunLive { run, charts, log }))
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
