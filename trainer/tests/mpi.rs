//! Data-parallel training under `mpirun -np 2` (built only with `--features mpi`; needs Open
//! MPI's `mpirun`): for `rm`, `sft`, `dpo` and `ppo` the loss curve over 20 steps is the one
//! process's with the same global batch (within 1e-5), a run stopped and resumed under MPI
//! ends exactly where an uninterrupted one does, and rank 0 alone writes the metrics.
//!
//! Every rank runs one thread (`RAYON_NUM_THREADS=1`), as does the one-process reference.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ppo_files, scratch, sentence, write_jsonl};
use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab-train");

fn check(out: std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed ({}):\n{}\n{stderr}", out.status, String::from_utf8_lossy(&out.stdout));
    stderr
}

/// `rewardlab-train ARGS` in one process with one thread.
fn single(args: &[&str]) -> String {
    check(Command::new(BIN).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap(), &format!("rewardlab-train {args:?}"))
}

/// `mpirun -np N rewardlab-train ARGS`, one thread a rank.
fn mpirun(np: usize, args: &[&str]) -> String {
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", &np.to_string(), "-x", "RAYON_NUM_THREADS=1", BIN])
        .args(args)
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .output()
        .unwrap();
    check(out, &format!("mpirun -np {np} rewardlab-train {args:?}"))
}

fn events(metrics: &Path, event: &str) -> Vec<Value> {
    std::fs::read_to_string(metrics).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["event"] == event).collect()
}

/// The same keys of two metric streams agree within `tol` (relative to the value's size, at
/// least absolute `tol`), row by row.
fn assert_close(a: &[Value], b: &[Value], keys: &[&str], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {} rows against {}", a.len(), b.len());
    let mut worst = vec![0f64; keys.len()];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        for (k, w) in keys.iter().zip(worst.iter_mut()) {
            let (p, q) = (x[k].as_f64().unwrap_or_else(|| panic!("{what}: no {k} in {x}")), y[k].as_f64().unwrap());
            let diff = (p - q).abs() / p.abs().max(1.0);
            *w = w.max(diff);
            assert!(diff <= tol, "{what}: row {i} {k}: {p} (one process) against {q} (2 ranks), off by {diff:e}");
        }
    }
    let shown: Vec<String> = keys.iter().zip(&worst).map(|(k, w)| format!("{k} {w:.1e}")).collect();
    eprintln!("{what}: {} rows agree; largest differences {}", a.len(), shown.join(", "));
}

/// Pairs whose chosen response holds "kindly"; lengths vary, so shards pad differently.
fn pairs(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let words = 2 + rng.below(4);
            let prompt = format!("Question: {}?\nAnswer:", sentence(&mut rng, words));
            let len = 3 + rng.below(6);
            json!({"prompt": prompt, "chosen": format!(" kindly {}", sentence(&mut rng, len)), "rejected": format!(" {}", sentence(&mut rng, len + 1))})
        })
        .collect()
}

const TINY: [&str; 10] = ["--n-embd", "32", "--n-layer", "2", "--n-head", "2", "--vocab-size", "300", "--max-len", "48"];

/// 160 examples, 8 a step, no validation split: 20 optimizer steps an epoch.
const STEPS: [&str; 8] = ["--batch-size", "8", "--val-fraction", "0", "--epochs", "1", "--lr", "3e-3"];

/// One process, 2 ranks, and 2 ranks stopped after 10 steps then resumed: the same 20 losses.
fn compare(dir: &Path, name: &str, args: &[&str], keys: &[&str]) {
    let run = |tag: &str, np: usize, extra: &[&str]| -> (PathBuf, PathBuf) {
        let out = dir.join(format!("{name}-{tag}"));
        let metrics = dir.join(format!("{name}-{tag}.jsonl"));
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--out", out.to_str().unwrap(), "--metrics", metrics.to_str().unwrap()]);
        a.extend(extra);
        match np {
            1 => single(&a),
            _ => mpirun(np, &a),
        };
        (out, metrics)
    };
    let (_, one) = run("one", 1, &[]);
    let (two_out, two) = run("two", 2, &[]);
    let (one, two) = (events(&one, "step"), events(&two, "step"));
    assert_eq!(one.len(), 20, "{name}: 20 steps");
    assert_close(&one, &two, keys, 1e-5, &format!("{name}: 1 process against 2 ranks"));
    for (x, y) in one.iter().zip(&two) {
        assert_eq!(x["examples"], y["examples"], "{name}: the same global batch");
    }

    let (_, part) = run("resumed", 2, &["--stop-after", "10", "--save-every", "5"]);
    assert_eq!(events(&part, "step").len(), 10, "{name}: stopped after 10 steps");
    let resumed_out = dir.join(format!("{name}-resumed"));
    let (resumed_out2, part2) = run("resumed", 2, &["--resume", resumed_out.to_str().unwrap()]);
    assert_eq!(resumed_out, resumed_out2);
    let resumed = events(&part2, "step");
    assert_eq!(resumed.len(), 20, "{name}: the metrics file holds steps 1–10, then 11–20 from the resumed run");
    for (x, y) in two.iter().zip(&resumed) {
        assert_eq!(x["step"], y["step"]);
        assert_eq!(x["loss"], y["loss"], "{name}: the resumed run's loss at step {} is the uninterrupted one's", x["step"]);
    }
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&two_out) == weights(&resumed_out), "{name}: the resumed run ends with the uninterrupted run's weights, bit for bit");
}

