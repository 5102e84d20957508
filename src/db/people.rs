//! People management: accounts as an admin sees them, creating and (de)activating them, and
//! one-time invitation links (stored only as keyed hashes). Every admin action carries its
//! gate in the query: the caller is an active site admin.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{Email, UserId};

/// An account as the Users page lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
    pub deactivated_at: Option<DateTime<Utc>>,
    /// When its pending invitation expires (an invited account that has not set a password).
    pub invited_until: Option<DateTime<Utc>>,
    pub projects: i64,
}

/// Whether `user` is an active site admin.
pub async fn is_admin(conn: &mut PgConnection, user: UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL) AS "admin!""#, user as UserId)
        .fetch_one(conn)
        .await
}

/// Every account, for the admin `caller` (nothing for anyone else).
pub async fn accounts(conn: &mut PgConnection, caller: UserId) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as!(
        Account,
        r#"SELECT u.id, u.email, u.is_admin, u.created_at, u.deactivated_at,
                (SELECT max(i.expires_at) FROM invites i WHERE i.user_id = u.id AND i.used_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > now())
                    AS invited_until,
                (SELECT count(*) FROM memberships m WHERE m.user_id = u.id) AS "projects!"
           FROM users u WHERE EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL) ORDER BY u.email"#,
        caller as UserId,
    )
    .fetch_all(conn)
    .await
}

/// Creates an account for the admin `caller`; `None` when the email is taken (or the caller is
/// no admin: check [`is_admin`] first to tell them apart).
pub async fn create(conn: &mut PgConnection, caller: UserId, email: &Email, is_admin: bool, password_hash: &str) -> sqlx::Result<Option<UserId>> {
    let pseudonym = super::users::new_pseudonym();
    sqlx::query_scalar!(
        r#"INSERT INTO users (id, email, password_hash, is_admin, pseudonym) SELECT $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL)
           ON CONFLICT (email) DO NOTHING RETURNING id AS "id: UserId""#,
        caller as UserId,
        UserId::new() as UserId,
        email.as_str(),
        password_hash,
        is_admin,
        pseudonym,
    )
    .fetch_optional(conn)
    .await
}

/// Stores a new invitation of the active account `user` for the admin `caller`, revoking its
/// unused ones; false when there is no such account (or the caller is no admin).
pub async fn invite(conn: &mut PgConnection, caller: UserId, user: UserId, token_hash: &[u8], expires_at: DateTime<Utc>) -> sqlx::Result<bool> {
    sqlx::query!(
        "UPDATE invites SET revoked_at = now() WHERE user_id = $2 AND used_at IS NULL AND revoked_at IS NULL AND EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL)",
        caller as UserId,
        user as UserId,
    )
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query!(
        "INSERT INTO invites (id, user_id, token_hash, created_by, expires_at)
         SELECT gen_random_uuid(), u.id, $3, $1, $4 FROM users u WHERE u.id = $2 AND u.deactivated_at IS NULL AND EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL)",
        caller as UserId,
        user as UserId,
        token_hash,
        expires_at,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The email of the account a live invitation (unused, not revoked, not expired, its account
/// active) is for.
pub async fn invitation(conn: &mut PgConnection, token_hash: &[u8]) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT u.email FROM invites i JOIN users u ON u.id = i.user_id
         WHERE i.token_hash = $1 AND i.used_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > now() AND u.deactivated_at IS NULL",
        token_hash,
    )
    .fetch_optional(conn)
    .await
}

/// Uses a live invitation, once: the account it is for, whose password the caller then sets in
/// the same transaction.
pub async fn use_invitation(conn: &mut PgConnection, token_hash: &[u8]) -> sqlx::Result<Option<UserId>> {
    sqlx::query_scalar!(
        r#"UPDATE invites i SET used_at = now() FROM users u
           WHERE i.token_hash = $1 AND u.id = i.user_id AND i.used_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > now() AND u.deactivated_at IS NULL
           RETURNING i.user_id AS "user_id: UserId""#,
        token_hash,
    )
    .fetch_optional(conn)
    .await
}

/// Deactivates (`active` false) or reactivates `user` for the admin `caller`, never the caller
/// itself. Deactivating ends the account's sessions and revokes its API tokens and unused
/// invitations at once. False when nothing changed hands (no such account, or not an admin).
pub async fn set_active(conn: &mut PgConnection, caller: UserId, user: UserId, active: bool) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "UPDATE users SET deactivated_at = CASE WHEN $3 THEN NULL ELSE COALESCE(deactivated_at, now()) END WHERE id = $2 AND id <> $1 AND EXISTS (SELECT 1 FROM users a WHERE a.id = $1 AND a.is_admin AND a.deactivated_at IS NULL)",
        caller as UserId,
        user as UserId,
        active,
    )
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 && !active {
        sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user as UserId).execute(&mut *conn).await?;
        sqlx::query!("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user as UserId).execute(&mut *conn).await?;
        sqlx::query!("UPDATE invites SET revoked_at = now() WHERE user_id = $1 AND used_at IS NULL AND revoked_at IS NULL", user as UserId)
            .execute(conn)
            .await?;
    }
    Ok(done.rows_affected() == 1)
}
