//! What every page shares: the base layout's values, rendering a template to a response, and
//! the error page (rendered here, so the error type needs nothing from `routes/`).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;

use super::auth::Auth;

/// What the base layout needs: the signed-in email, the CSRF token for forms, and whether to
/// link the admin's Users page.
#[derive(Default)]
pub struct Layout {
    pub email: Option<String>,
    pub csrf: String,
    pub admin: bool,
}

impl Layout {
    pub fn of(auth: &Auth) -> Self {
        Self { email: Some(auth.user.email.clone()), csrf: auth.csrf().to_string(), admin: auth.user.is_admin }
    }
}

pub fn html<T: Template>(page: &T) -> HttpResponse {
    html_with_status(StatusCode::OK, page)
}

pub fn html_with_status<T: Template>(status: StatusCode, page: &T) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body),
        Err(e) => {
            log::error!("rendering a page: {e}");
            HttpResponse::InternalServerError().body("rendering failed")
        }
    }
}

pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header(("Location", to)).finish()
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub message: String,
}
