//! Labelling besides the hot path: a labeller's progress, skipping a task and a task as the
//! labelling page presents it. (Leasing and submitting stay in the API handlers, beside the
//! server's cache of leased tasks' rules and the submission queue.)

use serde_json::Value;
use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::projects::Project;
use crate::db::tasks as dbt;
use crate::db::tasks::TaskView;
use crate::domain::markdown;
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

/// A leased task with what the labelling page shows besides the API's view: the item's
/// `instructions`, and sanitized HTML rendered from the Markdown of the instructions
/// (`instructions_html`), of each prompt turn and of each response (`html` beside `text`).
pub async fn presented(pool: &PgPool, view: &TaskView, user: UserId) -> Result<Value, AppError> {
    let instructions = dbt::instructions(&mut *pool.acquire().await?, view.task_id, user).await.context("reading a task's instructions")?;
    let mut value = serde_json::to_value(view).map_err(anyhow::Error::from)?;
    // Rendering up to 9 MiB of responses is CPU work; it leaves the server's threads free.
    tokio::task::spawn_blocking(move || {
        value["instructions_html"] = instructions.as_deref().map(markdown::render).into();
        value["instructions"] = instructions.into();
        add_html(&mut value["prompt"], "content");
        add_html(&mut value["responses"], "text");
        value
    })
    .await
    .map_err(|e| AppError::Unexpected(anyhow::anyhow!("rendering a task: {e}")))
}

/// Beside each object's `field` in the array `list`, its Markdown rendered as `html`.
fn add_html(list: &mut Value, field: &str) {
    for entry in list.as_array_mut().into_iter().flatten() {
        let html = entry[field].as_str().map(markdown::render).unwrap_or_default();
        entry["html"] = html.into();
    }
}
