//! All SQL, grouped by aggregate. Functions take `&mut PgConnection` so the caller decides
//! what commits together; every lookup of project-owned rows is scoped by the caller's
//! membership in the query itself.

pub mod items;
pub mod projects;
pub mod quality;
pub mod runs;
pub mod schedules;
pub mod stats;
pub mod tasks;
pub mod users;
pub mod worker;

use anyhow::Context;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::PgPool;

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
