//! The lead's item browser (the Items tab): word search over prompts and responses, filters by
//! status, model, labeller, flag, source and date, keyset pages, refusals; over HTTP and in
//! Chromium at 1400 and 420 px (screenshots in target/screenshots/).

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, Session, TestApp, PASSWORD};
use crate::webdriver::Browser;

/// Item ids (external) listed on a page of the browser, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("class=\"item-link\"").skip(1).map(|s| s.split("<code>").nth(1).unwrap().split('<').next().unwrap().to_string()).collect()
}

async fn ids(s: &Session, query: &str) -> Vec<String> {
    let res = s.get(&format!("/projects/browse/items?{query}")).await;
    assert_eq!(res.status(), 200, "{query}");
    listed(&res.text().await.unwrap())
}

/// A ranking project with overlap 2: `plain-0..5`, a zebra item, an item with a special model,
/// and a generated one. Ann judges `plain-0`, `plain-1` and the zebra item, flagging the zebra's
/// first response; Bo judges `plain-0`.
async fn browse_project(app: &TestApp) -> Api {
    app.project("browse", TaskKind::Ranking, 2).await;
    let lead = app.member("lead@browse.org", "browse", Role::Lead).await;
    let mut lines: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("plain-{i}"), "prompt": format!("Question number {i}"), "responses": [{"model": "m0", "text": "yes"}, {"model": "m1", "text": "no"}]}))
        .collect();
    lines.push(json!({"id": "zebra", "prompt": "Describe a Zebra crossing\nplease", "responses": [{"model": "m0", "text": "stripes"}, {"model": "m1", "text": "black and white"}]}));
    lines.push(
        json!({"id": "special", "prompt": "Anything", "responses": [{"model": "m0", "text": "The quokkas smile"}, {"model": "rare-model", "text": "b"}]}),
    );
    lines.push(json!({"id": "gen-1", "prompt": "Sampled", "metadata": {"generated_by_run": "00000000-0000-0000-0000-000000000000"},
        "responses": [{"model": "m0", "text": "x"}, {"model": "m1", "text": "y"}]}));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(lead.post_bytes("/api/v1/projects/browse/items", body.into_bytes()).await.status(), 200);
    let ann = app.member("ann@browse.org", "browse", Role::Labeller).await;
    let bo = app.member("bo@browse.org", "browse", Role::Labeller).await;
    let wanted = |ext: &str, who: &str| (ext.to_string(), who.to_string());
    let plan = [wanted("plain-0", "ann"), wanted("plain-1", "ann"), wanted("zebra", "ann"), wanted("plain-0", "bo")];
    for (ext, who) in plan {
        let api = if who == "ann" { &ann } else { &bo };
        // Skip tasks until the wanted item comes up.
        loop {
            let task = api.next_task("browse").await.expect("a task");
            let prompt = task["prompt"].to_string();
            let item: String = sqlx::query_scalar("SELECT i.external_id FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1::uuid")
                .bind(task["task_id"].as_str().unwrap())
                .fetch_one(&app.pool)
                .await
                .unwrap();
            if item != ext {
                let res = api.post(&format!("/api/v1/tasks/{}/skip", task["task_id"].as_str().unwrap()), &json!({"reason": "later"})).await;
                assert!(res.status().is_success(), "{prompt}");
                continue;
            }
            let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
            let mut body = json!({"idempotency_key": format!("{who}-{ext}"), "ranking": [[ids[0]], [ids[1]]]});
            if ext == "zebra" {
                body["flags"] = json!({ids[0].as_str().unwrap(): ["hallucination"]});
            }
            let res = api.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &body).await;
            assert_eq!(res.status(), 201);
            break;
        }
    }
    sqlx::query("UPDATE items SET created_at = '2025-01-15 12:00:00+00' WHERE external_id = 'special'").execute(&app.pool).await.unwrap();
    lead
}

