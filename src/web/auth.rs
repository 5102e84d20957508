//! Who is calling: a session cookie (browser) or a bearer token (scripts). Session ids and
//! tokens are stored only as HMACs under the server's session key. Cookie-authenticated
//! requests that change state must prove the session's CSRF token and, when the browser names
//! one, come from this server's origin.

use std::future::Future;
use std::pin::Pin;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::{self, HeaderName};
use actix_web::{web, FromRequest, HttpRequest};

use super::error::AppError;
use super::AppState;
use crate::db::users::{self, User};
use crate::settings::public_origin;

pub use crate::services::accounts::{hash_password, keyed_hash, random_secret, verify_password};

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Session { id_hash: Vec<u8>, csrf: String },
    Token,
}

/// A signed-in caller.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user: User,
    pub via: Via,
}

impl Auth {
    /// The CSRF token forms must carry (empty for token callers, who need none).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            Via::Token => "",
        }
    }

    /// Checks a form's CSRF token against the session's.
    pub fn check_csrf(&self, given: &str) -> Result<(), AppError> {
        match &self.via {
            Via::Session { csrf, .. } if !constant_time_eq(csrf.as_bytes(), given.as_bytes()) => {
                Err(AppError::Forbidden("the form's CSRF token is missing or stale; reload the page and try again".into()))
            }
            _ => Ok(()),
        }
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session and sign-in cookies as the deployment's scheme allows: over HTTPS `Secure` with
/// the `__Host-` prefix; over plain HTTP neither (a browser would drop them).
#[derive(Debug, Clone, Copy)]
pub struct Cookies {
    secure: bool,
}

impl Cookies {
    pub fn new(https: bool) -> Self {
        Self { secure: https }
    }

    pub fn session_name(self) -> &'static str {
        if self.secure {
            "__Host-rl_session"
        } else {
            "rl_session"
        }
    }

    /// The sign-in form's double-submit cookie.
    pub fn login_name(self) -> &'static str {
        if self.secure {
            "__Host-rl_login"
        } else {
            "rl_login"
        }
    }

    pub fn session(self, value: String) -> Cookie<'static> {
        self.build(self.session_name(), value, SameSite::Lax)
    }

    pub fn login(self, value: String) -> Cookie<'static> {
        self.build(self.login_name(), value, SameSite::Strict)
    }

    /// A cookie that deletes `cookie` in the browser: the same name, path and `Secure` flag.
    pub fn removal(mut cookie: Cookie<'static>) -> Cookie<'static> {
        cookie.make_removal();
        cookie
    }

    fn build(self, name: &'static str, value: String, same_site: SameSite) -> Cookie<'static> {
        Cookie::build(name, value).path("/").secure(self.secure).http_only(true).same_site(same_site).finish()
    }
}

/// The client's address: the last entry of the trusted proxy's header when one is configured
/// and present (the entry that proxy wrote itself), else the peer's address.
pub fn client_address(req: &HttpRequest, proxy_header: Option<&HeaderName>) -> String {
    let parse = |a: &str| a.parse::<IpAddr>().ok().or_else(|| a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()));
    let from_proxy = proxy_header
        .and_then(|h| req.headers().get_all(h).last())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| parse(a.trim()));
    from_proxy.or_else(|| req.peer_addr().map(|a| a.ip())).map(|ip| ip.to_string()).unwrap_or_default()
}

/// A second line behind the CSRF token: a state-changing browser request whose `Origin` is not
/// this server's (the public URL's origin, else the request's own Host) is refused.
pub fn check_origin(req: &HttpRequest, expected: Option<&str>) -> Result<(), AppError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let same = match expected {
        Some(expected) => origin == expected,
        None => {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()));
            let scheme = origin.split_once("://").map(|(s, _)| s).unwrap_or("");
            host.and_then(|h| public_origin(&format!("{scheme}://{h}")).ok()).is_some_and(|own| public_origin(&origin).is_ok_and(|o| o == own))
        }
    };
    if same {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!("this request came from another site ({origin}); open rewardlab itself and try again")))
    }
}

/// Runs the sign-in password checks and counts them (the throttle's tests read the count). An
/// unknown account is checked against a dummy hash, so it costs what a wrong password costs.
#[derive(Debug, Default)]
pub struct LoginChecks {
    count: AtomicU64,
}

static DUMMY_HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// A hash of a random password with the same parameters as real ones, made once.
pub async fn dummy_hash() -> anyhow::Result<&'static String> {
    DUMMY_HASH.get_or_try_init(|| hash_password(random_secret(""))).await
}

impl LoginChecks {
    /// Whether `password` matches `hash`; with no hash (no such account) always false, after the same work.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let (hash, real) = match hash {
            Some(h) => (h, true),
            None => (dummy_hash().await?.clone(), false),
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(verify_password(password, hash).await? && real)
    }

    /// Passwords checked so far by sign-ins.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl FromRequest for Auth {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            authenticate(&req).await.map_err(
                |e| {
                    if req.path().starts_with("/api/") {
                        super::error::ApiError(e).into()
                    } else {
                        super::error::PageError(e).into()
                    }
                },
            )
        })
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Auth, AppError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(|| anyhow::anyhow!("no state"))?;
    let mut conn = state.pool.acquire().await?;
    if let Some(token) = bearer(req) {
        let user = users::by_token(&mut conn, &keyed_hash(state.key.expose(), &token)).await?.ok_or(AppError::Unauthorized)?;
        return Ok(Auth { user, via: Via::Token });
    }
    let cookie = req.cookie(state.cookies.session_name()).ok_or(AppError::Unauthorized)?;
    let id_hash = keyed_hash(state.key.expose(), cookie.value());
    let (user, csrf) = users::session(&mut conn, &id_hash).await?.ok_or(AppError::Unauthorized)?;
    let auth = Auth { user, via: Via::Session { id_hash, csrf } };
    if !req.method().is_safe() {
        check_origin(req, state.web.origin.as_deref())?;
        if let Some(given) = req.headers().get("X-CSRF-Token").and_then(|v| v.to_str().ok()) {
            auth.check_csrf(given)?;
        } else if req.path().starts_with("/api/") {
            return Err(AppError::Forbidden("a browser call that changes state needs the X-CSRF-Token header".into()));
        }
    }
    Ok(auth)
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get("Authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}
