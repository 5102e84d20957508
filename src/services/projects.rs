//! Projects: finding one for a caller, creating one with its lead, settings and members.

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::projects::{self as dbp, Member, Project};
use crate::db::runs::RmAgreement;
use crate::db::stats::Dashboard;
use crate::db::users::User;
use crate::domain::leaderboard::Entry;
use crate::domain::{Email, NewProject, ProjectSettings, Role, Slug, UserId};

/// The project if `user` may see it with `role`; not found otherwise (never forbidden to a
/// stranger, who must not learn that a project exists; a labeller asking for a lead's work is).
pub async fn project(pool: &PgPool, user: &User, slug: &str, role: Role) -> Result<Project, AppError> {
    let mut conn = pool.acquire().await?;
    if let Some(p) = dbp::for_user(&mut conn, user.id, slug, role).await.context("finding the project")? {
        return Ok(p);
    }
    if role != Role::Labeller && dbp::for_user(&mut conn, user.id, slug, Role::Labeller).await.context("finding the project")?.is_some() {
        let who = if role == Role::Lead { "leads" } else { "leads and reviewers" };
        return Err(AppError::Forbidden(format!("only the project's {who} may do this")));
    }
    Err(AppError::NotFound)
}

/// The projects `user` belongs to (all of them for a site admin), newest first, and whether
/// they may create more.
pub async fn list(pool: &PgPool, user: &User) -> Result<(Vec<Project>, bool), AppError> {
    let mut conn = pool.acquire().await?;
    let projects = dbp::list_for_user(&mut conn, user.id).await.context("listing projects")?;
    let may_create = dbp::may_create(&mut conn, user).await.context("checking who may create projects")?;
    Ok((projects, may_create))
}

/// Creates the project, with `creator` as its lead in the same transaction; `None` is the CLI,
/// which runs with the database's own rights and adds leads itself.
pub async fn create(pool: &PgPool, creator: Option<&User>, new: &NewProject) -> Result<Slug, AppError> {
    let mut tx = pool.begin().await?;
    if let Some(user) = creator {
        if !dbp::may_create(&mut tx, user).await.context("checking who may create projects")? {
            return Err(AppError::Forbidden("only site admins and project leads may create projects".into()));
        }
    }
    let conflict = || AppError::Conflict(format!("a project with slug {:?} exists", new.slug.as_str()));
    let id = dbp::insert(&mut tx, new).await.context("creating a project")?.ok_or_else(conflict)?;
    if let Some(user) = creator {
        dbp::set_member(&mut tx, id, user.id, Role::Lead).await.context("making the creator its lead")?;
    }
    tx.commit().await.context("creating a project")?;
    Ok(new.slug.clone())
}

/// Stores a lead's settings.
pub async fn update_settings(pool: &PgPool, p: &Project, settings: &ProjectSettings) -> Result<(), AppError> {
    let mut tx = pool.begin().await?;
    dbp::update(&mut tx, p.id, settings).await.context("storing a project's settings")?;
    tx.commit().await.context("storing a project's settings")?;
    Ok(())
}

/// Adds the account with `email` (or changes its role); an unknown email is a clear error.
pub async fn add_member(pool: &PgPool, p: &Project, email: &Email, role: Role) -> Result<(), AppError> {
    let mut conn = pool.acquire().await?;
    if !dbp::add_member_by_email(&mut conn, p.id, email, role).await.context("adding a member")? {
        return Err(AppError::Invalid(format!(
            "email: no account has the email {}; a site admin creates it on the Users page (or with `rewardlab user add`)",
            email.as_str()
        )));
    }
    Ok(())
}

/// Removes a member; not found when `user` is none, a conflict when they are the last lead.
pub async fn remove_member(pool: &PgPool, p: &Project, user: UserId) -> Result<(), AppError> {
    let mut conn = pool.acquire().await?;
    if !dbp::remove_member(&mut conn, p.id, user).await.context("removing a member")? {
        if dbp::is_member(&mut conn, p.id, user).await.context("removing a member")? {
            return Err(AppError::Conflict("a project keeps at least one lead: make another member lead first".into()));
        }
        return Err(AppError::NotFound);
    }
    Ok(())
}

pub async fn members(pool: &PgPool, p: &Project) -> Result<Vec<Member>, AppError> {
    dbp::members(&mut *pool.acquire().await?, p.id).await.context("listing members")
}

/// Progress, labellers, agreement and models of `p`.
pub async fn dashboard(pool: &PgPool, p: &Project) -> Result<Dashboard, AppError> {
    crate::db::stats::dashboard(&mut *pool.acquire().await?, p).await.context("computing the dashboard")
}

/// The Labellers tab: per-labeller figures and the members.
pub async fn people(pool: &PgPool, p: &Project) -> Result<(Vec<crate::db::stats::LabellerStats>, Vec<Member>), AppError> {
    let mut conn = pool.acquire().await?;
    let labellers = crate::db::stats::labellers(&mut conn, p).await.context("computing the labellers' figures")?;
    Ok((labellers, dbp::members(&mut conn, p.id).await.context("listing members")?))
}

/// The Models tab: the leaderboard and the newest reward model's agreement with people.
pub async fn models(pool: &PgPool, p: &Project) -> Result<(Vec<(Entry, Option<crate::domain::RunId>)>, Option<RmAgreement>), AppError> {
    let mut conn = pool.acquire().await?;
    let board = crate::db::runs::leaderboard(&mut conn, p.id).await.context("reading the leaderboard")?;
    Ok((board, crate::db::runs::rm_agreement(&mut conn, p.id).await.context("reading the reward model's agreement")?))
}
