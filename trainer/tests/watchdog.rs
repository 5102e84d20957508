//! The over-optimisation watchdog's trainer side on tiny real models (CPU): PPO logs √KL to its
//! starting policy and an ensemble's disagreement every iteration, keeps the policy on a √KL
//! grid with a manifest, optimises a conservative ensemble objective, and refuses bad flags.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ppo_files, scratch, sentence};
use rewardlab_trainer::rng::Rng;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab-train");
const SMALL: [&str; 10] = ["--n-embd", "64", "--n-layer", "2", "--n-head", "4", "--vocab-size", "400", "--max-len", "64"];

fn train(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(args: &[&str]) {
    let out = train(args);
    assert!(out.status.success(), "rewardlab-train {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Pairs whose chosen response holds the word "kindly" (the rejected never does).
fn kindly_pairs(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let prompt = format!("Question: {}?\nAnswer:", sentence(&mut rng, 5));
            let len = 6 + rng.below(6);
            let good = format!(" {} kindly {}", sentence(&mut rng, len / 2), sentence(&mut rng, len - len / 2));
            json!({"prompt": prompt, "chosen": good, "rejected": format!(" {}", sentence(&mut rng, len + 1))})
        })
        .collect()
}

#[test]
fn ppo_logs_sqrt_kl_and_ensemble_disagreement_and_keeps_the_policy_on_a_sqrt_kl_grid() {
    let dir = scratch("watchdog-ppo");
    let (data, both, prompts) = ppo_files(&dir, &kindly_pairs(300, 5), 32);
    let (policy, rm, single) = (dir.join("policy"), dir.join("rm"), dir.join("rm-single"));
    let mut a = vec!["sft", "--data", both.to_str().unwrap(), "--out", policy.to_str().unwrap(), "--lr", "3e-3"];
    a.extend(SMALL);
    ok(&a);
    let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", rm.to_str().unwrap(), "--epochs", "2", "--lr", "3e-3", "--ensemble", "2"];
    a.extend(["--tokenizer", policy.to_str().unwrap()]);
    a.extend(SMALL);
    ok(&a);
    let mut a = vec!["rm", "--data", data.to_str().unwrap(), "--out", single.to_str().unwrap(), "--epochs", "1", "--lr", "3e-3"];
    a.extend(SMALL);
    ok(&a);
    let ppo = |name: &str, rm: &Path, extra: &[&str]| {
        let (out, metrics) = (dir.join(name), dir.join(format!("{name}.jsonl")));
        let mut a = vec!["ppo", "--policy", policy.to_str().unwrap(), "--reward-model", rm.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()];
        a.extend(["--out", out.to_str().unwrap(), "--metrics", metrics.to_str().unwrap(), "--batch-size", "16", "--max-new-tokens", "12", "--lr", "5e-4"]);
        a.extend(extra);
        (train(&a), out, metrics)
    };

    // Bad flags: a clear refusal naming the flag and what it takes, and nothing written.
    for (extra, rm, want) in [
        (&["--reward-ensemble", "median"][..], &rm, "mean-minus-std"),
        (&["--kl-grid", "0"][..], &rm, "above 0"),
        (&["--kl-grid", "wide"][..], &rm, "above 0"),
        (&["--reward-ensemble", "min"][..], &single, "single reward model"),
        (&["--reward-ensemble", "mean-minus-std"][..], &single, "--ensemble K"),
    ] {
        let (o, out, _) = ppo("refused", rm, extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !out.join("model.safetensors").exists(), "{extra:?} was accepted");
        assert!(err.contains(want) && (err.contains("--reward-ensemble") || err.contains("--kl-grid")), "{extra:?}: {err}");
    }

    // No KL penalty, so the policy moves: √KL grows from 0 and passes grid points.
    let (o, out, metrics) = ppo("grid", &rm, &["--iterations", "12", "--kl-coef", "0", "--kl-grid", "0.5", "--reward-ensemble", "mean-minus-std"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["event"] == "iteration").collect();
    assert_eq!(rows.len(), 12);
    let sqrt_kl: Vec<f64> = rows.iter().map(|r| r["sqrt_kl"].as_f64().expect("sqrt_kl each iteration")).collect();
    assert!(sqrt_kl.iter().all(|d| d.is_finite() && *d >= 0.0), "{sqrt_kl:?}");
    assert!(sqrt_kl[0] < 0.3, "the first rollouts come from the starting policy itself: {sqrt_kl:?}");
    let furthest = sqrt_kl.iter().copied().fold(0.0, f64::max);
    assert!(furthest >= 1.0, "twelve unpenalised iterations move the policy: {sqrt_kl:?}");
    for r in &rows {
        let (score, mean, std) = (r["score"].as_f64().unwrap(), r["ensemble_mean"].as_f64().unwrap(), r["ensemble_std"].as_f64().unwrap());
        assert!(std >= 0.0 && score <= mean + 1e-9, "mean − std is below the mean: {r}");
    }
    assert!(rows.iter().any(|r| r["ensemble_std"].as_f64().unwrap() > 0.0), "the two members disagree somewhere");
    eprintln!("√KL by iteration: {sqrt_kl:.3?}");

    let manifest = read_json(&out.join("kl-grid/manifest.json"));
    assert_eq!((manifest["grid"].as_f64(), manifest["estimator"].as_str()), (Some(0.5), Some("k3")));
    assert_eq!(manifest["start"], policy.to_str().unwrap());
    let kept = manifest["checkpoints"].as_array().unwrap();
    assert!(!kept.is_empty());
    let mut previous = 0.0;
    for c in kept {
        let (point, at, it) = (c["point"].as_f64().unwrap(), c["sqrt_kl"].as_f64().unwrap(), c["iteration"].as_u64().unwrap());
        assert!(point > previous && (point / 0.5 - (point / 0.5).round()).abs() < 1e-9, "grid points rise on the grid: {manifest}");
        assert!(at >= point && (at - sqrt_kl[it as usize - 1]).abs() < 1e-12, "kept when √KL passed its point: {c}");
        assert!(sqrt_kl[..it as usize - 1].iter().all(|&d| d < point), "first passed at iteration {it}: {sqrt_kl:?}");
        assert!(c["score"].is_number() && c["ensemble_std"].is_number());
        let name = c["name"].as_str().unwrap();
        assert_eq!(name, format!("sqrt-kl-{point:.3}"));
        let folder = out.join("kl-grid").join(name);
        let config = read_json(&folder.join("config.json"));
        assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
        assert!(folder.join("model.safetensors").exists() && folder.join("tokenizer.json").exists());
        previous = point;
    }
    assert!(previous <= furthest + 1e-9 && furthest - previous < 0.5, "the last point passed is kept: {manifest}");
    // A grid checkpoint is a policy like any other: it generates.
    let first = out.join("kl-grid").join(kept[0]["name"].as_str().unwrap());
    let samples = dir.join("samples.jsonl");
    ok(&["generate", "--model", first.to_str().unwrap(), "--prompts", prompts.to_str().unwrap(), "--out", samples.to_str().unwrap(), "--max-new-tokens", "4"]);
    assert_eq!(std::fs::read_to_string(&samples).unwrap().lines().count(), 32);
    let cfg = read_json(&out.join("config.json"));
    assert_eq!((cfg["rewardlab"]["ppo"]["reward_ensemble"].as_str(), cfg["rewardlab"]["ppo"]["reward_members"].as_u64()), (Some("mean-minus-std"), Some(2)));

    // Killed after 3 of 6 iterations and resumed: the same grid checkpoints and manifest as a
    // run never stopped (the repeated iterations replace what the killed run had kept).
    let flags = ["--iterations", "6", "--kl-coef", "0", "--kl-grid", "0.5", "--save-every", "2"];
    let (o, straight, _) = ppo("straight", &rm, &flags);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, resumed, _) = ppo("resumed", &rm, &[&flags[..], &["--stop-after", "3"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed_str = resumed.to_str().unwrap().to_string();
    let (o, _, _) = ppo("resumed", &rm, &[&flags[..], &["--resume", &resumed_str]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (m1, m2) = (read_json(&straight.join("kl-grid/manifest.json")), read_json(&resumed.join("kl-grid/manifest.json")));
    assert!(!m1["checkpoints"].as_array().unwrap().is_empty());
    assert_eq!(m1["checkpoints"], m2["checkpoints"]);
    for c in m1["checkpoints"].as_array().unwrap() {
        let w = |root: &Path| std::fs::read(root.join("kl-grid").join(c["name"].as_str().unwrap()).join("model.safetensors")).unwrap();
        assert!(w(&straight) == w(&resumed), "{c}");
    }

    // A single model: no ensemble figures, √KL still logged, no grid without the flag.
    let (o, out, metrics) = ppo("single", &single, &["--iterations", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: Value = serde_json::from_str(std::fs::read_to_string(&metrics).unwrap().lines().next().unwrap()).unwrap();
    assert!(line["sqrt_kl"].is_number() && line.get("ensemble_std").is_none(), "{line}");
    assert!(!out.join("kl-grid").exists());
}
