//! Two `serve` processes on one PostgreSQL database, as behind a load balancer: each has its
//! own connection pool, submit queue, upload folder and port; they share only the database and
//! the secret key. Every request of the labellers alternates between them.

use std::collections::HashSet;

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, Api, Session, TestApp, PASSWORD};

fn on(api: &Api, addr: &str) -> Api {
    Api { app_addr: addr.to_string(), ..api.clone() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_share_sessions_leases_submissions_schedules_and_exports() {
    let a = spawn_app().await;
    let b = a.second_server().await;
    two_servers_share_everything(&a, &b).await;
}

/// Sessions, CSRF, leases and batched submissions of 32 labellers alternating between `a` and
/// `b`, exports and a schedule, all correct with `a` and `b` on one database; `a.pool` reads it.
pub async fn two_servers_share_everything(a: &TestApp, b: &TestApp) {
    let lead_a = a.lead_with_items("shared", TaskKind::Ranking, 2, 150, 3).await;
    let lead_b = on(&lead_a, &b.addr);

    // A browser session started on one server is valid on the other, CSRF token included.
    let session_a = a.login("lead@shared.org", PASSWORD).await;
    let session_b = Session {
        addr: b.addr.clone(),
        cookie_name: session_a.cookie_name,
        cookie: session_a.cookie.clone(),
        csrf: session_a.csrf.clone(),
        http: b.http.clone(),
    };
    assert_eq!(session_b.get("/projects/shared/settings").await.status(), 200);
    let res = session_b.post_form("/projects/shared/exports", &[("csrf", session_a.csrf.as_str()), ("format", "comparisons")]).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let forged = session_b.post_form("/projects/shared/exports", &[("csrf", "not-the-token"), ("format", "comparisons")]).await;
    assert_eq!(forged.status(), 403, "a wrong CSRF token is refused on either server");
    let listed: Value = lead_a.get("/api/v1/projects/shared/exports").await.json().await.unwrap();
    assert_eq!(listed["exports"].as_array().map(Vec::len), Some(1), "the export made through server B is listed by server A: {listed}");

    // 32 labellers, every request on the other server than the one before: leases taken on one
    // server are submitted on the other.
    let mut handles = Vec::new();
    for i in 0..32 {
        let api = a.member(&format!("l{i}@example.org"), "shared", Role::Labeller).await;
        let servers = [api.clone(), on(&api, &b.addr)];
        handles.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0usize;
            while let Some(task) = servers[n % 2].next_task("shared").await {
                n += 1;
                let res = servers[n % 2].submit_in_order(&task, &format!("key-{n}")).await;
                assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
                let stored: Value = res.json().await.unwrap();
                acknowledged.push(stored["judgement_id"].as_str().unwrap_or_default().to_string());
                // The same submission repeated on the first server answers the same and stores nothing more.
                if n.is_multiple_of(7) {
                    let again = servers[(n + 1) % 2].submit_in_order(&task, &format!("key-{n}")).await;
                    assert_eq!(again.status(), 200, "a replay answers 200 with the stored judgement");
                    assert_eq!(again.json::<Value>().await.unwrap()["judgement_id"], stored["judgement_id"]);
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for h in handles {
        acknowledged.extend(h.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 300, "150 items x overlap 2");
    assert_eq!(acknowledged.iter().collect::<HashSet<_>>().len(), 300, "every acknowledgement names its own judgement");
    assert_eq!(a.count("SELECT count(*) FROM judgements").await, 300, "every acknowledged judgement is stored, none twice");
    assert_eq!(
        a.count("SELECT count(*) FROM (SELECT 1 FROM judgements GROUP BY item_id, user_id HAVING count(*) > 1) x").await,
        0,
        "no item judged twice by one labeller"
    );
    assert_eq!(
        a.count("SELECT count(*) FROM (SELECT item_id FROM judgements GROUP BY item_id HAVING count(*) <> 2) x").await,
        0,
        "no item over or under its overlap"
    );
    assert_eq!(a.count("SELECT count(*) FROM items WHERE is_open").await, 0);

    // An export taken on one server downloads from the other (which writes its file again from
    // the snapshot), byte for byte.
    let export: Value = lead_a.post("/api/v1/projects/shared/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    assert_eq!(export["files"][0]["rows"], 900, "300 rankings of 3 give 3 pairs each: {export}");
    let body = lead_b.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), export["files"][0]["sha256"].as_str().unwrap());

    // A schedule made on one server fires once although both servers' schedulers tick at once.
    let res = lead_b.post("/api/v1/projects/shared/schedules", &json!({"cron": "*/5 * * * *", "chain": [{"kind": "rm"}]})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    sqlx::query("UPDATE schedules SET next_fire_at = now() - interval '1 second'").execute(&a.pool).await.unwrap();
    let ticks = (0..16).map(|i| {
        let pool = if i % 2 == 0 { a.pool.clone() } else { b.pool.clone() };
        tokio::spawn(async move { rewardlab::jobs::schedule::tick(&pool).await.unwrap().len() })
    });
    let fired: usize = futures_util::future::join_all(ticks).await.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(fired, 1, "one firing in all");
    assert_eq!(a.count("SELECT count(*) FROM runs").await, 1);

    // The run it queued is seen the same through both.
    let run_a: Value = lead_a.get("/api/v1/projects/shared/runs").await.json().await.unwrap();
    let run_b: Value = lead_b.get("/api/v1/projects/shared/runs").await.json().await.unwrap();
    assert_eq!(run_a, run_b);
}
