//! Export snapshots: taking one, listing them, and the file a download is served from
//! (written from PostgreSQL once, then served from disk: a client that stops reading holds no
//! database connection).

use std::path::{Path, PathBuf};

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::projects::Project;
use crate::db::users::User;
use crate::domain::ExportId;
use crate::export::{self, Export, Format, Options, PartSummary};

/// Takes a snapshot of `p` in `format`, by `by`; the options are checked against the format.
/// Its parts are written as they are taken into the files downloads are served from (under
/// `dir/exports`), so a download streams a file and never replays the snapshot.
pub async fn create(pool: &PgPool, dir: &Path, p: &Project, by: &User, format: Format, options: Options) -> Result<Export, AppError> {
    let options = options.checked(format).map_err(AppError::Invalid)?;
    let files = dir.join("exports");
    crate::private_fs::create_dir_all(&files).map_err(|e| anyhow::Error::from(e).context("creating the exports folder"))?;
    let batch = uuid::Uuid::new_v4().simple().to_string();
    let partial = |part: &str| files.join(format!(".{batch}-{part}.partial"));
    let taken = export::create(pool, p.id, format, options, Some(by.id), |part| {
        let file = crate::private_fs::create_file(&partial(part))?;
        Ok(tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file)))
    })
    .await;
    let e = match taken {
        Ok(e) => e,
        Err(err) => {
            for part in format.parts() {
                let _ = std::fs::remove_file(partial(part));
            }
            return Err(err.context("taking an export").into());
        }
    };
    for part in format.parts() {
        // A file that cannot be renamed is written again from the snapshot at its download.
        let _ = std::fs::rename(partial(part), export::part_path(&files, &e, part));
    }
    Ok(e)
}

pub async fn list(pool: &PgPool, p: &Project) -> Result<Vec<Export>, AppError> {
    let mut conn = pool.acquire().await?;
    crate::db::exports::list(&mut conn, p.id).await.context("listing exports")
}

/// An export of a project `user` leads (or any, for an admin).
pub async fn get(pool: &PgPool, user: &User, id: ExportId) -> Result<Export, AppError> {
    let mut conn = pool.acquire().await?;
    crate::db::exports::get_for_lead(&mut conn, id, user.id).await.context("finding the export")?.ok_or(AppError::NotFound)
}

/// A part of an export `user` leads (its first part when `part` is none), with the file that
/// holds its bytes under `dir`.
pub async fn part_file(pool: &PgPool, dir: &Path, user: &User, id: ExportId, part: Option<&str>) -> Result<(Export, PartSummary, PathBuf), AppError> {
    let mut conn = pool.acquire().await?;
    let e = crate::db::exports::get_for_lead(&mut conn, id, user.id).await.context("finding the export")?.ok_or(AppError::NotFound)?;
    drop(conn);
    let part = part.unwrap_or_else(|| e.format().parts()[0]);
    let summary = e.files.iter().find(|f| f.part == part).ok_or_else(|| AppError::Invalid(format!("part: this export has {:?}", e.format().parts())))?.clone();
    let path = export::part_file(pool, &e, &summary, &dir.join("exports")).await.map_err(|e| e.context("writing the export's file"))?;
    Ok((e, summary, path))
}
