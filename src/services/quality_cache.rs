//! A project's quality figures (each labeller's gold score and careless-work signals, the
//! project's and every item's agreement), kept per project and computed again only when their
//! inputs change: a judgement or review stored, a pause begun or lifted, a gold reference
//! set (see [`dbq::Fingerprint`]). The quality report, the review stream, the item browser's
//! agreement filter and /metrics' review backlog all read them; each view costs one cheap
//! fingerprint query instead of loading and scoring every judgement (about 5 s on 100,000
//! judgements).
//!
//! Small projects are computed again before a view answers, so a view always shows the latest
//! judgements. On a project with [`Cache::background_above`] judgements or more, a view whose
//! figures are out of date answers with the ones it has, marked as updating, and the new ones
//! are computed in the background (one computation per project at a time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::error::{AppError, DbContext};
use crate::db::quality::{self as dbq, Fingerprint};
use crate::domain::dashboard::{self, LabellerFigures, ModelFigures};
use crate::domain::quality::{self as q, ItemAgreement, LabellerQuality, ProjectAgreement};
use crate::domain::{ItemId, ProjectId, TaskKind, UserId};

/// Projects from this many judgements up are brought up to date in the background.
pub const BACKGROUND_ABOVE: usize = 20_000;

/// Most projects whose figures are kept (the least recently viewed is dropped).
const MAX_PROJECTS: usize = 64;

/// The figures of one project as of one [`Fingerprint`].
#[derive(Debug)]
pub struct Computed {
    fingerprint: Fingerprint,
    pub kind: TaskKind,
    /// Judgements the figures were computed from.
    pub judgements: usize,
    pub labellers: Vec<LabellerQuality>,
    pub agreement: ProjectAgreement,
    /// Every item with two or more labellers, in item order.
    pub items: Vec<ItemAgreement>,
    /// Kendall's W by item, where defined.
    pub item_w: HashMap<ItemId, f64>,
    /// The dashboard's judgement-derived figures.
    pub dashboard: DashboardFigures,
    pub computed_at: DateTime<Utc>,
    /// How long loading and computing took.
    pub compute_ms: f64,
}

/// The dashboard's figures that come from the judgements (see `domain::dashboard`).
#[derive(Debug)]
pub struct DashboardFigures {
    /// Labeller judgements on ordinary items.
    pub judgements: i64,
    pub labellers: HashMap<UserId, LabellerFigures>,
    pub models: Vec<ModelFigures>,
}

/// Figures as a view gets them.
#[derive(Debug, Clone)]
pub struct Figures {
    pub computed: Arc<Computed>,
    /// True when newer judgements exist and the figures are being computed again.
    pub updating: bool,
}

#[derive(Default)]
struct Slot {
    computed: Option<Arc<Computed>>,
    /// Held while the project's figures are computed (one computation at a time).
    lock: Arc<tokio::sync::Mutex<()>>,
    refreshing: Arc<AtomicBool>,
    used: Option<Instant>,
}

/// Every project's figures; one per server process, shared by its workers.
pub struct Cache {
    slots: Mutex<HashMap<ProjectId, Slot>>,
    background_above: AtomicUsize,
}

impl Default for Cache {
    fn default() -> Self {
        Self { slots: Mutex::default(), background_above: AtomicUsize::new(BACKGROUND_ABOVE) }
    }
}

impl Cache {
    /// Projects from `n` judgements up are brought up to date in the background.
    pub fn set_background_above(&self, n: usize) {
        self.background_above.store(n, Ordering::Relaxed);
    }

    pub fn background_above(&self) -> usize {
        self.background_above.load(Ordering::Relaxed)
    }

    fn with_slot<T>(&self, project: ProjectId, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slots = self.slots.lock().expect("the quality cache lock");
        if !slots.contains_key(&project) && slots.len() >= MAX_PROJECTS {
            if let Some(oldest) = slots.iter().filter(|(_, s)| !s.refreshing.load(Ordering::Relaxed)).min_by_key(|(_, s)| s.used).map(|(id, _)| *id) {
                slots.remove(&oldest);
            }
        }
        let slot = slots.entry(project).or_default();
        slot.used = Some(Instant::now());
        f(slot)
    }

