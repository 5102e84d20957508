//! Export snapshots. An export records the PostgreSQL snapshot it was taken in
//! (`pg_current_snapshot()` inside a REPEATABLE READ transaction); judgements and items are
//! immutable and carry their creating transaction id, so replaying the same queries filtered by
//! `pg_visible_in_snapshot` gives the same bytes, with the same sha256, every time. Rows stream
//! from the database to the writer in chunks, so memory stays flat. A download is served from
//! a file the snapshot was written to once ([`part_file`]), so a slow client never holds a
//! database connection. The formats are documented in `docs/export-formats.md`.

mod quality;
mod rows;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::domain::{ExportId, ProjectId, UserId};

pub use rows::{prompt_string, SCHEMA_VERSION};

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Comparisons,
    Preferences,
    Sft,
    Prompts,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "comparisons" => Ok(Self::Comparisons),
            "preferences" => Ok(Self::Preferences),
            "sft" => Ok(Self::Sft),
            "prompts" => Ok(Self::Prompts),
            _ => Err(format!("format must be comparisons, preferences, sft or prompts, not {s:?}")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Comparisons => "comparisons",
            Self::Preferences => "preferences",
            Self::Sft => "sft",
            Self::Prompts => "prompts",
        })
    }
}

impl Format {
    /// The files one export of this format consists of.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Self::Preferences => &["train", "test"],
            _ => &["all"],
        }
    }
}

/// Options of an export; stored with it so a download replays it exactly.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// Add `margin` (the pairwise strength, or the rank difference) to preference rows.
    #[serde(default)]
    pub margin: bool,
    /// Keep ties in preference rows, marked by a `tie` column (TRL cannot use them; dropped by default).
    #[serde(default)]
    pub include_ties: bool,
    /// Keep pairs a labeller marked "both bad" in preference rows, marked by a `both_bad`
    /// column (dropped by default: neither response is one to prefer).
    #[serde(default)]
    pub include_both_bad: bool,
    /// Percentage of prompts that go to the test split of `preferences` (0 to 90; default 10,
    /// recorded as 10 when the export is taken).
    #[serde(default)]
    pub test_percent: Option<u8>,
    /// The revision of the row writer that took the export (set when it is taken); a download
    /// replays with the same one, so an export taken before an upgrade keeps its bytes. 1:
    /// before provenance columns, tie/both_bad markers and best-ranked SFT targets; 2: now.
    #[serde(default = "first_revision")]
    pub revision: u32,
    /// Leave out the work of labellers who were paused when the export was taken (their ids
    /// are recorded in `excluded_labellers`, so a replay leaves out the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_paused: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_labellers: Vec<UserId>,
    /// Keep only items whose agreement (Kendall's W of their labellers, 0 to 1) is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// One preference per item and response pair, from all of the item's judgements, instead
    /// of one per judgement (comparisons and preferences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// How an item's overlapping judgements become one preference per response pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The response more judgements put above the other; a tie when as many say each.
    Majority,
    /// The order of Bradley–Terry strengths fitted to the item's comparisons (ties as half wins).
    BradleyTerry,
}

impl<'de> serde::Deserialize<'de> for Aggregate {
    /// By name; anything else is an error naming the field (a flattened body loses the path).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "majority" => Ok(Self::Majority),
            "bradley_terry" => Ok(Self::BradleyTerry),
            other => Err(serde::de::Error::custom(format!("aggregate: expected \"majority\" or \"bradley_terry\", got {other:?}"))),
        }
    }
}

/// The revision new exports are written with. 3: comparison rows carry the labeller's gold
/// score and the item's agreement; the quality options.
pub const REVISION: u32 = 3;
pub const DEFAULT_TEST_PERCENT: u8 = 10;
pub const MAX_TEST_PERCENT: u8 = 90;

fn first_revision() -> u32 {
    1
}

impl Options {
    /// The options an export of `format` is taken with: checked, with the effective defaults
    /// filled in (so the record and manifest say what was used). Errors name the field.
    pub fn checked(mut self, format: Format) -> Result<Self, String> {
        if let Some(t) = self.test_percent.filter(|t| *t > MAX_TEST_PERCENT) {
            return Err(format!("test_percent: expected 0 to {MAX_TEST_PERCENT} (the share of prompts held out for testing), got {t}"));
        }
        if format == Format::Preferences {
            self.test_percent.get_or_insert(DEFAULT_TEST_PERCENT);
        }
        if let Some(m) = self.min_agreement.filter(|m| !(0.0..=1.0).contains(m)) {
            return Err(format!("min_agreement: expected an agreement (Kendall's W) from 0 to 1, got {m}"));
        }
        if self.aggregate.is_some() && !matches!(format, Format::Comparisons | Format::Preferences) {
            return Err(format!("aggregate: only comparisons and preferences exports aggregate judgements, not {format}"));
        }
        // Filled from the database when the export is taken, never from the caller.
        self.excluded_labellers.clear();
        self.revision = REVISION;
        Ok(self)
    }
}

