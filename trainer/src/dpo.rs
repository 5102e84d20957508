//! `rewardlab-train dpo`: direct preference optimisation (sigmoid loss, Rafailov et al. 2023)
//! of a policy against a frozen copy of itself, on the reward model's preference data
//! (rankings expand into their pairs); implicit-reward accuracy and margin on a prompt-split
//! validation set.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde_json::json;

use crate::checkpoint::{save_model, ModelKind};
use crate::data::{read_rankings, split_by_prompt, Demonstration, Ranking};
use crate::gpt2::LmModel;
use crate::loss::{dpo_loss, sequence_logprobs};
use crate::setup::{self, ModelOpts, Source};
use crate::sft::{encode_demonstrations, lm_forward, DemoEx};
use crate::tokenizer::Tok;
use crate::train::{self, Done, MetricEvent, Metrics, Report, Stats, Task, TrainOpts};

pub use rewardlab_protocol::DpoArgs;

/// A preference pair, tokenized, with the reference model's log-probabilities of each response.
pub struct PairEx {
    pub chosen: DemoEx,
    pub rejected: DemoEx,
    pub ref_chosen: f32,
    pub ref_rejected: f32,
}

pub struct DpoTask<'a> {
    pub model: &'a LmModel,
    pub device: Device,
    pub pad: u32,
    pub beta: f64,
}

/// Summed log-probabilities of the responses of `seqs` under `model`: `[n]`.
fn logprobs(model: &LmModel, seqs: &[&DemoEx], pad: u32, device: &Device) -> Result<Tensor> {
    let (logits, targets, mask) = lm_forward(model, seqs, pad, device)?;
    Ok(sequence_logprobs(&logits, &targets, &mask)?)
}

impl Task for DpoTask<'_> {
    type Example = PairEx;

    fn shape(&self, ex: &PairEx) -> (usize, usize) {
        (2, ex.chosen.ids.len().max(ex.rejected.ids.len()))
    }

    fn units(&self, _ex: &PairEx) -> f64 {
        1.0
    }

    fn loss(&self, batch: &[&PairEx]) -> Result<(Tensor, Stats)> {
        let seqs: Vec<&DemoEx> = batch.iter().flat_map(|p| [&p.chosen, &p.rejected]).collect();
        let lp = logprobs(self.model, &seqs, self.pad, &self.device)?.reshape((batch.len(), 2))?;
        let (pw, pl) = (lp.narrow(1, 0, 1)?.squeeze(1)?, lp.narrow(1, 1, 1)?.squeeze(1)?);
        let rw: Vec<f32> = batch.iter().map(|p| p.ref_chosen).collect();
        let rl: Vec<f32> = batch.iter().map(|p| p.ref_rejected).collect();
        let (rw_t, rl_t) = (Tensor::new(rw.as_slice(), &self.device)?, Tensor::new(rl.as_slice(), &self.device)?);
        let loss = dpo_loss(&pw, &pl, &rw_t, &rl_t, self.beta)?;
        let (pw, pl): (Vec<f32>, Vec<f32>) = (pw.to_vec1()?, pl.to_vec1()?);
        let mut stats = Stats {
            units: batch.len() as f64,
            loss_sum: loss.to_scalar::<f32>()? as f64,
            counted: batch.len() as f64,
            tokens: seqs.iter().map(|s| s.ids.len()).sum(),
            ..Default::default()
        };
        for i in 0..batch.len() {
            // Implicit rewards β·(log π − log π_ref); the pair is right when the chosen's is higher.
            let (cw, cl) = (self.beta * (pw[i] - rw[i]) as f64, self.beta * (pl[i] - rl[i]) as f64);
            stats.correct += f64::from(u8::from(cw > cl));
            stats.margin_sum += cw - cl;
        }
        Ok((loss, stats))
    }

    fn report(&self, s: &Stats) -> Report {
        Report { loss: s.loss(), accuracy: Some(s.accuracy()), margin: Some(s.margin_sum / s.counted.max(1.0)), pairs: Some(s.counted), ..Report::default() }
    }
}

/// Expands rankings into their (chosen, rejected) pairs and tokenizes them.
fn encode_pairs(tok: &Tok, rankings: &[Ranking], max_len: usize) -> Result<Vec<(DemoEx, DemoEx)>> {
    let mut demos = Vec::new();
    for r in rankings {
        for i in 0..r.ranks.len() {
            for j in 0..r.ranks.len() {
                if r.ranks[i] < r.ranks[j] {
                    demos.push(Demonstration { prompt: r.prompt.clone(), completion: r.responses[i].clone() });
                    demos.push(Demonstration { prompt: r.prompt.clone(), completion: r.responses[j].clone() });
                }
            }
        }
    }
    let (encoded, _) = encode_demonstrations(tok, &demos, max_len)?;
    let mut it = encoded.into_iter();
    let mut pairs = Vec::new();
    while let (Some(c), Some(r)) = (it.next(), it.next()) {
        pairs.push((c, r));
    }
    Ok(pairs)
}

