//! Model directories in Hugging Face's layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`) with the same tensor names, so what we save loads in `transformers`
//! (`GPT2ForSequenceClassification`, `GPT2LMHeadModel`) and a Hugging Face GPT-2 checkpoint
//! loads here; and files written atomically (temporary name, fsync, rename).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::gpt2::{Config, RewardModel};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `GPT2ForSequenceClassification` with one label.
    Reward,
    /// `GPT2LMHeadModel`, LM head tied to the token embeddings.
    Lm,
}

/// What `GPT2ForSequenceClassification` / `GPT2LMHeadModel` read from `config.json`. `extra`
/// (an object) is merged in: rewardlab keeps its reward normalisation under `"rewardlab"`.
pub fn hf_config_json(cfg: &Config, kind: ModelKind, eos: u32, extra: Option<&Value>) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    v["model_type"] = "gpt2".into();
    v["n_ctx"] = cfg.n_positions.into();
    v["n_inner"] = Value::Null;
    v["activation_function"] = "gelu_new".into();
    for p in ["resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"] {
        v[p] = 0.0.into();
    }
    v["bos_token_id"] = eos.into();
    v["eos_token_id"] = eos.into();
    v["pad_token_id"] = eos.into();
    v["tie_word_embeddings"] = true.into();
    match kind {
        ModelKind::Reward => {
            v["architectures"] = serde_json::json!(["GPT2ForSequenceClassification"]);
            v["num_labels"] = 1.into();
            v["id2label"] = serde_json::json!({"0": "LABEL_0"});
            v["label2id"] = serde_json::json!({"LABEL_0": 0});
        }
        ModelKind::Lm => v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]),
    }
    if let Some(Value::Object(extra)) = extra {
        for (k, x) in extra {
            v[k] = x.clone();
        }
    }
    v
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// fsyncs a directory, so renames inside it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

/// A checkpoint directory is complete once this marker file exists in it.
pub const MARKER: &str = "COMPLETE";

/// Writes the checkpoint `root/name`: `write` fills a temporary directory, whose entries are
/// fsynced before it is renamed into place, then the completion marker is written last; only
/// the newest `keep` complete checkpoints are kept. A crash at any point leaves either no
/// `name` or an incomplete one that resuming ignores.
pub fn commit_checkpoint(root: &Path, name: &str, keep: usize, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!("{name}.tmp"));
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    write(&tmp)?;
    for entry in std::fs::read_dir(&tmp)? {
        File::open(entry?.path())?.sync_all()?;
    }
    sync_dir(&tmp)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    sync_dir(root)?;
    write_atomic(&dir.join(MARKER), b"")?;
    sync_dir(&dir)?;
    let mut complete: Vec<std::path::PathBuf> = std::fs::read_dir(root)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join(MARKER).exists()).collect();
    complete.sort();
    for old in &complete[..complete.len().saturating_sub(keep.max(1))] {
        std::fs::remove_dir_all(old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// Writes `tensors` as safetensors to `path`, atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    File::open(&tmp).and_then(|f| f.sync_all())?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {}", tmp.display()))
}

/// Writes a model directory: `config.json` and `model.safetensors` with every parameter under
/// its Hugging Face name (the LM head is tied, so it is not stored, as Hugging Face does).
pub fn save_model(dir: &Path, cfg: &Config, kind: ModelKind, params: &[(String, Var)], eos: u32, extra: Option<&Value>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    save_tensors(&dir.join("model.safetensors"), &tensors)?;
    write_atomic(&dir.join("config.json"), &serde_json::to_vec_pretty(&hf_config_json(cfg, kind, eos, extra))?)?;
    sync_dir(dir)
}

/// Reads `dir/config.json`: the model's shape and the whole JSON (for rewardlab's extras).
pub fn read_config(dir: &Path) -> Result<(Config, Value)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    let cfg: Config = serde_json::from_value(raw.clone()).with_context(|| format!("{}: not a GPT-2 config", path.display()))?;
    if raw.get("model_type").and_then(Value::as_str).is_some_and(|t| t != "gpt2") {
        bail!("{}: model_type {} is not gpt2", path.display(), raw["model_type"])
    }
    Ok((cfg, raw))
}

