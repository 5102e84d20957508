//! Weight interpolation against forgetting (Lin et al. 2024, "Mitigating the alignment tax of
//! RLHF": averaging the weights before and after training keeps more of the old model's
//! abilities than replay or penalties): `--merge-with DIR --merge-alpha A` on `rm`, `sft`, `dpo`
//! and `ppo` saves θ = (1 − A)·θ_new + A·θ_old, and `merge-sweep` measures a list of α on
//! preference pairs (a frozen regression set or a validation split) and picks the best.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};

use crate::checkpoint::{read_config, save_tensors, write_atomic};
use crate::data::{join, read_rankings, Demonstration};
use crate::gpt2::{Config, LmModel, RewardModel};
use crate::optim::named_params;
use crate::tokenizer::Tok;

pub use rewardlab_protocol::{MergeOpts, MergeSweepArgs};

/// Where `--merge-with` keeps the trained (unmerged) weights beside the merged model.
pub const UNMERGED: &str = "unmerged.safetensors";

/// The weights file of a model directory holding the model as trained: its unmerged weights
/// when it was merged, else `model.safetensors`.
fn trained_weights(dir: &Path) -> PathBuf {
    match dir.join(UNMERGED).exists() {
        true => dir.join(UNMERGED),
        false => dir.join("model.safetensors"),
    }
}

fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).with_context(|| format!("cannot read {}", path.display()))
}

/// Checks that two model directories can be interpolated: the same architecture, shape and
/// tokenizer, and the same tensors. The error names what differs.
pub fn check_compatible(new: &Path, old: &Path) -> Result<()> {
    let (_, a) = read_config(new)?;
    let (_, b) = read_config(old)?;
    for key in ["architectures", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head"] {
        if a.get(key) != b.get(key) {
            bail!(
                "cannot merge {} with {}: they differ in {key} ({} against {}); both need the same architecture and tokenizer",
                new.display(),
                old.display(),
                a.get(key).unwrap_or(&Value::Null),
                b.get(key).unwrap_or(&Value::Null)
            )
        }
    }
    let (ta, tb) = (Tok::load(new)?, Tok::load(old)?);
    if !ta.same_vocabulary(&tb) {
        bail!(
            "cannot merge {} with {}: their tokenizers differ ({} and {} tokens, or the same tokens under other ids); both need the same tokenizer",
            new.display(),
            old.display(),
            ta.vocab_size(),
            tb.vocab_size()
        )
    }
    Ok(())
}

/// θ = (1 − α)·new + α·old, tensor by tensor (computed in f64, stored in each tensor's dtype);
/// α = 0 and α = 1 copy one side bit for bit.
pub fn interpolate(new: &HashMap<String, Tensor>, old: &HashMap<String, Tensor>, alpha: f64) -> Result<HashMap<String, Tensor>> {
    if let Some(name) = old.keys().find(|k| !new.contains_key(*k)) {
        bail!("cannot merge: the old model has a tensor {name} the new one lacks")
    }
    let mut out = HashMap::with_capacity(new.len());
    for (name, a) in new {
        let b = old.get(name).ok_or_else(|| anyhow!("cannot merge: the new model has a tensor {name} the old one lacks"))?;
        if a.shape() != b.shape() {
            bail!("cannot merge: {name} has shape {:?} in the new model and {:?} in the old", a.dims(), b.dims())
        }
        let merged = if alpha == 0.0 {
            a.clone()
        } else if alpha == 1.0 {
            b.to_dtype(a.dtype())?
        } else {
            let x = a.to_dtype(DType::F64)?;
            let y = b.to_dtype(DType::F64)?;
            (x.affine(1.0 - alpha, 0.0)? + y.affine(alpha, 0.0)?)?.to_dtype(a.dtype())?
        };
        out.insert(name.clone(), merged);
    }
    Ok(out)
}

/// The merged weights of two model directories (checked compatible first).
pub fn merged_weights(new: &Path, old: &Path, alpha: f64) -> Result<HashMap<String, Tensor>> {
    check_compatible(new, old)?;
    interpolate(&load_tensors(&trained_weights(new))?, &load_tensors(&trained_weights(old))?, alpha)
}

