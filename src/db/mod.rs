//! All SQL, grouped by aggregate. Functions take `&mut PgConnection` so the caller decides
//! what commits together; every lookup of project-owned rows is scoped by the caller's
//! membership in the query itself.

pub mod items;
pub mod projects;
pub mod runs;
pub mod schedules;
pub mod stats;
pub mod tasks;
pub mod users;
pub mod worker;

use anyhow::Context;
use sqlx::PgPool;

/// Applies the forward-only migrations in `migrations/`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations").run(pool).await.context("applying migrations")?;
    Ok(())
}
