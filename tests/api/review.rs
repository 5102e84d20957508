//! Review and send-back over HTTP and in the browser: the reviewer role and who may review
//! what (checked in the SQL too), the stream's sample and its order, accepting and rejecting
//! (rejected work leaves every export, its item goes to another labeller, the labeller sees
//! why), adjudication, the lead's bulk send-back, and the review page with its keys.

use rewardlab::domain::{ItemId, JudgementId, ProjectId, Role, TaskKind, UserId};
use serde_json::{json, Value};

use crate::helpers::{hidden_csrf, spawn_app, Api, TestApp};
use crate::webdriver::{Browser, ENTER};

/// The position a response of `items_jsonl` was imported at (its text says `answer {j} to`).
fn position(text: &str) -> usize {
    text.split("answer ").nth(1).and_then(|t| t.split(' ').next()).and_then(|j| j.parse().ok()).unwrap()
}

/// Leases the labeller's next task and ranks its responses by import position (reversed with
/// `flip`); answers (the item's number in `items_jsonl`, the judgement's id).
async fn judge(api: &Api, slug: &str, flip: bool, key: &str) -> (usize, JudgementId) {
    let task = api.next_task(slug).await.expect("a task");
    let mut shown: Vec<(usize, String)> =
        task["responses"].as_array().unwrap().iter().map(|r| (position(r["text"].as_str().unwrap()), r["id"].as_str().unwrap().to_string())).collect();
    shown.sort();
    if flip {
        shown.reverse();
    }
    let item: usize = task["responses"][0]["text"].as_str().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let ranking: Vec<Vec<String>> = shown.into_iter().map(|(_, id)| vec![id]).collect();
    let res = api.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": key, "ranking": ranking})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());
    let body: Value = res.json().await.unwrap();
    (item, body["judgement_id"].as_str().unwrap().parse().unwrap())
}