/// After training into `out`: replaces its weights with the merge (the trained ones kept in
/// `out/unmerged.safetensors`, so merging again starts from them) and records it in
/// `config.json` under `rewardlab.merge`. A reward model's normalisation bias is interpolated
/// the same way (an approximation: the merged model was not re-scored on the reference set).
pub fn apply(out: &Path, opts: &MergeOpts) -> Result<()> {
    let (Some(old), Some(alpha)) = (&opts.merge_with, opts.merge_alpha) else { return Ok(()) };
    let merged = merged_weights(out, old, alpha).context("--merge-with")?;
    let unmerged = out.join(UNMERGED);
    if !unmerged.exists() {
        std::fs::copy(out.join("model.safetensors"), &unmerged).with_context(|| format!("cannot write {}", unmerged.display()))?;
    }
    save_tensors(&out.join("model.safetensors"), &merged)?;
    let (_, mut config) = read_config(out)?;
    let (_, old_config) = read_config(old)?;
    let bias = |c: &Value| c.pointer("/rewardlab/reward_bias").and_then(Value::as_f64);
    let mut record = json!({"with": old.display().to_string(), "alpha": alpha, "unmerged": UNMERGED});
    if let (Some(bn), Some(bo)) = (record_bias(&config, bias), bias(&old_config)) {
        config["rewardlab"]["reward_bias"] = json!((1.0 - alpha) * bn + alpha * bo);
        record["unmerged_reward_bias"] = json!(bn);
    }
    if !config["rewardlab"].is_object() {
        config["rewardlab"] = json!({});
    }
    config["rewardlab"]["merge"] = record;
    write_atomic(&out.join("config.json"), &serde_json::to_vec_pretty(&config)?)?;
    eprintln!("merged with {} at α {alpha}: θ = {}·θ_new + {alpha}·θ_old saved to {}", old.display(), 1.0 - alpha, out.display());
    Ok(())
}

/// The new model's own bias: the one recorded before an earlier merge, else the current one.
fn record_bias(config: &Value, bias: impl Fn(&Value) -> Option<f64>) -> Option<f64> {
    config.pointer("/rewardlab/merge/unmerged_reward_bias").and_then(Value::as_f64).or_else(|| bias(config))
}

/// Gives a freshly built model's variables the values of `tensors` (names with or without the
/// `transformer.` prefix, as [`crate::checkpoint::load_weights`] reads them).
fn set_weights(varmap: &VarMap, tensors: &HashMap<String, Tensor>, device: &Device) -> Result<()> {
    for (name, var) in named_params(varmap) {
        let t = tensors.get(&name).or_else(|| name.strip_prefix("transformer.").and_then(|n| tensors.get(n)));
        let t = t.ok_or_else(|| anyhow!("the merged weights lack {name}"))?;
        var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
    }
    Ok(())
}

/// A pair's texts: prompt, chosen response, rejected response.
pub(crate) type Pair = (String, String, String);

pub(crate) fn read_pairs(paths: &[PathBuf]) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for r in read_rankings(paths)? {
        for i in 0..r.ranks.len() {
            for j in 0..r.ranks.len() {
                if r.ranks[i] < r.ranks[j] {
                    pairs.push((r.prompt.clone(), r.responses[i].clone(), r.responses[j].clone()));
                }
            }
        }
    }
    Ok(pairs)
}

/// What a model directory is, for evaluating it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reward,
    Policy,
}

fn kind_of(config: &Value) -> Result<Kind> {
    match config["architectures"][0].as_str() {
        Some("GPT2ForSequenceClassification") => Ok(Kind::Reward),
        Some("GPT2LMHeadModel") => Ok(Kind::Policy),
        other => bail!("cannot evaluate a model of architecture {other:?} (a GPT2ForSequenceClassification or GPT2LMHeadModel is needed)"),
    }
}

/// A merged model's figure on the pairs: a reward model's pairwise accuracy (the chosen
/// response scored higher), a policy's share of pairs whose chosen response has the higher
/// mean log-probability per response token. Returns (accuracy, mean margin).
#[allow(clippy::too_many_arguments)]
fn evaluate(
    kind: Kind,
    cfg: &Config,
    raw: &Value,
    tok: &Tok,
    tensors: &HashMap<String, Tensor>,
    pairs: &[Pair],
    max_tokens: usize,
    device: &Device,
) -> Result<(f64, f64)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let margins: Vec<f64> = match kind {
        Kind::Reward => {
            let model = RewardModel::new(cfg, vb)?;
            set_weights(&varmap, tensors, device)?;
            let max_len = raw.pointer("/rewardlab/max_len").and_then(Value::as_u64).map_or(cfg.n_positions, |m| m as usize).min(cfg.n_positions);
            let texts: Vec<String> = pairs.iter().flat_map(|(p, c, r)| [join(p, c), join(p, r)]).collect();
            let scores = crate::rm::score_texts(&model, tok, &texts, max_len, max_tokens, device)?;
            scores.chunks(2).map(|s| (s[0] - s[1]) as f64).collect()
        }
        Kind::Policy => {
            let model = LmModel::new(cfg, vb)?;
            set_weights(&varmap, tensors, device)?;
            let max_len = raw.pointer("/rewardlab/max_len").and_then(Value::as_u64).map_or(cfg.n_positions, |m| m as usize).min(cfg.n_positions);
            let demos: Vec<Demonstration> = pairs
                .iter()
                .flat_map(|(p, c, r)| [Demonstration { prompt: p.clone(), completion: c.clone() }, Demonstration { prompt: p.clone(), completion: r.clone() }])
                .collect();
            let (encoded, _) = crate::sft::encode_demonstrations(tok, &demos, max_len)?;
            let per_batch = (max_tokens / max_len.max(1)).max(1);
            let mut means = Vec::with_capacity(encoded.len());
            for chunk in encoded.chunks(per_batch) {
                let refs: Vec<&crate::sft::DemoEx> = chunk.iter().collect();
                let (logits, targets, mask) = crate::sft::lm_forward(&model, &refs, tok.eos(), device)?;
                let sums: Vec<f32> = crate::loss::sequence_logprobs(&logits, &targets, &mask)?.to_vec1()?;
                for (e, s) in chunk.iter().zip(sums) {
                    means.push(s as f64 / (e.ids.len() - e.prompt_len).max(1) as f64);
                }
            }
            means.chunks(2).map(|m| m[0] - m[1]).collect()
        }
    };
    let n = margins.len().max(1) as f64;
    Ok((margins.iter().filter(|m| **m > 0.0).count() as f64 / n, margins.iter().sum::<f64>() / n))
}

