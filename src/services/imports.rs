//! Imports through the web: an upload streamed to a private file, then imported from it in one
//! transaction, a few at a time.

use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::error::AppError;
use crate::db::projects::Project;
use crate::import::{import_file, ImportError, ImportReport};

/// The largest upload accepted (compressed bytes as sent).
pub const MAX_UPLOAD: u64 = 4 << 30;

/// Where uploads wait and how many imports may hold a database connection at once.
pub struct Importer<'a> {
    pub pool: &'a PgPool,
    pub uploads: &'a Uploads,
    pub slots: &'a Semaphore,
}

impl Importer<'_> {
    /// Streams a request body to a temporary file (bounded memory and size), imports it, removes
    /// the file. The file is removed on every way out (an error, a dropped request, a shutdown);
    /// one left by a killed server is removed by the next start (see [`Uploads`]). At most a few
    /// imports hold a database connection at once, so they never starve the pool.
    pub async fn import(
        &self,
        p: &Project,
        mut body: impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin,
    ) -> Result<ImportReport, AppError> {
        let upload = self.uploads.create().map_err(|e| anyhow::Error::from(e).context("creating an upload file"))?;
        let file = upload.file().try_clone().map_err(|e| anyhow::Error::from(e).context("opening the upload file"))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AppError::Invalid(format!("the upload broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > MAX_UPLOAD {
                return Err(AppError::TooLarge(format!("the upload is larger than {} GiB; split the file", MAX_UPLOAD >> 30)));
            }
            file.write_all(&chunk).await.map_err(|e| anyhow::Error::from(e).context("writing the upload file"))?;
        }
        file.flush().await.map_err(|e| anyhow::Error::from(e).context("writing the upload file"))?;
        drop(file);
        let _slot = self.slots.acquire().await.map_err(anyhow::Error::from)?;
        import_file(self.pool, p.id, p.kind, upload.path(), Arc::default()).await.map_err(|e| match e {
            ImportError::Line { .. } | ImportError::Io(_) => AppError::Invalid(format!("nothing was imported: {e}")),
            ImportError::Db(db) => AppError::from(db),
        })
    }
}

/// Upload files waiting to be imported, in one private directory (0700, files 0600). A live
/// upload holds an exclusive lock on its file and removes it when dropped, on every way out; a
/// file nobody holds locked was left by a killed process, and is removed at start.
pub struct Uploads {
    dir: std::path::PathBuf,
}

impl Uploads {
    pub fn open(dir: std::path::PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let uploads = Self { dir };
        let removed = uploads.sweep()?;
        if removed > 0 {
            log::info!("removed {removed} upload file(s) left by a server that was stopped mid-import");
        }
        Ok(uploads)
    }

    /// Removes the upload files no live process holds; how many.
    pub fn sweep(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("upload-")) {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else { continue };
            if file.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A new, empty upload file, locked for this process.
    pub fn create(&self) -> std::io::Result<Upload> {
        use std::os::unix::fs::OpenOptionsExt;
        // Created under a name the sweep ignores, and named an upload only once locked, so a
        // server starting meanwhile never takes it for a dead one's.
        let id = uuid::Uuid::new_v4();
        let new = self.dir.join(format!(".new-{id}"));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&new)?;
        file.lock()?;
        let path = self.dir.join(format!("upload-{id}.jsonl"));
        std::fs::rename(&new, &path)?;
        Ok(Upload { path, file })
    }
}

/// One upload file; removed when dropped.
pub struct Upload {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl Upload {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
