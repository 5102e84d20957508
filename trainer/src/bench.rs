//! `rewardlab-train bench`: reward-model training steps and forward-only scoring for one fixed
//! configuration (vocab 8192, n_embd 256, 4 layers, 4 heads, 128 tokens, 16 pairs a batch),
//! timed, optionally side by side with the same model, loss and optimizer in PyTorch
//! (`trainer/bench/bench_torch.py`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::json;

use crate::gpt2::{init_weights, Config, RewardModel};
use crate::optim::{named_params, AdamW, AdamWConfig, Grads};
use crate::rm::{RankingEx, RewardTask};
use crate::rng::Rng;
use crate::setup::pad;
use crate::train::{self, Task};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Timed training steps (after two untimed warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also run trainer/bench/bench_torch.py with this Python and print both side by side.
    #[arg(long)]
    pub compare_torch: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub device: Option<train::DeviceArg>,
}

pub const VOCAB: usize = 8192;
pub const SEQ: usize = 128;
pub const PAIRS: usize = 16;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let cfg = Config { vocab_size: VOCAB, n_positions: SEQ, n_embd: 256, n_layer: 4, n_head: 4, layer_norm_epsilon: 1e-5 };
    let varmap = candle_nn::VarMap::new();
    let model = RewardModel::new(&cfg, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device))?;
    let params = named_params(&varmap);
    init_weights(&params, &cfg, 0)?;
    let mut rng = Rng::new(1);
    let examples: Vec<RankingEx> = (0..PAIRS)
        .map(|_| RankingEx {
            seqs: (0..2).map(|_| (0..SEQ).map(|_| rng.below(VOCAB) as u32).collect()).collect(),
            ranks: vec![1, 2],
            margin: 0.0,
        })
        .collect();
    let batch: Vec<&RankingEx> = examples.iter().collect();
    let task = RewardTask { model: &model, device: device.clone(), pad: 0, centring: 0.0 };
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let threads = candle_core::utils::get_num_threads();
    eprintln!("candle: {} parameters, {PAIRS} pairs × 2 × {SEQ} tokens a step, {threads} threads, {device:?}", params.iter().map(|(_, v)| v.elem_count()).sum::<usize>());
    let (mut fwd, mut bwd, mut upd, mut step) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.steps + 2 {
        let t0 = Instant::now();
        let (loss, _) = task.loss(&batch)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let mut grads = Grads::new(params.len());
        grads.add(&params, &(loss / PAIRS as f64)?.backward()?)?;
        grads.clip(1.0)?;
        device.synchronize()?;
        let t2 = Instant::now();
        opt.step(&grads, 1e-4)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if i >= 2 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3);
            upd.push((t3 - t2).as_secs_f64() * 1e3);
            step.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    // Forward-only scoring of the same 32 sequences.
    let seqs: Vec<&[u32]> = examples.iter().flat_map(|e| e.seqs.iter().map(Vec::as_slice)).collect();
    let (ids, mask) = pad(&seqs, 0, &device)?;
    let frozen = {
        let tensors = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
        RewardModel::new(&cfg, candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &device))?
    };
    let mut score = Vec::new();
    for i in 0..args.steps + 2 {
        let t0 = Instant::now();
        let r: Tensor = frozen.forward(&ids, &mask)?;
        r.to_vec1::<f32>()?;
        if i >= 2 {
            score.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let tokens = (PAIRS * 2 * SEQ) as f64;
    let ms = median(&mut step);
    let score_ms = median(&mut score);
    let ours = json!({
        "impl": "candle", "threads": threads, "ms_per_step": ms, "tokens_per_s": tokens / ms * 1e3,
        "forward_ms": median(&mut fwd), "backward_ms": median(&mut bwd), "optimizer_ms": median(&mut upd),
        "score_ms_per_batch": score_ms, "score_sequences_per_s": (PAIRS * 2) as f64 / score_ms * 1e3,
        "score_tokens_per_s": tokens / score_ms * 1e3,
    });
    println!("{ours}");
    let Some(python) = &args.compare_torch else { return Ok(()) };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/bench_torch.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .args(["--steps", &args.steps.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr))
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let torch: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or("")).context("bench_torch.py printed no JSON")?;
    println!("{}", torch);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("\n| per step ({threads} threads) | candle | PyTorch | candle / PyTorch |\n| --- | ---: | ---: | ---: |");
    for (label, key) in [("train step ms", "ms_per_step"), ("forward ms", "forward_ms"), ("backward ms", "backward_ms"), ("optimizer ms", "optimizer_ms"), ("scoring ms (32 × 128 tokens)", "score_ms_per_batch")] {
        println!("| {label} | {:.1} | {:.1} | {:.2}× |", f(&ours, key), f(&torch, key), f(&ours, key) / f(&torch, key));
    }
    println!("| train tokens/s | {:.0} | {:.0} | |", f(&ours, "tokens_per_s"), f(&torch, "tokens_per_s"));
    println!("| scoring tokens/s | {:.0} | {:.0} | |", f(&ours, "score_tokens_per_s"), f(&torch, "score_tokens_per_s"));
    Ok(())
}
