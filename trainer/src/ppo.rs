//! `rewardlab-train ppo`: PPO against a frozen reward model with a per-token KL penalty to a
//! frozen reference policy, following TRL's last PPO trainer ("The N+ implementation details
//! of RLHF with PPO"): temperature-scaled log-probabilities, k1 KL, the score at the last
//! response token, GAE (γ 1, λ 0.95), whitened advantages, clipped policy and value losses
//! over shuffled minibatches for several epochs, a separate value network initialised from
//! the reward model, fixed or adaptive KL coefficient.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::{commit_checkpoint, save_model, write_atomic, ModelKind};
use crate::data::join;
use crate::generate::{generate_batch, load_frozen_lm, SamplingOpts};
use crate::gpt2::{Config, LmModel, RewardModel};
use crate::kl_grid::{self, GridCheckpoint};
use crate::optim::{AdamW, AdamWConfig, Grads};
use crate::reward_ensemble::EnsembleScorer;
use crate::rng::Rng;
use crate::setup::{self, pad, Source};
use crate::tokenizer::Tok;
use crate::train::{self, Metrics};
use rewardlab_protocol::{Done, Iteration, MetricEvent, Timings, ValueInit};

pub use rewardlab_protocol::PpoArgs;

/// Generalised advantage estimation over one response: `rewards`, `values` per token.
/// Returns (advantages, returns = advantages + values).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut last = 0.0;
    for t in (0..n).rev() {
        let next = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next - values[t];
        last = delta + gamma * lam * last;
        adv[t] = last;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// [`whiten`] over the values of every rank together: the count and sum, then the squared
/// deviations from the global mean, are all-reduced (the same two passes as one process).
pub fn whiten_across_ranks(xs: &mut [f64]) {
    let mut first = [xs.len() as f64, xs.iter().sum::<f64>()];
    crate::dist::all_reduce_f64(&mut first);
    let [n, sum] = first;
    if n < 2.0 {
        return;
    }
    let mean = sum / n;
    let mut dev = [xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()];
    crate::dist::all_reduce_f64(&mut dev);
    let inv = 1.0 / (dev[0] / (n - 1.0) + 1e-8).sqrt();
    xs.iter_mut().for_each(|x| *x = (*x - mean) * inv);
}

/// Whitens in place: mean 0, unit (unbiased) variance, as TRL's `masked_whiten`.
pub fn whiten(xs: &mut [f64]) {
    let n = xs.len() as f64;
    if n < 2.0 {
        return;
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let inv = 1.0 / (var + 1e-8).sqrt();
    xs.iter_mut().for_each(|x| *x = (*x - mean) * inv);
}

/// Statistics of one minibatch's losses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LossStats {
    pub pg_loss: f64,
    pub vf_loss: f64,
    pub pg_clipfrac: f64,
    pub vf_clipfrac: f64,
    pub approxkl: f64,
    pub ratio_mean: f64,
    pub ratio_var: f64,
}

impl LossStats {
    fn to_array(&self) -> [f64; 7] {
        [self.pg_loss, self.vf_loss, self.pg_clipfrac, self.vf_clipfrac, self.approxkl, self.ratio_mean, self.ratio_var]
    }

    fn from_array(a: [f64; 7]) -> Self {
        let [pg_loss, vf_loss, pg_clipfrac, vf_clipfrac, approxkl, ratio_mean, ratio_var] = a;
        Self { pg_loss, vf_loss, pg_clipfrac, vf_clipfrac, approxkl, ratio_mean, ratio_var }
    }

    /// From the additive parts of [`ppo_loss_part`] (summed over ranks): the ratio's mean and
    /// variance from the sums of (ρ − 1) and (ρ − 1)².
    fn finish(self) -> Self {
        Self { ratio_mean: 1.0 + self.ratio_mean, ratio_var: (self.ratio_var - self.ratio_mean * self.ratio_mean).max(0.0), ..self }
    }
}

/// Sum over the masked tokens of `x`, divided by `denom`.
fn masked_part(x: &Tensor, mask: &Tensor, denom: f64) -> candle_core::Result<Tensor> {
    (x * mask)?.sum_all()? / denom
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// PPO's clipped policy loss plus `vf_coef` × the clipped value loss, over the tokens where
/// `mask` `[b, r]` is 1. All inputs `[b, r]`; `new_logp` and `new_v` carry the graph.
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss(
    new_logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    new_v: &Tensor,
    old_v: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    cliprange: f64,
    cliprange_value: f64,
    vf_coef: f64,
) -> candle_core::Result<(Tensor, LossStats)> {
    let denom = mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let (loss, parts) = ppo_loss_part(new_logp, old_logp, adv, new_v, old_v, returns, mask, denom, cliprange, cliprange_value, vf_coef)?;
    Ok((loss, parts.finish()))
}

/// [`ppo_loss`] over a part of a minibatch (one rank's shard) whose masked tokens are divided
/// by the whole minibatch's token count `denom`: the parts' losses, gradients and statistics
/// add up over the ranks to the minibatch's. The statistics come back as additive parts (the
/// ratio's as sums of ρ − 1 and (ρ − 1)²; [`LossStats::finish`] makes them a mean and variance).
#[allow(clippy::too_many_arguments)]
pub fn ppo_loss_part(
    new_logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    new_v: &Tensor,
    old_v: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    denom: f64,
    cliprange: f64,
    cliprange_value: f64,
    vf_coef: f64,
) -> candle_core::Result<(Tensor, LossStats)> {
    let masked_mean = |x: &Tensor, mask: &Tensor| masked_part(x, mask, denom);
    let v_clipped = (old_v + (new_v - old_v)?.clamp(-cliprange_value, cliprange_value)?)?;
    let vf1 = (new_v - returns)?.sqr()?;
    let vf2 = (&v_clipped - returns)?.sqr()?;
    let vf_loss = (masked_mean(&vf1.maximum(&vf2)?, mask)? * 0.5)?;
    let logratio = (new_logp - old_logp)?;
    let ratio = logratio.exp()?;
    let pg1 = (adv.neg()? * &ratio)?;
    let pg2 = (adv.neg()? * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)?)?;
    let pg_loss = masked_mean(&pg1.maximum(&pg2)?, mask)?;
    let loss = (&pg_loss + (&vf_loss * vf_coef)?)?;
    // The ratio's moments in f64 about 1 (where it lies), so the variance from summed parts
    // loses nothing to cancellation.
    let (r1, m64) = ((ratio.detach().to_dtype(DType::F64)? - 1.0)?, mask.to_dtype(DType::F64)?);
    let stats = LossStats {
        pg_loss: scalar(&pg_loss)?,
        vf_loss: scalar(&vf_loss)?,
        pg_clipfrac: scalar(&masked_mean(&pg2.gt(&pg1)?.to_dtype(mask.dtype())?, mask)?)?,
        vf_clipfrac: scalar(&masked_mean(&vf2.gt(&vf1)?.to_dtype(mask.dtype())?, mask)?)?,
        approxkl: scalar(&(masked_mean(&logratio.sqr()?, mask)? * 0.5)?)?,
        ratio_mean: scalar(&masked_mean(&r1, &m64)?)?,
        ratio_var: scalar(&masked_mean(&r1.sqr()?, &m64)?)?,
    };
    Ok((loss, stats))
}

/// One prompt's rollout and what PPO computes from it (per response token).
#[derive(Debug, Clone)]
pub struct Rollout {
    pub query: Vec<u32>,
    /// Response tokens, with the end-of-text when one was produced.
    pub response: Vec<u32>,
    pub eos: bool,
    pub score: f64,
    pub old_logp: Vec<f32>,
    pub ref_logp: Vec<f32>,
    pub values: Vec<f32>,
    pub adv: Vec<f32>,
    pub returns: Vec<f32>,
}

/// Rollouts as bytes, to hand them to the other ranks.
fn encode_rollouts(rollouts: &[Rollout]) -> Vec<u8> {
    let mut out = Vec::new();
    let u32s = |out: &mut Vec<u8>, v: &[u32]| {
        out.extend((v.len() as u32).to_le_bytes());
        v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    };
    let f32s = |out: &mut Vec<u8>, v: &[f32]| {
        out.extend((v.len() as u32).to_le_bytes());
        v.iter().for_each(|x| out.extend(x.to_le_bytes()));
    };
    for r in rollouts {
        u32s(&mut out, &r.query);
        u32s(&mut out, &r.response);
        out.push(u8::from(r.eos));
        out.extend(r.score.to_le_bytes());
        for v in [&r.old_logp, &r.ref_logp, &r.values, &r.adv, &r.returns] {
            f32s(&mut out, v);
        }
    }
    out
}

/// A cursor over another rank's rollout bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at + n).context("a truncated rollout from another rank")?;
        self.at += n;
        Ok(s)
    }

    fn words(&mut self) -> Result<impl Iterator<Item = [u8; 4]> + 'a> {
        let n = u32::from_le_bytes(self.take(4)?.try_into()?) as usize;
        Ok(self.take(4 * n)?.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]))
    }

    fn f32s(&mut self) -> Result<Vec<f32>> {
        Ok(self.words()?.map(f32::from_le_bytes).collect())
    }
}

