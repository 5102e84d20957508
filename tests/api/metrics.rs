//! `/metrics`: off by default, behind its bearer token (or on its own address), in
//! Prometheus' text format, with request counters by route pattern that move and the lead's
//! figures from the database.

use std::collections::BTreeMap;

use rewardlab::domain::{Role, TaskKind};
use rewardlab::settings::WebOptions;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const TOKEN: &str = "metrics-token-0123456789";

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(format!("{}/metrics", app.addr));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// One sample line: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the text format (version 0.0.4): `# HELP`/`# TYPE` comments, and
/// `name{label="value",…} number` lines whose label values may hold any escaped text.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(line)?;
            ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind).then_some(()).ok_or(line)?;
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).ok_or(line)?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            while !rest.starts_with('}') {
                let (key, r) = rest.split_once("=\"").ok_or(line)?;
                let (mut value, mut chars) = (String::new(), r.char_indices());
                let end = loop {
                    match chars.next().ok_or(line)? {
                        (_, '\\') => value.push(match chars.next().ok_or(line)?.1 {
                            'n' => '\n',
                            c => c,
                        }),
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_string(), value);
                rest = r[end + 1..].strip_prefix(',').unwrap_or(&r[end + 1..]);
            }
            rest = &rest[1..];
        }
        let value: f64 = rest.trim().parse().map_err(|_| line.to_string())?;
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| typed.contains(*f)).unwrap_or(name);
        typed.contains(family).then_some(()).ok_or(format!("{name} has no # TYPE"))?;
        out.push(Sample { name: name.to_string(), labels, value });
    }
    Ok(out)
}

/// The samples of a scrape, checked line by line.
async fn samples(app: &TestApp) -> Vec<Sample> {
    let res = scrape(app, Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    parse(&text).unwrap_or_else(|line| panic!("not the text format: {line}\n{text}"))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples.iter().find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).map(|s| s.value)
}

#[tokio::test]
async fn metrics_are_off_unless_a_token_is_configured() {
    let app = spawn_app().await;
    assert_eq!(scrape(&app, None).await.status(), 404);
    assert_eq!(scrape(&app, Some(TOKEN)).await.status(), 404);
    assert!(WebOptions::default().with_metrics_token(Some("short")).is_err(), "a short token is refused");
}

#[tokio::test]
async fn a_scrape_needs_the_token() {
    let app = spawn_app_with(WebOptions::default().with_metrics_token(Some(TOKEN)).unwrap()).await;
    let res = scrape(&app, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(scrape(&app, Some("metrics-token-0123456788")).await.status(), 401);
    assert_eq!(scrape(&app, Some(TOKEN)).await.status(), 200);
}

#[tokio::test]
async fn counters_move_by_route_pattern_and_the_leads_figures_come_from_the_database() {
    let app = spawn_app_with(WebOptions::default().with_metrics_token(Some(TOKEN)).unwrap()).await;
    let lead = app.lead_with_items("watch", TaskKind::Ranking, 1, 4, 2).await;
    let labeller = app.member("lab@watch.org", "watch", Role::Labeller).await;
    let route = [("method", "GET"), ("route", "/api/v1/projects/{slug}/dashboard"), ("status", "200")];
    for _ in 0..3 {
        assert_eq!(lead.get("/api/v1/projects/watch/dashboard").await.status(), 200);
    }
    let task = labeller.next_task("watch").await.unwrap();
    assert_eq!(labeller.submit_in_order(&task, "k1").await.status(), 201);
    let _leased = labeller.next_task("watch").await.unwrap();

    // One scrape: the figures it computes are kept for a few seconds.
    let s = samples(&app).await;
    assert_eq!(value(&s, "rewardlab_http_requests_total", &route), Some(3.0));
    let count = value(&s, "rewardlab_http_request_duration_seconds_count", &route);
    assert_eq!(count, Some(3.0), "the latency histogram counts the same requests");
    let again = samples(&app).await;
    let scrapes = [("method", "GET"), ("route", "/metrics"), ("status", "200")];
    assert_eq!(value(&again, "rewardlab_http_requests_total", &scrapes), Some(1.0), "the counters move between scrapes");
    assert!(!s.iter().any(|x| x.labels.get("route").is_some_and(|r| r.contains("/watch/"))), "routes are patterns, not paths");
    assert_eq!(value(&s, "rewardlab_open_items", &[("project", "watch")]), Some(3.0));
    assert_eq!(value(&s, "rewardlab_live_leases", &[("project", "watch")]), Some(1.0));
    assert_eq!(value(&s, "rewardlab_judgements_total", &[("project", "watch")]), Some(1.0));
    assert_eq!(value(&s, "rewardlab_active_labellers", &[("project", "watch")]), Some(1.0));
}

#[tokio::test]
async fn a_separate_metrics_address_serves_only_metrics() {
    let app = spawn_app().await;
    let (server, port) =
        rewardlab::web::metrics::separate_server("127.0.0.1:0", app.pool.clone(), app.state.quality.clone(), app.metrics.clone(), None).unwrap();
    tokio::spawn(server);
    assert_eq!(app.http.get(format!("{}/healthz", app.addr)).send().await.unwrap().status(), 200);
    let res = app.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("rewardlab_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"), "{text}");
    assert_eq!(app.http.get(format!("http://127.0.0.1:{port}/api/v1/projects")).send().await.unwrap().status(), 404);
}

/// A PPO run's KL: the newest run that reported one (a newer run that failed before its first
/// iteration hides nothing).
#[tokio::test]
async fn the_ppo_kl_is_the_newest_reported_one() {
    let app = spawn_app_with(WebOptions::default().with_metrics_token(Some(TOKEN)).unwrap()).await;
    app.lead_with_items("kl", TaskKind::Ranking, 1, 1, 2).await;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'kl'").fetch_one(&app.pool).await.unwrap();
    let (reported, failed) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (run, status) in [(reported, "succeeded"), (failed, "failed")] {
        sqlx::query("INSERT INTO runs (id, project_id, kind, status) VALUES ($1, $2, 'ppo', $3::run_status)")
            .bind(run)
            .bind(project)
            .bind(status)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    for (step, kl) in [(1, 0.5), (2, 0.25)] {
        sqlx::query("INSERT INTO run_metrics (run_id, fence, event, step, data) VALUES ($1, 0, 'iteration', $2, jsonb_build_object('kl', $3::float8))")
            .bind(reported)
            .bind(step)
            .bind(kl)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let s = samples(&app).await;
    assert_eq!(value(&s, "rewardlab_ppo_kl", &[("project", "kl"), ("run", &reported.to_string())]), Some(0.25));
    assert!(!s.iter().any(|x| x.name == "rewardlab_ppo_kl" && x.labels.get("run") == Some(&failed.to_string())));
}