#[tokio::test]
async fn a_lead_searches_and_filters_the_items_and_opens_one() {
    let app = spawn_app().await;
    browse_project(&app).await;
    let s = app.login("lead@browse.org", PASSWORD).await;
    let all = ids(&s, "").await;
    assert_eq!(all, ["gen-1", "special", "zebra", "plain-5", "plain-4", "plain-3", "plain-2", "plain-1", "plain-0"], "newest first");
    assert_eq!(ids(&s, "q=zebra").await, ["zebra"], "a prompt's word, any case");
    assert_eq!(ids(&s, "q=Zeb").await, ["zebra"], "a prefix");
    assert_eq!(ids(&s, "q=crossing+please").await, ["zebra"], "every word, across lines");
    assert_eq!(ids(&s, "q=quokka").await, Vec::<String>::new(), "responses only when asked");
    assert_eq!(ids(&s, "q=quokka&responses=1").await, ["special"], "a response's word");
    assert_eq!(ids(&s, "q=stripes&responses=1").await, ["zebra"]);
    assert_eq!(ids(&s, "q=zebra&responses=1").await, ["zebra"], "the prompt still counts");
    assert_eq!(ids(&s, "q=white+stripes&responses=1").await, Vec::<String>::new(), "the words of one text");
    assert_eq!(ids(&s, "q=%25&responses=1").await.len(), 9, "a wildcard alone is no word: nothing is searched");
    assert_eq!(ids(&s, "q=%27%3B+drop+table").await, Vec::<String>::new(), "punctuation is no syntax");
    assert_eq!(ids(&s, "status=complete").await, ["plain-0"]);
    assert_eq!(ids(&s, "status=in_progress").await, ["zebra", "plain-1"]);
    assert_eq!(ids(&s, "status=unlabelled").await.len(), 6);
    assert_eq!(ids(&s, "model=rare-model").await, ["special"]);
    assert_eq!(ids(&s, "labeller=bo%40browse.org").await, ["plain-0"]);
    assert_eq!(ids(&s, "labeller=ann%40browse.org&status=in_progress").await, ["zebra", "plain-1"], "filters combine");
    assert_eq!(ids(&s, "flag=*").await, ["zebra"]);
    assert_eq!(ids(&s, "flag=hallucination").await, ["zebra"]);
    assert_eq!(ids(&s, "flag=harmful").await, Vec::<String>::new());
    assert_eq!(ids(&s, "source=generated").await, ["gen-1"]);
    assert_eq!(ids(&s, "source=imported").await.len(), 8);
    assert_eq!(ids(&s, "to=2025-01-15").await, ["special"], "the whole last day");
    assert_eq!(ids(&s, "from=2025-01-16").await.len(), 8);

    let page = s.get("/projects/browse/items?flag=hallucination&q=zebra").await.text().await.unwrap();
    assert!(page.contains("<option selected>hallucination</option>") && page.contains("value=\"zebra\""), "the form keeps the filters");
    let zebra: String = sqlx::query_scalar("SELECT id::text FROM items WHERE external_id = 'zebra'").fetch_one(&app.pool).await.unwrap();
    assert!(page.contains(&format!("href=\"/projects/browse/items/{zebra}\"")));
    let item = s.get(&format!("/projects/browse/items/{zebra}")).await.text().await.unwrap();
    assert!(item.contains("id=\"tab-items\" href=\"/projects/browse/items\" class=\"active\""));
    assert!(item.contains("<td>ann@browse.org</td>") && item.contains(": hallucination"), "every judgement, with its flags: {item}");

    for (query, field) in
        [("status=done", "status:"), ("source=web", "source:"), ("from=yesterday", "from:"), ("before=x", "before:"), ("labeller=nobody", "labeller:")]
    {
        let res = s.get(&format!("/projects/browse/items?{query}")).await;
        assert_eq!(res.status(), 400, "{query}");
        assert!(res.text().await.unwrap().contains(field), "{query}");
    }
}

