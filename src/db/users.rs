//! Accounts, sessions, sign-in throttling and API tokens. Secrets (session ids, tokens) are
//! stored only as keyed hashes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::domain::{login, Email, TokenId, UserId};

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

/// The active account with `email` and its password hash (a deactivated one signs in no more).
pub async fn by_email(conn: &mut PgConnection, email: &Email) -> sqlx::Result<Option<(User, String)>> {
    let row: Option<(UserId, String, bool, String, String)> =
        sqlx::query_as("SELECT id, email, is_admin, pseudonym, password_hash FROM users WHERE email = $1 AND deactivated_at IS NULL")
            .bind(email.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(id, email, is_admin, pseudonym, hash)| (User { id, email, is_admin, pseudonym }, hash)))
}

pub async fn password_hash(conn: &mut PgConnection, user: UserId) -> sqlx::Result<String> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1").bind(user).fetch_one(conn).await
}

/// Sets a new password and ends every session of the account, and with `revoke_tokens` its API
/// tokens too.
pub async fn set_password(conn: &mut PgConnection, user: UserId, hash: &str, revoke_tokens: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1").bind(user).bind(hash).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user).execute(&mut *conn).await?;
    if revoke_tokens {
        sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL").bind(user).execute(conn).await?;
    }
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
         WHERE s.id_hash = $1 AND s.expires_at > now() AND u.deactivated_at IS NULL",
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

/// Reserves a sign-in attempt for (email, client address) before its password is checked, or
/// says how long to wait (`domain::login::may_attempt`). Attempts from one address are
/// serialised by an advisory lock, so concurrent ones cannot all pass the check.
pub async fn reserve_attempt(conn: &mut PgConnection, email: &str, address: &str) -> sqlx::Result<Result<i64, Duration>> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('rl_login ' || $1, 0))").bind(address).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM login_attempts WHERE address = $1 AND at < now() - interval '1 day'").bind(address).execute(&mut *tx).await?;
    // Failures since the key's last success (within a day); attempts still being checked
    // (unless their server died a minute ago); the address's attempts that were not successes.
    let (failures, pending, since, from_address): (i64, i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'failed'),
                count(*) FILTER (WHERE outcome IS NULL AND at > now() - interval '1 minute'),
                extract(epoch FROM now() - max(at) FILTER (WHERE outcome = 'failed'))::float8,
                (SELECT count(*) FROM login_attempts WHERE address = $2 AND at > now() - interval '15 minutes' AND outcome IS DISTINCT FROM 'ok')
         FROM login_attempts
         WHERE email = $1 AND address = $2
           AND id > coalesce((SELECT max(id) FROM login_attempts WHERE email = $1 AND address = $2 AND outcome = 'ok'), 0)",
    )
    .bind(email)
    .bind(address)
    .fetch_one(&mut *tx)
    .await?;
    if from_address >= login::MAX_ATTEMPTS_PER_ADDRESS {
        return Ok(Err(Duration::from_secs(15 * 60)));
    }
    if let Err(wait) = login::may_attempt(failures, pending, since.unwrap_or(f64::INFINITY)) {
        return Ok(Err(wait));
    }
    let id =
        sqlx::query_scalar("INSERT INTO login_attempts (email, address) VALUES ($1, $2) RETURNING id").bind(email).bind(address).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// Records how a reserved attempt ended.
pub async fn finish_attempt(conn: &mut PgConnection, attempt: i64, ok: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE login_attempts SET outcome = $2 WHERE id = $1").bind(attempt).bind(if ok { "ok" } else { "failed" }).execute(conn).await?;
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
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.deactivated_at IS NULL",
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
