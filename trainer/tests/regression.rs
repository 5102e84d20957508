//! `eval-regression` on tiny real models: a reward model's accuracy is the share of pairs
//! `score` orders right; a policy against itself has no implicit-reward margin (accuracy 0, a
//! tie being no preference) and wins exactly half against itself (every answer the same); a
//! policy alone is refused, saying what it needs.

mod common;

use std::path::Path;
use std::process::Command;

use common::{ppo_files, scratch, sentence, train, BIN, TINY};
use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

/// The figures of an `eval-regression` report on stdout, by name: (value, n).
fn figures(args: &[&str]) -> std::collections::HashMap<String, (f64, u64)> {
    let out = train(&[&["eval-regression"], args].concat());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    r["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["metric"].as_str().unwrap().to_string(), (f["value"].as_f64().unwrap(), f["n"].as_u64().unwrap())))
        .collect()
}

fn pairs(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let prompt = format!("Question: {}?\nAnswer:", sentence(&mut rng, 4));
            json!({"prompt": prompt, "chosen": format!(" {} kindly {}", sentence(&mut rng, 3), sentence(&mut rng, 2)), "rejected": format!(" {}", sentence(&mut rng, 6))})
        })
        .collect()
}

#[test]
fn each_kind_of_model_is_measured_on_the_regression_set() {
    let dir = scratch("eval-regression");
    let (data, both, _) = ppo_files(&dir, &pairs(120, 1), 10);
    let set = dir.join("set.jsonl");
    common::write_jsonl(&set, &pairs(30, 2));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (rm, policy) = (dir.join("rm"), dir.join("policy"));
    train(&[&["rm", "--data", &s(&data), "--out", &s(&rm), "--lr", "3e-3"], &TINY[..]].concat());
    train(&[&["sft", "--data", &s(&both), "--out", &s(&policy), "--lr", "3e-3"], &TINY[..]].concat());

    // A reward model: the share of pairs `score` orders right.
    let f = figures(&["--model", &s(&rm), "--data", &s(&set)]);
    let scores = dir.join("scores.jsonl");
    train(&["score", "--model", &s(&rm), "--data", &s(&set), "--out", &s(&scores)]);
    let rows: Vec<Value> = std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let right = rows.iter().filter(|r| r["chosen_reward"].as_f64().unwrap() > r["rejected_reward"].as_f64().unwrap()).count();
    assert_eq!(f["rm_accuracy"], (right as f64 / 30.0, 30));

    // A policy against itself: no margin anywhere, so no pair is ordered (DPO), and every
    // answer ties (PPO: half a win each), on at most --max-prompts prompts.
    let f = figures(&["--model", &s(&policy), "--reference", &s(&policy), "--data", &s(&set)]);
    assert_eq!(f["dpo_reward_accuracy"], (0.0, 30));
    let f = figures(&[
        "--model",
        &s(&policy),
        "--reference",
        &s(&policy),
        "--reward-model",
        &s(&rm),
        "--data",
        &s(&set),
        "--max-prompts",
        "5",
        "--max-new-tokens",
        "6",
    ]);
    assert_eq!(f["ppo_win_rate"], (0.5, 5));
    assert!(f["ppo_mean_reward"].0.is_finite() && f["ppo_mean_reward"].1 == 5, "{f:?}");

    // A policy needs something to be measured against.
    let out = Command::new(BIN).args(["eval-regression", "--model", &s(&policy), "--data", &s(&set)]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reference"), "{}", String::from_utf8_lossy(&out.stderr));
}
