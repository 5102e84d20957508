//! Label quality from a project's judgements: each labeller's gold score (against gold items'
//! and honeypots' references) and the signals of careless work, each item's agreement, and the
//! project's agreement figures with their chance levels. Pure: the caller loads [`Judged`] rows.

use std::collections::BTreeMap;

use serde::Serialize;

use super::agreement::{self, Estimate, Level};
use super::{ItemId, TaskKind, UserId};

/// Bootstrap resamples behind every interval, and their seed.
pub const ROUNDS: usize = 400;
const SEED: u64 = 13;

/// One labeller's judgement with what quality needs to know about it.
#[derive(Debug, Clone)]
pub struct Judged {
    pub user: UserId,
    pub item: ItemId,
    /// Tier ranks by response position (1 = best).
    pub ranks: Vec<i16>,
    /// Response positions in the order the labeller saw them.
    pub display_order: Vec<i32>,
    pub time_ms: Option<i64>,
    /// Characters of each response, by position.
    pub lengths: Vec<i32>,
    /// Characters shown: the prompt and every response.
    pub chars_shown: i64,
    /// The reference ranks when the task was a quality check (gold or honeypot).
    pub reference: Option<Vec<i16>>,
    /// Whether this check counts towards an automatic pause (submitted after the last lift).
    pub since_lift: bool,
}

/// The score of one gold task: pairwise, 1 when the labeller's choice is the reference's
/// (a tie only matches a tie), else 0; ranking, Kendall's τ-b against the reference, or, when
/// the reference has ties (a honeypot only says which response is last), agreement over the
/// pairs the reference orders (Somers' d; equal to τ-b without ties).
pub fn gold_task_score(kind: TaskKind, ranks: &[i16], reference: &[i16]) -> Option<f64> {
    if ranks.len() != reference.len() || ranks.len() < 2 {
        return None;
    }
    if kind == TaskKind::Pairwise {
        return Some(f64::from(u8::from((ranks[0] - ranks[1]).signum() == (reference[0] - reference[1]).signum())));
    }
    let (x, r) = (agreement::mid_ranks(ranks), agreement::mid_ranks(reference));
    let ties = r.len() != {
        let mut v = r.clone();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v.len()
    };
    if ties {
        agreement::somers_d(&x, &r)
    } else {
        agreement::tau_b(&x, &r)
    }
}

/// The quality settings a pause is decided with.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PauseRule {
    /// Pause when the gold score is below this (`None`: never pause automatically).
    pub below: Option<f64>,
    /// ... after at least this many gold tasks since the last lifted pause.
    pub min_gold: i32,
}

impl PauseRule {
    /// The reason to pause a labeller whose gold tasks since their last lift scored `scores`:
    /// at least `min_gold` of them, and the whole 95% bootstrap interval of their mean below
    /// the threshold (so an honest labeller's run of bad luck does not pause them).
    pub fn reason(&self, kind: TaskKind, scores: &[f64]) -> Option<String> {
        let below = self.below?;
        if scores.len() < self.min_gold.max(1) as usize {
            return None;
        }
        let e = gold_estimate(scores)?;
        (e.ci_high < below).then(|| {
            let what = if kind == TaskKind::Pairwise { "share of gold tasks answered as the reference" } else { "gold score (Kendall τ-b against the reference)" };
            format!(
                "your {what} is {:.2} (95% interval {:.2} to {:.2}) over {} gold tasks, below this project's threshold of {below:.2}; a lead will review your work and can lift the pause",
                e.value,
                e.ci_low,
                e.ci_high,
                scores.len()
            )
        })
    }
}

/// The mean gold score with its bootstrap 95% interval; the scores are sorted first, so the
/// same scores in any order give the same interval (the pause and the report agree).
pub fn gold_estimate(scores: &[f64]) -> Option<Estimate> {
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    agreement::bootstrap(&sorted, ROUNDS, SEED, agreement::mean)
}

