//! `rewardlab-train eval-regression`: a model measured on a frozen regression set (held-out
//! preference pairs of an earlier round), so a retrained model that forgets shows it. The figure
//! depends on what the model is:
//!
//! - a reward model (`GPT2ForSequenceClassification`, an ensemble's mean when it is one):
//!   `rm_accuracy`, the share of pairs whose chosen response it scores higher;
//! - a policy with `--reference` (a DPO run's starting policy): `dpo_reward_accuracy`, the share
//!   of pairs whose chosen response has the higher implicit reward
//!   β·(log π(y|x) − log π_ref(y|x)) (β > 0 does not change the sign, so none is needed);
//! - a policy with `--reward-model` (a PPO run's): on the set's distinct prompts (at most
//!   `--max-prompts`, the first ones) it answers greedily, and the reward model scores the answers:
//!   `ppo_mean_reward` (their mean reward) and, with `--reference` (the starting policy, answering
//!   the same way), `ppo_win_rate` (the share of prompts where the policy's answer scores higher,
//!   a tie counting half).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde_json::{json, Value};

use crate::checkpoint::read_config;
use crate::data::{join, Demonstration};
use crate::generate::{generate_batch, load_frozen_lm, SamplingOpts};
use crate::gpt2::LmModel;
use crate::merge::{read_pairs, Pair};
use crate::reward_ensemble::EnsembleScorer;
use crate::rng::Rng;
use crate::tokenizer::Tok;
use rewardlab_protocol::{DeviceArg, RewardEnsemble};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalRegressionArgs {
    /// The model to measure: a reward model or a policy directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The regression set: preference pairs or rankings (`{"prompt", "chosen", "rejected"}` lines).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// A policy's reference: the starting policy (DPO's implicit reward; PPO's win rate).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The reward model that scores a policy's answers (PPO).
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
    /// Distinct prompts a policy answers (the first ones of the set).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_prompts: u64,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_new_tokens: u64,
    /// Most padded tokens in one forward pass.
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    /// Where to write the report (JSON; `-` for stdout).
    #[arg(long, default_value = "-")]
    pub out: String,
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

/// One figure of the report.
fn figure(metric: &str, value: f64, n: usize) -> Value {
    json!({"metric": metric, "value": value, "n": n})
}

/// The share of `margins` above 0, a zero counting `tie` (0 for no margin): accuracies count a
/// tie as wrong (as training's validation and `merge-sweep` do), a win rate as half a win.
pub fn share_positive(margins: &[f64], tie: f64) -> f64 {
    if margins.is_empty() {
        return 0.0;
    }
    let wins: f64 = margins
        .iter()
        .map(|m| {
            if *m > 0.0 {
                1.0
            } else if *m == 0.0 {
                tie
            } else {
                0.0
            }
        })
        .sum();
    wins / margins.len() as f64
}

pub fn run(args: &EvalRegressionArgs) -> Result<()> {
    let device = crate::train::device(args.device)?;
    let pairs = read_pairs(&args.data)?;
    if pairs.is_empty() {
        bail!("no preference pairs in {:?}", args.data)
    }
    let (_, raw) = read_config(&args.model)?;
    let figures = match (raw["architectures"][0].as_str(), &args.reference, &args.reward_model) {
        (Some("GPT2ForSequenceClassification"), _, _) => vec![rm_accuracy(&args.model, &pairs, args.max_tokens, &device)?],
        (Some("GPT2LMHeadModel"), _, Some(rm)) => ppo_figures(args, rm, &pairs, &device)?,
        (Some("GPT2LMHeadModel"), Some(reference), None) => vec![dpo_accuracy(&args.model, reference, &pairs, args.max_tokens, &device)?],
        (Some("GPT2LMHeadModel"), None, None) => {
            bail!("a policy is measured against its reference (--reference: DPO's implicit reward) or a reward model (--reward-model: PPO)")
        }
        (other, _, _) => bail!("cannot evaluate a model of architecture {other:?} (a GPT2ForSequenceClassification or GPT2LMHeadModel is needed)"),
    };
    for f in &figures {
        eprintln!("regression set: {} {:.4} over {}", f["metric"].as_str().unwrap_or_default(), f["value"].as_f64().unwrap_or(f64::NAN), f["n"]);
    }
    let report = json!({"model": args.model.display().to_string(), "pairs": pairs.len(), "figures": figures});
    match args.out.as_str() {
        "-" => println!("{report}"),
        path => crate::checkpoint::write_atomic(Path::new(path), format!("{report}\n").as_bytes())?,
    }
    Ok(())
}

/// A reward model's (an ensemble's mean) pairwise accuracy.
fn rm_accuracy(dir: &Path, pairs: &[Pair], max_tokens: usize, device: &Device) -> Result<Value> {
    let scorer = EnsembleScorer::load(dir, RewardEnsemble::Mean, device)?;
    let texts: Vec<String> = pairs.iter().flat_map(|(p, c, r)| [join(p, c), join(p, r)]).collect();
    let scores = scorer.score(&texts, max_tokens, device)?;
    let margins: Vec<f64> = scores.chunks(2).map(|s| s[0].score - s[1].score).collect();
    Ok(figure("rm_accuracy", share_positive(&margins, 0.0), pairs.len()))
}

/// Per pair: the summed log-probability of (chosen, rejected) under the policy in `dir`.
fn pair_logprobs(dir: &Path, pairs: &[Pair], max_tokens: usize, device: &Device) -> Result<Vec<(f64, f64)>> {
    let model = load_frozen_lm(dir, device)?;
    let tok = Tok::load(dir)?;
    let (cfg, raw) = read_config(dir)?;
    let max_len = raw.pointer("/rewardlab/max_len").and_then(Value::as_u64).map_or(cfg.n_positions, |m| m as usize).min(cfg.n_positions);
    let demos: Vec<Demonstration> = pairs
        .iter()
        .flat_map(|(p, c, r)| [Demonstration { prompt: p.clone(), completion: c.clone() }, Demonstration { prompt: p.clone(), completion: r.clone() }])
        .collect();
    let (encoded, _) = crate::sft::encode_demonstrations(&tok, &demos, max_len)?;
    let per_batch = (max_tokens / max_len.max(1)).max(1);
    let mut sums = Vec::with_capacity(encoded.len());
    for chunk in encoded.chunks(per_batch) {
        let refs: Vec<&crate::sft::DemoEx> = chunk.iter().collect();
        let (logits, targets, mask) = crate::sft::lm_forward(&model, &refs, tok.eos(), device)?;
        let s: Vec<f32> = crate::loss::sequence_logprobs(&logits, &targets, &mask)?.to_vec1()?;
        sums.extend(s.into_iter().map(f64::from));
    }
    Ok(sums.chunks(2).map(|s| (s[0], s[1])).collect())
}

/// DPO's implicit-reward accuracy of the policy in `dir` against its `reference`.
fn dpo_accuracy(dir: &Path, reference: &Path, pairs: &[Pair], max_tokens: usize, device: &Device) -> Result<Value> {
    let policy = pair_logprobs(dir, pairs, max_tokens, device).context("the policy")?;
    let start = pair_logprobs(reference, pairs, max_tokens, device).context("--reference")?;
    let margins: Vec<f64> = policy.iter().zip(&start).map(|((c, r), (c0, r0))| (c - c0) - (r - r0)).collect();
    Ok(figure("dpo_reward_accuracy", share_positive(&margins, 0.0), pairs.len()))
}

/// The set's distinct prompts, in order, at most `max`.
fn distinct_prompts(pairs: &[Pair], max: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    pairs.iter().map(|p| p.0.clone()).filter(|p| seen.insert(p.clone())).take(max).collect()
}

/// Greedy answers of the policy in `dir` to `prompts`, each joined to its prompt.
fn answers(dir: &Path, prompts: &[String], max_new_tokens: usize, device: &Device) -> Result<Vec<String>> {
    let model: LmModel = load_frozen_lm(dir, device)?;
    let tok = Tok::load(dir)?;
    let opts = SamplingOpts { temperature: 0.0, top_p: 1.0, max_new_tokens, seed: 0 };
    let encoded = tok.encode_all(prompts)?;
    let mut out = Vec::with_capacity(prompts.len());
    for (batch, texts) in encoded.chunks(16).zip(prompts.chunks(16)) {
        let mut rngs: Vec<Rng> = (0..batch.len()).map(|i| Rng::derived(0, "regression", i as u64)).collect();
        let conts = generate_batch(&model, batch, tok.eos(), &opts, &mut rngs, true, device)?;
        for (prompt, c) in texts.iter().zip(conts) {
            out.push(join(prompt, &tok.decode(&c.tokens)?));
        }
    }
    Ok(out)
}

/// A PPO policy's mean reward on the set's prompts, and its win rate against `--reference`.
fn ppo_figures(args: &EvalRegressionArgs, rm: &Path, pairs: &[Pair], device: &Device) -> Result<Vec<Value>> {
    let prompts = distinct_prompts(pairs, args.max_prompts as usize);
    let scorer = EnsembleScorer::load(rm, RewardEnsemble::Mean, device).context("--reward-model")?;
    let policy: Vec<f64> =
        scorer.score(&answers(&args.model, &prompts, args.max_new_tokens as usize, device)?, args.max_tokens, device)?.iter().map(|r| r.score).collect();
    let mut figures = vec![figure("ppo_mean_reward", policy.iter().sum::<f64>() / policy.len().max(1) as f64, prompts.len())];
    if let Some(reference) = &args.reference {
        let start = answers(reference, &prompts, args.max_new_tokens as usize, device).context("--reference")?;
        let start: Vec<f64> = scorer.score(&start, args.max_tokens, device)?.iter().map(|r| r.score).collect();
        let margins: Vec<f64> = policy.iter().zip(&start).map(|(a, b)| a - b).collect();
        figures.push(figure("ppo_win_rate", share_positive(&margins, 0.5), prompts.len()));
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tie_is_wrong_for_an_accuracy_and_half_a_win_for_a_win_rate() {
        assert_eq!(share_positive(&[1.0, -1.0, 0.0, 2.0], 0.0), 0.5);
        assert_eq!(share_positive(&[1.0, -1.0, 0.0, 2.0], 0.5), 0.625);
        assert_eq!(share_positive(&[], 0.5), 0.0);
    }

    #[test]
    fn distinct_prompts_keep_their_first_order_and_the_limit() {
        let p = |x: &str| (x.to_string(), "c".to_string(), "r".to_string());
        assert_eq!(distinct_prompts(&[p("b"), p("a"), p("b"), p("c")], 2), ["b", "a"]);
    }
}
