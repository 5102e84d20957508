//! Accounts: API tokens and passwords, and the secrets they are made of. Session ids and tokens
//! are stored only as HMACs under the server's session key; passwords as Argon2 hashes.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::error::{AppError, DbContext};
use crate::db::users::{self, TokenRow};
use crate::domain::{TokenId, TokenName, UserId};

/// Creates a token for `user` and stores its keyed hash; the token itself is returned, once.
pub async fn issue_token(pool: &PgPool, key: &[u8], user: UserId, name: &TokenName) -> Result<String, AppError> {
    let token = random_secret("rl_");
    users::insert_token(&mut *pool.acquire().await?, user, name.as_str(), &keyed_hash(key, &token)).await.context("storing a token")?;
    Ok(token)
}

pub async fn tokens(pool: &PgPool, user: UserId) -> Result<Vec<TokenRow>, AppError> {
    users::tokens(&mut *pool.acquire().await?, user).await.context("listing tokens")
}

/// Revokes one of `user`'s tokens; not found when it has none with `id`.
pub async fn revoke_token(pool: &PgPool, user: UserId, id: TokenId) -> Result<(), AppError> {
    if !users::revoke_token(&mut *pool.acquire().await?, user, id).await.context("revoking a token")? {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// Changes `user`'s password (already checked by [`crate::domain::check_password`]) when
/// `current` is right; see [`set_password`].
pub async fn change_password(pool: &PgPool, user: UserId, current: &str, new: &str, revoke_tokens: bool) -> Result<(), AppError> {
    let stored = users::password_hash(&mut *pool.acquire().await?, user).await.context("reading a password hash")?;
    if !verify_password(current.to_string(), stored).await? {
        return Err(AppError::Forbidden("the current password is wrong".into()));
    }
    set_password(pool, user, new, revoke_tokens).await
}

/// Sets a new password and ends every session of the account (and with `revoke_tokens` its API
/// tokens), all in one transaction.
pub async fn set_password(pool: &PgPool, user: UserId, new: &str, revoke_tokens: bool) -> Result<(), AppError> {
    let hash = hash_password(new.to_string()).await?;
    let mut tx = pool.begin().await?;
    users::set_password(&mut tx, user, &hash, revoke_tokens).await.context("setting a password")?;
    tx.commit().await.context("setting a password")?;
    Ok(())
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
