//! The web layer's shared parts: the state every handler reaches, who is calling (`auth`), errors,
//! the JSON body extractor, page rendering and the submission queue. The server itself is built
//! in `startup`.

pub mod auth;
pub mod chart;
pub mod error;
pub mod json;
pub mod metrics;
pub mod page;
pub mod submits;
pub mod watch_chart;

use sqlx::PgPool;

use crate::settings::{Secret, WebOptions};

pub use crate::services::imports::{Upload, Uploads};

/// A reader as a response body, in chunks of up to 256 KiB.
pub fn byte_stream<R: tokio::io::AsyncRead + Unpin>(reader: R) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(reader, |mut r| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), r)),
            Err(err) => Some((Err(err), r)),
        }
    })
}

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub key: Secret<Vec<u8>>,
    pub tmp_dir: std::path::PathBuf,
    pub uploads: Uploads,
    /// Imports holding a database connection at once (each runs in one transaction).
    pub import_slots: tokio::sync::Semaphore,
    /// The rules of tasks this server leased, so their submissions are checked without asking
    /// the database again; the database still checks the task's owner and membership.
    pub task_rules: TaskRulesCache,
    /// Submissions, stored in batches.
    pub submits: submits::SubmitQueue,
    /// How browsers reach this server: the cookies' flags, the origin, the client's address.
    pub web: WebOptions,
    pub cookies: auth::Cookies,
    pub login_checks: auth::LoginChecks,
    /// Each project's quality figures, computed again when their inputs change.
    pub quality: std::sync::Arc<crate::services::quality_cache::Cache>,
}

/// Rules of leased tasks by task id, with the labeller they were leased to. Bounded: it is
/// emptied when full (a miss only costs the lookup it saves).
#[derive(Default)]
pub struct TaskRulesCache(
    std::sync::Mutex<std::collections::HashMap<crate::domain::TaskId, (crate::domain::UserId, std::sync::Arc<crate::db::tasks::TaskRules>)>>,
);

impl TaskRulesCache {
    const MAX: usize = 100_000;

    pub fn remember(&self, task: crate::domain::TaskId, user: crate::domain::UserId, rules: crate::db::tasks::TaskRules) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(task, (user, std::sync::Arc::new(rules)));
    }

    pub fn get(&self, task: crate::domain::TaskId, user: crate::domain::UserId) -> Option<std::sync::Arc<crate::db::tasks::TaskRules>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&task).filter(|(u, _)| *u == user).map(|(_, r)| r.clone())
    }

    pub fn forget(&self, task: crate::domain::TaskId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&task);
    }
}

/// This server's base URL as browsers reach it: the public URL's origin when one was given,
/// else the request's own scheme and host (for links shown to be sent, such as invitations).
pub fn public_base(req: &actix_web::HttpRequest, state: &AppState) -> String {
    match &state.web.origin {
        Some(origin) => origin.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// Imports running at once; the rest wait (their uploads already on disk).
pub const IMPORT_SLOTS: usize = 4;
