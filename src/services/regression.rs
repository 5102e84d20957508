//! Frozen regression sets, for a project whose lead the caller has been checked to be: freezing
//! one from a `preferences` export's test split (its held-out prompts and their comparisons,
//! copied once), choosing the active one, and the figures of the project's runs on each set in
//! creation order with drops flagged — what the page and the API show alike.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;

use super::error::{AppError, DbContext};
use crate::db::projects::Project;
use crate::db::regression::{self as db, NewSet, RegressionSet, ResultRow};
use crate::db::users::User;
use crate::domain::regression::{drops, metric, threshold, SetName, MAX_PAIRS, METRICS};
use crate::domain::runs::RunKind;
use crate::domain::{ExportId, RegressionSetId, RunId};
use crate::export::Format;

/// What a lead asks to freeze.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FreezeRequest {
    /// 1 to 80 characters, unique in the project.
    pub name: String,
    /// A `preferences` export of the project: its `test` split is frozen.
    pub export_id: String,
    /// Make it the active set (default: when the project has none yet).
    #[serde(default)]
    pub activate: Option<bool>,
}

/// The pairs of a `preferences` test file: rows with a preference (not ties, not "both bad"),
/// the first [`MAX_PAIRS`].
fn read_pairs(path: &Path) -> anyhow::Result<Vec<(String, String, String)>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for line in file.lines() {
        let row: Value = serde_json::from_str(&line?)?;
        if row["tie"] == Value::Bool(true) || row["both_bad"] == Value::Bool(true) {
            continue;
        }
        let text = |k: &str| row[k].as_str().map(str::to_string);
        if let (Some(p), Some(c), Some(r)) = (text("prompt"), text("chosen"), text("rejected")) {
            out.push((p, c, r));
        }
        if out.len() == MAX_PAIRS {
            break;
        }
    }
    Ok(out)
}

/// The threshold a query asks for, checked.
pub fn parse_threshold(text: Option<&str>) -> Result<f64, AppError> {
    let given = match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse::<f64>().map_err(|_| AppError::Invalid(format!("threshold: expected a number from 0 to 1, got {t:?}")))?),
    };
    threshold(given).map_err(AppError::Invalid)
}

fn taken(name: &SetName) -> AppError {
    AppError::Conflict(format!("name: the project already has a regression set called {:?}", name.as_str()))
}

/// Freezes the test split of one of the project's `preferences` exports as a regression set.
pub async fn freeze(pool: &PgPool, tmp_dir: &Path, p: &Project, by: &User, req: &FreezeRequest) -> Result<RegressionSet, AppError> {
    let name = SetName::parse(&req.name).map_err(AppError::Invalid)?;
    let bad_export = || AppError::Invalid(format!("export_id: expected the id of one of this project's preferences exports, got {:?}", req.export_id));
    let id: ExportId = req.export_id.trim().parse().map_err(|_| bad_export())?;
    let mut conn = pool.acquire().await?;
    let e = crate::db::exports::get(&mut conn, id).await.context("finding the export")?.filter(|e| e.project_id == p.id).ok_or_else(bad_export)?;
    if e.format() != Format::Preferences {
        return Err(AppError::Invalid(format!(
            "export_id: expected a preferences export (its test split holds the held-out prompts), got a {} export",
            e.format
        )));
    }
    let test = e.files.iter().find(|f| f.part == "test").filter(|f| f.rows > 0).cloned().ok_or_else(|| {
        AppError::Invalid("export_id: its test split is empty; take a preferences export with test_percent above 0 once the project has comparisons".into())
    })?;
    if db::name_taken(&mut conn, p.id, &name).await.context("checking the name")? {
        return Err(taken(&name));
    }
    drop(conn);
    let path = crate::export::part_file(pool, &e, &test, &tmp_dir.join("exports")).await.map_err(|e| e.context("writing the export's test file"))?;
    let pairs = read_pairs(&path).map_err(|e| e.context("reading the export's test file"))?;
    if pairs.is_empty() {
        return Err(AppError::Invalid("export_id: its test split holds no preference (only ties or \"both bad\" pairs)".into()));
    }
    let mut tx = pool.begin().await?;
    let activate = match req.activate {
        Some(a) => a,
        None => !db::has_active(&mut tx, p.id).await.context("finding the active set")?,
    };
    let new = NewSet { project: p.id, name: &name, export: e.id, pairs: &pairs, active: false, by: by.id };
    let id = match db::insert(&mut tx, &new).await {
        // Frozen meanwhile under the same name.
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => return Err(taken(&name)),
        other => other.context("freezing the set")?,
    };
    if activate {
        db::activate(&mut tx, p.id, id).await.context("activating the set")?;
    }
    tx.commit().await?;
    let mut conn = pool.acquire().await?;
    let sets = db::list(&mut conn, p.id).await.context("listing the sets")?;
    sets.into_iter().find(|s| s.id == id).ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("the set just frozen is gone")))
}

