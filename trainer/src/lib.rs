//! rewardlab's trainer: decoder-only transformers of the GPT-2 family written with
//! differentiable candle ops (candle's fused softmax / layer-norm kernels drop gradients), with
//! Hugging Face parameter names and checkpoint layout; reward models with InstructGPT's ranking
//! loss, supervised fine-tuning, and the training loop they share.

pub mod bench;
#[cfg(feature = "openblas")]
mod blas;
pub mod checkpoint;
pub mod data;
pub mod dpo;
pub mod generate;
pub mod gpt2;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod ppo;
pub mod rm;
pub mod rng;
pub mod setup;
pub mod sft;
pub mod tokenizer;
pub mod train;