/// One file of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartSummary {
    pub part: String,
    pub rows: u64,
    pub sha256: String,
}

/// An export as stored; serialized with its `schema_version` and `features` (see [`schema`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Export {
    pub id: ExportId,
    pub project_id: ProjectId,
    pub format: String,
    #[sqlx(json)]
    pub options: Options,
    pub snapshot: String,
    #[sqlx(json)]
    pub files: Vec<PartSummary>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Export {
    pub fn format(&self) -> Format {
        self.format.parse().unwrap_or(Format::Comparisons)
    }
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

impl serde::Serialize for Export {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Export", 10)?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("project_id", &self.project_id)?;
        m.serialize_field("format", &self.format)?;
        m.serialize_field("schema_version", &SCHEMA_VERSION)?;
        m.serialize_field("options", &self.options)?;
        m.serialize_field("snapshot", &self.snapshot)?;
        m.serialize_field("files", &self.files)?;
        m.serialize_field("created_at", &self.created_at)?;
        m.serialize_field("features", &schema::features(self.format(), &self.options))?;
        m.end()
    }
}

/// Takes a snapshot, writes each part through `sink(part)` and records the export. The
/// options are checked here (see [`Options::checked`]), whoever calls.
pub async fn create<W, F>(pool: &PgPool, project: ProjectId, format: Format, options: Options, by: Option<UserId>, mut sink: F) -> anyhow::Result<Export>
where
    W: AsyncWrite + Unpin,
    F: FnMut(&str) -> anyhow::Result<W>,
{
    let options = options.checked(format).map_err(anyhow::Error::msg)?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
    let mut options = options;
    if options.exclude_paused {
        options.excluded_labellers = crate::db::quality::paused_labellers(&mut tx, project).await?;
    }
    let mut files = Vec::new();
    for part in format.parts() {
        let mut out = sink(part)?;
        let (rows, sha256) = write_part(&mut tx, project, format, &options, &snapshot, part, &mut out).await?;
        out.flush().await?;
        files.push(PartSummary { part: part.to_string(), rows, sha256 });
    }
    let export: Export = sqlx::query_as(
        "INSERT INTO exports (id, project_id, format, options, snapshot, files, created_by) VALUES ($1, $2, $3, $4, $5::pg_snapshot, $6, $7)
         RETURNING id, project_id, format, options, snapshot::text AS snapshot, files, created_at",
    )
    .bind(ExportId::new())
    .bind(project)
    .bind(format.to_string())
    .bind(sqlx::types::Json(&options))
    .bind(&snapshot)
    .bind(sqlx::types::Json(&files))
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(export)
}

/// Writes one part of an export as of `snapshot`; returns its row count and sha256.
pub async fn write_part<W: AsyncWrite + Unpin>(
    conn: &mut PgConnection,
    project: ProjectId,
    format: Format,
    options: &Options,
    snapshot: &str,
    part: &str,
    out: &mut W,
) -> anyhow::Result<(u64, String)> {
    let mut w = ChunkWriter { out, hash: Sha256::new(), buf: Vec::with_capacity(CHUNK * 2), rows: 0 };
    stream_rows(conn, project, format, options, snapshot, part, &mut w).await?;
    w.finish().await
}

/// Where part `part` of export `e` is kept under `dir`.
pub fn part_path(dir: &Path, e: &Export, part: &str) -> PathBuf {
    dir.join(format!("{}-{part}.jsonl", e.id))
}

/// The file holding `part` of a recorded export, under `dir`: normally written as the snapshot
/// was taken; when it is missing, written from the snapshot now, checked against the recorded
/// sha256, then kept (0600). One file is written at a time, so downloads hold at most one pool
/// connection, and that only for as long as the disk takes, never for a client's pace.
pub async fn part_file(pool: &PgPool, e: &Export, part: &PartSummary, dir: &Path) -> anyhow::Result<PathBuf> {
    static WRITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let path = part_path(dir, e, &part.part);
    if tokio::fs::try_exists(&path).await? {
        return Ok(path);
    }
    let _one = WRITING.acquire().await?;
    if tokio::fs::try_exists(&path).await? {
        return Ok(path);
    }
    tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).await?;
    replay_to(pool, e, part, &path).await?;
    Ok(path)
}