/// Whether the model in `dir` was trained from scratch by rewardlab (its `config.json` says
/// `"rewardlab": {"from_scratch": true}`), rather than fine-tuned from a pretrained model: its
/// default learning rates are those of a small model learning from nothing.
pub fn trained_from_scratch(dir: &Path) -> bool {
    read_config(dir).is_ok_and(|(_, raw)| raw["rewardlab"]["from_scratch"] == Value::Bool(true))
}

/// Whether a model started from `init` (or from nothing) descends from a from-scratch model.
pub fn lineage_from_scratch(init: Option<&Path>) -> bool {
    init.is_none_or(trained_from_scratch)
}

/// Copies the weights of `dir/model.safetensors` into `params` (names with or without the
/// `transformer.` prefix, as GPT-2 checkpoints on the Hub are saved either way). Returns the
/// names of parameters the file does not have (a new reward head), which keep their values.
pub fn load_weights(dir: &Path, params: &[(String, Var)]) -> Result<Vec<String>> {
    let path = dir.join("model.safetensors");
    let device = params.first().map(|p| p.1.device().clone()).unwrap_or(Device::Cpu);
    let stored = candle_core::safetensors::load(&path, &device).with_context(|| format!("cannot read {}", path.display()))?;
    let mut fresh = Vec::new();
    for (name, var) in params {
        let found = stored.get(name).or_else(|| name.strip_prefix("transformer.").and_then(|n| stored.get(n)));
        match found {
            Some(t) if t.shape() == var.shape() => var.set(&t.to_dtype(var.dtype())?)?,
            Some(t) => bail!("{}: {name} has shape {:?}, the model needs {:?}", path.display(), t.dims(), var.dims()),
            None => fresh.push(name.clone()),
        }
    }
    if fresh.iter().any(|n| n.starts_with("transformer.")) {
        bail!("{}: has no {} (is it a GPT-2 checkpoint?)", path.display(), fresh.join(", "))
    }
    Ok(fresh)
}

/// A reward model directory loaded for scoring: frozen weights and the normalisation bias.
pub struct LoadedReward {
    pub cfg: Config,
    pub model: RewardModel,
    /// Subtracted from raw scores so the reference set averages 0 (0 if none was saved).
    pub bias: f64,
    /// The longest sequence it was trained on (texts keep their last `max_len` tokens).
    pub max_len: usize,
}

/// Loads a reward model directory (ours or Hugging Face's) as frozen tensors on `device`.
pub fn load_reward_model(dir: &Path, device: &Device) -> Result<LoadedReward> {
    let (cfg, raw) = read_config(dir)?;
    let bytes = std::fs::read(dir.join("model.safetensors")).with_context(|| format!("cannot read {}", dir.join("model.safetensors").display()))?;
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
    let model = RewardModel::new(&cfg, vb).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    let bias = raw.pointer("/rewardlab/reward_bias").and_then(Value::as_f64).unwrap_or(0.0);
    let max_len = raw.pointer("/rewardlab/max_len").and_then(Value::as_u64).map_or(cfg.n_positions, |m| m as usize);
    let max_len = max_len.min(cfg.n_positions);
    Ok(LoadedReward { cfg, model, bias, max_len })
}

/// The checkpoint `--resume PATH` names: PATH itself when it is a complete checkpoint, else
/// the latest complete one in `PATH/checkpoints`.
pub fn find_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(MARKER).exists() {
        return Ok(path.to_path_buf());
    }
    let dir = path.join("checkpoints");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("--resume {}: no checkpoint there and no {}", path.display(), dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(MARKER).exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| anyhow!("--resume {}: no complete checkpoint in {}", path.display(), dir.display()))
}
