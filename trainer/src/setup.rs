//! What every trainer does before its loop: the model-size flags, a tokenizer and a model from
//! a checkpoint to resume, a Hugging Face directory to start from, or from scratch; padding
//! token sequences into tensors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::checkpoint::{load_weights, read_config};
use crate::gpt2::{init_weights, Config};
use crate::optim::named_params;
use crate::tokenizer::Tok;

pub use rewardlab_protocol::ModelOpts;

/// Where the weights come from.
pub enum Source {
    Resume(PathBuf),
    Init(PathBuf),
    Scratch,
}

impl Source {
    pub fn new(resume: Option<&Path>, init: Option<&Path>) -> Result<Self> {
        Ok(match (resume, init) {
            (Some(r), _) => Source::Resume(crate::checkpoint::find_checkpoint(r)?),
            (None, Some(i)) => Source::Init(i.to_path_buf()),
            (None, None) => Source::Scratch,
        })
    }

    pub fn dir(&self) -> Option<&Path> {
        match self {
            Source::Resume(d) | Source::Init(d) => Some(d),
            Source::Scratch => None,
        }
    }
}

/// The tokenizer: the checkpoint's or the init directory's, else `--tokenizer`'s, else a new
/// byte-level BPE trained on `texts`.
pub fn tokenizer<'a>(source: &Source, texts: impl Iterator<Item = &'a str> + Send, opts: &ModelOpts) -> Result<Tok> {
    match (source.dir(), &opts.tokenizer) {
        (Some(dir), _) => Tok::load(dir),
        (None, Some(dir)) => Tok::load(dir).with_context(|| format!("--tokenizer {}", dir.display())),
        (None, None) => Tok::train(texts, opts.vocab_size),
    }
}

/// The model's config: the checkpoint's or init directory's `config.json`, or from the flags.
pub fn config(source: &Source, opts: &ModelOpts, tok: &Tok) -> Result<Config> {
    let cfg = match source.dir() {
        Some(dir) => read_config(dir)?.0,
        None => Config {
            vocab_size: tok.vocab_size(),
            n_positions: opts.max_len,
            n_embd: opts.n_embd,
            n_layer: opts.n_layer,
            n_head: opts.n_head,
            layer_norm_epsilon: 1e-5,
        },
    };
    if cfg.n_head == 0 || cfg.n_embd % cfg.n_head != 0 {
        bail!("n_embd {} must be a multiple of n_head {}", cfg.n_embd, cfg.n_head)
    }
    if tok.vocab_size() > cfg.vocab_size {
        bail!("the tokenizer has {} tokens but the model only {}", tok.vocab_size(), cfg.vocab_size)
    }
    Ok(cfg)
}

/// Builds a model's variables with `build`, then gives them their values: the checkpoint's,
/// the init directory's (parameters it lacks, such as a new reward head, are initialised from
/// the seed), or all from the seed.
pub fn variables<M>(
    source: &Source,
    cfg: &Config,
    seed: u64,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<M>,
) -> Result<(M, Vec<(String, Var)>)> {
    let varmap = VarMap::new();
    let model = build(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    let params = named_params(&varmap);
    match source {
        Source::Resume(dir) => {
            let fresh = load_weights(dir, &params)?;
            if !fresh.is_empty() {
                bail!("{}: the checkpoint lacks {}", dir.display(), fresh.join(", "))
            }
        }
        Source::Init(dir) => {
            let fresh = load_weights(dir, &params).with_context(|| format!("--init {}", dir.display()))?;
            let fresh: Vec<(String, Var)> = params.iter().filter(|(n, _)| fresh.contains(n)).cloned().collect();
            init_weights(&fresh, cfg, seed)?;
        }
        Source::Scratch => init_weights(&params, cfg, seed)?,
    }
    Ok((model, params))
}

/// A frozen copy of a model for inference: `build` over the parameters' current values as
/// plain tensors, which record no graph. They share storage with the variables, so the copy
/// follows later optimizer steps; take it where the weights should be read as they are now.
pub fn frozen<M>(params: &[(String, Var)], device: &Device, build: impl FnOnce(VarBuilder) -> candle_core::Result<M>) -> Result<M> {
    let tensors = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    Ok(build(VarBuilder::from_tensors(tensors, DType::F32, device))?)
}

/// Keeps the last `max_len` tokens (the end of the response, where a reward is read).
pub fn keep_last(mut ids: Vec<u32>, max_len: usize) -> (Vec<u32>, bool) {
    if ids.len() <= max_len {
        return (ids, false);
    }
    ids.drain(..ids.len() - max_len);
    (ids, true)
}

/// Right-pads sequences into `ids` `[n, t]` (u32, padded with `pad`) and `mask` `[n, t]`
/// (f32, 1 for real tokens).
pub fn pad(seqs: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut mask = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, t - s.len()));
        mask.extend(std::iter::repeat_n(1f32, s.len()));
        mask.extend(std::iter::repeat_n(0f32, t - s.len()));
    }
    let n = seqs.len();
    Ok((Tensor::from_vec(ids, (n, t), device)?, Tensor::from_vec(mask, (n, t), device)?))
}

/// Writes the tokenizer and the files `AutoTokenizer` wants beside it.
pub fn save_tokenizer(tok: &Tok, dir: &Path, max_len: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tok.save(dir)?;
    crate::tokenizer::write_hf_tokenizer_files(dir, max_len)
}
