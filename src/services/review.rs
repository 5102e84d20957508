//! Review and send-back use cases, shared by the review page and the API: the review stream
//! (judgements on items whose labellers disagree and by flagged labellers first, then a sample
//! at the project's rate), accepting or rejecting a judgement (a rejection sends its item back
//! to the queue for another labeller), adjudicating an item whose labellers disagree, and a
//! labeller's own rejected work.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;

use super::error::{AppError, DbContext};
use super::quality_cache::Cache;
use crate::db::projects::Project;
use crate::db::quality as dbq;
use crate::db::review as db;
use crate::domain::quality as q;
use crate::domain::ranking::Ranking;
use crate::domain::review::{parse_note, Decision, Priority, Reason, LOW_GOLD};
use crate::domain::{ItemId, JudgementId, ResponseId, TaskKind, UserId};

/// A response as the labeller saw it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ShownResponse)]
pub struct Shown {
    /// The letter the labeller saw it under (A = shown first).
    pub letter: char,
    pub response_id: ResponseId,
    pub text: String,
    /// The labeller's rank (1 = best; equal = tie); none for demonstrations.
    pub rank: Option<i16>,
    /// Flags the labeller set on it.
    pub flags: Vec<String>,
}

/// A judgement in the review stream, as the labeller made it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ReviewEntry)]
pub struct Entry {
    pub judgement_id: JudgementId,
    pub item_id: ItemId,
    pub external_id: String,
    /// The labeller's pseudonym.
    pub labeller: String,
    /// Why it is in the stream, most urgent first.
    pub priority: Vec<Priority>,
    /// The reasons in words (the item's agreement, the labeller's flags).
    pub why: Vec<String>,
    pub prompt: String,
    pub instructions: Option<String>,
    /// The responses in the order the labeller saw them.
    pub responses: Vec<Shown>,
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub demonstration: Option<String>,
    pub rating: Option<i16>,
    pub comment: String,
    pub time_on_task_ms: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Why other labellers skipped the item.
    pub skip_reasons: Vec<String>,
    /// The item's agreement (Kendall's W of its labellers), none with one labeller.
    pub item_agreement: Option<f64>,
}

/// The review stream now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ReviewStream)]
pub struct Stream {
    /// The project's review rate.
    pub rate: f64,
    /// Judgements waiting for review (the whole stream).
    pub pending: i64,
    pub entries: Vec<Entry>,
}

/// What the stream puts first: items whose agreement is below the project's threshold, and
/// labellers who are flagged, paused or below the gold score that pauses (or [`LOW_GOLD`]).
struct Urgent {
    low: HashMap<ItemId, f64>,
    flagged: HashMap<UserId, String>,
    /// Every item's agreement (the figures' `item_w`).
    agreement: Arc<crate::services::quality_cache::Computed>,
}

async fn urgent(pool: &PgPool, cache: &Arc<Cache>, p: &Project) -> Result<(q::QualitySettings, Urgent), AppError> {
    let figures = cache.figures(pool, p.id, p.kind).await?;
    let mut conn = pool.acquire().await?;
    let settings = dbq::settings(&mut conn, p.id).await.context("reading quality settings")?;
    let paused = dbq::paused_labellers(&mut conn, p.id).await.context("reading pauses")?;
    drop(conn);
    let c = &figures.computed;
    let low = c.item_w.iter().filter(|(_, w)| **w < settings.extra_below).map(|(i, w)| (*i, *w)).collect();
    let gold_floor = settings.pause_below.unwrap_or(LOW_GOLD);
    let mut flagged: HashMap<UserId, String> = HashMap::new();
    for l in &c.labellers {
        let mut why: Vec<String> = l.flags.clone();
        if let Some(g) = l.gold.filter(|g| g.value < gold_floor) {
            why.push(format!("gold score {:.2} below {gold_floor}", g.value));
        }
        if !why.is_empty() {
            flagged.insert(l.user, why.join("; "));
        }
    }
    for u in paused {
        flagged.entry(u).or_insert_with(|| "paused".into());
    }
    Ok((settings, Urgent { low, flagged, agreement: figures.computed.clone() }))
}

