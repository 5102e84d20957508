//! The JSON API (v1). Bearer tokens or a browser session; errors are `{"error": {"code", "message"}}`.

mod exports;
mod projects;
pub mod runs;
mod tasks;

pub use exports::create_export;
pub use projects::{add_member_checked, create_project, import_body, CreateBody};

use actix_web::web;

use crate::db::projects::{self as dbp, Project};
use crate::domain::Role;
use crate::web::auth::Auth;
use crate::web::error::AppError;
use crate::web::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/projects", web::get().to(projects::list))
            .route("/projects", web::post().to(projects::create))
            .route("/projects/{slug}/items", web::post().to(projects::import))
            .route("/projects/{slug}/members", web::post().to(projects::add_member))
            .route("/projects/{slug}/dashboard", web::get().to(projects::dashboard))
            .route("/projects/{slug}/progress", web::get().to(tasks::progress))
            .route("/projects/{slug}/tasks/next", web::post().to(tasks::next))
            .route("/tasks/{task_id}/judgement", web::post().to(tasks::submit))
            .route("/tasks/{task_id}/skip", web::post().to(tasks::skip))
            .route("/projects/{slug}/exports", web::post().to(exports::create))
            .route("/projects/{slug}/exports", web::get().to(exports::list))
            .route("/exports/{id}/download", web::get().to(exports::download))
            .route("/projects/{slug}/runs", web::post().to(runs::create))
            .route("/projects/{slug}/runs", web::get().to(runs::list))
            .route("/projects/{slug}/leaderboard", web::get().to(runs::leaderboard))
            .route("/projects/{slug}/rm-agreement", web::get().to(runs::rm_agreement))
            .route("/projects/{slug}/schedules", web::post().to(runs::schedule_create))
            .route("/projects/{slug}/schedules", web::get().to(runs::schedule_list))
            .route("/projects/{slug}/schedules/{id}", web::delete().to(runs::schedule_delete))
            .route("/runs/{id}", web::get().to(runs::show))
            .route("/runs/{id}/metrics", web::get().to(runs::metrics))
            .route("/runs/{id}/cancel", web::post().to(runs::cancel)),
    );
}

/// The project if the caller may see it with `role`; 404 otherwise (never 403: a stranger
/// must not learn that a project exists).
pub async fn project(state: &AppState, auth: &Auth, slug: &str, role: Role) -> Result<Project, AppError> {
    let mut conn = state.pool.acquire().await?;
    if let Some(p) = dbp::for_user(&mut conn, auth.user.id, slug, role).await? {
        return Ok(p);
    }
    if role == Role::Lead && dbp::for_user(&mut conn, auth.user.id, slug, Role::Labeller).await?.is_some() {
        return Err(AppError::Forbidden("only the project's leads may do this".into()));
    }
    Err(AppError::NotFound)
}
