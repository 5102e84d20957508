//! `rewardlab-train bench`: reward-model training steps and forward-only scoring for one fixed
//! configuration (vocab 8192, n_embd 256, 4 layers, 4 heads, 128 tokens, 16 pairs a batch),
//! timed, optionally side by side with the same model, loss and optimizer in PyTorch
//! (`trainer/bench/bench_torch.py`): the two sides alternate `--pairs` times and a Markdown
//! table gives each figure's min and median per side and the ratio of the medians. Under
//! `mpirun -np N` (feature `mpi`) the 16 pairs are split over the ranks and the step includes
//! the gradients' all-reduce, also timed on its own.

use std::path::{Path, PathBuf};
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
    /// Also run trainer/bench/bench_torch.py with this Python (torch and transformers; see
    /// trainer/bench/setup-torch), alternating with our side, and print both side by side.
    #[arg(long)]
    pub compare_torch: Option<PathBuf>,
    /// Runs of each side (alternating pairs with --compare-torch); the table gives each
    /// figure's min and median over them.
    #[arg(long, default_value_t = 5)]
    pub pairs: usize,
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

/// The figures one run of either side reports (medians over its timed steps), in milliseconds.
const FIGURES: [(&str, &str); 5] = [
    ("training step", "ms_per_step"),
    ("forward", "forward_ms"),
    ("backward (with clipping)", "backward_ms"),
    ("optimizer", "optimizer_ms"),
    ("scoring (32 × 128 tokens)", "score_ms_per_batch"),
];

pub fn run(args: &BenchArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let world = crate::dist::world();
    if args.ppo {
        if world.size > 1 {
            bail!("bench --ppo runs in one process (run it without mpirun)")
        }
        return ppo_bench(args, &device);
    }
    if world.size > 1 && args.compare_torch.is_some() {
        bail!("bench --compare-torch runs in one process (run it without mpirun)")
    }
    let threads = candle_core::utils::get_num_threads();
    let pairs = args.pairs.max(1);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/bench_torch.py");
    // The two sides alternate, so a slow spell of a shared host falls on both alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let o = candle_side(args.steps, &device)?;
        if !crate::dist::is_root() {
            continue;
        }
        eprintln!("pair {} of {pairs}: {o}", pair + 1);
        ours.push(o);
        if let Some(python) = &args.compare_torch {
            let t = torch_side(python, &script, args.steps, threads)?;
            eprintln!("pair {} of {pairs}: {t}", pair + 1);
            theirs.push(t);
        }
    }
    if !crate::dist::is_root() {
        return Ok(());
    }
    if world.size > 1 {
        let o = &ours[ours.len() - 1];
        let f = |k: &str| o[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "\n{} processes × {threads} threads: {:.1} ms a step ({:.0} tokens/s); the all-reduce of {:.2} MB took {:.2} ms in the step \
             (with waiting for the slower rank), {:.2} ms alone",
            world.size,
            f("ms_per_step"),
            f("tokens_per_s"),
            f("allreduce_bytes_per_step") / 1e6,
            f("allreduce_ms"),
            f("allreduce_alone_ms")
        );
    }
    let stats = |runs: &[serde_json::Value], key: &str| -> (f64, f64) {
        let mut xs: Vec<f64> = runs.iter().map(|r| r[key].as_f64().unwrap_or(f64::NAN)).collect();
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        (min, median(&mut xs))
    };
    let mut summary = serde_json::Map::new();
    summary.insert("matmul".into(), json!(crate::matmul_path()));
    summary.insert("threads".into(), json!(threads));
    summary.insert("pairs".into(), json!(pairs));
    summary.insert("steps".into(), json!(args.steps));
    let torch_impl = theirs.first().map(|t| t["impl"].as_str().unwrap_or("PyTorch").to_string());
    let torch_threads = theirs.first().map(|t| t["threads"].clone());
    println!(
        "\n{pairs} {} of {} timed steps each, fp32; candle: {}, {threads} threads{}\n",
        if theirs.is_empty() { "runs" } else { "alternating pairs" },
        args.steps,
        crate::matmul_path(),
        match (&torch_impl, &torch_threads) {
            (Some(i), Some(t)) => format!("; {i}, {t} threads"),
            _ => String::new(),
        }
    );
    if theirs.is_empty() {
        println!("| ms | candle min | candle median |\n| --- | ---: | ---: |");
    } else {
        println!("| ms | candle min | candle median | PyTorch min | PyTorch median | candle / PyTorch (medians) |\n| --- | ---: | ---: | ---: | ---: | ---: |");
    }
    for (label, key) in FIGURES {
        let (omin, omed) = stats(&ours, key);
        let mut row = json!({"candle_min": omin, "candle_median": omed});
        if theirs.is_empty() {
            println!("| {label} | {omin:.1} | {omed:.1} |");
        } else {
            let (tmin, tmed) = stats(&theirs, key);
            println!("| {label} | {omin:.1} | {omed:.1} | {tmin:.1} | {tmed:.1} | {:.2}× |", omed / tmed);
            row = json!({"candle_min": omin, "candle_median": omed, "torch_min": tmin, "torch_median": tmed, "ratio_of_medians": omed / tmed});
        }
        summary.insert(key.into(), row);
    }
    println!("\n{}", serde_json::Value::Object(summary));
    Ok(())
}