/// A labeller's quality figures.
#[derive(Debug, Clone, Serialize)]
pub struct LabellerQuality {
    pub user: UserId,
    pub judgements: usize,
    /// Mean gold task score with its bootstrap 95% interval, over `gold_count` tasks.
    pub gold: Option<Estimate>,
    pub gold_count: usize,
    pub median_time_s: Option<f64>,
    /// Median characters shown per second of time on task.
    pub chars_per_second: Option<f64>,
    /// Tasks where the response shown first was ranked best (alone or tied), of `judgements`.
    pub first_shown_best: usize,
    /// The chance of that for a labeller who ignores order (mean of 1/K).
    pub first_shown_chance: f64,
    /// One-sided binomial test of `first_shown_best` against the chance level.
    pub position_p: f64,
    /// Share of untied pairs of different lengths where the longer response was preferred, of `length_pairs`.
    pub longer_preferred: Option<f64>,
    pub length_pairs: usize,
    /// Mean τ-b against the leave-one-out consensus of the other labellers (chance 0), its
    /// Open-Assistant form (1+τ)/2 (chance 0.5), over `consensus_items` items.
    pub consensus_tau: Option<f64>,
    pub consensus_score: Option<f64>,
    pub consensus_items: usize,
    /// The careless-work signals that fired, in words.
    pub flags: Vec<String>,
}

/// Figures for the whole project, each beside its chance level.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectAgreement {
    /// Krippendorff's α: ordinal over response ranks (rankings), nominal over the choice (pairwise). Chance 0.
    pub alpha: Option<Estimate>,
    pub alpha_level: &'static str,
    /// Fleiss' κ (pairwise projects). Chance 0.
    pub fleiss_kappa: Option<f64>,
    /// Mean Kendall's W over items with two or more labellers, and the mean chance level 1/m.
    pub mean_w: Option<f64>,
    pub mean_w_chance: Option<f64>,
    pub items_compared: usize,
}

/// One item's agreement: Kendall's W of its labellers (tie-corrected) and its chance level 1/m.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ItemAgreement {
    pub item: ItemId,
    pub labellers: usize,
    pub w: Option<f64>,
    pub chance: f64,
}

/// The ordinary (non-check) judgements grouped by item, in item order.
fn by_item(rows: &[Judged]) -> BTreeMap<ItemId, Vec<&Judged>> {
    let mut items: BTreeMap<ItemId, Vec<&Judged>> = BTreeMap::new();
    for j in rows.iter().filter(|j| j.reference.is_none() && j.ranks.len() >= 2) {
        items.entry(j.item).or_default().push(j);
    }
    items
}

/// Kendall's W of each item judged by two or more labellers.
pub fn item_agreement(rows: &[Judged]) -> Vec<ItemAgreement> {
    by_item(rows)
        .into_iter()
        .filter(|(_, js)| js.len() >= 2)
        .map(|(item, js)| {
            let ratings: Vec<Vec<f64>> = js.iter().map(|j| agreement::mid_ranks(&j.ranks)).collect();
            ItemAgreement { item, labellers: js.len(), w: agreement::kendall_w(&ratings), chance: 1.0 / js.len() as f64 }
        })
        .collect()
}

/// The project's agreement figures; `ws` is [`item_agreement`] of the same rows.
pub fn project_agreement(kind: TaskKind, rows: &[Judged], ws: &[ItemAgreement]) -> ProjectAgreement {
    let items: Vec<Vec<&Judged>> = by_item(rows).into_values().filter(|js| js.len() >= 2).collect();
    let level = if kind == TaskKind::Pairwise { Level::Nominal } else { Level::Ordinal };
    let units_of = |js: &Vec<&Judged>| -> Vec<Vec<f64>> {
        if kind == TaskKind::Pairwise {
            vec![js.iter().map(|j| pairwise_choice(&j.ranks)).collect()]
        } else {
            let mids: Vec<Vec<f64>> = js.iter().map(|j| agreement::mid_ranks(&j.ranks)).collect();
            (0..mids[0].len()).map(|p| mids.iter().filter_map(|m| m.get(p).copied()).collect()).collect()
        }
    };
    let per_item: Vec<Vec<Vec<f64>>> = items.iter().map(units_of).collect();
    // Fewer resamples on large projects keep the page fast (as the leaderboard does).
    let values: usize = per_item.iter().flatten().map(Vec::len).sum();
    let rounds = (4_000_000 / values.max(1)).clamp(50, ROUNDS);
    let alpha = agreement::AlphaGroups::new(&per_item, level).bootstrap(rounds, SEED);
    let fleiss_kappa = (kind == TaskKind::Pairwise).then(|| agreement::fleiss_kappa(&choice_table(&items))).flatten();
    let defined: Vec<&ItemAgreement> = ws.iter().filter(|a| a.w.is_some()).collect();
    ProjectAgreement {
        alpha,
        alpha_level: if level == Level::Nominal { "nominal" } else { "ordinal" },
        fleiss_kappa,
        mean_w: agreement::mean(&defined.iter().filter_map(|a| a.w).collect::<Vec<_>>()),
        mean_w_chance: agreement::mean(&defined.iter().map(|a| a.chance).collect::<Vec<_>>()),
        items_compared: items.len(),
    }
}

