//! All SQL, grouped by aggregate. Functions take `&mut PgConnection` so the caller decides
//! what commits together; every lookup of project-owned rows is scoped by the caller's
//! membership in the query itself.

pub mod exports;
pub mod item_list;
pub mod items;
pub mod metrics;
pub mod people;
pub mod projects;
pub mod quality;
pub mod queue;
pub mod regression;
pub mod review;
pub mod runs;
pub mod schedules;
pub mod spotcheck;
pub mod stats;
pub mod tasks;
pub mod users;
pub mod webhooks;
pub mod worker;

use anyhow::Context;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{PgConnection, PgPool};

/// Plans this transaction's next statements for their actual arguments, with room to sort
/// and hash in memory: for reads over a whole project (every judgement, thousands of ids in an
/// array), which the server's default generic plans estimate at a few rows and loop over.
/// Lasts until the transaction ends.
pub async fn plan_for_arguments(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query!("SELECT set_config('plan_cache_mode', 'force_custom_plan', true) AS plans, set_config('work_mem', '64MB', true) AS memory")
        .fetch_one(tx)
        .await?;
    Ok(())
}

/// The forward-only migrations in `migrations/` (see migrations/README.md).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies the forward-only migrations in `migrations/`, after checking that every migration the
/// database already ran is one of this build's, unchanged.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    check_applied(pool).await?;
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// Refuses, with a message saying why, a database whose migration history this build does not
/// share, which sqlx would refuse with a bare checksum or version error.
async fn check_applied(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("connecting to apply migrations")?;
    // Under sqlx's migration lock, as its own run reads them (two processes starting on a new
    // database would otherwise race to create the table).
    conn.lock().await.context("taking the migration lock")?;
    let applied = match conn.ensure_migrations_table().await {
        Ok(()) => conn.list_applied_migrations().await,
        Err(e) => Err(e),
    };
    conn.unlock().await.context("releasing the migration lock")?;
    for applied in applied.context("reading the applied migrations")? {
        let known = MIGRATOR.iter().find(|m| m.version == applied.version);
        if known.is_some_and(|m| m.checksum == applied.checksum) {
            continue;
        }
        let what = if known.is_some() { "differs from the one in this build" } else { "is not in this build" };
        anyhow::bail!(
            "the database's migration {} {what}. Data directories created before the migration \
             baseline (0001_baseline.sql) cannot be upgraded: start a new one. A database \
             migrated by a newer rewardlab cannot be opened by an older one. A landed migration \
             is never edited: restore it and add a new migration (migrations/README.md).",
            applied.version
        );
    }
    Ok(())
}

/// Makes new sessions of the current database start with the server's session settings
/// ([`crate::settings::SESSION_SETTINGS`]: generic plans, no JIT), which connections made through
/// a pooler cannot ask for at start-up. `ALTER DATABASE` takes an identifier, not a bind
/// parameter, so this is a DO block reading the name from the server.
pub async fn set_session_defaults(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query!(
        "DO $$ BEGIN
             EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_generic_plan', current_database());
             EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
         END $$"
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Whether the database answers a query (the health check).
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(pool).await.map(drop)
}

/// Creates database `name` on the server `conn` is connected to, unless it exists. The one
/// statement here not checked at compile time: a database name cannot be a bind parameter, so
/// it is quoted as an identifier instead.
pub async fn ensure_database(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    let exists = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#, name).fetch_one(&mut *conn).await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""))).execute(conn).await?;
    }
    Ok(())
}