#[tokio::test]
async fn pages_follow_each_other_by_keyset_and_only_the_project_s_leads_browse() {
    let app = spawn_app().await;
    app.lead_with_items("many", TaskKind::Ranking, 1, 120, 2).await;
    app.project("other", TaskKind::Ranking, 1).await;
    app.member("lead@other.org", "other", Role::Lead).await;
    app.member("lab@many.org", "many", Role::Labeller).await;
    let s = app.login("lead@many.org", PASSWORD).await;
    let mut seen: Vec<String> = Vec::new();
    let mut url = "/projects/many/items?q=many".to_string();
    let mut pages = 0;
    loop {
        let html = s.get(&url).await.text().await.unwrap();
        let page = listed(&html);
        assert!(!page.is_empty());
        seen.extend(page);
        pages += 1;
        let Some(at) = html.find("id=\"next-page\"") else { break };
        let href = html[..at].rsplit("href=\"").next().unwrap().split('"').next().unwrap().replace("&#38;", "&").replace("&amp;", "&");
        assert!(href.contains("q=many&"), "the next page keeps the filters: {href}");
        assert!(pages < 10, "{href}");
        url = href;
    }
    assert_eq!((pages, seen.len()), (3, 120));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 120, "no item twice");
    assert_eq!(seen[0], "many-119");

    let lab = app.login("lab@many.org", PASSWORD).await;
    assert_eq!(lab.get("/projects/many/items").await.status(), 403);
    let other = app.login("lead@other.org", PASSWORD).await;
    assert_eq!(other.get("/projects/many/items").await.status(), 404);
}

