//! Projects and memberships. `for_user` is the gate every project-owned lookup goes through:
//! it answers only when the caller is a member (or a site admin), with the role required.

use sqlx::PgConnection;

use crate::db::users::User;
use crate::domain::{Email, NewProject, Overlap, ProjectId, ProjectSettings, Role, Slug, TaskKind, UserId};

/// A project as its members see it, with the caller's role.
#[derive(Debug, Clone)]
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

    /// Whether the caller may review the project's judgements (its leads and reviewers).
    pub fn may_review(&self) -> bool {
        matches!(self.role, Role::Lead | Role::Reviewer)
    }
}

/// `query_as!` for [`Project`]s the caller `$1` may see, with `$rest` (literal SQL) appended.
macro_rules! visible_projects {
    ($rest:tt, $($arg:expr),*) => {
        sqlx::query_as!(
            Project,
            r#"SELECT p.id, p.slug AS "slug: Slug", p.name, p.kind AS "kind: TaskKind", p.guidelines, p.flags, p.allow_ties,
                    p.rating_enabled, p.overlap AS "overlap: Overlap", p.lease_seconds,
                    COALESCE(m.role, 'lead'::member_role) AS "role!: Role"
               FROM projects p JOIN users u ON u.id = $1
               LEFT JOIN memberships m ON m.project_id = p.id AND m.user_id = u.id
              WHERE (m.user_id IS NOT NULL OR u.is_admin) "# + $rest,
            $($arg),*
        )
    };
}

/// The project `slug` if `user` may see it with at least `min` (a lead may do what a reviewer
/// may, and a reviewer what a labeller may).
pub async fn for_user(conn: &mut PgConnection, user: UserId, slug: &str, min: Role) -> sqlx::Result<Option<Project>> {
    visible_projects!(
        "AND p.slug = $2 AND ($3::member_role = 'labeller' OR COALESCE(m.role, 'lead') = 'lead' OR COALESCE(m.role, 'lead') = $3::member_role)",
        user as UserId,
        slug,
        min as Role
    )
    .fetch_optional(conn)
    .await
}

pub async fn list_for_user(conn: &mut PgConnection, user: UserId) -> sqlx::Result<Vec<Project>> {
    visible_projects!("ORDER BY p.created_at DESC", user as UserId).fetch_all(conn).await
}

/// Whether `user` may create projects: site admins and leads of any project.
pub async fn may_create(conn: &mut PgConnection, user: &User) -> sqlx::Result<bool> {
    if user.is_admin {
        return Ok(true);
    }
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = $1 AND role = 'lead') AS "exists!""#, user.id as UserId)
        .fetch_one(conn)
        .await
}

/// Creates a project; `None` when the slug is taken.
pub async fn insert(conn: &mut PgConnection, p: &NewProject) -> sqlx::Result<Option<ProjectId>> {
    sqlx::query_scalar!(
        r#"INSERT INTO projects (id, slug, name, kind, overlap, flags, allow_ties, rating_enabled, guidelines)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (slug) DO NOTHING RETURNING id AS "id: ProjectId""#,
        ProjectId::new() as ProjectId,
        p.slug.as_str(),
        p.name.as_str(),
        p.kind as TaskKind,
        p.overlap as Overlap,
        p.flags.as_slice(),
        p.allow_ties,
        p.rating_enabled,
        p.guidelines.as_str(),
    )
    .fetch_optional(conn)
    .await
}

/// Stores a lead's settings and reopens or closes items for the new overlap (gold and excluded
/// items stay closed).
pub async fn update(conn: &mut PgConnection, id: ProjectId, s: &ProjectSettings) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE projects SET name = $2, guidelines = $3, flags = $4, overlap = $5, allow_ties = $6, rating_enabled = $7 WHERE id = $1",
        id as ProjectId,
        s.name.as_str(),
        s.guidelines.as_str(),
        s.flags.as_slice(),
        s.overlap as Overlap,
        s.allow_ties,
        s.rating_enabled,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE items i SET done_count = c.n, is_open = c.open
         FROM (SELECT it.id, n.n, it.gold_ranks IS NULL AND n.n < $2 + it.extra_labellers
                              AND NOT EXISTS (SELECT 1 FROM item_exclusions x WHERE x.item_id = it.id) AS open
               FROM items it CROSS JOIN LATERAL (SELECT count(*)::int AS n FROM tasks t WHERE t.item_id = it.id AND t.status = 'submitted') n
               WHERE it.project_id = $1) c
         WHERE i.id = c.id AND (i.is_open <> c.open OR i.done_count <> c.n)",
        id as ProjectId,
        s.overlap as Overlap,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_member(conn: &mut PgConnection, project: ProjectId, user: UserId, role: Role) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO memberships (project_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT (project_id, user_id) DO UPDATE SET role = $3",
        project as ProjectId,
        user as UserId,
        role as Role,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the account with `email` to the project; false when no such account exists.
pub async fn add_member_by_email(conn: &mut PgConnection, project: ProjectId, email: &Email, role: Role) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "INSERT INTO memberships (project_id, user_id, role) SELECT $1, id, $3 FROM users WHERE email = $2
         ON CONFLICT (project_id, user_id) DO UPDATE SET role = $3",
        project as ProjectId,
        email.as_str(),
        role as Role,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a member, unless they are the project's last lead; false when nothing was removed.
pub async fn remove_member(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM memberships m WHERE m.project_id = $1 AND m.user_id = $2
           AND (m.role <> 'lead' OR EXISTS (SELECT 1 FROM memberships o WHERE o.project_id = $1 AND o.role = 'lead' AND o.user_id <> $2))",
        project as ProjectId,
        user as UserId,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn is_member(conn: &mut PgConnection, project: ProjectId, user: UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM memberships WHERE project_id = $1 AND user_id = $2) AS "member!""#,
        project as ProjectId,
        user as UserId
    )
    .fetch_one(conn)
    .await
}

/// A member, for the lead's member list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    /// Whether the account is active (a site admin deactivates accounts).
    pub active: bool,
}

pub async fn members(conn: &mut PgConnection, project: ProjectId) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as!(
        Member,
        r#"SELECT u.id AS user_id, u.email, m.role AS "role: Role", u.deactivated_at IS NULL AS "active!" FROM memberships m
             JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.role, u.email"#,
        project as ProjectId,
    )
    .fetch_all(conn)
    .await
}

/// Every project, with no caller: for the server's own figures (/metrics), never for a request.
pub async fn all_for_metrics(conn: &mut PgConnection) -> sqlx::Result<Vec<Project>> {
    sqlx::query_as!(
        Project,
        r#"SELECT id, slug AS "slug: Slug", name, kind AS "kind: TaskKind", guidelines, flags, allow_ties, rating_enabled,
                  overlap AS "overlap: Overlap", lease_seconds, 'lead'::member_role AS "role!: Role"
             FROM projects ORDER BY slug"#,
    )
    .fetch_all(conn)
    .await
}

/// The project by slug with no caller, for the CLI (which runs with the database's own rights).
pub async fn by_slug_for_cli(conn: &mut PgConnection, slug: &str) -> sqlx::Result<Option<Project>> {
    sqlx::query_as!(
        Project,
        r#"SELECT id, slug AS "slug: Slug", name, kind AS "kind: TaskKind", guidelines, flags, allow_ties, rating_enabled,
                  overlap AS "overlap: Overlap", lease_seconds, 'lead'::member_role AS "role!: Role"
             FROM projects WHERE slug = $1"#,
        slug,
    )
    .fetch_optional(conn)
    .await
}
