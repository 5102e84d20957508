//! Reward over-optimisation (Gao et al. 2023, "Scaling laws for reward model
//! overoptimization"): with d = √KL from the starting policy, the gold reward of an RL policy
//! follows R(d) = d(α − β·log d). Linear in α and β, so least squares has a closed form; when
//! β > 0 the curve turns over at d* = exp(α/β − 1), where it peaks at R(d*) = β·d*.
//!
//! The watchdog (a `spotcheck` run's figures): per √KL-grid checkpoint of a PPO run, the reward
//! model's score, the ensemble's disagreement, and people's win rate against the starting
//! policy on blind pairs (ties count half; a 95% Wilson interval). Gao's curve is fitted to the
//! human points as gold R(d) = win rate − ½ (the start against itself is ½ at d = 0), and a
//! schedule's gate reads the win rate at the last grid point.

use serde::Serialize;

/// A fitted R(d) = d(α − β·log d).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaoFit {
    pub alpha: f64,
    pub beta: f64,
}

impl GaoFit {
    /// Least squares over `(d, R)` points (d ≥ 0; d = 0 reads d·log d as its limit 0). Needs two
    /// distinct d > 0; refuses a negative or non-finite value.
    pub fn fit(points: &[(f64, f64)]) -> Result<Self, String> {
        if let Some((d, r)) = points.iter().find(|(d, r)| !d.is_finite() || *d < 0.0 || !r.is_finite()) {
            return Err(format!("a point must have a finite √KL ≥ 0 and a finite value, got ({d}, {r})"));
        }
        // Columns x1 = d, x2 = −d·log d: R = α·x1 + β·x2.
        let (mut s11, mut s12, mut s22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(d, r) in points {
            let (x1, x2) = (d, -xlogx(d));
            s11 += x1 * x1;
            s12 += x1 * x2;
            s22 += x2 * x2;
            b1 += x1 * r;
            b2 += x2 * r;
        }
        let det = s11 * s22 - s12 * s12;
        if det <= 1e-12 * s11 * s22 {
            return Err("the fit needs points at two or more distinct √KL above 0".into());
        }
        Ok(Self { alpha: (s22 * b1 - s12 * b2) / det, beta: (s11 * b2 - s12 * b1) / det })
    }

    /// R(d).
    pub fn at(&self, d: f64) -> f64 {
        self.alpha * d - self.beta * xlogx(d)
    }

    /// Where the curve turns over, d* = exp(α/β − 1): only when β > 0 (else it never falls).
    pub fn turnover(&self) -> Option<f64> {
        let d = (self.alpha / self.beta - 1.0).exp();
        (self.beta > 0.0 && d.is_finite()).then_some(d)
    }

    /// R at the turnover, β·d*.
    pub fn peak(&self) -> Option<f64> {
        self.turnover().map(|d| self.beta * d)
    }
}

/// People's verdicts on one checkpoint's pairs against the start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub wins: u64,
    pub ties: u64,
    pub losses: u64,
}

impl Tally {
    /// Adds one judgement from the ranks (1 = best) of the policy's and the start's response.
    pub fn add(&mut self, policy_rank: i16, start_rank: i16) {
        match policy_rank.cmp(&start_rank) {
            std::cmp::Ordering::Less => self.wins += 1,
            std::cmp::Ordering::Equal => self.ties += 1,
            std::cmp::Ordering::Greater => self.losses += 1,
        }
    }

    pub fn n(&self) -> u64 {
        self.wins + self.ties + self.losses
    }

    /// The policy's win rate, ties counting half; None without judgements.
    pub fn rate(&self) -> Option<f64> {
        (self.n() > 0).then(|| (self.wins as f64 + 0.5 * self.ties as f64) / self.n() as f64)
    }

    /// The 95% Wilson score interval of the win rate.
    pub fn interval(&self) -> Option<(f64, f64)> {
        let (p, n, z) = (self.rate()?, self.n() as f64, 1.959_963_984_540_054);
        let centre = p + z * z / (2.0 * n);
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
        let d = 1.0 + z * z / n;
        Some((((centre - half) / d).max(0.0), ((centre + half) / d).min(1.0)))
    }
}