/// The rollouts [`encode_rollouts`] wrote.
fn decode_rollouts(bytes: &[u8]) -> Result<Vec<Rollout>> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    while r.at < bytes.len() {
        let query = r.words()?.map(u32::from_le_bytes).collect();
        let response = r.words()?.map(u32::from_le_bytes).collect();
        let eos = r.take(1)?[0] == 1;
        let score = f64::from_le_bytes(r.take(8)?.try_into()?);
        let (old_logp, ref_logp, values, adv, returns) = (r.f32s()?, r.f32s()?, r.f32s()?, r.f32s()?, r.f32s()?);
        out.push(Rollout { query, response, eos, score, old_logp, ref_logp, values, adv, returns });
    }
    Ok(out)
}

/// Rows of `x` `[b, t, ..]` at each rollout's response positions (the positions that predict
/// its response tokens): `[b, r, ..]`, `r` the longest response, padding rows repeated from
/// position 0 and masked by the caller.
fn response_rows(x: &Tensor, rollouts: &[&Rollout], r: usize) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, t) = (dims[0], dims[1]);
    let mut index = Vec::with_capacity(b * r);
    for (i, ro) in rollouts.iter().enumerate() {
        for j in 0..r {
            let p = if j < ro.response.len() { ro.query.len() - 1 + j } else { 0 };
            index.push((i * t + p) as u32);
        }
    }
    let flat = x.flatten_to(1)?;
    let picked = flat.index_select(&Tensor::new(index.as_slice(), x.device())?, 0)?;
    let mut out_dims = vec![b, r];
    out_dims.extend_from_slice(&dims[2..]);
    picked.reshape(out_dims)
}

