//! `rewardlab-train bench`: reward-model training steps and forward-only scoring for one fixed
//! configuration (vocab 8192, n_embd 256, 4 layers, 4 heads, 128 tokens, 16 pairs a batch),
//! timed, optionally side by side with the same model, loss and optimizer in PyTorch
//! (`trainer/bench/bench_torch.py`). Under `mpirun -np N` (feature `mpi`) the 16 pairs are
//! split over the ranks and the step includes the gradients' all-reduce, timed on its own.

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
    /// Time one PPO iteration instead (64 prompts, 64 new tokens): generation, scoring and
    /// optimisation, and generation with and without the KV cache.
    #[arg(long)]
    pub ppo: bool,
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
    if args.ppo {
        if crate::dist::world().size > 1 {
            bail!("bench --ppo runs in one process (run it without mpirun)")
        }
        return ppo_bench(args, &device);
    }
    let cfg = Config { vocab_size: VOCAB, n_positions: SEQ, n_embd: 256, n_layer: 4, n_head: 4, layer_norm_epsilon: 1e-5 };
    let varmap = candle_nn::VarMap::new();
    let model = RewardModel::new(&cfg, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device))?;
    let params = named_params(&varmap);
    init_weights(&params, &cfg, 0)?;
    let mut rng = Rng::new(1);
    let examples: Vec<RankingEx> = (0..PAIRS)
        .map(|_| RankingEx { seqs: (0..2).map(|_| (0..SEQ).map(|_| rng.below(VOCAB) as u32).collect()).collect(), ranks: vec![1, 2], margin: 0.0 })
        .collect();
    let batch: Vec<&RankingEx> = examples.iter().collect();
    let world = crate::dist::world();
    let mine = crate::dist::shard(&batch);
    let task = RewardTask { model: &model, device: device.clone(), pad: 0, centring: 0.0 };
    let mut opt = AdamW::new(params.clone(), AdamWConfig::default())?;
    let threads = candle_core::utils::get_num_threads();
    let n_params = params.iter().map(|(_, v)| v.elem_count()).sum::<usize>();
    if crate::dist::is_root() {
        eprintln!("candle: {n_params} parameters, {PAIRS} pairs × 2 × {SEQ} tokens a step, {} process(es) × {threads} threads, {device:?}", world.size);
    }
    crate::dist::broadcast_params(&params)?;
    let (mut fwd, mut bwd, mut upd, mut step, mut reduce) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut reduced_bytes = 0;
    for i in 0..args.steps + 2 {
        crate::dist::barrier();
        let t0 = Instant::now();
        let (loss, _) = task.loss(mine)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let mut grads = Grads::new(params.len());
        grads.add(&params, &(loss / PAIRS as f64)?.backward()?)?;
        device.synchronize()?;
        let tr = Instant::now();
        reduced_bytes = grads.all_reduce(&params)?;
        let tr = tr.elapsed().as_secs_f64() * 1e3;
        grads.clip(1.0)?;
        device.synchronize()?;
        let t2 = Instant::now();
        opt.step(&grads, 1e-4)?;
        device.synchronize()?;
        let t3 = Instant::now();
        if i >= 2 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3 - tr);
            reduce.push(tr);
            upd.push((t3 - t2).as_secs_f64() * 1e3);
            step.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    crate::dist::check_params(&params)?;
    // The all-reduce alone, all ranks lined up first: its cost without waiting for a slower rank.
    let mut pure = Vec::new();
    if world.size > 1 {
        let mut buf = vec![1f32; reduced_bytes / 4];
        for _ in 0..args.steps {
            crate::dist::barrier();
            let t0 = Instant::now();
            crate::dist::all_reduce_f32(&mut buf);
            pure.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let pure_ms = if pure.is_empty() { 0.0 } else { median(&mut pure) };
    // Forward-only scoring of the same 32 sequences.
    let seqs: Vec<&[u32]> = examples.iter().flat_map(|e| e.seqs.iter().map(Vec::as_slice)).collect();
    let (ids, mask) = pad(&seqs, 0, &device)?;
    let frozen = crate::setup::frozen(&params, &device, |vb| RewardModel::new(&cfg, vb))?;
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
        "impl": "candle", "matmul": crate::matmul_path(), "threads": threads, "ms_per_step": ms, "tokens_per_s": tokens / ms * 1e3,
        "forward_ms": median(&mut fwd), "backward_ms": median(&mut bwd), "optimizer_ms": median(&mut upd),
        "score_ms_per_batch": score_ms, "score_sequences_per_s": (PAIRS * 2) as f64 / score_ms * 1e3,
        "score_tokens_per_s": tokens / score_ms * 1e3,
        "processes": world.size, "parameters": n_params, "allreduce_ms": median(&mut reduce), "allreduce_bytes_per_step": reduced_bytes,
        "allreduce_alone_ms": pure_ms,
    });
    if !crate::dist::is_root() {
        return Ok(());
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("{ours}");
    if world.size > 1 {
        println!(
            "\n{} processes × {threads} threads: {ms:.1} ms a step ({:.0} tokens/s); the all-reduce of {:.2} MB took {:.2} ms in the step \
             (with waiting for the slower rank), {pure_ms:.2} ms alone",
            world.size,
            tokens / ms * 1e3,
            reduced_bytes as f64 / 1e6,
            f(&ours, "allreduce_ms")
        );
    }
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
    println!("\n| per step ({threads} threads) | candle | PyTorch | candle / PyTorch |\n| --- | ---: | ---: | ---: |");
    for (label, key) in [
        ("train step ms", "ms_per_step"),
        ("forward ms", "forward_ms"),
        ("backward ms", "backward_ms"),
        ("optimizer ms", "optimizer_ms"),
        ("scoring ms (32 × 128 tokens)", "score_ms_per_batch"),
    ] {
        println!("| {label} | {:.1} | {:.1} | {:.2}× |", f(&ours, key), f(&torch, key), f(&ours, key) / f(&torch, key));
    }
    println!("| train tokens/s | {:.0} | {:.0} | |", f(&ours, "tokens_per_s"), f(&torch, "tokens_per_s"));
    println!("| scoring tokens/s | {:.0} | {:.0} | |", f(&ours, "score_tokens_per_s"), f(&torch, "score_tokens_per_s"));
    Ok(())
}

