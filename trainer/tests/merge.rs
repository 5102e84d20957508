//! `--merge-with DIR --merge-alpha A` and `merge-sweep` on tiny real models: α = 0 keeps the
//! new weights bit for bit, α = 1 gives the old ones, 0.5 their mean; models of another shape
//! are refused naming what differs; the sweep's figures are those `score` gives.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{scratch, sentence, train, write_jsonl, BIN, TINY};
use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "rewardlab-train {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Pairs whose chosen response holds `word`.
fn pairs(n: usize, seed: u64, word: &str) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let prompt = format!("Question: {}?\nAnswer:", sentence(&mut rng, 4));
            let good = format!(" {} {word} {}", sentence(&mut rng, 3), sentence(&mut rng, 2));
            let bad = format!(" {}", sentence(&mut rng, 6));
            json!({"prompt": prompt, "chosen": good, "rejected": bad})
        })
        .collect()
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Every tensor of `a` equals `f` of the same tensors of `b` and `c`, bit for bit.
fn assert_weights(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>, c: &HashMap<String, Tensor>, f: impl Fn(f32, f32) -> f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for (name, t) in a {
        let (x, y, z) = (values(t), values(&b[name]), values(&c[name]));
        assert_eq!(x.len(), y.len());
        for i in 0..x.len() {
            assert!(x[i].to_bits() == f(y[i], z[i]).to_bits(), "{what}: {name}[{i}] is {} not {}", x[i], f(y[i], z[i]));
        }
    }
}

fn args<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    [head, tail].concat()
}

#[test]
fn merging_after_training_interpolates_the_weights_and_refuses_other_shapes() {
    let dir = scratch("merge-rm");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &pairs(160, 1, "kindly"));
    let (d, s) = (data.to_str().unwrap(), |p: &Path| p.to_str().unwrap().to_string());
    let old = dir.join("old");
    train(&args(&["rm", "--data", d, "--out", &s(&old), "--lr", "3e-3"], &TINY));
    let trained = |alpha: &str| {
        let out = dir.join(format!("new-{alpha}"));
        train(&args(
            &["rm", "--data", d, "--init", &s(&old), "--out", &s(&out), "--lr", "3e-3", "--seed", "7", "--merge-with", &s(&old), "--merge-alpha", alpha],
            &[],
        ));
        out
    };
    let old_w = tensors(&old.join("model.safetensors"));
    let n0 = trained("0");
    let n1 = trained("1");
    let n5 = trained("0.5");
    let new_w = tensors(&n0.join("unmerged.safetensors"));
    assert_weights(&tensors(&n0.join("model.safetensors")), &new_w, &old_w, |x, _| x, "α 0 is the new model");
    assert_weights(&tensors(&n1.join("model.safetensors")), &new_w, &old_w, |_, y| y, "α 1 is the old model");
    // The same seed trains the same weights each time, so the three share θ_new.
    assert_weights(&tensors(&n5.join("unmerged.safetensors")), &new_w, &old_w, |x, _| x, "training is deterministic");
    assert_weights(&tensors(&n5.join("model.safetensors")), &new_w, &old_w, |x, y| ((x as f64 + y as f64) / 2.0) as f32, "α 0.5 is the mean");
    assert!(new_w.keys().any(|k| values(&new_w[k]) != values(&old_w[k])), "training changed the weights");
    let config = read_json(&n5.join("config.json"));
    assert_eq!(config["rewardlab"]["merge"]["alpha"], 0.5);
    assert_eq!(config["rewardlab"]["merge"]["with"], s(&old));
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification", "still a Hugging Face reward model");

    // Another shape, another tokenizer: refused, naming what differs.
    let wide = dir.join("wide");
    train(&args(&["rm", "--data", d, "--out", &s(&wide), "--n-embd", "48", "--n-layer", "1", "--n-head", "2", "--vocab-size", "300", "--max-len", "48"], &[]));
    let e = refused(&["merge-sweep", "--new", &s(&n0), "--old", &s(&wide), "--data", d]);
    assert!(e.contains("n_embd (32 against 48)"), "{e}");
    let e = refused(&args(&["rm", "--data", d, "--out", &s(&dir.join("x")), "--merge-with", &s(&wide), "--merge-alpha", "0.5"], &TINY));
    assert!(e.contains("--merge-with") && e.contains("differ in"), "{e}");
    let other_tok = dir.join("other-tok");
    train(&args(&["rm", "--data", d, "--out", &s(&other_tok), "--seed", "3", "--val-fraction", "0.5"], &TINY));
    let tokenizers_differ = std::fs::read_to_string(other_tok.join("tokenizer.json")).unwrap() != std::fs::read_to_string(old.join("tokenizer.json")).unwrap();
    if tokenizers_differ {
        let e = refused(&["merge-sweep", "--new", &s(&n0), "--old", &s(&other_tok), "--data", d]);
        assert!(e.contains("tokenizers differ"), "{e}");
    }

    // Flags are checked with a clear error.
    let e = refused(&args(&["rm", "--data", d, "--out", &s(&dir.join("y")), "--merge-with", &s(&old), "--merge-alpha", "1.5"], &TINY));
    assert!(e.contains("--merge-alpha") && e.contains("expected a number from 0 to 1"), "{e}");
    let e = refused(&args(&["rm", "--data", d, "--out", &s(&dir.join("y")), "--merge-with", &s(&old)], &TINY));
    assert!(e.contains("--merge-alpha"), "{e}");
    let e = refused(&["merge-sweep", "--new", &s(&n0), "--old", &s(&old), "--data", d, "--alphas", "0,x"]);
    assert!(e.contains("--alphas") && e.contains("expected a number from 0 to 1"), "{e}");
}