struct Batch {
    ids: Tensor,
    mask: Tensor,
    targets: Tensor,
    resp_mask: Tensor,
    r: usize,
}

fn batch(rollouts: &[&Rollout], pad_id: u32, device: &Device) -> Result<Batch> {
    let seqs: Vec<Vec<u32>> = rollouts.iter().map(|ro| [ro.query.as_slice(), ro.response.as_slice()].concat()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let (ids, mask) = pad(&refs, pad_id, device)?;
    let r = rollouts.iter().map(|ro| ro.response.len()).max().unwrap_or(1).max(1);
    let mut targets = Vec::with_capacity(rollouts.len() * r);
    let mut resp_mask = Vec::with_capacity(rollouts.len() * r);
    for ro in rollouts {
        for j in 0..r {
            targets.push(ro.response.get(j).copied().unwrap_or(pad_id));
            resp_mask.push(f32::from(u8::from(j < ro.response.len())));
        }
    }
    Ok(Batch {
        ids,
        mask,
        targets: Tensor::from_vec(targets, (rollouts.len(), r), device)?,
        resp_mask: Tensor::from_vec(resp_mask, (rollouts.len(), r), device)?,
        r,
    })
}

/// Temperature-scaled log-probabilities of the response tokens `[b, r]` and the policy's
/// entropy at each `[b, r]`.
fn policy_logprobs(model: &LmModel, rollouts: &[&Rollout], b: &Batch, temperature: f64) -> Result<(Tensor, Tensor)> {
    let logits = model.forward(&b.ids, &b.mask)?;
    let logits = (response_rows(&logits, rollouts, b.r)? / temperature.max(1e-6))?;
    let logp_all = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let logp = logp_all.gather(&b.targets.unsqueeze(2)?, 2)?.squeeze(2)?;
    let entropy = (logp_all.detach().exp()? * logp_all.detach())?.sum(D::Minus1)?.neg()?;
    Ok((logp, entropy))
}

fn values(model: &RewardModel, rollouts: &[&Rollout], b: &Batch) -> Result<Tensor> {
    Ok(response_rows(&model.forward_all(&b.ids, &b.mask)?, rollouts, b.r)?)
}

fn rows_of(t: &Tensor, rollouts: &[&Rollout]) -> Result<Vec<Vec<f32>>> {
    let all: Vec<Vec<f32>> = t.detach().to_dtype(DType::F32)?.to_vec2()?;
    Ok(all.into_iter().zip(rollouts).map(|(row, ro)| row[..ro.response.len()].to_vec()).collect())
}

fn padded(rows: &[&[f32]], r: usize, device: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(rows.len() * r);
    for row in rows {
        v.extend_from_slice(row);
        v.extend(std::iter::repeat_n(0f32, r - row.len()));
    }
    Ok(Tensor::from_vec(v, (rows.len(), r), device)?)
}

/// What a checkpoint keeps besides weights and optimizer moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PpoState {
    iteration: u64,
    kl_coef: f64,
    adam_step: u64,
    seed: u64,
    iterations: u64,
    /// The index of the last `--kl-grid` point kept (0: none yet).
    #[serde(default)]
    grid_reached: u64,
}

