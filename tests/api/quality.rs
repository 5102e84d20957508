//! Label quality over HTTP: gold items (imported and marked), onboarding with the reference,
//! the mix-in, automatic pauses and their lifting, honeypots, quality settings, the report
//! and its page, extra labellers where labellers disagree, and gold kept out of exports.

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{items_jsonl, spawn_app, Api, TestApp, PASSWORD};
use crate::webdriver::Browser;

/// `n` ranking items of 3 responses whose reference ranks the third best, then the second.
fn gold_jsonl(n: usize, tag: &str) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let responses: Vec<Value> = (0..3).map(|j| json!({"model": format!("m{j}"), "text": format!("{tag} gold answer {j} to {i}")})).collect();
        let line = json!({"id": format!("{tag}-gold-{i}"), "prompt": format!("{tag} gold question {i}"), "responses": responses,
                          "gold": {"ranking": [[2], [1], [0]], "explanation": format!("answer 2 is complete ({i})")}});
        out.push_str(&format!("{line}\n"));
    }
    out.into_bytes()
}

/// The task's check kind and its item's reference ranks and response ids (by position).
async fn check_of(app: &TestApp, task: &Value) -> (Option<String>, Option<Vec<i16>>, Vec<uuid::Uuid>) {
    let id: uuid::Uuid = task["task_id"].as_str().unwrap().parse().unwrap();
    sqlx::query_as(
        "SELECT t.check_kind, i.gold_ranks, (SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = i.id)
         FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Tiers (one response each) from ranks by position, best first; reversed when `flip`.
fn tiers(ranks: &[i16], ids: &[uuid::Uuid], flip: bool) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..ranks.len()).collect();
    order.sort_by_key(|&p| (ranks[p], p));
    if flip {
        order.reverse();
    }
    order.iter().map(|&p| vec![ids[p].to_string()]).collect()
}

