//! Labelling besides the hot path: a labeller's progress and skipping a task. (Leasing and
//! submitting stay in the API handlers, beside the server's cache of leased tasks' rules and
//! the submission queue.)

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::projects::Project;
use crate::db::tasks as dbt;
use crate::domain::{SkipReason, TaskId, UserId};

/// Judged today by `user` in `p`, and items still open to them.
pub async fn progress(pool: &PgPool, p: &Project, user: UserId) -> Result<(i64, i64), AppError> {
    dbt::progress(&mut *pool.acquire().await?, p.id, user).await.context("reading a labeller's progress")
}

/// Skips `user`'s leased task; not found when they hold no lease on it (or left the project).
pub async fn skip(pool: &PgPool, task: TaskId, user: UserId, reason: &SkipReason) -> Result<(), AppError> {
    if !dbt::skip(&mut *pool.acquire().await?, task, user, reason).await.context("skipping a task")? {
        return Err(AppError::NotFound);
    }
    Ok(())
}
