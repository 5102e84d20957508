//! The JSON API (v1). Bearer tokens or a browser session; errors are `{"error": {"code", "message"}}`.

mod exports;
mod people;
mod projects;
pub mod runs;
mod tasks;

use actix_web::web;

use crate::db::projects::Project;
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
            .route("/projects/{slug}/items/exclude", web::post().to(projects::exclude_items))
            .route("/projects/{slug}/members", web::post().to(projects::add_member))
            .route("/projects/{slug}/members", web::get().to(people::members))
            .route("/projects/{slug}/members/{user}", web::delete().to(people::remove_member))
            .route("/users", web::get().to(people::list))
            .route("/users", web::post().to(people::create))
            .route("/users/{id}/invite", web::post().to(people::invite))
            .route("/users/{id}/deactivate", web::post().to(people::deactivate))
            .route("/users/{id}/reactivate", web::post().to(people::reactivate))
            .route("/projects/{slug}/dashboard", web::get().to(projects::dashboard))
            .route("/projects/{slug}/progress", web::get().to(tasks::progress))
            .route("/projects/{slug}/tasks/next", web::post().to(tasks::next))
            .route("/tasks/{task_id}/judgement", web::post().to(tasks::submit))
            .route("/tasks/{task_id}/skip", web::post().to(tasks::skip))
            .route("/projects/{slug}/exports", web::post().to(exports::create))
            .route("/projects/{slug}/exports", web::get().to(exports::list))
            .route("/exports/{id}/download", web::get().to(exports::download))
            .route("/exports/{id}/manifest", web::get().to(exports::manifest))
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

/// The project if the caller may see it with `role` (see [`crate::services::project`]).
pub async fn project(state: &AppState, auth: &Auth, slug: &str, role: Role) -> Result<Project, AppError> {
    crate::services::project(&state.pool, &auth.user, slug, role).await
}
