//! The reward PPO optimises when the reward model is an ensemble (`rm --ensemble K`: the
//! directory itself, then `ensemble/member-1…`): each member scores the text (its saved bias
//! subtracted) and the members' rewards combine as `--reward-ensemble` says (Coste et al. 2024:
//! the mean, the worst case, or the mean less the members' standard deviation). The members'
//! spread on the policy's samples is the ensemble's disagreement, logged each iteration.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Device;

use crate::checkpoint::{load_reward_model, LoadedReward};
use crate::rm::{ensemble_members, score_texts};
use crate::tokenizer::Tok;
use rewardlab_protocol::RewardEnsemble;

/// One response's reward: what PPO optimises, and the members' mean and (population) standard
/// deviation (0 for a single model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnsembleReward {
    pub score: f64,
    pub mean: f64,
    pub std: f64,
}

/// Combines the members' rewards of one response (at least one) as `how` says.
pub fn combine(rewards: &[f64], how: RewardEnsemble) -> EnsembleReward {
    let n = rewards.len().max(1) as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    let score = match how {
        RewardEnsemble::Mean => mean,
        RewardEnsemble::Min => rewards.iter().copied().fold(f64::INFINITY, f64::min),
        RewardEnsemble::MeanMinusStd => mean - std,
    };
    EnsembleReward { score, mean, std }
}

/// The loaded members (the first is the directory itself) and how they combine.
pub struct EnsembleScorer {
    pub members: Vec<(LoadedReward, Tok)>,
    how: RewardEnsemble,
}

impl EnsembleScorer {
    /// Loads every member of `dir`; `min` and `mean-minus-std` need at least two.
    pub fn load(dir: &Path, how: RewardEnsemble, device: &Device) -> Result<Self> {
        let members = ensemble_members(dir).iter().map(|m| Ok((load_reward_model(m, device)?, Tok::load(m)?))).collect::<Result<Vec<_>>>()?;
        if members.len() < 2 && how != RewardEnsemble::Mean {
            bail!(
                "--reward-ensemble {}: {} is a single reward model (no ensemble/member-1), so there is no spread to be conservative about; \
                 train one with `rewardlab-train rm --ensemble K` or use --reward-ensemble mean",
                how.as_str(),
                dir.display()
            )
        }
        Ok(Self { members, how })
    }

    /// Whether there is more than one member.
    pub fn is_ensemble(&self) -> bool {
        self.members.len() > 1
    }

    /// Each text's reward (`max_tokens` bounds a scoring batch).
    pub fn score(&self, texts: &[String], max_tokens: usize, device: &Device) -> Result<Vec<EnsembleReward>> {
        let mut per_member = Vec::with_capacity(self.members.len());
        for (m, tok) in &self.members {
            per_member.push(score_texts(&m.model, tok, texts, m.max_len, max_tokens, device)?.into_iter().map(|r| r as f64 - m.bias).collect::<Vec<f64>>());
        }
        Ok((0..texts.len()).map(|i| combine(&per_member.iter().map(|m| m[i]).collect::<Vec<_>>(), self.how)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_combine_as_the_mean_the_worst_case_or_the_mean_less_the_spread() {
        // Rewards 1, 2, 6: mean 3, population variance (4 + 1 + 9) / 3 = 14/3.
        let xs = [1.0, 2.0, 6.0];
        let sd = (14.0f64 / 3.0).sqrt();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let m = combine(&xs, RewardEnsemble::Mean);
        assert!(close(m.score, 3.0) && close(m.mean, 3.0) && close(m.std, sd), "{m:?}");
        assert!(close(combine(&xs, RewardEnsemble::Min).score, 1.0));
        assert!(close(combine(&xs, RewardEnsemble::MeanMinusStd).score, 3.0 - sd));
        let one = combine(&[0.5], RewardEnsemble::MeanMinusStd);
        assert!(close(one.score, 0.5) && one.std == 0.0);
    }
}
