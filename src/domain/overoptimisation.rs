//! Reward over-optimisation (Gao et al. 2023, "Scaling laws for reward model
//! overoptimization"): with d = √KL from the starting policy, the gold reward of an RL policy
//! follows R(d) = d(α − β·log d). Linear in α and β, so least squares has a closed form; when
//! β > 0 the curve turns over at d* = exp(α/β − 1), where it peaks at R(d*) = β·d*.

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
