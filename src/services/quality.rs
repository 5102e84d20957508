//! Label quality use cases: scoring a submitted quality check (and pausing a labeller whose
//! gold score fell below the threshold), the lead's quality report, lifting a pause, quality
//! settings, marking gold, generating honeypots and giving more labellers to items where
//! labellers disagree.

use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;

use super::error::{AppError, DbContext};
use super::quality_cache::Cache;
use crate::db::projects::Project;
use crate::db::quality as dbq;
use crate::domain::agreement::{self, Estimate};
use crate::domain::quality::{self as q, ItemAgreement, LabellerQuality, ProjectAgreement, QualitySettings};
use crate::domain::ranking::Ranking;
use crate::domain::{ItemId, ResponseId, TaskId, TaskKind, UserId};

/// A gold item's reference as a labeller is shown it after an onboarding task.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// Tiers of response ids, best first.
    pub ranking: Vec<Vec<ResponseId>>,
    pub explanation: String,
}

/// What a submitted check came to for the labeller.
#[derive(Debug, Default)]
pub struct CheckOutcome {
    /// The reference, after an onboarding task.
    pub reference: Option<Reference>,
    /// Why the labeller was paused, when this check paused them.
    pub paused: Option<String>,
}

fn tiers(ranks: &[i16], ids: &[ResponseId]) -> Vec<Vec<ResponseId>> {
    let mut levels: Vec<i16> = ranks.to_vec();
    levels.sort();
    levels.dedup();
    levels.iter().map(|l| ranks.iter().zip(ids).filter(|(r, _)| *r == l).map(|(_, id)| *id).collect()).collect()
}

