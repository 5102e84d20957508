//! The replay simulator's rules: a labelled preference pair read from a file, how a queue
//! strategy picks the next pairs to reveal from an ensemble's member rewards, and the figures
//! over seeds (means with 95% intervals, labels needed to reach a target accuracy).

use rand::Rng;
use serde_json::{Map, Value};

use super::queue::{item_priority, member_best, thompson_pick, two_members, QueueStrategy};

/// One line of a preference file: the row as written (it is passed to the trainer as is, or
/// with `chosen` and `rejected` swapped when its revealed label is flipped).
#[derive(Debug, Clone)]
pub struct PairRow(pub Map<String, Value>);

impl PairRow {
    /// A JSON object with string `chosen` and `rejected` that differ (HH-RLHF's form, or with
    /// an explicit `prompt`).
    pub fn parse(line: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(obj) = v else { return Err("expected a JSON object with \"chosen\" and \"rejected\"".into()) };
        for field in ["chosen", "rejected"] {
            match obj.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(_) => return Err(format!("\"{field}\" must be a non-empty string")),
                None => return Err(format!("\"{field}\" is missing (expected HH-RLHF's {{\"chosen\", \"rejected\"}})")),
            }
        }
        if obj["chosen"] == obj["rejected"] {
            return Err("\"chosen\" and \"rejected\" are the same text".into());
        }
        Ok(Self(obj))
    }

    /// The row with its label as revealed: `chosen` and `rejected` swapped when `flip`.
    pub fn revealed(&self, flip: bool) -> Value {
        let mut obj = self.0.clone();
        if flip {
            let c = obj.remove("chosen").unwrap_or_default();
            let r = obj.insert("rejected".into(), c).unwrap_or_default();
            obj.insert("chosen".into(), r);
        }
        Value::Object(obj)
    }
}

/// The next `n` pairs to reveal from `remaining` (indices into `members`, in pool order), by
/// `strategy`, where `members[i]` is `[chosen's member rewards, rejected's]` — symmetric in the
/// two, so no strategy sees the label. `fifo`: the next in pool order; `uncertainty`: highest
/// [`item_priority`] first; `thompson`: per pick two distinct members drawn, and of the 32
/// highest-priority pairs left the first whose two members prefer different responses, else
/// the first (as leasing does).
pub fn select(strategy: QueueStrategy, remaining: &[usize], members: &[[Vec<f64>; 2]], n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let n = n.min(remaining.len());
    if matches!(strategy, QueueStrategy::Fifo | QueueStrategy::NewestFirst) {
        return remaining[..n].to_vec();
    }
    let priority = |i: usize| item_priority(&members[i]).unwrap_or(f64::NEG_INFINITY);
    let mut ordered: Vec<usize> = remaining.to_vec();
    // Stable: ties keep pool order.
    ordered.sort_by(|&a, &b| priority(b).total_cmp(&priority(a)));
    if strategy == QueueStrategy::Uncertainty {
        ordered.truncate(n);
        return ordered;
    }
    let k = members.first().map_or(0, |m| m[0].len());
    let best: Vec<Vec<i16>> = members.iter().map(|m| member_best(m)).collect();
    let mut picked = Vec::with_capacity(n);
    for _ in 0..n {
        let (m1, m2) = two_members(k, rng.gen(), rng.gen());
        let window: Vec<usize> = ordered.iter().copied().take(32).collect();
        let Some(choice) = thompson_pick(&window, &best, m1, m2) else { break };
        ordered.retain(|&i| i != choice);
        picked.push(choice);
    }
    picked
}

