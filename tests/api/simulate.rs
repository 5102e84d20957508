//! `rewardlab simulate` end to end: a tiny planted pool replayed through fifo, uncertainty and
//! thompson with real training (the real `rewardlab-train`, tiny models, CPU); bad flags and
//! bad files are refused with the flag or the line named.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::runs::scratch;

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab");

fn trainer() -> PathBuf {
    let p = Path::new(BIN).with_file_name("rewardlab-train");
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace` (it builds the trainer)", p.display());
    p
}

/// HH-style pairs whose chosen reply says "gladly" and whose rejected one says "never".
fn planted_pool(dir: &Path, n: usize) -> PathBuf {
    let words = ["river", "stone", "cloud", "paper", "garden", "window", "silver", "orange"];
    let mut out = String::new();
    for i in 0..n {
        let q = format!("{} {} {}", words[i % 8], words[(i / 8) % 8], words[(i * 3 + 1) % 8]);
        let line = json!({"chosen": format!("\n\nHuman: {q}?\n\nAssistant: gladly, {q}"), "rejected": format!("\n\nHuman: {q}?\n\nAssistant: never {q}")});
        out.push_str(&format!("{line}\n"));
    }
    let path = dir.join("pool.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

fn simulate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("simulate").args(args).env("REWARDLAB_TRAIN", trainer()).env_remove("DATABASE_URL").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_replay_compares_strategies_with_real_training_and_writes_its_chart() {
    let dir = scratch("simulate");
    let pool = planted_pool(&dir, 60);
    let chart = dir.join("chart.svg");
    let (ok, stdout, stderr) = simulate(&[
        "--data",
        pool.to_str().unwrap(),
        "--strategy",
        "fifo,uncertainty,thompson",
        "--budget",
        "24",
        "--rounds",
        "2",
        "--noise",
        "0.1",
        "--seeds",
        "2",
        "--ensemble",
        "2",
        "--epochs",
        "3",
        "--n-embd",
        "16",
        "--max-len",
        "32",
        "--vocab-size",
        "200",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("60 pairs; 12 held out per seed"), "{stdout}");
    for s in ["fifo", "uncertainty", "thompson"] {
        let row = stdout.lines().find(|l| l.starts_with(s)).unwrap_or_else(|| panic!("no row for {s}: {stdout}"));
        // Two evaluation points (12 and 24 labels), each a mean ± interval over the 2 seeds.
        assert_eq!(row.matches('±').count(), 2, "{row}");
    }
    assert!(stdout.contains("labels needed to reach fifo's final mean accuracy"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("fifo") && l.contains("24")), "fifo reaches its own final accuracy: {stdout}");
    // A line per seed, strategy and round (the first round's model is shared by the strategies).
    assert_eq!(stderr.matches("held-out accuracy").count(), 2 * 3 * 2, "{stderr}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 3 && svg.contains("thompson"), "{svg}");
}

#[test]
fn bad_flags_and_bad_files_are_refused_naming_the_flag_or_the_line() {
    let dir = scratch("simulate-bad");
    let pool = planted_pool(&dir, 30);
    let p = pool.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--data", p, "--budget", "10", "--strategy", "random"], "--strategy: expected fifo, newest-first, uncertainty or thompson"),
        (vec!["--data", p, "--budget", "10", "--strategy", "newest-first"], "newest-first has no meaning in a replay"),
        (vec!["--data", p, "--budget", "10", "--noise", "0.7"], "--noise: expected a share from 0 to 0.5"),
        (vec!["--data", p, "--budget", "2", "--rounds", "4"], "--budget (2) must be at least --rounds (4)"),
        (vec!["--data", p, "--budget", "29"], "--budget 29 needs at least that many"),
        (vec!["--data", p, "--budget", "10", "--seeds", "0"], "--seeds: expected 1 to 100"),
        (vec!["--data", "/nonexistent/pairs.jsonl", "--budget", "10"], "--data: cannot open /nonexistent/pairs.jsonl"),
        (vec!["--data", p], "--budget"),
    ];
    for (args, expect) in cases {
        let (ok, _, stderr) = simulate(&args);
        assert!(!ok && stderr.contains(expect), "{args:?}: {stderr}");
    }
    let bad = dir.join("bad.jsonl");
    let mut text = std::fs::read_to_string(&pool).unwrap();
    text.push_str("{\"chosen\": \"only one side\"}\n");
    std::fs::write(&bad, text).unwrap();
    let (ok, _, stderr) = simulate(&["--data", bad.to_str().unwrap(), "--budget", "10"]);
    assert!(!ok && stderr.contains("bad.jsonl:31: \"rejected\" is missing"), "{stderr}");
}
