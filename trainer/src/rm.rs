//! `rewardlab-train rm` and `score`: reward models trained with InstructGPT's ranking loss,
//! evaluated on a prompt-split validation set, normalised on a reference set, and used to
//! score files.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::json;

use crate::checkpoint::{load_reward_model, save_model, ModelKind};
use crate::data::{join, read_rankings, read_score_rows, split_by_prompt, Ranking, ScoreRow};
use crate::gpt2::RewardModel;
use crate::loss::{batch_ranking_loss, RankGroup};
use crate::setup::{self, keep_last, pad, Source};
use crate::tokenizer::Tok;
use crate::train::{self, Done, MetricEvent, Metrics, Report, Stats, Task};

pub use rewardlab_protocol::RmArgs;

/// One ranking, tokenized: a sequence per response.
pub struct RankingEx {
    pub seqs: Vec<Vec<u32>>,
    pub ranks: Vec<i16>,
    pub margin: f64,
}

pub struct RewardTask<'a> {
    pub model: &'a RewardModel,
    pub device: Device,
    pub pad: u32,
    pub centring: f64,
}

impl Task for RewardTask<'_> {
    type Example = RankingEx;

    fn shape(&self, ex: &RankingEx) -> (usize, usize) {
        (ex.seqs.len(), ex.seqs.iter().map(Vec::len).max().unwrap_or(0))
    }

    fn units(&self, _ex: &RankingEx) -> f64 {
        1.0
    }

    fn loss(&self, batch: &[&RankingEx]) -> Result<(Tensor, Stats)> {
        let seqs: Vec<&[u32]> = batch.iter().flat_map(|e| e.seqs.iter().map(Vec::as_slice)).collect();
        let (ids, mask) = pad(&seqs, self.pad, &self.device)?;
        let rewards = self.model.forward(&ids, &mask)?;
        let mut groups = Vec::with_capacity(batch.len());
        let mut offset = 0;
        for e in batch {
            groups.push(RankGroup { offset, ranks: &e.ranks, margin: e.margin });
            offset += e.seqs.len();
        }
        let loss = batch_ranking_loss(&rewards, &groups, self.centring)?;
        let r: Vec<f32> = rewards.to_vec1()?;
        let mut stats =
            Stats { units: batch.len() as f64, loss_sum: loss.to_scalar::<f32>()? as f64, tokens: seqs.iter().map(|s| s.len()).sum(), ..Default::default() };
        for g in &groups {
            for (w, l) in g.pairs() {
                stats.counted += 1.0;
                stats.correct += f64::from(u8::from(r[w] > r[l]));
                stats.margin_sum += (r[w] - r[l]) as f64;
            }
        }
        Ok((loss, stats))
    }

    fn report(&self, s: &Stats) -> Report {
        let margin = s.margin_sum / s.counted.max(1.0);
        Report { loss: s.loss(), accuracy: Some(s.accuracy()), margin: Some(margin), rankings: Some(s.units), pairs: Some(s.counted), ..Report::default() }
    }
}

/// Tokenizes rankings (`prompt + response`, the last `max_len` tokens). Returns the examples
/// and how many sequences were truncated.
pub fn encode_rankings(tok: &Tok, rankings: &[Ranking], max_len: usize, margin_scale: f64) -> Result<(Vec<RankingEx>, usize)> {
    let texts: Vec<String> = rankings.iter().flat_map(|r| r.responses.iter().map(|x| join(&r.prompt, x))).collect();
    let mut ids = tok.encode_all(&texts)?.into_iter();
    let mut truncated = 0;
    let examples = rankings
        .iter()
        .map(|r| RankingEx {
            seqs: r
                .responses
                .iter()
                .map(|_| {
                    let (s, cut) = keep_last(ids.next().unwrap_or_default(), max_len);
                    truncated += usize::from(cut);
                    s
                })
                .collect(),
            ranks: r.ranks.clone(),
            margin: r.margin * margin_scale,
        })
        .collect();
    Ok((examples, truncated))
}

/// Raw rewards of texts, in order, in forward passes of at most `max_tokens` padded tokens.
pub fn score_texts(model: &RewardModel, tok: &Tok, texts: &[String], max_len: usize, max_tokens: usize, device: &Device) -> Result<Vec<f32>> {
    let seqs: Vec<Vec<u32>> = tok.encode_all(texts)?.into_iter().map(|s| keep_last(s, max_len).0).collect();
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let mut out = vec![0f32; seqs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && (end + 1 - start) * seqs[order[end]].len() <= max_tokens {
            end += 1;
        }
        let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| seqs[i].as_slice()).collect();
        let (ids, mask) = pad(&batch, tok.eos(), device)?;
        let rewards: Vec<f32> = model.forward(&ids, &mask)?.detach().to_vec1()?;
        for (k, &i) in order[start..end].iter().enumerate() {
            out[i] = rewards[k];
        }
        start = end;
    }
    Ok(out)
}

/// The texts of a reference file (every response of every row).
fn reference_texts(path: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for row in read_score_rows(path)? {
        match row {
            ScoreRow::Pair { prompt, chosen, rejected } => {
                texts.push(join(&prompt, &chosen));
                texts.push(join(&prompt, &rejected));
            }
            ScoreRow::Item { prompt, responses, .. } => texts.extend(responses.iter().map(|r| join(&prompt, r))),
        }
    }
    Ok(texts)
}