/// One grid checkpoint of a spot check, with what the reward model and people said.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WatchPoint {
    /// The checkpoint's folder under the PPO run's `kl-grid/` (`sqrt-kl-0.500`).
    pub checkpoint: String,
    /// The grid point √KL passed, and √KL measured at that iteration.
    pub point: f64,
    pub sqrt_kl: f64,
    pub iteration: u64,
    /// The reward model's mean score on that iteration's rollouts (an ensemble's combined score).
    pub rm_score: f64,
    /// An ensemble's disagreement (members' mean standard deviation) on those rollouts.
    pub ensemble_std: Option<f64>,
    pub judgements: u64,
    pub wins: u64,
    pub ties: u64,
    /// People's win rate against the start (ties half) and its 95% Wilson interval.
    pub win_rate: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
}

impl WatchPoint {
    /// Fills the human figures from `tally`.
    pub fn with_tally(mut self, tally: Tally) -> Self {
        (self.judgements, self.wins, self.ties, self.win_rate) = (tally.n(), tally.wins, tally.ties, tally.rate());
        (self.ci_low, self.ci_high) = tally.interval().unzip();
        self
    }
}

/// Gao's curve fitted to the human points, in win-rate units: 0.5 + d(α − β·log d).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HumanFit {
    pub alpha: f64,
    pub beta: f64,
    /// Where the fitted win rate turns over (β > 0), and the win rate there.
    pub turnover: Option<f64>,
    pub peak_win_rate: Option<f64>,
}

impl HumanFit {
    /// The fit to the points with judgements; None with fewer than two distinct √KL.
    pub fn of(points: &[WatchPoint]) -> Option<Self> {
        let human: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p.sqrt_kl, p.win_rate? - 0.5))).collect();
        let fit = GaoFit::fit(&human).ok()?;
        Some(Self { alpha: fit.alpha, beta: fit.beta, turnover: fit.turnover(), peak_win_rate: fit.peak().map(|r| 0.5 + r) })
    }

    /// The fitted win rate at √KL `d`.
    pub fn at(&self, d: f64) -> f64 {
        0.5 + GaoFit { alpha: self.alpha, beta: self.beta }.at(d)
    }
}

/// A schedule's gate on a spot check: the last grid point's win rate against a threshold,
/// once it has enough judgements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub win_rate: f64,
    pub min_judgements: u64,
}

impl Gate {
    /// Whether the gate passes on `points`, and why (or why not) in a sentence.
    pub fn check(&self, points: &[WatchPoint]) -> (bool, String) {
        let Some(last) = points.iter().max_by(|a, b| a.point.total_cmp(&b.point)) else {
            return (false, "the spot check has no grid checkpoints".into());
        };
        let at = format!("the last checkpoint (√KL {:.3})", last.sqrt_kl);
        match last.win_rate {
            _ if last.judgements < self.min_judgements => (false, format!("waiting for judgements: {} of {} on {at}", last.judgements, self.min_judgements)),
            Some(r) if r >= self.win_rate => (
                true,
                format!(
                    "passed: people prefer {at} to the start {:.0}% of the time over {} judgements (needs {:.0}%)",
                    r * 100.0,
                    last.judgements,
                    self.win_rate * 100.0
                ),
            ),
            r => (
                false,
                format!(
                    "held: people prefer {at} to the start {:.0}% of the time over {} judgements, below {:.0}%",
                    r.unwrap_or(0.0) * 100.0,
                    last.judgements,
                    self.win_rate * 100.0
                ),
            ),
        }
    }
}

