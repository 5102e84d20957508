//! Projects: finding one for a caller, creating one with its lead, settings and members.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::error::{AppError, DbContext};
use super::quality_cache::{Cache, Computed};
use crate::db::projects::{self as dbp, Member, Project};
use crate::db::runs::RmAgreement;
use crate::db::stats::{Dashboard, LabellerStats, ModelStats};
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
pub async fn dashboard(pool: &PgPool, cache: &Arc<Cache>, p: &Project) -> Result<Dashboard, AppError> {
    let figures = cache.figures(pool, p.id, p.kind).await?;
    let mut conn = pool.acquire().await?;
    let counts = crate::db::stats::item_counts(&mut conn, p).await.context("counting items")?;
    let labellers = labeller_stats(&mut conn, p, &figures.computed).await?;
    drop(conn);
    let (agreed, pairs): (i64, i64) =
        labellers.iter().fold((0, 0), |(a, n), l| (a + (l.agreement.unwrap_or(0.0) * l.agreement_pairs as f64).round() as i64, n + l.agreement_pairs));
    let d = &figures.computed.dashboard;
    Ok(Dashboard {
        items_total: counts.total,
        items_complete: counts.complete,
        items_in_progress: counts.in_progress,
        judgements: d.judgements,
        agreement_overall: (pairs > 0).then(|| agreed as f64 / pairs as f64),
        agreement_pairs: pairs / 2,
        labellers,
        models: d.models.iter().map(|m| ModelStats { model: m.model.clone(), wins: m.wins, losses: m.losses, ties: m.ties, win_rate: m.win_rate }).collect(),
    })
}

/// Per labeller who judged or skipped in the project: judgements, median time, skips, and how
/// often their pairwise preferences agree with other labellers' on the same items (ties count
/// as their own answer); most judgements first.
async fn labeller_stats(conn: &mut sqlx::PgConnection, p: &Project, c: &Computed) -> Result<Vec<LabellerStats>, AppError> {
    let skips: HashMap<UserId, i64> = crate::db::stats::skips(conn, p.id).await.context("counting skips")?.into_iter().collect();
    let emails: HashMap<UserId, String> = crate::db::quality::emails(conn, p.id).await.context("reading labellers")?.into_iter().collect();
    let figures = &c.dashboard.labellers;
    let mut out: Vec<LabellerStats> = emails
        .into_iter()
        .filter(|(u, _)| figures.contains_key(u) || skips.contains_key(u))
        .map(|(u, email)| {
            let f = figures.get(&u).copied();
            LabellerStats {
                email,
                judgements: f.map_or(0, |f| f.judgements),
                median_seconds: f.and_then(|f| f.median_seconds),
                skipped: skips.get(&u).copied().unwrap_or(0),
                agreement: f.and_then(|f| f.agreement),
                agreement_pairs: f.map_or(0, |f| f.agreement_pairs),
            }
        })
        .collect();
    out.sort_by(|a, b| b.judgements.cmp(&a.judgements).then_with(|| a.email.cmp(&b.email)));
    Ok(out)
}

/// The Labellers tab: per-labeller figures and the members.
pub async fn people(pool: &PgPool, cache: &Arc<Cache>, p: &Project) -> Result<(Vec<LabellerStats>, Vec<Member>), AppError> {
    let figures = cache.figures(pool, p.id, p.kind).await?;
    let mut conn = pool.acquire().await?;
    let labellers = labeller_stats(&mut conn, p, &figures.computed).await?;
    Ok((labellers, dbp::members(&mut conn, p.id).await.context("listing members")?))
}

/// The Models tab: the leaderboard and the newest reward model's agreement with people.
pub async fn models(pool: &PgPool, p: &Project) -> Result<(Vec<(Entry, Option<crate::domain::RunId>)>, Option<RmAgreement>), AppError> {
    let mut conn = pool.acquire().await?;
    let board = crate::db::runs::leaderboard(&mut conn, p.id).await.context("reading the leaderboard")?;
    Ok((board, crate::db::runs::rm_agreement(&mut conn, p.id).await.context("reading the reward model's agreement")?))
}
