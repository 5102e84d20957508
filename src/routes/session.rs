//! Signing in and out. Login is throttled per email and per address, the session id is new at
//! every login, and the login form itself carries a double-submit CSRF token.

use actix_web::cookie::{time::Duration, Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::pages::{html, html_with_status, redirect, CsrfOnly, Layout, LoginPage};
use crate::db::users;
use crate::domain::Email;
use crate::web::auth::{keyed_hash, random_secret, session_cookie, verify_password, Auth, Via, SESSION_COOKIE};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

const PRELOGIN_COOKIE: &str = "__Host-rl_login";
const MAX_FAILURES_PER_EMAIL: i64 = 5;
const MAX_FAILURES_PER_ADDRESS: i64 = 50;

pub async fn login_page() -> HttpResponse {
    let token = random_secret("");
    let cookie = Cookie::build(PRELOGIN_COOKIE, token.clone()).path("/").secure(true).http_only(true).same_site(SameSite::Strict).finish();
    let mut res = html(&LoginPage { layout: Layout { email: None, csrf: token }, error: None });
    let _ = res.add_cookie(&cookie);
    res
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
}

fn failed(csrf: &str, message: &str, status: actix_web::http::StatusCode) -> HttpResponse {
    html_with_status(status, &LoginPage { layout: Layout { email: None, csrf: csrf.to_string() }, error: Some(message.to_string()) })
}

pub async fn login(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LoginForm>) -> Result<HttpResponse, PageError> {
    use actix_web::http::StatusCode;
    let expected = req.cookie(PRELOGIN_COOKIE).map(|c| c.value().to_string()).unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return Err(AppError::Forbidden("the sign-in form expired; reload the page and try again".into()).into());
    }
    let ip = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let email_text = form.email.trim().to_lowercase();
    let mut conn = state.pool.acquire().await?;
    let (by_email, by_ip) = users::recent_failures(&mut conn, &email_text, &ip).await?;
    if by_email >= MAX_FAILURES_PER_EMAIL || by_ip >= MAX_FAILURES_PER_ADDRESS {
        return Ok(failed(&form.csrf, "Too many failed sign-ins; wait 15 minutes and try again.", StatusCode::TOO_MANY_REQUESTS));
    }
    let found = match Email::parse(&email_text) {
        Ok(email) => users::by_email(&mut conn, &email).await?,
        Err(_) => None,
    };
    let ok = match &found {
        Some((_, hash)) => verify_password(form.password.clone(), hash.clone()).await?,
        None => false,
    };
    let Some((user, _)) = found.filter(|_| ok) else {
        users::record_failure(&mut conn, &email_text, &ip).await?;
        return Ok(failed(&form.csrf, "Wrong email or password.", StatusCode::UNAUTHORIZED));
    };
    if let Some(old) = req.cookie(SESSION_COOKIE) {
        users::delete_session(&mut conn, &keyed_hash(state.key.expose(), old.value())).await?;
    }
    let session_id = random_secret("");
    users::create_session(&mut conn, &keyed_hash(state.key.expose(), &session_id), user.id, &random_secret("")).await?;
    let mut res = redirect("/");
    res.add_cookie(&session_cookie(session_id)).map_err(anyhow::Error::from)?;
    let mut gone = Cookie::build(PRELOGIN_COOKIE, "").path("/").secure(true).finish();
    gone.set_max_age(Duration::ZERO);
    res.add_cookie(&gone).map_err(anyhow::Error::from)?;
    Ok(res)
}

pub async fn logout(state: web::Data<AppState>, auth: Auth, form: web::Form<CsrfOnly>) -> Result<HttpResponse, PageError> {
    auth.check_csrf(&form.csrf)?;
    if let Via::Session { id_hash, .. } = &auth.via {
        users::delete_session(&mut *state.pool.acquire().await?, id_hash).await?;
    }
    let mut res = redirect("/login");
    let mut gone = session_cookie(String::new());
    gone.set_max_age(Duration::ZERO);
    res.add_cookie(&gone).map_err(anyhow::Error::from)?;
    Ok(res)
}
