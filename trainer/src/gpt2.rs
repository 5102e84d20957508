//! GPT-2 as in Hugging Face `transformers` (`GPT2Model`, `GPT2ForSequenceClassification`),
//! written with differentiable candle ops only, so every parameter receives its gradient.
//! Parameter names equal Hugging Face's: `transformer.wte`, `transformer.wpe`,
//! `transformer.h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}`, `transformer.ln_f`,
//! and `score` for the reward head. Hugging Face's `Conv1D` stores weights as `[in, out]`.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::{Deserialize, Serialize};

/// The fields of Hugging Face's GPT-2 `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl Config {
    /// A small model for tests and for training from scratch on a CPU.
    pub fn tiny(vocab_size: usize) -> Self {
        Self { vocab_size, n_positions: 64, n_embd: 32, n_layer: 2, n_head: 4, layer_norm_epsilon: 1e-5 }
    }
}

/// Hugging Face's `Conv1D`: `y = x · W + b` with `W` of shape `[in, out]`.
#[derive(Debug, Clone)]
struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    fn new(n_in: usize, n_out: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((n_in, n_out), "weight", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?;
        let bias = vb.get_with_hints(n_out, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias })
    }
}

impl Module for Conv1D {
    /// `[.., in]` → `[.., out]`, as one 2-D matrix product over all positions (a broadcast
    /// batched product would make the weight's gradient a sum of per-batch copies), in one
    /// graph node (`ops::linear`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::linear(x, &self.weight, &self.bias)
    }
}

/// Layer norm with a backward pass (candle's fused kernel has none): `ops::layer_norm`.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    /// Normalises the last dimension: `[.., d]` → `[.., d]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: usize,
}

impl Attention {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            c_attn: Conv1D::new(cfg.n_embd, 3 * cfg.n_embd, vb.pp("c_attn"))?,
            c_proj: Conv1D::new(cfg.n_embd, cfg.n_embd, vb.pp("c_proj"))?,
            n_head: cfg.n_head,
        })
    }

    /// Causal self-attention, no attention to padding keys.
    fn forward(&self, x: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.n_head;
        let qkv = self.c_attn.forward(x)?;
        let scale = 1.0 / (hd as f64).sqrt();
        // The fused kernel splits and joins the heads itself.
        if let AttentionMask::Keys(keys) = mask {
            if let Some(out) = crate::ops::qkv_attention(&qkv, keys, self.n_head, scale)? {
                return self.c_proj.forward(&out);
            }
        }
        let split = |i: usize| qkv.narrow(D::Minus1, i * d, d)?.reshape((b, t, self.n_head, hd))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let attended = match mask {
            AttentionMask::Keys(keys) => crate::ops::causal_masked_softmax(&q.matmul(&k.t()?)?, keys, scale)?.matmul(&v)?,
            AttentionMask::Bias(bias) => crate::ops::softmax_last_dim(&(q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?)?.matmul(&v)?,
        };
        let out = attended.transpose(1, 2)?.reshape((b, t, d))?;
        self.c_proj.forward(&out)
    }

    /// Inference with a key/value cache: `x` holds the new positions only; their keys and
    /// values are appended to `cache`, and `bias` `[b, 1, t_new, t_total]` masks the rest.
    fn forward_cached(&self, x: &Tensor, bias: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.n_head;
        let qkv = self.c_attn.forward(x)?;
        let split = |i: usize| qkv.narrow(D::Minus1, i * d, d)?.reshape((b, t, self.n_head, hd))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        *cache = Some((k, v));
        self.c_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    c_proj: Conv1D,
}

impl Block {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::new(cfg.n_embd, cfg.layer_norm_epsilon, vb.pp("ln_1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::new(cfg.n_embd, cfg.layer_norm_epsilon, vb.pp("ln_2"))?,
            c_fc: Conv1D::new(cfg.n_embd, 4 * cfg.n_embd, vb.pp("mlp").pp("c_fc"))?,
            c_proj: Conv1D::new(4 * cfg.n_embd, cfg.n_embd, vb.pp("mlp").pp("c_proj"))?,
        })
    }

    fn forward_cached(&self, x: &Tensor, bias: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let x = (x + self.attn.forward_cached(&self.ln_1.forward(x)?, bias, cache)?)?;
        let h = crate::ops::gelu(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?;
        x + self.c_proj.forward(&h)?
    }

    fn forward(&self, x: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
        // On the CPU the whole block is one fused node (`ops::block`).
        if let AttentionMask::Keys(keys) = mask {
            let (a, m) = (&self.attn, (&self.c_fc, &self.c_proj));
            let tensors = [
                &self.ln_1.weight,
                &self.ln_1.bias,
                &a.c_attn.weight,
                &a.c_attn.bias,
                &a.c_proj.weight,
                &a.c_proj.bias,
                &self.ln_2.weight,
                &self.ln_2.bias,
                &m.0.weight,
                &m.0.bias,
                &m.1.weight,
                &m.1.bias,
            ];
            let params = crate::ops::BlockParams { tensors, n_head: a.n_head, eps: self.ln_1.eps };
            if let Some(y) = crate::ops::block(x, &params, keys)? {
                return Ok(y);
            }
        }
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, mask)?)?;
        let h = crate::ops::gelu(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?;
        x + self.c_proj.forward(&h)?
    }
}

