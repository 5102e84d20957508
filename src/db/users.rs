//! Accounts, sessions, login throttling and API tokens. Secrets (session ids, tokens) are
//! stored only as keyed hashes.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{Email, TokenId, UserId};

/// A signed-in account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub is_admin: bool,
    pub pseudonym: String,
}

/// Creates an account; `None` when the email is taken.
pub async fn insert(conn: &mut PgConnection, email: &Email, password_hash: &str, is_admin: bool) -> sqlx::Result<Option<UserId>> {
    let id = UserId::new();
    let pseudonym = format!("L-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    sqlx::query_scalar(
        "INSERT INTO users (id, email, password_hash, is_admin, pseudonym) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (email) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(email.as_str())
    .bind(password_hash)
    .bind(is_admin)
    .bind(pseudonym)
    .fetch_optional(conn)
    .await
}

pub async fn by_email(conn: &mut PgConnection, email: &Email) -> sqlx::Result<Option<(User, String)>> {
    let row: Option<(UserId, String, bool, String, String)> =
        sqlx::query_as("SELECT id, email, is_admin, pseudonym, password_hash FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(id, email, is_admin, pseudonym, hash)| (User { id, email, is_admin, pseudonym }, hash)))
}

pub async fn password_hash(conn: &mut PgConnection, user: UserId) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1").bind(user).fetch_one(conn).await
}

/// Sets a new password and revokes every session and token-less login of the account.
pub async fn set_password(conn: &mut PgConnection, user: UserId, hash: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1").bind(user).bind(hash).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user).execute(conn).await?;
    Ok(())
}

pub async fn create_session(conn: &mut PgConnection, id_hash: &[u8], user: UserId, csrf: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, now() + interval '7 days')")
        .bind(id_hash)
        .bind(user)
        .bind(csrf)
        .execute(conn)
        .await?;
    Ok(())
}

/// The live session's user and CSRF token.
pub async fn session(conn: &mut PgConnection, id_hash: &[u8]) -> sqlx::Result<Option<(User, String)>> {
    let row: Option<(UserId, String, bool, String, String)> = sqlx::query_as(
        "SELECT u.id, u.email, u.is_admin, u.pseudonym, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_hash = $1 AND s.expires_at > now()",
    )
    .bind(id_hash)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id, email, is_admin, pseudonym, csrf)| (User { id, email, is_admin, pseudonym }, csrf)))
}

pub async fn delete_session(conn: &mut PgConnection, id_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(conn).await?;
    Ok(())
}

/// Failed logins in the last 15 minutes for this email and for this address.
pub async fn recent_failures(conn: &mut PgConnection, email: &str, ip: &str) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE email = $1), count(*) FILTER (WHERE ip = $2) FROM login_failures
         WHERE at > now() - interval '15 minutes' AND (email = $1 OR ip = $2)",
    )
    .bind(email)
    .bind(ip)
    .fetch_one(conn)
    .await
}

pub async fn record_failure(conn: &mut PgConnection, email: &str, ip: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO login_failures (email, ip) VALUES ($1, $2)").bind(email).bind(ip).execute(conn).await?;
    Ok(())
}

pub async fn insert_token(conn: &mut PgConnection, user: UserId, name: &str, hash: &[u8]) -> sqlx::Result<TokenId> {
    let id = TokenId::new();
    sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(user)
        .bind(name)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(id)
}

/// The user a live token belongs to; marks it used (at most once a minute, so most calls
/// are a plain read).
pub async fn by_token(conn: &mut PgConnection, hash: &[u8]) -> sqlx::Result<Option<User>> {
    let row: Option<(UserId, String, bool, String, TokenId, bool)> = sqlx::query_as(
        "SELECT u.id, u.email, u.is_admin, u.pseudonym, t.id,
                t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, email, is_admin, pseudonym, token, stale)) = row else { return Ok(None) };
    if stale {
        sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1").bind(token).execute(conn).await?;
    }
    Ok(Some(User { id, email, is_admin, pseudonym }))
}

/// One of a user's tokens, for the account page.
#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: TokenId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn tokens(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as("SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at")
        .bind(user)
        .fetch_all(conn)
        .await
}

/// Revokes one of the caller's own tokens; false when there is no such live token.
pub async fn revoke_token(conn: &mut PgConnection, user: UserId, token: TokenId) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(token)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
