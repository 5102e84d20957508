//! rewardlab's trainer: decoder-only transformers of the GPT-2 family written with
//! differentiable candle ops (candle's fused softmax / layer-norm kernels drop gradients), with
//! Hugging Face parameter names and checkpoint layout; reward models with InstructGPT's ranking
//! loss, supervised fine-tuning, and the training loop they share.

pub mod alloc;
pub mod bench;
#[cfg(feature = "openblas")]
pub mod blas;
pub mod checkpoint;
pub mod data;
pub mod dist;
pub mod dpo;
pub mod generate;
pub mod gpt2;
pub mod kl_grid;
pub mod loss;
pub mod merge;
pub mod ops;
pub mod optim;
pub mod ppo;
pub mod regression;
pub mod reward_ensemble;
pub mod rm;
pub mod rng;
pub mod setup;
pub mod sft;
pub mod simd;
pub mod tokenizer;
pub mod train;

/// Picks the fastest correct matrix-product kernels for this CPU before anything runs (see
/// [`blas::ensure_best_core`]); may run the process again. A no-op without OpenBLAS.
pub fn ensure_best_kernels() {
    #[cfg(feature = "openblas")]
    blas::ensure_best_core();
}

/// Which matrix-product path runs: `OpenBLAS (SkylakeX kernels)` or candle's own.
pub fn matmul_path() -> String {
    #[cfg(feature = "openblas")]
    return format!("OpenBLAS ({} kernels)", blas::core_name());
    #[cfg(not(feature = "openblas"))]
    return "candle's gemm".into();
}
