//! The JSON API (v1). Bearer tokens or a browser session; errors are `{"error": {"code", "message"}}`.

mod exports;
mod projects;
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
            .route("/exports/{id}/download", web::get().to(exports::download)),
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