fn mean_std(xs: &[f32]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

pub fn run(args: &RmArgs) -> Result<()> {
    let opts = &args.train;
    let device = train::device(opts.device)?;
    let rankings = read_rankings(&args.data)?;
    if rankings.is_empty() {
        bail!("no rankings with a preference in {:?}", args.data)
    }
    let (train_r, val_r) = split_by_prompt(rankings, |r| r.prompt.as_str(), opts.val_fraction, opts.seed);
    let source = Source::new(opts.resume.as_deref(), args.init.as_deref())?;
    let texts = train_r.iter().flat_map(|r| std::iter::once(r.prompt.as_str()).chain(r.responses.iter().map(String::as_str)));
    let tok = setup::tokenizer(&source, texts, &args.model)?;
    let cfg = setup::config(&source, &args.model, &tok)?;
    let max_len = args.model.max_len.min(cfg.n_positions);
    let (model, params) = setup::variables(&source, &cfg, opts.seed, &device, |vb| RewardModel::new(&cfg, vb))?;
    let (train_x, cut_t) = encode_rankings(&tok, &train_r, max_len, args.margin_scale)?;
    let (val_x, cut_v) = encode_rankings(&tok, &val_r, max_len, args.margin_scale)?;
    let pairs: usize = train_r.iter().map(Ranking::pairs).sum();
    eprintln!(
        "reward model: {} training rankings ({pairs} pairs), {} validation rankings; {} sequences cut to {max_len} tokens; \
         {} parameters ({} layers, n_embd {}, vocab {}) on {:?}",
        train_x.len(),
        val_x.len(),
        cut_t + cut_v,
        params.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.vocab_size,
        device
    );
    setup::save_tokenizer(&tok, &args.out, max_len)?;
    let task = RewardTask { model: &model, device: device.clone(), pad: tok.eos(), centring: args.center_rewards };
    let mut metrics = Metrics::open(opts.metrics.as_deref())?;
    let from_scratch = crate::checkpoint::lineage_from_scratch(args.init.as_deref());
    let lr = opts.lr_or(from_scratch);
    let model_files = (params.as_slice(), &cfg, ModelKind::Reward);
    let Some(outcome) = train::run_command(&task, &train_x, &val_x, model_files, &tok, &source, opts, lr, &args.out, &mut metrics)? else {
        return Ok(());
    };
    // Normalise: the reference set's mean reward becomes 0.
    let reference = match &args.reference {
        Some(path) => reference_texts(path)?,
        None => train_r.iter().flat_map(|r| r.responses.iter().map(|x| join(&r.prompt, x))).collect(),
    };
    let raw = score_texts(&model, &tok, &reference, max_len, opts.max_tokens, &device)?;
    let (bias, std) = mean_std(&raw);
    let extra = json!({"rewardlab": {
        "reward_bias": bias, "reward_std": std, "max_len": max_len, "from_scratch": from_scratch,
        "reference": args.reference.as_ref().map_or("training responses".to_string(), |p| p.display().to_string()),
        "reference_texts": reference.len(), "validation": outcome.validation,
    }});
    save_model(&args.out, &cfg, ModelKind::Reward, &params, tok.eos(), Some(&extra))?;
    let done =
        Done { step: Some(outcome.state.step), reward_bias: Some(bias), reward_std: Some(std), validation: outcome.validation.clone(), ..Done::default() };
    metrics.emit(&MetricEvent::Done(done))?;
    match outcome.validation.as_ref().map(|v| &v.report) {
        Some(v) => eprintln!(
            "validation: accuracy {:.4}, mean margin {:.4}, loss {:.4} over {} pairs",
            v.accuracy.unwrap_or(f64::NAN),
            v.margin.unwrap_or(f64::NAN),
            v.loss,
            v.pairs.unwrap_or(f64::NAN)
        ),
        None => eprintln!("no validation split (--val-fraction 0)"),
    }
    eprintln!("reward bias {bias:.4} (std {std:.4}) over {} reference texts; model saved to {}", reference.len(), args.out.display());
    Ok(())
}

pub use rewardlab_protocol::ScoreArgs;

/// Scores every line of a file: `{"chosen_reward", "rejected_reward"}` for a preference row,
/// `{"id", "rewards"}` for an item, rewards shifted by the model's saved bias.
pub fn score(args: &ScoreArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let loaded = load_reward_model(&args.model, &device)?;
    let tok = Tok::load(&args.model)?;
    let rows = read_score_rows(&args.data)?;
    let mut texts = Vec::new();
    for row in &rows {
        match row {
            ScoreRow::Pair { prompt, chosen, rejected } => {
                texts.push(join(prompt, chosen));
                texts.push(join(prompt, rejected));
            }
            ScoreRow::Item { prompt, responses, .. } => texts.extend(responses.iter().map(|r| join(prompt, r))),
        }
    }
    let rewards = score_texts(&loaded.model, &tok, &texts, loaded.max_len, args.max_tokens, &device)?;
    let mut next = rewards.iter().map(|&r| r as f64 - loaded.bias);
    let mut out: Box<dyn Write> = if args.out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out))?))
    };
    for row in &rows {
        let line = match row {
            ScoreRow::Pair { .. } => json!({"chosen_reward": next.next(), "rejected_reward": next.next()}),
            ScoreRow::Item { id, responses, .. } => {
                json!({"id": id, "rewards": responses.iter().map(|_| next.next()).collect::<Vec<_>>()})
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("scored {} rows ({} texts) with {}", rows.len(), texts.len(), args.model.display());
    Ok(())
}