/// A pairwise judgement as a nominal category: 0 first position preferred, 1 second, 2 tie.
pub fn pairwise_choice(ranks: &[i16]) -> f64 {
    match ranks[0].cmp(&ranks[1]) {
        std::cmp::Ordering::Less => 0.0,
        std::cmp::Ordering::Greater => 1.0,
        std::cmp::Ordering::Equal => 2.0,
    }
}

/// Items × (first preferred, second preferred, tie) counts.
fn choice_table(items: &[Vec<&Judged>]) -> Vec<Vec<f64>> {
    items
        .iter()
        .map(|js| {
            let mut row = vec![0.0; 3];
            for j in js {
                row[pairwise_choice(&j.ranks) as usize] += 1.0;
            }
            row
        })
        .collect()
}

/// Each labeller's τ-b against the mean fractional ranks of the item's other labellers.
fn consensus_taus(rows: &[Judged]) -> BTreeMap<UserId, Vec<f64>> {
    let mut out: BTreeMap<UserId, Vec<f64>> = BTreeMap::new();
    for js in by_item(rows).into_values().filter(|js| js.len() >= 2) {
        let mids: Vec<Vec<f64>> = js.iter().map(|j| agreement::mid_ranks(&j.ranks)).collect();
        for (i, j) in js.iter().enumerate() {
            let k = mids[i].len();
            let others: Vec<&Vec<f64>> = mids.iter().enumerate().filter(|(o, m)| *o != i && m.len() == k).map(|(_, m)| m).collect();
            let consensus: Vec<f64> = (0..k).map(|p| others.iter().map(|m| m[p]).sum::<f64>() / others.len() as f64).collect();
            if let Some(t) = agreement::tau_b(&mids[i], &consensus) {
                out.entry(j.user).or_default().push(t);
            }
        }
    }
    out
}

/// Every labeller's quality figures, with flags against the project's medians.
pub fn labellers(kind: TaskKind, rows: &[Judged]) -> Vec<LabellerQuality> {
    let taus = consensus_taus(rows);
    let times: Vec<f64> = rows.iter().filter_map(|j| j.time_ms).map(|t| t as f64 / 1000.0).collect();
    let project_median = agreement::median(&times);
    let mut by_user: BTreeMap<UserId, Vec<&Judged>> = BTreeMap::new();
    for j in rows {
        by_user.entry(j.user).or_default().push(j);
    }
    by_user.into_iter().map(|(user, js)| one_labeller(kind, user, &js, taus.get(&user).map(Vec::as_slice).unwrap_or(&[]), project_median)).collect()
}

