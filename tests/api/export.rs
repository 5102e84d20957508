use std::collections::HashSet;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{items_jsonl, spawn_app, Api, PASSWORD};

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
        let res = api
            .post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": format!("k{n}"), "ranking": ranking}))
            .await;
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
    for field in [
        "schema_version",
        "judgement_id",
        "prompt",
        "chosen",
        "rejected",
        "chosen_model",
        "rejected_model",
        "chosen_rank",
        "rejected_rank",
        "k",
        "tie",
        "weight",
        "labeller",
        "time_on_task_ms",
        "created_at",
    ] {
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
        let res = lead
            .post(
                &format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()),
                &json!({"idempotency_key": format!("k{n}"), "ranking": [[ids[0], ids[1]], [ids[2]]]}),
            )
            .await;
        assert_eq!(res.status(), 201);
        n += 1;
    }
    let export: Value =
        lead.post("/api/v1/projects/alpha/exports", &json!({"format": "preferences", "margin": true, "test_percent": 30})).await.json().await.unwrap();
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

/// Judges every task of a pairwise project in turn: `how(n)` gives the body's extra fields and
/// whether the pair is a tie. Returns the prompts judged, in order.
async fn judge_pairs(api: &Api, slug: &str, how: impl Fn(usize) -> (Value, bool)) -> Vec<String> {
    let mut prompts = Vec::new();
    while let Some(task) = api.next_task(slug).await {
        let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
        let (mut body, tie) = how(prompts.len());
        body["idempotency_key"] = json!(format!("k{}", prompts.len()));
        body["ranking"] = if tie { json!([[ids[0], ids[1]]]) } else { json!([[ids[0]], [ids[1]]]) };
        let res = api.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &body).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        prompts.push(task["prompt"][0]["content"].as_str().unwrap().to_string());
    }
    prompts
}

async fn download(api: &Api, export: &Value, part: &str) -> Vec<Value> {
    let text = api.get(&format!("/api/v1/exports/{}/download?part={part}", export["id"].as_str().unwrap())).await.text().await.unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn preferences_mark_ties_leave_out_both_bad_pairs_unless_asked_and_record_the_test_share_used() {
    let app = spawn_app().await;
    app.project("pairs", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "pairs", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/pairs/items", items_jsonl(3, 2, "t")).await;
    // The first pair is an ordinary preference, the second a tie, the third "both bad".
    let prompts = judge_pairs(&lead, "pairs", |n| match n {
        0 => (json!({"strength": 2}), false),
        1 => (json!({}), true),
        _ => (json!({"strength": 1, "both_bad": true}), false),
    })
    .await;
    assert_eq!(prompts.len(), 3);

    let plain: Value = lead.post("/api/v1/projects/pairs/exports", &json!({"format": "preferences", "test_percent": 0})).await.json().await.unwrap();
    let rows = download(&lead, &plain, "train").await;
    assert_eq!(rows.len(), 1, "the tie and the both-bad pair are left out: {rows:?}");
    assert_eq!(rows[0]["prompt"], prompts[0].as_str());
    assert_eq!(rows[0].as_object().unwrap().len(), 3, "exactly TRL's columns");

    let all: Value = lead
        .post("/api/v1/projects/pairs/exports", &json!({"format": "preferences", "test_percent": 0, "include_ties": true, "include_both_bad": true}))
        .await
        .json()
        .await
        .unwrap();
    let rows = download(&lead, &all, "train").await;
    assert_eq!(rows.len(), 3);
    let row = |p: &str| rows.iter().find(|r| r["prompt"] == p).unwrap().clone();
    assert_eq!((row(&prompts[0])["tie"].clone(), row(&prompts[0])["both_bad"].clone()), (json!(false), json!(false)));
    assert_eq!((row(&prompts[1])["tie"].clone(), row(&prompts[1])["both_bad"].clone()), (json!(true), json!(false)));
    assert_eq!((row(&prompts[2])["tie"].clone(), row(&prompts[2])["both_bad"].clone()), (json!(false), json!(true)));

    // The share of prompts held out is recorded as used, also when it was left to its default.
    let default: Value = lead.post("/api/v1/projects/pairs/exports", &json!({"format": "preferences"})).await.json().await.unwrap();
    assert_eq!(default["options"]["test_percent"], 10);
    let listed: Value = lead.get("/api/v1/projects/pairs/exports").await.json().await.unwrap();
    assert!(listed["exports"].as_array().unwrap().iter().all(|e| e["options"]["test_percent"].is_number()), "{listed}");
}

#[tokio::test]
async fn a_test_share_above_90_percent_is_refused_naming_the_field() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(3, 2, "a")).await;
    for percent in [150, 100, 91] {
        let res = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "preferences", "test_percent": percent})).await;
        assert_eq!(res.status(), 400, "test_percent {percent}");
        let text = res.text().await.unwrap();
        assert!(text.contains("test_percent") && text.contains("0 to 90"), "{text}");
    }
    // The lead's export form checks the same, and takes the same options.
    let session = app.login("lead@example.org", PASSWORD).await;
    for bad in ["150", "ten"] {
        let res = session.post_form("/projects/alpha/exports", &[("csrf", &session.csrf), ("format", "preferences"), ("test_percent", bad)]).await;
        assert_eq!(res.status(), 400, "test_percent {bad}");
        assert!(res.text().await.unwrap().contains("test_percent"));
    }
    assert_eq!(app.count("SELECT count(*) FROM exports").await, 0);
    assert_eq!(lead.post("/api/v1/projects/alpha/exports", &json!({"format": "preferences", "test_percent": 90})).await.status(), 201);
    let form = [("csrf", session.csrf.as_str()), ("format", "preferences"), ("test_percent", "20"), ("include_ties", "true"), ("include_both_bad", "true")];
    assert_eq!(session.post_form("/projects/alpha/exports", &form).await.status(), 303);
    let listed: Value = lead.get("/api/v1/projects/alpha/exports").await.json().await.unwrap();
    let options = &listed["exports"][0]["options"];
    assert_eq!(
        (options["test_percent"].as_u64(), options["include_ties"].as_bool(), options["include_both_bad"].as_bool()),
        (Some(20), Some(true), Some(true))
    );
}