/// `rewardlab-train merge-sweep`: each α's figure on the pairs, the best α (the highest
/// accuracy; on a tie the smallest α, the most of the new model), and optionally the best
/// merge written as a model directory.
pub fn sweep(args: &MergeSweepArgs) -> Result<()> {
    let device = crate::train::device(args.device)?;
    check_compatible(&args.new, &args.old)?;
    let (cfg, raw) = read_config(&args.new)?;
    let kind = kind_of(&raw)?;
    let tok = Tok::load(&args.new)?;
    let pairs = read_pairs(&args.data)?;
    if pairs.is_empty() {
        bail!("no preference pairs in {:?}", args.data)
    }
    if args.alphas.is_empty() || args.alphas.len() > 101 {
        bail!("--alphas: expected 1 to 101 values, got {}", args.alphas.len())
    }
    let (new_w, old_w) = (load_tensors(&trained_weights(&args.new))?, load_tensors(&trained_weights(&args.old))?);
    let mut results = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    for &alpha in &args.alphas {
        let merged = interpolate(&new_w, &old_w, alpha)?;
        let (accuracy, margin) = evaluate(kind, &cfg, &raw, &tok, &merged, &pairs, args.max_tokens, &device)?;
        eprintln!("α {alpha}: accuracy {accuracy:.4}, mean margin {margin:.4} over {} pairs", pairs.len());
        results.push(json!({"alpha": alpha, "accuracy": accuracy, "margin": margin}));
        let better = match best {
            None => true,
            Some((a, acc)) => accuracy > acc || (accuracy == acc && alpha < a),
        };
        if better {
            best = Some((alpha, accuracy));
        }
    }
    let (best_alpha, best_accuracy) = best.expect("at least one α");
    let metric = match kind {
        Kind::Reward => "pairwise accuracy of the reward model",
        Kind::Policy => "share of pairs whose chosen response has the higher mean log-probability per token",
    };
    let report = json!({
        "new": args.new.display().to_string(), "old": args.old.display().to_string(), "metric": metric, "pairs": pairs.len(),
        "results": results, "best_alpha": best_alpha, "best_accuracy": best_accuracy,
    });
    eprintln!("best α {best_alpha}: accuracy {best_accuracy:.4}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        for f in std::fs::read_dir(&args.new)? {
            let f = f?;
            let name = f.file_name();
            let name = name.to_string_lossy();
            if f.file_type()?.is_file() && name != "model.safetensors" && name != UNMERGED && name != "config.json" {
                std::fs::copy(f.path(), out.join(&*name))?;
            }
        }
        save_tensors(&out.join("model.safetensors"), &interpolate(&new_w, &old_w, best_alpha)?)?;
        let mut config = raw.clone();
        if !config["rewardlab"].is_object() {
            config["rewardlab"] = json!({});
        }
        config["rewardlab"]["merge"] =
            json!({"with": args.old.display().to_string(), "alpha": best_alpha, "new": args.new.display().to_string(), "sweep": report["results"]});
        write_atomic(&out.join("config.json"), &serde_json::to_vec_pretty(&config)?)?;
        eprintln!("merged model at α {best_alpha} saved to {}", out.display());
    }
    match args.report.as_deref() {
        None => {}
        Some("-") => println!("{report}"),
        Some(path) => write_atomic(Path::new(path), format!("{report}\n").as_bytes())?,
    }
    Ok(())
}
