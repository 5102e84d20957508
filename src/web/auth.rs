//! Who is calling: a session cookie (browser) or a bearer token (scripts). Session ids and
//! tokens are stored only as HMACs under the server's session key. Cookie-authenticated
//! requests that change state must prove the session's CSRF token.

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, FromRequest, HttpRequest};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::error::AppError;
use super::AppState;
use crate::db::users::{self, User};

pub const SESSION_COOKIE: &str = "__Host-rl_session";

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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A keyed hash of a session id or token, as stored.
pub fn keyed_hash(key: &[u8], secret: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A fresh random secret, URL-safe.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn session_cookie(value: String) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value).path("/").secure(true).http_only(true).same_site(SameSite::Lax).finish()
}

impl FromRequest for Auth {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            authenticate(&req).await.map_err(|e| {
                if req.path().starts_with("/api/") {
                    super::error::ApiError(e).into()
                } else {
                    super::error::PageError(e).into()
                }
            })
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
    let cookie = req.cookie(SESSION_COOKIE).ok_or(AppError::Unauthorized)?;
    let id_hash = keyed_hash(state.key.expose(), cookie.value());
    let (user, csrf) = users::session(&mut conn, &id_hash).await?.ok_or(AppError::Unauthorized)?;
    let auth = Auth { user, via: Via::Session { id_hash, csrf } };
    if !req.method().is_safe() {
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

/// At most two password hashes run at once, on the blocking pool, never on a request thread.
static HASH_SLOTS: Semaphore = Semaphore::const_new(2);

pub async fn hash_password(password: String) -> anyhow::Result<String> {
    let _slot = HASH_SLOTS.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("hashing: {e}"))
    })
    .await?
}

pub async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
    let _slot = HASH_SLOTS.acquire().await?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await?
}