#[tokio::test]
async fn an_sft_export_of_a_ranking_project_holds_the_response_each_judgement_ranked_first() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(4, 3, "s")).await;
    // Ranked by text, reversed: "answer 2" is best; the last item's top two are tied.
    let mut n = 0;
    while let Some(task) = lead.next_task("alpha").await {
        let mut rs: Vec<(String, Value)> =
            task["responses"].as_array().unwrap().iter().map(|r| (r["text"].as_str().unwrap().to_string(), r["id"].clone())).collect();
        rs.sort_by(|a, b| b.0.cmp(&a.0));
        let ranking = if n == 3 { json!([[rs[0].1, rs[1].1], [rs[2].1]]) } else { json!([[rs[0].1], [rs[1].1], [rs[2].1]]) };
        let res = lead
            .post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": format!("k{n}"), "ranking": ranking}))
            .await;
        assert_eq!(res.status(), 201);
        n += 1;
    }
    let export: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "sft"})).await.json().await.unwrap();
    let rows = download(&lead, &export, "all").await;
    assert_eq!(rows.len(), 3, "one row per judgement with a single best response: {rows:?}");
    for row in &rows {
        let i = row["prompt"].as_str().unwrap().strip_prefix("s question ").unwrap();
        assert_eq!(row["completion"], format!("s answer 2 to {i}"));
        assert_eq!(row.as_object().unwrap().len(), 2);
    }
}

/// Whether `v` has the type `feature` declares (in `datasets`' `Features.to_dict()` form).
fn has_type(v: &Value, feature: &Value) -> bool {
    if v.is_null() {
        return true;
    }
    match feature {
        Value::Array(f) => v.as_array().is_some_and(|items| items.iter().all(|x| !x.is_null() && has_type(x, &f[0]))),
        Value::Object(f) if f.get("_type") == Some(&json!("Value")) => match f["dtype"].as_str().unwrap() {
            "string" => v.is_string(),
            "int64" => v.is_i64() || v.is_u64(),
            "float64" => v.is_f64(),
            "bool" => v.is_boolean(),
            other => panic!("unexpected dtype {other}"),
        },
        Value::Object(fields) => v.as_object().is_some_and(|o| o.len() == fields.len() && fields.iter().all(|(k, f)| o.get(k).is_some_and(|x| has_type(x, f)))),
        _ => panic!("unexpected feature {feature}"),
    }
}