fn one_labeller(kind: TaskKind, user: UserId, js: &[&Judged], taus: &[f64], project_median: Option<f64>) -> LabellerQuality {
    let scores: Vec<f64> = js.iter().filter_map(|j| gold_task_score(kind, &j.ranks, j.reference.as_ref()?)).collect();
    let gold = gold_estimate(&scores);
    let times: Vec<f64> = js.iter().filter_map(|j| j.time_ms).map(|t| t as f64 / 1000.0).collect();
    let speeds: Vec<f64> = js.iter().filter_map(|j| Some(j.chars_shown as f64 / (j.time_ms? as f64 / 1000.0).max(0.05))).collect();
    let ranked: Vec<&&Judged> = js.iter().filter(|j| j.ranks.len() >= 2 && !j.display_order.is_empty()).collect();
    let first_shown_best = ranked.iter().filter(|j| first_is_best(j)).count();
    let first_shown_chance = agreement::mean(&ranked.iter().map(|j| 1.0 / j.ranks.len() as f64).collect::<Vec<_>>()).unwrap_or(0.0);
    let position_p = agreement::binomial_upper_tail(first_shown_best as u64, ranked.len() as u64, first_shown_chance);
    let (longer, length_pairs) = length_preference(js);
    let consensus_tau = agreement::mean(taus);
    let mut q = LabellerQuality {
        user,
        judgements: js.len(),
        gold,
        gold_count: scores.len(),
        median_time_s: agreement::median(&times),
        chars_per_second: agreement::median(&speeds),
        first_shown_best,
        first_shown_chance,
        position_p,
        longer_preferred: (length_pairs > 0).then(|| longer as f64 / length_pairs as f64),
        length_pairs,
        consensus_tau,
        consensus_score: consensus_tau.map(|t| (1.0 + t) / 2.0),
        consensus_items: taus.len(),
        flags: Vec::new(),
    };
    q.flags = flags(&q, ranked.len(), project_median);
    q
}

/// Whether the response shown first got the best rank (alone or tied).
fn first_is_best(j: &Judged) -> bool {
    let best = j.ranks.iter().min().copied();
    usize::try_from(j.display_order[0]).ok().and_then(|p| j.ranks.get(p)).copied() == best
}

/// (untied pairs where the longer response won, untied pairs of different lengths).
fn length_preference(js: &[&Judged]) -> (usize, usize) {
    let (mut longer, mut pairs) = (0, 0);
    for j in js.iter().filter(|j| j.lengths.len() == j.ranks.len()) {
        for (w, l, tie) in super::ranking::pairs(&j.ranks) {
            if !tie && j.lengths[w] != j.lengths[l] {
                pairs += 1;
                longer += usize::from(j.lengths[w] > j.lengths[l]);
            }
        }
    }
    (longer, pairs)
}

/// Position bias is flagged below this p-value (with at least [`MIN_TASKS`] tasks).
pub const POSITION_P: f64 = 0.001;
/// Fewer tasks than this never raise a flag.
pub const MIN_TASKS: usize = 10;

fn flags(q: &LabellerQuality, ranked: usize, project_median: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if ranked >= MIN_TASKS && q.position_p < POSITION_P {
        out.push(format!(
            "position bias: the response shown first was ranked best in {} of {ranked} tasks (chance {:.0}%, binomial p = {:.1e})",
            q.first_shown_best,
            q.first_shown_chance * 100.0,
            q.position_p
        ));
    }
    if let (Some(mine), Some(all), Some(cps)) = (q.median_time_s, project_median, q.chars_per_second) {
        if q.judgements >= MIN_TASKS && mine < all / 3.0 && cps > 60.0 {
            out.push(format!("fast: median {mine:.1} s a task against the project's {all:.1} s, {cps:.0} characters a second"));
        }
    }
    if let Some(t) = q.consensus_tau.filter(|t| q.consensus_items >= MIN_TASKS && *t < 0.1) {
        out.push(format!("low consensus: τ-b {t:.2} against the other labellers over {} items (chance 0)", q.consensus_items));
    }
    out
}

/// A project's quality settings, each checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct QualitySettings {
    /// Gold tasks a new labeller gets first, each followed by its reference (0 to 100).
    pub gold_onboarding: i32,
    /// Share of later tasks that are gold, unmarked (0 to 0.5).
    pub gold_rate: f64,
    /// Pause a labeller whose gold score is below this with 95% confidence (its bootstrap
    /// interval wholly below; -1 to 1; `None`: never).
    pub pause_below: Option<f64>,
    /// ... once they have this many gold tasks since their last lifted pause (1 to 1000).
    pub pause_min_gold: i32,
    /// Extra labellers an item whose agreement is low may get, one at a time (0 to 20; 0: off).
    pub extra_max: i32,
    /// Kendall's W below which an item gets one more labeller (0 to 1); the review stream
    /// puts judgements on such items first.
    pub extra_below: f64,
    /// Share of judgements the review stream samples (0 to 1).
    pub review_rate: f64,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self { gold_onboarding: 0, gold_rate: 0.0, pause_below: None, pause_min_gold: 5, extra_max: 0, extra_below: 0.5, review_rate: 0.1 }
    }
}