async fn submit(api: &Api, task: &Value, ranking: &[Vec<String>], key: &str) -> reqwest::Response {
    api.post(&format!("/api/v1/tasks/{}/judgement?next=1", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": key, "ranking": ranking})).await
}

async fn settings(lead: &Api, slug: &str, body: Value) {
    let res = lead.post(&format!("/api/v1/projects/{slug}/quality/settings"), &body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn onboarding_gold_comes_first_with_its_reference_and_gold_never_counts_towards_overlap_or_exports() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("gold", TaskKind::Ranking, 1, 3, 3).await;
    let import: Value = lead.post_bytes("/api/v1/projects/gold/items", gold_jsonl(2, "g")).await.json().await.unwrap();
    assert_eq!(import["items_added"], 2, "{import}");
    assert_eq!(app.count("SELECT count(*) FROM items WHERE gold_ranks = '{3,2,1}' AND NOT is_open").await, 2);
    settings(&lead, "gold", json!({"gold_onboarding": 2})).await;

    let ann = app.member("ann@example.org", "gold", Role::Labeller).await;
    let mut task = ann.next_task("gold").await.unwrap();
    for i in 0..2 {
        let (kind, reference, ids) = check_of(&app, &task).await;
        assert_eq!(kind.as_deref(), Some("onboarding"), "task {i} is an onboarding gold task");
        let body: Value = submit(&ann, &task, &tiers(&reference.unwrap(), &ids, false), &format!("k{i}")).await.json().await.unwrap();
        assert_eq!(body["reference"]["ranking"][0][0], ids[2].to_string(), "{body}");
        assert!(body["reference"]["explanation"].as_str().unwrap().starts_with("answer 2 is complete"));
        task = body["next"].clone();
    }
    // Then ordinary work, which shows no reference.
    let (kind, reference, ids) = check_of(&app, &task).await;
    assert_eq!((kind, reference), (None, None));
    let body: Value = submit(&ann, &task, &tiers(&[1, 2, 3], &ids, false), "k2").await.json().await.unwrap();
    assert!(body.get("reference").is_none(), "{body}");

    // Overlap 1 does not close gold items: the next labeller gets them too.
    let bob = app.member("bob@example.org", "gold", Role::Labeller).await;
    let first = bob.next_task("gold").await.unwrap();
    assert_eq!(check_of(&app, &first).await.0.as_deref(), Some("onboarding"));
    assert_eq!(app.count("SELECT count(*) FROM items WHERE gold_ranks IS NOT NULL AND is_open").await, 0);

    // Exports carry the one ordinary judgement's pairs only.
    let export: Value = lead.post("/api/v1/projects/gold/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let text = lead.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.text().await.unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains("g gold answer"), "no gold item in the export");
}

#[tokio::test]
async fn a_labeller_below_the_gold_threshold_is_paused_told_why_and_a_lead_lifts_the_pause_with_a_note() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("pause", TaskKind::Ranking, 2, 5, 3).await;
    lead.post_bytes("/api/v1/projects/pause/items", gold_jsonl(4, "p")).await;
    settings(&lead, "pause", json!({"gold_onboarding": 3, "pause_below": 0.5, "pause_min_gold": 3})).await;
    let sam = app.member("sam@example.org", "pause", Role::Labeller).await;
    let mut task = sam.next_task("pause").await.unwrap();
    let mut last = Value::Null;
    for i in 0..3 {
        let (kind, reference, ids) = check_of(&app, &task).await;
        assert!(kind.is_some());
        last = submit(&sam, &task, &tiers(&reference.unwrap(), &ids, true), &format!("r{i}")).await.json().await.unwrap();
        task = last["next"].clone();
    }
    // The third wrong answer pauses: no next task, and why.
    assert!(last["next"].is_null(), "{last}");
    assert!(last["paused"].as_str().unwrap().contains("below this project's threshold of 0.50"), "{last}");
    let res = sam.post("/api/v1/projects/pause/tasks/next", &Value::Null).await;
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "paused");
    assert!(err["error"]["message"].as_str().unwrap().contains("-1.00 (95% interval -1.00 to -1.00) over 3 gold tasks"), "{err}");
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE status = 'leased'").await, 0, "the pause gave back the live lease");

    let report: Value = lead.get("/api/v1/projects/pause/quality").await.json().await.unwrap();
    let row = report["labellers"].as_array().unwrap().iter().find(|l| l["email"] == "sam@example.org").unwrap().clone();
    assert_eq!((row["gold_count"].as_u64(), row["gold"]["value"].as_f64()), (Some(3), Some(-1.0)), "{row}");
    assert!(row["paused"].is_string());
    let user = row["user"].as_str().unwrap().to_string();

    let lift = format!("/api/v1/projects/pause/quality/pauses/{user}/lift");
    let res = lead.post(&lift, &json!({"note": "  "})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("note"));
    assert_eq!(sam.post(&lift, &json!({"note": "self-service"})).await.status(), 403, "a labeller cannot lift their own pause");
    assert_eq!(lead.post(&lift, &json!({"note": "talked it through"})).await.status(), 200);
    let again = lead.post(&lift, &json!({"note": "again"})).await;
    assert_eq!(again.status(), 409, "no pause is active any more");
    assert!(again.text().await.unwrap().contains("not paused"));
    assert!(sam.next_task("pause").await.is_some(), "work again after the lift");
    let note: String = sqlx::query_scalar("SELECT lift_note FROM labeller_pauses").fetch_one(&app.pool).await.unwrap();
    assert_eq!(note, "talked it through");
}

#[tokio::test]
async fn quality_settings_are_checked_naming_the_field_and_only_leads_change_them() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("set", TaskKind::Pairwise, 2, 1, 2).await;
    for (body, field) in [
        (json!({"gold_rate": 0.9}), "gold_rate"),
        (json!({"gold_onboarding": -1}), "gold_onboarding"),
        (json!({"pause_below": 3}), "pause_below"),
        (json!({"pause_min_gold": 0}), "pause_min_gold"),
        (json!({"extra_max": 50}), "extra_max"),
        (json!({"extra_below": "high"}), "extra_below"),
        (json!({"golden": 1}), "golden"),
    ] {
        let res = lead.post("/api/v1/projects/set/quality/settings", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        assert!(res.text().await.unwrap().contains(field), "{body}");
    }
    let ok: Value = lead.post("/api/v1/projects/set/quality/settings", &json!({"gold_rate": 0.2, "pause_below": 0.6})).await.json().await.unwrap();
    assert_eq!((ok["gold_rate"].as_f64(), ok["pause_below"].as_f64(), ok["pause_min_gold"].as_i64()), (Some(0.2), Some(0.6), Some(5)));
    let off: Value = lead.post("/api/v1/projects/set/quality/settings", &json!({"pause_below": null})).await.json().await.unwrap();
    assert!(off["pause_below"].is_null() && off["gold_rate"] == 0.2);
    let lab = app.member("lab@example.org", "set", Role::Labeller).await;
    assert_eq!(lab.post("/api/v1/projects/set/quality/settings", &json!({"gold_rate": 0.1})).await.status(), 403);
    assert_eq!(lab.get("/api/v1/projects/set/quality").await.status(), 403);

    // The page's form: a bad field is a 400 naming it, a good one is stored.
    let s = app.login("lead@set.org", PASSWORD).await;
    let mut form = vec![("csrf", s.csrf.as_str()), ("gold_onboarding", "2"), ("gold_rate", "0.1"), ("pause_below", ""), ("pause_min_gold", "4")];
    form.extend([("extra_max", "1"), ("extra_below", "lots")]);
    let res = s.post_form("/projects/set/quality/settings", &form).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("extra_below"));
    form[6] = ("extra_below", "0.4");
    assert_eq!(s.post_form("/projects/set/quality/settings", &form).await.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM projects WHERE gold_onboarding = 2 AND extra_max = 1 AND pause_below IS NULL AND pause_min_gold = 4").await, 1);
}

#[tokio::test]
async fn a_lead_marks_an_item_gold_from_the_api_and_its_page_and_unmarks_it() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("mark", TaskKind::Ranking, 2, 2, 3).await;
    let (item, ids): (uuid::Uuid, Vec<uuid::Uuid>) =
        sqlx::query_as("SELECT i.id, (SELECT array_agg(r.id ORDER BY r.position) FROM responses r WHERE r.item_id = i.id) FROM items i ORDER BY seq LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let path = format!("/api/v1/projects/mark/items/{item}/gold");
    let res = lead.post(&path, &json!({"ranking": [[ids[1]], [ids[0]]]})).await;
    assert_eq!(res.status(), 400, "every response must be ranked");
    assert!(res.text().await.unwrap().contains("ranking"));
    let res = lead.post(&path, &json!({"ranking": [[ids[1]], [ids[0], ids[2]]], "explanation": "B cites its source"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE gold_ranks = '{2,1,2}' AND NOT is_open").await, 1);
    let lab = app.member("lab@example.org", "mark", Role::Labeller).await;
    assert_eq!(lab.post(&path, &json!({"ranking": [[ids[0]], [ids[1], ids[2]]]})).await.status(), 403);

    let s = app.login("lead@mark.org", PASSWORD).await;
    let page = s.get(&format!("/projects/mark/items/{item}")).await.text().await.unwrap();
    assert!(page.contains("reference: <strong>B &#62; A = C</strong>") && page.contains("B cites its source"), "{page}");
    let form = format!("/projects/mark/items/{item}/gold");
    let res = s.post_form(&form, &[("csrf", &s.csrf), ("ranking", "C > Z"), ("explanation", "")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("Z is not one of this item"));
    assert_eq!(s.post_form(&form, &[("csrf", "forged"), ("ranking", "C > A > B")]).await.status(), 403);
    assert_eq!(s.post_form(&form, &[("csrf", &s.csrf), ("ranking", "C > A > B"), ("explanation", "C")]).await.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE gold_ranks = '{2,3,1}'").await, 1);
    assert_eq!(s.post_form(&form, &[("csrf", &s.csrf), ("remove", "1")]).await.status(), 303);
    assert_eq!(lead.delete_path(&path).await, 200);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE gold_ranks IS NULL AND is_open").await, 2, "unmarked items rejoin the queue");
}

#[tokio::test]
async fn honeypots_are_made_from_the_projects_own_items_scored_like_gold_and_left_out_of_prompts() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("pots", TaskKind::Ranking, 1, 6, 3).await;
    let res = lead.post("/api/v1/projects/pots/quality/honeypots", &json!({"count": 0})).await;
    assert_eq!(res.status(), 400);
    let added: Value = lead.post("/api/v1/projects/pots/quality/honeypots", &json!({"count": 3})).await.json().await.unwrap();
    assert_eq!(added["added"], 3);
    // As many responses as the project's other items (3): the planted one replaces the last.
    assert_eq!(app.count("SELECT count(*) FROM items WHERE honeypot_of IS NOT NULL AND n_responses = 3 AND gold_ranks = '{1,1,2}'").await, 3);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM responses r JOIN items i ON i.id = r.item_id WHERE i.honeypot_of IS NOT NULL AND r.position = 2 AND r.model = 'honeypot'"
        )
        .await,
        3
    );
    settings(&lead, "pots", json!({"gold_onboarding": 3})).await;

    // A labeller who ranks the planted response last scores 1 on each.
    let ann = app.member("ann@example.org", "pots", Role::Labeller).await;
    let mut task = ann.next_task("pots").await.unwrap();
    for i in 0..3 {
        let (kind, reference, ids) = check_of(&app, &task).await;
        assert_eq!(kind.as_deref(), Some("onboarding"));
        let body: Value = submit(&ann, &task, &tiers(&reference.unwrap(), &ids, false), &format!("h{i}")).await.json().await.unwrap();
        assert!(body["reference"]["explanation"].as_str().unwrap().contains("last-ranked"), "{body}");
        task = body["next"].clone();
    }
    assert_eq!(check_of(&app, &task).await.0, None);
    assert_eq!(ann.submit_in_order(&task, "ordinary").await.status(), 201);
    let report: Value = lead.get("/api/v1/projects/pots/quality").await.json().await.unwrap();
    let row = &report["labellers"][0];
    assert_eq!((row["gold_count"].as_u64(), row["gold"]["value"].as_f64()), (Some(3), Some(1.0)), "{report}");
    let board = lead.get("/api/v1/projects/pots/leaderboard").await.text().await.unwrap();
    assert!(board.contains("\"m0\"") && !board.contains("honeypot"), "the planted responses are no model: {board}");
    let export: Value = lead.post("/api/v1/projects/pots/exports", &json!({"format": "prompts"})).await.json().await.unwrap();
    let text = lead.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.text().await.unwrap();
    assert_eq!(text.lines().count(), 6, "honeypots copy prompts; they are not exported again");

    // The page's form makes more; a bad count names the field.
    let s = app.login("lead@pots.org", PASSWORD).await;
    let res = s.post_form("/projects/pots/quality/honeypots", &[("csrf", &s.csrf), ("count", "many")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("count"));
    assert_eq!(s.post_form("/projects/pots/quality/honeypots", &[("csrf", &s.csrf), ("count", "2")]).await.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE honeypot_of IS NOT NULL").await, 5);
}

/// Every labeller in turn takes and ranks the next task: in position order, or reversed.
async fn label_all(app: &TestApp, who: &[(&Api, bool)], slug: &str) {
    for (i, (api, flip)) in who.iter().enumerate() {
        let mut n = 0;
        while let Some(task) = api.next_task(slug).await {
            let (_, _, ids) = check_of(app, &task).await;
            let ranks: Vec<i16> = (1..=ids.len() as i16).collect();
            assert_eq!(submit(api, &task, &tiers(&ranks, &ids, *flip), &format!("{i}-{n}")).await.status(), 201);
            n += 1;
        }
    }
}

#[tokio::test]
async fn the_report_gives_agreement_beside_chance_and_items_where_labellers_disagree_get_one_more_labeller() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("agree", TaskKind::Ranking, 2, 4, 3).await;
    settings(&lead, "agree", json!({"extra_max": 1, "extra_below": 0.9})).await;
    let a = app.member("a@example.org", "agree", Role::Labeller).await;
    let b = app.member("b@example.org", "agree", Role::Labeller).await;
    let c = app.member("c@example.org", "agree", Role::Labeller).await;
    label_all(&app, &[(&a, false), (&b, true)], "agree").await;
    assert!(c.next_task("agree").await.is_none(), "every item has its two labellers");

    let report: Value = lead.get("/api/v1/projects/agree/quality").await.json().await.unwrap();
    let ag = &report["agreement"];
    assert_eq!((ag["alpha_level"].as_str(), ag["items_compared"].as_u64()), (Some("ordinal"), Some(4)), "{report}");
    assert!(ag["alpha"]["value"].as_f64().unwrap() < 0.0, "opposite rankings agree worse than chance: {ag}");
    assert_eq!((ag["mean_w"].as_f64(), ag["mean_w_chance"].as_f64()), (Some(0.0), Some(0.5)));
    assert_eq!(report["low_agreement_items"].as_array().unwrap().len(), 4);
    assert!(report["labellers"].as_array().unwrap().iter().all(|l| l["consensus_tau"] == -1.0 && l["consensus_score"] == 0.0), "{report}");

    // One more labeller for each, once: the scheduler's tick reopens them.
    assert_eq!(rewardlab::services::quality::extend_all(&app.pool).await.unwrap(), 4);
    assert_eq!(lead.post("/api/v1/projects/agree/quality/extend", &Value::Null).await.json::<Value>().await.unwrap()["reopened"], 0, "checked already");
    label_all(&app, &[(&c, false)], "agree").await;
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 12);
    assert_eq!(lead.post("/api/v1/projects/agree/quality/extend", &Value::Null).await.json::<Value>().await.unwrap()["reopened"], 0, "the maximum is reached");
    assert_eq!(c.post("/api/v1/projects/agree/quality/extend", &Value::Null).await.status(), 403);

    // The page, for leads only.
    let s = app.login("lead@agree.org", PASSWORD).await;
    let page = s.get("/projects/agree/quality").await.text().await.unwrap();
    assert!(page.contains("Krippendorff") && page.contains("c@example.org") && page.contains("(1/labellers)"), "{page}");
    assert!(s.get("/projects/agree").await.text().await.unwrap().contains("href=\"/projects/agree/quality\""));
    assert_eq!(s.post_form("/projects/agree/quality/extend", &[("csrf", &s.csrf)]).await.status(), 303);
    let lab = app.login("a@example.org", PASSWORD).await;
    assert_eq!(lab.get("/projects/agree/quality").await.status(), 403);
    assert_eq!(lab.post_form("/projects/agree/quality/extend", &[("csrf", &lab.csrf)]).await.status(), 403);
}

#[tokio::test]
async fn pairwise_projects_report_fleiss_kappa_and_nominal_alpha() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("pw", TaskKind::Pairwise, 3, 5, 2).await;
    let people = [app.member("x@example.org", "pw", Role::Labeller).await, app.member("y@example.org", "pw", Role::Labeller).await];
    let z = app.member("z@example.org", "pw", Role::Labeller).await;
    label_all(&app, &[(&people[0], false), (&people[1], false), (&z, true)], "pw").await;
    let report: Value = lead.get("/api/v1/projects/pw/quality").await.json().await.unwrap();
    let ag = &report["agreement"];
    assert_eq!(ag["alpha_level"], "nominal");
    // Two of three agree on every item, all on the same side: κ = (1/3 − 5/9) / (1 − 5/9) = −0.5.
    assert!((ag["fleiss_kappa"].as_f64().unwrap() + 0.5).abs() < 1e-9, "{ag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_browser_an_onboarding_task_shows_its_reference_a_paused_labeller_sees_why_and_a_lead_lifts_the_pause() {
    let app = spawn_app().await;
    app.project("web", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "web", Role::Lead).await;
    lead.post_bytes("/api/v1/projects/web/items", items_jsonl(2, 3, "w")).await;
    lead.post_bytes("/api/v1/projects/web/items", gold_jsonl(1, "w")).await;
    settings(&lead, "web", json!({"gold_onboarding": 1, "pause_below": 0.5, "pause_min_gold": 1})).await;
    app.member("lab@example.org", "web", Role::Labeller).await;

    // The onboarding gold task, ranked the reverse of its reference with the keyboard.
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lab@example.org").await;
    b.goto(&format!("{}/projects/web/label", app.addr)).await;
    b.find("#response-3").await;
    let mut shown = Vec::new();
    for i in 1..=3 {
        shown.push(b.text(&format!("#response-{i}")).await);
    }
    let key_of = |answer: usize| (shown.iter().position(|t| t.contains(&format!("gold answer {answer} to 0"))).unwrap() + 1).to_string();
    let keys: Vec<String> = (0..3).map(key_of).collect();
    b.keys(&keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
    b.keys(&[crate::webdriver::ENTER]).await;
    let reference = b.wait_for_text("#reference", "answer 2 is complete").await;
    assert!(reference.contains("w gold answer 2 to 0"), "{reference}");
    let status = b.wait_for_text("#status", "paused").await;
    assert!(status.contains("threshold of 0.50"), "{status}");

    // Coming back, the page says why and offers no task.
    b.goto(&format!("{}/projects/web/label", app.addr)).await;
    let shown = b.wait_for_text("#paused", "You are paused in this project.").await;
    assert!(shown.contains("gold score") && shown.contains("threshold of 0.50"), "{shown}");
    assert_eq!(b.script("return document.querySelectorAll('#task').length").await, json!(0), "no task to work on");

    b.click("header form button").await;
    b.sign_in(&app.addr, "lead@example.org").await;
    b.goto(&format!("{}/projects/web", app.addr)).await;
    b.click("#tab-quality").await;
    let row = b.wait_for_text("tr.labeller.paused", "lab@example.org").await;
    assert!(row.contains("paused") && row.contains("-1.00"), "{row}");
    b.type_into("tr.labeller.paused input[name=note]", "explained the guidelines").await;
    b.click("tr.labeller.paused button").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.count("SELECT count(*) FROM labeller_pauses WHERE lifted_at IS NOT NULL").await == 0 {
        assert!(std::time::Instant::now() < deadline, "the pause was never lifted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.goto(&format!("{}/projects/web/quality", app.addr)).await;
    b.wait_for_text("#pauses", "explained the guidelines").await;
    b.quit().await;
}

async fn export_rows(lead: &Api, slug: &str, body: Value) -> (Value, Vec<Value>) {
    let res = lead.post(&format!("/api/v1/projects/{slug}/exports"), &body).await;
    assert_eq!(res.status(), 201, "{body}");
    let export: Value = res.json().await.unwrap();
    let part = if body["format"] == "preferences" { "?part=train" } else { "" };
    let text = lead.get(&format!("/api/v1/exports/{}/download{part}", export["id"].as_str().unwrap())).await.text().await.unwrap();
    (export, text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

#[tokio::test]
async fn a_quality_aware_export_leaves_out_paused_labellers_keeps_agreeing_items_and_aggregates_each_item() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("qx", TaskKind::Pairwise, 4, 4, 2).await;
    let x = app.member("x@example.org", "qx", Role::Labeller).await;
    let y = app.member("y@example.org", "qx", Role::Labeller).await;
    let z = app.member("z@example.org", "qx", Role::Labeller).await;
    let w = app.member("w@example.org", "qx", Role::Labeller).await;
    label_all(&app, &[(&x, false), (&y, false), (&z, true), (&w, true)], "qx").await;
    sqlx::query("INSERT INTO labeller_pauses (id, project_id, user_id, reason) SELECT gen_random_uuid(), p.id, u.id, 'test' FROM projects p, users u WHERE u.email = 'w@example.org'")
        .execute(&app.pool)
        .await
        .unwrap();
    let first: Vec<String> = sqlx::query_scalar("SELECT text FROM responses WHERE position = 0").fetch_all(&app.pool).await.unwrap();

    // Every row carries the item's agreement and the labeller's gold score (none here).
    let (_, raw) = export_rows(&lead, "qx", json!({"format": "comparisons"})).await;
    assert_eq!(raw.len(), 16);
    assert!(raw.iter().all(|r| r["item_agreement"] == 0.0 && r["labeller_gold_score"].is_null()), "{}", raw[0]);

    // Two against two: the majority is a tie, and says so.
    let (_, tied) = export_rows(&lead, "qx", json!({"format": "comparisons", "aggregate": "majority"})).await;
    assert_eq!(tied.len(), 4);
    assert!(tied.iter().all(|r| r["tie"] == true && r["votes"] == 4 && r["method"] == "majority"), "{}", tied[0]);

    // Without the paused labeller: three votes, two for the first response.
    let (export, agg) = export_rows(&lead, "qx", json!({"format": "comparisons", "aggregate": "majority", "exclude_paused": true})).await;
    let w_id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'w@example.org'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(export["options"]["excluded_labellers"], json!([w_id]));
    assert_eq!(agg.len(), 4);
    for r in &agg {
        assert_eq!((r["tie"].as_bool(), r["votes"].as_u64(), r["chosen_votes"].as_f64()), (Some(false), Some(3), Some(2.0)), "{r}");
        assert!(first.contains(&r["chosen"].as_str().unwrap().to_string()));
    }
    let (_, prefs) = export_rows(&lead, "qx", json!({"format": "preferences", "aggregate": "bradley_terry", "exclude_paused": true, "test_percent": 0})).await;
    assert_eq!(prefs.len(), 4);
    assert!(prefs.iter().all(|r| first.contains(&r["chosen"].as_str().unwrap().to_string())));

    // W of 2 against 1 on two responses is 1/9: kept above 0.1, not above 0.5.
    let (_, kept) = export_rows(&lead, "qx", json!({"format": "comparisons", "exclude_paused": true, "min_agreement": 0.1})).await;
    assert_eq!(kept.len(), 12);
    assert!(kept.iter().all(|r| (r["item_agreement"].as_f64().unwrap() - 1.0 / 9.0).abs() < 1e-9));
    let (_, none) = export_rows(&lead, "qx", json!({"format": "comparisons", "exclude_paused": true, "min_agreement": 0.5})).await;
    assert!(none.is_empty());

    for (body, field) in [
        (json!({"format": "comparisons", "min_agreement": 2}), "min_agreement"),
        (json!({"format": "comparisons", "aggregate": "mean"}), "aggregate"),
        (json!({"format": "sft", "aggregate": "majority"}), "aggregate"),
    ] {
        let res = lead.post("/api/v1/projects/qx/exports", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        assert!(res.text().await.unwrap().contains(field), "{body}");
    }

    // Without x as well, whose judgement came first on every item (the row that carries the
    // item's responses when an export is grouped by item): the rows still have every text.
    sqlx::query("INSERT INTO labeller_pauses (id, project_id, user_id, reason) SELECT gen_random_uuid(), p.id, u.id, 'test' FROM projects p, users u WHERE u.email = 'x@example.org'")
        .execute(&app.pool)
        .await
        .unwrap();
    let texts: Vec<String> = sqlx::query_scalar("SELECT text FROM responses").fetch_all(&app.pool).await.unwrap();
    for format in ["comparisons", "preferences"] {
        let (_, two) =
            export_rows(&lead, "qx", json!({"format": format, "aggregate": "majority", "exclude_paused": true, "include_ties": true, "test_percent": 0})).await;
        assert_eq!(two.len(), 4, "{format}");
        for r in &two {
            assert!(texts.contains(&r["chosen"].as_str().unwrap().to_string()) && texts.contains(&r["rejected"].as_str().unwrap().to_string()), "{r}");
            assert!(format == "preferences" || r["votes"] == 2, "{r}");
        }
    }
}

#[tokio::test]
async fn the_dashboard_counts_ordinary_items_only() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("dash", TaskKind::Ranking, 1, 6, 3).await;
    let before: Value = lead.get("/api/v1/projects/dash/dashboard").await.json().await.unwrap();
    assert_eq!(before["items_total"], 6);
    let added: Value = lead.post("/api/v1/projects/dash/quality/honeypots", &json!({"count": 2})).await.json().await.unwrap();
    assert_eq!(added["added"], 2);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE project_id = (SELECT id FROM projects WHERE slug = 'dash')").await, 8);
    let after: Value = lead.get("/api/v1/projects/dash/dashboard").await.json().await.unwrap();
    assert_eq!(after["items_total"], 6, "honeypots are quality checks, not items to label: {after}");
}

/// The project's quality fingerprint now, for the project `slug`.
async fn fingerprint(app: &TestApp, slug: &str) -> rewardlab::db::quality::Fingerprint {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = $1").bind(slug).fetch_one(&app.pool).await.unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    rewardlab::db::quality::fingerprint(&mut conn, id.into()).await.unwrap()
}

#[tokio::test]
async fn the_quality_fingerprint_changes_with_every_input_of_the_figures() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("fp", TaskKind::Ranking, 2, 3, 3).await;
    let a = app.member("a@example.org", "fp", Role::Labeller).await;
    let mut seen = vec![fingerprint(&app, "fp").await];
    let mut changed = |f: rewardlab::db::quality::Fingerprint, what: &str| {
        assert!(!seen.contains(&f), "{what} left the fingerprint as it was: {f:?}");
        seen.push(f);
    };
    // A judgement.
    label_all(&app, &[(&a, false)], "fp").await;
    changed(fingerprint(&app, "fp").await, "a judgement");
    // A review (an acceptance changes no figure, a rejection does; both are counted).
    let j: uuid::Uuid = sqlx::query_scalar("SELECT id FROM judgements ORDER BY seq LIMIT 1").fetch_one(&app.pool).await.unwrap();
    let res = lead.post(&format!("/api/v1/projects/fp/judgements/{j}/review"), &json!({"decision": "rejected", "reason": "careless"})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    changed(fingerprint(&app, "fp").await, "a rejection");
    // A pause and its lift.
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'a@example.org'").fetch_one(&app.pool).await.unwrap();
    sqlx::query("INSERT INTO labeller_pauses (id, project_id, user_id, reason, score, gold_count) SELECT gen_random_uuid(), id, $1, 'test', 0, 3 FROM projects WHERE slug = 'fp'")
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
    changed(fingerprint(&app, "fp").await, "a pause");
    assert_eq!(lead.post(&format!("/api/v1/projects/fp/quality/pauses/{user}/lift"), &json!({"note": "fine"})).await.status(), 200);
    changed(fingerprint(&app, "fp").await, "a lift");
    // A gold reference set, then changed.
    let (item, ids): (uuid::Uuid, Vec<uuid::Uuid>) = sqlx::query_as(
        "SELECT i.id, array_agg(r.id ORDER BY r.position) FROM items i JOIN responses r ON r.item_id = i.id GROUP BY i.id, i.seq ORDER BY i.seq LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let gold = |order: [usize; 3]| json!({"ranking": order.iter().map(|&p| vec![ids[p].to_string()]).collect::<Vec<_>>(), "explanation": "x"});
    assert_eq!(lead.post(&format!("/api/v1/projects/fp/items/{item}/gold"), &gold([0, 1, 2])).await.status(), 200);
    changed(fingerprint(&app, "fp").await, "marking gold");
    assert_eq!(lead.post(&format!("/api/v1/projects/fp/items/{item}/gold"), &gold([2, 1, 0])).await.status(), 200);
    changed(fingerprint(&app, "fp").await, "a changed reference");
    // Nothing else moves it.
    assert_eq!(fingerprint(&app, "fp").await, *seen.last().unwrap());
}

#[tokio::test]
async fn quality_figures_are_kept_until_their_inputs_change_and_a_large_project_updates_them_in_the_background() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("kept", TaskKind::Ranking, 3, 4, 3).await;
    let a = app.member("a@example.org", "kept", Role::Labeller).await;
    let b = app.member("b@example.org", "kept", Role::Labeller).await;
    let c = app.member("c@example.org", "kept", Role::Labeller).await;
    label_all(&app, &[(&a, false), (&b, true)], "kept").await;
    let report = |api: &Api| {
        let api = api.clone();
        async move { api.get("/api/v1/projects/kept/quality").await.json::<Value>().await.unwrap() }
    };
    let first = report(&lead).await;
    assert_eq!((first["judgements_counted"].as_u64(), first["updating"].as_bool()), (Some(8), Some(false)), "{first}");
    // Kept: the same computation answers again.
    assert_eq!(report(&lead).await["computed_at"], first["computed_at"]);
    // A small project is computed again before the report answers.
    let j: uuid::Uuid = sqlx::query_scalar("SELECT id FROM judgements ORDER BY seq LIMIT 1").fetch_one(&app.pool).await.unwrap();
    assert_eq!(lead.post(&format!("/api/v1/projects/kept/judgements/{j}/review"), &json!({"decision": "rejected", "reason": "careless"})).await.status(), 200);
    let after = report(&lead).await;
    assert_eq!((after["judgements_counted"].as_u64(), after["updating"].as_bool()), (Some(7), Some(false)), "{after}");
    assert_ne!(after["computed_at"], first["computed_at"]);

    // As a large project: the page answers with the figures it has, says they are being
    // updated, and the new ones arrive without another change.
    app.state.quality.set_background_above(1);
    label_all(&app, &[(&c, false)], "kept").await;
    let judged = app.count("SELECT count(*) FROM judgements").await;
    assert!(judged > 8, "c judged the rejected judgement's item and more: {judged}");
    let s = app.login("lead@kept.org", PASSWORD).await;
    let page = s.get("/projects/kept/quality").await.text().await.unwrap();
    assert!(page.contains("Figures from 7 judgements") && page.contains("newer judgements are being counted now"), "{page}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = report(&lead).await;
        if r["updating"] == false && r["judgements_counted"].as_u64() == Some(judged as u64 - 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the figures never caught up: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = s.get("/projects/kept/quality").await.text().await.unwrap();
    assert!(page.contains(&format!("Figures from {} judgements", judged - 1)) && !page.contains("being counted now"), "{page}");
}