/// One run of our side: a fresh model and optimizer, two untimed warm-up steps, `steps` timed
/// training steps, then as many timed scoring passes; the medians as one JSON object.
fn candle_side(steps: usize, device: &candle_core::Device) -> Result<serde_json::Value> {
    let cfg = Config { vocab_size: VOCAB, n_positions: SEQ, n_embd: 256, n_layer: 4, n_head: 4, layer_norm_epsilon: 1e-5 };
    let varmap = candle_nn::VarMap::new();
    let model = RewardModel::new(&cfg, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, device))?;
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
    crate::dist::broadcast_params(&params)?;
    let (mut fwd, mut bwd, mut upd, mut step, mut reduce) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut reduced_bytes = 0;
    for i in 0..steps + 2 {
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
        for _ in 0..steps {
            crate::dist::barrier();
            let t0 = Instant::now();
            crate::dist::all_reduce_f32(&mut buf);
            pure.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let pure_ms = if pure.is_empty() { 0.0 } else { median(&mut pure) };
    // Forward-only scoring of the same 32 sequences.
    let seqs: Vec<&[u32]> = examples.iter().flat_map(|e| e.seqs.iter().map(Vec::as_slice)).collect();
    let (ids, mask) = pad(&seqs, 0, device)?;
    let frozen = crate::setup::frozen(&params, device, |vb| RewardModel::new(&cfg, vb))?;
    let mut score = Vec::new();
    for i in 0..steps + 2 {
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
    Ok(json!({
        "impl": "candle", "matmul": crate::matmul_path(), "threads": threads, "parameters": params.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        "ms_per_step": ms, "tokens_per_s": tokens / ms * 1e3,
        "forward_ms": median(&mut fwd), "backward_ms": median(&mut bwd), "optimizer_ms": median(&mut upd),
        "score_ms_per_batch": score_ms, "score_sequences_per_s": (PAIRS * 2) as f64 / score_ms * 1e3,
        "score_tokens_per_s": tokens / score_ms * 1e3,
        "processes": world.size, "allreduce_ms": if reduce.is_empty() { 0.0 } else { median(&mut reduce) }, "allreduce_bytes_per_step": reduced_bytes,
        "allreduce_alone_ms": pure_ms,
    }))
}

/// One run of `bench_torch.py` (a fresh process): its JSON line.
fn torch_side(python: &Path, script: &Path, steps: usize, threads: usize) -> Result<serde_json::Value> {
    let output = std::process::Command::new(python)
        .arg(script)
        .args(["--steps", &steps.to_string(), "--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr))
    }
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim().lines().last().unwrap_or("")).context("bench_torch.py printed no JSON")
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
        merge: Default::default(),
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
        kl_grid: None,
        reward_ensemble: rewardlab_protocol::RewardEnsemble::Mean,
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