/// Each project's review backlog (slug, judgements in its review stream), for /metrics.
pub async fn backlogs(pool: &PgPool, cache: &Arc<Cache>) -> Result<Vec<(String, i64)>, AppError> {
    let projects = crate::db::projects::all_for_metrics(&mut *pool.acquire().await?).await.context("listing projects")?;
    let mut out = Vec::with_capacity(projects.len());
    for p in projects {
        let (settings, u) = urgent(pool, cache, &p).await?;
        let low: Vec<ItemId> = u.low.keys().copied().collect();
        let flagged: Vec<UserId> = u.flagged.keys().copied().collect();
        let n = pending(pool, &p, settings.review_rate, &low, &flagged).await?;
        out.push((p.slug.to_string(), n));
    }
    Ok(out)
}

/// How many judgements the project's review stream holds.
async fn pending(pool: &PgPool, p: &Project, rate: f64, low: &[ItemId], flagged: &[UserId]) -> Result<i64, AppError> {
    let mut tx = pool.begin().await?;
    crate::db::plan_for_arguments(&mut tx).await.context("counting the review stream")?;
    let n = db::pending(&mut tx, p.id, rate, low, flagged).await.context("counting the review stream")?;
    tx.commit().await?;
    Ok(n)
}

/// The largest page of the stream.
pub const MAX_LIMIT: i64 = 100;

/// Up to `limit` (1 to [`MAX_LIMIT`]) judgements for `reviewer` to review, most urgent first.
pub async fn stream(pool: &PgPool, cache: &Arc<Cache>, p: &Project, reviewer: UserId, limit: i64) -> Result<Stream, AppError> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::Invalid(format!("limit: expected 1 to {MAX_LIMIT} judgements, got {limit}")));
    }
    let (settings, u) = urgent(pool, cache, p).await?;
    let low: Vec<ItemId> = u.low.keys().copied().collect();
    let flagged: Vec<UserId> = u.flagged.keys().copied().collect();
    // The page and the count in one pass over the project's judgements.
    let mut tx = pool.begin().await?;
    crate::db::plan_for_arguments(&mut tx).await.context("reading the review stream")?;
    let rows = db::stream(&mut tx, p.id, reviewer, settings.review_rate, &low, &flagged, limit).await.context("reading the review stream")?;
    tx.commit().await?;
    let pending = rows.first().map_or(0, |r| r.pending);
    let entries = rows.into_iter().map(|r| entry(r, &u)).collect();
    Ok(Stream { rate: settings.review_rate, pending, entries })
}

fn entry(r: db::StreamRow, u: &Urgent) -> Entry {
    let mut priority = Vec::new();
    let mut why = Vec::new();
    if r.low {
        priority.push(Priority::LowAgreement);
        why.push(format!("the item's labellers disagree: Kendall's W {:.2}", u.low.get(&r.item_id).copied().unwrap_or(0.0)));
    }
    if r.flagged {
        priority.push(Priority::FlaggedLabeller);
        why.push(format!("labeller {}: {}", r.labeller, u.flagged.get(&r.user_id).map_or("flagged", String::as_str)));
    }
    if priority.is_empty() {
        priority.push(Priority::Sampled);
        why.push("sampled at the project's review rate".into());
    }
    let order: Vec<usize> = match &r.display_order {
        Some(o) if o.len() == r.ids.len() => o.iter().filter_map(|p| usize::try_from(*p).ok()).collect(),
        _ => (0..r.ids.len()).collect(),
    };
    let responses = order
        .iter()
        .enumerate()
        .filter(|(_, p)| **p < r.ids.len())
        .map(|(k, &p)| Shown {
            letter: char::from(b'A' + (k % 26) as u8),
            response_id: r.ids[p],
            text: r.texts[p].clone(),
            rank: r.ranks.as_ref().and_then(|ranks| ranks.get(p).copied()),
            flags: r.flags.get(p.to_string()).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default(),
        })
        .collect();
    Entry {
        judgement_id: r.id,
        item_id: r.item_id,
        external_id: r.external_id,
        labeller: r.labeller,
        priority,
        why,
        prompt: crate::export::prompt_string(&r.prompt, &r.prompt_raw),
        instructions: r.instructions,
        responses,
        strength: r.strength,
        both_bad: r.both_bad,
        demonstration: r.demonstration,
        rating: r.rating,
        comment: r.comment,
        time_on_task_ms: r.time_on_task_ms,
        created_at: r.created_at,
        skip_reasons: r.skips,
        item_agreement: u.agreement.item_w.get(&r.item_id).copied(),
    }
}

