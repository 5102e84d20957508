//! Webhooks: each event type fires once per cause, from an outbox written in the cause's own
//! transaction, signed so that an independent HMAC check verifies it, delivered to a real
//! local receiver by the background delivery with retries; private targets refused (at
//! registration and at delivery); the Webhooks tab with its delivery log; leads of other
//! projects see nothing; bad input named.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use rewardlab::domain::{Role, TaskKind};
use rewardlab::settings::{WebOptions, WebhookOptions};
use serde_json::{json, Value};

use crate::helpers::{items_jsonl, spawn_app_with, Api, TestApp, PASSWORD};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A local HTTP server that records what it is sent and answers the scripted statuses in
/// turn (200 once the script is used up).
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (g, s) = (got.clone(), script.clone());
        let server = actix_web::HttpServer::new(move || {
            let (g, s) = (g.clone(), s.clone());
            actix_web::App::new().default_service(actix_web::web::to(move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    g.lock().unwrap().push(Got {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body: body.to_vec(),
                    });
                    let status = s.lock().unwrap().pop_front().unwrap_or(200);
                    actix_web::HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("receiver says hello")
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.disable_signals().run());
        Self { url: format!("http://127.0.0.1:{port}/hook"), got }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// Fast retries for the tests: 50 ms, doubling, 4 attempts.
pub fn fast(allow_private: bool) -> WebhookOptions {
    WebhookOptions { allow_private, retry_base: Duration::from_millis(50), max_attempts: 4 }
}

/// A server allowing private targets (the receiver is on 127.0.0.1), with its delivery running.
pub async fn webhook_app() -> TestApp {
    let app = spawn_app_with(WebOptions { webhooks: fast(true), ..WebOptions::default() }).await;
    tokio::spawn(rewardlab::jobs::webhooks::run(app.pool.clone(), app.state.quality.clone(), fast(true)));
    app
}

/// Polls `check` until it gives a value, failing after 30 s.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Registers an endpoint for `events`; answers its id and secret.
pub async fn register(lead: &Api, slug: &str, url: &str, events: &[&str]) -> (String, String) {
    let res = lead.post(&format!("/api/v1/projects/{slug}/webhooks"), &json!({"url": url, "events": events, "description": "test"})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    (body["id"].as_str().unwrap().to_string(), body["secret"].as_str().unwrap().to_string())
}

/// The Standard Webhooks check, written here independently of the server's code: HMAC-SHA256
/// keyed with the base64-decoded secret after `whsec_`, over `id.timestamp.body`.
pub fn verifies(secret: &str, got: &Got) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(got.id.as_bytes());
    mac.update(b".");
    mac.update(got.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let expected = b64.encode(mac.finalize().into_bytes());
    got.signature.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

const ALL: &[&str] = &[
    "items.imported",
    "judgements.stored",
    "item.completed",
    "export.created",
    "run.started",
    "run.succeeded",
    "run.failed",
    "schedule.fired",
    "labeller.paused",
    "agreement.below_threshold",
];

#[tokio::test]
async fn each_event_fires_once_per_cause_signed_so_that_an_independent_check_verifies_it() {
    let app = webhook_app().await;
    let rx = Receiver::start(&[]).await;
    app.project("hooks", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@hooks.org", "hooks", Role::Lead).await;
    let (_, secret) = register(&lead, "hooks", &rx.url, ALL).await;
    assert!(secret.starts_with("whsec_"));

    // One import of three items: one event counting them.
    assert_eq!(lead.post_bytes("/api/v1/projects/hooks/items", items_jsonl(3, 2, "h")).await.status(), 200);
    // Three labellers label one item each, at once: judgements arrive in batches, each batch
    // one event; with overlap 1 each judgement completes its item.
    let mut labellers = vec![];
    for i in 0..3 {
        labellers.push(app.member(&format!("l{i}@hooks.org"), "hooks", Role::Labeller).await);
    }
    let submits = labellers.iter().enumerate().map(|(i, l)| async move {
        let task = l.next_task("hooks").await.unwrap();
        assert!(l.submit_in_order(&task, &format!("k{i}")).await.status().is_success());
    });
    futures_util::future::join_all(submits).await;
    assert_eq!(lead.post("/api/v1/projects/hooks/exports", &json!({"format": "comparisons"})).await.status(), 201);

    // A run that starts and succeeds, one that starts and fails (as a worker records them),
    // a schedule firing and a labeller's pause (as the scheduler and the quality check do).
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'hooks'").fetch_one(&app.pool).await.unwrap();
    for _ in 0..2 {
        sqlx::query("INSERT INTO runs (id, project_id, kind) VALUES (gen_random_uuid(), $1, 'rm')").bind(project).execute(&app.pool).await.unwrap();
    }
    let lease = Duration::from_secs(60);
    let first = rewardlab::db::worker::claim(&app.pool, "w", lease).await.unwrap().unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    rewardlab::db::worker::succeed(&mut conn, first.id, first.fence, "/models/x", &json!({})).await.unwrap();
    let second = rewardlab::db::worker::claim(&app.pool, "w", lease).await.unwrap().unwrap();
    assert!(rewardlab::db::worker::fail(&mut conn, second.id, second.fence, "out of memory").await.unwrap());
    let schedule: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO schedules (id, project_id, cron, chain) VALUES (gen_random_uuid(), $1, '0 * * * *', '[]') RETURNING id")
            .bind(project)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    rewardlab::db::schedules::mark_fired(&mut conn, schedule.into(), 3).await.unwrap();
    let paused: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'l0@hooks.org'").fetch_one(&app.pool).await.unwrap();
    assert!(rewardlab::db::quality::pause(&mut conn, project.into(), paused.into(), "gold score below 0.5", 0.2, 6).await.unwrap());

    let expected = [
        ("items.imported", 1),
        ("item.completed", 3),
        ("export.created", 1),
        ("run.started", 2),
        ("run.succeeded", 1),
        ("run.failed", 1),
        ("schedule.fired", 1),
        ("labeller.paused", 1),
    ];
    let want: usize = expected.iter().map(|e| e.1).sum();
    let got = eventually("every event", || async {
        let got = rx.got();
        let judgements: i64 = got.iter().filter(|g| g.json()["type"] == "judgements.stored").map(|g| g.json()["data"]["count"].as_i64().unwrap()).sum();
        (got.iter().filter(|g| g.json()["type"] != "judgements.stored").count() >= want && judgements >= 3).then_some(got)
    })
    .await;
    for g in &got {
        assert!(verifies(&secret, g), "the signature of {} verifies", String::from_utf8_lossy(&g.body));
        let mut tampered = g.clone();
        tampered.body.push(b' ');
        assert!(!verifies(&secret, &tampered));
        assert_eq!(g.json()["data"]["project"], "hooks");
    }
    for (kind, n) in expected {
        assert_eq!(got.iter().filter(|g| g.json()["type"] == kind).count(), n, "{kind}");
    }
    let of = |kind: &str| got.iter().find(|g| g.json()["type"] == kind).unwrap().json();
    assert_eq!(of("items.imported")["data"]["count"], 3);
    assert_eq!(of("run.failed")["data"]["error"], "out of memory");
    let stored: Vec<i64> = got.iter().filter(|g| g.json()["type"] == "judgements.stored").map(|g| g.json()["data"]["count"].as_i64().unwrap()).collect();
    assert_eq!(stored.iter().sum::<i64>(), 3, "judgements are counted in batches: {stored:?}");
    assert!(stored.len() <= 3);
    let mut ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "each event is delivered once to a receiver that answers 200");
    let completed: std::collections::HashSet<String> =
        got.iter().filter(|g| g.json()["type"] == "item.completed").map(|g| g.json()["data"]["item"].to_string()).collect();
    assert_eq!(completed.len(), 3, "one event per completed item");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt_and_one_always_failing_is_given_up() {
    let app = webhook_app().await;
    let flaky = Receiver::start(&[500, 500]).await;
    let broken = Receiver::start(&[500; 10]).await;
    app.project("retry", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@retry.org", "retry", Role::Lead).await;
    let (flaky_id, secret) = register(&lead, "retry", &flaky.url, &["export.created"]).await;
    let (broken_id, _) = register(&lead, "retry", &broken.url, &["export.created"]).await;
    assert_eq!(lead.post("/api/v1/projects/retry/webhooks", &json!({})).await.status(), 400);
    assert_eq!(lead.post(&format!("/api/v1/projects/retry/webhooks/{flaky_id}/test"), &Value::Null).await.status(), 202);
    assert_eq!(lead.post(&format!("/api/v1/projects/retry/webhooks/{broken_id}/test"), &Value::Null).await.status(), 202);

    let log = |id: String| {
        let lead = lead.clone();
        async move { lead.get(&format!("/api/v1/projects/retry/webhooks/{id}")).await.json::<Value>().await.unwrap() }
    };
    let delivered = eventually("the third attempt", || async {
        let l = log(flaky_id.clone()).await;
        (l["deliveries"][0]["status"] == "delivered").then_some(l)
    })
    .await;
    let d = &delivered["deliveries"][0];
    assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64(), d["type"].as_str()), (Some(3), Some(200), Some("webhook.test")));
    let got = flaky.got();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.id == got[0].id && verifies(&secret, g)), "every attempt carries the same webhook-id, signed");
    let codes: Vec<i32> = sqlx::query_scalar(
        "SELECT status_code FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = $1::uuid ORDER BY a.id",
    )
    .bind(&flaky_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(codes, [500, 500, 200]);

    let failed = eventually("giving up", || async {
        let l = log(broken_id.clone()).await;
        (l["deliveries"][0]["status"] == "failed").then_some(l)
    })
    .await;
    let d = &failed["deliveries"][0];
    assert_eq!(d["attempts"], 4);
    assert!(d["last_error"].as_str().unwrap().contains("HTTP 500"), "{d}");
    assert_eq!(broken.got().len(), 4, "no attempt after the last");
    assert_eq!(failed["webhook"]["failed"], 1);

    // Redelivery sends it again, under the same id.
    let delivery = d["id"].as_str().unwrap();
    assert_eq!(lead.post(&format!("/api/v1/projects/retry/webhooks/{broken_id}/deliveries/{delivery}/redeliver"), &Value::Null).await.status(), 202);
    eventually("the redelivery", || async { (broken.got().len() > 4).then_some(()) }).await;
    assert_eq!(broken.got()[4].id, broken.got()[0].id);
}

#[tokio::test]
async fn deliveries_that_ended_over_30_days_ago_are_pruned_with_their_attempts_and_events_and_the_rest_kept() {
    let app = webhook_app().await;
    let rx = Receiver::start(&[]).await;
    app.project("prune", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@prune.org", "prune", Role::Lead).await;
    let (id, _) = register(&lead, "prune", &rx.url, &["export.created"]).await;
    for _ in 0..4 {
        assert_eq!(lead.post(&format!("/api/v1/projects/prune/webhooks/{id}/test"), &Value::Null).await.status(), 202);
    }
    eventually("four deliveries", || async { (app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").await == 4).then_some(()) })
        .await;
    // Three ended 31 days ago (one of them given up), their events as old; of those, one is
    // pending again (as a redelivery leaves it) and stays. The fourth ended now and stays.
    let mut ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM webhook_deliveries ORDER BY id").fetch_all(&app.pool).await.unwrap();
    ids.truncate(3);
    for (i, d) in ids.iter().enumerate() {
        let status = ["delivered", "failed", "pending"][i];
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, delivered_at = CASE WHEN $2 = 'delivered' THEN now() - interval '31 days' END,
                    next_attempt_at = now() + CASE WHEN $2 = 'pending' THEN interval '1 day' ELSE interval '-31 days' END WHERE id = $1",
        )
        .bind(d)
        .bind(status)
        .execute(&app.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE webhook_events SET created_at = now() - interval '31 days' WHERE id = (SELECT event_id FROM webhook_deliveries WHERE id = $1)")
            .bind(d)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_attempts").await, 4);

    let (deliveries, events) = rewardlab::jobs::webhooks::prune(&app.pool, rewardlab::jobs::webhooks::KEEP).await.unwrap();
    assert_eq!((deliveries, events), (2, 2));
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM webhook_deliveries ORDER BY id").fetch_all(&app.pool).await.unwrap();
    assert!(left.len() == 2 && left[0] == ids[2] && !ids.contains(&left[1]), "{left:?}");
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 2, "each kept delivery keeps its event");
    assert_eq!(app.count("SELECT count(*) FROM webhook_attempts").await, 2, "the pruned deliveries' attempts went with them");
    assert_eq!(rewardlab::jobs::webhooks::prune(&app.pool, rewardlab::jobs::webhooks::KEEP).await.unwrap(), (0, 0));
    // The log page still answers with what is left.
    let log: Value = lead.get(&format!("/api/v1/projects/prune/webhooks/{id}")).await.json().await.unwrap();
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 2, "{log}");
}

#[tokio::test]
async fn an_aborted_import_writes_no_event_and_a_committed_one_writes_one() {
    let app = webhook_app().await;
    let rx = Receiver::start(&[]).await;
    app.project("abort", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@abort.org", "abort", Role::Lead).await;
    register(&lead, "abort", &rx.url, &["items.imported"]).await;
    // The first 1000 lines are inserted as a batch before the bad line aborts the import.
    let mut body = items_jsonl(1001, 2, "a");
    body.extend_from_slice(b"{\"prompt\": \"no responses\"}\n");
    let res = lead.post_bytes("/api/v1/projects/abort/items", body).await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM items").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0, "the event rolled back with its import");
    assert_eq!(lead.post_bytes("/api/v1/projects/abort/items", items_jsonl(1001, 2, "a")).await.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1, "one event for one import of two batches");
    let got = eventually("the import's event", || async { rx.got().first().cloned() }).await;
    assert_eq!(got.json()["data"]["count"], 1001);
}

#[tokio::test]
async fn private_targets_are_refused_at_registration_and_at_delivery_unless_an_admin_allows_them() {
    let app = spawn_app_with(WebOptions::default()).await;
    app.project("priv", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@priv.org", "priv", Role::Lead).await;
    for url in ["http://127.0.0.1:9/hook", "http://10.0.0.8/hook", "http://[::1]:80/", "http://169.254.169.254/latest/meta-data", "http://localhost:8080/"] {
        let res = lead.post("/api/v1/projects/priv/webhooks", &json!({"url": url, "events": ["run.failed"]})).await;
        assert_eq!(res.status(), 400, "{url}");
        let message = res.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.starts_with("url:") && message.contains("--allow-private-webhooks"), "{message}");
    }
    // A name is checked against what it resolves to when delivering: this machine's own name
    // resolves to a loopback or private address.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 80)).await.unwrap().collect();
    assert!(resolved.iter().all(|a| rewardlab::domain::webhooks::is_private(a.ip())), "{host} resolves to {resolved:?}");
    let rx = Receiver::start(&[]).await;
    let port = rx.url.split(':').nth(2).unwrap().split('/').next().unwrap().to_string();
    let (id, _) = register(&lead, "priv", &format!("http://{host}:{port}/hook"), &["export.created"]).await;
    assert_eq!(lead.post(&format!("/api/v1/projects/priv/webhooks/{id}/test"), &Value::Null).await.status(), 202);
    let client = rewardlab::jobs::webhooks::client(false).unwrap();
    assert_eq!(rewardlab::jobs::webhooks::deliver_due(&app.pool, &client, &fast(false)).await.unwrap(), 1);
    let log: Value = lead.get(&format!("/api/v1/projects/priv/webhooks/{id}")).await.json().await.unwrap();
    let error = log["deliveries"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("refused") && error.contains("--allow-private-webhooks"), "{error}");
    assert_eq!(log["deliveries"][0]["status"], "pending", "retried later: {log}");
    assert!(rx.got().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn a_lead_of_another_project_can_neither_see_nor_touch_its_webhooks() {
    let app = webhook_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    app.project("beta", TaskKind::Ranking, 1).await;
    let a = app.member("lead@alpha.org", "alpha", Role::Lead).await;
    let b = app.member("lead@beta.org", "beta", Role::Lead).await;
    let labeller = app.member("labeller@alpha.org", "alpha", Role::Labeller).await;
    let (id, _) = register(&a, "alpha", "http://127.0.0.1:9/x", &["run.failed"]).await;
    assert_eq!(b.get("/api/v1/projects/alpha/webhooks").await.status(), 404);
    assert_eq!(labeller.get("/api/v1/projects/alpha/webhooks").await.status(), 403);
    // Beta's lead naming alpha's endpoint under beta: the query is scoped by beta.
    assert_eq!(b.get(&format!("/api/v1/projects/beta/webhooks/{id}")).await.status(), 404);
    assert_eq!(b.post(&format!("/api/v1/projects/beta/webhooks/{id}/rotate"), &Value::Null).await.status(), 404);
    assert_eq!(b.post(&format!("/api/v1/projects/beta/webhooks/{id}/test"), &Value::Null).await.status(), 404);
    assert_eq!(b.delete_path(&format!("/api/v1/projects/beta/webhooks/{id}")).await, 404);
    let list: Value = b.get("/api/v1/projects/beta/webhooks").await.json().await.unwrap();
    assert_eq!(list["webhooks"], json!([]));
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);
    // Its own lead can rotate (a new secret) and remove it.
    let rotated: Value = a.post(&format!("/api/v1/projects/alpha/webhooks/{id}/rotate"), &Value::Null).await.json().await.unwrap();
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(a.delete_path(&format!("/api/v1/projects/alpha/webhooks/{id}")).await, 204);
    assert_eq!(a.get(&format!("/api/v1/projects/alpha/webhooks/{id}")).await.status(), 404);
}

#[tokio::test]
async fn bad_registrations_are_a_400_naming_the_field() {
    let app = webhook_app().await;
    app.project("bad", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@bad.org", "bad", Role::Lead).await;
    let cases = [
        (json!({"url": "http://127.0.0.1:9/", "events": []}), "events:"),
        (json!({"url": "http://127.0.0.1:9/", "events": ["run.exploded"]}), "events:"),
        (json!({"url": "ftp://example.org/", "events": ["run.failed"]}), "url:"),
        (json!({"url": "", "events": ["run.failed"]}), "url:"),
        (json!({"url": "https://u:p@example.org/", "events": ["run.failed"]}), "url:"),
        (json!({"url": "http://127.0.0.1:9/", "events": ["run.failed"], "description": "x".repeat(501)}), "description:"),
        (json!({"url": "http://127.0.0.1:9/", "events": "run.failed"}), "events"),
        (json!({"events": ["run.failed"]}), "url"),
        (json!({"url": "http://127.0.0.1:9/", "events": ["run.failed"], "secret": "mine"}), "secret"),
    ];
    for (body, field) in cases {
        let res = lead.post("/api/v1/projects/bad/webhooks", &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let message = res.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 0);
}

#[tokio::test]
async fn the_webhooks_tab_registers_an_endpoint_shows_its_secret_once_and_logs_its_deliveries() {
    let app = webhook_app().await;
    let rx = Receiver::start(&[503]).await;
    app.project("tab", TaskKind::Ranking, 1).await;
    app.member("lead@tab.org", "tab", Role::Lead).await;
    let s = app.login("lead@tab.org", PASSWORD).await;
    let page = s.get("/projects/tab/webhooks").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"tab-webhooks\"") && html.contains("No endpoints yet"));

    let fields = [("url", rx.url.as_str()), ("description", "<b>ci</b>"), ("event", "export.created"), ("event", "run.failed")];
    let no_csrf = s.post_form("/projects/tab/webhooks", &fields).await;
    assert_eq!(no_csrf.status(), 403, "a form without its CSRF token is refused");
    let bad = s.post_form("/projects/tab/webhooks", &[("csrf", s.csrf.as_str()), ("url", "gopher://x"), ("event", "run.failed")]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("url: expected an http:// or https:// URL"));
    let mut with_csrf = vec![("csrf", s.csrf.as_str())];
    with_csrf.extend(fields);
    let created = s.post_form("/projects/tab/webhooks", &with_csrf).await;
    assert_eq!(created.status(), 200);
    let html = created.text().await.unwrap();
    let at = html.find("whsec_").expect("the secret is shown");
    let secret: String = html[at..].chars().take_while(|c| !matches!(c, '<' | '"')).collect();
    assert!(html.contains("&#60;b&#62;ci&#60;/b&#62;") && !html.contains("<b>ci"), "the description is escaped");
    let list = s.get("/projects/tab/webhooks").await.text().await.unwrap();
    assert!(!list.contains("whsec_"), "the secret is shown once");
    let id: String = sqlx::query_scalar("SELECT id::text FROM webhook_endpoints").fetch_one(&app.pool).await.unwrap();
    let events: Vec<String> = sqlx::query_scalar("SELECT unnest(events) FROM webhook_endpoints").fetch_all(&app.pool).await.unwrap();
    assert_eq!(events, ["export.created", "run.failed"]);

    let log_path = format!("/projects/tab/webhooks/{id}");
    assert_eq!(s.post_form(&format!("{log_path}/test"), &[]).await.status(), 403);
    assert_eq!(s.post_form(&format!("{log_path}/test"), &[("csrf", s.csrf.as_str())]).await.status(), 303);
    let html = eventually("the delivery in the log", || async {
        let html = s.get(&log_path).await.text().await.unwrap();
        html.contains("<td class=\"state\">delivered</td>").then_some(html)
    })
    .await;
    assert!(html.contains("webhook.test") && html.contains("<td class=\"attempts\">2</td>") && html.contains("<td class=\"code\">200</td>"), "{html}");
    assert!(verifies(&secret, &rx.got()[1]));

    let rotated = s.post_form(&format!("{log_path}/rotate"), &[("csrf", s.csrf.as_str())]).await.text().await.unwrap();
    let at = rotated.find("whsec_").expect("the new secret is shown");
    let new_secret: String = rotated[at..].chars().take_while(|c| !matches!(c, '<' | '"')).collect();
    assert_ne!(new_secret, secret);
    let delivery: String = sqlx::query_scalar("SELECT id::text FROM webhook_deliveries").fetch_one(&app.pool).await.unwrap();
    assert_eq!(s.post_form(&format!("{log_path}/deliveries/{delivery}/redeliver"), &[("csrf", s.csrf.as_str())]).await.status(), 303);
    let again = eventually("the redelivery", || async { rx.got().get(2).cloned() }).await;
    assert!(verifies(&new_secret, &again) && !verifies(&secret, &again), "signed with the rotated secret");
    assert_eq!(s.post_form(&format!("{log_path}/delete"), &[("csrf", s.csrf.as_str())]).await.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM webhook_endpoints").await, 0);
    assert_eq!(s.get(&log_path).await.status(), 404);
}

/// Ranks the task's responses by their text, ascending or descending.
async fn rank_by_text(l: &Api, task: &Value, key: &str, ascending: bool) {
    let mut responses: Vec<&Value> = task["responses"].as_array().unwrap().iter().collect();
    responses.sort_by_key(|r| r["text"].as_str().unwrap().to_string());
    if !ascending {
        responses.reverse();
    }
    let ranking: Vec<Vec<Value>> = responses.iter().map(|r| vec![r["id"].clone()]).collect();
    let res = l.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": key, "ranking": ranking})).await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn agreement_falling_below_the_threshold_is_sent_once_per_fall() {
    let app = webhook_app().await;
    let rx = Receiver::start(&[]).await;
    let lead = app.lead_with_items("agree", TaskKind::Ranking, 2, 4, 3).await;
    register(&lead, "agree", &rx.url, &["agreement.below_threshold"]).await;
    for bad in [json!({"agreement_below": 2.0}), json!({"agreement_below": "low"}), json!({"below": 0.5})] {
        let res = lead.post("/api/v1/projects/agree/webhooks/settings", &bad).await;
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("below"));
    }
    let set = lead.post("/api/v1/projects/agree/webhooks/settings", &json!({"agreement_below": 0.5})).await;
    assert_eq!(set.json::<Value>().await.unwrap(), json!({"agreement_below": 0.5}));
    // Two labellers who rank every item in opposite orders.
    let (a, b) = (app.member("a@agree.org", "agree", Role::Labeller).await, app.member("b@agree.org", "agree", Role::Labeller).await);
    for i in 0..4 {
        rank_by_text(&a, &a.next_task("agree").await.unwrap(), &format!("a{i}"), true).await;
        rank_by_text(&b, &b.next_task("agree").await.unwrap(), &format!("b{i}"), false).await;
    }
    assert_eq!(rewardlab::services::webhooks::check_agreement(&app.pool, &app.state.quality).await.unwrap(), 1);
    assert_eq!(rewardlab::services::webhooks::check_agreement(&app.pool, &app.state.quality).await.unwrap(), 0, "one fall, one event");
    let got = eventually("the alert", || async { rx.got().first().cloned() }).await;
    let data = &got.json()["data"];
    assert!(data["alpha"].as_f64().unwrap() < 0.5 && data["threshold"] == 0.5, "{data}");
    assert_eq!(app.count("SELECT count(*) FROM webhook_events WHERE type = 'agreement.below_threshold'").await, 1);
}

#[tokio::test]
async fn metrics_count_paused_labellers_and_webhook_deliveries_by_state() {
    let app = spawn_app_with(WebOptions { webhooks: fast(true), ..WebOptions::default() }.with_metrics_token(Some("metrics-token-0123456789")).unwrap()).await;
    tokio::spawn(rewardlab::jobs::webhooks::run(app.pool.clone(), app.state.quality.clone(), fast(true)));
    let rx = Receiver::start(&[500; 10]).await;
    app.project("watch", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@watch.org", "watch", Role::Lead).await;
    let (id, _) = register(&lead, "watch", &rx.url, &["labeller.paused"]).await;
    let user = app.user("slow@watch.org", false).await;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'watch'").fetch_one(&app.pool).await.unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(rewardlab::db::quality::pause(&mut conn, project.into(), user, "gold score below 0.5", 0.1, 8).await.unwrap());
    assert_eq!(lead.post(&format!("/api/v1/projects/watch/webhooks/{id}/test"), &Value::Null).await.status(), 202);
    eventually("both deliveries failed", || async { (app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'").await == 2).then_some(()) })
        .await;
    let text = app.http.get(format!("{}/metrics", app.addr)).bearer_auth("metrics-token-0123456789").send().await.unwrap().text().await.unwrap();
    assert!(text.contains("rewardlab_paused_labellers{project=\"watch\"} 1"), "{text}");
    assert!(text.contains("rewardlab_webhook_deliveries{project=\"watch\",state=\"failed\"} 2"), "{text}");
}
