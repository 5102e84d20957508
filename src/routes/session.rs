//! Signing in and out. An attempt is reserved per (email, client address) before its password
//! is checked, and throttled with backoff; an unknown email costs the same check as a wrong
//! password. The session id is new at every login, and the login form itself carries a
//! double-submit CSRF token.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use askama::Template;

use super::pages::{html, html_with_status, redirect, CsrfOnly, Layout};
use crate::db::users;
use crate::domain::Email;
use crate::web::auth::{check_origin, client_address, keyed_hash, random_secret, Auth, Cookies, Via};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "session/login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub error: Option<String>,
    /// No account exists yet: the page says how the first one is made.
    pub first_run: bool,
}

pub async fn login_page(state: web::Data<AppState>) -> HttpResponse {
    let token = random_secret("");
    // An unreachable database is the sign-in's to report; here it only hides the first-run note.
    let first_run = match state.pool.acquire().await {
        Ok(mut conn) => matches!(users::any(&mut conn).await, Ok(false)),
        Err(_) => false,
    };
    let mut res = html(&LoginPage { layout: Layout { email: None, csrf: token.clone(), ..Layout::default() }, error: None, first_run });
    let _ = res.add_cookie(&state.cookies.login(token));
    res
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
}

fn failed(csrf: &str, message: &str, status: StatusCode) -> HttpResponse {
    html_with_status(
        status,
        &LoginPage { layout: Layout { email: None, csrf: csrf.to_string(), ..Layout::default() }, error: Some(message.to_string()), first_run: false },
    )
}

fn wait_text(wait: std::time::Duration) -> String {
    match wait.as_secs() {
        s if s < 90 => format!("{} seconds", s.max(1)),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

pub async fn login(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LoginForm>) -> Result<HttpResponse, PageError> {
    let expected = req.cookie(state.cookies.login_name()).map(|c| c.value().to_string()).unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return Err(AppError::Forbidden("the sign-in form expired; reload the page and try again".into()).into());
    }
    check_origin(&req, state.web.origin.as_deref())?;
    let address = client_address(&req, state.web.client_ip_header.as_ref());
    // Text that is no email (too long, a NUL…) matches no account: it shares one throttle key.
    let email = Email::parse(&form.email).ok().filter(|e| !e.as_str().chars().any(char::is_control));
    let mut conn = state.pool.acquire().await?;
    let attempt = match users::reserve_attempt(&mut conn, email.as_ref().map_or("", |e| e.as_str()), &address).await? {
        Ok(attempt) => attempt,
        Err(wait) => {
            let message = format!("Too many failed sign-ins; try again in {}.", wait_text(wait));
            return Ok(failed(&form.csrf, &message, StatusCode::TOO_MANY_REQUESTS));
        }
    };
    let found = match &email {
        Some(email) => users::by_email(&mut conn, email).await?,
        None => None,
    };
    // No connection is held while the password waits for a hashing slot and is checked.
    drop(conn);
    let checked = state.login_checks.verify(form.password.clone(), found.as_ref().map(|(_, hash)| hash.clone())).await;
    let mut conn = state.pool.acquire().await?;
    users::finish_attempt(&mut conn, attempt, matches!(checked, Ok(true))).await?;
    let ok = checked?;
    let Some((user, _)) = found.filter(|_| ok) else {
        return Ok(failed(&form.csrf, "Wrong email or password.", StatusCode::UNAUTHORIZED));
    };
    if let Some(old) = req.cookie(state.cookies.session_name()) {
        users::delete_session(&mut conn, &keyed_hash(state.key.expose(), old.value())).await?;
    }
    let session_id = random_secret("");
    users::create_session(&mut conn, &keyed_hash(state.key.expose(), &session_id), user.id, &random_secret("")).await?;
    let mut res = redirect("/");
    res.add_cookie(&state.cookies.session(session_id)).map_err(anyhow::Error::from)?;
    res.add_cookie(&Cookies::removal(state.cookies.login(String::new()))).map_err(anyhow::Error::from)?;
    Ok(res)
}

pub async fn logout(state: web::Data<AppState>, auth: Auth, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    if let Via::Session { id_hash, .. } = &auth.via {
        users::delete_session(&mut *state.pool.acquire().await?, id_hash).await?;
    }
    let mut res = redirect("/login");
    res.add_cookie(&Cookies::removal(state.cookies.session(String::new()))).map_err(anyhow::Error::from)?;
    Ok(res)
}
