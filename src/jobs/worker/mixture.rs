//! The data mixture of a training attempt (see [`crate::domain::runs::mixture`]): the rows of
//! the run's export are matched against the project's earlier snapshots of the same format and
//! options (each replayed from its snapshot, the same bytes), and with `replay_share` the
//! training files keep the new rows plus a seeded share of old ones.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use sqlx::PgPool;

use crate::db::worker::Claimed;
use crate::domain::runs::mixture::{select, summary, Snapshot};
use crate::export::Export;

/// Earlier snapshots compared at most (the newest ones): bounded work however many exports a
/// project has taken.
const MAX_EARLIER: usize = 8;

fn line_key(line: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    line.hash(&mut h);
    h.finish()
}

fn snapshot(e: &Export) -> Snapshot {
    Snapshot { export_id: e.id.to_string(), created_at: e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), revision: e.options.revision }
}

fn lines(path: &Path) -> Result<impl Iterator<Item = std::io::Result<String>>> {
    Ok(std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?).lines())
}

/// The files the attempt trains on and the mixture recorded on the run.
pub async fn apply(
    pool: &PgPool,
    c: &Claimed,
    export: &Export,
    files: Vec<PathBuf>,
    config: &serde_json::Map<String, Value>,
    dir: &Path,
) -> Result<(Vec<PathBuf>, Value)> {
    let replay_share = config.get("replay_share").and_then(Value::as_f64);
    let seed = config.get("seed").and_then(Value::as_u64).unwrap_or(0);
    let options = serde_json::to_value(&export.options)?;
    let mut earlier: Vec<Export> = {
        let mut conn = pool.acquire().await?;
        crate::db::exports::list(&mut conn, c.project_id).await?
    }
    .into_iter()
    // An empty snapshot holds no row to match (and has no files to replay).
    .filter(|e| e.id != export.id && e.format == export.format && e.created_at < export.created_at && e.rows() > 0)
    .filter(|e| serde_json::to_value(&e.options).is_ok_and(|o| o == options))
    .take(MAX_EARLIER)
    .collect();
    earlier.reverse();
    // Each row (its exact line) → the earliest snapshot that held it.
    let mut first_seen: HashMap<u64, usize> = HashMap::new();
    for (i, e) in earlier.iter().enumerate() {
        for path in super::inputs::materialize(pool, e, dir).await? {
            for line in lines(&path)? {
                first_seen.entry(line_key(&line?)).or_insert(i);
            }
        }
    }
    let mut bands: Vec<Option<usize>> = Vec::new();
    let mut per_file = Vec::with_capacity(files.len());
    for path in &files {
        let start = bands.len();
        for line in lines(path)? {
            bands.push(first_seen.get(&line_key(&line?)).copied());
        }
        per_file.push(start..bands.len());
    }
    let keep = select(&bands, replay_share, seed);
    let mixture = summary(&snapshot(export), &earlier.iter().map(snapshot).collect::<Vec<_>>(), &bands, &keep, replay_share, seed);
    if replay_share.is_none() {
        return Ok((files, mixture));
    }
    // The rows kept, in the export's order, into files of the attempt's own.
    let mut out = Vec::new();
    for (n, (path, range)) in files.iter().zip(per_file).enumerate() {
        if !keep[range.clone()].iter().any(|k| *k) {
            continue;
        }
        let mixed = dir.join(format!("mixture-{}-{n}.jsonl", c.fence));
        let mut w = std::io::BufWriter::new(crate::private_fs::create_file(&mixed).with_context(|| format!("creating {}", mixed.display()))?);
        for (line, k) in lines(path)?.zip(&keep[range]) {
            if *k {
                writeln!(w, "{}", line?)?;
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        out.push(mixed);
    }
    Ok((out, mixture))
}