/// The GPT-2 trunk (`transformer.*`).
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Block>,
    ln_f: LayerNorm,
    cfg: Config,
}

impl Gpt2Model {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        let wte = Embedding::new(vb.pp("wte").get_with_hints((cfg.vocab_size, cfg.n_embd), "weight", init)?, cfg.n_embd);
        let wpe = Embedding::new(vb.pp("wpe").get_with_hints((cfg.n_positions, cfg.n_embd), "weight", init)?, cfg.n_embd);
        let h = (0..cfg.n_layer).map(|i| Block::new(cfg, vb.pp("h").pp(i))).collect::<Result<_>>()?;
        let ln_f = LayerNorm::new(cfg.n_embd, cfg.layer_norm_epsilon, vb.pp("ln_f"))?;
        Ok(Self { wte, wpe, h, ln_f, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The token embedding matrix `[vocab, n_embd]` (GPT-2's LM head is tied to it).
    pub fn wte(&self) -> &Tensor {
        self.wte.embeddings()
    }

    /// `ids` `[b, t]` (u32) and `mask` `[b, t]` (1 real, 0 padding, right-padded) →
    /// hidden states `[b, t, n_embd]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_b, t) = ids.dims2()?;
        if t > self.cfg.n_positions {
            candle_core::bail!("sequence of {t} tokens is longer than n_positions {}", self.cfg.n_positions)
        }
        let positions = Tensor::arange(0u32, t as u32, ids.device())?;
        let mut x = self.wte.forward(ids)?.broadcast_add(&self.wpe.forward(&positions)?)?;
        let mask = if crate::ops::fused_available(&x) {
            AttentionMask::Keys(mask.to_dtype(x.dtype())?)
        } else {
            AttentionMask::Bias(attention_bias(mask, x.dtype())?)
        };
        for block in &self.h {
            x = block.forward(&x, &mask)?;
        }
        self.ln_f.forward(&x)
    }
}

/// Keys and values of every layer for the positions generated so far.
pub type KvCache = Vec<Option<(Tensor, Tensor)>>;

impl Gpt2Model {
    /// Inference over new positions with a cache: `ids` `[b, t_new]`, `positions` `[b, t_new]`
    /// (u32; with left padding, real tokens count from 0), `key_mask` `[b, t_total]` (1 for
    /// real tokens, over every position so far including the new ones). Returns hidden states
    /// of the new positions `[b, t_new, n_embd]`.
    pub fn forward_cached(&self, ids: &Tensor, positions: &Tensor, key_mask: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let total = key_mask.dim(1)?;
        if total > self.cfg.n_positions {
            candle_core::bail!("sequence of {total} tokens is longer than n_positions {}", self.cfg.n_positions)
        }
        cache.resize(self.h.len(), None);
        let mut x = (self.wte.forward(ids)? + self.wpe.forward(positions)?)?;
        // Query i (absolute position total - t + i) sees key j ≤ it that is not padding.
        let offset = total - t;
        let causal: Vec<f32> = (0..t).flat_map(|i| (0..total).map(move |j| if j <= offset + i { 1.0 } else { 0.0 })).collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, total), ids.device())?;
        let keys = key_mask.to_dtype(DType::F32)?.reshape((b, 1, 1, total))?;
        let bias = ((causal.broadcast_mul(&keys)? - 1.0)? * 1e9)?.to_dtype(x.dtype())?;
        for (block, slot) in self.h.iter().zip(cache.iter_mut()) {
            x = block.forward_cached(&x, &bias, slot)?;
        }
        self.ln_f.forward(&x)
    }
}

/// How attention is masked: the padding mask for the fused CPU kernel (causality is built
/// in), or an additive bias for the tensor-op form.
enum AttentionMask {
    Keys(Tensor),
    Bias(Tensor),
}

