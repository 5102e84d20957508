//! Server-rendered pages, grouped by feature; the route table is here.

mod account;
mod admin;
mod invite;
mod item;
pub mod pages;
mod projects;
mod runs;
mod session;

use actix_web::{web, HttpResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/static/{file}", web::get().to(static_file))
        .route("/login", web::get().to(session::login_page))
        .route("/login", web::post().to(session::login))
        .route("/logout", web::post().to(session::logout))
        .route("/", web::get().to(projects::index::show))
        .route("/projects", web::post().to(projects::index::create))
        .route("/projects/{slug}", web::get().to(projects::show::show))
        .route("/projects/{slug}/guidelines", web::get().to(projects::guidelines::show))
        .route("/projects/{slug}/label", web::get().to(projects::label::show))
        .route("/projects/{slug}/labellers", web::get().to(projects::labellers::show))
        .route("/projects/{slug}/models", web::get().to(projects::models::show))
        .route("/projects/{slug}/items", web::get().to(projects::items::show))
        .route("/projects/{slug}/items/exclude", web::post().to(projects::items::exclude))
        .route("/projects/{slug}/items/send-back", web::post().to(projects::items::send_back))
        .route("/projects/{slug}/items/mark-gold", web::post().to(projects::items::mark_gold))
        .route("/projects/{slug}/exports", web::get().to(projects::export::show))
        .route("/projects/{slug}/settings", web::get().to(projects::settings::show))
        .route("/projects/{slug}/members", web::post().to(projects::members::add))
        .route("/projects/{slug}/members/{user}/remove", web::post().to(projects::members::remove))
        .route("/projects/{slug}/settings", web::post().to(projects::settings::update))
        .route("/projects/{slug}/queue", web::post().to(projects::settings::queue))
        .route("/projects/{slug}/import", web::post().to(projects::import::upload))
        .route("/projects/{slug}/exports", web::post().to(projects::export::create))
        .route("/projects/{slug}/items/{item}", web::get().to(item::show))
        .route("/projects/{slug}/items/{item}/gold", web::post().to(projects::quality::gold))
        .route("/projects/{slug}/quality", web::get().to(projects::quality::show))
        .route("/projects/{slug}/review", web::get().to(projects::review::show))
        .route("/projects/{slug}/review/{judgement}", web::post().to(projects::review::decide))
        .route("/projects/{slug}/review/items/{item}/adjudicate", web::post().to(projects::review::adjudicate))
        .route("/projects/{slug}/rejected", web::get().to(projects::review::rejected))
        .route("/projects/{slug}/quality/settings", web::post().to(projects::quality::settings))
        .route("/projects/{slug}/quality/pauses/{user}/lift", web::post().to(projects::quality::lift))
        .route("/projects/{slug}/quality/honeypots", web::post().to(projects::quality::honeypots))
        .route("/projects/{slug}/quality/extend", web::post().to(projects::quality::extend))
        .route("/projects/{slug}/runs", web::get().to(runs::list))
        .route("/projects/{slug}/runs", web::post().to(runs::start))
        .route("/projects/{slug}/runs/compare", web::get().to(runs::compare))
        .route("/projects/{slug}/runs/regression", web::get().to(runs::regression::show))
        .route("/projects/{slug}/runs/regression", web::post().to(runs::regression::freeze))
        .route("/projects/{slug}/runs/regression/{id}/activate", web::post().to(runs::regression::activate))
        .route("/projects/{slug}/runs/{id}", web::get().to(runs::show))
        .route("/projects/{slug}/runs/{id}/live", web::get().to(runs::live))
        .route("/projects/{slug}/runs/{id}/cancel", web::post().to(runs::cancel))
        .route("/projects/{slug}/runs/{id}/files/{name}", web::get().to(runs::file))
        .route("/projects/{slug}/schedules", web::post().to(runs::add_schedule))
        .route("/projects/{slug}/schedules/{id}/delete", web::post().to(runs::delete_schedule))
        .route("/projects/{slug}/webhooks", web::get().to(projects::webhooks::show))
        .route("/projects/{slug}/webhooks", web::post().to(projects::webhooks::create))
        .route("/projects/{slug}/webhooks/settings", web::post().to(projects::webhooks::settings))
        .route("/projects/{slug}/webhooks/{id}", web::get().to(projects::webhooks::log))
        .route("/projects/{slug}/webhooks/{id}/test", web::post().to(projects::webhooks::test))
        .route("/projects/{slug}/webhooks/{id}/rotate", web::post().to(projects::webhooks::rotate))
        .route("/projects/{slug}/webhooks/{id}/delete", web::post().to(projects::webhooks::delete))
        .route("/projects/{slug}/webhooks/{id}/deliveries/{delivery}/redeliver", web::post().to(projects::webhooks::redeliver))
        .route("/invite/{token}", web::get().to(invite::show))
        .route("/invite/{token}", web::post().to(invite::accept))
        .route("/admin/users", web::get().to(admin::show))
        .route("/admin/users", web::post().to(admin::create))
        .route("/admin/users/{id}/invite", web::post().to(admin::invite))
        .route("/admin/users/{id}/deactivate", web::post().to(admin::deactivate))
        .route("/admin/users/{id}/reactivate", web::post().to(admin::reactivate))
        .route("/account", web::get().to(account::show))
        .route("/account/password", web::post().to(account::password))
        .route("/account/tokens", web::post().to(account::create_token))
        .route("/account/tokens/{id}/revoke", web::post().to(account::revoke_token));
}

async fn healthz(state: web::Data<crate::web::AppState>) -> HttpResponse {
    match crate::db::ping(&state.pool).await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ok", "database": "ok"})),
        Err(_) => HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "degraded", "database": "unreachable"})),
    }
}

async fn static_file(file: web::Path<String>) -> HttpResponse {
    let (body, mime) = match file.as_str() {
        "label.js" => (include_str!("../../static/label.js"), "text/javascript; charset=utf-8"),
        "app.css" => (include_str!("../../static/app.css"), "text/css; charset=utf-8"),
        "label.css" => (include_str!("../../static/label.css"), "text/css; charset=utf-8"),
        "runs.js" => (include_str!("../../static/runs.js"), "text/javascript; charset=utf-8"),
        "review.js" => (include_str!("../../static/review.js"), "text/javascript; charset=utf-8"),
        "project.css" => (include_str!("../../static/project.css"), "text/css; charset=utf-8"),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok().content_type(mime).insert_header(("Cache-Control", "public, max-age=300")).body(body)
}