/// Whether the value network starts from the reward model (`--value-init`): it must read the
/// policy's token ids at the policy's positions, so the reward model must share the policy's
/// tokenizer and cover its context. `auto` falls back to the policy's transformer (with a new
/// value head) and says so; an explicit `reward-model` that cannot work is refused.
fn value_from_reward_model(args: &PpoArgs, tok: &Tok, pcfg: &Config, rm_tok: &Tok, rcfg: &Config) -> Result<bool> {
    let mismatch = if !tok.same_vocabulary(rm_tok) {
        Some(format!("the reward model's tokenizer ({} tokens) is not the policy's ({} tokens)", rm_tok.vocab_size(), tok.vocab_size()))
    } else if rcfg.n_positions < pcfg.n_positions {
        Some(format!("the reward model reads {} positions, the policy {}", rcfg.n_positions, pcfg.n_positions))
    } else {
        None
    };
    match (args.value_init, mismatch) {
        (ValueInit::Policy, _) => Ok(false),
        (_, None) => Ok(true),
        (ValueInit::Auto, Some(why)) => {
            eprintln!("ppo: {why}, so the value network starts from the policy (a new value head); the reward model scores re-tokenized text");
            Ok(false)
        }
        (ValueInit::RewardModel, Some(why)) => bail!(
            "--value-init reward-model: {why}, so a value network made from it cannot read the policy's tokens. Use --value-init policy \
             (or auto), or train the reward model with the policy's tokenizer (rewardlab-train rm --tokenizer {})",
            args.policy.display()
        ),
    }
}