impl QualitySettings {
    /// Checks every field; the error names the first bad one and what was expected.
    pub fn checked(self) -> Result<Self, String> {
        let finite = |v: f64, name: &str| if v.is_finite() { Ok(v) } else { Err(format!("{name}: expected a number")) };
        if !(0..=100).contains(&self.gold_onboarding) {
            return Err(format!("gold_onboarding: expected 0 to 100 gold tasks, got {}", self.gold_onboarding));
        }
        if !(0.0..=0.5).contains(&finite(self.gold_rate, "gold_rate")?) {
            return Err(format!("gold_rate: expected a share from 0 to 0.5, got {}", self.gold_rate));
        }
        if let Some(b) = self.pause_below {
            if !(-1.0..=1.0).contains(&finite(b, "pause_below")?) {
                return Err(format!("pause_below: expected a gold score from -1 to 1, got {b}"));
            }
        }
        if !(1..=1000).contains(&self.pause_min_gold) {
            return Err(format!("pause_min_gold: expected 1 to 1000 gold tasks, got {}", self.pause_min_gold));
        }
        if !(0..=20).contains(&self.extra_max) {
            return Err(format!("extra_max: expected 0 to 20 extra labellers, got {}", self.extra_max));
        }
        if !(0.0..=1.0).contains(&finite(self.extra_below, "extra_below")?) {
            return Err(format!("extra_below: expected an agreement (Kendall's W) from 0 to 1, got {}", self.extra_below));
        }
        super::review::check_rate(self.review_rate)?;
        Ok(self)
    }

    pub fn pause_rule(&self) -> PauseRule {
        PauseRule { below: self.pause_below, min_gold: self.pause_min_gold }
    }
}

/// A ranking written with response letters, best first: `B > A = C` (`>` between tiers, `=`
/// within a tie; spaces ignored), as tiers of 0-based positions of `n` responses.
pub fn parse_letter_ranking(text: &str, n: usize) -> Result<Vec<Vec<usize>>, String> {
    let mut seen = vec![false; n];
    let mut tiers = Vec::new();
    for tier in text.split('>') {
        let mut t = Vec::new();
        for letter in tier.split('=').map(str::trim) {
            let pos = match letter.as_bytes() {
                [c] if c.is_ascii_alphabetic() => usize::from(c.to_ascii_uppercase() - b'A'),
                _ => return Err(format!("ranking: expected response letters like \"B > A = C\", got {letter:?}")),
            };
            match seen.get_mut(pos) {
                None => return Err(format!("ranking: {letter} is not one of this item's responses (A to {})", char::from(b'A' + n.saturating_sub(1) as u8))),
                Some(true) => return Err(format!("ranking: {letter} appears more than once")),
                Some(s) => *s = true,
            }
            t.push(pos);
        }
        tiers.push(t);
    }
    if seen.contains(&false) {
        return Err(format!("ranking: rank all {n} responses"));
    }
    Ok(tiers)
}

/// A honeypot built from an item: its responses, the reference ranks (the planted response
/// last, the others tied first) and the explanation a labeller is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Honeypot {
    pub texts: Vec<String>,
    pub models: Vec<String>,
    pub ranks: Vec<i16>,
    pub explanation: String,
}

/// The most responses a ranking task may have.
pub const MAX_RESPONSES: usize = 9;

