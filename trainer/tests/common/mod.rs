//! What the trainer's test binaries share: scratch folders, JSONL files, word salad and PPO's
//! input files. (Each binary uses a part of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

/// The trainer under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rewardlab-train");

/// A model small enough to train in a second.
pub const TINY: [&str; 10] = ["--n-embd", "32", "--n-layer", "1", "--n-head", "2", "--vocab-size", "300", "--max-len", "48"];

/// Runs the trainer with `args`, which must succeed.
pub fn train(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "rewardlab-train {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A fresh folder `name-<pid>` under the target's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write_jsonl(path: &Path, rows: &[Value]) {
    std::fs::write(path, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
}

pub const WORDS: [&str; 24] = [
    "river", "stone", "cloud", "paper", "garden", "window", "silver", "orange", "market", "engine", "forest", "candle", "bridge", "winter", "letter", "planet",
    "motor", "violin", "harbor", "pencil", "copper", "meadow", "rocket", "saddle",
];

/// `n` words drawn from [`WORDS`].
pub fn sentence(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
}

/// PPO's inputs from preference rows, in `dir`: the pairs (for the reward model), both
/// responses of each as demonstrations (for the policy), and the first `n_prompts` prompts.
pub fn ppo_files(dir: &Path, rows: &[Value], n_prompts: usize) -> (PathBuf, PathBuf, PathBuf) {
    let (data, both, prompts) = (dir.join("pairs.jsonl"), dir.join("both.jsonl"), dir.join("prompts.jsonl"));
    write_jsonl(&data, rows);
    let demonstrations: Vec<Value> = rows
        .iter()
        .flat_map(|p| [json!({"prompt": p["prompt"], "completion": p["chosen"]}), json!({"prompt": p["prompt"], "completion": p["rejected"]})])
        .collect();
    write_jsonl(&both, &demonstrations);
    write_jsonl(&prompts, &rows[..n_prompts].iter().enumerate().map(|(i, p)| json!({"id": i, "prompt": p["prompt"]})).collect::<Vec<_>>());
    (data, both, prompts)
}
