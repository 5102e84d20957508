//! Accounts, sessions, sign-in throttling and API tokens. Secrets (session ids, tokens) are
//! stored only as keyed hashes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::domain::{login, Email, TokenId, UserId};

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub is_admin: bool,
    pub pseudonym: String,
}

/// Whether any account exists (the login page tells how to make the first one when none does).
pub async fn any(conn: &mut PgConnection) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users) AS "any!""#).fetch_one(conn).await
}

/// The name an account's judgements carry in exports (`L-` and 12 random hex digits).
pub(crate) fn new_pseudonym() -> String {
    format!("L-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Creates an account; `None` when the email is taken.
pub async fn insert(conn: &mut PgConnection, email: &Email, password_hash: &str, is_admin: bool) -> sqlx::Result<Option<UserId>> {
    let id = UserId::new();
    let pseudonym = new_pseudonym();
    sqlx::query_scalar!(
        r#"INSERT INTO users (id, email, password_hash, is_admin, pseudonym) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (email) DO NOTHING RETURNING id AS "id: UserId""#,
        id as UserId,
        email.as_str(),
        password_hash,
        is_admin,
        pseudonym,
    )
    .fetch_optional(conn)
    .await
}

/// The active account with `email` and its password hash (a deactivated one signs in no more).
pub async fn by_email(conn: &mut PgConnection, email: &Email) -> sqlx::Result<Option<(User, String)>> {
    let row = sqlx::query!("SELECT id, email, is_admin, pseudonym, password_hash FROM users WHERE email = $1 AND deactivated_at IS NULL", email.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| (User { id: r.id.into(), email: r.email, is_admin: r.is_admin, pseudonym: r.pseudonym }, r.password_hash)))
}

pub async fn password_hash(conn: &mut PgConnection, user: UserId) -> sqlx::Result<String> {
    sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", user as UserId).fetch_one(conn).await
}

/// Sets a new password and ends every session of the account, and with `revoke_tokens` its API
/// tokens too.
pub async fn set_password(conn: &mut PgConnection, user: UserId, hash: &str, revoke_tokens: bool) -> sqlx::Result<()> {
    sqlx::query!("UPDATE users SET password_hash = $2 WHERE id = $1", user as UserId, hash).execute(&mut *conn).await?;
    sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user as UserId).execute(&mut *conn).await?;
    if revoke_tokens {
        sqlx::query!("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user as UserId).execute(conn).await?;
    }
    Ok(())
}

pub async fn create_session(conn: &mut PgConnection, id_hash: &[u8], user: UserId, csrf: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (id_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, now() + interval '7 days')",
        id_hash,
        user as UserId,
        csrf,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The live session's user and CSRF token.
pub async fn session(conn: &mut PgConnection, id_hash: &[u8]) -> sqlx::Result<Option<(User, String)>> {
    let row = sqlx::query!(
        "SELECT u.id, u.email, u.is_admin, u.pseudonym, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_hash = $1 AND s.expires_at > now() AND u.deactivated_at IS NULL",
        id_hash,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (User { id: r.id.into(), email: r.email, is_admin: r.is_admin, pseudonym: r.pseudonym }, r.csrf_token)))
}

pub async fn delete_session(conn: &mut PgConnection, id_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM sessions WHERE id_hash = $1", id_hash).execute(conn).await?;
    Ok(())
}

/// Reserves a sign-in attempt for (email, client address) before its password is checked, or
/// says how long to wait (`domain::login::may_attempt`). Attempts from one address are
/// serialised by an advisory lock, so concurrent ones cannot all pass the check.
pub async fn reserve_attempt(conn: &mut PgConnection, email: &str, address: &str) -> sqlx::Result<Result<i64, Duration>> {
    let mut tx = conn.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('rl_login ' || $1, 0))", address).execute(&mut *tx).await?;
    sqlx::query!("DELETE FROM login_attempts WHERE address = $1 AND at < now() - interval '1 day'", address).execute(&mut *tx).await?;
    // Failures since the key's last success (within a day); attempts still being checked
    // (unless their server died a minute ago); the address's attempts that were not successes.
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE outcome = 'failed') AS "failures!",
                count(*) FILTER (WHERE outcome IS NULL AND at > now() - interval '1 minute') AS "pending!",
                extract(epoch FROM now() - max(at) FILTER (WHERE outcome = 'failed'))::float8 AS since,
                (SELECT count(*) FROM login_attempts WHERE address = $2 AND at > now() - interval '15 minutes' AND outcome IS DISTINCT FROM 'ok')
                    AS "from_address!"
         FROM login_attempts
         WHERE email = $1 AND address = $2
           AND id > coalesce((SELECT max(id) FROM login_attempts WHERE email = $1 AND address = $2 AND outcome = 'ok'), 0)"#,
        email,
        address,
    )
    .fetch_one(&mut *tx)
    .await?;
    let (failures, pending, since, from_address) = (row.failures, row.pending, row.since, row.from_address);
    if from_address >= login::MAX_ATTEMPTS_PER_ADDRESS {
        return Ok(Err(Duration::from_secs(15 * 60)));
    }
    if let Err(wait) = login::may_attempt(failures, pending, since.unwrap_or(f64::INFINITY)) {
        return Ok(Err(wait));
    }
    let id = sqlx::query_scalar!("INSERT INTO login_attempts (email, address) VALUES ($1, $2) RETURNING id", email, address).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// Records how a reserved attempt ended.
pub async fn finish_attempt(conn: &mut PgConnection, attempt: i64, ok: bool) -> sqlx::Result<()> {
    sqlx::query!("UPDATE login_attempts SET outcome = $2 WHERE id = $1", attempt, if ok { "ok" } else { "failed" }).execute(conn).await?;
    Ok(())
}

pub async fn insert_token(conn: &mut PgConnection, user: UserId, name: &str, hash: &[u8]) -> sqlx::Result<TokenId> {
    let id = TokenId::new();
    sqlx::query!("INSERT INTO api_tokens (id, user_id, name, token_hash) VALUES ($1, $2, $3, $4)", id as TokenId, user as UserId, name, hash)
        .execute(conn)
        .await?;
    Ok(id)
}

/// The user a live token belongs to; marks it used (at most once a minute, so most calls
/// are a plain read).
pub async fn by_token(conn: &mut PgConnection, hash: &[u8]) -> sqlx::Result<Option<User>> {
    let row = sqlx::query!(
        r#"SELECT u.id, u.email, u.is_admin, u.pseudonym, t.id AS token,
                t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' AS "stale!"
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.deactivated_at IS NULL"#,
        hash,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    if r.stale {
        sqlx::query!("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", r.token).execute(conn).await?;
    }
    Ok(Some(User { id: r.id.into(), email: r.email, is_admin: r.is_admin, pseudonym: r.pseudonym }))
}

/// One of a user's tokens, for the account page.
#[derive(Debug)]
pub struct TokenRow {
    pub id: TokenId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn tokens(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at",
        user as UserId,
    )
    .fetch_all(conn)
    .await
}

/// Revokes one of the caller's own tokens; false when there is no such live token.
pub async fn revoke_token(conn: &mut PgConnection, user: UserId, token: TokenId) -> sqlx::Result<bool> {
    let done =
        sqlx::query!("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL", token as TokenId, user as UserId,)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}