/// `[b, t]` mask → `[b, 1, t, t]` additive bias: causal, and no attention to padding keys.
fn attention_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let device = mask.device();
    let causal: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j <= i { 1.0 } else { 0.0 })).collect();
    let causal = Tensor::from_vec(causal, (1, 1, t, t), device)?;
    let keys = mask.to_dtype(DType::F32)?.reshape((b, 1, 1, t))?;
    let allowed = causal.broadcast_mul(&keys)?;
    ((allowed - 1.0)? * 1e9)?.to_dtype(dtype)
}

/// A reward model (`GPT2ForSequenceClassification` with one label): the trunk and a bias-free
/// linear `score` head read at the last real token of each sequence.
#[derive(Debug, Clone)]
pub struct RewardModel {
    transformer: Gpt2Model,
    score: Tensor,
}

impl RewardModel {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let transformer = Gpt2Model::new(cfg, vb.pp("transformer"))?;
        let stdev = 1.0 / ((cfg.n_embd + 1) as f64).sqrt();
        let score = vb.pp("score").get_with_hints((1, cfg.n_embd), "weight", candle_nn::Init::Randn { mean: 0.0, stdev })?;
        Ok(Self { transformer, score })
    }

    /// `ids`, `mask` `[b, t]` → the head's output at every position `[b, t]` (a value
    /// network's per-token values, when the reward model initialises one).
    pub fn forward_all(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let hidden = self.transformer.forward(ids, mask)?;
        let (b, t, d) = hidden.dims3()?;
        hidden.reshape((b * t, d))?.matmul(&self.score.t()?)?.reshape((b, t))
    }

    /// `ids`, `mask` `[b, t]` (right-padded) → rewards `[b]`, read at each row's last real token.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let hidden = self.transformer.forward(ids, mask)?;
        let (b, _t, d) = hidden.dims3()?;
        let last = (mask.to_dtype(DType::F32)?.sum(1)? - 1.0)?.clamp(0.0, f64::MAX)?.to_dtype(DType::U32)?;
        let index = last.reshape((b, 1, 1))?.broadcast_as((b, 1, d))?.contiguous()?;
        let at_last = hidden.gather(&index, 1)?.squeeze(1)?;
        at_last.matmul(&self.score.t()?)?.squeeze(1)
    }
}

/// A policy (`GPT2LMHeadModel`): the trunk and an LM head tied to `transformer.wte`.
#[derive(Debug, Clone)]
pub struct LmModel {
    transformer: Gpt2Model,
}

impl LmModel {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self { transformer: Gpt2Model::new(cfg, vb.pp("transformer"))? })
    }

    /// Next-token logits `[b, vocab]` at the last of the new positions, with a cache (see
    /// [`Gpt2Model::forward_cached`]).
    pub fn next_logits(&self, ids: &Tensor, positions: &Tensor, key_mask: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.transformer.forward_cached(ids, positions, key_mask, cache)?;
        let t = hidden.dim(1)?;
        crate::ops::matmul_bt(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?, self.transformer.wte())
    }

    pub fn config(&self) -> &Config {
        self.transformer.config()
    }

    /// `ids`, `mask` `[b, t]` → next-token logits `[b, t, vocab]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let hidden = self.transformer.forward(ids, mask)?;
        let (b, t, d) = hidden.dims3()?;
        crate::ops::matmul_bt(&hidden.reshape((b * t, d))?, self.transformer.wte())?.reshape((b, t, ()))
    }
}

/// Gives every parameter of a freshly built model its initial value from `seed` alone, as
/// Hugging Face's `GPT2PreTrainedModel._init_weights` does: N(0, 0.02) for embeddings and
/// projections, N(0, 0.02/√(2·n_layer)) for the residual projections (`c_proj`), ones and zeros
/// for layer norms and biases, N(0, 1/√(n_embd+1)) for the reward head. (candle's CPU random
/// numbers cannot be seeded, so the values candle drew are replaced.)
pub fn init_weights(params: &[(String, candle_core::Var)], cfg: &Config, seed: u64) -> Result<()> {
    for (name, var) in params {
        let stdev = if name.ends_with(".bias") || name.contains("ln_") {
            continue;
        } else if name.starts_with("score") {
            1.0 / ((cfg.n_embd + 1) as f64).sqrt()
        } else if name.ends_with("c_proj.weight") {
            0.02 / ((2 * cfg.n_layer) as f64).sqrt()
        } else {
            0.02
        };
        let mut rng = crate::rng::Rng::derived(seed, name, 0);
        let values: Vec<f32> = (0..var.elem_count()).map(|_| (rng.normal() * stdev) as f32).collect();
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// The device to train on: CUDA when built with it and present, else the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available(0).unwrap_or(Device::Cpu)
}
