//! The web application: state, security headers and the whole route table in one place.

pub mod auth;
pub mod chart;
pub mod error;
pub mod json;
pub mod page;
pub mod submits;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
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

/// Imports running at once; the rest wait (their uploads already on disk).
pub const IMPORT_SLOTS: usize = 4;

pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How long a connection may leave what it was sent unacknowledged, or its window shut (a
/// client that stopped reading a download), before the kernel drops it.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Gives each accepted connection the [`SEND_TIMEOUT`] (`TCP_USER_TIMEOUT`).
fn set_send_timeout(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(SEND_TIMEOUT)) {
            log::warn!("setting the send timeout of a connection: {e}");
        }
    }
}

/// A built server, the port it bound (port 0 picks a free one, as the tests do) and its state.
pub struct Application {
    pub server: actix_web::dev::Server,
    pub port: u16,
    pub state: web::Data<AppState>,
}

impl Application {
    pub fn build(
        pool: PgPool,
        key: Secret<Vec<u8>>,
        bind: &str,
        tmp_dir: std::path::PathBuf,
        workers: Option<usize>,
        options: WebOptions,
    ) -> anyhow::Result<Self> {
        let uploads = Uploads::open(tmp_dir.clone())?;
        let lanes = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
        let submits = submits::SubmitQueue::start(pool.clone(), lanes);
        let cookies = auth::Cookies::new(options.https);
        let import_slots = tokio::sync::Semaphore::new(IMPORT_SLOTS);
        let state = web::Data::new(AppState {
            pool,
            key,
            tmp_dir,
            uploads,
            import_slots,
            task_rules: TaskRulesCache::default(),
            submits,
            web: options,
            cookies,
            login_checks: auth::LoginChecks::default(),
        });
        // The dummy hash unknown accounts are checked against, made before the first sign-in.
        tokio::spawn(auth::dummy_hash());
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let state = app_state.clone();
            App::new()
                .app_data(state.clone())
                .app_data(web::FormConfig::default().limit(1 << 20))
                .app_data(
                    web::JsonConfig::default()
                        .limit(4 << 20)
                        .error_handler(|e, _| error::ApiError(error::AppError::Invalid(format!("the JSON body is not valid: {e}"))).into()),
                )
                .wrap(
                    DefaultHeaders::new()
                        .add(("Content-Security-Policy", CSP))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        // same-origin: our own forms carry our origin in `Origin` (under no-referrer
                        // browsers send `null`), and no Referer leaves the site.
                        .add(("Referrer-Policy", "same-origin"))
                        .add(("Cache-Control", "no-store")),
                )
                .configure(crate::routes::configure)
                .configure(crate::api::configure)
        })
        .on_connect(set_send_timeout)
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.bind(bind).with_context(|| format!("listening on {bind}"))?;
        let port = server.addrs().first().map(|a| a.port()).unwrap_or(0);
        Ok(Self { server: server.disable_signals().run(), port, state })
    }
}
