//! Projects and memberships. `for_user` is the gate every project-owned lookup goes through:
//! it answers only when the caller is a member (or a site admin), with the role required.

use sqlx::PgConnection;

use crate::db::users::User;
use crate::domain::{Email, NewProject, Overlap, ProjectId, ProjectSettings, Role, Slug, TaskKind, UserId};

/// A project as its members see it, with the caller's role.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: ProjectId,
    pub slug: Slug,
    pub name: String,
    pub kind: TaskKind,
    pub guidelines: String,
    pub flags: Vec<String>,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub overlap: Overlap,
    pub lease_seconds: i32,
    pub role: Role,
}

impl Project {
    pub fn is_lead(&self) -> bool {
        self.role == Role::Lead
    }
}

const SELECT: &str = "SELECT p.id, p.slug, p.name, p.kind, p.guidelines, p.flags, p.allow_ties, p.rating_enabled, p.overlap, p.lease_seconds,
        COALESCE(m.role, 'lead'::member_role) AS role
    FROM projects p JOIN users u ON u.id = $1
    LEFT JOIN memberships m ON m.project_id = p.id AND m.user_id = u.id
    WHERE (m.user_id IS NOT NULL OR u.is_admin)";

/// The project `slug` if `user` may see it with at least `min` (a lead may do what a labeller may).
pub async fn for_user(conn: &mut PgConnection, user: UserId, slug: &str, min: Role) -> sqlx::Result<Option<Project>> {
    let lead_only = matches!(min, Role::Lead);
    sqlx::query_as(&format!("{SELECT} AND p.slug = $2 AND (NOT $3 OR COALESCE(m.role, 'lead') = 'lead')"))
        .bind(user)
        .bind(slug)
        .bind(lead_only)
        .fetch_optional(conn)
        .await
}

pub async fn list_for_user(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Vec<Project>> {
    sqlx::query_as(&format!("{SELECT} ORDER BY p.created_at DESC")).bind(user).fetch_all(conn).await
}

/// Whether `user` may create projects: site admins and leads of any project.
pub async fn may_create(conn: &mut PgConnection, user: &User) -> sqlx::Result<bool> {
    if user.is_admin {
        return Ok(true);
    }
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = $1 AND role = 'lead')").bind(user.id).fetch_one(conn).await
}

/// Creates a project; `None` when the slug is taken.
pub async fn insert(conn: &mut PgConnection, p: &NewProject) -> sqlx::Result<Option<ProjectId>> {
    sqlx::query_scalar(
        "INSERT INTO projects (id, slug, name, kind, overlap, flags, allow_ties, rating_enabled, guidelines)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (slug) DO NOTHING RETURNING id",
    )
    .bind(ProjectId::new())
    .bind(p.slug.as_str())
    .bind(p.name.as_str())
    .bind(p.kind)
    .bind(p.overlap)
    .bind(p.flags.as_slice())
    .bind(p.allow_ties)
    .bind(p.rating_enabled)
    .bind(p.guidelines.as_str())
    .fetch_optional(conn)
    .await
}

/// Stores a lead's settings and reopens or closes items for the new overlap (gold items stay closed).
pub async fn update(conn: &mut PgConnection, id: ProjectId, s: &ProjectSettings) -> sqlx::Result<()> {
    sqlx::query("UPDATE projects SET name = $2, guidelines = $3, flags = $4, overlap = $5, allow_ties = $6, rating_enabled = $7 WHERE id = $1")
        .bind(id)
        .bind(s.name.as_str())
        .bind(s.guidelines.as_str())
        .bind(s.flags.as_slice())
        .bind(s.overlap)
        .bind(s.allow_ties)
        .bind(s.rating_enabled)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE items i SET done_count = c.n, is_open = c.open
         FROM (SELECT it.id, n.n, it.gold_ranks IS NULL AND n.n < $2 + it.extra_labellers AS open
               FROM items it CROSS JOIN LATERAL (SELECT count(*)::int AS n FROM tasks t WHERE t.item_id = it.id AND t.status = 'submitted') n
               WHERE it.project_id = $1) c
         WHERE i.id = c.id AND (i.is_open <> c.open OR i.done_count <> c.n)",
    )
    .bind(id)
    .bind(s.overlap)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_member(conn: &mut PgConnection, project: ProjectId, user: UserId, role: Role) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO memberships (project_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT (project_id, user_id) DO UPDATE SET role = $3")
        .bind(project)
        .bind(user)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds the account with `email` to the project; false when no such account exists.
pub async fn add_member_by_email(conn: &mut PgConnection, project: ProjectId, email: &Email, role: Role) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO memberships (project_id, user_id, role) SELECT $1, id, $3 FROM users WHERE email = $2
         ON CONFLICT (project_id, user_id) DO UPDATE SET role = $3",
    )
    .bind(project)
    .bind(email.as_str())
    .bind(role)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove_member(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM memberships WHERE project_id = $1 AND user_id = $2").bind(project).bind(user).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// A member, for the lead's member list.
#[derive(Debug, sqlx::FromRow)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
}

pub async fn members(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as(
        "SELECT u.id AS user_id, u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.role, u.email",
    )
    .bind(project)
    .fetch_all(conn)
    .await
}

/// The project by slug with no caller, for the CLI (which runs with the database's own rights).
pub async fn by_slug_for_cli(conn: &mut PgConnection, slug: &str) -> sqlx::Result<Option<Project>> {
    sqlx::query_as(
        "SELECT id, slug, name, kind, guidelines, flags, allow_ties, rating_enabled, overlap, lease_seconds, 'lead'::member_role AS role
         FROM projects WHERE slug = $1",
    )
    .bind(slug)
    .fetch_optional(conn)
    .await
}
