//! Losses of reward modelling. Shapes are in each function's doc; a mismatch is an error.

use candle_core::{bail, Result, Tensor};

/// `-log σ(x)`, computed stably as `max(-x, 0) + log(1 + exp(-|x|))`, elementwise.
pub fn neg_log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let pos = x.neg()?.relu()?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    pos + soft
}

/// One ranking's place in a flat batch of rewards: its responses are
/// `rewards[offset..offset + ranks.len()]`, `ranks[i]` the rank of response i (1 is best; equal
/// ranks are a tie and give no pair), `margin` TRL's per-pair margin.
#[derive(Debug, Clone, Copy)]
pub struct RankGroup<'a> {
    pub offset: usize,
    pub ranks: &'a [i16],
    pub margin: f64,
}

impl RankGroup<'_> {
    /// The ordered pairs `(winner, loser)` as indices into the flat rewards.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let k = self.ranks.len();
        (0..k).flat_map(move |i| (0..k).map(move |j| (i, j))).filter(|&(i, j)| self.ranks[i] < self.ranks[j]).map(|(i, j)| (self.offset + i, self.offset + j))
    }
}

/// InstructGPT's ranking loss summed over rankings: for each ranking, the mean over its C(K,2)
/// ordered pairs of `-log σ(r_w - r_l - margin)` plus `centring · mean((r_w + r_l)²)` (TRL's
/// reward centring). Every response is forwarded once however many pairs it is in, and each
/// ranking weighs the same whatever its K. `rewards` is `[n]`; returns a scalar (the caller
/// divides by the number of rankings).
pub fn batch_ranking_loss(rewards: &Tensor, groups: &[RankGroup], centring: f64) -> Result<Tensor> {
    let n = rewards.dims1()?;
    let (mut winners, mut losers, mut weights, mut margins) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for g in groups {
        if g.offset + g.ranks.len() > n {
            bail!("ranking_loss: a ranking at {} of {} responses overruns {n} rewards", g.offset, g.ranks.len())
        }
        let before = winners.len();
        for (w, l) in g.pairs() {
            winners.push(w as u32);
            losers.push(l as u32);
        }
        let pairs = winners.len() - before;
        if pairs == 0 {
            bail!("ranking_loss: a ranking orders nothing (all tied)")
        }
        weights.extend(std::iter::repeat_n(1.0 / pairs as f64, pairs));
        margins.extend(std::iter::repeat_n(g.margin, pairs));
    }
    let device = rewards.device();
    let dtype = rewards.dtype();
    let w = rewards.index_select(&Tensor::new(winners.as_slice(), device)?, 0)?;
    let l = rewards.index_select(&Tensor::new(losers.as_slice(), device)?, 0)?;
    let weights = Tensor::new(weights.as_slice(), device)?.to_dtype(dtype)?;
    let margins = Tensor::new(margins.as_slice(), device)?.to_dtype(dtype)?;
    let loss = (neg_log_sigmoid(&((&w - &l)? - margins)?)? * &weights)?.sum_all()?;
    if centring == 0.0 {
        return Ok(loss);
    }
    loss + (((w + l)?.sqr()? * weights)?.sum_all()? * centring)?
}

/// [`batch_ranking_loss`] of one ranking: `rewards` `[k]`, `ranks` their ranks.
pub fn ranking_loss(rewards: &Tensor, ranks: &[i16], margin: f64, centring: f64) -> Result<Tensor> {
    let k = rewards.dims1()?;
    if k != ranks.len() {
        bail!("ranking_loss: {k} rewards but {} ranks", ranks.len())
    }
    batch_ranking_loss(rewards, &[RankGroup { offset: 0, ranks, margin }], centring)
}

/// Summed next-token negative log-likelihood: `logits` `[b, t, v]` predict `targets` `[b, t]`
/// (u32), counted where `mask` `[b, t]` is 1. Returns a scalar sum (the caller divides by the
/// number of counted tokens).
pub fn token_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    sequence_logprobs(logits, targets, mask)?.sum_all()?.neg()
}

/// Log-probability of each row's `targets` `[b, t]` under `logits` `[b, t, v]`, summed where
/// `mask` `[b, t]` is 1: `[b]` (the log-likelihood of a response given its prompt).
pub fn sequence_logprobs(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(2)?, 2)?.squeeze(2)?;
    (picked * mask.to_dtype(logits.dtype())?)?.sum(1)
}

