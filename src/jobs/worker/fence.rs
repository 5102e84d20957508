//! The claim's handle: every write the worker makes after a claim goes through it and carries
//! the fence, and says whether the run is still ours.

use std::time::Duration;

use sqlx::PgPool;

use rewardlab_protocol::MetricLine;

use crate::db::worker as dbw;
use crate::domain::{ExportId, RunId};

/// Still the run's owner?
pub type Owned = bool;

/// A claimed run's fence.
pub struct Fence<'a> {
    pub pool: &'a PgPool,
    pub run: RunId,
    pub fence: i64,
    pub lease: Duration,
}

/// A write that failed: the database may be back in a moment, so a later write decides.
fn or_owned(r: sqlx::Result<bool>, what: &str, run: RunId) -> Owned {
    r.unwrap_or_else(|e| {
        if what == "heartbeat" {
            log::warn!("heartbeat of run {run}: {e}");
        }
        true
    })
}

impl Fence<'_> {
    pub async fn heartbeat(&self) -> Owned {
        or_owned(dbw::heartbeat(self.pool, self.run, self.fence, self.lease).await, "heartbeat", self.run)
    }

    pub async fn log(&self, line: &str) -> Owned {
        let line: String = line.chars().take(4000).collect();
        or_owned(dbw::log(self.pool, self.run, self.fence, &line).await, "log", self.run)
    }

    /// Stores one line of the trainer's metrics stream.
    pub async fn metric(&self, data: &serde_json::Value) -> Owned {
        self.metric_line(&MetricLine::from_value(data.clone())).await
    }

    pub async fn metric_line(&self, m: &MetricLine) -> Owned {
        or_owned(dbw::metric(self.pool, self.run, self.fence, &m.event, m.step, &m.data).await, "metric", self.run)
    }

    pub async fn set_resolved(&self, resolved: &serde_json::Value) -> sqlx::Result<Owned> {
        dbw::set_resolved(self.pool, self.run, self.fence, resolved).await
    }

    pub async fn set_resumed_from(&self, checkpoint: &str) -> sqlx::Result<Owned> {
        dbw::set_resumed_from(self.pool, self.run, self.fence, checkpoint).await
    }

    pub async fn set_export(&self, export: ExportId) -> sqlx::Result<Owned> {
        dbw::set_export(self.pool, self.run, self.fence, export).await
    }

    /// Marks the run failed (if still ours) and cancels the runs chained after it.
    pub async fn fail(&self, error: &str) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        if dbw::fail(&mut tx, self.run, self.fence, error).await? {
            dbw::cancel_dependents(&mut tx, self.run, "an earlier run of its chain failed").await?;
        }
        tx.commit().await
    }
}
