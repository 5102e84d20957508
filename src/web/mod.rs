//! The web application: state, security headers and the whole route table in one place.

pub mod auth;
pub mod chart;
pub mod error;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use sqlx::PgPool;

use crate::settings::Secret;

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
}

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A built server and the port it bound (port 0 picks a free one, as the tests do).
pub struct Application {
    pub server: actix_web::dev::Server,
    pub port: u16,
}

impl Application {
    pub fn build(pool: PgPool, key: Secret<Vec<u8>>, bind: &str, tmp_dir: std::path::PathBuf, workers: Option<usize>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&tmp_dir)?;
        let state = web::Data::new(AppState { pool, key, tmp_dir });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::FormConfig::default().limit(1 << 20))
                .app_data(web::JsonConfig::default().limit(4 << 20).error_handler(|e, _| {
                    error::ApiError(error::AppError::Invalid(format!("the JSON body is not valid: {e}"))).into()
                }))
                .wrap(
                    DefaultHeaders::new()
                        .add(("Content-Security-Policy", CSP))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("Cache-Control", "no-store")),
                )
                .configure(crate::routes::configure)
                .configure(crate::api::configure)
        })
        .shutdown_timeout(10);
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server.bind(bind)?;
        let port = server.addrs().first().map(|a| a.port()).unwrap_or(0);
        Ok(Self { server: server.disable_signals().run(), port })
    }
}
