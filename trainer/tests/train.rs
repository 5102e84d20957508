//! The `rewardlab-train` binary end to end on CPU: a reward model learns a planted preference,
//! scores files, SFT lowers perplexity, a killed-and-resumed run ends bit-identical, and bad
//! data is refused with its file and line.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{ppo_files, scratch, sentence, write_jsonl};
use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab-train");

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "rewardlab-train {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Pairs where the chosen response contains the word "kindly" somewhere (a random position),
/// the rejected one never: the rule is hidden in the data, not the length or the position.
fn planted_pairs(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let prompt = format!("Question: {}?\nAnswer:", sentence(&mut rng, 5));
            let len = 6 + rng.below(6);
            let mut good: Vec<String> = sentence(&mut rng, len).split(' ').map(str::to_string).collect();
            let at = rng.below(good.len() + 1);
            good.insert(at, "kindly".into());
            let bad = sentence(&mut rng, len + 1);
            json!({"prompt": prompt, "chosen": format!(" {}", good.join(" ")), "rejected": format!(" {bad}")})
        })
        .collect()
}

const SMALL: [&str; 10] = ["--n-embd", "64", "--n-layer", "2", "--n-head", "4", "--vocab-size", "400", "--max-len", "64"];

#[test]
fn a_reward_model_learns_a_planted_preference_in_under_a_minute_and_scores_files() {
    let dir = scratch("train-planted");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &planted_pairs(800, 1));
    let out = dir.join("rm");
    let metrics = dir.join("metrics.jsonl");
    let started = Instant::now();
    let mut args =
        vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--epochs", "3", "--lr", "3e-3", "--metrics", metrics.to_str().unwrap()];
    args.extend(SMALL);
    run(&args);
    let elapsed = started.elapsed().as_secs_f64();

    let config = read_json(&out.join("config.json"));
    let accuracy = config["rewardlab"]["validation"]["accuracy"].as_f64().unwrap();
    eprintln!("planted preference: validation accuracy {accuracy:.4} in {elapsed:.1} s");
    assert!(accuracy >= 0.95, "validation accuracy {accuracy}");
    assert!(elapsed < 60.0, "took {elapsed:.1} s");
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }

    // The metrics stream: a line per step with the fields the platform reads, evals, and done.
    let lines: Vec<Value> = std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let steps: Vec<&Value> = lines.iter().filter(|l| l["event"] == "step").collect();
    assert!(steps.len() >= 30, "{} steps", steps.len());
    for key in ["step", "loss", "accuracy", "lr", "grad_norm", "tokens_per_s"] {
        assert!(steps[0][key].is_number(), "step line lacks {key}: {}", steps[0]);
    }
    let total = steps[0]["total_steps"].as_u64().expect("each step says how many are planned");
    assert!(steps.iter().all(|s| s["total_steps"] == total) && steps.last().unwrap()["step"] == total, "the plan is the steps taken");
    assert_eq!(lines.iter().filter(|l| l["event"] == "eval").count(), 3, "one evaluation per epoch");
    assert_eq!(lines.last().unwrap()["event"], "done");
    // Memory stays flat: each step's graph is freed (optimizer moments once kept every step's
    // graph alive through their gradients).
    let (early, late) = (steps[10]["rss_mb"].as_f64().unwrap(), steps.last().unwrap()["rss_mb"].as_f64().unwrap());
    assert!(late < early + 60.0, "resident memory grew from {early:.0} MB to {late:.0} MB over {} steps", steps.len());
    let first = steps[..5].iter().map(|s| s["loss"].as_f64().unwrap()).sum::<f64>() / 5.0;
    let last = steps[steps.len() - 5..].iter().map(|s| s["loss"].as_f64().unwrap()).sum::<f64>() / 5.0;
    assert!(last < first * 0.5, "training loss went from {first} to {last}");

    // Scoring: fresh pairs (not trained on) and an item file, one line each, in order.
    let fresh = dir.join("fresh.jsonl");
    write_jsonl(&fresh, &planted_pairs(100, 99));
    let scores = dir.join("scores.jsonl");
    run(&["score", "--model", out.to_str().unwrap(), "--data", fresh.to_str().unwrap(), "--out", scores.to_str().unwrap()]);
    let rows: Vec<Value> = std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 100);
    let right = rows.iter().filter(|r| r["chosen_reward"].as_f64().unwrap() > r["rejected_reward"].as_f64().unwrap()).count();
    assert!(right >= 95, "{right}/100 fresh pairs ordered right");

    let items = dir.join("items.jsonl");
    write_jsonl(
        &items,
        &[json!({"id": "q1", "prompt": "Question: river stone?\nAnswer:", "responses": [
        {"model": "a", "text": " paper cloud market"}, {"model": "b", "text": " paper kindly cloud market"}, {"model": "c", "text": " engine"}]})],
    );
    let out_items = run(&["score", "--model", out.to_str().unwrap(), "--data", items.to_str().unwrap(), "--out", "-"]);
    let row: Value = serde_json::from_slice(&out_items.stdout).unwrap();
    assert_eq!(row["id"], "q1");
    let r: Vec<f64> = row["rewards"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(r.len(), 3);
    assert!(r[1] > r[0] && r[1] > r[2], "the response with the planted word scores highest: {r:?}");

    // The saved bias centres the training responses on 0.
    let bias = config["rewardlab"]["reward_bias"].as_f64().unwrap();
    assert!(bias.is_finite() && config["rewardlab"]["reward_std"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_killed_and_resumed_run_ends_bit_identical() {
    let dir = scratch("train-resume");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &planted_pairs(160, 3));
    let base = |out: &Path| {
        let mut a: Vec<String> = [
            "rm",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--grad-accum",
            "2",
            "--max-tokens",
            "300",
            "--save-every",
            "3",
        ]
        .map(String::from)
        .to_vec();
        a.extend(SMALL.map(String::from));
        a
    };
    let straight = dir.join("straight");
    let a = base(&straight);
    run(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let resumed = dir.join("resumed");
    let mut b = base(&resumed);
    b.extend(["--stop-after", "7"].map(String::from));
    run(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!resumed.join("model.safetensors").exists(), "a stopped run writes no final model");
    let ckpts: Vec<String> = std::fs::read_dir(resumed.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(ckpts.contains(&"step-00000006".to_string()), "{ckpts:?}");
    // A half-written checkpoint (no marker), as a kill mid-save leaves, is never resumed from.
    std::fs::create_dir_all(resumed.join("checkpoints/step-00000009")).unwrap();
    std::fs::write(resumed.join("checkpoints/step-00000009/state.json"), "{").unwrap();
    let mut c = base(&resumed);
    c.extend(["--resume", resumed.to_str().unwrap()].map(String::from));
    run(&c.iter().map(String::as_str).collect::<Vec<_>>());

    let w1 = std::fs::read(straight.join("model.safetensors")).unwrap();
    let w2 = std::fs::read(resumed.join("model.safetensors")).unwrap();
    assert_eq!(w1.len(), w2.len());
    assert!(w1 == w2, "the resumed run's weights differ from the uninterrupted run's");
    let s1 = read_json(&straight.join("config.json"));
    let s2 = read_json(&resumed.join("config.json"));
    assert_eq!(s1["rewardlab"]["validation"], s2["rewardlab"]["validation"]);
}

#[test]
fn sft_learns_to_continue_demonstrations() {
    let dir = scratch("train-sft");
    let data = dir.join("sft.jsonl");
    let mut rng = Rng::new(5);
    // The completion repeats the prompt's words in reverse: learnable from the context alone.
    let rows: Vec<Value> = (0..400)
        .map(|_| {
            let words: Vec<String> = sentence(&mut rng, 4).split(' ').map(str::to_string).collect();
            let rev: Vec<String> = words.iter().rev().cloned().collect();
            json!({"prompt": format!("Reverse: {}\nReversed:", words.join(" ")), "completion": format!(" {}", rev.join(" "))})
        })
        .collect();
    write_jsonl(&data, &rows);
    let out = dir.join("sft");
    let metrics = dir.join("m.jsonl");
    let mut args =
        vec!["sft", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--epochs", "4", "--lr", "3e-3", "--metrics", metrics.to_str().unwrap()];
    args.extend(SMALL);
    run(&args);
    let evals: Vec<Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["event"] == "eval").collect();
    let first = evals[0]["perplexity"].as_f64().unwrap();
    let last = evals.last().unwrap()["perplexity"].as_f64().unwrap();
    eprintln!("sft validation perplexity {first:.2} after one epoch, {last:.2} after four");
    assert!(last < first, "perplexity went from {first} to {last}");
    assert!(last < 14.0, "the words are uniform over 24: below that the model reads its prompt ({last})");
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    let names: Vec<String> = candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu).unwrap().into_keys().collect();
    assert!(names.iter().all(|n| n.starts_with("transformer.")), "the LM head is tied, not stored: {names:?}");

    // Sampling from it: items in the platform's import format, with provenance, the same
    // bytes for the same seed.
    let prompts = dir.join("prompts.jsonl");
    write_jsonl(
        &prompts,
        &[
            json!({"id": "p1", "prompt": "Reverse: river stone cloud paper\nReversed:"}),
            json!({"item_id": "p2", "prompt": "Reverse: engine forest\nReversed:"}),
        ],
    );
    let gen = |name: &str| {
        let path = dir.join(name);
        run(&[
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            path.to_str().unwrap(),
            "-n",
            "2",
            "--seed",
            "7",
            "--max-new-tokens",
            "12",
        ]);
        std::fs::read_to_string(path).unwrap()
    };
    let (first, again) = (gen("gen1.jsonl"), gen("gen2.jsonl"));
    assert_eq!(first, again, "sampling is deterministic for a seed");
    let items: Vec<Value> = first.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["id"], "p2");
    let r = &items[0]["responses"];
    assert_eq!(r.as_array().unwrap().len(), 2);
    assert!(r[0]["text"].is_string() && r[0]["model"] == "sft");
    assert!(r[0]["metadata"]["checksum"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r[1]["metadata"]["sample"], 1);
    assert_eq!(r[0]["metadata"]["seed"], 7);

    // A reward model starts from it (--init), also when saved as GPT-2 is on the Hub (names
    // without the `transformer.` prefix): the trunk is the policy's, the head new.
    let hub = dir.join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let cpu = candle_core::Device::Cpu;
    let weights = candle_core::safetensors::load(out.join("model.safetensors"), &cpu).unwrap();
    let bare: std::collections::HashMap<String, candle_core::Tensor> =
        weights.iter().map(|(k, v)| (k.trim_start_matches("transformer.").to_string(), v.clone())).collect();
    candle_core::safetensors::save(&bare, hub.join("model.safetensors")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(out.join(f), hub.join(f)).unwrap();
    }
    let pairs = dir.join("pairs.jsonl");
    write_jsonl(&pairs, &planted_pairs(40, 8));
    let rm = dir.join("rm");
    run(&["rm", "--data", pairs.to_str().unwrap(), "--out", rm.to_str().unwrap(), "--init", hub.to_str().unwrap(), "--lr", "1e-12"]);
    let trained = candle_core::safetensors::load(rm.join("model.safetensors"), &cpu).unwrap();
    let diff = (&trained["transformer.wte.weight"] - &weights["transformer.wte.weight"]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-6, "the trunk moved by {diff}");
    assert_eq!(trained["score.weight"].dims(), [1, 64]);
}

#[test]
fn bad_data_is_refused_with_file_and_line_and_nothing_is_written() {
    let dir = scratch("train-bad");
    let data = dir.join("bad.jsonl");
    let mut rows = planted_pairs(5, 1);
    rows.push(json!({"prompt": "p", "chosen": " a", "rejected": 7}));
    write_jsonl(&data, &rows);
    let out = dir.join("rm");
    let result = Command::new(BIN).args(["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("bad.jsonl:6") && err.contains("\"rejected\""), "{err}");
    assert!(!out.exists(), "nothing is written for bad data");
}

#[test]
fn dpo_learns_a_planted_preference_against_a_frozen_reference() {
    let dir = scratch("train-dpo");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &planted_pairs(400, 11));
    // A policy that has seen both kinds of response (SFT on chosen and rejected alike)…
    let sft_data = dir.join("both.jsonl");
    let both: Vec<Value> = planted_pairs(400, 11)
        .iter()
        .flat_map(|p| [json!({"prompt": p["prompt"], "completion": p["chosen"]}), json!({"prompt": p["prompt"], "completion": p["rejected"]})])
        .collect();
    write_jsonl(&sft_data, &both);
    let policy = dir.join("policy");
    let mut args = vec!["sft", "--data", sft_data.to_str().unwrap(), "--out", policy.to_str().unwrap(), "--lr", "3e-3"];
    args.extend(SMALL);
    run(&args);
    // …learns from the pairs to prefer the planted word.
    let out = dir.join("dpo");
    let metrics = dir.join("m.jsonl");
    run(&[
        "dpo",
        "--policy",
        policy.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "--lr",
        "1e-3",
        "--max-len",
        "64",
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let evals: Vec<Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["event"] == "eval").collect();
    let accuracy = evals.last().unwrap()["accuracy"].as_f64().unwrap();
    let margin = evals.last().unwrap()["margin"].as_f64().unwrap();
    eprintln!("dpo: held-out implicit-reward accuracy {accuracy:.3}, margin {margin:.3}");
    assert!(accuracy >= 0.8, "held-out implicit-reward accuracy {accuracy}");
    assert!(margin > 0.0);
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["rewardlab"]["dpo_beta"], 0.1);
}

fn iterations(metrics: &Path) -> Vec<Value> {
    std::fs::read_to_string(metrics).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["event"] == "iteration").collect()
}

fn mean(rows: &[Value], key: &str) -> f64 {
    rows.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>() / rows.len() as f64
}

#[test]
fn ppo_raises_the_score_with_a_bounded_kl_and_resumes_exactly() {
    let dir = scratch("train-ppo");
    // A policy that writes both kinds of answer, and a reward model that wants "kindly".
    let pairs = planted_pairs(400, 21);
    let (data, both, prompts) = ppo_files(&dir, &pairs, 64);
    let (policy, rm) = (dir.join("policy"), dir.join("rm"));
    let mut a = vec!["sft", "--data", both.to_str().unwrap(), "--out", policy.to_str().unwrap(), "--lr", "3e-3"];
    a.extend(SMALL);
    run(&a);
    // The reward model shares the policy's tokenizer, so the value network starts from it.
    let mut a =
        vec!["rm", "--data", data.to_str().unwrap(), "--out", rm.to_str().unwrap(), "--epochs", "3", "--lr", "3e-3", "--tokenizer", policy.to_str().unwrap()];
    a.extend(SMALL);
    run(&a);
    let ppo = |name: &str, beta: &str, iters: &str, extra: &[&str]| {
        let out = dir.join(name);
        let metrics = dir.join(format!("{name}.jsonl"));
        let mut a = vec![
            "ppo",
            "--policy",
            policy.to_str().unwrap(),
            "--reward-model",
            rm.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--iterations",
            iters,
            "--batch-size",
            "16",
            "--max-new-tokens",
            "16",
            "--lr",
            "5e-4",
            "--kl-coef",
            beta,
            "--metrics",
            metrics.to_str().unwrap(),
        ];
        a.extend(extra);
        run(&a);
        (out, metrics)
    };

    let (_, with_kl) = ppo("kl", "0.5", "30", &[]);
    let rows = iterations(&with_kl);
    assert_eq!(rows.len(), 30);
    for key in ["score", "kl", "non_score_reward", "entropy", "approxkl", "clipfrac", "ratio_mean", "ratio_var", "vf_loss", "eos_rate"] {
        assert!(rows[0][key].is_number(), "{key} missing: {}", rows[0]);
    }
    assert!(rows[0]["time"]["generate_s"].is_number() && rows[0]["time"]["optimise_s"].is_number());
    assert!(rows.iter().all(|r| r["total_iterations"] == 30), "each iteration says how many are planned");
    let (start, end) = (mean(&rows[..5], "score"), mean(&rows[20..], "score"));
    let kl = mean(&rows[10..], "kl");
    let (_, free) = ppo("free", "0", "30", &[]);
    let free_rows = iterations(&free);
    let free_kl = mean(&free_rows[10..], "kl");
    eprintln!("ppo β 0.5: score {start:.2} → {end:.2}, KL {kl:.2}; β 0: score → {:.2}, KL {free_kl:.2}", mean(&free_rows[20..], "score"));
    assert!(end > start + 2.0, "the mean score went from {start} to {end}");
    assert!(kl < 8.0, "KL to the reference {kl}");
    // (Over the last 20 iterations: the unpenalised policy settles on the reward model's
    // favourite answers, far from the reference; the penalised one stays nearer.)
    assert!(free_kl > 1.3 * kl && free_kl > kl + 1.0, "without the penalty the policy drifts further: KL {free_kl} vs {kl}");

    // Killed after 3 of 6 iterations and resumed: the same policy as a run never stopped.
    let (straight, _) = ppo("straight", "0.5", "6", &["--save-every", "2"]);
    let (resumed, _) = ppo("resumed", "0.5", "6", &["--save-every", "2", "--stop-after", "3"]);
    assert!(!resumed.join("model.safetensors").exists());
    let resumed_str = resumed.to_str().unwrap().to_string();
    ppo("resumed", "0.5", "6", &["--save-every", "2", "--resume", &resumed_str]);
    let w1 = std::fs::read(straight.join("model.safetensors")).unwrap();
    let w2 = std::fs::read(resumed.join("model.safetensors")).unwrap();
    assert!(w1 == w2, "the resumed PPO run ends elsewhere");
    assert!(std::fs::read(straight.join("value/model.safetensors")).unwrap() == std::fs::read(resumed.join("value/model.safetensors")).unwrap());
}

/// sha256 of a file, hex.
fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex_lower(&Sha256::digest(std::fs::read(path).unwrap()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// At the default reward-model size (128 wide, 2 layers, 4,096-token vocabulary, 256-token
/// sequences, batches of 16) with two threads: two runs of one seed write the same bytes, a
/// single-threaded run too, and so does a run stopped after a checkpoint and resumed. Every
/// reduction adds in a fixed order, whatever the threads do.
#[test]
fn default_size_runs_are_bit_identical_repeated_resumed_and_on_one_thread() {
    let dir = scratch("train-determinism");
    let data = dir.join("pairs.jsonl");
    // Long responses (≈ 100–150 words), so sequences fill most of the 256 tokens.
    let mut rng = Rng::new(11);
    let rows: Vec<Value> = planted_pairs(96, 4)
        .into_iter()
        .map(|mut r| {
            for side in ["chosen", "rejected"] {
                let words = 100 + rng.below(50);
                let tail = sentence(&mut rng, words);
                r[side] = json!(format!("{} {tail}", r[side].as_str().unwrap()));
            }
            r
        })
        .collect();
    write_jsonl(&data, &rows);
    let train = |out: &Path, threads: &str, extra: &[&str]| {
        let mut args = vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--save-every", "2"];
        args.extend(extra);
        let o = Command::new(BIN).args(&args).env("RAYON_NUM_THREADS", threads).output().unwrap();
        assert!(o.status.success(), "rewardlab-train {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    };
    let (a, b, one, resumed) = (dir.join("a"), dir.join("b"), dir.join("one"), dir.join("resumed"));
    train(&a, "2", &[]);
    train(&b, "2", &[]);
    train(&one, "1", &[]);
    train(&resumed, "2", &["--stop-after", "3"]);
    assert!(!resumed.join("model.safetensors").exists(), "a stopped run writes no final model");
    train(&resumed, "2", &["--resume", resumed.to_str().unwrap()]);
    let want = sha256_file(&a.join("model.safetensors"));
    assert_eq!(sha256_file(&b.join("model.safetensors")), want, "two 2-thread runs of one seed differ");
    assert_eq!(sha256_file(&one.join("model.safetensors")), want, "a 1-thread run differs from a 2-thread one");
    assert_eq!(sha256_file(&resumed.join("model.safetensors")), want, "the stopped and resumed run differs from the straight one");
}

/// PPO's value network reads the policy's tokens: it starts from the reward model only when
/// that shares the policy's tokenizer and context, else from the policy (`auto`), and an
/// explicit `--value-init reward-model` that cannot work is refused with what to do. A policy
/// trained from scratch here gets the from-scratch learning rate.
#[test]
fn ppo_takes_its_value_network_from_the_reward_model_only_when_it_reads_the_policy_s_tokens() {
    let dir = scratch("train-value-init");
    let pairs = planted_pairs(120, 31);
    let (data, both, prompts) = (dir.join("pairs.jsonl"), dir.join("both.jsonl"), dir.join("prompts.jsonl"));
    write_jsonl(&data, &pairs);
    write_jsonl(&both, &pairs.iter().map(|p| json!({"prompt": p["prompt"], "completion": p["chosen"]})).collect::<Vec<_>>());
    write_jsonl(&prompts, &pairs[..8].iter().enumerate().map(|(i, p)| json!({"id": i, "prompt": p["prompt"]})).collect::<Vec<_>>());
    let policy = dir.join("policy");
    let mut a = vec!["sft", "--data", both.to_str().unwrap(), "--out", policy.to_str().unwrap()];
    a.extend(SMALL);
    run(&a);
    assert_eq!(read_json(&policy.join("config.json"))["rewardlab"]["from_scratch"], true);
    let rm = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend(SMALL.chunks(2).filter(|kv| !extra.contains(&kv[0])).flatten().copied());
        a.extend(extra);
        run(&a);
        out
    };
    let own = rm("rm-own", &[]);
    let shared = rm("rm-shared", &["--tokenizer", policy.to_str().unwrap()]);
    let short = rm("rm-short", &["--tokenizer", policy.to_str().unwrap(), "--max-len", "32"]);
    let ppo = |name: &str, rm: &Path, extra: &[&str]| {
        let out = dir.join(name);
        let mut a = vec!["ppo", "--policy", policy.to_str().unwrap(), "--reward-model", rm.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()];
        a.extend(["--out", out.to_str().unwrap(), "--iterations", "1", "--batch-size", "4", "--max-new-tokens", "8"]);
        a.extend(extra);
        (Command::new(BIN).args(&a).output().unwrap(), out)
    };
    let (refused, out) = ppo("refused", &own, &["--value-init", "reward-model"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && !out.join("model.safetensors").exists());
    assert!(err.contains("tokenizer") && err.contains("--value-init policy") && err.contains("--tokenizer"), "{err}");
    for (name, rm, want) in [("own", &own, "policy"), ("shared", &shared, "reward model"), ("short", &short, "policy")] {
        let (o, out) = ppo(name, rm, &[]);
        assert!(o.status.success(), "ppo with {name}:\n{}", String::from_utf8_lossy(&o.stderr));
        let ppo_cfg = read_json(&out.join("config.json"))["rewardlab"]["ppo"].clone();
        assert_eq!(ppo_cfg["value_init"], want, "the value network with the {name} reward model");
        assert_eq!(ppo_cfg["lr"], 5e-4, "a from-scratch policy's default learning rate");
        let value = read_json(&out.join("value/config.json"));
        assert_eq!(value["vocab_size"], read_json(&policy.join("config.json"))["vocab_size"], "the value network reads the policy's vocabulary");
    }
}

/// The trainer says which matrix-product kernels run, picks the CPU's best (AVX-512
/// `SkylakeX` where the CPU has AVX-512, even where Debian's OpenBLAS falls back to `Prescott`),
/// and a run on them learns what the generic SSE3 (`Prescott`) kernels learn, to rounding.
#[test]
fn training_on_the_chosen_kernels_matches_the_generic_kernels() {
    let dir = scratch("train-kernels");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &planted_pairs(120, 8));
    let train = |name: &str, core: Option<&str>| {
        let (out, metrics) = (dir.join(name), dir.join(format!("{name}.jsonl")));
        let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--metrics", metrics.to_str().unwrap()];
        a.extend(SMALL);
        let mut cmd = Command::new(BIN);
        cmd.args(&a).env_remove("OPENBLAS_CORETYPE").env("RAYON_NUM_THREADS", "2");
        if let Some(core) = core {
            cmd.env("OPENBLAS_CORETYPE", core);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let losses: Vec<f64> = std::fs::read_to_string(metrics)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"] == "step")
            .map(|v| v["loss"].as_f64().unwrap())
            .collect();
        (stderr, losses)
    };
    let (chosen, ours) = train("chosen", None);
    let (generic, theirs) = train("generic", Some("Prescott"));
    let line = |s: &str| s.lines().find(|l| l.contains("matrix products on")).map(str::to_string);
    let chosen_line = line(&chosen).expect("the trainer names its matrix-product path");
    assert!(line(&generic).unwrap().contains("Prescott"), "{generic}");
    let avx512 = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().split_whitespace().any(|f| f == "avx512bw");
    if avx512 {
        assert!(chosen_line.contains("SkylakeX"), "an AVX-512 CPU runs the AVX-512 kernels: {chosen_line}");
    }
    assert_eq!(ours.len(), theirs.len());
    assert!(!ours.is_empty());
    for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "step {}: loss {a} on {chosen_line}, {b} on Prescott's kernels", step + 1);
    }
}

/// `rm --ensemble 3`: member 0 in --out (a plain reward model), the others on bootstrap
/// resamples under ensemble/, the validation report with the ensemble's accuracy and its
/// calibration, and `score` writing each response's mean and spread over the members.
#[test]
fn an_ensemble_reports_its_calibration_and_scores_with_mean_and_spread() {
    let dir = scratch("train-ensemble");
    let (data, out) = (dir.join("pairs.jsonl"), dir.join("rm"));
    write_jsonl(&data, &planted_pairs(300, 12));
    let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--ensemble", "3", "--epochs", "2", "--lr", "3e-3"];
    a.extend(SMALL);
    run(&a);
    for m in ["model.safetensors", "ensemble/member-1/model.safetensors", "ensemble/member-2/model.safetensors"] {
        assert!(out.join(m).exists(), "{m}");
    }
    assert!(!out.join("ensemble/member-3").exists());
    let member1 = std::fs::read(out.join("ensemble/member-1/model.safetensors")).unwrap();
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() != member1, "members differ");
    let report = read_json(&out.join("config.json"))["rewardlab"]["ensemble"].clone();
    assert_eq!(report["members"], 3);
    let (acc, ece) = (report["accuracy"].as_f64().unwrap(), report["ece"].as_f64().unwrap());
    assert!(acc > 0.6 && (0.0..=0.5).contains(&ece), "{report}");
    assert_eq!(report["member_accuracy"].as_array().unwrap().len(), 3);
    // Scoring: the mean over the members, with the spread.
    let rows = dir.join("rows.jsonl");
    write_jsonl(&rows, &planted_pairs(20, 99));
    let scored = run(&["score", "--model", out.to_str().unwrap(), "--data", rows.to_str().unwrap(), "--out", "-"]);
    let lines: Vec<Value> = String::from_utf8_lossy(&scored.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 20);
    assert!(lines.iter().all(|l| l["chosen_reward_std"].as_f64().is_some_and(|s| s >= 0.0)));
    assert!(lines.iter().any(|l| l["chosen_reward_std"].as_f64().unwrap() > 0.0), "the members disagree somewhere");
    let right = lines.iter().filter(|l| l["chosen_reward"].as_f64() > l["rejected_reward"].as_f64()).count();
    assert!(right >= 14, "the ensemble mean prefers the planted word: {right} of 20");
    // One member alone scores as before, without a spread.
    let single = run(&["score", "--model", out.join("ensemble/member-1").to_str().unwrap(), "--data", rows.to_str().unwrap(), "--out", "-"]);
    let first: Value = serde_json::from_str(String::from_utf8_lossy(&single.stdout).lines().next().unwrap()).unwrap();
    assert!(first.get("chosen_reward_std").is_none() && first["chosen_reward"].is_number());
}
