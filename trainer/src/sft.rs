//! `rewardlab-train sft`: supervised fine-tuning on demonstrations, cross-entropy on the
//! response tokens only (the prompt is context, not a target); validation loss and perplexity.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};
use serde_json::json;

use crate::checkpoint::{save_model, ModelKind};
use crate::data::{read_demonstrations, split_by_prompt, Demonstration};
use crate::gpt2::LmModel;
use crate::loss::token_nll;
use crate::setup::{self, pad, Source};
use crate::tokenizer::Tok;
use crate::train::{self, Done, MetricEvent, Metrics, Report, Stats, Task, TrainOpts};

pub use rewardlab_protocol::SftArgs;

/// A tokenized demonstration: prompt tokens, then response tokens and end-of-text.
pub struct DemoEx {
    pub ids: Vec<u32>,
    pub prompt_len: usize,
}

/// Tokenizes demonstrations; a sequence over `max_len` loses the start of its prompt first,
/// then the end of its response; every demonstration keeps at least one response token (its
/// end-of-text at worst), so none is dropped. Returns the examples and how many were cut.
pub fn encode_demonstrations(tok: &Tok, demos: &[Demonstration], max_len: usize) -> Result<(Vec<DemoEx>, usize)> {
    let max_len = max_len.max(2);
    let texts: Vec<String> = demos.iter().flat_map(|d| [d.prompt.clone(), d.completion.clone()]).collect();
    let ids = tok.encode_all(&texts)?;
    let mut cut = 0;
    let examples = ids
        .chunks(2)
        .map(|pair| {
            let (mut prompt, mut response) = (pair[0].clone(), pair[1].clone());
            response.push(tok.eos());
            if prompt.len() + response.len() > max_len {
                cut += 1;
                let keep_prompt = max_len.saturating_sub(response.len()).min(prompt.len()).max(1.min(prompt.len()));
                prompt.drain(..prompt.len() - keep_prompt);
                response.truncate(max_len - prompt.len());
            }
            let prompt_len = prompt.len();
            prompt.extend(response);
            DemoEx { ids: prompt, prompt_len }
        })
        .collect();
    Ok((examples, cut))
}

/// Runs the policy over right-padded demonstrations: next-token `logits` `[b, t-1, v]`, the
/// `targets` they predict `[b, t-1]`, and a mask `[b, t-1]` that is 1 where the target is a
/// response token (or the closing end-of-text).
pub fn lm_forward(model: &LmModel, batch: &[&DemoEx], pad_id: u32, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
    let seqs: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
    let (ids, mask) = pad(&seqs, pad_id, device)?;
    let t = ids.dim(1)?.max(2);
    let mut target_mask = Vec::with_capacity(batch.len() * (t - 1));
    for e in batch {
        target_mask.extend((1..t).map(|j| if j >= e.prompt_len.max(1) && j < e.ids.len() { 1f32 } else { 0.0 }));
    }
    let target_mask = Tensor::from_vec(target_mask, (batch.len(), t - 1), device)?;
    let logits = model.forward(&ids, &mask)?.narrow(1, 0, t - 1)?;
    let targets = ids.narrow(1, 1, t - 1)?.contiguous()?;
    Ok((logits, targets, target_mask))
}

pub struct SftTask<'a> {
    pub model: &'a LmModel,
    pub device: Device,
    pub pad: u32,
}

