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

/// One trained reward model, with the validation split it was measured on.
struct Member {
    model: RewardModel,
    tok: Tok,
    max_len: usize,
    bias: f64,
}

/// Trains one reward model on `train_r` (checked on `val_r`); `None` when stopped early.
fn train_member(args: &RmArgs, train_r: &[Ranking], val_r: &[Ranking]) -> Result<Option<Member>> {
    let opts = &args.train;
    let device = train::device(opts.device)?;
    let source = Source::new(opts.resume.as_deref(), args.init.as_deref())?;
    let texts = train_r.iter().flat_map(|r| std::iter::once(r.prompt.as_str()).chain(r.responses.iter().map(String::as_str)));
    let tok = setup::tokenizer(&source, texts, &args.model)?;
    crate::dist::agree("the tokenizer", tok.fingerprint())?;
    let cfg = setup::config(&source, &args.model, &tok)?;
    let max_len = args.model.max_len.min(cfg.n_positions);
    let (model, params) = setup::variables(&source, &cfg, opts.seed, &device, |vb| RewardModel::new(&cfg, vb))?;
    let (train_x, cut_t) = encode_rankings(&tok, train_r, max_len, args.margin_scale)?;
    let (val_x, cut_v) = encode_rankings(&tok, val_r, max_len, args.margin_scale)?;
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
    if crate::dist::is_root() {
        setup::save_tokenizer(&tok, &args.out, max_len)?;
    }
    let task = RewardTask { model: &model, device: device.clone(), pad: tok.eos(), centring: args.center_rewards };
    let mut metrics = Metrics::open(opts.metrics.as_deref())?;
    let from_scratch = crate::checkpoint::lineage_from_scratch(args.init.as_deref());
    let lr = opts.lr_or(from_scratch);
    let model_files = (params.as_slice(), &cfg, ModelKind::Reward);
    let Some(outcome) = train::run_command(&task, &train_x, &val_x, model_files, &tok, &source, opts, lr, &args.out, &mut metrics)? else {
        return Ok(None);
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
    if crate::dist::is_root() {
        save_model(&args.out, &cfg, ModelKind::Reward, &params, tok.eos(), Some(&extra))?;
    }
    // The next ensemble member reads the tokenizer rank 0 has just written.
    crate::dist::barrier();
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
    Ok(Some(Member { model, tok, max_len, bias }))
}

pub fn run(args: &RmArgs) -> Result<()> {
    if args.ensemble > 1 && args.merge.merge_with.is_some() {
        bail!("--merge-with: not with --ensemble {} (only the first member would be merged); merge a single reward model", args.ensemble)
    }
    let opts = &args.train;
    let rankings = read_rankings(&args.data)?;
    if rankings.is_empty() {
        bail!("no rankings with a preference in {:?}", args.data)
    }
    let (train_r, val_r) = split_by_prompt(rankings, |r| r.prompt.as_str(), opts.val_fraction, opts.seed);
    let Some(first) = train_member(args, &train_r, &val_r)? else { return Ok(()) };
    if args.ensemble <= 1 {
        return Ok(());
    }
    let mut members = vec![first];
    for i in 1..args.ensemble as u64 {
        let mut a = args.clone();
        a.out = ensemble_dir(&args.out).join(format!("member-{i}"));
        a.train.seed = opts.seed.wrapping_add(i);
        a.train.resume = None;
        a.train.metrics = None;
        a.model.tokenizer = Some(args.out.clone());
        a.init = args.init.clone();
        // A bootstrap resample of the training prompts (with replacement), seeded per member.
        let mut rng = crate::rng::Rng::derived(opts.seed, "bootstrap", i);
        let resample: Vec<Ranking> = (0..train_r.len()).map(|_| train_r[rng.below(train_r.len())].clone()).collect();
        eprintln!("ensemble member {i} of {}: seed {}, a bootstrap resample of {} training rankings", args.ensemble, a.train.seed, resample.len());
        match train_member(&a, &resample, &val_r)? {
            Some(m) => members.push(m),
            None => return Ok(()),
        }
    }
    let report = ensemble_report(&members, &val_r, opts.max_tokens, &train::device(opts.device)?)?;
    eprintln!(
        "ensemble of {}: validation accuracy {:.4} (members {}), expected calibration error {:.4} over {} pairs",
        members.len(),
        report["accuracy"].as_f64().unwrap_or(f64::NAN),
        report["member_accuracy"]
            .as_array()
            .map(|a| a.iter().map(|v| format!("{:.3}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        report["ece"].as_f64().unwrap_or(f64::NAN),
        report["pairs"],
    );
    // Recorded beside member 0's own figures, where `score` and people look.
    if !crate::dist::is_root() {
        return Ok(());
    }
    let path = args.out.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    config["rewardlab"]["ensemble"] = report;
    crate::checkpoint::write_atomic(&path, &serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// Where an ensemble's members other than the first are kept.
fn ensemble_dir(out: &Path) -> std::path::PathBuf {
    out.join("ensemble")
}

/// The ensemble's members: `dir` itself, then `dir/ensemble/member-1…` in order.
pub(crate) fn ensemble_members(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut members = vec![dir.to_path_buf()];
    for i in 1.. {
        let m = ensemble_dir(dir).join(format!("member-{i}"));
        if !m.join("config.json").exists() {
            break;
        }
        members.push(m);
    }
    members
}

/// Each member's (bias-shifted) rewards of `texts`.
fn member_rewards(members: &[Member], texts: &[String], max_tokens: usize, device: &Device) -> Result<Vec<Vec<f64>>> {
    members.iter().map(|m| Ok(score_texts(&m.model, &m.tok, texts, m.max_len, max_tokens, device)?.into_iter().map(|r| r as f64 - m.bias).collect())).collect()
}

/// Per text: the mean and standard deviation over the members' rewards.
fn spread(all: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let n = all.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let xs: Vec<f64> = all.iter().map(|v| v[i]).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            (mean, var.sqrt())
        })
        .collect()
}

/// The ensemble on the validation pairs: accuracy of the mean reward, each member's accuracy,
/// and the expected calibration error of P(chosen ≻ rejected) = σ(mean margin).
fn ensemble_report(members: &[Member], val: &[Ranking], max_tokens: usize, device: &Device) -> Result<serde_json::Value> {
    let mut texts = Vec::new();
    let mut pairs = Vec::new();
    for r in val {
        let base = texts.len();
        texts.extend(r.responses.iter().map(|x| join(&r.prompt, x)));
        for i in 0..r.ranks.len() {
            for j in 0..r.ranks.len() {
                if r.ranks[i] < r.ranks[j] {
                    pairs.push((base + i, base + j));
                }
            }
        }
    }
    // Each member scores the texts once; the ensemble's figures and each member's come from that.
    let all = member_rewards(members, &texts, max_tokens, device)?;
    let mean: Vec<f64> = spread(&all).into_iter().map(|(m, _)| m).collect();
    let margins = |r: &[f64]| -> Vec<f64> { pairs.iter().map(|&(c, w)| r[c] - r[w]).collect() };
    let (accuracy, ece) = calibration(&margins(&mean));
    let member_accuracy: Vec<f64> = all.iter().map(|r| calibration(&margins(r)).0).collect();
    Ok(json!({"members": members.len(), "pairs": pairs.len(), "accuracy": accuracy, "ece": ece, "member_accuracy": member_accuracy}))
}

/// For margins `reward(chosen) − reward(rejected)` of pairs whose chosen response is the better
/// one: the share ordered right, and the expected calibration error of P(chosen ≻ rejected) =
/// σ(margin) — the pairs put in 10 equal bins of confidence max(p, 1 − p) over [0.5, 1], the
/// gap between each bin's mean confidence and its share right, weighted by the bin's size.
pub fn calibration(margins: &[f64]) -> (f64, f64) {
    if margins.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = margins.len() as f64;
    let mut bins = [(0usize, 0f64, 0f64); 10];
    let mut right = 0usize;
    for &m in margins {
        let p = 1.0 / (1.0 + (-m).exp());
        let (conf, ok) = (p.max(1.0 - p), p > 0.5);
        right += usize::from(ok);
        let b = (((conf - 0.5) * 20.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += f64::from(u8::from(ok));
    }
    let ece = bins.iter().filter(|b| b.0 > 0).map(|&(k, conf, ok)| (k as f64 / n) * (conf / k as f64 - ok / k as f64).abs()).sum();
    (right as f64 / n, ece)
}

pub use rewardlab_protocol::ScoreArgs;

/// Scores every line of a file: `{"chosen_reward", "rejected_reward"}` for a preference row,
/// `{"id", "rewards"}` for an item, rewards shifted by the model's saved bias; an ensemble adds
/// the members' standard deviation (`…_std`, `reward_std`) and `member_rewards` (per response —
/// chosen then rejected for a pair — each member's reward).
pub fn score(args: &ScoreArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let mut members = Vec::new();
    for dir in ensemble_members(&args.model) {
        let loaded = load_reward_model(&dir, &device)?;
        members.push(Member { tok: Tok::load(&dir)?, model: loaded.model, max_len: loaded.max_len, bias: loaded.bias });
    }
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
    // One model: its rewards. An ensemble: the members' mean, and their standard deviation beside
    // (and for items each member's rewards, which queue strategies compare).
    let all = member_rewards(&members, &texts, args.max_tokens, &device)?;
    let rewards = spread(&all);
    let ensemble = members.len() > 1;
    let mut next = rewards.into_iter();
    let mut text_index = 0usize;
    let mut member_row = |n: usize| -> Vec<Vec<f64>> {
        let rows = (text_index..text_index + n).map(|t| all.iter().map(|m| m[t]).collect()).collect();
        text_index += n;
        rows
    };
    let mut out: Box<dyn Write> = if args.out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out))?))
    };
    for row in &rows {
        let line = match row {
            ScoreRow::Pair { .. } => {
                let (c, r) = (next.next().unwrap_or_default(), next.next().unwrap_or_default());
                let members = member_row(2);
                match ensemble {
                    false => json!({"chosen_reward": c.0, "rejected_reward": r.0}),
                    true => {
                        json!({"chosen_reward": c.0, "rejected_reward": r.0, "chosen_reward_std": c.1, "rejected_reward_std": r.1, "member_rewards": members})
                    }
                }
            }
            ScoreRow::Item { id, responses, .. } => {
                let scored: Vec<(f64, f64)> = responses.iter().map(|_| next.next().unwrap_or_default()).collect();
                match ensemble {
                    false => json!({"id": id, "rewards": scored.iter().map(|s| s.0).collect::<Vec<_>>()}),
                    true => {
                        json!({"id": id, "rewards": scored.iter().map(|s| s.0).collect::<Vec<_>>(), "reward_std": scored.iter().map(|s| s.1).collect::<Vec<_>>(),
                               "member_rewards": member_row(responses.len())})
                    }
                }
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("scored {} rows ({} texts) with {} ({} member{})", rows.len(), texts.len(), args.model.display(), members.len(), if ensemble { "s" } else { "" });
    Ok(())
}

#[cfg(test)]
mod calibration_tests {
    use super::calibration;

    #[test]
    fn calibration_is_the_gap_between_confidence_and_the_share_right() {
        let l3 = 3f64.ln(); // σ(ln 3) = 0.75
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let (acc, ece) = calibration(&[l3]);
        assert!(close(acc, 1.0) && close(ece, 0.25), "{acc} {ece}");
        let (acc, ece) = calibration(&[l3, -l3]);
        assert!(close(acc, 0.5) && close(ece, 0.25), "both at confidence 0.75, half right: {acc} {ece}");
        let (acc, ece) = calibration(&[0.0, 0.0]);
        assert!(close(acc, 0.0) && close(ece, 0.5), "a coin toss counted wrong at confidence 0.5: {acc} {ece}");
        // Three at 0.75 right and one at 0.75 wrong: calibrated.
        let (acc, ece) = calibration(&[l3, l3, l3, -l3]);
        assert!(close(acc, 0.75) && close(ece, 0.0), "{acc} {ece}");
        assert!(calibration(&[]).0.is_nan());
    }
}
