//! Agreement statistics that fit rankings with ties: Kendall's τ-b, Kendall's W with the tie
//! correction, Krippendorff's α (ordinal and nominal), Fleiss' κ, the exact binomial tail, and
//! percentile bootstrap intervals. Pure functions on plain numbers; the golden values in the
//! tests come from scipy, the `krippendorff` package and statsmodels (tests/golden/quality.py).

use rand::{Rng, SeedableRng};

/// Fractional ("mid") ranks of tier ranks (1 = best, equal = tie): `[1, 1, 2]` → `[1.5, 1.5, 3]`.
pub fn mid_ranks(ranks: &[i16]) -> Vec<f64> {
    ranks
        .iter()
        .map(|r| {
            let below = ranks.iter().filter(|x| *x < r).count() as f64;
            let tied = ranks.iter().filter(|x| *x == r).count() as f64;
            below + (tied + 1.0) / 2.0
        })
        .collect()
}

/// Kendall's τ-b of two paired samples (ties in either adjusted for); `None` when either is
/// constant or the lengths differ.
pub fn tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    let (mut s, mut nx, mut ny) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (dx, dy) = (sign(x[i] - x[j]), sign(y[i] - y[j]));
            s += dx * dy;
            nx += dx.abs();
            ny += dy.abs();
        }
    }
    (nx > 0.0 && ny > 0.0).then(|| s / (nx * ny).sqrt())
}

fn sign(d: f64) -> f64 {
    if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Agreement of `x` with a reference over the pairs the reference orders: (concordant −
/// discordant) / ordered pairs (Somers' d of `x` given the reference; a tie in `x` counts 0).
/// Equal to τ-b when neither has ties. `None` when the reference orders no pair.
pub fn somers_d(x: &[f64], reference: &[f64]) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0.0);
    for i in 0..x.len().min(reference.len()) {
        for j in i + 1..x.len().min(reference.len()) {
            let r = sign(reference[i] - reference[j]);
            s += r * sign(x[i] - x[j]);
            n += r.abs();
        }
    }
    (n > 0.0).then(|| s / n)
}

/// Kendall's W for `m` raters' ranks of the same `n` objects (`ratings[rater][object]`,
/// fractional ranks), with the correction for ties; `None` with fewer than 2 raters or objects
/// or when every rater ties everything. Chance level: 1/m (the expected W of independent raters).
pub fn kendall_w(ratings: &[Vec<f64>]) -> Option<f64> {
    let m = ratings.len();
    let n = ratings.first()?.len();
    if m < 2 || n < 2 || ratings.iter().any(|r| r.len() != n) {
        return None;
    }
    let sums: Vec<f64> = (0..n).map(|o| ratings.iter().map(|r| r[o]).sum()).collect();
    let mean = sums.iter().sum::<f64>() / n as f64;
    let s: f64 = sums.iter().map(|r| (r - mean).powi(2)).sum();
    let ties: f64 = ratings.iter().map(|r| tie_term(r)).sum();
    let (m, n) = (m as f64, n as f64);
    let denom = m * m * (n.powi(3) - n) - m * ties;
    (denom > 0.0).then(|| 12.0 * s / denom)
}

/// Σ (t³ − t) over the groups of tied values in `r`.
fn tie_term(r: &[f64]) -> f64 {
    let mut sorted = r.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut total = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].iter().take_while(|v| **v == sorted[i]).count();
        total += (j as f64).powi(3) - j as f64;
        i += j;
    }
    total
}

/// The level of measurement of Krippendorff's α.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Nominal,
    Ordinal,
}

/// Krippendorff's α over units (each the values its coders gave; units with fewer than two
/// values are not pairable and ignored). Chance level: 0. `None` when fewer than two pairable
/// values exist or all values are equal.
pub fn krippendorff_alpha(units: &[Vec<f64>], level: Level) -> Option<f64> {
    AlphaGroups::new(std::slice::from_ref(&units.to_vec()), level).alpha()
}

/// Krippendorff's α prepared for resampling whole groups of units (a bootstrap over items, each
/// item a group of units): every group's coincidences, over one value domain. A multiset of
/// groups' α is then computed from the weighted sum of their coincidences, with no unit copied;
/// it is the value [`krippendorff_alpha`] gives on the multiset's units (values absent from a
/// resample only add zero counts).
pub struct AlphaGroups {
    level: Level,
    /// The number of distinct pairable values.
    k: usize,
    /// Per group, its nonzero coincidence cells (`c * k + d`, summed weight), in cell order.
    groups: Vec<Vec<(usize, f64)>>,
}