/// Scores `user`'s submitted check `task` with the rest since their last lifted pause, pausing
/// them when the project's rule says so (their live leases in the project are given back).
pub async fn after_check(pool: &PgPool, task: TaskId, user: UserId) -> Result<CheckOutcome, AppError> {
    let mut tx = pool.begin().await?;
    let Some(check) = dbq::check(&mut tx, task, user).await.context("reading a submitted check")? else { return Ok(CheckOutcome::default()) };
    let rule = q::PauseRule { below: check.pause_below, min_gold: check.pause_min_gold };
    let scores: Vec<f64> = match rule.below {
        Some(_) => dbq::checks_since_lift(&mut tx, check.project_id, user)
            .await
            .context("reading a labeller's checks")?
            .iter()
            .filter_map(|(r, g)| q::gold_task_score(check.kind, r, g))
            .collect(),
        None => Vec::new(),
    };
    let mut out = CheckOutcome::default();
    if let Some(reason) = rule.reason(check.kind, &scores) {
        let score = agreement::mean(&scores).unwrap_or(0.0);
        if dbq::pause(&mut tx, check.project_id, user, &reason, score, scores.len() as i32).await.context("pausing a labeller")? {
            log::info!("paused labeller {user} in project {}: {reason}", check.project_id);
        }
        out.paused = Some(reason);
    }
    if check.check_kind == "onboarding" {
        if let Some(gold) = dbq::gold_of(&mut tx, check.item_id).await.context("reading a gold reference")? {
            out.reference = Some(Reference { ranking: tiers(&gold.ranks, &gold.response_ids), explanation: gold.explanation });
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Why `user` is paused in the project, if they are.
pub async fn paused(pool: &PgPool, p: &Project, user: UserId) -> Result<Option<String>, AppError> {
    Ok(dbq::active_pause(&mut *pool.acquire().await?, p.id, user).await.context("reading a pause")?.map(|(reason, _)| reason))
}

/// A labeller's row in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LabellerRow {
    pub email: String,
    #[serde(flatten)]
    pub quality: LabellerQuality,
    /// Why they are paused now, if they are.
    pub paused: Option<String>,
}

/// The lead's quality report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kind: TaskKind,
    pub settings: QualitySettings,
    pub labellers: Vec<LabellerRow>,
    pub agreement: ProjectAgreement,
    /// Items below the extra-labeller threshold (lowest first, at most 50).
    pub low_agreement_items: Vec<ItemAgreement>,
    pub pauses: Vec<dbq::PauseRow>,
    /// When the figures were computed, and from how many judgements.
    pub computed_at: chrono::DateTime<chrono::Utc>,
    pub judgements_counted: usize,
    /// True when newer judgements exist and the figures are being computed again (large
    /// projects only; a smaller one is computed again before the report answers).
    pub updating: bool,
}

/// The project's quality report (the caller leads the project).
pub async fn report(pool: &PgPool, cache: &Arc<Cache>, p: &Project) -> Result<Report, AppError> {
    let figures = cache.figures(pool, p.id, p.kind).await?;
    let mut conn = pool.acquire().await?;
    let settings = dbq::settings(&mut conn, p.id).await.context("reading quality settings")?;
    let emails: std::collections::HashMap<UserId, String> = dbq::emails(&mut conn, p.id).await.context("reading labellers")?.into_iter().collect();
    let pauses = dbq::pauses(&mut conn, p.id).await.context("reading pauses")?;
    drop(conn);
    let c = &figures.computed;
    let mut items: Vec<ItemAgreement> = c.items.iter().filter(|a| a.w.is_some_and(|w| w < settings.extra_below)).copied().collect();
    items.sort_by(|a, b| a.w.unwrap_or(0.0).total_cmp(&b.w.unwrap_or(0.0)));
    items.truncate(50);
    let labellers = c
        .labellers
        .iter()
        .map(|quality| LabellerRow {
            email: emails.get(&quality.user).cloned().unwrap_or_default(),
            paused: pauses.iter().find(|x| x.user_id == quality.user && x.lifted_at.is_none()).map(|x| x.reason.clone()),
            quality: quality.clone(),
        })
        .collect();
    Ok(Report {
        kind: p.kind,
        settings,
        labellers,
        agreement: c.agreement.clone(),
        low_agreement_items: items,
        pauses,
        computed_at: c.computed_at,
        judgements_counted: c.judgements,
        updating: figures.updating,
    })
}

/// Lifts `user`'s pause with the lead's note.
pub async fn lift(pool: &PgPool, p: &Project, lead: UserId, user: UserId, note: &str) -> Result<(), AppError> {
    let note = note.trim();
    if note.is_empty() || note.len() > 2000 {
        return Err(AppError::Invalid("note: say in 1-2000 characters why the pause is lifted".into()));
    }
    if !dbq::lift(&mut *pool.acquire().await?, p.id, lead, user, note).await.context("lifting a pause")? {
        return Err(AppError::Conflict("this labeller is not paused in this project (there is no pause to lift)".into()));
    }
    Ok(())
}

/// The project's quality settings.
pub async fn settings(pool: &PgPool, p: &Project) -> Result<QualitySettings, AppError> {
    dbq::settings(&mut *pool.acquire().await?, p.id).await.context("reading quality settings")
}

/// Stores checked quality settings.
pub async fn set_settings(pool: &PgPool, p: &Project, lead: UserId, s: &QualitySettings) -> Result<(), AppError> {
    if !dbq::set_settings(&mut *pool.acquire().await?, p.id, lead, s).await.context("storing quality settings")? {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// Marks `item` gold with a reference ranking (tiers of its response ids, best first; ties
/// allowed) and an explanation, or unmarks it with `None`.
pub async fn mark_gold(pool: &PgPool, p: &Project, lead: UserId, item: ItemId, reference: Option<(&[Vec<ResponseId>], &str)>) -> Result<(), AppError> {
    let mut tx = pool.begin().await?;
    let ids = dbq::item_response_ids(&mut tx, p.id, item).await.context("reading an item's responses")?.ok_or(AppError::NotFound)?;
    let parsed = match reference {
        Some((tiers, explanation)) => {
            if explanation.len() > 10_000 {
                return Err(AppError::Invalid("explanation: at most 10000 bytes".into()));
            }
            let ranking = Ranking::parse(tiers, &ids, true).map_err(|e| AppError::Invalid(format!("ranking: {e}")))?;
            if ranking.is_tie() {
                return Err(AppError::Invalid("ranking: a reference must prefer at least one response to another".into()));
            }
            Some((ranking.ranks().to_vec(), explanation.trim().to_string()))
        }
        None => None,
    };
    let done = dbq::set_gold(&mut tx, p.id, lead, item, parsed.as_ref().map(|(r, e)| (r.as_slice(), e.as_str()))).await.context("marking gold")?;
    if !done {
        return Err(AppError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// The response ids of an item of the project, by position.
pub async fn response_ids(pool: &PgPool, p: &Project, item: ItemId) -> Result<Vec<ResponseId>, AppError> {
    dbq::item_response_ids(&mut *pool.acquire().await?, p.id, item).await.context("reading an item's responses")?.ok_or(AppError::NotFound)
}

/// An item's gold reference, if it has one.
pub async fn gold_of(pool: &PgPool, item: ItemId) -> Result<Option<dbq::Gold>, AppError> {
    dbq::gold_of(&mut *pool.acquire().await?, item).await.context("reading a gold reference")
}

/// Generates up to `n` honeypots from the project's own items; answers how many were added.
pub async fn generate_honeypots(pool: &PgPool, p: &Project, n: i64) -> Result<u64, AppError> {
    if !(1..=1000).contains(&n) {
        return Err(AppError::Invalid(format!("count: expected 1 to 1000 honeypots, got {n}")));
    }
    if p.kind == TaskKind::Demonstration {
        return Err(AppError::Invalid("honeypots need ranking or pairwise tasks; this is a demonstration project".into()));
    }
    let mut tx = pool.begin().await?;
    // One more source than asked for: each honeypot takes its stranger from the next source.
    let sources = dbq::honeypot_sources(&mut tx, p.id, n + 1).await.context("choosing honeypot sources")?;
    let mut pots = Vec::new();
    for (i, s) in sources.iter().enumerate().take(n as usize) {
        // Alternate the two kinds of planted response: another prompt's, and a cut-off one.
        let stranger = sources.get((i + 1) % sources.len()).filter(|o| o.id != s.id).and_then(|o| o.texts.first()).map(String::as_str);
        let (cut, foreign) = (q::honeypot(p.kind, &s.texts, &s.models, None), stranger.and_then(|t| q::honeypot(p.kind, &s.texts, &s.models, Some(t))));
        let made = if i % 2 == 0 { foreign.or(cut) } else { cut.or(foreign) };
        if let Some(h) = made {
            pots.push(dbq::NewHoneypot {
                source: s.id,
                external_id: format!("honeypot:{}", s.external_id),
                texts: h.texts,
                models: h.models,
                ranks: h.ranks,
                explanation: h.explanation,
            });
        }
    }
    let added = dbq::insert_honeypots(&mut tx, p.id, &pots).await.context("storing honeypots")?;
    tx.commit().await?;
    Ok(added)
}

/// Gives one more labeller to each item completed since its last check whose agreement
/// (Kendall's W) is below the project's threshold and that has had fewer than its maximum of
/// extra labellers; answers how many items were reopened.
pub async fn extend_disagreements(pool: &PgPool, p: &Project) -> Result<u64, AppError> {
    extend(pool, p.id, p.kind).await
}

async fn extend(pool: &PgPool, project: crate::domain::ProjectId, kind: TaskKind) -> Result<u64, AppError> {
    let mut tx = pool.begin().await?;
    let s = dbq::settings(&mut tx, project).await.context("reading quality settings")?;
    if s.extra_max == 0 || kind == TaskKind::Demonstration {
        return Ok(0);
    }
    let unchecked: std::collections::HashMap<ItemId, i32> =
        dbq::unchecked_items(&mut tx, project).await.context("reading complete items")?.into_iter().collect();
    if unchecked.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ItemId> = unchecked.keys().copied().collect();
    let rows = dbq::judged_of(&mut tx, project, None, Some(&ids)).await.context("reading judgements for quality")?;
    let low: Vec<ItemId> = q::item_agreement(&rows)
        .into_iter()
        .filter(|a| a.w.is_some_and(|w| w < s.extra_below) && unchecked.get(&a.item).is_some_and(|extra| *extra < s.extra_max))
        .map(|a| a.item)
        .collect();
    dbq::mark_checked(&mut tx, project, &ids).await.context("marking items checked")?;
    let n = dbq::add_labeller(&mut tx, project, &low).await.context("adding labellers")?;
    tx.commit().await?;
    Ok(n)
}

/// [`extend_disagreements`] for every project that asks for extra labellers (the scheduler's tick).
pub async fn extend_all(pool: &PgPool) -> Result<u64, AppError> {
    let projects = dbq::extending_projects(&mut *pool.acquire().await?).await.context("listing projects")?;
    let mut n = 0;
    for id in projects {
        let kind = dbq::project_kind(&mut *pool.acquire().await?, id).await.context("reading a project's kind")?;
        n += extend(pool, id, kind).await?;
    }
    Ok(n)
}

/// The gold score interval as text, for pages.
pub fn estimate_text(e: &Option<Estimate>) -> String {
    e.map_or_else(|| "–".into(), |e| format!("{:.2} [{:.2}, {:.2}]", e.value, e.ci_low, e.ci_high))
}
