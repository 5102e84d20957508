use std::io::Write;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{items_jsonl, shared_data, spawn_app, PASSWORD};

#[tokio::test]
async fn a_bad_line_names_its_line_and_field_and_stores_nothing() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(5, 3, "ok")).await.status(), 200);

    let mut body = items_jsonl(1500, 3, "new");
    body.extend_from_slice(b"{\"prompt\": \"p\", \"responses\": [{\"model\": \"a\", \"text\": 7}, {\"text\": \"b\"}]}\n");
    let res = lead.post_bytes("/api/v1/projects/alpha/items", body).await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 1501") && msg.contains("responses[0].text"), "{msg}");
    assert_eq!(app.count("SELECT count(*) FROM items").await, 5, "the first 1500 good lines were rolled back, earlier items kept");
    assert_eq!(app.count("SELECT count(*) FROM responses").await, 15);

    let res = lead.post_bytes("/api/v1/projects/alpha/items", b"{\"prompt\": \"p\"\n".to_vec()).await;
    let err: Value = res.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("line 1: not valid JSON"), "{err}");
}

#[tokio::test]
async fn importing_the_same_file_again_adds_nothing_and_gzip_is_understood() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    let plain = b"{\"prompt\": \"no id\", \"responses\": [{\"text\": \"a\"}, {\"text\": \"b\"}]}\n{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}, {\"role\": \"user\", \"content\": \"more\"}], \"responses\": [{\"text\": \"a\"}, {\"text\": \"b\"}]}\n".to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let first: Value = lead.post_bytes("/api/v1/projects/alpha/items", gz.clone()).await.json().await.unwrap();
    assert_eq!(first["items_added"], 2);
    let again: Value = lead.post_bytes("/api/v1/projects/alpha/items", gz).await.json().await.unwrap();
    assert_eq!(again["items_added"], 0);
    assert_eq!(again["duplicates"], 2);
    let plain_again: Value = lead.post_bytes("/api/v1/projects/alpha/items", plain).await.json().await.unwrap();
    assert_eq!(plain_again["items_added"], 0, "content hashes match across gzip and plain");
    let turns: i64 = app.count("SELECT max(jsonb_array_length(prompt))::bigint FROM items").await;
    assert_eq!(turns, 3, "a multi-turn prompt keeps its turns");
}

#[tokio::test]
async fn the_browser_upload_imports_a_file() {
    let app = spawn_app().await;
    app.user("boss@example.org", true).await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let s = app.login("boss@example.org", PASSWORD).await;
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(items_jsonl(7, 2, "up")).file_name("items.jsonl"));
    let res = s
        .http
        .post(format!("{}/projects/alpha/import?csrf={}", s.addr, s.csrf))
        .header("Cookie", format!("__Host-rl_session={}", s.cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("imported 7 items"));
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(items_jsonl(1, 2, "x")).file_name("items.jsonl"));
    let res = s
        .http
        .post(format!("{}/projects/alpha/import", s.addr))
        .header("Cookie", format!("__Host-rl_session={}", s.cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "no CSRF token, no import");
    assert_eq!(app.count("SELECT count(*) FROM items").await, 7);
}