/// One PPO iteration on random models of the benchmark's size (policy and reward model:
/// vocab 8192, n_embd 256, 4 layers; 64 prompts of 32 tokens; 64 new tokens), and generation
/// tokens/s with and without the KV cache.
fn ppo_bench(args: &BenchArgs, device: &candle_core::Device) -> Result<()> {
    use crate::checkpoint::{save_model, ModelKind};
    use crate::generate::{generate_batch, load_frozen_lm, SamplingOpts};
    use crate::gpt2::LmModel;
    let dir = std::env::temp_dir().join(format!("rewardlab-ppo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::new(3);
    let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let texts: Vec<String> = (0..4000).map(|_| (0..40).map(|_| words[rng.below(words.len())].as_str()).collect::<Vec<_>>().join(" ")).collect();
    let tok = crate::tokenizer::Tok::train(texts.iter().map(String::as_str), VOCAB)?;
    let cfg = Config { vocab_size: VOCAB, n_positions: 128, n_embd: 256, n_layer: 4, n_head: 4, layer_norm_epsilon: 1e-5 };
    for (name, kind) in [("policy", ModelKind::Lm), ("rm", ModelKind::Reward)] {
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device);
        match kind {
            ModelKind::Lm => drop(LmModel::new(&cfg, vb)?),
            ModelKind::Reward => drop(RewardModel::new(&cfg, vb)?),
        }
        let params = named_params(&varmap);
        init_weights(&params, &cfg, 1)?;
        save_model(&dir.join(name), &cfg, kind, &params, tok.eos(), None)?;
        tok.save(&dir.join(name))?;
    }
    let prompts: Vec<String> = (0..64).map(|i| (0..24).map(|k| words[(i * 31 + k * 7) % words.len()].as_str()).collect::<Vec<_>>().join(" ")).collect();
    let rows: String = prompts.iter().enumerate().map(|(i, p)| format!("{}\n", json!({"id": i, "prompt": p}))).collect();
    std::fs::write(dir.join("prompts.jsonl"), rows)?;

    // Generation alone, with and without the cache.
    let policy = load_frozen_lm(&dir.join("policy"), device)?;
    let encoded = tok.encode_all(&prompts)?;
    let opts = SamplingOpts { temperature: 0.7, top_p: 1.0, max_new_tokens: 64, seed: 0 };
    let gen = |cache: bool| -> Result<(f64, usize)> {
        let mut rngs: Vec<Rng> = (0..64).map(|i| Rng::derived(0, "bench", i)).collect();
        let t0 = Instant::now();
        let out = generate_batch(&policy, &encoded, tok.eos(), &opts, &mut rngs, cache, device)?;
        Ok((t0.elapsed().as_secs_f64(), out.iter().map(|c| c.tokens.len() + usize::from(c.eos)).sum()))
    };
    let (cached_s, cached_tokens) = gen(true)?;
    let (plain_s, plain_tokens) = gen(false)?;

    // One PPO iteration through the command itself.
    let metrics = dir.join("metrics.jsonl");
    let ppo_args = crate::ppo::PpoArgs {
        policy: dir.join("policy"),
        reward_model: dir.join("rm"),
        value_init: rewardlab_protocol::ValueInit::Auto,
        prompts: dir.join("prompts.jsonl"),
        out: dir.join("out"),
        iterations: 1,
        batch_size: 64,
        mini_batch_size: 8,
        ppo_epochs: 4,
        kl_coef: 0.05,
        target_kl: None,
        kl_horizon: 10_000.0,
        max_new_tokens: 64,
        temperature: 0.7,
        missing_eos_penalty: None,
        cliprange: 0.2,
        cliprange_value: 0.2,
        vf_coef: 0.1,
        gamma: 1.0,
        lam: 0.95,
        lr: Some(3e-6),
        max_grad_norm: 1.0,
        seed: 0,
        save_every: 0,
        metrics: Some(metrics.display().to_string()),
        resume: None,
        stop_after: None,
        device: args.device,
    };
    let t0 = Instant::now();
    crate::ppo::run(&ppo_args)?;
    let total = t0.elapsed().as_secs_f64();
    let line = std::fs::read_to_string(&metrics)?;
    let it: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or("{}"))?;
    let time = &it["time"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "ppo_iteration_s": total, "generate_s": f(&time["generate_s"]), "score_s": f(&time["score_s"]),
        "optimise_s": f(&time["optimise_s"]), "response_tokens": f(&it["response_length"]) * 64.0,
        "generation_tokens_per_s_kv_cache": cached_tokens as f64 / cached_s,
        "generation_tokens_per_s_no_cache": plain_tokens as f64 / plain_s,
    });
    println!("{report}");
    println!("\n| one PPO iteration (64 prompts × 64 new tokens, {} threads) | seconds |\n| --- | ---: |", candle_core::utils::get_num_threads());
    for (label, key) in
        [("generation", "generate_s"), ("scoring", "score_s"), ("optimisation (4 epochs)", "optimise_s"), ("whole iteration", "ppo_iteration_s")]
    {
        println!("| {label} | {:.2} |", f(&report[key]));
    }
    println!(
        "\ngeneration: {:.0} tokens/s with the KV cache, {:.0} tokens/s without ({:.1}×)",
        f(&report["generation_tokens_per_s_kv_cache"]),
        f(&report["generation_tokens_per_s_no_cache"]),
        f(&report["generation_tokens_per_s_kv_cache"]) / f(&report["generation_tokens_per_s_no_cache"])
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
