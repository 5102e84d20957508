//! Configuration in one place: the typed settings read from flags and the environment. Nothing
//! else reads `std::env` for configuration. Secrets are wrapped so they never print.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::cluster::{Cluster, ClusterUse};

/// A secret value whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How browsers reach the server. The scheme decides the cookies: over HTTPS they are `Secure`
/// with the `__Host-` prefix; over plain HTTP they cannot be (a browser drops `Secure` cookies
/// that arrive over http:// from any host but localhost). The default is HTTPS with no fixed
/// origin: a request's own Host is its origin.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub https: bool,
    /// `scheme://host[:port]` of the public URL, when one was given.
    pub origin: Option<String>,
    /// The header a trusted reverse proxy puts the client's address in (its last entry counts);
    /// without one, the peer address is the client's.
    pub client_ip_header: Option<actix_web::http::header::HeaderName>,
    /// The bearer token `/metrics` asks for; without one the main address serves no metrics.
    pub metrics_token: Option<Secret<String>>,
    /// How webhooks are checked and delivered.
    pub webhooks: WebhookOptions,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self { https: true, origin: None, client_ip_header: None, metrics_token: None, webhooks: WebhookOptions::default() }
    }
}

/// Webhook delivery: whether endpoints may be on private networks (`--allow-private-webhooks`),
/// the first retry's delay (doubled for each later one, `--webhook-retry-base`) and the
/// attempts before a delivery is marked failed (`--webhook-attempts`).
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub allow_private: bool,
    pub retry_base: std::time::Duration,
    pub max_attempts: u32,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self { allow_private: false, retry_base: std::time::Duration::from_secs(30), max_attempts: 8 }
    }
}

impl WebhookOptions {
    /// From the flags: a retry base from 0.01 to 3600 seconds, 1 to 20 attempts.
    pub fn parse(allow_private: bool, retry_base_seconds: f64, max_attempts: u32) -> Result<Self, String> {
        if !(0.01..=3600.0).contains(&retry_base_seconds) {
            return Err(format!("--webhook-retry-base: expected 0.01 to 3600 seconds, got {retry_base_seconds}"));
        }
        if !(1..=20).contains(&max_attempts) {
            return Err(format!("--webhook-attempts: expected 1 to 20, got {max_attempts}"));
        }
        Ok(Self { allow_private, retry_base: std::time::Duration::from_secs_f64(retry_base_seconds), max_attempts })
    }
}

impl WebOptions {
    /// From `--public-url` (by default `http://<bind address>`: plain HTTP with no fixed origin,
    /// as a bind address such as 0.0.0.0 is not what browsers type) and `--trusted-proxy-header`.
    pub fn parse(public_url: Option<&str>, proxy_header: Option<&str>) -> Result<Self, String> {
        let client_ip_header = match proxy_header.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) => Some(h.parse().map_err(|_| format!("--trusted-proxy-header: {h:?} is not a header name"))?),
            None => None,
        };
        let Some(url) = public_url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self { https: false, origin: None, client_ip_header, metrics_token: None, webhooks: WebhookOptions::default() });
        };
        let origin = public_origin(url)?;
        Ok(Self { https: origin.starts_with("https://"), origin: Some(origin), client_ip_header, metrics_token: None, webhooks: WebhookOptions::default() })
    }

    /// `--metrics-token`: at least 16 characters, so that a guessable word cannot be one.
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Result<Self, String> {
        self.metrics_token = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) if t.len() < 16 || t.chars().any(|c| !c.is_ascii_graphic()) => {
                return Err("--metrics-token: expected at least 16 printable characters without spaces".into())
            }
            Some(t) => Some(Secret::new(t.to_string())),
        };
        Ok(self)
    }
}

/// The PostgreSQL session settings the server's connections start with. Our statements are
/// short key lookups: planning them once per connection (a generic plan) instead of at every
/// execution saves most of PostgreSQL's CPU; and JIT compilation, which the planner starts for
/// any statement it estimates above `jit_above_cost`, took 60–100 ms of every queue sweep
/// whose generic plan (a `LIMIT` of unknown size) it so estimated, on a query that runs in 1 ms.
pub const SESSION_SETTINGS: [(&str, &str); 2] = [("plan_cache_mode", "force_generic_plan"), ("jit", "off")];

/// The origin (`scheme://host[:port]`, lower case, default port left out) of an http(s) URL.
pub fn public_origin(url: &str) -> Result<String, String> {
    let bad = || format!("--public-url: expected http://host[:port][/path] or https://…, got {url:?}");
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("").to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return Err(bad()),
    };
    if authority.is_empty() || authority.contains('@') || authority.starts_with(':') || authority.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    Ok(format!("{scheme}://{}", authority.strip_suffix(default_port).unwrap_or(&authority)))
}

/// Where the database is: an external server, or the data directory's private cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<Secret<String>>,
    /// The database server itself when `database_url` goes through a transaction-pooling
    /// connection pooler (PgBouncer): migrations take a session-level lock and run over this,
    /// and the pooled connections send no startup parameters (PgBouncer refuses them).
    pub database_direct_url: Option<Secret<String>>,
    pub session_key: Option<Secret<String>>,
}