impl AlphaGroups {
    pub fn new(groups: &[Vec<Vec<f64>>], level: Level) -> Self {
        let mut domain: Vec<f64> = groups.iter().flatten().filter(|u| u.len() >= 2).flatten().copied().collect();
        domain.sort_by(f64::total_cmp);
        domain.dedup();
        let k = domain.len();
        let index = |v: f64| domain.binary_search_by(|d| d.total_cmp(&v)).unwrap_or(0);
        let groups = groups
            .iter()
            .map(|units| {
                let mut cells: Vec<(usize, f64)> = Vec::new();
                for u in units.iter().filter(|u| u.len() >= 2) {
                    let w = 1.0 / (u.len() - 1) as f64;
                    let at: Vec<usize> = u.iter().map(|v| index(*v)).collect();
                    for (a, ia) in at.iter().enumerate() {
                        for (b, ib) in at.iter().enumerate() {
                            if a != b {
                                cells.push((ia * k + ib, w));
                            }
                        }
                    }
                }
                cells.sort_by_key(|c| c.0);
                let mut merged: Vec<(usize, f64)> = Vec::with_capacity(cells.len());
                for (cell, w) in cells {
                    match merged.last_mut() {
                        Some(last) if last.0 == cell => last.1 += w,
                        _ => merged.push((cell, w)),
                    }
                }
                merged
            })
            .collect();
        Self { level, k, groups }
    }

    /// α of every group once.
    pub fn alpha(&self) -> Option<f64> {
        self.alpha_weighted(&vec![1.0; self.groups.len()])
    }

    /// α of the multiset that holds group `i` `counts[i]` times.
    pub fn alpha_weighted(&self, counts: &[f64]) -> Option<f64> {
        let k = self.k;
        if k < 2 {
            return None;
        }
        let mut o = vec![0.0; k * k];
        for (cells, &times) in self.groups.iter().zip(counts) {
            if times != 0.0 {
                for &(cell, w) in cells {
                    o[cell] += times * w;
                }
            }
        }
        let n_c: Vec<f64> = o.chunks(k).map(|row| row.iter().sum()).collect();
        let n: f64 = n_c.iter().sum();
        let delta = |c: usize, d: usize| -> f64 {
            match self.level {
                Level::Nominal => f64::from(u8::from(c != d)),
                Level::Ordinal => {
                    let (lo, hi) = (c.min(d), c.max(d));
                    let between: f64 = n_c[lo..=hi].iter().sum();
                    (between - (n_c[c] + n_c[d]) / 2.0).powi(2)
                }
            }
        };
        let (mut observed, mut expected) = (0.0, 0.0);
        for c in 0..k {
            for d in 0..k {
                let dl = delta(c, d);
                observed += o[c * k + d] * dl;
                expected += n_c[c] * n_c[d] * dl;
            }
        }
        (expected > 0.0).then(|| 1.0 - (n - 1.0) * observed / expected)
    }

    /// α with its percentile bootstrap 95% interval over `rounds` resamples of the groups: the
    /// same resamples (seeded the same way) and interval as [`bootstrap`] over the groups.
    pub fn bootstrap(&self, rounds: usize, seed: u64) -> Option<Estimate> {
        let value = self.alpha()?;
        let n = self.groups.len();
        let mut counts = vec![0.0; n];
        let values = resamples(n, rounds, seed, |draws| {
            counts.iter_mut().for_each(|c| *c = 0.0);
            for i in draws {
                counts[i] += 1.0;
            }
            self.alpha_weighted(&counts)
        });
        Some(interval(value, values))
    }
}

/// Fleiss' κ of a subjects × categories table of counts (each row: how many raters chose each
/// category); rows with fewer than two ratings are ignored. With equal raters per subject this
/// is Fleiss' (1971) statistic. Chance level: 0.
pub fn fleiss_kappa(table: &[Vec<f64>]) -> Option<f64> {
    let rows: Vec<&Vec<f64>> = table.iter().filter(|r| r.iter().sum::<f64>() >= 2.0).collect();
    let k = rows.first()?.len();
    let total: f64 = rows.iter().map(|r| r.iter().sum::<f64>()).sum();
    let p_j: Vec<f64> = (0..k).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / total).collect();
    let p_bar = rows
        .iter()
        .map(|r| {
            let n: f64 = r.iter().sum();
            (r.iter().map(|x| x * x).sum::<f64>() - n) / (n * (n - 1.0))
        })
        .sum::<f64>()
        / rows.len() as f64;
    let p_e: f64 = p_j.iter().map(|p| p * p).sum();
    (p_e < 1.0).then(|| (p_bar - p_e) / (1.0 - p_e))
}

/// P(X ≥ x) for X ~ Binomial(n, p): the one-sided exact binomial test.
pub fn binomial_upper_tail(x: u64, n: u64, p: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if x > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let terms: Vec<f64> = (x..=n).map(|k| ln_choose(n, k) + k as f64 * lp + (n - k) as f64 * lq).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>()).min(1.0)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    let k = k.min(n - k);
    (0..k).map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln()).sum()
}

