//! rewardlab's trainer: decoder-only transformers of the GPT-2 family written with
//! differentiable candle ops (candle's fused softmax / layer-norm kernels drop gradients), with
//! Hugging Face parameter names, and the losses of reward modelling.

pub mod checkpoint;
pub mod gpt2;
pub mod loss;