impl Settings {
    /// Reads `REWARDLAB_DATA`, `DATABASE_URL`, `DATABASE_DIRECT_URL` and `REWARDLAB_SESSION_KEY`; a
    /// flag wins over the environment.
    pub fn from_env(data_dir: Option<PathBuf>) -> Self {
        let data_dir = data_dir.or_else(|| std::env::var_os("REWARDLAB_DATA").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("rewardlab-data"));
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).map(Secret::new);
        Self {
            data_dir,
            database_url: nonempty("DATABASE_URL"),
            database_direct_url: nonempty("DATABASE_DIRECT_URL"),
            session_key: nonempty("REWARDLAB_SESSION_KEY"),
        }
    }

    /// Connects (starting the private cluster when there is no DATABASE_URL) and migrates.
    /// Returns the pool and, for the embedded default, this process's use of the cluster
    /// (released, and the cluster stopped by its last user, when it is dropped).
    pub async fn connect(&self) -> Result<(PgPool, Option<ClusterUse>)> {
        // Checked before anything starts (the private cluster among it).
        anyhow::ensure!(
            self.database_direct_url.is_none() || self.database_url.is_some(),
            "DATABASE_DIRECT_URL is set without DATABASE_URL: it names the server behind DATABASE_URL's pooler"
        );
        let (opts, cluster) = match &self.database_url {
            Some(url) => (url.expose().parse::<PgConnectOptions>().context("parsing DATABASE_URL")?, None),
            None => {
                let cluster = Cluster::new(&self.data_dir)?;
                let used = tokio::task::block_in_place(|| cluster.acquire())?;
                ensure_database(&cluster, "rewardlab").await?;
                (cluster.connect_options("rewardlab"), Some(used))
            }
        };
        let pool_options = || PgPoolOptions::new().max_connections(16).acquire_timeout(std::time::Duration::from_secs(10));
        let pool = match &self.database_direct_url {
            None => {
                let opts = opts.options(SESSION_SETTINGS);
                let pool = pool_options().connect_with(opts).await.context("connecting to PostgreSQL")?;
                crate::db::migrate(&pool).await?;
                pool
            }
            Some(direct) => {
                let direct: PgConnectOptions = direct.expose().parse().context("parsing DATABASE_DIRECT_URL")?;
                let admin = PgPoolOptions::new().max_connections(1).connect_with(direct).await.context("connecting to DATABASE_DIRECT_URL")?;
                crate::db::migrate(&admin).await?;
                // The settings a direct connection asks for at start-up, set on the database
                // instead (a pooler passes no startup parameters); needs its owner.
                if let Err(e) = crate::db::set_session_defaults(&admin).await {
                    log::warn!("could not set plan_cache_mode and jit on the database (it needs its owner): {e}");
                }
                admin.close().await;
                // sqlx's one default startup parameter, which PgBouncer refuses; our values travel
                // in the binary format, which it does not affect.
                let opts = opts.extra_float_digits(None);
                pool_options().connect_with(opts).await.context("connecting to PostgreSQL through DATABASE_URL")?
            }
        };
        Ok((pool, cluster))
    }

    /// The session key: from the environment, else generated once into the data directory (0600).
    pub fn session_key(&self) -> Result<Secret<Vec<u8>>> {
        if let Some(key) = &self.session_key {
            return Ok(Secret::new(key.expose().as_bytes().to_vec()));
        }
        let path = self.data_dir.join("session.key");
        if let Ok(existing) = std::fs::read(&path) {
            return Ok(Secret::new(existing));
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let mut key = vec![0u8; 64];
        rand::thread_rng().fill_bytes(&mut key);
        write_private(&path, &key)?;
        Ok(Secret::new(key))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Creates database `name` in the private cluster if it does not exist.
pub async fn ensure_database(cluster: &Cluster, name: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres")).await?;
    crate::db::ensure_database(&mut conn, name).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_decides_the_scheme_and_the_origin() {
        let o = WebOptions::parse(Some("https://Labels.Example.org/rewardlab"), None).unwrap();
        assert!(o.https);
        assert_eq!(o.origin.as_deref(), Some("https://labels.example.org"));
        let o = WebOptions::parse(Some("http://team.lan:8080"), Some("X-Forwarded-For")).unwrap();
        assert!(!o.https);
        assert_eq!(o.origin.as_deref(), Some("http://team.lan:8080"));
        assert_eq!(o.client_ip_header.unwrap().as_str(), "x-forwarded-for");
        let o = WebOptions::parse(None, None).unwrap();
        assert!(!o.https && o.origin.is_none(), "the default follows the bind address: plain http");
        assert_eq!(public_origin("http://host:80/").unwrap(), "http://host");
        for bad in ["team.lan:8080", "ftp://x", "http://", "http://user@host", "https://:443"] {
            assert!(WebOptions::parse(Some(bad), None).is_err(), "{bad}");
        }
        assert!(WebOptions::parse(None, Some("bad header")).is_err());
    }
}
