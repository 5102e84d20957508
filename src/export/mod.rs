//! Export snapshots. An export records the PostgreSQL snapshot it was taken in
//! (`pg_current_snapshot()` inside a REPEATABLE READ transaction); judgements and items are
//! immutable and carry their creating transaction id, so replaying the same queries filtered by
//! `pg_visible_in_snapshot` gives the same bytes, with the same sha256, every time. Rows stream
//! from the database to the writer in chunks, so memory stays flat. A download is served from
//! a file the snapshot was written to once ([`part_file`]), so a slow client never holds a
//! database connection. The formats are documented in `docs/export-formats.md`.

mod quality;
mod rows;

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::db::exports as db;
use crate::db::exports::JudgementRow;
use crate::domain::{ProjectId, UserId};

pub use crate::domain::export::{schema, Aggregate, Export, Format, Options, PartSummary, DEFAULT_TEST_PERCENT, MAX_TEST_PERCENT, SCHEMA_VERSION};
pub use rows::prompt_string;

/// Takes a snapshot, writes each part through `sink(part)` and records the export. The
/// options are checked here (see [`Options::checked`]), whoever calls.
pub async fn create<W, F>(pool: &PgPool, project: ProjectId, format: Format, options: Options, by: Option<UserId>, mut sink: F) -> anyhow::Result<Export>
where
    W: AsyncWrite + Unpin,
    F: FnMut(&str) -> anyhow::Result<W>,
{
    let options = options.checked(format).map_err(anyhow::Error::msg)?;
    let mut tx = pool.begin().await?;
    let snapshot = db::snapshot(&mut tx).await?;
    crate::db::plan_for_arguments(&mut tx).await?;
    let mut options = options;
    if options.exclude_paused {
        options.excluded_labellers = crate::db::quality::paused_labellers(&mut tx, project).await?;
    }
    // Every part in one pass over the rows (the preferences' train and test split them).
    let mut outs = format.parts().iter().map(|part| sink(part)).collect::<anyhow::Result<Vec<W>>>()?;
    let mut writers: Vec<(&str, ChunkWriter<'_, W>)> = format.parts().iter().copied().zip(outs.iter_mut().map(ChunkWriter::new)).collect();
    stream_rows(pool, &mut tx, project, format, &options, &snapshot, &mut writers).await?;
    let mut files = Vec::new();
    for (part, w) in writers {
        let (rows, sha256) = w.finish().await?;
        files.push(PartSummary { part: part.to_string(), rows, sha256 });
    }
    for out in &mut outs {
        out.flush().await?;
    }
    let export = db::insert(&mut tx, project, format, &options, &snapshot, &files, by).await?;
    tx.commit().await?;
    Ok(export)
}

/// Writes one part of an export as of `snapshot`; returns its row count and sha256.
pub async fn write_part<W: AsyncWrite + Unpin>(
    pool: &PgPool,
    project: ProjectId,
    format: Format,
    options: &Options,
    snapshot: &str,
    part: &str,
    out: &mut W,
) -> anyhow::Result<(u64, String)> {
    let mut tx = pool.begin().await?;
    crate::db::plan_for_arguments(&mut tx).await?;
    let mut writers = [(part, ChunkWriter::new(out))];
    stream_rows(pool, &mut tx, project, format, options, snapshot, &mut writers).await?;
    let [(_, w)] = writers;
    let written = w.finish().await?;
    tx.commit().await?;
    Ok(written)
}

/// Where part `part` of export `e` is kept under `dir`.
pub fn part_path(dir: &Path, e: &Export, part: &str) -> PathBuf {
    dir.join(format!("{}-{part}.jsonl", e.id))
}

/// The file holding `part` of a recorded export, under `dir`: normally written as the snapshot
/// was taken; when it is missing, written from the snapshot now, checked against the recorded
/// sha256, then kept (0600). One file is written at a time, so downloads hold at most one pool
/// connection (two while a quality-aware part computes its figures beside the rows, when the
/// pool has one to spare), and that only for as long as the disk takes, never for a client's
/// pace.
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
        let (_, sha) = write_part(pool, e.project_id, e.format(), &e.options, &e.snapshot, &part.part, &mut out).await?;
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
    pool: &PgPool,
    conn: &mut PgConnection,
    project: ProjectId,
    format: Format,
    options: &Options,
    snapshot: &str,
    writers: &mut [(&str, ChunkWriter<'_, W>)],
) -> anyhow::Result<()> {
    match format {
        Format::Prompts => {
            let mut stream = db::prompt_rows(conn, project, snapshot);
            while let Some(row) = stream.try_next().await? {
                for (_, w) in writers.iter_mut() {
                    w.rows += row.write(&mut w.buf);
                    w.maybe_flush().await?;
                }
            }
        }
        _ => {
            let by_item = options.aggregate.is_some();
            let drop_rejected = options.drop_rejected || options.revision < 4;
            let (ctx, mut stream) = match (options.revision >= 3).then(|| pool.try_acquire()).flatten() {
                // The quality figures are computed on a second connection while PostgreSQL
                // prepares the rows (a grouped read sorts them all before its first row): both
                // read the same snapshot, so the bytes do not depend on which runs first.
                Some(mut other) => {
                    let mut stream = db::judgement_rows(conn, project, snapshot, by_item, drop_rejected).peekable();
                    let load = async {
                        let mut tx = sqlx::Connection::begin(&mut *other).await?;
                        crate::db::plan_for_arguments(&mut tx).await?;
                        let ctx = quality::Context::load(&mut tx, project, snapshot, options).await?;
                        tx.commit().await?;
                        anyhow::Ok(ctx)
                    };
                    let (ctx, _) = tokio::join!(load, std::pin::Pin::new(&mut stream).peek());
                    (ctx?, stream)
                }
                // No connection to spare (or no figures needed): one after the other.
                None => {
                    let ctx = if options.revision >= 3 { quality::Context::load(conn, project, snapshot, options).await? } else { quality::Context::default() };
                    (ctx, db::judgement_rows(conn, project, snapshot, by_item, drop_rejected).peekable())
                }
            };
            let mut group: Vec<JudgementRow> = Vec::new();
            // Grouped by item, only an item's first row carries its responses: kept here for
            // the group's first row when that one was left out.
            let mut responses: Option<JudgementRow> = None;
            while let Some(mut row) = stream.try_next().await? {
                // An adjudication settles its item's disagreement: no agreement filter drops it.
                let kept = row.is_adjudication() || ctx.keeps(row.user_id(), row.item_id());
                if !kept {
                    if row.first && options.aggregate.is_some() {
                        responses = Some(row);
                    }
                    continue;
                }
                if !row.first && group.last().is_none_or(|g| g.item_id() != row.item_id()) {
                    if let Some(r) = responses.take().filter(|r| r.item_id() == row.item_id()) {
                        row.take_responses(r);
                    }
                }
                match options.aggregate {
                    Some(method) => {
                        if group.last().is_some_and(|g| g.item_id() != row.item_id()) {
                            for (part, w) in writers.iter_mut() {
                                w.rows += rows::write_aggregate(&group, method, format, options, part, ctx.agreement(group[0].item_id()), &mut w.buf);
                                w.maybe_flush().await?;
                            }
                            group.clear();
                        }
                        group.push(row);
                    }
                    None => {
                        for (part, w) in writers.iter_mut() {
                            w.rows += row.write(format, options, part, ctx.of(&row), &mut w.buf);
                            w.maybe_flush().await?;
                        }
                    }
                }
            }
            if let (Some(method), Some(first)) = (options.aggregate, group.first()) {
                for (part, w) in writers.iter_mut() {
                    w.rows += rows::write_aggregate(&group, method, format, options, part, ctx.agreement(first.item_id()), &mut w.buf);
                }
            }
        }
    }
    Ok(())
}

/// Rows are written in chunks of at least this many bytes (a `BufWriter` of up to this capacity
/// passes them through without copying them).
const CHUNK: usize = 256 * 1024;

/// Buffers rows into chunks and writes them; the chunks are hashed on a thread of their own
/// (SHA-256 of a large export costs as much as making its rows), so hashing a chunk overlaps
/// making the next ones.
struct ChunkWriter<'a, W> {
    out: &'a mut W,
    hasher: Hasher,
    buf: Vec<u8>,
    rows: u64,
}

impl<'a, W: AsyncWrite + Unpin> ChunkWriter<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self { out, hasher: Hasher::start(), buf: Vec::with_capacity(CHUNK * 2), rows: 0 }
    }

    async fn maybe_flush(&mut self) -> anyhow::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.buf).await?;
        let next = self.hasher.spare();
        self.hasher.send(std::mem::replace(&mut self.buf, next)).await
    }

    async fn finish(mut self) -> anyhow::Result<(u64, String)> {
        self.flush().await?;
        Ok((self.rows, self.hasher.finish().await?))
    }
}