#[tokio::test]
async fn excluded_items_are_leased_no_more_and_leave_later_exports_but_not_earlier_ones() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("ex", TaskKind::Ranking, 1, 4, 2).await;
    let lab = app.member("lab@ex.org", "ex", Role::Labeller).await;
    let task = lab.next_task("ex").await.unwrap();
    assert_eq!(lab.submit_in_order(&task, "k0").await.status(), 201);
    let before: Value = lead.post("/api/v1/projects/ex/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let item = |ext: &'static str| {
        let pool = app.pool.clone();
        async move { sqlx::query_scalar::<_, String>("SELECT id::text FROM items WHERE external_id = $1").bind(ext).fetch_one(&pool).await.unwrap() }
    };
    let (ex0, ex1) = (item("ex-0").await, item("ex-1").await);

    let s = app.login("lead@ex.org", PASSWORD).await;
    let back = "/projects/ex/items?status=unlabelled";
    let form = [("csrf", s.csrf.as_str()), ("back", back), ("item", ex0.as_str()), ("item", ex1.as_str())];
    let res = s.post_form("/projects/ex/items/exclude", &form).await;
    assert_eq!((res.status().as_u16(), res.headers()["location"].to_str().unwrap()), (303, back));
    let excluded = listed(&s.get("/projects/ex/items?status=excluded").await.text().await.unwrap());
    assert_eq!(excluded, ["ex-1", "ex-0"]);
    assert_eq!(listed(&s.get("/projects/ex/items?status=unlabelled").await.text().await.unwrap()), ["ex-3", "ex-2"]);
    let res = s.post_form("/projects/ex/items/exclude", &[("csrf", s.csrf.as_str()), ("back", "https://evil.example/"), ("item", ex0.as_str())]).await;
    assert_eq!(res.headers()["location"], "/projects/ex/items", "back only to the list");

    // Leased no more, even after the overlap rises.
    let fields = [("csrf", s.csrf.as_str()), ("name", "Test project"), ("overlap", "2")];
    assert_eq!(s.post_form("/projects/ex/settings", &fields).await.status(), 303);
    let mut leased = Vec::new();
    while let Some(task) = lab.next_task("ex").await {
        leased.push(task["prompt"].to_string());
        assert_eq!(lab.submit_in_order(&task, &format!("k{}", leased.len())).await.status(), 201);
    }
    assert_eq!(leased.len(), 2, "only ex-2 and ex-3: {leased:?}");
    let lab2 = app.member("lab2@ex.org", "ex", Role::Labeller).await;
    let mut second = 0;
    while let Some(task) = lab2.next_task("ex").await {
        assert!(!task["prompt"].to_string().contains("question 0") && !task["prompt"].to_string().contains("question 1"));
        assert_eq!(lab2.submit_in_order(&task, &format!("m{second}")).await.status(), 201);
        second += 1;
    }
    assert_eq!(second, 2);

    // A later export leaves the excluded item's judgement out; the earlier one replays unchanged.
    let after: Value = lead.post("/api/v1/projects/ex/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!((before["files"][0]["rows"].as_u64(), after["files"][0]["rows"].as_u64()), (Some(1), Some(4)));
    let old = before["id"].as_str().unwrap();
    let first = lead.get(&format!("/api/v1/exports/{old}/download")).await.bytes().await.unwrap();
    for f in std::fs::read_dir(app.tmp.join("exports")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let res = lead.get(&format!("/api/v1/exports/{old}/download")).await;
    assert_eq!(res.headers()["X-Rewardlab-Sha256"], before["files"][0]["sha256"].as_str().unwrap());
    assert_eq!(res.bytes().await.unwrap(), first, "replayed from its snapshot, the exclusion unseen");

    // The API, and its refusals.
    let ex2 = item("ex-2").await;
    assert_eq!(lab.post("/api/v1/projects/ex/items/exclude", &json!({"items": [ex2]})).await.status(), 403);
    app.project("other", TaskKind::Ranking, 1).await;
    let other = app.member("lead@other.org", "other", Role::Lead).await;
    assert_eq!(other.post("/api/v1/projects/ex/items/exclude", &json!({"items": [ex2]})).await.status(), 404);
    let res = other.post("/api/v1/projects/other/items/exclude", &json!({"items": [ex2]})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["excluded"], 0, "another project's item is untouched");
    assert_eq!(lead.post("/api/v1/projects/ex/items/exclude", &json!({"items": []})).await.status(), 400);
    assert_eq!(lead.post("/api/v1/projects/ex/items/exclude", &json!({"items": ["x"]})).await.status(), 400);
    let res = lead.post("/api/v1/projects/ex/items/exclude", &json!({"items": [ex2, ex0]})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["excluded"], 1);
    let res = s.post_form("/projects/ex/items/exclude", &[("csrf", s.csrf.as_str()), ("item", "nope")]).await;
    assert_eq!(res.status(), 400);
    assert_eq!(s.post_form("/projects/ex/items/exclude", &[("csrf", "stale"), ("item", ex2.as_str())]).await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM item_exclusions").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_item_browser_works_in_chromium_wide_and_narrow() {
    let app = spawn_app().await;
    browse_project(&app).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/login", app.addr)).await;
    b.type_into("#email", "lead@browse.org").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#sign-in").await;
    b.find("#projects").await;
    for width in [1400, 420] {
        b.resize(width, 1000).await;
        b.goto(&format!("{}/projects/browse/items", app.addr)).await;
        b.type_into("#filter-q", "zebra").await;
        b.script("document.querySelector('#filter-status').value = 'in_progress'").await;
        b.click("#filter-apply").await;
        b.wait_for_text("#item-list", "zebra").await;
        assert_eq!(b.script("return document.querySelectorAll('#item-list tbody tr').length").await, json!(1));
        let overflow = b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_f64().unwrap() <= 1.0, "the items tab at {width} px overflows by {overflow}");
        b.screenshot(&format!("items-search-{width}")).await;
        b.click("#item-list a.item-link").await;
        b.wait_for_text("#judgements", "ann@browse.org").await;
        b.screenshot(&format!("item-{width}")).await;
    }
    // Tick an item and exclude it; the list comes back, and the item is listed as excluded.
    b.goto(&format!("{}/projects/browse/items?q=question+5", app.addr)).await;
    b.click("#item-list input[name=item]").await;
    b.click("#exclude-button").await;
    // Polled by script: the list is replaced by the page the form returns to.
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = b.script("const l = document.querySelector('#item-list'); return l ? l.textContent : ''").await;
        if shown.as_str().is_some_and(|t| t.contains("excluded")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(shown.as_str().unwrap().contains("excluded"), "{shown}");
    assert_eq!(b.script("return location.search").await, json!("?q=question+5"));
    b.goto(&format!("{}/projects/browse/items?status=excluded", app.addr)).await;
    assert!(b.text("#item-list").await.contains("plain-5"));
    b.quit().await;
}

/// Not a check but a measurement (`cargo test --test api item_browser::measure -- --ignored
/// --nocapture`): the browser's pages on 100,000 items of 4 responses, 20,000 of them judged.
#[tokio::test]
#[ignore]
async fn measure_the_item_browser_on_100k_items() {
    let app = spawn_app().await;
    app.project("big", TaskKind::Ranking, 1).await;
    app.member("lead@big.org", "big", Role::Lead).await;
    let labeller = app.user("lab@big.org", false).await;
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"];
    let setup = [
        "INSERT INTO items (id, project_id, external_id, prompt, n_responses, created_at)
         SELECT gen_random_uuid(), p.id, 'it-' || g, jsonb_build_array(jsonb_build_object('role', 'user', 'content',
                'Question ' || g || ' about ' || ($1::text[])[1 + g % 12] || ' and ' || ($1::text[])[1 + (g / 12) % 12] || ' with some more words to read')),
                4, now() - make_interval(mins => 100000 - g)
         FROM projects p, generate_series(1, 100000) g WHERE p.slug = 'big'",
        "INSERT INTO responses (id, item_id, position, model, text)
         SELECT gen_random_uuid(), i.id, k, 'model-' || ((i.seq + k) % 7), repeat('A response of several sentences about ' || ($1::text[])[1 + (i.seq + k) % 12] || '. ', 6)
         FROM items i, generate_series(0, 3) k",
    ];
    for sql in setup {
        sqlx::query(sql).bind(&words[..]).execute(&app.pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO tasks (id, project_id, item_id, user_id, display_order, status, expires_at)
         SELECT gen_random_uuid(), i.project_id, i.id, $1, '{0,1,2,3}', 'submitted', now() FROM items i WHERE i.seq % 5 = 0",
    )
    .bind(labeller)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, ranks, flags)
         SELECT gen_random_uuid(), t.project_id, t.item_id, t.id, t.user_id, 'labeller', '{1,2,3,4}',
                CASE WHEN random() < 0.05 THEN '{\"0\": [\"harmful\"]}'::jsonb ELSE '{}'::jsonb END FROM tasks t",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&app.pool).await.unwrap();
    let s = app.login("lead@big.org", PASSWORD).await;
    for query in [
        "",
        "before=50000",
        "q=golf",
        "q=golf+kilo",
        "q=zzzz",
        "q=zzzz&responses=1",
        "q=golf&responses=1",
        "status=complete",
        "status=unlabelled&model=model-3",
        "model=model-6",
        "labeller=lab%40big.org",
        "flag=harmful",
        "source=generated",
        "from=2026-01-01",
        "q=question+99999",
    ] {
        s.get(&format!("/projects/big/items?{query}")).await; // warms the plan cache
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let html = s.get(&format!("/projects/big/items?{query}")).await.text().await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            rows = listed(&html).len();
        }
        times.sort_by(f64::total_cmp);
        println!("items?{query:<40} {rows:>3} rows  median {:>7.1} ms", times[1]);
    }
}
