//! Model directories in Hugging Face's layout: `config.json` and `model.safetensors`, with the
//! same tensor names, so what we save loads in `transformers` and a Hugging Face checkpoint
//! loads here.

use std::path::Path;

use candle_core::{DType, Device, Result};
use candle_nn::{VarBuilder, VarMap};

use crate::gpt2::{Config, RewardModel};

/// The `config.json` of a GPT-2 reward model as `GPT2ForSequenceClassification` reads it.
pub fn reward_config_json(cfg: &Config) -> serde_json::Value {
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    v["model_type"] = "gpt2".into();
    v["architectures"] = serde_json::json!(["GPT2ForSequenceClassification"]);
    v["num_labels"] = 1.into();
    v["n_inner"] = serde_json::Value::Null;
    v["activation_function"] = "gelu_new".into();
    v["resid_pdrop"] = 0.0.into();
    v["embd_pdrop"] = 0.0.into();
    v["attn_pdrop"] = 0.0.into();
    v
}

/// Writes `config.json` and `model.safetensors` (every variable of `varmap`) into `dir`.
pub fn save_reward_model(dir: &Path, cfg: &Config, varmap: &VarMap) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = serde_json::to_vec_pretty(&reward_config_json(cfg)).map_err(candle_core::Error::wrap)?;
    std::fs::write(dir.join("config.json"), config)?;
    varmap.save(dir.join("model.safetensors"))
}

/// Loads a reward model directory (ours or Hugging Face's) as frozen tensors on `device`.
pub fn load_reward_model(dir: &Path, device: &Device) -> Result<(Config, RewardModel)> {
    let text = std::fs::read_to_string(dir.join("config.json"))?;
    let cfg: Config = serde_json::from_str(&text).map_err(candle_core::Error::wrap)?;
    let vb = read_safetensors(dir, device)?;
    let model = RewardModel::new(&cfg, vb)?;
    Ok((cfg, model))
}

/// Reads `model.safetensors` into memory (no mmap, so no `unsafe`; the crate denies it).
fn read_safetensors(dir: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let bytes = std::fs::read(dir.join("model.safetensors"))?;
    VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
}
