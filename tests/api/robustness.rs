//! Bad input, racing calls and lost leases: every one gets a clear answer and loses nothing.

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{items_jsonl, spawn_app, Api};

async fn error_message(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["message"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn the_progress_endpoint_counts_todays_judgements_and_the_items_left() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 3, 2).await;
    let progress = |api: Api| async move {
        let res = api.get("/api/v1/projects/alpha/progress").await;
        assert_eq!(res.status(), 200);
        res.json::<Value>().await.unwrap()
    };
    assert_eq!(progress(lead.clone()).await, json!({"done_today": 0, "left": 3}));
    let task = lead.next_task("alpha").await.unwrap();
    assert_eq!(progress(lead.clone()).await["left"], 3, "the caller's own lease still counts as left");
    assert_eq!(lead.submit_in_order(&task, "a").await.status(), 201);
    assert_eq!(progress(lead.clone()).await, json!({"done_today": 1, "left": 2}));
    let other = app.member("other@example.org", "alpha", Role::Labeller).await;
    assert_eq!(progress(other).await, json!({"done_today": 0, "left": 2}), "overlap 1: the judged item is done for everyone");
}

#[tokio::test]
async fn a_nul_character_anywhere_is_a_400_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 2, 2).await;
    let before = app.count("SELECT count(*) FROM items").await;
    let bad_import = b"{\"prompt\": \"p\", \"responses\": [{\"text\": \"a\"}, {\"text\": \"b\"}]}\n{\"prompt\": \"q\", \"responses\": [{\"text\": \"a\"}, {\"text\": \"b\\u0000\"}]}\n";
    let (status, message) = error_message(lead.post_bytes("/api/v1/projects/alpha/items", bad_import.to_vec()).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("line 2: field \"responses[1].text\"") && message.contains("NUL"), "{message}");
    assert_eq!(app.count("SELECT count(*) FROM items").await, before);

    let task = lead.next_task("alpha").await.unwrap();
    let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let url = format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap());
    let ranking = json!([[ids[0]], [ids[1]]]);
    for (body, field) in [
        (json!({"idempotency_key": "k", "ranking": ranking, "comment": "a\u{0}b"}), "comment"),
        (json!({"idempotency_key": "k\u{0}", "ranking": ranking}), "idempotency_key"),
        (json!({"idempotency_key": "k", "ranking": ranking, "flags": {ids[0].as_str().unwrap(): ["off-topic\u{0}"]}}), "flags."),
    ] {
        let (status, message) = error_message(lead.post(&url, &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(message.starts_with(field) && message.contains("NUL"), "{message}");
    }
    let skip = format!("/api/v1/tasks/{}/skip", task["task_id"].as_str().unwrap());
    let (status, message) = error_message(lead.post(&skip, &json!({"reason": "\u{0}"})).await).await;
    assert_eq!((status, message.starts_with("reason")), (400, true), "{message}");
    let (status, message) = error_message(lead.post("/api/v1/projects", &json!({"slug": "beta", "name": "B\u{0}", "kind": "ranking"})).await).await;
    assert_eq!((status, message.starts_with("name")), (400, true), "{message}");
    let (status, message) =
        error_message(lead.post("/api/v1/projects", &json!({"slug": "beta", "name": "B", "kind": "ranking", "flags": ["ok", "x\u{0}"]})).await).await;
    assert_eq!((status, message.starts_with("flags[1]")), (400, true), "{message}");
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 0);
    assert_eq!(lead.post(&url, &json!({"idempotency_key": "k", "ranking": ranking, "comment": "fine"})).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_judgement_among_good_ones_submitted_together_fails_alone() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 1, 24, 2).await;
    let mut handles = Vec::new();
    for i in 0..16 {
        let api = app.member(&format!("l{i}@example.org"), "alpha", Role::Labeller).await;
        let task = api.next_task("alpha").await.unwrap();
        handles.push(tokio::spawn(async move {
            let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
            let comment = if i % 4 == 0 { "bad\u{0}" } else { "good" };
            let body = json!({"idempotency_key": "k", "ranking": [[ids[0]], [ids[1]]], "comment": comment});
            let res = api.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &body).await;
            (i, res.status().as_u16())
        }));
    }
    for h in handles {
        let (i, status) = h.await.unwrap();
        assert_eq!(status, if i % 4 == 0 { 400 } else { 201 }, "labeller {i}");
    }
    assert_eq!(app.count("SELECT count(*) FROM judgements").await, 12);
}

