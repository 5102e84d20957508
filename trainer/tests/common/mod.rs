//! What the trainer's test binaries share: scratch folders, JSONL files, word salad and PPO's
//! input files. (Each binary uses a part of it.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

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
