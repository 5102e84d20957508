//! `rewardlab-train generate`: batched sampling from a policy with a key/value cache, left
//! padding and per-sequence end-of-text, written in the platform's import format with each
//! response's provenance, so the samples become new labelling work.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::checkpoint::read_config;
use crate::gpt2::{KvCache, LmModel};
use crate::rng::Rng;
use crate::tokenizer::Tok;
use crate::train;

pub use rewardlab_protocol::GenerateArgs;

pub use rewardlab_protocol::SamplingOpts;

/// A frozen policy for inference: weights as plain tensors (no graph is recorded).
pub fn load_frozen_lm(dir: &Path, device: &Device) -> Result<LmModel> {
    let (cfg, _) = read_config(dir)?;
    let source = crate::setup::Source::Init(dir.to_path_buf());
    // Every parameter of an LM is under `transformer.`: a directory lacking any is an error.
    let (_, params) = crate::setup::variables(&source, &cfg, 0, device, |vb| LmModel::new(&cfg, vb))?;
    crate::setup::frozen(&params, device, |vb| LmModel::new(&cfg, vb))
}

/// Picks a token from `logits` (temperature, then top-p), with `rng`.
pub fn sample_token(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let mut probs: Vec<(f64, u32)> = logits.iter().enumerate().map(|(i, &l)| (((l as f64 - max) / temperature).exp(), i as u32)).collect();
    let total: f64 = probs.iter().map(|p| p.0).sum();
    probs.iter_mut().for_each(|p| p.0 /= total);
    if top_p < 1.0 {
        probs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut cum = 0.0;
        let keep = probs.iter().position(|p| {
            cum += p.0;
            cum >= top_p
        });
        probs.truncate(keep.map_or(probs.len(), |k| k + 1));
    }
    let mass: f64 = probs.iter().map(|p| p.0).sum();
    let mut u = rng.uniform() * mass;
    for &(p, id) in &probs {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs.last().map_or(0, |p| p.1)
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &x)| if x > best.1 { (i, x) } else { best }).0 as u32
}

/// One generated continuation: its tokens (without the end-of-text) and whether it ended
/// with end-of-text (else it ran out of `max_new_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    pub tokens: Vec<u32>,
    pub eos: bool,
}