pub fn run(args: &PpoArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let prompts = crate::data::read_prompts(&args.prompts)?;
    if prompts.is_empty() {
        bail!("no prompts in {}", args.prompts.display())
    }
    let resume = match &args.resume {
        Some(p) => Some(crate::checkpoint::find_checkpoint(p)?),
        None => None,
    };
    let policy_src = match &resume {
        Some(c) => Source::Resume(c.join("policy")),
        None => Source::Init(args.policy.clone()),
    };
    let tok = Tok::load(&args.policy)?;
    let (pcfg, _) = crate::checkpoint::read_config(&args.policy)?;
    let (policy, policy_params) = setup::variables(&policy_src, &pcfg, args.seed, &device, |vb| LmModel::new(&pcfg, vb))?;
    let reference = load_frozen_lm(&args.policy, &device)?;
    let scorer = EnsembleScorer::load(&args.reward_model, args.reward_ensemble, &device)?;
    let (rcfg, rm_tok) = (scorer.members[0].0.cfg.clone(), &scorer.members[0].1);
    // The value network reads the policy's tokens: it can start from the reward model only when
    // that shares the policy's tokenizer and covers its context.
    let value_from_rm = value_from_reward_model(args, &tok, &pcfg, rm_tok, &rcfg)?;
    let vcfg = if value_from_rm { rcfg.clone() } else { pcfg.clone() };
    let value_src = match &resume {
        Some(c) => Source::Resume(c.join("value")),
        None if value_from_rm => Source::Init(args.reward_model.clone()),
        None => Source::Init(args.policy.clone()),
    };
    let (value, value_params) = setup::variables(&value_src, &vcfg, args.seed, &device, |vb| RewardModel::new(&vcfg, vb))?;
    let from_scratch = crate::checkpoint::trained_from_scratch(&args.policy);
    let lr = args.lr.unwrap_or(if from_scratch { 5e-4 } else { 3e-6 });
    // One optimizer over both networks, as TRL's policy-and-value wrapper.
    let mut all: Vec<(String, candle_core::Var)> = policy_params.iter().map(|(n, v)| (format!("policy.{n}"), v.clone())).collect();
    all.extend(value_params.iter().map(|(n, v)| (format!("value.{n}"), v.clone())));
    let mut opt = AdamW::new(all.clone(), AdamWConfig { eps: 1e-5, ..Default::default() })?;
    let mut state = PpoState { iteration: 0, kl_coef: args.kl_coef, adam_step: 0, seed: args.seed, iterations: args.iterations, grid_reached: 0 };
    if let Some(c) = &resume {
        let text = std::fs::read_to_string(c.join("state.json")).with_context(|| format!("cannot read {}", c.display()))?;
        let saved: PpoState = serde_json::from_str(&text)?;
        if (saved.seed, saved.iterations) != (args.seed, args.iterations) {
            bail!("--resume {}: it was a run of {} iterations with seed {}: resume with the same flags", c.display(), saved.iterations, saved.seed)
        }
        opt.load(&c.join("optimizer.safetensors"), saved.adam_step)?;
        state = saved;
    }
    // Every rank starts from rank 0's weights.
    crate::dist::broadcast_params(&all)?;
    let world = crate::dist::world();
    let queries: Vec<Vec<u32>> = {
        let texts: Vec<String> = prompts.iter().map(|p| p.1.clone()).collect();
        let room = pcfg.n_positions.saturating_sub(args.max_new_tokens).max(1);
        tok.encode_all(&texts)?.into_iter().map(|q| setup::keep_last(if q.is_empty() { vec![tok.eos()] } else { q }, room).0).collect()
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut metrics = Metrics::open(args.metrics.as_deref())?;
    eprintln!(
        "ppo: {} prompts, {} iterations of {} rollouts, β {}{}, on {:?}",
        prompts.len(),
        args.iterations,
        args.batch_size,
        args.kl_coef,
        args.target_kl.map_or(String::new(), |t| format!(" (adaptive, target KL {t})")),
        device
    );
    let bar = match crate::dist::is_root() {
        true => indicatif::ProgressBar::new(args.iterations).with_position(state.iteration),
        false => indicatif::ProgressBar::hidden(),
    };
    let sampling = SamplingOpts { temperature: args.temperature, top_p: 1.0, max_new_tokens: args.max_new_tokens, seed: args.seed };
    while state.iteration < args.iterations {
        let it = state.iteration;
        // 1. Rollouts from the current policy.
        let t0 = Instant::now();
        // Prompts in a shuffled order per pass over them (a function of the seed and the pass).
        let mut order: (usize, Vec<usize>) = (usize::MAX, Vec::new());
        let picks: Vec<usize> = (0..args.batch_size)
            .map(|i| {
                let k = it as usize * args.batch_size + i;
                if order.0 != k / prompts.len() {
                    order = (k / prompts.len(), (0..prompts.len()).collect());
                    Rng::derived(args.seed, "prompt-epoch", order.0 as u64).shuffle(&mut order.1);
                }
                order.1[k % prompts.len()]
            })
            .collect();
        // Frozen views of the current weights for everything before the optimisation: no
        // autograd graph is recorded for generation or the old log-probabilities and values.
        let snapshot = setup::frozen(&policy_params, &device, |vb| LmModel::new(&pcfg, vb))?;
        let value_snapshot = setup::frozen(&value_params, &device, |vb| RewardModel::new(&vcfg, vb))?;
        // With several ranks each samples, scores and evaluates its shard of the rollouts (each
        // rollout with the random stream of its place in the whole batch).
        let mine = crate::dist::shard_range(picks.len(), world);
        let picks = &picks[mine.clone()];
        let batch_queries: Vec<Vec<u32>> = picks.iter().map(|&p| queries[p].clone()).collect();
        let mut rngs: Vec<Rng> = mine.map(|i| Rng::derived(args.seed, "rollout", it * 1_000_003 + i as u64)).collect();
        let conts = match batch_queries.is_empty() {
            true => Vec::new(),
            false => generate_batch(&snapshot, &batch_queries, tok.eos(), &sampling, &mut rngs, true, &device)?,
        };
        let gen_s = t0.elapsed().as_secs_f64();
        // 2. Scores from the reward model.
        let t1 = Instant::now();
        let texts: Vec<String> = picks.iter().zip(&conts).map(|(&p, c)| Ok(join(&prompts[p].1, &tok.decode(&c.tokens)?))).collect::<Result<_>>()?;
        let raw = scorer.score(&texts, 16_384, &device)?;
        let (ens_mean_sum, ens_std_sum) = (raw.iter().map(|r| r.mean).sum::<f64>(), raw.iter().map(|r| r.std).sum::<f64>());
        let mut rollouts: Vec<Rollout> = batch_queries
            .into_iter()
            .zip(conts)
            .zip(raw)
            .map(|((query, c), s)| {
                let mut response = c.tokens.clone();
                if c.eos || response.is_empty() {
                    response.push(tok.eos());
                }
                let mut score = s.score;
                if !c.eos {
                    score -= args.missing_eos_penalty.unwrap_or(0.0);
                }
                Rollout { query, response, eos: c.eos, score, old_logp: vec![], ref_logp: vec![], values: vec![], adv: vec![], returns: vec![] }
            })
            .collect();
        let score_s = t1.elapsed().as_secs_f64();
        // 3. Old and reference log-probabilities, values, rewards, advantages.
        let t2 = Instant::now();
        let mut entropy_sum = 0.0;
        let mut token_count = 0usize;
        for chunk in (0..rollouts.len()).collect::<Vec<_>>().chunks(args.mini_batch_size.max(1)) {
            let refs: Vec<&Rollout> = chunk.iter().map(|&i| &rollouts[i]).collect();
            let b = batch(&refs, tok.eos(), &device)?;
            let (lp, ent) = policy_logprobs(&snapshot, &refs, &b, args.temperature)?;
            let (rlp, _) = policy_logprobs(&reference, &refs, &b, args.temperature)?;
            let v = values(&value_snapshot, &refs, &b)?;
            entropy_sum += scalar(&(ent * &b.resp_mask)?.sum_all()?)?;
            token_count += refs.iter().map(|r| r.response.len()).sum::<usize>();
            let (lp, rlp, v) = (rows_of(&lp, &refs)?, rows_of(&rlp, &refs)?, rows_of(&v, &refs)?);
            for (&i, ((lp, rlp), v)) in chunk.iter().zip(lp.into_iter().zip(rlp).zip(v)) {
                (rollouts[i].old_logp, rollouts[i].ref_logp, rollouts[i].values) = (lp, rlp, v);
            }
        }
        let mut kl_sum = 0.0;
        let mut k3_sum = 0.0;
        let mut all_adv = Vec::new();
        for ro in &mut rollouts {
            k3_sum += kl_grid::sequence_kl_k3(&ro.old_logp, &ro.ref_logp);
            let kl: Vec<f64> = ro.old_logp.iter().zip(&ro.ref_logp).map(|(a, b)| (a - b) as f64).collect();
            kl_sum += kl.iter().sum::<f64>();
            let mut rewards: Vec<f64> = kl.iter().map(|k| -state.kl_coef * k).collect();
            *rewards.last_mut().expect("a response has a token") += ro.score;
            let vals: Vec<f64> = ro.values.iter().map(|&v| v as f64).collect();
            let (adv, ret) = gae(&rewards, &vals, args.gamma, args.lam);
            all_adv.extend(adv.iter().copied());
            ro.adv = adv.iter().map(|&a| a as f32).collect();
            ro.returns = ret.iter().map(|&r| r as f32).collect();
        }
        // Advantages whitened over every rank's tokens; the KL and entropy summed over ranks.
        whiten_across_ranks(&mut all_adv);
        let mut k = 0;
        for ro in &mut rollouts {
            for a in ro.adv.iter_mut() {
                *a = all_adv[k] as f32;
                k += 1;
            }
        }
        let mut sums = [kl_sum, entropy_sum, token_count as f64, k3_sum, ens_mean_sum, ens_std_sum];
        crate::dist::all_reduce_f64(&mut sums);
        let [kl_sum, entropy_sum, token_count, k3_sum, ens_mean_sum, ens_std_sum] = sums;
        // Every rank gets every rollout, so each can take its shard of every minibatch.
        if world.size > 1 {
            rollouts = crate::dist::all_gather_bytes(&encode_rollouts(&rollouts)).iter().map(|b| decode_rollouts(b)).collect::<Result<Vec<_>>>()?.concat();
        }
        // 4. PPO epochs over shuffled minibatches.
        let mut sums = LossStats::default();
        let mut updates = 0f64;
        for epoch in 0..args.ppo_epochs {
            let mut order: Vec<usize> = (0..rollouts.len()).collect();
            Rng::derived(args.seed, "ppo-epoch", it * 1_000 + epoch as u64).shuffle(&mut order);
            for mb in order.chunks(args.mini_batch_size.max(1)) {
                // This rank's shard of the minibatch; losses are divided by the whole
                // minibatch's response tokens, so the ranks' gradients add up to its gradient.
                let denom = mb.iter().map(|&i| rollouts[i].response.len()).sum::<usize>().max(1) as f64;
                let refs: Vec<&Rollout> = crate::dist::shard(mb).iter().map(|&i| &rollouts[i]).collect();
                let mut grads = Grads::new(all.len());
                let mut st = LossStats::default();
                if !refs.is_empty() {
                    let b = batch(&refs, tok.eos(), &device)?;
                    let (new_logp, _) = policy_logprobs(&policy, &refs, &b, args.temperature)?;
                    let new_v = values(&value, &refs, &b)?;
                    let col = |f: fn(&Rollout) -> &[f32]| padded(&refs.iter().map(|r| f(r)).collect::<Vec<_>>(), b.r, &device);
                    let loss;
                    (loss, st) = ppo_loss_part(
                        &new_logp,
                        &col(|r| &r.old_logp)?,
                        &col(|r| &r.adv)?,
                        &new_v,
                        &col(|r| &r.values)?,
                        &col(|r| &r.returns)?,
                        &b.resp_mask,
                        denom,
                        args.cliprange,
                        args.cliprange_value,
                        args.vf_coef,
                    )?;
                    grads.add(&all, &loss.backward()?)?;
                }
                grads.all_reduce(&all)?;
                let mut parts = st.to_array();
                crate::dist::all_reduce_f64(&mut parts);
                let st = LossStats::from_array(parts).finish();
                grads.clip(args.max_grad_norm)?;
                opt.step(&grads, lr)?;
                for (s, v) in [
                    (&mut sums.pg_loss, st.pg_loss),
                    (&mut sums.vf_loss, st.vf_loss),
                    (&mut sums.pg_clipfrac, st.pg_clipfrac),
                    (&mut sums.vf_clipfrac, st.vf_clipfrac),
                    (&mut sums.approxkl, st.approxkl),
                    (&mut sums.ratio_mean, st.ratio_mean),
                    (&mut sums.ratio_var, st.ratio_var),
                ] {
                    *s += v;
                }
                updates += 1.0;
            }
        }
        let opt_s = t2.elapsed().as_secs_f64();
        let n = rollouts.len() as f64;
        let kl = kl_sum / n;
        let mean_score = rollouts.iter().map(|r| r.score).sum::<f64>() / n;
        let sqrt_kl = (k3_sum / n).max(0.0).sqrt();
        let (ensemble_mean, ensemble_std) = match scorer.is_ensemble() {
            true => (Some(ens_mean_sum / n), Some(ens_std_sum / n)),
            false => (None, None),
        };
        let non_score = -state.kl_coef * kl;
        let coef_used = state.kl_coef;
        if let Some(target) = args.target_kl {
            let error = (kl / target - 1.0).clamp(-0.2, 0.2);
            state.kl_coef *= 1.0 + error * n / args.kl_horizon;
        }
        state.iteration += 1;
        state.adam_step = opt.steps_taken();
        let m = |x: f64| x / updates.max(1.0);
        metrics.emit(&MetricEvent::Iteration(Iteration {
            iteration: state.iteration,
            total_iterations: Some(args.iterations),
            score: mean_score,
            kl,
            non_score_reward: non_score,
            rlhf_reward: mean_score + non_score,
            kl_coef: coef_used,
            entropy: entropy_sum / token_count.max(1.0),
            approxkl: m(sums.approxkl),
            clipfrac: m(sums.pg_clipfrac),
            ratio_mean: m(sums.ratio_mean),
            ratio_var: m(sums.ratio_var),
            pg_loss: m(sums.pg_loss),
            vf_loss: m(sums.vf_loss),
            vf_clipfrac: m(sums.vf_clipfrac),
            eos_rate: rollouts.iter().filter(|r| r.eos).count() as f64 / n,
            response_length: rollouts.iter().map(|r| r.response.len()).sum::<usize>() as f64 / n,
            time: Timings { generate_s: gen_s, score_s, optimise_s: opt_s },
            sqrt_kl: Some(sqrt_kl),
            ensemble_mean,
            ensemble_std,
        }))?;
        if let Some((grid, k)) = args.kl_grid.and_then(|g| kl_grid::newly_reached(sqrt_kl, g, state.grid_reached).map(|k| (g, k))) {
            let point = k as f64 * grid;
            let entry =
                GridCheckpoint { name: kl_grid::point_name(point), point, iteration: state.iteration, sqrt_kl, score: mean_score, ensemble_mean, ensemble_std };
            if crate::dist::is_root() {
                let extra = json!({"rewardlab": {"from_scratch": from_scratch, "kl_grid": &entry}});
                kl_grid::keep(&args.out, grid, &args.policy, entry, |dir| {
                    save_model(dir, &pcfg, ModelKind::Lm, &policy_params, tok.eos(), Some(&extra))?;
                    setup::save_tokenizer(&tok, dir, pcfg.n_positions)
                })?;
            }
            state.grid_reached = k;
        }
        bar.set_position(state.iteration);
        bar.set_message(format!("score {mean_score:.3} kl {kl:.3}"));
        let last = state.iteration == args.iterations;
        if last || (args.save_every > 0 && state.iteration.is_multiple_of(args.save_every)) {
            crate::dist::check_params(&all)?;
            if crate::dist::is_root() {
                save_checkpoint(args, &state, &opt, &policy_params, &pcfg, &value_params, &vcfg, &tok)?;
            }
        }
        if args.stop_after == Some(state.iteration) && !last {
            bar.abandon_with_message(format!("stopped after iteration {} (--stop-after)", state.iteration));
            return Ok(());
        }
    }
    bar.finish_and_clear();
    if !crate::dist::is_root() {
        return Ok(());
    }
    let extra = json!({"rewardlab": {"from_scratch": from_scratch, "ppo": {"reward_model": args.reward_model.display().to_string(),
        "iterations": args.iterations, "final_kl_coef": state.kl_coef, "reward_ensemble": args.reward_ensemble.as_str(),
        "reward_members": scorer.members.len(), "reference": args.policy.display().to_string(), "lr": lr,
        "value_init": if value_from_rm { "reward model" } else { "policy" }}}});
    save_model(&args.out, &pcfg, ModelKind::Lm, &policy_params, tok.eos(), Some(&extra))?;
    setup::save_tokenizer(&tok, &args.out, pcfg.n_positions)?;
    save_model(&args.out.join("value"), &vcfg, ModelKind::Reward, &value_params, tok.eos(), None)?;
    rm_tok.save(&args.out.join("value"))?;
    metrics.emit(&MetricEvent::Done(Done { iteration: Some(state.iteration), kl_coef: Some(state.kl_coef), ..Done::default() }))?;
    eprintln!("policy saved to {} (value network in {}/value)", args.out.display(), args.out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    args: &PpoArgs,
    state: &PpoState,
    opt: &AdamW,
    policy: &[(String, candle_core::Var)],
    pcfg: &Config,
    value: &[(String, candle_core::Var)],
    vcfg: &Config,
    tok: &Tok,
) -> Result<()> {
    let name = format!("iter-{:08}", state.iteration);
    commit_checkpoint(&args.out.join("checkpoints"), &name, 2, |tmp| {
        save_model(&tmp.join("policy"), pcfg, ModelKind::Lm, policy, tok.eos(), None)?;
        tok.save(&tmp.join("policy"))?;
        save_model(&tmp.join("value"), vcfg, ModelKind::Reward, value, tok.eos(), None)?;
        opt.save(&tmp.join("optimizer.safetensors"))?;
        write_atomic(&tmp.join("state.json"), &serde_json::to_vec_pretty(state)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_and_whitening_match_hand_computed_values() {
        // rewards [0, 0, 1], values [0.5, 0.2, 0.1], γ 1, λ 0.95:
        // δ = [-0.3, -0.1, 0.9]; A2 = 0.9, A1 = -0.1 + 0.95·0.9 = 0.755, A0 = -0.3 + 0.95·0.755 = 0.41725.
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.2, 0.1], 1.0, 0.95);
        for (a, b) in adv.iter().zip([0.41725, 0.755, 0.9]) {
            assert!((a - b).abs() < 1e-12, "{adv:?}");
        }
        for (a, b) in ret.iter().zip([0.91725, 0.955, 1.0]) {
            assert!((a - b).abs() < 1e-12, "{ret:?}");
        }
        let mut xs = vec![1.0, 2.0, 3.0, 6.0];
        whiten(&mut xs);
        // mean 3, unbiased variance 14/3.
        let sd = (14.0f64 / 3.0).sqrt();
        for (a, b) in xs.iter().zip([-2.0 / sd, -1.0 / sd, 0.0, 3.0 / sd]) {
            assert!((a - b).abs() < 1e-6, "{xs:?}");
        }
    }

    #[test]
    fn clipped_losses_match_hand_computed_values() {
        // One token: log π −1.0 vs old −1.5 → ratio e^0.5 = 1.6487; advantage 2:
        // pg = max(−2·1.6487, −2·1.2) = −2.4 (clipped); approx KL ½·0.25 = 0.125.
        // value 1.0 vs old 0.5, return 2, clip 0.2 → clipped value 0.7:
        // vf = ½·max((1−2)², (0.7−2)²) = ½·1.69 = 0.845; loss = −2.4 + 0.1·0.845 = −2.3155.
        let t = |v: f32| Tensor::new(&[[v]], &Device::Cpu).unwrap();
        let (loss, st) = ppo_loss(&t(-1.0), &t(-1.5), &t(2.0), &t(1.0), &t(0.5), &t(2.0), &t(1.0), 0.2, 0.2, 0.1).unwrap();
        assert!((scalar(&loss).unwrap() + 2.3155).abs() < 1e-5);
        assert!((st.pg_loss + 2.4).abs() < 1e-5 && (st.vf_loss - 0.845).abs() < 1e-5);
        assert!((st.approxkl - 0.125).abs() < 1e-6);
        assert_eq!((st.pg_clipfrac, st.vf_clipfrac), (1.0, 1.0));
        assert!((st.ratio_mean - 0.5f64.exp()).abs() < 1e-5 && st.ratio_var.abs() < 1e-9);
        // A masked token changes nothing.
        let two = |a: f32, b: f32| Tensor::new(&[[a, b]], &Device::Cpu).unwrap();
        let (masked, _) =
            ppo_loss(&two(-1.0, 5.0), &two(-1.5, 0.0), &two(2.0, 9.0), &two(1.0, 3.0), &two(0.5, 0.0), &two(2.0, -4.0), &two(1.0, 0.0), 0.2, 0.2, 0.1).unwrap();
        assert!((scalar(&masked).unwrap() + 2.3155).abs() < 1e-5);
    }
}