async fn settings(lead: &Api, slug: &str, body: Value) {
    let res = lead.post(&format!("/api/v1/projects/{slug}/quality/settings"), &body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn review(api: &Api, slug: &str, j: JudgementId, body: Value) -> reqwest::Response {
    api.post(&format!("/api/v1/projects/{slug}/judgements/{j}/review"), &body).await
}

async fn stream(api: &Api, slug: &str) -> Value {
    let res = api.get(&format!("/api/v1/projects/{slug}/review?limit=100")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The rows of an export taken with `body` (all parts).
async fn export_rows(lead: &Api, slug: &str, body: Value) -> Vec<Value> {
    let res = lead.post(&format!("/api/v1/projects/{slug}/exports"), &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let export: Value = res.json().await.unwrap();
    let id = export["id"].as_str().unwrap();
    let mut rows = Vec::new();
    for f in export["files"].as_array().unwrap() {
        let part = f["part"].as_str().unwrap();
        let q = if part == "all" { String::new() } else { format!("?part={part}") };
        let text = lead.get(&format!("/api/v1/exports/{id}/download{q}")).await.text().await.unwrap();
        rows.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    rows
}

async fn ids(app: &TestApp, sql: &str) -> Vec<uuid::Uuid> {
    sqlx::query_scalar(sql).fetch_all(&app.pool).await.unwrap()
}

async fn project_id(app: &TestApp, slug: &str) -> ProjectId {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = $1").bind(slug).fetch_one(&app.pool).await.unwrap();
    id.into()
}

async fn user_id(app: &TestApp, email: &str) -> UserId {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(&app.pool).await.unwrap();
    id.into()
}

#[tokio::test]
async fn only_reviewers_and_leads_review_and_a_reviewer_of_one_project_cannot_touch_another() {
    let app = spawn_app().await;
    let lead_a = app.lead_with_items("ra", TaskKind::Ranking, 1, 2, 3).await;
    let lead_b = app.lead_with_items("rb", TaskKind::Ranking, 1, 2, 3).await;
    let rev = app.member("rev@example.org", "ra", Role::Reviewer).await;
    let lab = app.member("lab@example.org", "ra", Role::Labeller).await;
    let (_, ja) = judge(&lab, "ra", false, "a1").await;
    let (_, jb) = judge(&lead_b, "rb", false, "b1").await;
    settings(&lead_a, "ra", json!({"review_rate": 1.0})).await;

    // A labeller may not review; the message says who may.
    let res = lab.get("/api/v1/projects/ra/review").await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("reviewers"));
    assert_eq!(review(&lab, "ra", ja, json!({"decision": "accept"})).await.status(), 403);
    // A reviewer labels like a labeller, and reviews their project.
    assert!(rev.next_task("ra").await.is_some());
    assert_eq!(stream(&rev, "ra").await["entries"][0]["judgement_id"], ja.to_string());
    assert_eq!(stream(&lead_a, "ra").await["entries"][0]["judgement_id"], ja.to_string(), "leads review too");
    // Project B is not theirs: by its slug, or by its judgement's id under their own project.
    assert_eq!(rev.get("/api/v1/projects/rb/review").await.status(), 404);
    assert_eq!(review(&rev, "rb", jb, json!({"decision": "accept"})).await.status(), 404);
    assert_eq!(review(&rev, "ra", jb, json!({"decision": "reject", "reason": "not yours"})).await.status(), 404);
    assert_eq!(app.count("SELECT count(*) FROM judgement_reviews").await, 0);

    // The SQL itself answers nothing of B to A's reviewer, whatever the caller passes.
    let (pb, rev_id) = (project_id(&app, "rb").await, user_id(&app, "rev@example.org").await);
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(rewardlab::db::review::stream(&mut conn, pb, rev_id, 1.0, &[], &[], 100).await.unwrap().is_empty());
    assert!(rewardlab::db::review::target(&mut conn, pb, rev_id, jb).await.unwrap().is_none());
    let item_b: ItemId = ids(&app, "SELECT item_id FROM judgements j JOIN projects p ON p.id = j.project_id WHERE p.slug = 'rb'").await[0].into();
    assert!(rewardlab::db::review::adjudication_target(&mut conn, pb, rev_id, item_b).await.unwrap().is_none());
    assert!(rewardlab::db::review::kept_of_item(&mut conn, pb, rev_id, item_b).await.unwrap().is_none());
    // ... while B's lead gets it.
    let lead_b_id = user_id(&app, "lead@rb.org").await;
    assert_eq!(rewardlab::db::review::stream(&mut conn, pb, lead_b_id, 1.0, &[], &[], 100).await.unwrap().len(), 1);

    // The role is given like the others, and named when wrong.
    let res = lead_a.post("/api/v1/projects/ra/members", &json!({"email": "lab@example.org", "role": "boss"})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("reviewer"));
    assert_eq!(lead_a.post("/api/v1/projects/ra/members", &json!({"email": "lab@example.org", "role": "reviewer"})).await.status(), 200);
    assert_eq!(lab.get("/api/v1/projects/ra/review").await.status(), 200);
}

#[tokio::test]
async fn the_stream_samples_at_the_rate_and_puts_low_agreement_items_then_flagged_labellers_first() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("rs", TaskKind::Ranking, 2, 24, 3).await;
    let ann = app.member("ann@example.org", "rs", Role::Labeller).await;
    let bob = app.member("bob@example.org", "rs", Role::Labeller).await;
    let cat = app.member("cat@example.org", "rs", Role::Labeller).await;
    let mut disagree = Vec::new();
    for k in 0..20 {
        let (item, _) = judge(&ann, "rs", false, &format!("a{k}")).await;
        // Bob reverses Ann on items 0, 5, 10, 15: there the two disagree (Kendall's W 0).
        let who = if k < 16 { &bob } else { &cat };
        let (item_b, _) = judge(who, "rs", item % 5 == 0, &format!("b{k}")).await;
        assert_eq!(item, item_b, "both judge the items in import order");
        if item % 5 == 0 && k < 16 {
            disagree.push(format!("rs-{item}"));
        }
    }
    settings(&lead, "rs", json!({"review_rate": 0.3, "extra_below": 0.5})).await;
    // Cat is paused: her work comes right after the items where labellers disagree.
    let (pid, cat_id) = (project_id(&app, "rs").await, user_id(&app, "cat@example.org").await);
    sqlx::query("INSERT INTO labeller_pauses (id, project_id, user_id, reason) VALUES ($1, $2, $3, 'test')")
        .bind(uuid::Uuid::new_v4())
        .bind(pid.0)
        .bind(cat_id.0)
        .execute(&app.pool)
        .await
        .unwrap();

    let s = stream(&lead, "rs").await;
    let entries = s["entries"].as_array().unwrap();
    let got: Vec<(String, String, Vec<String>)> = entries
        .iter()
        .map(|e| {
            (
                e["judgement_id"].as_str().unwrap().to_string(),
                e["external_id"].as_str().unwrap().to_string(),
                serde_json::from_value(e["priority"].clone()).unwrap(),
            )
        })
        .collect();
    // Exactly: every judgement on a disagreeing item, every one of Cat's, and of the rest those
    // the id samples at 30%.
    let rows: Vec<(uuid::Uuid, String, uuid::Uuid)> =
        sqlx::query_as("SELECT j.id, i.external_id, j.user_id FROM judgements j JOIN items i ON i.id = j.item_id WHERE j.project_id = $1 ORDER BY j.seq")
            .bind(pid.0)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let expected: Vec<String> = rows
        .iter()
        .filter(|(id, ext, user)| disagree.contains(ext) || *user == cat_id.0 || rewardlab::domain::review::sampled(*id, 0.3))
        .map(|(id, _, _)| id.to_string())
        .collect();
    let mut want = expected.clone();
    want.sort();
    let mut have: Vec<String> = got.iter().map(|g| g.0.clone()).collect();
    have.sort();
    assert_eq!(have, want);
    assert_eq!(s["pending"], expected.len());
    assert!(expected.len() < rows.len(), "the sample leaves some out ({} of {})", expected.len(), rows.len());
    // Order: low agreement (8 judgements), then the paused labeller's (4), then the sample.
    let kinds: Vec<&str> = got.iter().map(|g| g.2[0].as_str()).collect();
    assert!(kinds[..8].iter().all(|k| *k == "low_agreement"), "{kinds:?}");
    assert!(kinds[8..12].iter().all(|k| *k == "flagged_labeller"), "{kinds:?}");
    assert!(kinds[12..].iter().all(|k| *k == "sampled"), "{kinds:?}");
    assert!(got[..8].iter().all(|g| disagree.contains(&g.1)));
    // Each as the labeller saw it: the responses in the order shown, with their ranks.
    let first = &entries[0];
    assert_eq!(first["responses"].as_array().unwrap().len(), 3);
    assert_eq!(first["responses"][0]["letter"], "A");
    assert!(first["time_on_task_ms"].is_number() && first["item_agreement"].as_f64().unwrap() < 0.01, "{first}");

    // Rate 0: only the urgent ones; a bad rate is refused naming the field.
    settings(&lead, "rs", json!({"review_rate": 0.0})).await;
    assert_eq!(stream(&lead, "rs").await["pending"], 12);
    let res = lead.post("/api/v1/projects/rs/quality/settings", &json!({"review_rate": 1.5})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("review_rate"));
    let res = lead.get("/api/v1/projects/rs/review?limit=0").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("limit"));
    // A reviewed judgement leaves the stream.
    let j: JudgementId = got[0].0.parse().unwrap();
    assert_eq!(review(&lead, "rs", j, json!({"decision": "accept"})).await.status(), 200);
    assert_eq!(stream(&lead, "rs").await["pending"], 11);
}

#[tokio::test]
async fn a_rejected_judgement_leaves_every_export_and_its_item_goes_to_someone_else_who_is_told_nothing_while_the_labeller_sees_why() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("rj", TaskKind::Ranking, 1, 2, 3).await;
    let ann = app.member("ann@example.org", "rj", Role::Labeller).await;
    let bob = app.member("bob@example.org", "rj", Role::Labeller).await;
    let rev = app.member("rev@example.org", "rj", Role::Reviewer).await;
    let (item0, j0) = judge(&ann, "rj", false, "a0").await;
    let (_, j1) = judge(&ann, "rj", false, "a1").await;
    assert_eq!(item0, 0);
    assert!(bob.next_task("rj").await.is_none(), "overlap 1: both items are done");

    // Bad input names the field.
    let res = review(&rev, "rj", j0, json!({"decision": "reject"})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("reason"));
    let res = review(&rev, "rj", j0, json!({"decision": "maybe"})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("decision"));

    let res = review(&rev, "rj", j0, json!({"decision": "reject", "reason": "ranked without reading: answer 2 is empty"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["review"], "rejected");
    assert_eq!(review(&rev, "rj", j1, json!({"decision": "accept"})).await.status(), 200);
    let res = review(&rev, "rj", j0, json!({"decision": "accept"})).await;
    assert_eq!(res.status(), 409, "a rejection is final");
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE status = 'rejected'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 2, "judgements stay: review is a table of its own");

    // The item goes back to the queue, to Bob, never to Ann again.
    assert!(ann.next_task("rj").await.is_none(), "not to the labeller whose work was rejected");
    let task = bob.next_task("rj").await.expect("the item is open again");
    assert!(task.to_string().contains("rj question 0"), "{task}");

    // Every export leaves the rejected judgement out; the accepted one says so.
    let rows = export_rows(&lead, "rj", json!({"format": "comparisons"})).await;
    assert!(!rows.is_empty() && rows.iter().all(|r| r["judgement_id"] == j1.to_string() && r["review"] == "accepted"), "{rows:?}");
    let agg = export_rows(&lead, "rj", json!({"format": "comparisons", "aggregate": "majority"})).await;
    assert!(agg.iter().all(|r| r["external_id"] == "rj-1" && r["review"] == "accepted"), "{agg:?}");
    for format in ["preferences", "sft"] {
        let rows = export_rows(&lead, "rj", json!({"format": format, "test_percent": 0})).await;
        assert!(rows.iter().all(|r| !r["prompt"].as_str().unwrap().ends_with("question 0")), "{format}: {rows:?}");
        assert!(!rows.is_empty(), "{format}");
    }
    let prefs = export_rows(&lead, "rj", json!({"format": "preferences", "aggregate": "bradley_terry", "test_percent": 0})).await;
    assert!(prefs.iter().all(|r| !r["prompt"].as_str().unwrap().ends_with("question 0")));
    // Kept on request, marked; only where each row can say so.
    let all = export_rows(&lead, "rj", json!({"format": "comparisons", "drop_rejected": false})).await;
    assert!(all.iter().any(|r| r["judgement_id"] == j0.to_string() && r["review"] == "rejected"));
    let res = lead.post("/api/v1/projects/rj/exports", &json!({"format": "preferences", "drop_rejected": false})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("drop_rejected"));
    // Agreement leaves it out too.
    let q: Value = lead.get("/api/v1/projects/rj/quality").await.json().await.unwrap();
    let ann_row = q["labellers"].as_array().unwrap().iter().find(|l| l["email"] == "ann@example.org").unwrap().clone();
    assert_eq!(ann_row["judgements"], 1, "{ann_row}");

    // Ann sees her rejected work and why, in the API and on a page she can reach.
    let mine: Value = ann.get("/api/v1/projects/rj/rejected").await.json().await.unwrap();
    assert_eq!(mine[0]["judgement_id"], j0.to_string());
    assert_eq!(mine[0]["reason"], "ranked without reading: answer 2 is empty");
    assert_eq!(mine[0]["shown"].as_array().unwrap().len(), 3);
    assert_eq!(bob.get("/api/v1/projects/rj/rejected").await.json::<Value>().await.unwrap(), json!([]));
    let s = app.login("ann@example.org", crate::helpers::PASSWORD).await;
    let home = s.get("/projects/rj").await.text().await.unwrap();
    assert!(home.contains("/projects/rj/rejected"));
    let page = s.get("/projects/rj/rejected").await.text().await.unwrap();
    assert!(page.contains("ranked without reading: answer 2 is empty") && page.contains("rj question 0"), "{page}");
}

#[tokio::test]
async fn a_reviewer_records_the_final_judgement_of_an_item_whose_labellers_disagree_and_exports_use_it() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("ad", TaskKind::Ranking, 2, 2, 3).await;
    let ann = app.member("ann@example.org", "ad", Role::Labeller).await;
    let bob = app.member("bob@example.org", "ad", Role::Labeller).await;
    let rev = app.member("rev@example.org", "ad", Role::Reviewer).await;
    judge(&ann, "ad", false, "a0").await;
    judge(&bob, "ad", true, "b0").await;
    judge(&ann, "ad", false, "a1").await;
    judge(&bob, "ad", false, "b1").await;
    let items: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, external_id FROM items ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    let ids0 = ids(&app, &format!("SELECT id FROM responses WHERE item_id = '{}' ORDER BY position", items[0].0)).await;
    let ids1 = ids(&app, &format!("SELECT id FROM responses WHERE item_id = '{}' ORDER BY position", items[1].0)).await;
    let path = |i: usize| format!("/api/v1/projects/ad/items/{}/adjudication", items[i].0);
    // Middle answer best: neither labeller's order.
    let body = json!({"ranking": [[ids0[1]], [ids0[0]], [ids0[2]]], "note": "1 is the only correct one"});

    let lab = lead.post(&path(0), &json!({"ranking": [[ids0[0]]]})).await;
    assert_eq!(lab.status(), 400);
    assert!(lab.text().await.unwrap().contains("ranking"));
    let res = rev.post(&path(1), &json!({"ranking": [[ids1[0]], [ids1[1]], [ids1[2]]]})).await;
    assert_eq!(res.status(), 409, "the labellers of item 1 agree");
    assert_eq!(ann.post(&path(0), &body).await.status(), 403);
    assert_eq!(rev.post(&path(0), &body).await.status(), 201);
    assert_eq!(rev.post(&path(0), &body).await.status(), 409, "once per item");

    let rows = export_rows(&lead, "ad", json!({"format": "comparisons"})).await;
    let item0: Vec<&Value> = rows.iter().filter(|r| r["external_id"] == "ad-0").collect();
    assert_eq!(item0.len(), 3, "one ranking of 3: the adjudication alone");
    assert!(item0.iter().all(|r| r["source"] == "adjudication" && r["review"] == "adjudicated"));
    assert!(item0.iter().any(|r| r["chosen_response_id"] == ids0[1].to_string() && r["rejected_response_id"] == ids0[0].to_string()));
    assert_eq!(rows.iter().filter(|r| r["external_id"] == "ad-1" && r["review"] == "unreviewed").count(), 6);
    let agg = export_rows(&lead, "ad", json!({"format": "comparisons", "aggregate": "majority", "min_agreement": 0.9})).await;
    let a0: Vec<&Value> = agg.iter().filter(|r| r["external_id"] == "ad-0").collect();
    assert_eq!(a0.len(), 3, "kept whatever the labellers' agreement: {agg:?}");
    assert!(a0.iter().all(|r| r["review"] == "adjudicated" && r["votes"] == 1));
    // Its labellers' judgements leave the stream.
    settings(&lead, "ad", json!({"review_rate": 1.0})).await;
    let s = stream(&rev, "ad").await;
    assert!(s["entries"].as_array().unwrap().iter().all(|e| e["external_id"] == "ad-1"), "{s}");
    // The adjudication settles the item: rejecting one of its labellers' judgements afterwards
    // leaves it closed (no one is sent to label it again), and exports still give the
    // adjudication alone.
    let j = ids(&app, &format!("SELECT id FROM judgements WHERE item_id = '{}' ORDER BY seq LIMIT 1", items[0].0)).await[0];
    assert_eq!(review(&rev, "ad", j.into(), json!({"decision": "reject", "reason": "careless"})).await.status(), 200);
    assert_eq!(app.count(&format!("SELECT count(*) FROM items WHERE id = '{}' AND is_open", items[0].0)).await, 0);
    let rows = export_rows(&lead, "ad", json!({"format": "comparisons"})).await;
    let item0: Vec<&Value> = rows.iter().filter(|r| r["external_id"] == "ad-0").collect();
    assert!(item0.len() == 3 && item0.iter().all(|r| r["source"] == "adjudication"), "{item0:?}");
}

#[tokio::test]
async fn a_lead_sends_items_back_in_bulk_with_a_reason() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("sb", TaskKind::Ranking, 1, 3, 2).await;
    let ann = app.member("ann@example.org", "sb", Role::Labeller).await;
    let bob = app.member("bob@example.org", "sb", Role::Labeller).await;
    for k in 0..3 {
        judge(&ann, "sb", false, &format!("a{k}")).await;
    }
    let items = ids(&app, "SELECT id FROM items ORDER BY seq LIMIT 2").await;
    let res = lead.post("/api/v1/projects/sb/items/send-back", &json!({"items": items, "reason": ""})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("reason"));
    let res = lead.post("/api/v1/projects/sb/items/send-back", &json!({"items": [], "reason": "x"})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("items"));
    let res = lead.post("/api/v1/projects/sb/items/send-back", &json!({"items": [uuid::Uuid::new_v4()], "reason": "x"})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(ann.post("/api/v1/projects/sb/items/send-back", &json!({"items": items, "reason": "x"})).await.status(), 403);
    let res = lead.post("/api/v1/projects/sb/items/send-back", &json!({"items": items, "reason": "the guidelines changed"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["rejected"], 2);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE is_open").await, 2);
    assert!(ann.next_task("sb").await.is_none());
    assert!(bob.next_task("sb").await.is_some());
    let mine: Value = ann.get("/api/v1/projects/sb/rejected").await.json().await.unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 2);
    assert_eq!(mine[0]["reason"], "the guidelines changed");
}

#[tokio::test]
async fn the_review_page_accepts_and_rejects_with_its_keys_and_its_forms_need_the_csrf_token() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("rp", TaskKind::Ranking, 2, 2, 3).await;
    let ann = app.member("ann@example.org", "rp", Role::Labeller).await;
    let bob = app.member("bob@example.org", "rp", Role::Labeller).await;
    app.member("rev@example.org", "rp", Role::Reviewer).await;
    let (_, a0) = judge(&ann, "rp", false, "a0").await;
    let (_, b0) = judge(&bob, "rp", false, "b0").await;
    let (_, a1) = judge(&ann, "rp", false, "a1").await;
    settings(&lead, "rp", json!({"review_rate": 1.0})).await;

    // The forms, without a browser: no CSRF token, no review.
    let s = app.login("rev@example.org", crate::helpers::PASSWORD).await;
    let page = s.get("/projects/rp/review").await.text().await.unwrap();
    assert!(page.contains(&a0.to_string()) && page.contains("review-pending\">3</span> judgements waiting"), "{page}");
    let res = s.post_form(&format!("/projects/rp/review/{a0}"), &[("decision", "accept")]).await;
    assert_eq!(res.status(), 403);
    let csrf = hidden_csrf(&page);
    let res = s.post_form(&format!("/projects/rp/review/{a0}"), &[("csrf", &csrf), ("decision", "reject"), ("reason", " ")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("reason"));
    let res = s.post_form(&format!("/projects/rp/review/{a0}"), &[("csrf", &csrf), ("decision", "accept")]).await;
    assert_eq!(res.status(), 303);
    // A labeller has no review page.
    let sa = app.login("ann@example.org", crate::helpers::PASSWORD).await;
    assert_eq!(sa.get("/projects/rp/review").await.status(), 403);

    // In Chromium: `r`, a reason and Enter reject; `a` accepts.
    let b = Browser::start().await;
    b.sign_in(&app.addr, "rev@example.org").await;
    b.goto(&format!("{}/projects/rp", app.addr)).await;
    b.click("#open-review").await;
    let first = b.script("return document.getElementById('review-entry').dataset.judgement").await;
    assert_eq!(first, json!(b0.to_string()));
    let shown = b.text("#review-responses").await;
    assert!(shown.contains("rank 1") && shown.contains("rp answer 0 to 0"), "{shown}");
    b.keys(&["r"]).await;
    b.wait_until("return document.activeElement && document.activeElement.id === 'reject-reason'").await;
    b.keys(&["t", "o", "o", " ", "f", "a", "s", "t", ENTER]).await;
    b.wait_until(&format!("return document.getElementById('review-entry').dataset.judgement === '{a1}'")).await;
    b.keys(&["a"]).await;
    b.wait_for_text("#review-empty", "Nothing to review").await;
    b.quit().await;
    let states: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT judgement_id, decision, reason FROM judgement_reviews ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!(states, vec![(a0.0, "accepted".into(), String::new()), (b0.0, "rejected".into(), "too fast".into()), (a1.0, "accepted".into(), String::new())]);
}

#[tokio::test]
async fn the_item_browser_filters_by_gold_review_and_agreement_and_marks_gold_only_from_adjudicated_or_unanimous_judgements() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("ib", TaskKind::Ranking, 2, 4, 3).await;
    let ann = app.member("ann@example.org", "ib", Role::Labeller).await;
    let bob = app.member("bob@example.org", "ib", Role::Labeller).await;
    let items: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, external_id FROM items ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    let mut by_ann = Vec::new();
    let mut by_bob = Vec::new();
    for k in 0..3 {
        by_ann.push(judge(&ann, "ib", false, &format!("a{k}")).await.1);
        by_bob.push(judge(&bob, "ib", k == 0, &format!("b{k}")).await.1);
    }
    let (app_ref, items_ref) = (&app, &items);
    let resp = |i: usize| async move { ids(app_ref, &format!("SELECT id FROM responses WHERE item_id = '{}' ORDER BY position", items_ref[i].0)).await };
    let r3 = resp(3).await;
    assert_eq!(lead.post(&format!("/api/v1/projects/ib/items/{}/gold", items[3].0), &json!({"ranking": [[r3[2]], [r3[1]], [r3[0]]]})).await.status(), 200);
    assert_eq!(review(&lead, "ib", by_ann[2], json!({"decision": "reject", "reason": "wrong"})).await.status(), 200);
    assert_eq!(review(&lead, "ib", by_bob[1], json!({"decision": "accept"})).await.status(), 200);
    let r0 = resp(0).await;
    assert_eq!(
        lead.post(&format!("/api/v1/projects/ib/items/{}/adjudication", items[0].0), &json!({"ranking": [[r0[1]], [r0[0]], [r0[2]]]})).await.status(),
        201
    );

    let listed = |query: &'static str| {
        let lead = lead.clone();
        async move {
            let res = lead.get(&format!("/api/v1/projects/ib/items?{query}")).await;
            assert_eq!(res.status(), 200, "{query}");
            let body: Value = res.json().await.unwrap();
            let mut ext: Vec<String> = body["items"].as_array().unwrap().iter().map(|i| i["external_id"].as_str().unwrap().to_string()).collect();
            ext.sort();
            ext
        }
    };
    assert_eq!(listed("gold=yes").await, ["ib-3"]);
    assert_eq!(listed("gold=no").await, ["ib-0", "ib-1", "ib-2"]);
    assert_eq!(listed("review=adjudicated").await, ["ib-0"]);
    assert_eq!(listed("review=rejected").await, ["ib-2"]);
    assert_eq!(listed("review=accepted").await, ["ib-1"]);
    assert_eq!(listed("review=unreviewed").await, ["ib-0", "ib-1", "ib-2"]);
    assert_eq!(listed("min_agreement=0.9").await, ["ib-1"], "item 2 has one kept judgement: no agreement");
    assert_eq!(listed("max_agreement=0.5").await, ["ib-0"]);
    for (query, field) in
        [("gold=maybe", "gold"), ("review=done", "review"), ("min_agreement=2", "min_agreement"), ("min_agreement=0.8&max_agreement=0.1", "max_agreement")]
    {
        let res = lead.get(&format!("/api/v1/projects/ib/items?{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
        assert!(res.text().await.unwrap().contains(field), "{query}");
    }
    assert_eq!(ann.get("/api/v1/projects/ib/items").await.status(), 403);

    // Mark gold: from the adjudication, from a unanimous pair; the others refused with why.
    let all: Vec<uuid::Uuid> = items.iter().map(|i| i.0).collect();
    let res = lead.post("/api/v1/projects/ib/items/mark-gold", &json!({"items": all})).await;
    assert_eq!(res.status(), 200);
    let out: Vec<Value> = res.json().await.unwrap();
    let marked: Vec<bool> = out.iter().map(|o| o["marked"].as_bool().unwrap()).collect();
    assert_eq!(marked, [true, true, false, false], "{out:?}");
    assert!(out[0]["reason"].as_str().unwrap().contains("adjudicated"));
    assert!(out[1]["reason"].as_str().unwrap().contains("unanimous"));
    assert!(out[2]["reason"].as_str().unwrap().contains("1 kept judgement"), "{out:?}");
    assert_eq!(out[3]["reason"], "already gold");
    let gold0: Vec<i16> = sqlx::query_scalar("SELECT gold_ranks FROM items WHERE id = $1").bind(items[0].0).fetch_one(&app.pool).await.unwrap();
    assert_eq!(gold0, [2, 1, 3]);
    let res = lead.post("/api/v1/projects/ib/items/mark-gold", &json!({"items": []})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("items"));

    // The Items tab: the filters, and both bulk actions behind the CSRF token.
    let s = app.login("lead@ib.org", crate::helpers::PASSWORD).await;
    let page = s.get("/projects/ib/items?review=rejected").await.text().await.unwrap();
    assert!(page.contains("ib-2") && !page.contains(">ib-1<") && page.contains("id=\"send-back-button\""), "{page}");
    let item2 = items[2].0.to_string();
    assert_eq!(s.post_form("/projects/ib/items/send-back", &[("item", &item2), ("reason", "again")]).await.status(), 403);
    let res =
        s.post_form("/projects/ib/items/send-back", &[("csrf", &s.csrf), ("item", &item2), ("reason", "look again"), ("back", "/projects/ib/items")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count(&format!("SELECT count(*) FROM judgement_reviews WHERE item_id = '{item2}' AND decision = 'rejected'")).await, 2);
    let res = s.post_form("/projects/ib/items/mark-gold", &[("csrf", &s.csrf), ("item", &item2)]).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Not marked"));
}
