//! How far PPO's policy has moved from where it started, and the checkpoints kept on the way
//! (Gao et al. 2023 measure over-optimisation against d = √KL(π ‖ π_start)). The KL of one
//! sampled response is estimated with Schulman's k3 estimator summed over its tokens,
//! Σ_t (e^{r_t} − 1 − r_t) with r_t = log π_start(y_t) − log π(y_t): unbiased like k1 but never
//! negative, so its mean over the batch has a square root. Each time √KL first passes a multiple
//! of `--kl-grid`, the policy is kept under `kl-grid/` in the Hugging Face layout, and
//! `kl-grid/manifest.json` lists those checkpoints.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{commit_checkpoint, write_atomic};

/// k3's estimate of KL(π ‖ π_start) for one response from its tokens' log-probabilities under
/// the policy (`logp`) and the starting policy (`start_logp`), the same length.
pub fn sequence_kl_k3(logp: &[f32], start_logp: &[f32]) -> f64 {
    logp.iter().zip(start_logp).map(|(&p, &s)| (s as f64 - p as f64).exp_m1() - (s as f64 - p as f64)).sum()
}

/// The index of the largest grid point (a multiple of `step`) at or below `sqrt_kl` when it
/// is above `reached` (the index last kept; 0 before any), else `None`.
pub fn newly_reached(sqrt_kl: f64, step: f64, reached: u64) -> Option<u64> {
    let k = (sqrt_kl / step + 1e-9).floor();
    (k.is_finite() && k > reached as f64).then_some(k as u64)
}

/// A grid point's name: `sqrt-kl-0.500`.
pub fn point_name(point: f64) -> String {
    format!("sqrt-kl-{point:.3}")
}

/// One kept checkpoint, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridCheckpoint {
    /// Its folder under `kl-grid/`.
    pub name: String,
    /// The grid point √KL passed.
    pub point: f64,
    pub iteration: u64,
    pub sqrt_kl: f64,
    /// The mean score PPO optimised on that iteration's rollouts.
    pub score: f64,
    /// An ensemble's mean reward and the members' mean standard deviation on those rollouts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ensemble_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ensemble_std: Option<f64>,
}

/// `kl-grid/manifest.json`: the grid, the starting policy, and the checkpoints by grid point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub grid: f64,
    /// The starting policy (the reference √KL is measured against).
    pub start: String,
    /// The estimator of KL behind √KL.
    pub estimator: String,
    pub checkpoints: Vec<GridCheckpoint>,
}

/// Keeps the policy `save` writes as `out/kl-grid/<name>` and lists it in the manifest; entries
/// from a later iteration or grid point (a resumed run repeating its steps) are replaced.
pub fn keep(out: &Path, grid: f64, start: &Path, entry: GridCheckpoint, save: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let root = out.join("kl-grid");
    commit_checkpoint(&root, &entry.name, usize::MAX, save)?;
    let path = root.join("manifest.json");
    let mut manifest = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not a manifest", path.display()))?,
        Err(_) => Manifest { grid, start: start.display().to_string(), estimator: "k3".into(), checkpoints: Vec::new() },
    };
    manifest.checkpoints.retain(|c| c.iteration < entry.iteration && c.point < entry.point);
    manifest.checkpoints.push(entry);
    write_atomic(&path, &serde_json::to_vec_pretty(&manifest)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3_is_zero_at_the_start_and_positive_away_from_it() {
        assert_eq!(sequence_kl_k3(&[-1.0, -2.0], &[-1.0, -2.0]), 0.0);
        // r = −0.5: e^−0.5 − 1 + 0.5 = 0.10653; r = +0.5: e^0.5 − 1 − 0.5 = 0.14872.
        let k = sequence_kl_k3(&[-1.0, -2.0], &[-1.5, -1.5]);
        assert!((k - (0.106_530_659_7 + 0.148_721_270_7)).abs() < 1e-6, "{k}");
    }

    #[test]
    fn a_grid_point_is_kept_once_when_first_passed() {
        assert_eq!(newly_reached(0.49, 0.5, 0), None);
        assert_eq!(newly_reached(0.5, 0.5, 0), Some(1));
        assert_eq!(newly_reached(0.9, 0.5, 1), None, "already kept");
        assert_eq!(newly_reached(1.6, 0.5, 1), Some(3), "a jump past two points keeps the higher");
        assert_eq!(newly_reached(0.7, 0.5, 3), None, "√KL falling back keeps nothing");
        assert_eq!(newly_reached(f64::NAN, 0.5, 0), None);
        assert_eq!(point_name(1.5), "sqrt-kl-1.500");
    }
}
