//! An invitation link: the invitee sets their password, once. The form carries a
//! double-submit CSRF token (its visitor has no session yet), as the sign-in form does.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::pages::{html, Layout, MessagePage};
use crate::services::people;
use crate::web::auth::{check_origin, random_secret, Cookies};
use crate::web::error::{AppError, PageError};
use crate::web::AppState;

#[derive(Template)]
#[template(path = "session/invite.html")]
pub struct InvitePage {
    pub layout: Layout,
    pub email: String,
    pub token: String,
}

/// The invitation's form; not found (with how to get a new link) when it is used or expired.
pub async fn show(state: web::Data<AppState>, token: web::Path<String>) -> Result<HttpResponse, PageError> {
    let email = people::invitation(&state.pool, state.key.expose(), &token).await.map_err(gone)?;
    let csrf = random_secret("");
    let page = InvitePage { layout: Layout { csrf: csrf.clone(), ..Layout::default() }, email, token: token.into_inner() };
    let mut res = html(&page);
    res.add_cookie(&state.cookies.login(csrf)).map_err(anyhow::Error::from)?;
    Ok(res)
}

fn gone(e: AppError) -> AppError {
    match e {
        AppError::NotFound => AppError::Invalid(
            "this invitation link does not work: it was used already, replaced by a newer one, or has expired. Ask a site admin for a new link.".into(),
        ),
        other => other,
    }
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    csrf: String,
    password: String,
    #[serde(default)]
    repeat: String,
}

pub async fn accept(state: web::Data<AppState>, req: HttpRequest, token: web::Path<String>, form: web::Form<AcceptForm>) -> Result<HttpResponse, PageError> {
    let expected = req.cookie(state.cookies.login_name()).map(|c| c.value().to_string()).unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return Err(AppError::Forbidden("the form expired; open the invitation link again".into()).into());
    }
    check_origin(&req, state.web.origin.as_deref())?;
    if form.password != form.repeat {
        return Err(AppError::Invalid("repeat: the two passwords differ".into()).into());
    }
    people::accept(&state.pool, state.key.expose(), &token, &form.password).await.map_err(gone)?;
    let page = MessagePage {
        layout: Layout::default(),
        title: "Password set",
        message: "Your password is set: sign in with your email and it.".into(),
        back: "/login".into(),
    };
    let mut res = html(&page);
    res.add_cookie(&Cookies::removal(state.cookies.login(String::new()))).map_err(anyhow::Error::from)?;
    Ok(res)
}
