//! Queue strategies: the order in which a project's open items are leased, and the maths that
//! turns a reward model ensemble's scores of an item's responses into that order (an item's
//! priority for `uncertainty`, each member's best response for `thompson`). The replay
//! simulator selects pool pairs with the same functions.

use serde::{Deserialize, Serialize};

/// The order in which leases hand out a project's open items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "queue_strategy", rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum QueueStrategy {
    /// Import order.
    #[default]
    Fifo,
    /// Newest items first (a generate run's samples before older items).
    NewestFirst,
    /// Items whose response pairs the newest reward model is least sure of first.
    Uncertainty,
    /// Double Thompson sampling with the ensemble's members as posterior draws.
    Thompson,
}

impl QueueStrategy {
    pub const ALL: [QueueStrategy; 4] = [Self::Fifo, Self::NewestFirst, Self::Uncertainty, Self::Thompson];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::NewestFirst => "newest-first",
            Self::Uncertainty => "uncertainty",
            Self::Thompson => "thompson",
        }
    }

    /// Whether leasing follows a reward model's scores.
    pub fn needs_scores(self) -> bool {
        matches!(self, Self::Uncertainty | Self::Thompson)
    }
}

impl std::str::FromStr for QueueStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|q| q.as_str() == s.trim()).ok_or_else(|| format!("expected fifo, newest-first, uncertainty or thompson, got {s:?}"))
    }
}

impl std::fmt::Display for QueueStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Standard deviation (population) of `xs`; 0 for fewer than two values.
fn std_dev(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = xs.clone().count();
    if n < 2 {
        return 0.0;
    }
    let mean = xs.clone().sum::<f64>() / n as f64;
    (xs.map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt()
}

/// An item's priority for `uncertainty` from `rewards[response][member]` (every response with
/// the same number of members): with two or more members, the largest over its response pairs
/// (a, b) of the standard deviation across members of r_m(a) − r_m(b) — the pair the ensemble
/// disagrees on most; with one member, minus the smallest |r(a) − r(b)| — the pair whose
/// P(a ≻ b) = σ(r(a) − r(b)) is closest to ½. `None` for fewer than two responses or a
/// non-finite reward.
pub fn item_priority(rewards: &[Vec<f64>]) -> Option<f64> {
    let k = rewards.first()?.len();
    if rewards.len() < 2 || k == 0 || rewards.iter().any(|r| r.len() != k || r.iter().any(|x| !x.is_finite())) {
        return None;
    }
    let mut best = f64::NEG_INFINITY;
    for a in 0..rewards.len() {
        for b in a + 1..rewards.len() {
            let p = match k {
                1 => -(rewards[a][0] - rewards[b][0]).abs(),
                _ => std_dev((0..k).map(|m| rewards[a][m] - rewards[b][m])),
            };
            best = best.max(p);
        }
    }
    Some(best)
}

/// For each member, the index of the response it rewards most (the first of equals), from
/// `rewards[response][member]`.
pub fn member_best(rewards: &[Vec<f64>]) -> Vec<i16> {
    let k = rewards.first().map_or(0, Vec::len);
    (0..k)
        .map(|m| {
            let mut best = 0usize;
            for (i, r) in rewards.iter().enumerate() {
                if r.get(m).copied().unwrap_or(f64::NEG_INFINITY) > rewards[best].get(m).copied().unwrap_or(f64::NEG_INFINITY) {
                    best = i;
                }
            }
            i16::try_from(best).unwrap_or(i16::MAX)
        })
        .collect()
}

/// Two distinct member indices from uniforms `u1`, `u2` in [0, 1), as leasing draws them for
/// `thompson` (`m2` uniform over the members other than `m1`); both 0 for a single member.
pub fn two_members(k: usize, u1: f64, u2: f64) -> (usize, usize) {
    if k < 2 {
        return (0, 0);
    }
    let m1 = ((u1 * k as f64) as usize).min(k - 1);
    let step = 1 + ((u2 * (k - 1) as f64) as usize).min(k - 2);
    (m1, (m1 + step) % k)
}

/// Double Thompson sampling's pick among `candidates` (indices into `best`, already in
/// priority order, the caller's first 32): the first whose best responses under members `m1`
/// and `m2` differ, else the first. `best[i]` is [`member_best`] of candidate i.
pub fn thompson_pick(candidates: &[usize], best: &[Vec<i16>], m1: usize, m2: usize) -> Option<usize> {
    candidates.iter().copied().find(|&c| best[c].get(m1) != best[c].get(m2)).or_else(|| candidates.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_from_their_names_and_refuse_others() {
        for q in QueueStrategy::ALL {
            assert_eq!(q.as_str().parse::<QueueStrategy>().unwrap(), q);
        }
        assert!("random".parse::<QueueStrategy>().unwrap_err().contains("fifo, newest-first, uncertainty or thompson"));
        assert_eq!(QueueStrategy::default(), QueueStrategy::Fifo);
    }

    #[test]
    fn an_ensemble_ranks_the_pair_its_members_disagree_on_highest() {
        // Members agree that a beats b by 1 (difference std 0); on a vs c they say +1 and −1 (std 1).
        let rewards = vec![vec![1.0, 1.0], vec![0.0, 0.0], vec![0.0, 2.0]];
        assert!((item_priority(&rewards).unwrap() - 1.0).abs() < 1e-12);
        let agreed = vec![vec![1.0, 1.0], vec![0.0, 0.0]];
        assert_eq!(item_priority(&agreed), Some(0.0));
    }

    #[test]
    fn a_single_model_ranks_the_closest_pair_highest() {
        let rewards = vec![vec![3.0], vec![0.0], vec![0.5]];
        assert!((item_priority(&rewards).unwrap() + 0.5).abs() < 1e-12);
        assert!(item_priority(&[vec![1.0]]).is_none());
        assert!(item_priority(&[vec![f64::NAN], vec![1.0]]).is_none());
    }

    #[test]
    fn each_member_names_its_best_response() {
        let rewards = vec![vec![1.0, 0.0, 5.0], vec![2.0, -1.0, 5.0], vec![0.0, 0.5, 1.0]];
        assert_eq!(member_best(&rewards), vec![1, 2, 0]);
    }

    #[test]
    fn two_members_are_distinct_and_cover_every_pair() {
        let mut seen = std::collections::HashSet::new();
        for a in 0..40 {
            for b in 0..40 {
                let (m1, m2) = two_members(4, a as f64 / 40.0, b as f64 / 40.0);
                assert!(m1 != m2 && m1 < 4 && m2 < 4);
                seen.insert((m1, m2));
            }
        }
        assert_eq!(seen.len(), 12);
        assert_eq!(two_members(1, 0.7, 0.2), (0, 0));
    }

    #[test]
    fn thompson_takes_the_first_candidate_whose_draws_disagree() {
        let best = vec![vec![0, 0], vec![1, 0], vec![0, 1]];
        assert_eq!(thompson_pick(&[0, 1, 2], &best, 0, 1), Some(1));
        assert_eq!(thompson_pick(&[0], &best, 0, 1), Some(0));
        assert_eq!(thompson_pick(&[], &best, 0, 1), None);
    }
}