#[tokio::test]
async fn every_row_carries_every_declared_column_with_its_declared_type_even_when_all_are_empty() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(6, 3, "c")).await;
    judge_all(&lead, "alpha", false).await;
    for body in [
        json!({"format": "comparisons"}),
        json!({"format": "preferences", "test_percent": 50, "margin": true, "include_ties": true, "include_both_bad": true}),
        json!({"format": "preferences"}),
        json!({"format": "sft"}),
        json!({"format": "prompts"}),
    ] {
        let export: Value = lead.post("/api/v1/projects/alpha/exports", &body).await.json().await.unwrap();
        assert_eq!(export["schema_version"], 1);
        let features = export["features"].as_object().unwrap_or_else(|| panic!("{export}"));
        let mut rows = 0;
        for part in export["files"].as_array().unwrap() {
            for row in download(&lead, &export, part["part"].as_str().unwrap()).await {
                let row = row.as_object().unwrap();
                let mut keys: Vec<&String> = row.keys().collect();
                let mut declared: Vec<&String> = features.keys().collect();
                keys.sort();
                declared.sort();
                assert_eq!(keys, declared, "{body}: every row carries exactly the declared columns");
                for (k, v) in row {
                    assert!(has_type(v, &features[k]), "{body}: column {k} = {v} is not a {}", features[k]);
                }
                rows += 1;
            }
        }
        assert!(rows > 0, "{body}");
    }
    // No labeller set a flag: the flag columns are all empty lists, and still declared lists of strings.
    let export: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let rows = download(&lead, &export, "all").await;
    assert!(rows.iter().all(|r| r["chosen_flags"] == json!([]) && r["chosen_provenance"].is_null()));
    assert_eq!(export["features"]["chosen_flags"], json!([{"dtype": "string", "_type": "Value"}]));
    assert_eq!(export["features"]["chosen_provenance"]["checkpoint_sha256"], json!({"dtype": "string", "_type": "Value"}));
    assert_eq!(export["features"]["strength"], json!({"dtype": "int64", "_type": "Value"}));
}