/// What a review did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ReviewOutcome)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    /// Rejected; its item went back to the queue for another labeller.
    Rejected,
}

/// Accepts or rejects (with a reason) an ordinary judgement of the project. A rejected
/// judgement leaves every export taken after, stops counting towards its item's overlap, and
/// its item goes back to the queue for a labeller who has not had it.
pub async fn review(pool: &PgPool, p: &Project, reviewer: UserId, judgement: JudgementId, decision: Decision, reason: &str) -> Result<Outcome, AppError> {
    let reason = match decision {
        Decision::Reject => Reason::parse(reason).map_err(AppError::Invalid)?.as_str().to_string(),
        Decision::Accept => parse_note(reason).map_err(|e| AppError::Invalid(e.replacen("note", "reason", 1)))?,
    };
    let mut tx = pool.begin().await?;
    let t = db::target(&mut tx, p.id, reviewer, judgement).await.context("finding the judgement")?.ok_or(AppError::NotFound)?;
    match (t.state.as_deref(), decision) {
        (Some("rejected"), _) => return Err(AppError::Conflict("this judgement was rejected already (its item went back to the queue)".into())),
        (Some("accepted"), Decision::Accept) => return Ok(Outcome::Accepted),
        _ => {}
    }
    let outcome = match decision {
        Decision::Accept => {
            db::insert(&mut tx, p.id, judgement, t.item_id, reviewer, "accepted", &reason).await.context("storing a review")?;
            Outcome::Accepted
        }
        Decision::Reject => {
            db::insert(&mut tx, p.id, judgement, t.item_id, reviewer, "rejected", &reason).await.context("storing a review")?;
            db::send_back(&mut tx, t.task_id, t.item_id).await.context("sending the item back")?;
            log::info!("judgement {judgement} by {:?} rejected in project {}", t.user_id, p.id);
            Outcome::Rejected
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Rejects every kept judgement of each of `items` with one reason (the lead's "send back");
/// answers how many judgements were rejected. Items not in the project are refused naming them.
pub async fn send_back_items(pool: &PgPool, p: &Project, reviewer: UserId, items: &[ItemId], reason: &str) -> Result<u64, AppError> {
    if items.is_empty() {
        return Err(AppError::Invalid("items: choose at least one item".into()));
    }
    if items.len() > super::items::MAX_EXCLUDE {
        return Err(AppError::Invalid(format!("items: at most {} at once, got {}", super::items::MAX_EXCLUDE, items.len())));
    }
    let reason = Reason::parse(reason).map_err(AppError::Invalid)?;
    let mut tx = pool.begin().await?;
    let mut n = 0;
    for item in items {
        let judgements = db::kept_of_item(&mut tx, p.id, reviewer, *item)
            .await
            .context("reading an item's judgements")?
            .ok_or(AppError::Invalid(format!("items: {item} is not an item of this project")))?;
        for j in judgements {
            if let Some(t) = db::target(&mut tx, p.id, reviewer, j).await.context("finding a judgement")? {
                db::insert(&mut tx, p.id, j, t.item_id, reviewer, "rejected", reason.as_str()).await.context("storing a review")?;
                db::send_back(&mut tx, t.task_id, t.item_id).await.context("sending the item back")?;
                n += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(n)
}

/// A reviewer's final judgement of an item, as given.
pub struct AdjudicationInput<'a> {
    /// Tiers of the item's response ids, best first.
    pub ranking: &'a [Vec<ResponseId>],
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub note: &'a str,
}

/// Records the final judgement of an item whose labellers disagree (their kept judgements do
/// not all rank alike); exports then use it for the item. Once per item.
pub async fn adjudicate(pool: &PgPool, p: &Project, reviewer: UserId, item: ItemId, input: &AdjudicationInput<'_>) -> Result<(), AppError> {
    if p.kind == TaskKind::Demonstration {
        return Err(AppError::Invalid("ranking: a demonstration project has no rankings to adjudicate".into()));
    }
    let note = parse_note(input.note).map_err(AppError::Invalid)?;
    let pairwise = p.kind == TaskKind::Pairwise;
    if input.both_bad && !pairwise {
        return Err(AppError::Invalid("both_bad: only pairwise projects have it".into()));
    }
    let strength = match (pairwise, input.strength) {
        (true, Some(s)) if (1..=3).contains(&s) => Some(s),
        (true, Some(s)) => return Err(AppError::Invalid(format!("strength: expected 1 to 3, got {s}"))),
        (true, None) => Some(2),
        (false, Some(_)) => return Err(AppError::Invalid("strength: only pairwise projects have it".into())),
        (false, None) => None,
    };
    let mut tx = pool.begin().await?;
    let t = db::adjudication_target(&mut tx, p.id, reviewer, item).await.context("finding the item")?.ok_or(AppError::NotFound)?;
    let ranking = Ranking::parse(input.ranking, &t.ids, p.allow_ties || pairwise).map_err(|e| AppError::Invalid(format!("ranking: {e}")))?;
    if t.adjudicated {
        return Err(AppError::Conflict("this item has a final judgement already".into()));
    }
    if t.ranks.len() < 2 {
        return Err(AppError::Conflict("the item's labellers do not disagree (fewer than two different rankings): there is nothing to adjudicate".into()));
    }
    let strength = if ranking.is_tie() { strength.map(|_| 1) } else { strength };
    let a = db::NewAdjudication { ranks: ranking.ranks(), strength, both_bad: input.both_bad, note: &note };
    if !db::adjudicate(&mut tx, p.id, item, reviewer, &a).await.context("storing an adjudication")? {
        return Err(AppError::Conflict("this item has a final judgement already".into()));
    }
    tx.commit().await?;
    Ok(())
}

/// `user`'s rejected work in the project, with the reasons (newest first).
pub async fn rejected(pool: &PgPool, p: &Project, user: UserId) -> Result<Vec<db::Rejected>, AppError> {
    db::rejected_of(&mut *pool.acquire().await?, p.id, user).await.context("reading rejected work")
}

/// What marking one item gold from its judgements came to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GoldOutcome {
    pub item: ItemId,
    pub marked: bool,
    /// Where the reference came from, or why the item was not marked.
    pub reason: String,
}

/// Marks each of `items` gold with its adjudication, else its labellers' unanimous ranking (at
/// least two kept judgements, all alike); every other item is refused with its reason.
pub async fn mark_gold_from_judgements(pool: &PgPool, p: &Project, lead: UserId, items: &[ItemId]) -> Result<Vec<GoldOutcome>, AppError> {
    if items.is_empty() {
        return Err(AppError::Invalid("items: choose at least one item".into()));
    }
    if items.len() > super::items::MAX_EXCLUDE {
        return Err(AppError::Invalid(format!("items: at most {} at once, got {}", super::items::MAX_EXCLUDE, items.len())));
    }
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(items.len());
    for &item in items {
        let source = db::gold_source(&mut tx, p.id, lead, item).await.context("reading an item's judgements")?;
        let reference = match source {
            None => Err("not an item of this project".to_string()),
            Some(s) => gold_reference(&s),
        };
        let outcome = match reference {
            Ok((ranks, explanation)) => {
                dbq::set_gold(&mut tx, p.id, lead, item, Some((&ranks, &explanation))).await.context("marking gold")?;
                GoldOutcome { item, marked: true, reason: explanation }
            }
            Err(reason) => GoldOutcome { item, marked: false, reason },
        };
        out.push(outcome);
    }
    tx.commit().await?;
    Ok(out)
}

/// The reference ranks an item's judgements give, with where they came from, or why none.
fn gold_reference(s: &db::GoldSource) -> Result<(Vec<i16>, String), String> {
    if s.gold {
        return Err("already gold".into());
    }
    let (ranks, from) = match (&s.adjudicated, &s.first) {
        (Some(r), _) => (r.clone(), "the item's adjudicated judgement".to_string()),
        (None, Some(r)) if s.kept >= 2 && s.distinct == 1 => (r.clone(), format!("the unanimous judgement of its {} labellers", s.kept)),
        (None, _) if s.kept < 2 => return Err(format!("neither adjudicated nor unanimous: {} kept judgement(s), two agreeing ones are needed", s.kept)),
        (None, _) => return Err(format!("neither adjudicated nor unanimous: its labellers gave {} different rankings", s.distinct)),
    };
    if ranks.iter().all(|r| *r == ranks[0]) {
        return Err("its judgement ties every response: a reference must prefer one response to another".into());
    }
    Ok((ranks, format!("from {from}")))
}