/// x·log x, 0 at 0.
fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * b.abs().max(1.0)
    }

    /// The reference values come from numpy's least squares on the same points:
    /// `X = column_stack([d, -d·log d])` (0 at d = 0); `(α, β) = np.linalg.lstsq(X, y)`;
    /// d* = exp(α/β − 1), peak β·d*.
    #[test]
    fn the_fit_matches_numpy_least_squares_and_marks_the_turnover() {
        let d = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0];
        let y = [0.0, 0.06, 0.10, 0.16, 0.17, 0.15, 0.10, 0.02];
        let fit = GaoFit::fit(&d.into_iter().zip(y).collect::<Vec<_>>()).unwrap();
        assert!(close(fit.alpha, 0.1491076481917285) && close(fit.beta, 0.10411347400542943), "{fit:?}");
        assert!(close(fit.turnover().unwrap(), 1.540588916947252));
        assert!(close(fit.peak().unwrap(), 0.1603960641576404));
        assert!(close(fit.at(fit.turnover().unwrap()), fit.peak().unwrap()), "the peak is on the curve");
        assert_eq!(fit.at(0.0), 0.0);
        // Still rising at the far end: β ≤ 0 and no turnover.
        let rising = GaoFit::fit(&[(0.5, 0.5), (1.0, 1.1), (2.0, 2.6), (3.0, 4.2)]).unwrap();
        assert!(close(rising.alpha, 1.1237210072489578) && close(rising.beta, -0.251223091593106), "{rising:?}");
        assert_eq!(rising.turnover(), None);
    }

    fn point(d: f64, tally: Tally) -> WatchPoint {
        let p = WatchPoint {
            checkpoint: format!("sqrt-kl-{d:.3}"),
            point: d,
            sqrt_kl: d,
            iteration: 1,
            rm_score: d,
            ensemble_std: None,
            judgements: 0,
            wins: 0,
            ties: 0,
            win_rate: None,
            ci_low: None,
            ci_high: None,
        };
        p.with_tally(tally)
    }

    /// Wilson's interval for 8 of 10 (statsmodels' `proportion_confint(8, 10, method="wilson")`:
    /// 0.4901624715, 0.9433178485); ties count half.
    #[test]
    fn win_rates_count_ties_half_and_carry_wilson_intervals() {
        let mut t = Tally::default();
        for (p, s) in [(1, 2), (1, 2), (2, 1), (1, 1), (1, 1)] {
            t.add(p, s);
        }
        assert_eq!((t.wins, t.ties, t.losses, t.rate()), (2, 2, 1, Some(0.6)));
        let (lo, hi) = Tally { wins: 8, ties: 0, losses: 2 }.interval().unwrap();
        assert!((lo - 0.4901624715).abs() < 1e-9 && (hi - 0.9433178485).abs() < 1e-9, "{lo} {hi}");
        assert_eq!(Tally::default().rate(), None);
        let (lo, hi) = Tally { wins: 0, ties: 0, losses: 3 }.interval().unwrap();
        assert!(lo < 1e-12 && hi > 0.5 && hi < 1.0, "{lo} {hi}");
    }

    #[test]
    fn the_human_fit_turns_over_where_people_stop_preferring_the_policy_and_the_gate_reads_the_last_point() {
        let t = |w: u64, l: u64| Tally { wins: w, ties: 0, losses: l };
        let pts = [point(0.5, t(6, 4)), point(1.0, t(7, 3)), point(1.5, t(6, 4)), point(2.0, t(3, 7))];
        let fit = HumanFit::of(&pts).unwrap();
        let d = fit.turnover.expect("rises then falls");
        assert!(d > 0.5 && d < 1.6, "{fit:?}");
        assert!((fit.at(d) - fit.peak_win_rate.unwrap()).abs() < 1e-12);
        assert!(HumanFit::of(&pts[..1]).is_none(), "one point: no fit");
        let gate = Gate { win_rate: 0.5, min_judgements: 10 };
        let (ok, why) = gate.check(&pts);
        assert!(!ok && why.starts_with("held: people prefer the last checkpoint (√KL 2.000) to the start 30%"), "{why}");
        assert!(gate.check(&pts[..3]).0, "0.6 at √KL 1.5");
        let (ok, why) = Gate { win_rate: 0.5, min_judgements: 20 }.check(&pts[..3]);
        assert!(!ok && why.starts_with("waiting for judgements: 10 of 20"), "{why}");
        assert!(!gate.check(&[]).0);
    }

    #[test]
    fn a_fit_needs_two_distinct_distances_and_finite_points() {
        assert!(GaoFit::fit(&[]).is_err());
        assert!(GaoFit::fit(&[(0.0, 0.0), (1.0, 0.2), (1.0, 0.3)]).is_err(), "one distinct d > 0");
        assert!(GaoFit::fit(&[(1.0, 0.2), (2.0, f64::NAN)]).unwrap_err().contains("finite"));
        assert!(GaoFit::fit(&[(-1.0, 0.2), (2.0, 0.1)]).is_err());
        // Exact data comes back exactly.
        let truth = GaoFit { alpha: 0.3, beta: 0.2 };
        let fit = GaoFit::fit(&[0.5, 1.0, 2.0, 4.0].map(|d| (d, truth.at(d)))).unwrap();
        assert!((fit.alpha - 0.3).abs() < 1e-12 && (fit.beta - 0.2).abs() < 1e-12, "{fit:?}");
    }
}