/// Samples one continuation per prompt (token ids), each row with its own random stream, in
/// one batch: prompts left-padded so they end together, positions counted from each prompt's
/// first real token, generation stopping per row at end-of-text.
pub fn generate_batch(
    model: &LmModel,
    prompts: &[Vec<u32>],
    eos: u32,
    opts: &SamplingOpts,
    rngs: &mut [Rng],
    use_cache: bool,
    device: &Device,
) -> Result<Vec<Continuation>> {
    let b = prompts.len();
    let n_positions = model.config().n_positions;
    let room = n_positions.saturating_sub(opts.max_new_tokens).max(1);
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| &p[p.len().saturating_sub(room)..]).collect();
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0).max(1);
    // Per row: token ids (padding then the prompt), key mask (1 = real token) and position
    // ids (real tokens count from 0), one column per position.
    let (mut ids, mut mask, mut pos) = (Vec::with_capacity(b), Vec::with_capacity(b), Vec::with_capacity(b));
    let mut next_pos: Vec<u32> = Vec::with_capacity(b);
    for p in &prompts {
        // An empty prompt starts from end-of-text, as GPT-2 does.
        let p: Vec<u32> = if p.is_empty() { vec![eos] } else { p.to_vec() };
        let pad = width - p.len();
        let mut row = vec![eos; pad];
        row.extend_from_slice(&p);
        ids.push(row);
        mask.push((0..width).map(|j| u32::from(j >= pad)).collect::<Vec<u32>>());
        pos.push((0..width).map(|j| j.saturating_sub(pad) as u32).collect::<Vec<u32>>());
        next_pos.push(p.len() as u32);
    }
    let matrix = |m: &[Vec<u32>], from: usize| -> Result<Tensor> {
        let t = m[0].len() - from;
        Ok(Tensor::from_vec(m.iter().flat_map(|r| r[from..].iter().copied()).collect::<Vec<u32>>(), (b, t), device)?)
    };
    let mut out: Vec<Continuation> = vec![Continuation { tokens: Vec::new(), eos: false }; b];
    let mut done = vec![false; b];
    let mut cache: KvCache = Vec::new();
    let mut logits = model.next_logits(&matrix(&ids, 0)?, &matrix(&pos, 0)?, &matrix(&mask, 0)?, &mut cache)?;
    for _ in 0..opts.max_new_tokens {
        let all: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        for r in 0..b {
            let mut real = false;
            let next = if done[r] {
                eos
            } else {
                let next = sample_token(&all[r], opts.temperature, opts.top_p, &mut rngs[r]);
                if next == eos {
                    done[r] = true;
                    out[r].eos = true;
                } else {
                    out[r].tokens.push(next);
                    real = true;
                }
                next
            };
            ids[r].push(next);
            mask[r].push(u32::from(real));
            pos[r].push(next_pos[r].min(n_positions as u32 - 1));
            next_pos[r] += u32::from(real);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let t = ids[0].len();
        logits = if use_cache {
            model.next_logits(&matrix(&ids, t - 1)?, &matrix(&pos, t - 1)?, &matrix(&mask, 0)?, &mut cache)?
        } else {
            model.next_logits(&matrix(&ids, 0)?, &matrix(&pos, 0)?, &matrix(&mask, 0)?, &mut Vec::new())?
        };
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let device = train::device(args.device)?;
    let model = load_frozen_lm(&args.model, &device)?;
    let tok = Tok::load(&args.model)?;
    let prompts = crate::data::read_prompts(&args.prompts)?;
    let checksum = format!("sha256:{}", sha256_file(&args.model.join("model.safetensors"))?);
    let name = args.model.file_name().map_or("policy".to_string(), |n| n.to_string_lossy().into_owned());
    let texts: Vec<String> = prompts.iter().map(|p| p.1.clone()).collect();
    let encoded = tok.encode_all(&texts)?;
    // Rows (prompt, sample), longest prompts together so padding stays small.
    let mut jobs: Vec<(usize, usize)> = (0..prompts.len()).flat_map(|p| (0..args.n).map(move |k| (p, k))).collect();
    jobs.sort_by_key(|&(p, _)| std::cmp::Reverse(encoded[p].len()));
    let mut results: Vec<Vec<Option<Continuation>>> = vec![vec![None; args.n]; prompts.len()];
    let bar = indicatif::ProgressBar::new(jobs.len() as u64);
    let started = std::time::Instant::now();
    let mut generated = 0usize;
    for batch in jobs.chunks(args.batch_size.max(1)) {
        let batch_prompts: Vec<Vec<u32>> = batch.iter().map(|&(p, _)| encoded[p].clone()).collect();
        let mut rngs: Vec<Rng> = batch.iter().map(|&(p, k)| Rng::derived(args.sampling.seed, "sample", (p * args.n + k) as u64)).collect();
        let conts = generate_batch(&model, &batch_prompts, tok.eos(), &args.sampling, &mut rngs, !args.no_cache, &device)?;
        for (&(p, k), c) in batch.iter().zip(conts) {
            generated += c.tokens.len() + usize::from(c.eos);
            results[p][k] = Some(c);
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut out: Box<dyn Write> = if args.out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out))?))
    };
    let s = &args.sampling;
    for ((id, prompt), samples) in prompts.iter().zip(results) {
        let responses = samples
            .into_iter()
            .enumerate()
            .map(|(k, c)| -> Result<Value> {
                let c = c.expect("every job ran");
                Ok(json!({"model": name, "text": tok.decode(&c.tokens)?, "metadata": {
                    "model_dir": args.model.display().to_string(), "checksum": checksum,
                    "temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
                    "seed": s.seed, "sample": k, "tokens": c.tokens.len(),
                    "finish_reason": if c.eos { "eos" } else { "length" },
                }}))
            })
            .collect::<Result<Vec<_>>>()?;
        writeln!(out, "{}", json!({"id": id, "prompt": prompt, "responses": responses}))?;
    }
    out.flush()?;
    eprintln!(
        "generated {} responses to {} prompts: {generated} tokens in {secs:.1} s ({:.0} tokens/s, {})",
        prompts.len() * args.n,
        prompts.len(),
        generated as f64 / secs,
        if args.no_cache { "no cache" } else { "KV cache" }
    );
    Ok(())
}
