//! The JSON API (v1). Bearer tokens or a browser session; errors are `{"error": {"code", "message"}}`.

pub mod doc;
mod exports;
mod items;
mod people;
mod projects;
mod quality;
mod queue;
mod regression;
mod review;
pub mod runs;
mod tasks;
mod tokens;
mod webhooks;

use actix_web::web;

use self::doc::Common;

use crate::db::projects::Project;
use crate::domain::Role;
use crate::web::auth::Auth;
use crate::web::error::{ApiError, AppError};
use crate::web::AppState;

/// The route table, written once: each line registers a handler under `/api/v1` and puts its
/// `#[utoipa::path]` description into [`ApiDoc`] (a new endpoint is one line here plus the
/// attribute on its handler; a test checks that every route is in the description).
macro_rules! api_routes {
    ($($method:ident $path:literal => $($handler:ident)::+;)*) => {
        pub fn configure(cfg: &mut web::ServiceConfig) {
            cfg.service(
                web::scope("/api/v1")
                    .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError(AppError::Invalid(format!("query: {e}"))).into()))
                    $(.route($path, web::$method().to($($handler)::+)))*
                    .default_service(web::to(not_found)),
            );
        }

        /// Every route as `(method, full path)`, in the table's order.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), concat!("/api/v1", $path))),*];

        /// The OpenAPI description of the routes above.
        #[derive(utoipa::OpenApi)]
        #[openapi(
            info(title = "rewardlab", description = "The JSON API of rewardlab: projects, items, labelling, exports and training runs."),
            paths($($($handler)::+),*),
            components(schemas(doc::ErrorBody)),
            security(("token" = [])),
            modifiers(&Common),
        )]
        pub struct ApiDoc;
    };
}

api_routes! {
    get "/openapi.json" => doc::openapi_json;
    get "/docs" => doc::reference;
    get "/projects" => projects::list;
    post "/projects" => projects::create;
    post "/projects/{slug}/items" => projects::import;
    post "/projects/{slug}/items/exclude" => projects::exclude_items;
    post "/projects/{slug}/members" => projects::add_member;
    get "/projects/{slug}/members" => people::members;
    delete "/projects/{slug}/members/{user}" => people::remove_member;
    get "/users" => people::list;
    post "/users" => people::create;
    post "/users/{id}/invite" => people::invite;
    post "/users/{id}/deactivate" => people::deactivate;
    post "/users/{id}/reactivate" => people::reactivate;
    get "/projects/{slug}/dashboard" => projects::dashboard;
    get "/projects/{slug}/progress" => tasks::progress;
    post "/projects/{slug}/tasks/next" => tasks::next;
    post "/tasks/{task_id}/judgement" => tasks::submit;
    post "/tasks/{task_id}/skip" => tasks::skip;
    post "/projects/{slug}/exports" => exports::create;
    get "/projects/{slug}/exports" => exports::list;
    get "/exports/{id}/download" => exports::download;
    get "/exports/{id}/manifest" => exports::manifest;
    post "/projects/{slug}/runs" => runs::create;
    get "/projects/{slug}/runs" => runs::list;
    get "/projects/{slug}/leaderboard" => runs::leaderboard;
    get "/projects/{slug}/rm-agreement" => runs::rm_agreement;
    post "/projects/{slug}/schedules" => runs::schedule_create;
    get "/projects/{slug}/schedules" => runs::schedule_list;
    post "/projects/{slug}/regression-sets" => regression::freeze;
    get "/projects/{slug}/regression-sets" => regression::list;
    post "/projects/{slug}/regression-sets/{id}/activate" => regression::activate;
    get "/projects/{slug}/regression" => regression::report;
    delete "/projects/{slug}/schedules/{id}" => runs::schedule_delete;
    get "/runs/{id}" => runs::show;
    get "/runs/{id}/metrics" => runs::metrics;
    get "/runs/{id}/watchdog" => runs::watchdog;
    post "/runs/{id}/cancel" => runs::cancel;
    get "/projects/{slug}/quality" => quality::report;
    post "/projects/{slug}/quality/settings" => quality::settings;
    post "/projects/{slug}/quality/pauses/{user}/lift" => quality::lift;
    post "/projects/{slug}/quality/honeypots" => quality::honeypots;
    post "/projects/{slug}/quality/extend" => quality::extend;
    post "/projects/{slug}/items/{item}/gold" => quality::mark_gold;
    delete "/projects/{slug}/items/{item}/gold" => quality::unmark_gold;
    post "/projects/{slug}/webhooks" => webhooks::create;
    post "/tokens" => tokens::create;
    get "/tokens" => tokens::list;
    delete "/tokens/{id}" => tokens::revoke;
    get "/projects/{slug}/webhooks" => webhooks::list;
    post "/projects/{slug}/webhooks/settings" => webhooks::settings;
    get "/projects/{slug}/webhooks/{id}" => webhooks::show;
    delete "/projects/{slug}/webhooks/{id}" => webhooks::delete;
    post "/projects/{slug}/webhooks/{id}/rotate" => webhooks::rotate;
    post "/projects/{slug}/webhooks/{id}/test" => webhooks::test;
    post "/projects/{slug}/webhooks/{id}/deliveries/{delivery}/redeliver" => webhooks::redeliver;
    get "/projects/{slug}/review" => review::stream;
    post "/projects/{slug}/judgements/{judgement}/review" => review::review_judgement;
    post "/projects/{slug}/items/{item}/adjudication" => review::adjudicate;
    post "/projects/{slug}/items/send-back" => review::send_back;
    get "/projects/{slug}/items" => items::list;
    post "/projects/{slug}/items/mark-gold" => items::mark_gold;
    get "/projects/{slug}/rejected" => review::rejected;
    get "/projects/{slug}/queue" => queue::show;
    post "/projects/{slug}/queue" => queue::set;
}

/// A path under `/api/v1` that names no route (or a method the route has not): JSON, as every
/// other answer of the API.
async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(AppError::NotFound.into())
}

/// The project if the caller may see it with `role` (see [`crate::services::project`]).
pub async fn project(state: &AppState, auth: &Auth, slug: &str, role: Role) -> Result<Project, AppError> {
    crate::services::project(&state.pool, &auth.user, slug, role).await
}