/// The share of pairs `score` orders right with a model.
fn score_accuracy(model: &Path, data: &Path, dir: &Path) -> f64 {
    let out = dir.join("scores.jsonl");
    train(&["score", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let rows: Vec<Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.iter().filter(|r| r["chosen_reward"].as_f64().unwrap() > r["rejected_reward"].as_f64().unwrap()).count() as f64 / rows.len() as f64
}

#[test]
fn a_sweep_reports_each_alpha_on_a_regression_set_and_writes_the_best_merge() {
    let dir = scratch("merge-sweep");
    // The old model learned "kindly"; the new one, started from it, learns "gladly" instead.
    let (old_data, new_data, regression) = (dir.join("old.jsonl"), dir.join("new.jsonl"), dir.join("regression.jsonl"));
    write_jsonl(&old_data, &pairs(200, 1, "kindly"));
    write_jsonl(&new_data, &pairs(200, 2, "gladly"));
    write_jsonl(&regression, &pairs(60, 3, "kindly"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (old, new) = (dir.join("old"), dir.join("new"));
    train(&args(&["rm", "--data", &s(&old_data), "--out", &s(&old), "--lr", "3e-3", "--epochs", "2"], &TINY));
    train(&["rm", "--data", &s(&new_data), "--init", &s(&old), "--out", &s(&new), "--lr", "3e-3", "--epochs", "2"]);
    let report = dir.join("report.json");
    let best = dir.join("best");
    train(&[
        "merge-sweep",
        "--new",
        &s(&new),
        "--old",
        &s(&old),
        "--data",
        &s(&regression),
        "--alphas",
        "0,0.5,1",
        "--out",
        &s(&best),
        "--report",
        &s(&report),
    ]);
    let r = read_json(&report);
    let results = r["results"].as_array().unwrap();
    let acc: Vec<f64> = results.iter().map(|x| x["accuracy"].as_f64().unwrap()).collect();
    eprintln!("regression accuracy by α 0, 0.5, 1: {acc:?}; best α {}", r["best_alpha"]);
    assert_eq!(results.iter().map(|x| x["alpha"].as_f64().unwrap()).collect::<Vec<_>>(), [0.0, 0.5, 1.0]);
    assert_eq!(r["pairs"], 60);
    // α 0 is the new model and α 1 the old one: the figures `score` gives them.
    assert_eq!(acc[0], score_accuracy(&new, &regression, &dir), "α 0");
    assert_eq!(acc[2], score_accuracy(&old, &regression, &dir), "α 1");
    let top = acc.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(r["best_accuracy"].as_f64().unwrap(), top);
    let best_alpha = r["best_alpha"].as_f64().unwrap();
    assert_eq!(acc[[0.0, 0.5, 1.0].iter().position(|a| *a == best_alpha).unwrap()], top, "the best α has the best figure");
    // The best merge is a model directory `score` reads, with the figure the sweep gave it.
    assert_eq!(read_json(&best.join("config.json"))["rewardlab"]["merge"]["alpha"].as_f64(), Some(best_alpha));
    assert_eq!(score_accuracy(&best, &regression, &dir), top);

    // Policies: an SFT model merged after DPO, swept on the same pairs by log-likelihood.
    let sft_data = dir.join("both.jsonl");
    let both: Vec<Value> = pairs(120, 4, "kindly")
        .iter()
        .flat_map(|p| [json!({"prompt": p["prompt"], "completion": p["chosen"]}), json!({"prompt": p["prompt"], "completion": p["rejected"]})])
        .collect();
    write_jsonl(&sft_data, &both);
    let (policy, dpo) = (dir.join("policy"), dir.join("dpo"));
    train(&args(&["sft", "--data", &s(&sft_data), "--out", &s(&policy), "--lr", "3e-3"], &TINY));
    train(&[
        "dpo",
        "--policy",
        &s(&policy),
        "--data",
        &s(&old_data),
        "--out",
        &s(&dpo),
        "--lr",
        "1e-3",
        "--max-len",
        "48",
        "--merge-with",
        &s(&policy),
        "--merge-alpha",
        "0.25",
    ]);
    assert_eq!(read_json(&dpo.join("config.json"))["rewardlab"]["merge"]["alpha"], 0.25);
    let out = train(&["merge-sweep", "--new", &s(&dpo), "--old", &s(&policy), "--data", &s(&regression), "--alphas", "0,1", "--report", "-"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["metric"].as_str().unwrap().contains("log-probability"), "{r}");
    for x in r["results"].as_array().unwrap() {
        let a = x["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{r}");
    }
}
