//! Losses of reward modelling. Shapes are in each function's doc; a mismatch is an error.

use candle_core::{bail, Result, Tensor};

/// `-log σ(x)`, computed stably as `max(-x, 0) + log(1 + exp(-|x|))`, elementwise.
pub fn neg_log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let pos = x.neg()?.relu()?;
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    pos + soft
}

/// InstructGPT's ranking loss for one ranking: `rewards` `[k]` of the responses, `ranks` their
/// ranks (1 is best; equal ranks are a tie and give no pair). Returns the mean over the ordered
/// pairs of `-log σ(r_w - r_l - margin)` plus `centring · mean((r_w + r_l)²)` (TRL's reward
/// centring), a scalar. Each response is forwarded once, whatever the number of pairs.
pub fn ranking_loss(rewards: &Tensor, ranks: &[i16], margin: f64, centring: f64) -> Result<Tensor> {
    let k = rewards.dims1()?;
    if k != ranks.len() {
        bail!("ranking_loss: {k} rewards but {} ranks", ranks.len())
    }
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    for i in 0..k {
        for j in 0..k {
            if ranks[i] < ranks[j] {
                winners.push(i as u32);
                losers.push(j as u32);
            }
        }
    }
    if winners.is_empty() {
        bail!("ranking_loss: the ranking orders nothing (all tied)")
    }
    let device = rewards.device();
    let w = rewards.index_select(&Tensor::new(winners.as_slice(), device)?, 0)?;
    let l = rewards.index_select(&Tensor::new(losers.as_slice(), device)?, 0)?;
    let loss = neg_log_sigmoid(&((&w - &l)? - margin)?)?.mean_all()?;
    if centring == 0.0 {
        return Ok(loss);
    }
    loss + ((w + l)?.sqr()?.mean_all()? * centring)?
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
        let want = [0.6931471805599453, 0.12692801104297263, 3.048587351573742, 4.248354255291589e-18, 40.0];
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

    fn neg(x: f64) -> f64 {
        (1.0 + (-x).exp()).ln()
    }
}
