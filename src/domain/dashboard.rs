//! The lead's dashboard figures that come from the judgements alone: per labeller, how many
//! judgements, the median time on task and how often their pairwise preferences agree with
//! other labellers' on the same items; per model, wins, losses and ties in every comparison
//! people made. Pure: the caller loads [`Ranked`] rows and [`ItemModels`].

use std::collections::{BTreeMap, HashMap};

use super::{ItemId, UserId};

/// A judgement as the dashboard counts it.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub item: ItemId,
    pub user: Option<UserId>,
    /// Made by a labeller (not imported).
    pub labeller: bool,
    /// Tier ranks by response position (1 = best); none for demonstrations.
    pub ranks: Option<Vec<i16>>,
    pub time_ms: Option<i64>,
}

/// An item's kind and the model of each response, by position.
#[derive(Debug, Clone)]
pub struct ItemModels {
    /// A gold item or honeypot (left out of the agreement between labellers).
    pub gold: bool,
    /// A honeypot (left out of the models' figures).
    pub honeypot: bool,
    pub models: Vec<String>,
}

/// One labeller's judgement-derived figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabellerFigures {
    pub judgements: i64,
    pub median_seconds: Option<f64>,
    /// Share of (their pair, another labeller's judgement of the item) where both order the
    /// pair the same way (a tie is its own answer), over `agreement_pairs`.
    pub agreement: Option<f64>,
    pub agreement_pairs: i64,
}

/// A model's comparisons (a tie counts half in the win rate).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFigures {
    pub model: String,
    pub wins: i64,
    pub losses: i64,
    pub ties: i64,
    pub win_rate: Option<f64>,
}

/// Every labeller's figures: judgements and median time over their labeller judgements, and
/// agreement over their ranked judgements of ordinary items that another labeller also ranked.
pub fn labellers(rows: &[Ranked], items: &HashMap<ItemId, ItemModels>) -> HashMap<UserId, LabellerFigures> {
    let mut times: HashMap<UserId, (i64, Vec<f64>)> = HashMap::new();
    for r in rows.iter().filter(|r| r.labeller) {
        if let Some(u) = r.user {
            let e = times.entry(u).or_default();
            e.0 += 1;
            e.1.extend(r.time_ms.map(|t| t as f64));
        }
    }
    let mut by_item: BTreeMap<ItemId, Vec<(UserId, &[i16])>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.labeller && items.get(&r.item).is_some_and(|i| !i.gold)) {
        if let (Some(u), Some(ranks)) = (r.user, &r.ranks) {
            by_item.entry(r.item).or_default().push((u, ranks));
        }
    }
    let mut agree: HashMap<UserId, (i64, i64)> = HashMap::new();
    for js in by_item.values().filter(|js| js.len() >= 2) {
        for (a, (ua, ra)) in js.iter().enumerate() {
            for (b, (ub, rb)) in js.iter().enumerate() {
                if a == b || ua == ub || ra.len() != rb.len() {
                    continue;
                }
                let e = agree.entry(*ua).or_default();
                for x in 0..ra.len() {
                    for y in x + 1..ra.len() {
                        e.0 += 1;
                        e.1 += i64::from((ra[x] - ra[y]).signum() == (rb[x] - rb[y]).signum());
                    }
                }
            }
        }
    }
    times
        .into_iter()
        .map(|(u, (n, ts))| {
            let (pairs, agreed) = agree.get(&u).copied().unwrap_or_default();
            let median_seconds = super::agreement::median(&ts).map(|ms| ms / 1000.0);
            (u, LabellerFigures { judgements: n, median_seconds, agreement: (pairs > 0).then(|| agreed as f64 / pairs as f64), agreement_pairs: pairs })
        })
        .collect()
}

/// Every model's figures over every ranked judgement (imported ones too) of items that are not
/// honeypots, best win rate first.
pub fn models(rows: &[Ranked], items: &HashMap<ItemId, ItemModels>) -> Vec<ModelFigures> {
    let mut counts: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for r in rows {
        let (Some(ranks), Some(item)) = (&r.ranks, items.get(&r.item)) else { continue };
        if item.honeypot || item.models.len() < 2 {
            continue;
        }
        for (a, ma) in item.models.iter().enumerate() {
            let e = counts.entry(ma.as_str()).or_default();
            let Some(ra) = ranks.get(a) else { continue };
            for b in (0..item.models.len()).filter(|b| *b != a) {
                match ranks.get(b) {
                    Some(rb) if ra < rb => e.0 += 1,
                    Some(rb) if ra > rb => e.1 += 1,
                    Some(_) => e.2 += 1,
                    None => {}
                }
            }
        }
    }
    let mut out: Vec<ModelFigures> = counts
        .into_iter()
        .map(|(m, (wins, losses, ties))| {
            let n = wins + losses + ties;
            ModelFigures { model: m.to_string(), wins, losses, ties, win_rate: (n > 0).then(|| (wins as f64 + 0.5 * ties as f64) / n as f64) }
        })
        .collect();
    out.sort_by(|a, b| match (a.win_rate, b.win_rate) {
        (Some(x), Some(y)) => y.total_cmp(&x).then_with(|| a.model.cmp(&b.model)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.model.cmp(&b.model),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(models: &[&str], gold: bool, honeypot: bool) -> ItemModels {
        ItemModels { gold, honeypot, models: models.iter().map(|m| m.to_string()).collect() }
    }

    #[test]
    fn agreement_counts_each_pair_against_each_other_labeller() {
        let (i, g) = (ItemId::new(), ItemId::new());
        let (u1, u2, u3) = (UserId::new(), UserId::new(), UserId::new());
        let items = HashMap::from([(i, item(&["a", "b", "c"], false, false)), (g, item(&["a", "b", "c"], true, false))]);
        let r = |item, user, ranks: &[i16], t| Ranked { item, user: Some(user), labeller: true, ranks: Some(ranks.to_vec()), time_ms: Some(t) };
        let rows =
            vec![r(i, u1, &[1, 2, 3], 1000), r(i, u2, &[1, 3, 2], 3000), r(i, u3, &[1, 1, 2], 2000), r(g, u1, &[3, 2, 1], 4000), r(g, u2, &[3, 2, 1], 5000)];
        let f = labellers(&rows, &items);
        // u1 against u2: (0,1) agree, (0,2) agree, (1,2) not; against u3: (0,1) tie vs order: no, (0,2) yes, (1,2) yes.
        assert_eq!(f[&u1].agreement_pairs, 6);
        assert!((f[&u1].agreement.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(f[&u1].judgements, 2);
        assert_eq!(f[&u1].median_seconds, Some(2.5));
        assert_eq!(f[&u3].median_seconds, Some(2.0));
    }

    #[test]
    fn models_count_both_directions_and_leave_out_honeypots() {
        let (i, h) = (ItemId::new(), ItemId::new());
        let items = HashMap::from([(i, item(&["x", "y", "z"], false, false)), (h, item(&["x", "y"], true, true))]);
        let rows = vec![
            Ranked { item: i, user: None, labeller: false, ranks: Some(vec![1, 2, 2]), time_ms: None },
            Ranked { item: h, user: None, labeller: true, ranks: Some(vec![2, 1]), time_ms: None },
        ];
        let m = models(&rows, &items);
        assert_eq!(m.iter().map(|m| (m.model.as_str(), m.wins, m.losses, m.ties)).collect::<Vec<_>>(), [("x", 2, 0, 0), ("y", 0, 1, 1), ("z", 0, 1, 1)]);
        assert_eq!(m[0].win_rate, Some(1.0));
        assert_eq!(m[1].win_rate, Some(0.25));
    }
}