/// A sanity task from an item's responses: a clearly worse response replaces its last one, so
/// the task has as many responses as the project's others and nothing sets it apart: with a
/// `stranger` (a response written for another prompt) that one, else the first response cut
/// off mid-sentence. `None` when there is nothing to build from.
pub fn honeypot(kind: TaskKind, texts: &[String], models: &[String], stranger: Option<&str>) -> Option<Honeypot> {
    let first = texts.first()?;
    let (bad, explanation) = match stranger.filter(|s| !s.trim().is_empty()) {
        Some(s) => (s.to_string(), "The last-ranked response was written for a different prompt: it does not answer this one."),
        None => (cut_off(first)?, "The last-ranked response stops mid-sentence: it is cut off."),
    };
    let keep = if kind == TaskKind::Pairwise { 1 } else { (texts.len().min(MAX_RESPONSES) - 1).max(1) };
    let mut out_texts: Vec<String> = texts[..keep].to_vec();
    let mut out_models: Vec<String> = models.iter().take(keep).cloned().collect();
    out_models.resize(keep, "unknown".into());
    out_texts.push(bad);
    out_models.push("honeypot".into());
    let mut ranks = vec![1i16; keep];
    ranks.push(2);
    Some(Honeypot { texts: out_texts, models: out_models, ranks, explanation: explanation.into() })
}