impl Task for SftTask<'_> {
    type Example = DemoEx;

    fn shape(&self, ex: &DemoEx) -> (usize, usize) {
        (1, ex.ids.len())
    }

    /// Targets: every response token after the first position.
    fn units(&self, ex: &DemoEx) -> f64 {
        (ex.ids.len() - ex.prompt_len.max(1)) as f64
    }

    fn loss(&self, batch: &[&DemoEx]) -> Result<(Tensor, Stats)> {
        let seqs: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        let (logits, targets, target_mask) = lm_forward(self.model, batch, self.pad, &self.device)?;
        let loss = token_nll(&logits, &targets, &target_mask)?;
        let predicted = logits.detach().argmax(D::Minus1)?;
        let correct = (predicted.eq(&targets)?.to_dtype(DType::F32)? * &target_mask)?.sum_all()?.to_scalar::<f32>()?;
        let units: f64 = batch.iter().map(|e| self.units(e)).sum();
        let stats = Stats {
            units,
            loss_sum: loss.to_scalar::<f32>()? as f64,
            correct: correct as f64,
            counted: units,
            tokens: seqs.iter().map(|s| s.len()).sum(),
            ..Default::default()
        };
        Ok((loss, stats))
    }

    fn report(&self, s: &Stats) -> Report {
        Report { loss: s.loss(), perplexity: Some(s.loss().exp()), token_accuracy: Some(s.accuracy()), tokens: Some(s.units), ..Report::default() }
    }
}

pub fn run(args: &SftArgs) -> Result<()> {
    let opts: &TrainOpts = &args.train;
    let device = train::device(opts.device)?;
    let demos = read_demonstrations(&args.data)?;
    if demos.is_empty() {
        bail!("no demonstrations in {:?}", args.data)
    }
    let (train_d, val_d) = split_by_prompt(demos, |d| d.prompt.as_str(), opts.val_fraction, opts.seed);
    let source = Source::new(opts.resume.as_deref(), args.init.as_deref())?;
    let texts = train_d.iter().flat_map(|d| [d.prompt.as_str(), d.completion.as_str()]);
    let tok = setup::tokenizer(&source, texts, &args.model)?;
    crate::dist::agree("the tokenizer", tok.fingerprint())?;
    let cfg = setup::config(&source, &args.model, &tok)?;
    let max_len = args.model.max_len.min(cfg.n_positions);
    let (model, params) = setup::variables(&source, &cfg, opts.seed, &device, |vb| LmModel::new(&cfg, vb))?;
    let (train_x, cut_t) = encode_demonstrations(&tok, &train_d, max_len)?;
    let (val_x, cut_v) = encode_demonstrations(&tok, &val_d, max_len)?;
    eprintln!(
        "sft: {} training and {} validation demonstrations; {} cut to {max_len} tokens; {} parameters on {:?}",
        train_x.len(),
        val_x.len(),
        cut_t + cut_v,
        params.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        device
    );
    if crate::dist::is_root() {
        setup::save_tokenizer(&tok, &args.out, max_len)?;
    }
    let task = SftTask { model: &model, device: device.clone(), pad: tok.eos() };
    let mut metrics = Metrics::open(opts.metrics.as_deref())?;
    let from_scratch = crate::checkpoint::lineage_from_scratch(args.init.as_deref());
    let lr = opts.lr_or(from_scratch);
    let model_files = (params.as_slice(), &cfg, ModelKind::Lm);
    let Some(outcome) = train::run_command(&task, &train_x, &val_x, model_files, &tok, &source, opts, lr, &args.out, &mut metrics)? else {
        return Ok(());
    };
    let extra = json!({"rewardlab": {"max_len": max_len, "from_scratch": from_scratch, "validation": outcome.validation}});
    if crate::dist::is_root() {
        save_model(&args.out, &cfg, ModelKind::Lm, &params, tok.eos(), Some(&extra))?;
    }
    metrics.emit(&MetricEvent::Done(Done { step: Some(outcome.state.step), validation: outcome.validation.clone(), ..Done::default() }))?;
    if let Some(v) = outcome.validation.as_ref().map(|v| &v.report) {
        eprintln!(
            "validation: loss {:.4}, perplexity {:.2}, token accuracy {:.4}",
            v.loss,
            v.perplexity.unwrap_or(f64::NAN),
            v.token_accuracy.unwrap_or(f64::NAN)
        );
    }
    eprintln!("model saved to {}", args.out.display());
    Ok(())
}