#[tokio::test]
async fn a_type_error_in_a_body_names_its_field() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 2).await;
    let (status, message) = error_message(lead.post("/api/v1/projects", &json!({"slug": "beta", "name": "B", "kind": "ranking", "overlap": "3"})).await).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("overlap: invalid type"), "{message}");
    let task = lead.next_task("alpha").await.unwrap();
    let url = format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap());
    let (status, message) = error_message(lead.post(&url, &json!({"idempotency_key": "k", "ranking": [], "strength": 70000})).await).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("strength: "), "{message}");
    let res = app
        .http
        .post(format!("{}/api/v1/projects", app.addr))
        .bearer_auth(&lead.token)
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    let (status, message) = error_message(res).await;
    assert_eq!((status, message.starts_with("the JSON body is not valid")), (400, true), "{message}");
}

#[tokio::test]
async fn a_demonstration_item_with_too_many_responses_is_refused() {
    let app = spawn_app().await;
    app.project("demo", TaskKind::Demonstration, 1).await;
    let lead = app.member("lead@demo.org", "demo", Role::Lead).await;
    let responses: Vec<Value> = (0..10_000).map(|i| json!({"text": format!("r{i}")})).collect();
    let line = json!({"prompt": "p", "responses": responses}).to_string();
    let (status, message) = error_message(lead.post_bytes("/api/v1/projects/demo/items", line.into_bytes()).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("line 1") && message.contains("at most 9"), "{message}");
}

#[tokio::test]
async fn a_line_longer_than_the_limit_is_refused_while_it_is_read() {
    use std::io::Write;
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 2).await;
    // 64 MiB of one line, gzipped to a few hundred KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"{\"prompt\": \"").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() < 1 << 20);
    let (status, message) = error_message(lead.post_bytes("/api/v1/projects/alpha/items", body).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("line 1: longer than 11 MiB"), "{message}");
}

#[tokio::test]
async fn a_lease_the_database_lost_answers_409_saying_so() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 2, 2).await;
    let task = lead.next_task("alpha").await.unwrap();
    // What a crash does to a lease committed without waiting for the disk.
    sqlx::query("DELETE FROM tasks").execute(&app.pool).await.unwrap();
    let (status, message) = error_message(lead.submit_in_order(&task, "k").await).await;
    assert_eq!(status, 409);
    assert!(message.contains("lost when the database restarted"), "{message}");
    // A task id this server never leased stays a plain 404.
    let res = lead.post("/api/v1/tasks/00000000-0000-0000-0000-000000000000/judgement", &json!({"idempotency_key": "x", "ranking": []})).await;
    assert_eq!(res.status(), 404);
}