/// The first 40% of a text's words, ending mid-sentence (no closing punctuation); `None` for
/// texts too short to cut.
pub fn cut_off(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 6 {
        return None;
    }
    let n = (words.len() * 2 / 5).max(3);
    let cut = words[..n].join(" ");
    Some(cut.trim_end_matches(|c: char| c.is_ascii_punctuation()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(user: UserId, item: ItemId, ranks: &[i16], order: &[i32]) -> Judged {
        Judged {
            user,
            item,
            ranks: ranks.to_vec(),
            display_order: order.to_vec(),
            time_ms: Some(10_000),
            lengths: vec![10; ranks.len()],
            chars_shown: 100,
            reference: None,
            since_lift: true,
        }
    }

    #[test]
    fn gold_scores_follow_the_kind() {
        assert_eq!(gold_task_score(TaskKind::Pairwise, &[1, 2], &[1, 2]), Some(1.0));
        assert_eq!(gold_task_score(TaskKind::Pairwise, &[1, 1], &[1, 2]), Some(0.0));
        assert_eq!(gold_task_score(TaskKind::Ranking, &[1, 2, 3], &[1, 2, 3]), Some(1.0));
        assert_eq!(gold_task_score(TaskKind::Ranking, &[3, 2, 1], &[1, 2, 3]), Some(-1.0));
        // A honeypot: the third is the planted bad one.
        assert_eq!(gold_task_score(TaskKind::Ranking, &[2, 1, 3], &[1, 1, 2]), Some(1.0));
        assert_eq!(gold_task_score(TaskKind::Ranking, &[2, 1], &[1, 2, 3]), None);
    }

    #[test]
    fn a_pause_needs_enough_gold_and_a_low_score() {
        let rule = PauseRule { below: Some(0.5), min_gold: 3 };
        assert_eq!(rule.reason(TaskKind::Ranking, &[0.0, 0.0]), None);
        assert!(rule.reason(TaskKind::Ranking, &[0.0, 0.2, 0.1]).unwrap().contains("below this project's threshold of 0.50"));
        assert_eq!(rule.reason(TaskKind::Ranking, &[1.0, 0.2, 0.8]), None);
        // A mean below the threshold whose interval reaches above it is not enough.
        assert_eq!(rule.reason(TaskKind::Ranking, &[1.0, 0.0, 0.0, 0.6]), None);
        assert_eq!(PauseRule { below: None, min_gold: 1 }.reason(TaskKind::Ranking, &[-1.0]), None);
    }

    #[test]
    fn a_labeller_who_always_ranks_the_first_shown_best_is_flagged() {
        let (biased, honest) = (UserId::new(), UserId::new());
        let mut rows = Vec::new();
        for i in 0..40 {
            let item = ItemId::new();
            let order: Vec<i32> = (0..4).map(|k| (k + i) % 4).collect();
            let first = order[0] as usize;
            let mut biased_ranks = [2i16, 3, 4, 5];
            biased_ranks[first] = 1;
            rows.push(judged(biased, item, &biased_ranks, &order));
            let honest_ranks = if i % 5 == 0 { [2, 1, 3, 4] } else { [1, 2, 3, 4] };
            rows.push(judged(honest, item, &honest_ranks, &order));
        }
        let q = labellers(TaskKind::Ranking, &rows);
        let b = q.iter().find(|q| q.user == biased).unwrap();
        let h = q.iter().find(|q| q.user == honest).unwrap();
        assert_eq!(b.first_shown_best, 40);
        assert!(b.flags.iter().any(|f| f.starts_with("position bias")), "{:?}", b.flags);
        assert!(!h.flags.iter().any(|f| f.starts_with("position bias")), "{:?}", h.flags);
        assert_eq!(item_agreement(&rows).len(), 40);
    }

    #[test]
    fn the_gold_interval_does_not_depend_on_the_order_of_the_scores() {
        let a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let mut b = a;
        b.reverse();
        assert_eq!(gold_estimate(&a), gold_estimate(&b));
    }

    #[test]
    fn a_letter_ranking_reads_tiers_and_ties() {
        assert_eq!(parse_letter_ranking("B > a = C", 3), Ok(vec![vec![1], vec![0, 2]]));
        assert!(parse_letter_ranking("B > A", 3).unwrap_err().contains("rank all 3"));
        assert!(parse_letter_ranking("B > D > A = C", 3).unwrap_err().contains("A to C"));
        assert!(parse_letter_ranking("B > B", 2).unwrap_err().contains("more than once"));
        assert!(parse_letter_ranking("1 > 2", 2).unwrap_err().contains("letters"));
    }

    #[test]
    fn settings_name_the_bad_field() {
        let ok = QualitySettings::default();
        assert_eq!(ok.checked(), Ok(ok));
        assert!(QualitySettings { gold_rate: 0.6, ..ok }.checked().unwrap_err().starts_with("gold_rate:"));
        assert!(QualitySettings { gold_rate: f64::NAN, ..ok }.checked().unwrap_err().starts_with("gold_rate:"));
        assert!(QualitySettings { gold_onboarding: -1, ..ok }.checked().unwrap_err().starts_with("gold_onboarding:"));
        assert!(QualitySettings { pause_below: Some(2.0), ..ok }.checked().unwrap_err().starts_with("pause_below:"));
        assert!(QualitySettings { pause_min_gold: 0, ..ok }.checked().unwrap_err().starts_with("pause_min_gold:"));
        assert!(QualitySettings { extra_max: 21, ..ok }.checked().unwrap_err().starts_with("extra_max:"));
        assert!(QualitySettings { extra_below: 1.5, ..ok }.checked().unwrap_err().starts_with("extra_below:"));
    }

    #[test]
    fn a_honeypot_puts_a_clearly_worse_response_last() {
        let texts: Vec<String> = ["Paris is the capital of France and its largest city by far.", "Paris."].map(String::from).to_vec();
        let models = vec!["a".to_string(), "b".to_string()];
        let h = honeypot(TaskKind::Ranking, &texts, &models, Some("Bake for 20 minutes.")).unwrap();
        assert_eq!((h.texts.len(), h.ranks.as_slice(), h.texts[1].as_str()), (2, &[1, 2][..], "Bake for 20 minutes."), "as many responses as the item");
        let p = honeypot(TaskKind::Pairwise, &texts, &models, None).unwrap();
        assert_eq!((p.texts.len(), p.ranks.as_slice()), (2, &[1, 2][..]));
        assert_eq!(p.texts[1], "Paris is the capital");
        assert!(p.explanation.contains("cut off"));
        assert_eq!(honeypot(TaskKind::Pairwise, &["Too short".to_string()], &models, None), None);
        let nine: Vec<String> = (0..9).map(|i| format!("response {i}")).collect();
        assert_eq!(honeypot(TaskKind::Ranking, &nine, &nine, Some("x")).unwrap().texts.len(), 9);
        let eight: Vec<String> = (0..8).map(|i| format!("response {i}")).collect();
        let h = honeypot(TaskKind::Ranking, &eight, &eight, Some("x")).unwrap();
        assert_eq!((h.texts.len(), h.texts[7].as_str(), h.ranks.iter().filter(|&&r| r == 1).count()), (8, "x", 7), "an 8-response project's honeypot has 8");
    }
}
