//! Export snapshots. An export records the PostgreSQL snapshot it was taken in
//! (`pg_current_snapshot()` inside a REPEATABLE READ transaction); judgements and items are
//! immutable and carry their creating transaction id, so replaying the same queries filtered by
//! `pg_visible_in_snapshot` gives the same bytes, with the same sha256, every time. Rows stream
//! from the database to the writer in chunks, so memory stays flat. The formats are documented
//! in `docs/export-formats.md`.

mod rows;

use std::fmt;

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
    /// Keep ties in preference rows (TRL cannot use them; dropped by default).
    #[serde(default)]
    pub include_ties: bool,
    /// Percentage of prompts that go to the test split (default 10).
    #[serde(default)]
    pub test_percent: Option<u8>,
}

/// One file of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartSummary {
    pub part: String,
    pub rows: u64,
    pub sha256: String,
}

/// An export as stored.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
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

/// Takes a snapshot, writes each part through `sink(part)` and records the export.
pub async fn create<W, F>(pool: &PgPool, project: ProjectId, format: Format, options: Options, by: Option<UserId>, mut sink: F) -> anyhow::Result<Export>
where
    W: AsyncWrite + Unpin,
    F: FnMut(&str) -> anyhow::Result<W>,
{
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&mut *tx).await?;
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
pub async fn write_part<W: AsyncWrite + Unpin>(conn: &mut PgConnection, project: ProjectId, format: Format, options: &Options, snapshot: &str, part: &str, out: &mut W) -> anyhow::Result<(u64, String)> {
    let mut w = ChunkWriter { out: Out::Write(out), hash: Some(Sha256::new()), buf: Vec::with_capacity(CHUNK * 2), rows: 0 };
    stream_rows(conn, project, format, options, snapshot, part, &mut w).await?;
    w.finish().await
}

/// Streams one part of a recorded export (its sha256 is known, so none is computed) as chunks
/// sent to `chunks`, each handed over without a copy.
pub async fn replay_part(conn: &mut PgConnection, e: &Export, part: &str, chunks: &tokio::sync::mpsc::Sender<bytes::Bytes>) -> anyhow::Result<u64> {
    let mut w: ChunkWriter<'_, tokio::io::Sink> = ChunkWriter { out: Out::Chunks(chunks), hash: None, buf: Vec::with_capacity(CHUNK * 2), rows: 0 };
    stream_rows(conn, e.project_id, e.format(), &e.options, &e.snapshot, part, &mut w).await?;
    Ok(w.finish().await?.0)
}

async fn stream_rows<W: AsyncWrite + Unpin>(conn: &mut PgConnection, project: ProjectId, format: Format, options: &Options, snapshot: &str, part: &str, w: &mut ChunkWriter<'_, W>) -> anyhow::Result<()> {
    match format {
        Format::Prompts => {
            let mut stream = sqlx::query_as::<_, rows::PromptRow>(rows::PROMPTS_SQL).bind(project).bind(snapshot).fetch(&mut *conn);
            while let Some(row) = stream.try_next().await? {
                w.rows += row.write(&mut w.buf);
                w.maybe_flush().await?;
            }
        }
        _ => {
            let mut stream = sqlx::query_as::<_, rows::JudgementRow>(rows::JUDGEMENTS_SQL).bind(project).bind(snapshot).fetch(&mut *conn);
            while let Some(row) = stream.try_next().await? {
                w.rows += row.write(format, options, part, &mut w.buf);
                w.maybe_flush().await?;
            }
        }
    }
    Ok(())
}

const CHUNK: usize = 64 * 1024;

/// Where a chunk goes: written out, or handed over whole.
enum Out<'a, W> {
    Write(&'a mut W),
    Chunks(&'a tokio::sync::mpsc::Sender<bytes::Bytes>),
}

/// Buffers rows into chunks, hashing (when asked) what it writes.
struct ChunkWriter<'a, W> {
    out: Out<'a, W>,
    hash: Option<Sha256>,
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
        if let Some(h) = &mut self.hash {
            h.update(&self.buf);
        }
        match &mut self.out {
            Out::Write(w) => {
                w.write_all(&self.buf).await?;
                self.buf.clear();
            }
            Out::Chunks(tx) => {
                if !self.buf.is_empty() {
                    let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK * 2));
                    tx.send(bytes::Bytes::from(chunk)).await.map_err(|_| anyhow::anyhow!("the download was abandoned"))?;
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<(u64, String)> {
        self.flush().await?;
        Ok((self.rows, self.hash.take().map(|h| hex::encode(h.finalize())).unwrap_or_default()))
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
    sqlx::query_as("SELECT id, project_id, format, options, snapshot::text AS snapshot, files, created_at FROM exports WHERE project_id = $1 ORDER BY created_at DESC")
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