#[test]
fn rm_sft_and_dpo_on_two_ranks_follow_the_one_process_loss_curve_and_resume_exactly() {
    let dir = scratch("mpi-supervised");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &pairs(160, 1));
    let demos = dir.join("demos.jsonl");
    write_jsonl(&demos, &pairs(160, 2).iter().map(|p| json!({"prompt": p["prompt"], "completion": p["chosen"]})).collect::<Vec<_>>());
    let (d, m) = (data.to_str().unwrap(), demos.to_str().unwrap());

    let mut rm = vec!["rm", "--data", d];
    rm.extend(STEPS);
    rm.extend(TINY);
    compare(&dir, "rm", &rm, &["loss", "accuracy", "grad_norm"]);

    let mut sft = vec!["sft", "--data", m];
    sft.extend(STEPS);
    sft.extend(TINY);
    compare(&dir, "sft", &sft, &["loss", "accuracy", "grad_norm"]);

    // DPO from the SFT model just trained (one process's).
    let policy = dir.join("sft-one");
    let mut dpo = vec!["dpo", "--data", d, "--policy", policy.to_str().unwrap()];
    dpo.extend(STEPS);
    compare(&dir, "dpo", &dpo, &["loss", "accuracy", "grad_norm"]);

    // Rank 0 alone wrote the metrics: one line a step, none doubled.
    let lines = std::fs::read_to_string(dir.join("dpo-two.jsonl")).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("\"event\":\"step\"")).count(), 20);
}

#[test]
fn ppo_on_two_ranks_follows_the_one_process_curve_and_resumes_exactly() {
    let dir = scratch("mpi-ppo");
    let rows = pairs(200, 3);
    let (data, both, prompts) = ppo_files(&dir, &rows, 40);
    let (policy, rm) = (dir.join("policy"), dir.join("rm"));
    let mut a = vec!["sft", "--data", both.to_str().unwrap(), "--out", policy.to_str().unwrap(), "--lr", "3e-3"];
    a.extend(TINY);
    single(&a);
    let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", rm.to_str().unwrap(), "--lr", "3e-3", "--tokenizer", policy.to_str().unwrap()];
    a.extend(TINY);
    single(&a);

    let ppo = |tag: &str, np: usize, extra: &[&str]| -> (PathBuf, Vec<Value>) {
        let out = dir.join(format!("ppo-{tag}"));
        let metrics = dir.join(format!("ppo-{tag}.jsonl"));
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
            "--metrics",
            metrics.to_str().unwrap(),
            "--iterations",
            "20",
            "--batch-size",
            "8",
            "--mini-batch-size",
            "4",
            "--ppo-epochs",
            "2",
            "--max-new-tokens",
            "8",
            "--lr",
            "5e-4",
            "--kl-coef",
            "0.1",
        ];
        a.extend(extra);
        match np {
            1 => single(&a),
            _ => mpirun(np, &a),
        };
        (out, events(&metrics, "iteration"))
    };
    let keys = ["score", "kl", "entropy", "pg_loss", "vf_loss", "approxkl", "clipfrac", "ratio_mean", "ratio_var", "response_length", "eos_rate"];
    let (_, one) = ppo("one", 1, &[]);
    let (two_out, two) = ppo("two", 2, &[]);
    assert_eq!(one.len(), 20);
    assert_close(&one, &two, &keys, 1e-5, "ppo: 1 process against 2 ranks");

    ppo("resumed", 2, &["--stop-after", "10", "--save-every", "5"]);
    let resumed_out = dir.join("ppo-resumed");
    let (_, resumed) = ppo("resumed", 2, &["--resume", resumed_out.to_str().unwrap()]);
    assert_eq!(resumed.len(), 20);
    for (x, y) in two.iter().zip(&resumed) {
        for k in keys {
            assert_eq!(x[k], y[k], "ppo: the resumed run's {k} at iteration {} is the uninterrupted one's", x["iteration"]);
        }
    }
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&two_out) == weights(&resumed_out), "ppo: the resumed run ends with the uninterrupted run's policy, bit for bit");
}

/// A trainer built with `mpi` but started without `mpirun` is one process, as before; and a
/// command that cannot run on several processes says so.
#[test]
fn without_mpirun_it_is_one_process_and_generate_refuses_ranks() {
    let dir = scratch("mpi-plain");
    let data = dir.join("pairs.jsonl");
    write_jsonl(&data, &pairs(40, 4));
    let out = dir.join("rm");
    let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    a.extend(TINY);
    let log = single(&a);
    assert!(!log.contains("data-parallel"), "{log}");
    assert!(out.join("model.safetensors").exists());

    let prompts = dir.join("prompts.jsonl");
    write_jsonl(&prompts, &[json!({"id": 1, "prompt": "Question: river?"})]);
    let o = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            BIN,
            "generate",
            "--model",
            out.to_str().unwrap(),
            "--prompts",
            prompts.to_str().unwrap(),
            "--out",
            "-",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only rm, sft, dpo, ppo and bench run on several processes"), "{}", String::from_utf8_lossy(&o.stderr));
}