/// A labeller's second "next" call, made while their first one's lease is not yet committed,
/// waits for it and answers the same task (it used to lease a second one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labellers_racing_next_calls_get_one_lease() {
    let app = spawn_app().await;
    app.lead_with_items("alpha", TaskKind::Ranking, 1, 5, 2).await;
    let ann = app.member("ann@example.org", "alpha", Role::Labeller).await;
    let ann_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'ann@example.org'").fetch_one(&app.pool).await.unwrap();
    let mut first = app.pool.begin().await.unwrap();
    let held: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT task FROM rl_next_task('alpha', $1, gen_random_uuid())").bind(ann_id).fetch_one(&mut *first).await.unwrap();
    let racing = tokio::spawn({
        let ann = ann.clone();
        async move { ann.next_task("alpha").await.unwrap() }
    });
    // Commit only once the racing call is waiting for the labeller's lock, or has answered.
    loop {
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)").fetch_one(&app.pool).await.unwrap();
        if waiting || racing.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    first.commit().await.unwrap();
    let task = racing.await.unwrap();
    assert_eq!(task["task_id"].as_str().unwrap(), held.unwrap().to_string());
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 1);

    // And in storms of simultaneous calls, every labeller holds one live lease.
    for round in 0..10 {
        let api = app.member(&format!("storm{round}@example.org"), "alpha", Role::Labeller).await;
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let api = api.clone();
                tokio::spawn(async move { api.next_task("alpha").await.map(|t| t["task_id"].as_str().unwrap().to_string()) })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for c in calls {
            ids.insert(c.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
    }
    assert_eq!(app.count("SELECT count(*) FROM (SELECT user_id FROM tasks GROUP BY user_id HAVING count(*) > 1) x").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_with_next_and_a_racing_next_call_leave_one_live_lease() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 3, 2).await;
    let task = lead.next_task("alpha").await.unwrap();
    let ids: Vec<Value> = task["responses"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    let url = format!("/api/v1/tasks/{}/judgement?next=1", task["task_id"].as_str().unwrap());
    let body = json!({"idempotency_key": "k", "ranking": [[ids[0]], [ids[1]]]});
    let (a, b) = tokio::join!(lead.post(&url, &body), lead.next_task("alpha"));
    assert!(a.status().is_success());
    let body: Value = a.json().await.unwrap();
    let next = b.unwrap();
    if next["task_id"] != task["task_id"] {
        assert_eq!(body["next"]["task_id"], next["task_id"], "the submission's next task is the caller's one live lease");
    }
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE status = 'leased'").await, 1);
}

#[tokio::test]
async fn upload_files_are_private_and_removed_on_every_way_out() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("uploads-{}", uuid::Uuid::new_v4().simple()));
    let uploads = rewardlab::web::Uploads::open(dir.clone()).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let live = uploads.create().unwrap();
    assert_eq!(std::fs::metadata(live.path()).unwrap().permissions().mode() & 0o777, 0o600);
    // A file left by a killed server: nobody holds its lock.
    let stale = dir.join("upload-left-behind.jsonl");
    std::fs::write(&stale, b"{}").unwrap();
    let again = rewardlab::web::Uploads::open(dir.clone()).unwrap();
    assert!(!stale.exists(), "a start removes what a killed server left");
    assert!(live.path().exists(), "a live upload is kept");
    assert_eq!(again.sweep().unwrap(), 0);
    let path = live.path().to_path_buf();
    drop(live);
    assert!(!path.exists(), "an upload is removed when its request ends");

    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_imports_at_once_never_take_every_database_connection() {
    let app = spawn_app().await;
    let lead = app.lead_with_items("alpha", TaskKind::Ranking, 1, 1, 2).await;
    // Imports that cannot finish: their inserts wait for this lock, holding what they hold.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE items IN SHARE MODE").execute(&mut *blocker).await.unwrap();
    let imports: Vec<_> = (0..24)
        .map(|i| {
            let lead = lead.clone();
            tokio::spawn(async move { lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(3, 2, &format!("many{i}"))).await.status().as_u16() })
        })
        .collect();
    let waiting = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass AND NOT granted").fetch_one(&app.pool).await.unwrap()
    };
    while waiting().await < rewardlab::web::IMPORT_SLOTS as i64 {
        tokio::task::yield_now().await;
    }
    // The rest of the API still gets connections while the imports wait.
    assert_eq!(lead.get("/api/v1/projects").await.status(), 200);
    assert_eq!(lead.get("/api/v1/projects/alpha/progress").await.status(), 200);
    assert!(waiting().await <= rewardlab::web::IMPORT_SLOTS as i64, "at most the import slots hold a connection");
    blocker.commit().await.unwrap();
    for import in imports {
        assert_eq!(import.await.unwrap(), 200);
    }
    assert_eq!(app.count("SELECT count(*) FROM items").await, 1 + 24 * 3);
}

#[tokio::test]
async fn importing_a_gigabyte_line_takes_bounded_memory() {
    use std::io::Write;
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bomb-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1 GiB of one line, gzipped to about 1 MiB.
    let file = dir.join("bomb.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&file).unwrap(), flate2::Compression::fast());
    gz.write_all(b"{\"prompt\": \"").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap();
    // The command reports its own peak (VmHWM); a parent's rusage would also count the test
    // process's memory, which the child shares until it executes.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rewardlab"))
        .args(["import", "--project", "alpha", file.to_str().unwrap()])
        .env("DATABASE_URL", &app.db_url)
        .env("REWARDLAB_DATA", &dir)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("line 1: longer than 11 MiB"), "{stderr}");
    let peak: u64 =
        stderr.split("peak memory ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect("the import reports its peak memory");
    assert!(peak < 100, "peak memory {peak} MiB");
    assert_eq!(app.count("SELECT count(*) FROM items").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
