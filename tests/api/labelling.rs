use std::collections::HashSet;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_labellers_never_exceed_the_overlap_and_never_judge_an_item_twice() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 3, 20, 3).await;
    let mut labellers = Vec::new();
    for i in 0..8 {
        labellers.push(app.member(&format!("l{i}@example.org"), "alpha", Role::Labeller).await);
    }
    let mut handles = Vec::new();
    for api in labellers {
        handles.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0;
            while let Some(task) = api.next_task("alpha").await {
                let res = api.submit_in_order(&task, &format!("key-{n}")).await;
                assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
                seen.push(task["task_id"].as_str().unwrap().to_string());
                n += 1;
            }
            seen.len()
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 60, "20 items x overlap 3");
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 60);
    assert_eq!(app.count("SELECT count(*) FROM (SELECT item_id FROM judgements GROUP BY item_id HAVING count(*) <> 3) x").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM (SELECT 1 FROM judgements GROUP BY item_id, user_id HAVING count(*) > 1) x").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM items WHERE is_open").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_lease_requests_hand_out_no_more_leases_than_an_item_needs() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 2, 1, 2).await;
    let mut handles = Vec::new();
    for i in 0..10 {
        let api = app.member(&format!("l{i}@example.org"), "alpha", Role::Labeller).await;
        handles.push(tokio::spawn(async move { api.next_task("alpha").await.is_some() }));
    }
    let mut got = 0;
    for h in handles {
        got += h.await.unwrap() as i32;
    }
    assert_eq!(got, 2);
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 2);
}

#[tokio::test]
async fn a_duplicate_submit_stores_one_judgement_and_answers_the_same() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 2, 4).await;
    let task = lead.next_task("alpha").await.unwrap();
    let (a, b) = tokio::join!(lead.submit_in_order(&task, "same-key"), lead.submit_in_order(&task, "same-key"));
    let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![200, 201]);
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_eq!(a["judgement_id"], b["judgement_id"]);
    let again = lead.submit_in_order(&task, "same-key").await;
    assert_eq!(again.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 1);
    let other_key = lead.submit_in_order(&task, "another-key").await;
    assert_eq!(other_key.status(), 409, "a second judgement of the same task is refused");
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 1);
}

#[tokio::test]
async fn an_expired_lease_returns_to_the_pool_and_a_late_submit_then_answers_409() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 2).await;
    let slow = app.member("slow@example.org", "alpha", Role::Labeller).await;
    let fast = app.member("fast@example.org", "alpha", Role::Labeller).await;
    let task = slow.next_task("alpha").await.unwrap();
    assert!(fast.next_task("alpha").await.is_none(), "the only slot is leased");
    sqlx::query("UPDATE tasks SET expires_at = now() - interval '1 minute'").execute(&app.pool).await.unwrap();
    let taken = fast.next_task("alpha").await.expect("the expired lease returned to the pool");
    assert_eq!(fast.submit_in_order(&taken, "f").await.status(), 201);
    let late = slow.submit_in_order(&task, "s").await;
    assert_eq!(late.status(), 409);
    let body: Value = late.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 1);
}

#[tokio::test]
async fn a_late_submit_is_kept_when_nobody_else_needed_the_slot() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 2).await;
    let slow = app.member("slow@example.org", "alpha", Role::Labeller).await;
    let task = slow.next_task("alpha").await.unwrap();
    sqlx::query("UPDATE tasks SET expires_at = now() - interval '1 second'").execute(&app.pool).await.unwrap();
    assert_eq!(slow.submit_in_order(&task, "s").await.status(), 201);
}

