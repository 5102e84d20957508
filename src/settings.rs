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

/// Where the database is: an external server, or the data directory's private cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: Option<Secret<String>>,
    pub session_key: Option<Secret<String>>,
}

impl Settings {
    /// Reads `REWARDLAB_DATA`, `DATABASE_URL` and `REWARDLAB_SESSION_KEY`; a flag wins over the environment.
    pub fn from_env(data_dir: Option<PathBuf>) -> Self {
        let data_dir = data_dir
            .or_else(|| std::env::var_os("REWARDLAB_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("rewardlab-data"));
        let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).map(Secret::new);
        Self {
            data_dir,
            database_url: nonempty("DATABASE_URL"),
            session_key: nonempty("REWARDLAB_SESSION_KEY"),
        }
    }

    /// Connects (starting the private cluster when there is no DATABASE_URL) and migrates.
    /// Returns the pool and, for the embedded default, this process's use of the cluster
    /// (released, and the cluster stopped by its last user, when it is dropped).
    pub async fn connect(&self) -> Result<(PgPool, Option<ClusterUse>)> {
        let (opts, cluster) = match &self.database_url {
            Some(url) => (url.expose().parse::<PgConnectOptions>().context("parsing DATABASE_URL")?, None),
            None => {
                let cluster = Cluster::new(&self.data_dir)?;
                let used = tokio::task::block_in_place(|| cluster.acquire())?;
                ensure_database(&cluster, "rewardlab").await?;
                (cluster.connect_options("rewardlab"), Some(used))
            }
        };
        // Our statements are short key lookups: planning them once per connection (a generic
        // plan) instead of at every execution saves most of PostgreSQL's CPU under load.
        let opts = opts.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .context("connecting to PostgreSQL")?;
        crate::db::migrate(&pool).await?;
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
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', ""))).execute(&mut conn).await?;
    }
    Ok(())
}
