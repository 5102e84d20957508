//! The JSON API (v1). Bearer tokens or a browser session; errors are `{"error": {"code", "message"}}`.

mod exports;
mod projects;
mod quality;
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
            .route("/runs/{id}/cancel", web::post().to(runs::cancel))
            .route("/projects/{slug}/quality", web::get().to(quality::report))
            .route("/projects/{slug}/quality/settings", web::post().to(quality::settings))
            .route("/projects/{slug}/quality/pauses/{user}/lift", web::post().to(quality::lift))
            .route("/projects/{slug}/quality/honeypots", web::post().to(quality::honeypots))
            .route("/projects/{slug}/quality/extend", web::post().to(quality::extend))
            .route("/projects/{slug}/items/{item}/gold", web::post().to(quality::mark_gold))
            .route("/projects/{slug}/items/{item}/gold", web::delete().to(quality::unmark_gold)),
    );
}

/// The project if the caller may see it with `role` (see [`crate::services::project`]).
pub async fn project(state: &AppState, auth: &Auth, slug: &str, role: Role) -> Result<Project, AppError> {
    crate::services::project(&state.pool, &auth.user, slug, role).await
}
