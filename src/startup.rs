//! Startup: builds the HTTP server with its state, security headers and the whole route table
//! (pages from `routes`, JSON from `api`). The only module that knows every layer, so the
//! layers themselves need not know each other.

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sqlx::PgPool;

use crate::settings::{Secret, WebOptions};
use crate::web::metrics::{self, Metrics, Scrape};
use crate::web::{auth, submits, AppState, TaskRulesCache, Uploads, IMPORT_SLOTS};

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
    /// The request metrics, shared with a separate metrics server (`--metrics-bind`).
    pub metrics: web::Data<Metrics>,
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
        let metrics = web::Data::new(Metrics::new());
        let quality = std::sync::Arc::new(crate::services::quality_cache::Cache::default());
        let scrape = options
            .metrics_token
            .clone()
            .map(|token| web::Data::new(Scrape { pool: pool.clone(), quality: quality.clone(), metrics: metrics.clone(), token: Some(token) }));
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
            quality,
        });
        // The dummy hash unknown accounts are checked against, made before the first sign-in.
        tokio::spawn(auth::dummy_hash());
        let (app_state, app_metrics) = (state.clone(), metrics.clone());
        let mut server = HttpServer::new(move || {
            let state = app_state.clone();
            let scrape = scrape.clone();
            App::new()
                .app_data(state.clone())
                .app_data(app_metrics.clone())
                .app_data(web::FormConfig::default().limit(1 << 20))
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
                .configure(|cfg| {
                    if let Some(scrape) = scrape {
                        cfg.app_data(scrape).route("/metrics", web::get().to(metrics::scrape));
                    }
                })
                .wrap(actix_web::middleware::from_fn(metrics::track))
        })
        .on_connect(set_send_timeout)
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.bind(bind).with_context(|| format!("listening on {bind}"))?;
        let port = server.addrs().first().map(|a| a.port()).unwrap_or(0);
        Ok(Self { server: server.disable_signals().run(), port, state, metrics })
    }
}