/// A generated item as a `generate` run stores it: the policy's response, with its provenance
/// in the response metadata, beside an earlier model's response.
fn generated_items(n: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let meta = json!({"model_dir": "/store/runs/p/attempt-1/model", "checksum": format!("sha256:{}", "ab".repeat(32)), "temperature": 0.7, "top_p": 1.0,
            "max_new_tokens": 12, "seed": 3, "sample": 0, "tokens": 12, "finish_reason": "length",
            "run_id": "0190a1b2-0000-7000-8000-000000000001", "generate_run": "0190a1b2-0000-7000-8000-000000000002", "checkpoint": "/store/runs/p/attempt-1/model"});
        let line = json!({"id": format!("gen-{i}"), "prompt": format!("question {i}"), "metadata": {"generated_by_run": "0190a1b2-0000-7000-8000-000000000002"},
            "responses": [{"model": "ppo-<b>0190a1b2</b>", "text": format!("new <script>alert({i})</script>"), "metadata": meta}, {"model": "base", "text": format!("old {i}")}]});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

#[tokio::test]
async fn generated_responses_carry_their_provenance_into_the_comparisons_export_and_onto_the_leads_item_page() {
    let app = spawn_app().await;
    app.project("gen", TaskKind::Pairwise, 1).await;
    app.project("other", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "gen", Role::Lead).await;
    let labeller = app.member("lab@example.org", "gen", Role::Labeller).await;
    app.member("other-lead@example.org", "other", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/gen/items", generated_items(2)).await.status(), 200);
    judge_pairs(&labeller, "gen", |_| (json!({"strength": 2, "comment": "<i>close</i>"}), false)).await;

    let export: Value = lead.post("/api/v1/projects/gen/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let rows = download(&lead, &export, "all").await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let (generated, other) = if row["chosen_model"] == "base" { ("rejected", "chosen") } else { ("chosen", "rejected") };
        let p = &row[format!("{generated}_provenance")];
        assert_eq!(p["checkpoint_sha256"], "ab".repeat(32), "{row}");
        assert_eq!(p["policy_run"], "0190a1b2-0000-7000-8000-000000000001");
        assert_eq!(p["generate_run"], "0190a1b2-0000-7000-8000-000000000002");
        assert_eq!((p["temperature"].as_f64(), p["max_new_tokens"].as_i64(), p["seed"].as_i64()), (Some(0.7), Some(12), Some(3)));
        assert!(row[format!("{other}_provenance")].is_null(), "an imported response has none");
    }

    // The lead's item page shows the responses, their provenance and the judgement, escaped.
    let item = rows[0]["item_id"].as_str().unwrap();
    let url = format!("/projects/gen/items/{item}");
    let session = app.login("lead@example.org", PASSWORD).await;
    let res = session.get(&url).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    for shown in [
        "ab".repeat(32).as_str(),
        "temperature 0.7",
        "max_new_tokens 12",
        "seed 3",
        "/store/runs/p/attempt-1/model",
        "0190a1b2-0000-7000-8000-000000000001",
        "lab@example.org",
    ] {
        assert!(page.contains(shown), "the item page shows {shown}");
    }
    let escaped = |s: &str| page.contains(&s.replace('<', "&lt;").replace('>', "&gt;")) || page.contains(&s.replace('<', "&#60;").replace('>', "&#62;"));
    assert!(escaped("ppo-<b>0190a1b2<") && escaped("new <script>alert(0)<") && escaped("<i>close<"), "texts are escaped: {page}");
    assert!(!page.contains("<script>alert(") && !page.contains("<i>close"));

    // Only the project's leads see it: a labeller is refused, another project's lead learns nothing.
    assert_eq!(app.login("lab@example.org", PASSWORD).await.get(&url).await.status(), 403);
    let stranger = app.login("other-lead@example.org", PASSWORD).await;
    assert_eq!(stranger.get(&url).await.status(), 404);
    assert_eq!(stranger.get(&format!("/projects/other/items/{item}")).await.status(), 404, "an item of another project");
    assert_eq!(session.get("/projects/gen/items/not-an-id").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_that_stop_reading_leave_the_api_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    app.project("big", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "big", Role::Lead).await;
    // 40 imported pairs of 150 KB responses: a 12 MB export, more than socket buffers hold.
    let mut pairs = String::new();
    for i in 0..40 {
        pairs.push_str(
            &json!({"prompt": format!("q{i}"), "chosen": format!("{i} {}", "a".repeat(150_000)), "rejected": format!("{i} {}", "b".repeat(150_000))})
                .to_string(),
        );
        pairs.push('\n');
    }
    assert_eq!(lead.post_bytes("/api/v1/projects/big/items", pairs.into_bytes()).await.status(), 200);
    let export: Value = lead.post("/api/v1/projects/big/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let id = export["id"].as_str().unwrap();
    let body = lead.get(&format!("/api/v1/exports/{id}/download")).await.bytes().await.unwrap();
    assert!(body.len() > 12_000_000);
    assert_eq!(hex::encode(Sha256::digest(&body)), export["files"][0]["sha256"].as_str().unwrap());

    // More stalled downloads than the pool has connections: each reads its headers, then nothing.
    let host = app.addr.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..24 {
        let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!("GET /api/v1/exports/{id}/download HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n\r\n", lead.token);
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the download");
            head.extend_from_slice(&buf[..n]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..head.len().min(200)]));
        stalled.push(tcp);
    }
    for _ in 0..3 {
        let res = lead.get("/api/v1/projects").await;
        assert_eq!(res.status(), 200, "the API still answers while {} downloads stall", stalled.len());
    }
    assert_eq!(lead.post("/api/v1/projects/big/exports", &json!({"format": "prompts"})).await.status(), 201);
    drop(stalled);
}

#[tokio::test]
async fn an_export_taken_before_provenance_columns_existed_still_downloads_its_recorded_bytes() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(3, 3, "o")).await;
    judge_all(&lead, "alpha", false).await;
    let export: Value = lead.post("/api/v1/projects/alpha/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!(export["options"]["revision"], 4);
    // What the writer of revision 1 wrote: the same rows without the provenance and quality columns.
    let id: rewardlab::domain::ExportId = export["id"].as_str().unwrap().parse().unwrap();
    let e = rewardlab::db::exports::get(&mut app.pool.acquire().await.unwrap(), id).await.unwrap().unwrap();
    let mut now = Vec::new();
    rewardlab::export::write_part(&app.pool, e.project_id, e.format(), &e.options, &e.snapshot, "all", &mut now).await.unwrap();
    let old = String::from_utf8(now).unwrap().replace(",\"chosen_provenance\":null", "").replace(",\"rejected_provenance\":null", "");
    let old = old.replace(",\"labeller_gold_score\":null", "").replace(",\"item_agreement\":null", "").replace(",\"review\":\"unreviewed\"", "");
    let old_sha = hex::encode(Sha256::digest(old.as_bytes()));
    // Stored as an export of before the upgrade is: no revision in its options, its sha256 then.
    sqlx::query("UPDATE exports SET options = options - 'revision', files = jsonb_set(files, '{0,sha256}', to_jsonb($2::text)) WHERE id = $1")
        .bind(id)
        .bind(&old_sha)
        .execute(&app.pool)
        .await
        .unwrap();
    // Nor had it a file: exports before the upgrade were written at their first download.
    std::fs::remove_file(app.tmp.join("exports").join(format!("{id}-all.jsonl"))).unwrap();
    let res = lead.get(&format!("/api/v1/exports/{id}/download")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["X-Rewardlab-Sha256"], old_sha.as_str());
    assert_eq!(res.text().await.unwrap(), old, "the bytes it was taken with");
    let listed: Value = lead.get("/api/v1/projects/alpha/exports").await.json().await.unwrap();
    assert!(listed["exports"][0]["features"].get("chosen_provenance").is_none(), "its features are those of its revision");
}
