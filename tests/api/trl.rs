//! Handing models to the Hugging Face ecosystem and back: reward model and policy trained by
//! the platform's worker are continued in TRL (`trainer/scripts/continue_in_trl.py`:
//! `RewardTrainer`, `DPOTrainer`) on the project's preferences export, put in the model
//! store's shared area, and used again by the platform's runs (generate with the DPO policy,
//! PPO scored by the TRL reward model) and by `rewardlab-train score`, whose scores
//! transformers reproduces.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{shared_data, spawn_app};
use crate::openapi::python;
use crate::runs::{log_of, scratch, tiny, wait_final, Worker};

/// The CI venv's Python if it has torch, transformers and trl (`.ci/run` installs them).
fn python_with_trl() -> Option<PathBuf> {
    let python = python()?;
    let ok = Command::new(&python).args(["-c", "import torch, transformers, trl"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{} lacks torch, transformers or trl: skipping; .ci/run installs them", python.display());
        assert!(std::env::var_os("CI").is_none(), "the CI venv lacks torch, transformers or trl");
        return None;
    }
    Some(python)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trainer/scripts").join(name)
}

/// Runs a command to its end; panics with its output when it fails. Returns its stdout.
async fn run(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the command starts")).await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "{shown} failed:\n{stdout}\n{stderr}");
    stdout
}

fn continue_in_trl(python: &Path, kind: &str, model: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(script("continue_in_trl.py")).args([kind, "--model"]).arg(model).arg("--data").arg(data).arg("--out").arg(out);
    cmd.args(["--steps", "6", "--batch-size", "4"]).env("HF_DATASETS_OFFLINE", "1").env("HF_HUB_OFFLINE", "1").env("TOKENIZERS_PARALLELISM", "false");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_continued_in_trl_come_back_for_generate_score_and_ppo() {
    let Some(python) = python_with_trl() else { return };
    let Some(hh) = shared_data("hh-rlhf-harmless-base-test-part-a.jsonl.gz") else { return };
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(hh).unwrap()).read_to_string(&mut text).unwrap();
    let pairs: String = text.lines().take(64).map(|l| format!("{l}\n")).collect();

    let app = spawn_app().await;
    app.project("hh", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@hh.org", "hh", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/hh/items", pairs.into_bytes()).await.status(), 200);
    let store = scratch("trl");
    let _worker = Worker::start(&app, &store, "trl-worker", 10.0);
    let start = |body: Value| {
        let lead = lead.clone();
        async move {
            let res = lead.post("/api/v1/projects/hh/runs", &body).await;
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
        }
    };
    let succeeded = |id: String| {
        let (app, lead) = (&app, &lead);
        async move {
            let run = wait_final(app, lead, &id, Duration::from_secs(300)).await;
            assert_eq!(run["status"], "succeeded", "{}", log_of(app, &id).await);
            PathBuf::from(run["model_dir"].as_str().unwrap_or_default())
        }
    };

    // A reward model and a policy trained on the platform (sharing the project's tokenizer).
    let rm = succeeded(start(json!({"kind": "rm", "config": tiny(json!({"epochs": 1}))})).await).await;
    let sft = succeeded(start(json!({"kind": "sft", "config": tiny(json!({"epochs": 1}))})).await).await;

    // The preferences export's training split, as a lead downloads it.
    let export: Value = lead.post("/api/v1/projects/hh/exports", &json!({"format": "preferences", "test_percent": 10})).await.json().await.unwrap();
    let res = lead.get(&format!("/api/v1/exports/{}/download?part=train", export["id"].as_str().unwrap())).await;
    assert_eq!(res.status(), 200);
    let train = store.join("train.jsonl");
    std::fs::write(&train, res.bytes().await.unwrap()).unwrap();

    // Continued in TRL, written into the store's shared area.
    let (trl_rm, trl_dpo) = (store.join("shared/trl-rm"), store.join("shared/trl-dpo"));
    for (kind, from, to) in [("rm", &rm, &trl_rm), ("dpo", &sft, &trl_dpo)] {
        let out = run(continue_in_trl(&python, kind, from, &train, to)).await;
        let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(summary["steps"], 6, "{out}");
        assert!(summary["last_loss"].as_f64().is_some_and(f64::is_finite), "{out}");
        assert!(to.join("model.safetensors").exists() && to.join("tokenizer.json").exists());
    }
    let config: Value = serde_json::from_slice(&std::fs::read(trl_rm.join("config.json")).unwrap()).unwrap();
    assert!(config["rewardlab"]["reward_bias"].is_number(), "transformers keeps rewardlab's keys in config.json: {config}");

    // rewardlab-train scores with TRL's reward model exactly as transformers does.
    let scores = store.join("scores.jsonl");
    let mut score = Command::new(crate::runs::trainer());
    score.args(["score", "--model"]).arg(&trl_rm).arg("--data").arg(&train).arg("--out").arg(&scores);
    run(score).await;
    let mut check = Command::new(&python);
    check.arg(script("check_hf_equivalence.py")).arg("--model").arg(&trl_rm).arg("--data").arg(&train).arg("--scores").arg(&scores);
    check.args(["--lm"]).arg(&trl_dpo);
    run(check).await;

    // The platform's runs take them back from the shared area.
    let ppo = start(json!({
        "kind": "ppo",
        "config": {"iterations": 1, "batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 1, "max_new_tokens": 6},
        "input": {"policy_path": "shared/trl-dpo", "reward_model_path": "shared/trl-rm"}
    }))
    .await;
    let ppo_dir = succeeded(ppo.clone()).await;
    assert!(ppo_dir.join("model.safetensors").exists());
    let gen =
        start(json!({"kind": "generate", "config": {"max_prompts": 4, "max_new_tokens": 6, "seed": 1}, "input": {"policy_path": "shared/trl-dpo"}})).await;
    succeeded(gen.clone()).await;
    let generated: i64 = sqlx::query_scalar("SELECT count(*) FROM responses r JOIN items i ON i.id = r.item_id WHERE i.metadata->>'generated_by_run' = $1")
        .bind(&gen)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(generated >= 4, "the TRL policy's samples came back as labelling tasks ({generated} responses)");
}