/// Attaches the frozen reference's log-probabilities (with several ranks each computes its
/// shard's and they are gathered).
fn with_reference(reference: &LmModel, pairs: Vec<(DemoEx, DemoEx)>, pad: u32, device: &Device) -> Result<Vec<PairEx>> {
    let mut out = Vec::with_capacity(pairs.len() * 2);
    for chunk in crate::dist::shard(&pairs).chunks(16) {
        let seqs: Vec<&DemoEx> = chunk.iter().flat_map(|(c, r)| [c, r]).collect();
        out.extend(logprobs(reference, &seqs, pad, device)?.detach().to_vec1::<f32>()?);
    }
    let refs: Vec<(f32, f32)> = crate::dist::all_gather_f32(&out).chunks(2).map(|l| (l[0], l[1])).collect();
    Ok(pairs.into_iter().zip(refs).map(|((chosen, rejected), (ref_chosen, ref_rejected))| PairEx { chosen, rejected, ref_chosen, ref_rejected }).collect())
}

pub fn run(args: &DpoArgs) -> Result<()> {
    let opts: &TrainOpts = &args.train;
    let device = train::device(opts.device)?;
    let rankings = read_rankings(&args.data)?;
    if rankings.is_empty() {
        bail!("no preference pairs in {:?}", args.data)
    }
    let (train_r, val_r) = split_by_prompt(rankings, |r| r.prompt.as_str(), opts.val_fraction, opts.seed);
    let source = Source::new(opts.resume.as_deref(), Some(&args.policy))?;
    let tok = Tok::load(source.dir().unwrap_or(&args.policy))?;
    let model_opts = ModelOpts { vocab_size: 0, n_embd: 0, n_layer: 0, n_head: 0, max_len: args.max_len, tokenizer: None };
    let cfg = setup::config(&source, &model_opts, &tok)?;
    let max_len = args.max_len.min(cfg.n_positions);
    let (model, params) = setup::variables(&source, &cfg, opts.seed, &device, |vb| LmModel::new(&cfg, vb))?;
    let init = Source::Init(args.policy.clone());
    let (reference, _) = setup::variables(&init, &cfg, opts.seed, &device, |vb| LmModel::new(&cfg, vb))?;
    let train_x = with_reference(&reference, encode_pairs(&tok, &train_r, max_len)?, tok.eos(), &device)?;
    let val_x = with_reference(&reference, encode_pairs(&tok, &val_r, max_len)?, tok.eos(), &device)?;
    drop(reference);
    eprintln!("dpo: {} training and {} validation pairs, β {}, on {:?}", train_x.len(), val_x.len(), args.beta, device);
    if crate::dist::is_root() {
        setup::save_tokenizer(&tok, &args.out, max_len)?;
    }
    let task = DpoTask { model: &model, device: device.clone(), pad: tok.eos(), beta: args.beta };
    let mut metrics = Metrics::open(opts.metrics.as_deref())?;
    // A policy trained from scratch here learns at a small model's rate (1e-3, not 1e-5).
    let from_scratch = crate::checkpoint::trained_from_scratch(&args.policy);
    let lr = opts.lr_or(from_scratch);
    let model_files = (params.as_slice(), &cfg, ModelKind::Lm);
    let Some(outcome) = train::run_command(&task, &train_x, &val_x, model_files, &tok, &source, opts, lr, &args.out, &mut metrics)? else {
        return Ok(());
    };
    let extra = json!({"rewardlab": {"max_len": max_len, "dpo_beta": args.beta, "reference": args.policy.display().to_string(), "from_scratch": from_scratch,
                                     "validation": outcome.validation}});
    if crate::dist::is_root() {
        save_model(&args.out, &cfg, ModelKind::Lm, &params, tok.eos(), Some(&extra))?;
    }
    metrics.emit(&MetricEvent::Done(Done { step: Some(outcome.state.step), validation: outcome.validation.clone(), ..Done::default() }))?;
    if let Some(v) = outcome.validation.as_ref().map(|v| &v.report) {
        eprintln!(
            "validation: implicit-reward accuracy {:.4}, margin {:.4}, loss {:.4} over {} pairs",
            v.accuracy.unwrap_or(f64::NAN),
            v.margin.unwrap_or(f64::NAN),
            v.loss,
            v.pairs.unwrap_or(f64::NAN)
        );
    }
    eprintln!("policy saved to {}", args.out.display());
    Ok(())
}
