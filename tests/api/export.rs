use std::collections::HashSet;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{items_jsonl, spawn_app, Api};

async fn judge_all(api: &Api, slug: &str, reverse: bool) -> usize {
    let mut n = 0;
    while let Some(task) = api.next_task(slug).await {
        let mut ranking: Vec<Vec<Value>> = task["responses"].as_array().unwrap().iter().map(|r| vec![r["id"].clone()]).collect();
        // Rank by the response text so labellers can agree or disagree on purpose.
        ranking.sort_by_key(|t| {
            let id = &t[0];
            let text = task["responses"].as_array().unwrap().iter().find(|r| r["id"] == *id).unwrap()["text"].as_str().unwrap().to_string();
            text
        });
        if reverse {
            ranking.reverse();
        }
        let res = api.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": format!("k{n}"), "ranking": ranking})).await;
        assert_eq!(res.status(), 201);
        n += 1;
    }
    n
}

#[tokio::test]
async fn an_export_is_an_immutable_snapshot_whose_download_matches_its_sha256() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 2).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(4, 3, "a")).await;
    assert_eq!(judge_all(&lead, "alpha", false).await, 4);
    let export: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!(export["files"][0]["rows"], 12);

    // More work arrives after the snapshot: more items and another labeller's judgements.
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(2, 3, "b")).await;
    let other = app.member("other@example.org", "alpha", Role::Labeller).await;
    assert_eq!(judge_all(&other, "alpha", true).await, 6);

    let url = format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap());
    let res = lead.get(&url).await;
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let body = res.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), export["files"][0]["sha256"].as_str().unwrap());
    assert_eq!(body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 12);
    let row: Value = serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    for field in ["schema_version", "judgement_id", "prompt", "chosen", "rejected", "chosen_model", "rejected_model", "chosen_rank", "rejected_rank", "k", "tie", "weight", "labeller", "time_on_task_ms", "created_at"] {
        assert!(row.get(field).is_some(), "comparisons rows carry {field}");
    }
    assert!(row["labeller"].as_str().unwrap().starts_with("L-"), "pseudonymous, not an email");
    assert!(!String::from_utf8_lossy(&body).contains("@example.org"));

    let newer: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!(newer["files"][0]["rows"], 12 + 18);
}

#[tokio::test]
async fn preferences_are_split_by_prompt_and_ties_dropped_and_margins_added_on_request() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(60, 3, "p")).await;
    let mut n = 0;
    while let Some(task) = lead.next_task("alpha").await {
        let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
        let res = lead.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": format!("k{n}"), "ranking": [[ids[0], ids[1]], [ids[2]]]})).await;
        assert_eq!(res.status(), 201);
        n += 1;
    }
    let export: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "preferences", "margin": true, "test_percent": 30})).await.json().await.unwrap();
    let id = export["id"].as_str().unwrap();
    let part = |p: &'static str| {
        let lead = lead.clone();
        let id = id.to_string();
        async move { lead.get(&format!("/api/v1/exports/{id}/download?part={p}")).await.text().await.unwrap() }
    };
    let (train, test) = (part("train").await, part("test").await);
    let prompts = |text: &str| text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt"].as_str().unwrap().to_string()).collect::<HashSet<_>>();
    assert!(prompts(&train).is_disjoint(&prompts(&test)), "no prompt in both splits");
    assert!(!prompts(&test).is_empty() && !prompts(&train).is_empty());
    let rows = train.lines().count() + test.lines().count();
    assert_eq!(rows, 60 * 2, "of the 3 pairs per ranking, the tie is dropped");
    let row: Value = serde_json::from_str(train.lines().next().unwrap()).unwrap();
    assert_eq!(row["margin"], 1.0);
}

#[tokio::test]
async fn the_dashboard_reports_progress_agreement_and_model_win_rates() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 3).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(5, 2, "d")).await;
    let a = app.member("a@example.org", "alpha", Role::Labeller).await;
    let b = app.member("b@example.org", "alpha", Role::Labeller).await;
    let c = app.member("c@example.org", "alpha", Role::Labeller).await;
    judge_all(&a, "alpha", false).await;
    judge_all(&b, "alpha", false).await;
    judge_all(&c, "alpha", true).await;
    let d: Value = lead.get("/api/v1/projects/alpha/dashboard").await.json().await.unwrap();
    assert_eq!(d["items_total"], 5);
    assert_eq!(d["items_complete"], 5);
    assert_eq!(d["judgements"], 15);
    let rate = |email: &str| d["labellers"].as_array().unwrap().iter().find(|l| l["email"] == email).unwrap()["agreement"].as_f64().unwrap();
    assert!((rate("a@example.org") - 0.5).abs() < 1e-9, "a agrees with b, not c");
    assert!(rate("c@example.org").abs() < 1e-9, "c disagrees with both");
    // "answer 0" sorts before "answer 1": m0 wins for a and b, m1 for c.
    let m0 = d["models"].as_array().unwrap().iter().find(|m| m["model"] == "m0").unwrap();
    assert_eq!((m0["wins"].as_i64(), m0["losses"].as_i64()), (Some(10), Some(5)));
    assert!((m0["win_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
}
