//! Queue strategies over HTTP: the setting (API and Settings tab), each strategy's lease order,
//! gold items, honeypots and overlap unchanged under `uncertainty`, and a real worker's real
//! ensemble reward model scoring the open items that `uncertainty` then leases by.

use std::time::{Duration, Instant};

use rewardlab::domain::queue::item_priority;
use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, TestApp, PASSWORD};
use crate::runs::{scratch, tiny, Worker};

async fn set_strategy(lead: &Api, slug: &str, strategy: &str) -> Value {
    let res = lead.post(&format!("/api/v1/projects/{slug}/queue"), &json!({"strategy": strategy})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// The item index (`… question N`) of a leased task.
fn item_of(task: &Value) -> usize {
    let prompt = task["prompt"].as_str().or_else(|| task["prompt"][0]["content"].as_str()).unwrap_or_default().to_string();
    prompt.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The items `who` is handed, in order, judging each as shown, until nothing is left.
async fn lease_order(who: &Api, slug: &str) -> Vec<usize> {
    let mut order = Vec::new();
    while let Some(task) = who.next_task(slug).await {
        order.push(item_of(&task));
        assert_eq!(who.submit_in_order(&task, &format!("k{}", order.len())).await.status(), 201);
    }
    order
}

/// Sets item `i`'s queue priority and members' best responses directly, as a scoring would.
async fn seed(app: &TestApp, slug: &str, i: usize, priority: Option<f64>, best: Option<&str>) {
    sqlx::query(
        "UPDATE items SET queue_priority = $3, queue_best = $4::smallint[] WHERE external_id = $2 AND project_id = (SELECT id FROM projects WHERE slug = $1)",
    )
    .bind(slug)
    .bind(format!("{slug}-{i}"))
    .bind(priority)
    .bind(best)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn each_queue_strategy_hands_out_items_in_its_own_order() {
    let app = spawn_app().await;
    let fifo = app.lead_with_items("fifo", TaskKind::Ranking, 1, 6, 2).await;
    let state: Value = fifo.get("/api/v1/projects/fifo/queue").await.json().await.unwrap();
    assert_eq!((state["strategy"].as_str(), state["open_items"].as_i64(), state["scored_by"].is_null()), (Some("fifo"), Some(6), true), "{state}");
    let lab = app.member("a@fifo.org", "fifo", Role::Labeller).await;
    assert_eq!(lease_order(&lab, "fifo").await, vec![0, 1, 2, 3, 4, 5]);

    let newest = app.lead_with_items("newest", TaskKind::Ranking, 1, 6, 2).await;
    assert_eq!(set_strategy(&newest, "newest", "newest-first").await["strategy"], "newest-first");
    let lab = app.member("a@newest.org", "newest", Role::Labeller).await;
    assert_eq!(lease_order(&lab, "newest").await, vec![5, 4, 3, 2, 1, 0]);

    // Highest priority first; unscored items after, in import order.
    let unsure = app.lead_with_items("unsure", TaskKind::Ranking, 1, 6, 2).await;
    set_strategy(&unsure, "unsure", "uncertainty").await;
    seed(&app, "unsure", 3, Some(0.9), Some("{0,1}")).await;
    seed(&app, "unsure", 1, Some(0.5), Some("{0,0}")).await;
    seed(&app, "unsure", 4, Some(-0.2), Some("{1,1}")).await;
    let lab = app.member("a@unsure.org", "unsure", Role::Labeller).await;
    assert_eq!(lease_order(&lab, "unsure").await, vec![3, 1, 4, 0, 2, 5]);

    // Two members: every lease draws two distinct ones, so the one item whose members name
    // different best responses comes first, though its priority is lowest; then priority order.
    let thompson = app.lead_with_items("thompson", TaskKind::Ranking, 1, 6, 2).await;
    set_strategy(&thompson, "thompson", "thompson").await;
    sqlx::query("UPDATE projects SET queue_members = 2 WHERE slug = 'thompson'").execute(&app.pool).await.unwrap();
    for (i, p) in [0.9, 0.8, 0.7, 0.6, 0.1, 0.5].into_iter().enumerate() {
        seed(&app, "thompson", i, Some(p), Some(if i == 4 { "{0,1}" } else { "{1,1}" })).await;
    }
    let lab = app.member("a@thompson.org", "thompson", Role::Labeller).await;
    assert_eq!(lease_order(&lab, "thompson").await, vec![4, 0, 1, 2, 3, 5]);
}

/// The values of the Settings tab's selected strategy options.
fn selected(page: &str) -> Vec<String> {
    page.split("<option value=\"")
        .skip(1)
        .filter(|o| o.split('>').next().unwrap().contains("selected"))
        .map(|o| o.split('"').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_strategy_is_a_lead_s_setting_checked_in_the_api_and_the_settings_tab() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("set", TaskKind::Pairwise, 1, 2, 2).await;
    let res = lead.post("/api/v1/projects/set/queue", &json!({"strategy": "random"})).await;
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(body.contains("strategy") && body.contains("fifo, newest-first, uncertainty or thompson"), "{body}");
    assert_eq!(lead.post("/api/v1/projects/set/queue", &json!({"strategy": "fifo", "extra": 1})).await.status(), 400);
    let lab = app.member("lab@set.org", "set", Role::Labeller).await;
    assert_eq!(lab.post("/api/v1/projects/set/queue", &json!({"strategy": "thompson"})).await.status(), 403);
    assert_eq!(lab.get("/api/v1/projects/set/queue").await.status(), 403);
    assert_eq!(lead.get("/api/v1/projects/nope/queue").await.status(), 404);

    let s = app.login("lead@set.org", PASSWORD).await;
    let page = s.get("/projects/set/settings").await.text().await.unwrap();
    assert_eq!(selected(&page), vec!["fifo"]);
    assert!(page.contains("No reward model has scored"), "{page}");
    let res = s.post_form("/projects/set/queue", &[("csrf", &s.csrf), ("strategy", "sideways")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("strategy"));
    assert_eq!(s.post_form("/projects/set/queue", &[("csrf", "stale"), ("strategy", "uncertainty")]).await.status(), 403);
    assert_eq!(s.post_form("/projects/set/queue", &[("csrf", &s.csrf), ("strategy", "uncertainty")]).await.status(), 303);
    let state: Value = lead.get("/api/v1/projects/set/queue").await.json().await.unwrap();
    assert_eq!(state["strategy"], "uncertainty");
    let page = s.get("/projects/set/settings").await.text().await.unwrap();
    assert_eq!(selected(&page), vec!["uncertainty"]);
}

#[tokio::test]
async fn under_uncertainty_onboarding_gold_comes_first_honeypots_mix_in_and_overlap_holds() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("mix", TaskKind::Ranking, 2, 8, 3).await;
    let gold = json!({"id": "mix-gold", "prompt": "mix gold question 100", "responses": [{"model": "m0", "text": "a"}, {"model": "m1", "text": "b"}, {"model": "m2", "text": "c"}],
                      "gold": {"ranking": [[2], [1], [0]]}});
    assert_eq!(lead.post_bytes("/api/v1/projects/mix/items", format!("{gold}\n").into_bytes()).await.status(), 200);
    assert_eq!(lead.post("/api/v1/projects/mix/quality/honeypots", &json!({"count": 2})).await.status(), 201);
    let res = lead.post("/api/v1/projects/mix/quality/settings", &json!({"gold_onboarding": 1, "gold_rate": 0.3})).await;
    assert_eq!(res.status(), 200);
    set_strategy(&lead, "mix", "uncertainty").await;
    for (i, p) in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8].into_iter().enumerate() {
        seed(&app, "mix", i, Some(p), Some("{0}")).await;
    }
    let mut firsts = Vec::new();
    for who in ["a", "b", "c"] {
        let lab = app.member(&format!("{who}@mix.org"), "mix", Role::Labeller).await;
        let first = lab.next_task("mix").await.unwrap();
        let kind: Option<String> =
            sqlx::query_scalar("SELECT check_kind FROM tasks WHERE id = $1::uuid").bind(first["task_id"].as_str()).fetch_one(&app.pool).await.unwrap();
        assert_eq!(kind.as_deref(), Some("onboarding"), "{who}'s first task is the onboarding gold item");
        assert_eq!(lab.submit_in_order(&first, "first").await.status(), 201);
        let mut n = 0;
        while let Some(task) = lab.next_task("mix").await {
            let kind: Option<String> =
                sqlx::query_scalar("SELECT check_kind FROM tasks WHERE id = $1::uuid").bind(task["task_id"].as_str()).fetch_one(&app.pool).await.unwrap();
            if kind.is_none() && firsts.len() < 3 && n == 0 {
                firsts.push(item_of(&task));
                n += 1;
            }
            assert_eq!(lab.submit_in_order(&task, &format!("{who}{}", task["task_id"])).await.status(), 201);
        }
    }
    // The first labeller starts at the most uncertain item; the second too (overlap 2); the
    // third gets what is left, from the top.
    assert_eq!(&firsts[..2], &[7, 7], "{firsts:?}");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM (SELECT i.id FROM items i LEFT JOIN tasks t ON t.item_id = i.id AND t.status = 'submitted' AND t.check_kind IS NULL
                          WHERE i.gold_ranks IS NULL GROUP BY i.id HAVING count(t.id) <> 2) x"
        )
        .await,
        0,
        "every ordinary item judged by exactly its overlap"
    );
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE check_kind IS NOT NULL AND item_id IN (SELECT id FROM items WHERE gold_ranks IS NULL)").await, 0);
    assert!(app.count("SELECT count(*) FROM tasks WHERE check_kind = 'gold'").await <= 3 * 3, "each labeller meets each gold item once at most");
}

/// The labeller's judgement of every task left: the response saying "answer 0" first.
async fn prefer_answer_zero(who: &Api, slug: &str, limit: usize) -> usize {
    let mut n = 0;
    while n < limit {
        let Some(task) = who.next_task(slug).await else { break };
        let mut rs: Vec<Value> = task["responses"].as_array().unwrap().clone();
        rs.sort_by_key(|r| !r["text"].as_str().unwrap().contains("answer 0"));
        let ranking: Vec<Vec<Value>> = rs.iter().map(|r| vec![r["id"].clone()]).collect();
        let res = who
            .post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": format!("p{n}"), "ranking": ranking}))
            .await;
        assert_eq!(res.status(), 201);
        n += 1;
    }
    n
}

async fn wait_run(app: &TestApp, id: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let status: String = sqlx::query_scalar("SELECT status::text FROM runs WHERE id = $1::uuid").bind(id).fetch_one(&app.pool).await.unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            return status;
        }
        if started.elapsed() > limit {
            let log: Vec<String> =
                sqlx::query_scalar("SELECT line FROM run_logs WHERE run_id = $1::uuid ORDER BY id").bind(id).fetch_all(&app.pool).await.unwrap();
            panic!("run {id} still {status} after {limit:?}; log:\n{}", log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ensemble_reward_model_scores_the_open_items_and_uncertainty_leases_by_it() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("rm", TaskKind::Ranking, 1, 30, 2).await;
    let lab = app.member("lab@rm.org", "rm", Role::Labeller).await;
    assert_eq!(prefer_answer_zero(&lab, "rm", 20).await, 20);
    set_strategy(&lead, "rm", "uncertainty").await;
    let res =
        lead.post("/api/v1/projects/rm/runs", &json!({"kind": "rm", "config": tiny(json!({"epochs": 2, "lr": 0.003, "batch_size": 8, "ensemble": 2}))})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let run = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let store = scratch("queue-store");
    let _worker = Worker::start(&app, &store, "w-queue", 20.0);
    assert_eq!(wait_run(&app, &run, Duration::from_secs(300)).await, "succeeded");

    // Every response: the mean, the spread and both members' rewards, the mean theirs.
    let rows: Vec<(f64, Option<f64>, Option<Vec<f64>>)> =
        sqlx::query_as("SELECT reward, reward_std, member_rewards FROM response_scores WHERE run_id = $1::uuid").bind(&run).fetch_all(&app.pool).await.unwrap();
    assert_eq!(rows.len(), 60);
    for (mean, std, members) in &rows {
        let m = members.as_ref().expect("member rewards");
        assert_eq!(m.len(), 2);
        assert!(((m[0] + m[1]) / 2.0 - mean).abs() < 1e-4 && (std.unwrap() - (m[0] - m[1]).abs() / 2.0).abs() < 1e-4, "{mean} {std:?} {m:?}");
    }
    let state: Value = lead.get("/api/v1/projects/rm/queue").await.json().await.unwrap();
    assert_eq!(
        (state["scored_by"].as_str(), state["members"].as_i64(), state["scored_open_items"].as_i64(), state["open_items"].as_i64()),
        (Some(run.as_str()), Some(2), Some(10), Some(10)),
        "{state}"
    );

    // Each open item's priority is the domain's, from the stored member rewards.
    let items: Vec<(i64, Option<f64>, Vec<Vec<f64>>)> = open_items_with_members(&app, &run).await;
    let mut top = (f64::NEG_INFINITY, 0i64);
    for (seq, stored, members) in &items {
        let expect = item_priority(members).unwrap();
        assert!((stored.unwrap() - expect).abs() < 1e-9, "{stored:?} vs {expect}");
        if expect > top.0 {
            top = (expect, *seq);
        }
    }
    let task = lab.next_task("rm").await.unwrap();
    let leased: i64 = sqlx::query_scalar("SELECT i.seq FROM tasks t JOIN items i ON i.id = t.item_id WHERE t.id = $1::uuid")
        .bind(task["task_id"].as_str())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(leased, top.1, "the labeller gets the item the ensemble is least sure of");

    let s = app.login("lead@rm.org", PASSWORD).await;
    let page = s.get("/projects/rm/settings").await.text().await.unwrap();
    assert!(page.contains(&format!("reward model run {run}")) && page.contains("10 of 10 open items scored"), "{page}");
}

/// The open items' seq, stored priority and member rewards per response (in position order).
async fn open_items_with_members(app: &TestApp, run: &str) -> Vec<(i64, Option<f64>, Vec<Vec<f64>>)> {
    let rows: Vec<(i64, Option<f64>, serde_json::Value)> = sqlx::query_as(
        "SELECT i.seq, i.queue_priority, json_agg(s.member_rewards ORDER BY r.position)
           FROM items i JOIN responses r ON r.item_id = i.id JOIN response_scores s ON s.response_id = r.id AND s.run_id = $1::uuid
          WHERE i.is_open GROUP BY i.id",
    )
    .bind(run)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    rows.into_iter().map(|(seq, p, m)| (seq, p, serde_json::from_value(m).unwrap())).collect()
}

/// Index scans of `index` so far in this database, with this session's counts flushed first.
async fn index_scans(conn: &mut sqlx::PgConnection, index: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await.unwrap();
    sqlx::query_scalar("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = $1").bind(index).fetch_one(&mut *conn).await.unwrap()
}

/// Right after an import every item is open, and the statistics say so: the fifo and
/// newest-first leases and the sweeps must still read the partial index of open items
/// (`items_open`), not the index of all items, which then costs the same but walks every closed
/// item at the head of the queue on each lease once labelling has begun (migration 0009). Run
/// through `rl_take` and `rl_sweep` themselves with generic plans, as the server's pool plans them.
#[tokio::test]
async fn open_queue_scans_use_the_open_items_index_when_every_item_is_open() {
    use sqlx::Connection;
    let app = spawn_app().await;
    app.lead_with_items("plan", TaskKind::Ranking, 1, 3000, 2).await;
    let mut c = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("ANALYZE items").execute(&mut c).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut c).await.unwrap();
    let labeller = app.user("l@plan.org", false).await;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'plan'").fetch_one(&mut c).await.unwrap();
    let (open_before, all_before) = (index_scans(&mut c, "items_open").await, index_scans(&mut c, "items_project_seq").await);
    for strategy in ["fifo", "newest-first"] {
        sqlx::query("UPDATE projects SET queue_strategy = $1::queue_strategy WHERE id = $2").bind(strategy).bind(project).execute(&mut c).await.unwrap();
        for _ in 0..5 {
            let task: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT (rl_take($1, $2, 1, 60, gen_random_uuid())).task").bind(project).bind(labeller.0).fetch_one(&mut c).await.unwrap();
            assert!(task.is_some(), "{strategy}: a lease");
        }
    }
    sqlx::query("SELECT rl_sweep($1, 1, 1000)").bind(project).execute(&mut c).await.unwrap();
    let (open_after, all_after) = (index_scans(&mut c, "items_open").await, index_scans(&mut c, "items_project_seq").await);
    assert!(open_after - open_before >= 11, "ten leases and a sweep read items_open: {} scans", open_after - open_before);
    assert_eq!(all_after - all_before, 0, "the index of all items was scanned by a lease or the sweep");
}

/// Under 'uncertainty' and 'thompson' the leases and the sweeps both read the head of the
/// priority order through `items_open_priority`, neither the open items in import order nor all
/// items: a sweep that read the import order never closed the complete items a race left open
/// at the priority head, and every lease walked past them (migration 0013). Run through
/// `rl_take` and `rl_sweep` themselves with generic plans, as the server's pool plans them.
#[tokio::test]
async fn priority_queue_leases_and_sweeps_read_the_priority_index() {
    use sqlx::Connection;
    let app = spawn_app().await;
    app.lead_with_items("prio", TaskKind::Ranking, 1, 3000, 2).await;
    let mut c = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("UPDATE items SET queue_priority = random(), queue_best = ARRAY[floor(random() * 2)::int2, floor(random() * 2)::int2]")
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query("UPDATE projects SET queue_members = 2 WHERE slug = 'prio'").execute(&mut c).await.unwrap();
    sqlx::query("VACUUM ANALYZE items").execute(&mut c).await.unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut c).await.unwrap();
    let labeller = app.user("l@prio.org", false).await;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'prio'").fetch_one(&mut c).await.unwrap();
    let indexes = ["items_open_priority", "items_open", "items_project_seq"];
    let mut before = Vec::new();
    for index in indexes {
        before.push(index_scans(&mut c, index).await);
    }
    for strategy in ["uncertainty", "thompson"] {
        sqlx::query("UPDATE projects SET queue_strategy = $1::queue_strategy WHERE id = $2").bind(strategy).bind(project).execute(&mut c).await.unwrap();
        for _ in 0..5 {
            let task: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT (rl_take($1, $2, 1, 60, gen_random_uuid())).task").bind(project).bind(labeller.0).fetch_one(&mut c).await.unwrap();
            assert!(task.is_some(), "{strategy}: a lease");
        }
        sqlx::query("SELECT rl_sweep($1, 1, 64)").bind(project).execute(&mut c).await.unwrap();
    }
    let mut scans = Vec::new();
    for (index, before) in indexes.into_iter().zip(before) {
        scans.push(index_scans(&mut c, index).await - before);
    }
    assert!(scans[0] >= 12, "ten leases and two sweeps read items_open_priority: {} scans", scans[0]);
    assert_eq!(scans[1..], [0, 0], "a lease or a sweep read the open items in import order (items_open) or all items (items_project_seq)");
}

/// A submission leaves its complete item open when a lease scan holds the item's row (it never
/// waits for that lock); the sweeps that leases run now and then close it. Under 'uncertainty'
/// and 'newest-first' such an item sits at the head of the project's order, not of the import
/// order, and a sweep of the first 64 open items in import order never reached it.
#[tokio::test]
async fn a_complete_item_left_open_at_the_head_of_a_priority_or_newest_first_queue_is_swept() {
    let app = spawn_app().await;
    for (slug, strategy) in [("sweepu", "uncertainty"), ("sweepn", "newest-first")] {
        let lead = app.lead_with_items(slug, TaskKind::Ranking, 1, 100, 2).await;
        set_strategy(&lead, slug, strategy).await;
        seed(&app, slug, 99, Some(0.9), Some("{0}")).await;
        let lab = app.member(&format!("a@{slug}.org"), slug, Role::Labeller).await;
        let task = lab.next_task(slug).await.expect("a lease");
        assert_eq!(item_of(&task), 99, "{strategy}: the head of the queue");

        // Another labeller's lease scan holds the item's row while the last judgement arrives.
        let mut held = app.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM items WHERE external_id = $1 FOR NO KEY UPDATE").bind(format!("{slug}-99")).execute(&mut *held).await.unwrap();
        assert_eq!(lab.submit_in_order(&task, "k1").await.status(), 201);
        let open = format!("SELECT count(*) FROM items WHERE external_id = '{slug}-99' AND is_open");
        assert_eq!(app.count(&open).await, 1, "{strategy}: the submission left its complete item open");
        held.rollback().await.unwrap();

        // A lease's occasional sweep (64 items) closes it.
        sqlx::query("SELECT rl_sweep(id, 1, 64) FROM projects WHERE slug = $1").bind(slug).execute(&app.pool).await.unwrap();
        assert_eq!(app.count(&open).await, 0, "{strategy}: the sweep closed the complete item at the head of the queue");
        let state: Value = lead.get(&format!("/api/v1/projects/{slug}/queue")).await.json().await.unwrap();
        assert_eq!(state["open_items"], 99, "{state}");
    }
}

/// The server's own connections (a direct `DATABASE_URL`) plan each statement once and never
/// JIT-compile: a queue sweep's generic plan is estimated above `jit_above_cost`, and compiling
/// it took 60–100 ms of a statement that runs in 1 ms.
#[tokio::test]
async fn server_connections_use_generic_plans_without_jit() {
    use rewardlab::settings::{Secret, Settings};
    let app = spawn_app().await;
    let settings =
        Settings { data_dir: app.tmp.join("unused"), database_url: Some(Secret::new(app.db_url.clone())), database_direct_url: None, session_key: None };
    let (pool, _) = settings.connect().await.expect("connects over DATABASE_URL");
    let plan: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&pool).await.unwrap();
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&pool).await.unwrap();
    assert_eq!((plan.as_str(), jit.as_str()), ("force_generic_plan", "off"));
}