/// A statistic with its percentile bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// `stat` over `units` with a percentile bootstrap 95% interval from `rounds` resamples of the
/// units (seeded, so the same data gives the same interval); `None` when `stat` is undefined
/// on the data. Resamples where it is undefined are left out.
pub fn bootstrap<T, F>(units: &[T], rounds: usize, seed: u64, stat: F) -> Option<Estimate>
where
    T: Clone,
    F: Fn(&[T]) -> Option<f64>,
{
    let value = stat(units)?;
    let mut sample = Vec::with_capacity(units.len());
    let values = resamples(units.len(), rounds, seed, |draws| {
        sample.clear();
        sample.extend(draws.map(|i| units[i].clone()));
        stat(&sample)
    });
    Some(interval(value, values))
}

/// `stat` of `rounds` resamples with replacement of `n` units (each given as the drawn
/// indices), seeded; the defined values.
fn resamples<F>(n: usize, rounds: usize, seed: u64, mut stat: F) -> Vec<f64>
where
    F: FnMut(&mut dyn Iterator<Item = usize>) -> Option<f64>,
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut draws = (0..n).map(|_| rng.gen_range(0..n));
        if let Some(v) = stat(&mut draws) {
            values.push(v);
        }
    }
    values
}

/// The percentile 95% interval of resampled `values` around `value` (the value itself when no
/// resample was defined).
fn interval(value: f64, mut values: Vec<f64>) -> Estimate {
    if values.is_empty() {
        return Estimate { value, ci_low: value, ci_high: value };
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Estimate { value, ci_low: at(0.025), ci_high: at(0.975) }
}

/// The mean of `xs`, `None` when empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// The median of `xs`, `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_ranks_average_the_tied_places() {
        assert_eq!(mid_ranks(&[1, 1, 2]), vec![1.5, 1.5, 3.0]);
        assert_eq!(mid_ranks(&[2, 1, 3, 1]), vec![3.0, 1.5, 4.0, 1.5]);
    }

    #[test]
    fn somers_d_equals_tau_b_without_ties_and_scores_only_ordered_pairs() {
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 4.0]);
        assert!((somers_d(&x, &y).unwrap() - tau_b(&x, &y).unwrap()).abs() < 1e-12);
        // A honeypot's reference: only the last must be last.
        assert_eq!(somers_d(&[3.0, 1.0, 2.0, 4.0], &[1.0, 1.0, 1.0, 2.0]), Some(1.0));
        assert_eq!(somers_d(&[4.0, 1.0, 2.0, 3.0], &[1.0, 1.0, 1.0, 2.0]), Some(1.0 / 3.0));
        assert_eq!(somers_d(&[1.0, 2.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn degenerate_inputs_give_none_not_nan() {
        assert_eq!(tau_b(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(kendall_w(&[vec![1.0, 2.0]]), None);
        assert_eq!(krippendorff_alpha(&[vec![1.0, 1.0]], Level::Nominal), None);
        assert_eq!(fleiss_kappa(&[vec![2.0, 0.0], vec![2.0, 0.0]]), None);
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn perfect_agreement_is_one() {
        let r = vec![vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]];
        assert!((kendall_w(&r).unwrap() - 1.0).abs() < 1e-12);
        let units = vec![vec![1.0, 1.0], vec![2.0, 2.0], vec![3.0, 3.0]];
        assert!((krippendorff_alpha(&units, Level::Ordinal).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_bootstrap_interval_brackets_the_value_and_repeats() {
        let xs: Vec<f64> = (0..50).map(|i| f64::from(i % 7)).collect();
        let a = bootstrap(&xs, 500, 7, mean).unwrap();
        assert!(a.ci_low <= a.value && a.value <= a.ci_high && a.ci_low < a.ci_high);
        assert_eq!(a, bootstrap(&xs, 500, 7, mean).unwrap());
    }

    /// Groups of units (items of 3–4 labellers' mid-ranks, some with ties, one with a missing
    /// value) for the grouped α.
    fn some_groups() -> Vec<Vec<Vec<f64>>> {
        (0..40)
            .map(|i| {
                let m = 3 + i % 2;
                (0..4).map(|p| (0..m).map(|c| f64::from(((i * 7 + p * 3 + c * (i % 3)) % 4) as u8) / 2.0 + 1.0).collect()).collect()
            })
            .chain(std::iter::once(vec![vec![1.0], vec![2.0, 2.5]]))
            .collect()
    }

    #[test]
    fn grouped_alpha_is_the_alpha_of_the_units_with_each_group_repeated() {
        let groups = some_groups();
        for level in [Level::Ordinal, Level::Nominal] {
            let g = AlphaGroups::new(&groups, level);
            let units: Vec<Vec<f64>> = groups.iter().flatten().cloned().collect();
            let (a, b) = (g.alpha().unwrap(), krippendorff_alpha(&units, level).unwrap());
            assert!((a - b).abs() < 1e-12, "{a} {b}");
            // Group i taken i % 3 times: the units repeated as often.
            let counts: Vec<f64> = (0..groups.len()).map(|i| (i % 3) as f64).collect();
            let repeated: Vec<Vec<f64>> = groups.iter().enumerate().flat_map(|(i, g)| std::iter::repeat_n(g.clone(), i % 3).flatten()).collect();
            let (a, b) = (g.alpha_weighted(&counts).unwrap(), krippendorff_alpha(&repeated, level).unwrap());
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
    }

    #[test]
    fn grouped_alpha_bootstrap_is_the_generic_bootstrap_over_the_groups() {
        let groups = some_groups();
        let fast = AlphaGroups::new(&groups, Level::Ordinal).bootstrap(200, 13).unwrap();
        let slow = bootstrap(&groups, 200, 13, |sample| krippendorff_alpha(&sample.iter().flatten().cloned().collect::<Vec<_>>(), Level::Ordinal)).unwrap();
        for (a, b) in [(fast.value, slow.value), (fast.ci_low, slow.ci_low), (fast.ci_high, slow.ci_high)] {
            assert!((a - b).abs() < 1e-12, "{fast:?} {slow:?}");
        }
        assert!(fast.ci_low < fast.ci_high);
        // One value everywhere: α is undefined.
        assert_eq!(AlphaGroups::new(&[vec![vec![1.0, 1.0]]], Level::Nominal).bootstrap(10, 1), None);
    }

    #[test]
    fn the_binomial_tail_sums_to_one_at_zero_and_matches_a_small_case() {
        assert_eq!(binomial_upper_tail(0, 10, 0.3), 1.0);
        // P(X >= 2), n = 2, p = 0.5
        assert!((binomial_upper_tail(2, 2, 0.5) - 0.25).abs() < 1e-15);
    }

    /// Values computed once by scipy, `krippendorff` and statsmodels (tests/golden/quality.py).
    mod golden {
        use super::super::*;
        use serde_json::Value;

        fn data() -> Value {
            serde_json::from_str(include_str!("../../tests/golden/quality.json")).unwrap()
        }

        fn floats(v: &Value) -> Vec<f64> {
            v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        }

        fn close(got: Option<f64>, want: &Value, what: &str) {
            let (got, want) = (got.unwrap_or_else(|| panic!("{what}: undefined")), want.as_f64().unwrap());
            assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
        }

        #[test]
        fn tau_b_matches_scipy() {
            for c in data()["tau_b"].as_array().unwrap() {
                close(tau_b(&floats(&c["x"]), &floats(&c["y"])), &c["value"], "tau_b");
            }
        }

        #[test]
        fn kendalls_w_with_ties_matches_scipys_friedman_statistic() {
            for c in data()["kendall_w"].as_array().unwrap() {
                let ratings: Vec<Vec<f64>> = c["ratings"].as_array().unwrap().iter().map(floats).collect();
                close(kendall_w(&ratings), &c["value"], "W");
            }
        }

        #[test]
        fn krippendorffs_alpha_matches_the_krippendorff_package() {
            for c in data()["alpha"].as_array().unwrap() {
                let coders: Vec<Vec<Option<f64>>> =
                    c["data"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(Value::as_f64).collect()).collect();
                let units: Vec<Vec<f64>> = (0..coders[0].len()).map(|u| coders.iter().filter_map(|c| c[u]).collect()).collect();
                close(krippendorff_alpha(&units, Level::Ordinal), &c["ordinal"], "ordinal alpha");
                close(krippendorff_alpha(&units, Level::Nominal), &c["nominal"], "nominal alpha");
            }
        }

        #[test]
        fn fleiss_kappa_matches_statsmodels() {
            for c in data()["fleiss"].as_array().unwrap() {
                let table: Vec<Vec<f64>> = c["table"].as_array().unwrap().iter().map(floats).collect();
                close(fleiss_kappa(&table), &c["value"], "fleiss");
            }
        }

        #[test]
        fn the_binomial_tail_matches_scipys_binomtest() {
            for c in data()["binomial_upper"].as_array().unwrap() {
                let got = binomial_upper_tail(c["x"].as_u64().unwrap(), c["n"].as_u64().unwrap(), c["p"].as_f64().unwrap());
                close(Some(got), &c["value"], "binomial");
            }
        }
    }
}
