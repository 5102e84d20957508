//! A project's queue strategy: reading it with how far the newest reward model's scores reach,
//! and changing it (a lead's setting, from the Settings tab and the API alike).

use anyhow::Context;
use sqlx::PgPool;

use super::AppError;
use crate::db::projects::Project;
use crate::db::queue::{self as dbq, QueueState};
use crate::domain::queue::QueueStrategy;

pub async fn state(pool: &PgPool, p: &Project) -> Result<QueueState, AppError> {
    let mut conn = pool.acquire().await?;
    Ok(dbq::state(&mut conn, p.id).await.context("reading the project's queue")?)
}

/// Sets the strategy; answers the queue as it now is.
pub async fn set_strategy(pool: &PgPool, p: &Project, strategy: QueueStrategy) -> Result<QueueState, AppError> {
    let mut tx = pool.begin().await?;
    dbq::set_strategy(&mut tx, p.id, strategy).await.context("storing the queue strategy")?;
    let state = dbq::state(&mut tx, p.id).await.context("reading the project's queue")?;
    tx.commit().await.context("storing the queue strategy")?;
    Ok(state)
}