#[tokio::test]
async fn the_self_instruct_outputs_import_as_a_k8_ranking_project_and_export_back() {
    let Some(path) = shared_data("self-instruct-user-oriented-252x8.jsonl") else { return };
    let app = spawn_app().await;
    app.project("si", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "si", Role::Lead).await;
    let source = std::fs::read_to_string(&path).unwrap();
    let report: Value = lead.post_bytes("/api/v1/projects/si/items", source.clone().into_bytes()).await.json().await.unwrap();
    assert_eq!(report["items_added"], 252);
    assert_eq!(report["responses_added"], 252 * 8);

    // One labeller ranks three items; the export carries their texts back exactly.
    let mut ranked = Vec::new();
    for i in 0..3 {
        let task = lead.next_task("si").await.unwrap();
        assert_eq!(task["responses"].as_array().unwrap().len(), 8);
        assert!(task["responses"][0].get("model").is_none(), "model names are hidden from labellers");
        assert_eq!(lead.submit_in_order(&task, &format!("k{i}")).await.status(), 201);
        ranked.push(task);
    }
    let export: Value = lead.post("/api/v1/projects/si/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!(export["files"][0]["rows"], 3 * 28, "C(8,2) = 28 pairs per ranking");
    let body = lead.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.text().await.unwrap();
    let rows: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let originals: Vec<Value> = source.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for row in &rows {
        let original = originals.iter().find(|o| o["prompt"] == row["prompt"]).expect("the prompt comes back verbatim");
        let text_of = |model: &Value| original["responses"].as_array().unwrap().iter().find(|r| r["model"] == *model).unwrap()["text"].clone();
        assert_eq!(row["chosen"], text_of(&row["chosen_model"]));
        assert_eq!(row["rejected"], text_of(&row["rejected_model"]));
        assert_eq!(row["k"], 8);
        assert!((row["weight"].as_f64().unwrap() - 1.0 / 28.0).abs() < 1e-12);
        assert!(row["chosen_rank"].as_i64().unwrap() < row["rejected_rank"].as_i64().unwrap());
    }
    let prompts: Value = lead.post("/api/v1/projects/si/exports", &json!({"format": "prompts"})).await.json().await.unwrap();
    assert_eq!(prompts["files"][0]["rows"], 252);
}

#[tokio::test]
async fn the_hh_rlhf_pairs_import_as_pairwise_items_with_their_human_choice() {
    let Some(path) = shared_data("hh-rlhf-harmless-base-test-part-a.jsonl.gz") else { return };
    let app = spawn_app().await;
    app.project("hh", TaskKind::Pairwise, 3).await;
    let lead = app.member("lead@example.org", "hh", Role::Lead).await;
    let report: Value = lead.post_bytes("/api/v1/projects/hh/items", std::fs::read(&path).unwrap()).await.json().await.unwrap();
    let added = report["items_added"].as_i64().unwrap();
    let lines = report["lines"].as_i64().unwrap();
    assert_eq!(lines, 1156);
    assert_eq!(added + report["duplicates"].as_i64().unwrap(), 1156);
    assert_eq!(report["judgements_added"].as_i64().unwrap(), added, "each pair keeps its human choice");

    let export: Value = lead.post("/api/v1/projects/hh/exports", &json!({"format": "preferences", "test_percent": 20})).await.json().await.unwrap();
    let id = export["id"].as_str().unwrap();
    let train = lead.get(&format!("/api/v1/exports/{id}/download?part=train")).await.text().await.unwrap();
    let test = lead.get(&format!("/api/v1/exports/{id}/download?part=test")).await.text().await.unwrap();
    let rows: Vec<Value> = train.lines().chain(test.lines()).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len() as i64, added);
    assert!(test.lines().count() > 100 && train.lines().count() > 700, "about 20% test");

    // Every exported row is exactly an original pair: prompt + chosen is the original chosen
    // dialogue and prompt + rejected the original rejected one, byte for byte.
    let mut decoder = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
    let mut source = String::new();
    std::io::Read::read_to_string(&mut decoder, &mut source).unwrap();
    let originals: std::collections::HashSet<(String, String)> = source
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["chosen"].as_str().unwrap().to_string(), v["rejected"].as_str().unwrap().to_string()))
        .collect();
    let rebuilt: std::collections::HashSet<(String, String)> = rows
        .iter()
        .map(|r| {
            let prompt = r["prompt"].as_str().unwrap();
            (format!("{prompt}{}", r["chosen"].as_str().unwrap()), format!("{prompt}{}", r["rejected"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(rebuilt.len(), rows.len(), "no two rows alike");
    let strays: Vec<&(String, String)> = rebuilt.difference(&originals).collect();
    assert!(strays.is_empty(), "{} of {} rows do not rebuild their original pair, e.g. {:?}", strays.len(), rows.len(), strays.first());
    assert!(rows.iter().all(|r| r["prompt"].as_str().unwrap().ends_with("\n\nAssistant:")));
    for row in &rows {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["chosen", "prompt", "rejected"], "exactly TRL's columns");
    }
}