#[tokio::test]
async fn an_invalid_ranking_is_a_400_that_says_why_and_stores_nothing() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 3).await;
    sqlx::query("UPDATE projects SET allow_ties = false").execute(&app.pool).await.unwrap();
    let task = lead.next_task("alpha").await.unwrap();
    let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let url = format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap());
    let cases = [
        (json!([[ids[0]], [ids[1]]]), "all 3"),
        (json!([[ids[0]], [ids[0]], [ids[1]]]), "more than once"),
        (json!([[ids[0], ids[1]], [ids[2]]]), "ties"),
        (json!([[ids[0]], [ids[1]], ["00000000-0000-0000-0000-000000000000"]]), "not one of this task's responses"),
        (json!("first"), "ranking: invalid type"),
    ];
    for (ranking, expected) in cases {
        let res = lead.post(&url, &json!({"idempotency_key": "k", "ranking": ranking})).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(expected), "{body}");
    }
    let res = lead.post(&url, &json!({"idempotency_key": "k", "ranking": [[ids[2]], [ids[0]], [ids[1]]], "rating": 9})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 0);
    let res = lead
        .post(
            &url,
            &json!({"idempotency_key": "k", "ranking": [[ids[2]], [ids[0]], [ids[1]]], "rating": 6,
        "flags": {ids[1].as_str().unwrap(): ["hallucination"]}, "comment": "fine"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let ranks: Vec<i16> = sqlx::query_scalar("SELECT unnest(j.ranks) FROM judgements j").fetch_all(&app.pool).await.unwrap();
    let order: Vec<i32> = sqlx::query_scalar("SELECT unnest(display_order) FROM tasks").fetch_all(&app.pool).await.unwrap();
    // ranks are by stored position: the response shown third (position order[2]) got rank 1.
    assert_eq!(ranks[order[2] as usize], 1);
    assert_eq!(ranks[order[0] as usize], 2);
    assert_eq!(ranks[order[1] as usize], 3);
}

#[tokio::test]
async fn a_labeller_never_sees_an_item_twice_even_after_skipping_it() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 2, 3, 2).await;
    let mut seen = HashSet::new();
    let first = lead.next_task("alpha").await.unwrap();
    let res = lead.post(&format!("/api/v1/tasks/{}/skip", first["task_id"].as_str().unwrap()), &json!({"reason": "unclear prompt"})).await;
    assert_eq!(res.status(), 200);
    seen.insert(first["prompt"][0]["content"].as_str().unwrap().to_string());
    while let Some(task) = lead.next_task("alpha").await {
        assert!(seen.insert(task["prompt"][0]["content"].as_str().unwrap().to_string()), "seen twice");
        assert_eq!(lead.submit_in_order(&task, task["task_id"].as_str().unwrap()).await.status(), 201);
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 2);
}

#[tokio::test]
async fn pairwise_and_demonstration_judgements_store_their_kind_specific_fields() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("pairs", TaskKind::Pairwise, 1, 1, 2).await;
    let task = lead.next_task("pairs").await.unwrap();
    let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let res = lead
        .post(
            &format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()),
            &json!({"idempotency_key": "p", "ranking": [[ids[1]], [ids[0]]], "strength": 3, "both_bad": true}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let (strength, both_bad): (i16, bool) = sqlx::query_as("SELECT strength, both_bad FROM judgements").fetch_one(&app.pool).await.unwrap();
    assert_eq!((strength, both_bad), (3, true));

    app.project("demo", TaskKind::Demonstration, 1).await;
    let writer = app.member("writer@example.org", "demo", Role::Lead).await;
    assert_eq!(writer.post_bytes("/api/v1/projects/demo/items", b"{\"prompt\": \"Write a haiku\"}\n".to_vec()).await.status(), 200);
    let task = writer.next_task("demo").await.unwrap();
    let url = format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap());
    assert_eq!(writer.post(&url, &json!({"idempotency_key": "d", "demonstration": "  "})).await.status(), 400);
    assert_eq!(writer.post(&url, &json!({"idempotency_key": "d", "demonstration": "old pond / frog"})).await.status(), 201);
    let export: Value = writer.post("/api/v1/projects/demo/exports", &json!({"format": "sft"})).await.json().await.unwrap();
    let body = writer.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.text().await.unwrap();
    let row: Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(row, json!({"prompt": "Write a haiku", "completion": "old pond / frog"}));
}

#[tokio::test]
async fn a_submission_can_carry_the_next_task_back() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 2, 2).await;
    let first = lead.next_task("alpha").await.unwrap();
    let ids: Vec<Value> = first["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let url = format!("/api/v1/tasks/{}/judgement?next=1", first["task_id"].as_str().unwrap());
    let res = lead.post(&url, &json!({"idempotency_key": "a", "ranking": [[ids[0]], [ids[1]]]})).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let second = &body["next"];
    assert_ne!(second["task_id"], first["task_id"]);
    assert_eq!(second["responses"].as_array().unwrap().len(), 2);
    let ids: Vec<Value> = second["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let url = format!("/api/v1/tasks/{}/judgement?next=1", second["task_id"].as_str().unwrap());
    let body: Value = lead.post(&url, &json!({"idempotency_key": "b", "ranking": [[ids[1]], [ids[0]]]})).await.json().await.unwrap();
    assert!(body["next"].is_null(), "nothing is left: {body}");
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 2);
}

