//! Streaming import of a JSONL file (gzipped or not) into one project, in one transaction:
//! a bad line rolls everything back and the error names its line and field. A blocking thread
//! reads and parses; batches cross a bounded channel, so memory stays flat for any file size.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::db::items::{self, Added};
use crate::domain::import::{parse_line, ImportItem};
use crate::domain::{ProjectId, TaskKind};

const BATCH: usize = 1000;
/// Bytes of text a batch holds at most before it is sent (so memory stays flat with long lines).
const BATCH_BYTES: usize = 4 << 20;
/// The longest line read: room for a 1 MiB prompt and nine 1 MiB responses. A longer one is
/// refused while it is being read, so one line never takes more memory than this.
pub const MAX_LINE: usize = 11 << 20;

/// Why an import stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an import did.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub lines: u64,
    pub items_added: u64,
    pub responses_added: u64,
    pub judgements_added: u64,
    pub duplicates: u64,
    pub seconds: f64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} items ({} responses, {} imported judgements) from {} lines, {} already present, in {:.2} s ({:.0} items/s)",
            self.items_added,
            self.responses_added,
            self.judgements_added,
            self.lines,
            self.duplicates,
            self.seconds,
            self.lines as f64 / self.seconds.max(1e-9)
        )
    }
}

type Msg = Result<(u64, Vec<ImportItem>), ImportError>;

/// Imports `path` into `project`; `progress` counts the compressed bytes read so far.
pub async fn import_file(pool: &PgPool, project: ProjectId, kind: TaskKind, path: &Path, progress: Arc<AtomicU64>) -> Result<ImportReport, ImportError> {
    let started = std::time::Instant::now();
    let (tx, mut rx) = mpsc::channel::<Msg>(2);
    let path: PathBuf = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || read_batches(&path, kind, progress, tx));
    let mut db = pool.begin().await?;
    let mut report = ImportReport::default();
    while let Some(msg) = rx.recv().await {
        let (lines, batch) = msg?;
        let Added { items, responses, judgements } = items::insert_batch(&mut db, project, &batch).await?;
        report.lines = lines;
        report.items_added += items;
        report.responses_added += responses;
        report.judgements_added += judgements;
        report.duplicates += batch.len() as u64 - items;
    }
    reader.await.map_err(|e| ImportError::Io(std::io::Error::other(e)))?;
    db.commit().await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file, looking through gzip when it starts with the gzip magic bytes.
fn open(path: &Path, count: Arc<AtomicU64>) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::new(Counting { inner: std::fs::File::open(path)?, count });
    let gz = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz { Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(file))) } else { Box::new(file) })
}

fn read_batches(path: &Path, kind: TaskKind, progress: Arc<AtomicU64>, tx: mpsc::Sender<Msg>) {
    let send = |m: Msg| tx.blocking_send(m).is_ok();
    let mut reader = match open(path, progress) {
        Ok(r) => r,
        Err(e) => {
            send(Err(e.into()));
            return;
        }
    };
    let (mut batch, mut batch_bytes, mut line_no, mut buf) = (Vec::with_capacity(BATCH), 0usize, 0u64, Vec::new());
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => line_no += 1,
            Err(e) => {
                send(Err(ImportError::Line { line: line_no + 1, message: format!("could not be read ({e})") }));
                return;
            }
        }
        if buf.len() > MAX_LINE {
            send(Err(ImportError::Line { line: line_no, message: format!("longer than {} MiB", MAX_LINE >> 20) }));
            return;
        }
        if buf.capacity() > 2 * BATCH_BYTES {
            buf = Vec::new(); // give a long line's memory back
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            send(Err(ImportError::Line { line: line_no, message: "not valid UTF-8".into() }));
            return;
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text, kind) {
            Ok(item) => batch.push(item),
            Err(message) => {
                send(Err(ImportError::Line { line: line_no, message }));
                return;
            }
        }
        batch_bytes += text.len();
        if batch.len() == BATCH || batch_bytes >= BATCH_BYTES {
            batch_bytes = 0;
            if !send(Ok((line_no, std::mem::take(&mut batch)))) {
                return;
            }
        }
    }
    if line_no == 0 {
        send(Err(ImportError::Line { line: 1, message: "the file is empty".into() }));
    } else {
        send(Ok((line_no, batch)));
    }
}