/// SHA-256 over the chunks sent to it, in order, on a blocking thread; emptied chunks come back
/// to be filled again. At most [`Hasher::QUEUE`] chunks wait, so memory stays bounded.
struct Hasher {
    chunks: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    emptied: std::sync::mpsc::Receiver<Vec<u8>>,
    digest: tokio::task::JoinHandle<String>,
}

impl Hasher {
    const QUEUE: usize = 4;

    fn start() -> Self {
        let (chunks, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(Self::QUEUE);
        let (back, emptied) = std::sync::mpsc::channel();
        let digest = tokio::task::spawn_blocking(move || {
            let mut hash = Sha256::new();
            while let Some(mut chunk) = rx.blocking_recv() {
                hash.update(&chunk);
                chunk.clear();
                let _ = back.send(chunk);
            }
            hex::encode(hash.finalize())
        });
        Self { chunks: Some(chunks), emptied, digest }
    }

    /// An emptied chunk to fill, or a new one.
    fn spare(&self) -> Vec<u8> {
        self.emptied.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK * 2))
    }

    async fn send(&mut self, chunk: Vec<u8>) -> anyhow::Result<()> {
        let chunks = self.chunks.as_ref().ok_or_else(|| anyhow::anyhow!("export hash: already finished"))?;
        chunks.send(chunk).await.map_err(|_| anyhow::anyhow!("export hash: the hashing thread stopped"))
    }

    async fn finish(mut self) -> anyhow::Result<String> {
        self.chunks = None;
        Ok(self.digest.await?)
    }
}
