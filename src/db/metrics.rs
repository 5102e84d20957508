//! The figures `/metrics` reports about every project, in queries whose cost does not
//! grow with a project's history: leases are read through each member's newest task (the
//! index leases use), open items through the open-items index, runs through their indexes.
//! No membership scope: only an operator holding the metrics token or address sees them.

use sqlx::PgConnection;

use crate::domain::RunId;

/// One project's figures.
#[derive(Debug, Clone)]
pub struct ProjectFigures {
    pub slug: String,
    pub open_items: i64,
    pub live_leases: i64,
    pub active_labellers: i64,
    pub paused_labellers: i64,
    pub rm_run: Option<RunId>,
    pub rm_agreement: Option<f64>,
    pub ppo_run: Option<RunId>,
    pub ppo_kl: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RunCount {
    pub slug: String,
    pub status: String,
    pub count: i64,
}

#[derive(Debug, Clone)]
pub struct WorkerLease {
    pub worker: String,
    pub lease_remaining_seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub projects: Vec<ProjectFigures>,
    pub runs: Vec<RunCount>,
    pub workers: Vec<WorkerLease>,
    /// Webhook deliveries by project and state (`pending`, `delivered`, `failed`).
    pub webhook_deliveries: Vec<(String, String, i64)>,
}

pub async fn figures(conn: &mut PgConnection) -> sqlx::Result<Figures> {
    let projects = sqlx::query_as!(
        ProjectFigures,
        r#"SELECT p.slug AS "slug!",
                  (SELECT count(*) FROM items i WHERE i.project_id = p.id AND i.is_open) AS "open_items!",
                  l.live AS "live_leases!", l.active AS "active_labellers!",
                  (SELECT count(*) FROM labeller_pauses lp WHERE lp.project_id = p.id AND lp.lifted_at IS NULL) AS "paused_labellers!",
                  rm.id AS "rm_run?: RunId", rm.accuracy AS "rm_agreement?",
                  ppo.id AS "ppo_run?: RunId", ppo.kl AS "ppo_kl?"
           FROM projects p
           CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE n.status = 'leased' AND n.expires_at > now()) AS live,
                      count(*) FILTER (WHERE n.leased_at > now() - interval '15 minutes') AS active
               FROM memberships m
               CROSS JOIN LATERAL (SELECT t.status, t.expires_at, t.leased_at FROM tasks t
                                   WHERE t.user_id = m.user_id AND t.project_id = m.project_id ORDER BY t.leased_at DESC LIMIT 1) n
               WHERE m.project_id = p.id) l
           LEFT JOIN LATERAL (
               SELECT r.id, (SELECT (m.data->>'accuracy')::float8 FROM run_metrics m WHERE m.run_id = r.id AND m.event = 'eval' ORDER BY m.id DESC LIMIT 1) AS accuracy
               FROM runs r WHERE r.project_id = p.id AND r.kind = 'rm' AND r.status = 'succeeded' ORDER BY r.seq DESC LIMIT 1) rm ON true
           LEFT JOIN LATERAL (
               SELECT r.id, k.kl FROM runs r
               CROSS JOIN LATERAL (SELECT (m.data->>'kl')::float8 AS kl FROM run_metrics m WHERE m.run_id = r.id AND m.event = 'iteration' ORDER BY m.id DESC LIMIT 1) k
               WHERE r.project_id = p.id AND r.kind = 'ppo' ORDER BY r.seq DESC LIMIT 1) ppo ON true
           ORDER BY p.slug"#
    )
    .fetch_all(&mut *conn)
    .await?;
    let runs = sqlx::query_as!(
        RunCount,
        r#"SELECT p.slug AS "slug!", r.status::text AS "status!", count(*) AS "count!"
           FROM runs r JOIN projects p ON p.id = r.project_id GROUP BY p.slug, r.status ORDER BY 1, 2"#
    )
    .fetch_all(&mut *conn)
    .await?;
    let workers = sqlx::query_as!(
        WorkerLease,
        r#"SELECT r.worker AS "worker!", extract(epoch FROM min(r.lease_expires_at) - now())::float8 AS "lease_remaining_seconds!"
           FROM runs r WHERE r.status = 'running' AND r.worker IS NOT NULL AND r.lease_expires_at IS NOT NULL GROUP BY r.worker ORDER BY 1"#
    )
    .fetch_all(&mut *conn)
    .await?;
    let webhook_deliveries = crate::db::webhooks::delivery_counts(conn).await?;
    Ok(Figures { projects, runs, workers, webhook_deliveries })
}