    fn cached(&self, project: ProjectId) -> Option<Arc<Computed>> {
        self.with_slot(project, |s| s.computed.clone())
    }

    /// The project's figures: the kept ones when their inputs are unchanged, else computed
    /// again (or, on a large project that has figures, those marked updating while new ones
    /// are computed in the background).
    pub async fn figures(self: &Arc<Self>, pool: &PgPool, project: ProjectId, kind: TaskKind) -> Result<Figures, AppError> {
        if let Some(c) = self.cached(project) {
            if is_current(pool, project, &c).await? {
                return Ok(Figures { computed: c, updating: false });
            }
            if c.judgements >= self.background_above() {
                self.refresh_in_background(pool, project, kind);
                return Ok(Figures { computed: c, updating: true });
            }
        }
        Ok(Figures { computed: self.fresh(pool, project, kind).await?, updating: false })
    }

    /// Figures as of now: computed unless another view has just computed current ones.
    async fn fresh(&self, pool: &PgPool, project: ProjectId, kind: TaskKind) -> Result<Arc<Computed>, AppError> {
        let lock = self.with_slot(project, |s| s.lock.clone());
        let _one_at_a_time = lock.lock().await;
        if let Some(c) = self.cached(project) {
            if is_current(pool, project, &c).await? {
                return Ok(c);
            }
        }
        let c = Arc::new(compute(pool, project, kind).await?);
        self.with_slot(project, |s| s.computed = Some(c.clone()));
        Ok(c)
    }

    fn refresh_in_background(self: &Arc<Self>, pool: &PgPool, project: ProjectId, kind: TaskKind) {
        let flag = self.with_slot(project, |s| s.refreshing.clone());
        if flag.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            if let Err(e) = this.fresh(&pool, project, kind).await {
                log::warn!("computing the quality figures of project {project}: {e}");
            }
            flag.store(false, Ordering::Release);
        });
    }
}

async fn is_current(pool: &PgPool, project: ProjectId, c: &Computed) -> Result<bool, AppError> {
    let now = dbq::fingerprint(&mut *pool.acquire().await?, project).await.context("reading what the quality figures depend on")?;
    Ok(now == c.fingerprint)
}

/// Loads the project's judgements and computes its figures, in one snapshot with the
/// fingerprint they are kept under.
async fn compute(pool: &PgPool, project: ProjectId, kind: TaskKind) -> Result<Computed, AppError> {
    let started = Instant::now();
    let computed_at = Utc::now();
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await.context("starting a snapshot")?;
    let fingerprint = dbq::fingerprint(&mut tx, project).await.context("reading what the quality figures depend on")?;
    crate::db::plan_for_arguments(&mut tx).await.context("reading judgements for quality")?;
    let rows = dbq::judged(&mut tx, project, None).await.context("reading judgements for quality")?;
    let ranked = crate::db::stats::ranked(&mut tx, project).await.context("reading judgements for the dashboard")?;
    let models = crate::db::stats::item_models(&mut tx, project).await.context("reading items for the dashboard")?;
    tx.commit().await?;
    let judgements = rows.len();
    let (labellers, agreement, items, dashboard) = tokio::task::spawn_blocking(move || {
        let dash = DashboardFigures {
            judgements: ranked.iter().filter(|r| r.labeller && models.get(&r.item).is_some_and(|i| !i.gold)).count() as i64,
            labellers: dashboard::labellers(&ranked, &models),
            models: dashboard::models(&ranked, &models),
        };
        let items = q::item_agreement(&rows);
        (q::labellers(kind, &rows), q::project_agreement(kind, &rows, &items), items, dash)
    })
    .await
    .map_err(|e| AppError::Unexpected(e.into()))?;
    let item_w = items.iter().filter_map(|a| Some((a.item, a.w?))).collect();
    let compute_ms = started.elapsed().as_secs_f64() * 1e3;
    log::debug!("quality figures of project {project}: {judgements} judgements in {compute_ms:.0} ms");
    Ok(Computed { fingerprint, kind, judgements, labellers, agreement, items, item_w, dashboard, computed_at, compute_ms })
}