#[tokio::test]
async fn a_labeller_removed_from_the_project_can_no_longer_submit_a_task_they_hold() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 1, 2, 2).await;
    let gone = app.member("gone@example.org", "alpha", Role::Labeller).await;
    let task = gone.next_task("alpha").await.unwrap();
    sqlx::query("DELETE FROM memberships m USING users u WHERE u.id = m.user_id AND u.email = 'gone@example.org'").execute(&app.pool).await.unwrap();
    // The server remembers the task's rules from the lease; the database still checks membership.
    let res = gone
        .post(
            &format!("/api/v1/tasks/{}/judgement?next=1", task["task_id"].as_str().unwrap()),
            &json!({"idempotency_key": "k", "ranking": task["responses"].as_array().unwrap().iter().map(|r| vec![r["id"].clone()]).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(gone.submit_in_order(&task, "k2").await.status(), 404);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 0);
}

/// A checked submission for `task` as the queue takes it: responses ranked in position order.
fn entry(task: rewardlab::domain::TaskId, user: rewardlab::domain::UserId, k: usize, key: &str) -> rewardlab::db::tasks::SubmitEntry {
    rewardlab::db::tasks::SubmitEntry {
        task,
        user,
        judgement: rewardlab::domain::JudgementId::new(),
        key: key.into(),
        ranks: Some((1..=k as i16).collect()),
        strength: None,
        both_bad: false,
        demonstration: None,
        flags: Default::default(),
        rating: None,
        comment: String::new(),
        next: true,
        next_task: rewardlab::domain::TaskId::new(),
        slug: "alpha".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submissions_arriving_together_are_stored_in_batches_with_each_its_own_answer() {
    use rewardlab::db::tasks::{self as dbt, Outcome};
    use rewardlab::web::submits::SubmitQueue;
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 3, 40, 3).await;
    let project: rewardlab::domain::ProjectId = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'alpha'").fetch_one(&app.pool).await.unwrap();
    let mut users = Vec::new();
    for i in 0..24 {
        let id = app.user(&format!("b{i}@example.org"), false).await;
        sqlx::query("INSERT INTO memberships (project_id, user_id, role) VALUES ($1, $2, 'labeller')").bind(project).bind(id).execute(&app.pool).await.unwrap();
        users.push(id);
    }
    let mut tasks = Vec::new();
    for &u in &users {
        let mut conn = app.pool.acquire().await.unwrap();
        let (view, _) = dbt::lease_next(&mut conn, "alpha", u).await.unwrap().unwrap().task().unwrap();
        tasks.push(view.task_id);
    }
    // Every labeller submits at once, labeller 0 twice with one key (a double click), and
    // labeller 2 also tries labeller 3's task.
    let queue = std::sync::Arc::new(SubmitQueue::start(app.pool.clone(), 2));
    let mut entries: Vec<_> = users.iter().zip(&tasks).map(|(&u, &t)| entry(t, u, 3, "first")).collect();
    entries.push(entry(tasks[0], users[0], 3, "first"));
    entries.push(entry(tasks[3], users[2], 3, "other"));
    let answers = futures_util::future::join_all(entries.iter().cloned().map(|e| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.submit(e).await.unwrap() })
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap()).collect();
    let (calls, carried) = queue.counts();
    assert_eq!(carried, 26);
    assert!(calls < 26, "26 submissions at once on two lanes must share calls, made {calls}");
    for (i, (outcome, next)) in answers.iter().enumerate().take(24) {
        if i == 0 {
            assert!(matches!(outcome, Outcome::Stored(_) | Outcome::Repeat(_)), "{outcome:?}");
        } else {
            assert!(matches!(outcome, Outcome::Stored(_)), "labeller {i}: {outcome:?}");
        }
        let (view, rules) = next.as_ref().expect("asked for the next task").as_task().expect("items are left");
        assert_ne!(view.task_id, tasks[i]);
        assert_eq!(rules.response_ids.len(), 3);
        assert_eq!(serde_json::from_str::<Vec<Value>>(view.responses.get()).unwrap().len(), 3);
    }
    // The double click: one judgement, both answers name it.
    let judgement_of = |o: &Outcome| match o {
        Outcome::Stored(j) | Outcome::Repeat(j) => *j,
        other => panic!("{other:?}"),
    };
    assert_eq!(judgement_of(&answers[0].0), judgement_of(&answers[24].0));
    assert!(matches!(answers[0].0, Outcome::Stored(_)) != matches!(answers[24].0, Outcome::Stored(_)), "exactly one of the two was stored");
    assert_eq!(answers[25].0, Outcome::NotFound);
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 24);
    assert_eq!(
        app.count("SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'leased' GROUP BY user_id HAVING count(*) > 1) x").await,
        0,
        "one live lease each"
    );
    // The next leases kept the rules: no item over its overlap, nobody twice on an item.
    assert_eq!(app.count("SELECT count(*) FROM (SELECT item_id FROM tasks WHERE status <> 'skipped' GROUP BY item_id HAVING count(*) > 3) x").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM (SELECT 1 FROM tasks GROUP BY item_id, user_id HAVING count(*) > 1) x").await, 0);

    // A lapsed lease in a batch comes back to be sent alone; through the queue it is then kept,
    // since nobody took its slot.
    let live: Vec<(rewardlab::domain::TaskId, rewardlab::domain::UserId)> =
        sqlx::query_as("SELECT DISTINCT ON (user_id) id, user_id FROM tasks WHERE status = 'leased' ORDER BY user_id, leased_at DESC LIMIT 3")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE tasks SET expires_at = now() - interval '1 minute' WHERE id = $1").bind(live[0].0).execute(&app.pool).await.unwrap();
    let lapsed = entry(live[0].0, live[0].1, 3, "second");
    let mut other = entry(live[1].0, live[1].1, 3, "second");
    other.next = false; // no new lease that could take the lapsed one's slot
    let mut conn = app.pool.acquire().await.unwrap();
    let batch = dbt::submit_batch(&mut conn, &[lapsed.clone(), other], false).await.unwrap();
    assert_eq!(batch[0].0, Outcome::Retry);
    assert!(matches!(batch[1].0, Outcome::Stored(_)), "{:?}", batch[1].0);
    let kept = queue.submit(lapsed).await.unwrap().0;
    assert!(matches!(kept, Outcome::Stored(_)), "{kept:?}");

    // A batch that fails as a whole (one submission breaks a constraint) is sent again one by
    // one: the others are stored, the broken one alone gets the error.
    let (task, user) = live[2];
    let mut broken = entry(task, user, 3, "broken");
    broken.strength = Some(9);
    let good: Vec<_> = sqlx::query_as::<_, (rewardlab::domain::TaskId, rewardlab::domain::UserId)>(
        "SELECT DISTINCT ON (user_id) id, user_id FROM tasks WHERE status = 'leased' AND user_id <> $2 ORDER BY user_id, leased_at DESC LIMIT 4",
    )
    .bind(task)
    .bind(user)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let before = app.count("SELECT count(*) FROM judgements").await;
    let mut all: Vec<_> = good.iter().map(|&(t, u)| entry(t, u, 3, "third")).collect();
    all.push(broken);
    assert!(dbt::submit_batch(&mut conn, &all, false).await.is_err(), "the batch fails as a whole");
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, before, "and stores nothing");
    let answers = futures_util::future::join_all(all.into_iter().map(|e| {
        let queue = queue.clone();
        tokio::spawn(async move { queue.submit(e).await })
    }))
    .await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap()).collect();
    assert!(answers[4].is_err(), "the broken submission fails");
    for a in &answers[..4] {
        assert!(matches!(a.as_ref().unwrap().0, Outcome::Stored(_)), "{a:?}");
    }
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, before + 4);

    // A double click whose second submission waited for the first one's lock gets the lease
    // the first one took, not a second one.
    let user = good[0].1;
    let task: rewardlab::domain::TaskId =
        sqlx::query_scalar("SELECT id FROM tasks WHERE user_id = $1 AND status = 'leased'").bind(user).fetch_one(&app.pool).await.unwrap();
    let (first_ans, second_ans) = {
        let click = entry(task, user, 3, "double");
        let mut tx = app.pool.begin().await.unwrap();
        let first = dbt::submit_batch(&mut tx, std::slice::from_ref(&click), true).await.unwrap().pop().unwrap();
        let pool = app.pool.clone();
        let again = click.clone();
        let second = tokio::spawn(async move {
            let mut conn = pool.acquire().await.unwrap();
            dbt::submit_batch(&mut conn, &[again], true).await.unwrap().pop().unwrap()
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second click waits for the first one's lock");
        tx.commit().await.unwrap();
        (first, second.await.unwrap())
    };
    assert!(matches!(first_ans.0, Outcome::Stored(_)), "{:?}", first_ans.0);
    assert_eq!(second_ans.0, Outcome::Repeat(judgement_of(&first_ans.0)));
    let lease = |s: &dbt::Submitted| s.1.as_ref().unwrap().as_task().unwrap().0.task_id;
    assert_eq!(lease(&second_ans), lease(&first_ans));
    assert_eq!(app.count(&format!("SELECT count(*) FROM tasks WHERE user_id = '{user}' AND status = 'leased'")).await, 1);
}