/// The share of pairs whose chosen response gets the higher mean reward (a tie counts half).
pub fn accuracy(members: &[[Vec<f64>; 2]]) -> f64 {
    if members.is_empty() {
        return f64::NAN;
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let right: f64 = members
        .iter()
        .map(|[c, r]| match mean(c).total_cmp(&mean(r)) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
        .sum();
    right / members.len() as f64
}

/// Student's t quantile 0.975 for `df` degrees of freedom (∞ beyond 30: 1.96).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080,
        2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

/// The mean of `xs` and the half-width of its 95% interval (t over seeds; NaN for one value).
pub fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

/// The fewest labels at which the mean accuracy reaches `target` (`labels` ascending, `means`
/// beside), or `None`.
pub fn labels_to_reach(labels: &[usize], means: &[f64], target: f64) -> Option<usize> {
    labels.iter().zip(means).find(|(_, &m)| m >= target - 1e-12).map(|(&l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_pair_needs_two_different_texts_and_flips_by_swapping_them() {
        let row = PairRow::parse(r#"{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away", "x": 1}"#).unwrap();
        let flipped = row.revealed(true);
        assert_eq!(flipped["chosen"], row.0["rejected"]);
        assert_eq!(flipped["rejected"], row.0["chosen"]);
        assert_eq!(flipped["x"], 1);
        assert_eq!(row.revealed(false)["chosen"], row.0["chosen"]);
        assert!(PairRow::parse(r#"{"chosen": "a"}"#).unwrap_err().contains("\"rejected\" is missing"));
        assert!(PairRow::parse(r#"{"chosen": "a", "rejected": "a"}"#).unwrap_err().contains("same text"));
        assert!(PairRow::parse(r#"{"chosen": 3, "rejected": "a"}"#).unwrap_err().contains("non-empty string"));
        assert!(PairRow::parse("[1]").unwrap_err().contains("JSON object"));
        assert!(PairRow::parse("{").unwrap_err().starts_with("not JSON"));
    }

    fn pair(c: &[f64], r: &[f64]) -> [Vec<f64>; 2] {
        [c.to_vec(), r.to_vec()]
    }

    #[test]
    fn strategies_pick_in_pool_order_by_disagreement_or_by_drawn_members() {
        // Pair 0: members agree; pair 1: they disagree a little; pair 2: most.
        let members = vec![pair(&[1.0, 1.0], &[0.0, 0.0]), pair(&[1.0, 0.0], &[0.0, 0.5]), pair(&[2.0, -2.0], &[0.0, 0.0])];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(select(QueueStrategy::Fifo, &[0, 1, 2], &members, 2, &mut rng), vec![0, 1]);
        assert_eq!(select(QueueStrategy::Uncertainty, &[0, 1, 2], &members, 2, &mut rng), vec![2, 1]);
        // Two members: both disagreeing pairs are taken before the agreed one.
        assert_eq!(select(QueueStrategy::Thompson, &[0, 1, 2], &members, 3, &mut rng), vec![2, 1, 0]);
        assert_eq!(select(QueueStrategy::Uncertainty, &[0], &members, 5, &mut rng), vec![0]);
    }

    #[test]
    fn accuracy_counts_the_mean_reward_s_order_and_ties_as_half() {
        assert_eq!(accuracy(&[pair(&[1.0, 0.0], &[0.0, 0.0]), pair(&[0.0], &[1.0]), pair(&[1.0], &[1.0])]), 0.5);
    }

    #[test]
    fn intervals_use_student_s_t_over_seeds() {
        // Reference: scipy.stats.t.ppf(0.975, 2) * stdev([0.5, 0.6, 0.7]) / sqrt(3) = 0.248413...
        let (m, h) = mean_ci(&[0.5, 0.6, 0.7]);
        assert!((m - 0.6).abs() < 1e-12 && (h - 0.248_413).abs() < 1e-4, "{m} {h}");
        assert!(mean_ci(&[0.5]).1.is_nan());
        assert_eq!(labels_to_reach(&[100, 200, 300], &[0.55, 0.6, 0.62], 0.6), Some(200));
        assert_eq!(labels_to_reach(&[100, 200], &[0.55, 0.58], 0.6), None);
    }
}