/// Writes `part` of a recorded export to `path` (0600) from its snapshot, checked against the
/// recorded sha256: into a temporary file beside it, synced, then renamed, so `path` only ever
/// holds the whole, right bytes.
pub async fn replay_to(pool: &PgPool, e: &Export, part: &PartSummary, path: &Path) -> anyhow::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("export");
    let tmp = path.with_file_name(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()));
    let written = async {
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).await?;
        let mut out = tokio::io::BufWriter::new(file);
        let mut conn = pool.acquire().await?;
        let (_, sha) = write_part(&mut conn, e.project_id, e.format(), &e.options, &e.snapshot, &part.part, &mut out).await?;
        drop(conn);
        out.flush().await?;
        out.into_inner().sync_all().await?;
        anyhow::ensure!(sha == part.sha256, "export {} part {} replayed with sha256 {sha}, recorded {}", e.id, part.part, part.sha256);
        Ok(())
    }
    .await;
    if let Err(err) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(err);
    }
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

async fn stream_rows<W: AsyncWrite + Unpin>(
    conn: &mut PgConnection,
    project: ProjectId,
    format: Format,
    options: &Options,
    snapshot: &str,
    part: &str,
    w: &mut ChunkWriter<'_, W>,
) -> anyhow::Result<()> {
    match format {
        Format::Prompts => {
            let mut stream = sqlx::query_as::<_, rows::PromptRow>(rows::PROMPTS_SQL).bind(project).bind(snapshot).fetch(&mut *conn);
            while let Some(row) = stream.try_next().await? {
                w.rows += row.write(&mut w.buf);
                w.maybe_flush().await?;
            }
        }
        _ => {
            let ctx = if options.revision >= 3 { quality::Context::load(conn, project, snapshot, options).await? } else { quality::Context::default() };
            let sql = if options.aggregate.is_some() { rows::JUDGEMENTS_BY_ITEM_SQL } else { rows::JUDGEMENTS_SQL };
            let mut stream = sqlx::query_as::<_, rows::JudgementRow>(sql).bind(project).bind(snapshot).fetch(&mut *conn);
            let mut group: Vec<rows::JudgementRow> = Vec::new();
            while let Some(row) = stream.try_next().await? {
                if !ctx.keeps(row.user_id(), row.item_id()) {
                    continue;
                }
                match options.aggregate {
                    Some(method) => {
                        if group.last().is_some_and(|g| g.item_id() != row.item_id()) {
                            w.rows += rows::write_aggregate(&group, method, format, options, part, ctx.agreement(group[0].item_id()), &mut w.buf);
                            group.clear();
                            w.maybe_flush().await?;
                        }
                        group.push(row);
                    }
                    None => {
                        w.rows += row.write(format, options, part, ctx.of(&row), &mut w.buf);
                        w.maybe_flush().await?;
                    }
                }
            }
            if let (Some(method), Some(first)) = (options.aggregate, group.first()) {
                w.rows += rows::write_aggregate(&group, method, format, options, part, ctx.agreement(first.item_id()), &mut w.buf);
            }
        }
    }
    Ok(())
}

const CHUNK: usize = 64 * 1024;

/// Buffers rows into chunks, hashing what it writes.
struct ChunkWriter<'a, W> {
    out: &'a mut W,
    hash: Sha256,
    buf: Vec<u8>,
    rows: u64,
}

impl<W: AsyncWrite + Unpin> ChunkWriter<'_, W> {
    async fn maybe_flush(&mut self) -> anyhow::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.hash.update(&self.buf);
        self.out.write_all(&self.buf).await?;
        self.buf.clear();
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<(u64, String)> {
        self.flush().await?;
        Ok((self.rows, hex::encode(self.hash.finalize())))
    }
}

/// An export of a project the caller leads (or any, for an admin); scoped in the query.
pub async fn get_for_lead(conn: &mut PgConnection, id: ExportId, user: UserId) -> sqlx::Result<Option<Export>> {
    sqlx::query_as(
        "SELECT e.id, e.project_id, e.format, e.options, e.snapshot::text AS snapshot, e.files, e.created_at FROM exports e
         JOIN users u ON u.id = $2
         WHERE e.id = $1 AND (u.is_admin OR EXISTS (SELECT 1 FROM memberships m WHERE m.project_id = e.project_id AND m.user_id = u.id AND m.role = 'lead'))",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(conn)
    .await
}

pub async fn list(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Export>> {
    sqlx::query_as(
        "SELECT id, project_id, format, options, snapshot::text AS snapshot, files, created_at FROM exports WHERE project_id = $1 ORDER BY created_at DESC",
    )
    .bind(project)
    .fetch_all(conn)
    .await
}

/// An export by id, unscoped: for the worker, which acts for the project that queued the run.
pub async fn get(conn: &mut PgConnection, id: ExportId) -> sqlx::Result<Option<Export>> {
    sqlx::query_as("SELECT id, project_id, format, options, snapshot::text AS snapshot, files, created_at FROM exports WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}
