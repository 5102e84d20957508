//! Retraining without forgetting, end to end with a real worker and trainer: each run records
//! its data mixture (which export snapshots, how much is new and old), `replay_share` trains on
//! the new rows plus a seeded share of old ones, and `merge_with`/`merge_alpha` interpolate the
//! new reward model with an earlier one.

use std::path::PathBuf;
use std::time::Duration;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, PASSWORD};
use crate::runs::{log_of, run_json, scratch, tiny, wait_final, Worker};

/// `n` preference pairs tagged `tag` whose chosen response says "kindly".
pub(crate) fn pairs(tag: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{}\n",
                json!({"prompt": format!("{tag} question {i}?"), "chosen": format!("a kindly answer {i}"), "rejected": format!("a blunt reply {i}")})
            )
        })
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_records_its_data_mixture_replays_a_share_of_old_rows_and_merges_with_an_earlier_model() {
    let app = spawn_app().await;
    app.project("mix", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "mix", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/mix/items", pairs("a", 40)).await.status(), 200);

    // Settings are checked, naming the field.
    let res = lead.post("/api/v1/projects/mix/runs", &json!({"kind": "rm", "config": {"replay_share": 0.95}})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("config.replay_share: expected a number from 0 to 0.9"));
    let res = lead.post("/api/v1/projects/mix/runs", &json!({"kind": "dpo", "config": {"merge_with": "shared/sft"}})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("config.merge_alpha"));
    let res = lead.post("/api/v1/projects/mix/runs", &json!({"kind": "rm", "config": {"merge_with": "../x", "merge_alpha": 0.5}})).await;
    assert_eq!(res.status(), 400);

    // The first reward model: every row is new.
    let store = scratch("store-mix");
    let _worker = Worker::start(&app, &store, "w-mix", 20.0);
    let res = lead.post("/api/v1/projects/mix/runs", &json!({"kind": "rm", "config": tiny(json!({"epochs": 1, "lr": 0.003}))})).await;
    assert_eq!(res.status(), 201);
    let first = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let run = wait_final(&app, &lead, &first, Duration::from_secs(180)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &first).await);
    let m = &run["input"]["resolved"]["data_mixture"];
    assert_eq!(m["rows"], json!({"new": 40, "old": 0}), "{m}");
    assert_eq!(m["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(m["snapshots"][0]["export_id"], run["export_id"]);
    assert_eq!(m["share"]["new"], 1.0);

    // New labels arrive; the second trains on them plus a replay of half as many old rows, and
    // is merged half-way with the first.
    assert_eq!(lead.post_bytes("/api/v1/projects/mix/items", pairs("b", 20)).await.status(), 200);
    let merge_with = format!("runs/{first}/attempt-1/model");
    let config = tiny(json!({"epochs": 1, "lr": 0.003, "replay_share": 0.5, "seed": 5, "merge_with": merge_with, "merge_alpha": 0.5}));
    let res = lead.post("/api/v1/projects/mix/runs", &json!({"kind": "rm", "config": config})).await;
    assert_eq!(res.status(), 201);
    let second = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let run = wait_final(&app, &lead, &second, Duration::from_secs(180)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &second).await);
    let m = &run["input"]["resolved"]["data_mixture"];
    assert_eq!(m["rows"], json!({"new": 20, "old": 40}), "the first run's snapshot holds the old rows: {m}");
    assert_eq!(m["used"], json!({"new": 20, "old": 20, "total": 40}), "{m}");
    assert_eq!(m["share"]["old"], 0.5);
    assert_eq!(m["replay_share"], 0.5);
    let snaps = m["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["export_id"], run_json(&lead, &first).await["export_id"], "the earlier snapshot is the first run's");
    assert_eq!((snaps[0]["rows"].as_u64(), snaps[0]["used"].as_u64(), snaps[0]["new"].as_bool()), (Some(40), Some(20), Some(false)));
    assert_eq!((snaps[1]["rows"].as_u64(), snaps[1]["used"].as_u64(), snaps[1]["new"].as_bool()), (Some(20), Some(20), Some(true)));
    let log = log_of(&app, &second).await;
    assert!(log.contains("training on 40 (20 old)"), "{log}");
    assert!(log.contains("merged with"), "the trainer merged: {log}");
    let dir = PathBuf::from(run["model_dir"].as_str().unwrap());
    let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["rewardlab"]["merge"]["alpha"], 0.5);
    assert!(config["rewardlab"]["merge"]["with"].as_str().unwrap().ends_with(&merge_with), "{config}");
    assert!(dir.join("unmerged.safetensors").exists());

    // The run page shows the mixture.
    let session = app.login("lead@example.org", PASSWORD).await;
    let page = session.get(&format!("/projects/mix/runs/{second}")).await.text().await.unwrap();
    assert!(page.contains("<h2>Data mixture</h2>") && page.contains("id=\"mixture\""), "{page}");
    assert!(page.contains("Trained on 40 rows: 50% new, 50% old (replay share 0.5, seed 5)."), "{page}");
    let first8 = &run_json(&lead, &first).await["export_id"].as_str().unwrap()[..8].to_string();
    assert!(page.contains(&format!("<code>{first8}</code>")), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_empty_snapshot_is_skipped_when_a_run_replays_old_rows() {
    let app = spawn_app().await;
    app.project("empty", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "empty", Role::Lead).await;
    let store = scratch("store-empty");
    let _worker = Worker::start(&app, &store, "w-empty", 20.0);

    // A run on a project with nothing labelled fails, leaving the worker's empty snapshot behind.
    let config = tiny(json!({"epochs": 1, "lr": 0.003, "replay_share": 0.3}));
    let res = lead.post("/api/v1/projects/empty/runs", &json!({"kind": "rm", "config": config.clone()})).await;
    assert_eq!(res.status(), 201);
    let first = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let run = wait_final(&app, &lead, &first, Duration::from_secs(180)).await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("export is empty"), "{run}");
    let exports: Value = lead.get("/api/v1/projects/empty/exports").await.json().await.unwrap();
    let exports = exports["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["files"][0]["rows"], 0, "{exports:?}");
    let empty = exports[0]["id"].as_str().unwrap().to_string();

    // Once labels arrive, a run replaying old rows skips the empty snapshot instead of failing on it.
    assert_eq!(lead.post_bytes("/api/v1/projects/empty/items", pairs("c", 30)).await.status(), 200);
    let res = lead.post("/api/v1/projects/empty/runs", &json!({"kind": "rm", "config": config})).await;
    let second = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let run = wait_final(&app, &lead, &second, Duration::from_secs(180)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &second).await);
    let m = &run["input"]["resolved"]["data_mixture"];
    assert_eq!(m["rows"], json!({"new": 30, "old": 0}), "{m}");
    let snaps = m["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "only the run's own snapshot: {m}");
    assert_ne!(snaps[0]["export_id"].as_str(), Some(empty.as_str()));
}