/// The sigmoid DPO loss (Rafailov et al. 2023) summed over pairs: with
/// Δ = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)), `−log σ(β·Δ)`. All
/// inputs `[n]`; returns a scalar.
pub fn dpo_loss(policy_w: &Tensor, policy_l: &Tensor, ref_w: &Tensor, ref_l: &Tensor, beta: f64) -> Result<Tensor> {
    let delta = ((policy_w - ref_w)? - (policy_l - ref_l)?)?;
    neg_log_sigmoid(&(delta * beta)?)?.sum_all()
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f64>().unwrap()
    }

    // Reference values from PyTorch:
    //   torch.nn.functional.logsigmoid(torch.tensor([0., 2., -3., 40., -40.], dtype=torch.float64)).neg()
    //   -> [0.6931471805599453, 0.12692801104297263, 3.048587351573742, 4.248354255291589e-18, 40.0]
    #[test]
    fn neg_log_sigmoid_is_stable_and_matches_pytorch() {
        let x = Tensor::new(&[0f64, 2.0, -3.0, 40.0, -40.0], &Device::Cpu).unwrap();
        let got: Vec<f64> = neg_log_sigmoid(&x).unwrap().to_vec1().unwrap();
        let want = [std::f64::consts::LN_2, 0.12692801104297263, 3.048587351573742, 4.248354255291589e-18, 40.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    // rewards r = [1, 0, 2] ranked [2, 3, 1]: pairs (w, l) = (0, 1), (2, 0), (2, 1), so
    //   torch.nn.functional.logsigmoid(torch.tensor([1., 1., 2.], dtype=torch.float64)).neg().mean()
    //   -> 0.2511504620264728
    // and with margin 0.5 and centring 0.01:
    //   d = torch.tensor([1., 1., 2.]) - 0.5; s = torch.tensor([1., 3., 2.])
    //   (-F.logsigmoid(d)).mean() + 0.01 * (s ** 2).mean() -> 0.42985574878098853
    #[test]
    fn the_ranking_loss_matches_pytorch() {
        let r = Tensor::new(&[1f64, 0.0, 2.0], &Device::Cpu).unwrap();
        assert!((scalar(ranking_loss(&r, &[2, 3, 1], 0.0, 0.0).unwrap()) - 0.2511504620264728).abs() < 1e-12);
        assert!((scalar(ranking_loss(&r, &[2, 3, 1], 0.5, 0.01).unwrap()) - 0.42985574878098853).abs() < 1e-12);
        assert!(ranking_loss(&r, &[1, 1, 1], 0.0, 0.0).is_err(), "all tied orders nothing");
        assert!(ranking_loss(&r, &[1, 2], 0.0, 0.0).is_err(), "shape mismatch is an error");
    }

    #[test]
    fn ties_give_no_pair() {
        // [1, 1, 2]: only (0, 2) and (1, 2) count.
        let r = Tensor::new(&[3f64, 1.0, 0.0], &Device::Cpu).unwrap();
        let want = (neg(3.0) + neg(1.0)) / 2.0;
        assert!((scalar(ranking_loss(&r, &[1, 1, 2], 0.0, 0.0).unwrap()) - want).abs() < 1e-12);
    }

    #[test]
    fn rankings_of_a_batch_each_weigh_one() {
        // Two rankings in one flat batch: [1, 0, 2] ranked [2, 3, 1] and [0.5, -0.5] ranked [1, 2].
        let r = Tensor::new(&[1f64, 0.0, 2.0, 0.5, -0.5], &Device::Cpu).unwrap();
        let groups = [RankGroup { offset: 0, ranks: &[2, 3, 1], margin: 0.0 }, RankGroup { offset: 3, ranks: &[1, 2], margin: 0.0 }];
        let got = scalar(batch_ranking_loss(&r, &groups, 0.0).unwrap());
        assert!((got - (0.2511504620264728 + neg(1.0))).abs() < 1e-12, "{got}");
    }

    // logits = torch.tensor([[[1., 2., 0.5], [0., -1., 3.]]], dtype=torch.float64); targets [[1, 2]]
    //   F.cross_entropy(logits[0], torch.tensor([1, 2]), reduction="none") -> [0.4644, 0.0659]
    //   (exactly 0.4643687841079449 and 0.06588390375742911)
    #[test]
    fn token_nll_matches_pytorch_cross_entropy_and_masks() {
        let logits = Tensor::new(&[[[1f64, 2.0, 0.5], [0.0, -1.0, 3.0]]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
        let all = scalar(token_nll(&logits, &targets, &Tensor::new(&[[1f64, 1.0]], &Device::Cpu).unwrap()).unwrap());
        assert!((all - (0.4643687841079449 + 0.06588390375742911)).abs() < 1e-10, "{all}");
        let second = scalar(token_nll(&logits, &targets, &Tensor::new(&[[0f64, 1.0]], &Device::Cpu).unwrap()).unwrap());
        assert!((second - 0.06588390375742911).abs() < 1e-10, "{second}");
    }

    // Δ = (−1 − −2) − (−3 − −2.5) = 1.5, β = 0.1:
    //   -F.logsigmoid(torch.tensor(0.15, dtype=torch.float64)) -> 0.6209570477895321
    #[test]
    fn dpo_loss_matches_pytorch() {
        let t = |v: f64| Tensor::new(&[v], &Device::Cpu).unwrap();
        let got = scalar(dpo_loss(&t(-1.0), &t(-3.0), &t(-2.0), &t(-2.5), 0.1).unwrap());
        assert!((got - 0.6209570477895321).abs() < 1e-12, "{got}");
    }

    fn neg(x: f64) -> f64 {
        (1.0 + (-x).exp()).ln()
    }
}