/// Makes one of the project's sets the active one.
pub async fn activate(pool: &PgPool, p: &Project, id: RegressionSetId) -> Result<(), AppError> {
    let mut tx = pool.begin().await?;
    if !db::activate(&mut tx, p.id, id).await.context("activating the set")? {
        return Err(AppError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// One run's figure, with its change from the run before.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegressionPoint {
    pub run_id: RunId,
    pub kind: RunKind,
    pub run_created_at: chrono::DateTime<chrono::Utc>,
    pub value: f64,
    /// Pairs (or prompts, for PPO) it was measured on.
    pub n: i32,
    /// The change from the previous run's value (`null` for the first).
    pub change: Option<f64>,
    /// A drop larger than the threshold.
    pub flagged: bool,
}

/// A figure across runs, in creation order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegressionSeries {
    pub metric: String,
    /// What it measures.
    pub help: String,
    /// Whether drops of it are flagged (shares are; rewards, whose scale changes, are not).
    pub flagged_metric: bool,
    pub points: Vec<RegressionPoint>,
}

/// A set and its figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegressionSetReport {
    #[serde(flatten)]
    pub set: RegressionSet,
    pub series: Vec<RegressionSeries>,
}

/// Every set of the project (newest first) with its runs' figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RegressionReport {
    /// A drop from one run to the next larger than this is flagged.
    pub threshold: f64,
    pub sets: Vec<RegressionSetReport>,
    /// Points flagged over every set.
    pub flagged: usize,
}

/// The report of the project's sets.
pub async fn report(pool: &PgPool, p: &Project, threshold: f64) -> Result<RegressionReport, AppError> {
    let mut conn = pool.acquire().await?;
    let sets = db::list(&mut conn, p.id).await.context("listing the sets")?;
    let rows = db::results(&mut conn, p.id).await.context("reading the figures")?;
    let sets: Vec<RegressionSetReport> = sets.into_iter().map(|set| RegressionSetReport { series: series_of(&rows, set.id, threshold), set }).collect();
    let flagged = sets.iter().flat_map(|s| &s.series).flat_map(|s| &s.points).filter(|p| p.flagged).count();
    Ok(RegressionReport { threshold, sets, flagged })
}

/// A set's figures: the known ones in [`METRICS`] order, then any other, each in run order.
fn series_of(rows: &[ResultRow], set: RegressionSetId, threshold: f64) -> Vec<RegressionSeries> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.set_id == set) {
        if !names.contains(&r.metric.as_str()) {
            names.push(&r.metric);
        }
    }
    let rank = |n: &str| METRICS.iter().position(|m| m.name == n).unwrap_or(METRICS.len());
    names.sort_by_key(|n| (rank(n), n.to_string()));
    names
        .into_iter()
        .map(|name| {
            let known = metric(name);
            let points: Vec<&ResultRow> = rows.iter().filter(|r| r.set_id == set && r.metric == name).collect();
            let values: Vec<f64> = points.iter().map(|r| r.value).collect();
            let flags = drops(&values, threshold, known.is_some_and(|m| m.flagged));
            RegressionSeries {
                metric: name.to_string(),
                help: known.map_or("", |m| m.help).to_string(),
                flagged_metric: known.is_some_and(|m| m.flagged),
                points: points
                    .iter()
                    .zip(flags)
                    .map(|(r, (change, flagged))| RegressionPoint {
                        run_id: r.run_id,
                        kind: r.kind,
                        run_created_at: r.run_created_at,
                        value: r.value,
                        n: r.n,
                        change,
                        flagged,
                    })
                    .collect(),
            }
        })
        .collect()
}
