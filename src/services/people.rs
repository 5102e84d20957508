//! People management without a shell: an admin lists accounts, creates one with a one-time
//! invitation link, sends a new link, and deactivates or reactivates an account; the invitee
//! sets their password through the link. The invitation's token is stored only as a keyed
//! hash; a link works once, until it expires, and a new one replaces the unused ones.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use super::accounts::{hash_password, keyed_hash, random_secret};
use super::error::{AppError, DbContext};
use crate::db::people::{self, Account};
use crate::db::users::{self, User};
use crate::domain::{check_password, Email, UserId};

/// How long an invitation link works.
pub const INVITE_DAYS: i64 = 7;

/// A new invitation: its token (shown once, in the link) and when it expires.
pub struct Invite {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

async fn admin_only(conn: &mut sqlx::PgConnection, caller: &User) -> Result<(), AppError> {
    if !people::is_admin(conn, caller.id).await.context("checking the caller is an admin")? {
        return Err(AppError::Forbidden("only site admins manage accounts".into()));
    }
    Ok(())
}

pub async fn accounts(pool: &PgPool, caller: &User) -> Result<Vec<Account>, AppError> {
    let mut conn = pool.acquire().await?;
    admin_only(&mut conn, caller).await?;
    people::accounts(&mut conn, caller.id).await.context("listing accounts")
}

/// Creates an account (with an unusable random password until the invitee sets theirs) and its
/// first invitation, in one transaction.
pub async fn create(pool: &PgPool, key: &[u8], caller: &User, email: &Email, is_admin: bool) -> Result<(UserId, Invite), AppError> {
    let hash = hash_password(random_secret("")).await?;
    let mut tx = pool.begin().await?;
    admin_only(&mut tx, caller).await?;
    let id = people::create(&mut tx, caller.id, email, is_admin, &hash)
        .await
        .context("creating an account")?
        .ok_or_else(|| AppError::Conflict(format!("email: an account with {} exists", email.as_str())))?;
    let invite = new_invite(&mut tx, key, caller, id).await?;
    tx.commit().await.context("creating an account")?;
    Ok((id, invite))
}

/// A new invitation of `user`, replacing its unused ones.
pub async fn invite(pool: &PgPool, key: &[u8], caller: &User, user: UserId) -> Result<Invite, AppError> {
    let mut tx = pool.begin().await?;
    admin_only(&mut tx, caller).await?;
    let invite = new_invite(&mut tx, key, caller, user).await?;
    tx.commit().await.context("inviting")?;
    Ok(invite)
}

async fn new_invite(conn: &mut sqlx::PgConnection, key: &[u8], caller: &User, user: UserId) -> Result<Invite, AppError> {
    let token = random_secret("");
    let expires_at = Utc::now() + Duration::days(INVITE_DAYS);
    if !people::invite(conn, caller.id, user, &keyed_hash(key, &token), expires_at).await.context("storing an invitation")? {
        return Err(AppError::NotFound);
    }
    Ok(Invite { token, expires_at })
}

/// Deactivates or reactivates `user`; an admin cannot deactivate themselves.
pub async fn set_active(pool: &PgPool, caller: &User, user: UserId, active: bool) -> Result<(), AppError> {
    let mut tx = pool.begin().await?;
    admin_only(&mut tx, caller).await?;
    if user == caller.id {
        return Err(AppError::Conflict("an admin cannot deactivate their own account".into()));
    }
    if !people::set_active(&mut tx, caller.id, user, active).await.context("changing an account")? {
        return Err(AppError::NotFound);
    }
    tx.commit().await.context("changing an account")?;
    Ok(())
}

/// The email an invitation link is for; not found when the link is used, replaced or expired.
pub async fn invitation(pool: &PgPool, key: &[u8], token: &str) -> Result<String, AppError> {
    let mut conn = pool.acquire().await?;
    people::invitation(&mut conn, &keyed_hash(key, token)).await.context("reading an invitation")?.ok_or(AppError::NotFound)
}

/// Sets the invitee's password through the link, which works no more afterwards.
pub async fn accept(pool: &PgPool, key: &[u8], token: &str, password: &str) -> Result<(), AppError> {
    check_password(password).map_err(AppError::Invalid)?;
    let hash = hash_password(password.to_string()).await?;
    let mut tx = pool.begin().await?;
    let user = people::use_invitation(&mut tx, &keyed_hash(key, token)).await.context("using an invitation")?.ok_or(AppError::NotFound)?;
    users::set_password(&mut tx, user, &hash, false).await.context("setting a password")?;
    tx.commit().await.context("accepting an invitation")?;
    Ok(())
}
