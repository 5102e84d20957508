//! The OpenAPI description: generated from the handlers, it lists every route the server has
//! under /api/v1, the reference page shows it, and schemathesis, fuzzing a real server from it,
//! finds no 5xx and no answer that contradicts it.

use std::path::PathBuf;
use std::process::Command;

use rewardlab::api::ROUTES;
use rewardlab::domain::{Role, TaskKind};
use serde_json::Value;

use crate::helpers::{spawn_app, Api};

/// The Python of the CI's virtual environment (`.ci/run` makes it): `REWARDLAB_PYTHON`, else
/// `target/python-venv`. Outside CI a missing one skips the Python tests; in CI it fails them.
pub fn python() -> Option<PathBuf> {
    // `.ci/run` keeps its venv in the user's cache and exports REWARDLAB_PYTHON; a later
    // `cargo test` in another shell finds the same venv there.
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    let p = std::env::var_os("REWARDLAB_PYTHON")
        .map(PathBuf::from)
        .or_else(|| cache.map(|c| c.join("rewardlab-ci/python-venv/bin/python")).filter(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/python-venv/bin/python"));
    if p.exists() {
        return Some(p);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing: .ci/run installs it", p.display());
    eprintln!("skipping: no Python virtual environment at {} (.ci/run makes it)", p.display());
    None
}

async fn description(api: &Api) -> Value {
    let res = api.http.get(format!("{}/api/v1/openapi.json", api.app_addr)).send().await.unwrap();
    assert_eq!(res.status(), 200, "the description is public");
    res.json().await.unwrap()
}

#[tokio::test]
async fn every_api_route_is_described_with_its_answers() {
    let app = spawn_app().await;
    app.project("doc", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@doc.org", "doc", Role::Lead).await;
    let doc = description(&lead).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        described += item.as_object().unwrap().keys().filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str())).count();
        assert!(path.starts_with("/api/v1/"), "{path}");
    }
    assert_eq!(described, ROUTES.len(), "the description has exactly the routes of the table");
    let mut ids = std::collections::HashSet::new();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the description");
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{method} {path}: operationId repeated");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has no success answer");
        assert!(responses.contains_key("503"), "{method} {path}: the shared answers are added");
        let public = op["security"].as_array().is_some_and(|s| s.iter().all(|r| r.as_object().is_some_and(|r| r.is_empty())));
        assert_eq!(responses.contains_key("401"), !public, "{method} {path}: 401 exactly where a token is needed");
        // The route answers (a path the table has but the server lacks would be a JSON 404 or a 405).
        let url = format!("{}{}", lead.app_addr, path.replace("{slug}", "doc").replace("{task_id}", "x").replace("{id}", "x"));
        let res = lead.http.request(method.to_uppercase().parse().unwrap(), url).bearer_auth(&lead.token).send().await.unwrap();
        assert_ne!(res.status(), 405, "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // Each body names its own schema (two types of one name would silently share one).
    let body = |path: &str| doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap().to_string();
    let bodies = ["/api/v1/projects", "/api/v1/projects/{slug}/exports", "/api/v1/projects/{slug}/runs", "/api/v1/projects/{slug}/members"].map(body);
    assert_eq!(bodies.iter().collect::<std::collections::HashSet<_>>().len(), bodies.len(), "{bodies:?}");
    assert_eq!(doc["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    // The real types are what is described: a created project's fields are the schema's.
    let summary = doc["components"]["schemas"]["ProjectSummary"]["properties"].as_object().unwrap();
    let listed: Value = lead.get("/api/v1/projects").await.json().await.unwrap();
    let fields: Vec<&String> = listed["projects"][0].as_object().unwrap().keys().collect();
    assert_eq!(fields, summary.keys().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_reference_page_lists_every_operation_without_scripts() {
    let app = spawn_app().await;
    let res = app.http.get(format!("{}/api/v1/docs", app.addr)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = res.text().await.unwrap();
    for (method, path) in ROUTES {
        assert!(html.contains(&format!("<code>{} {}</code>", method.to_uppercase(), path)), "{method} {path} is not on the page");
    }
    assert!(html.contains("id=\"schema-ErrorBody\""));
    assert!(!html.contains("<script"), "the page works offline, with the site's CSP");
}

#[tokio::test]
async fn unknown_api_paths_and_bad_query_strings_answer_json() {
    let app = spawn_app().await;
    app.project("doc", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@doc.org", "doc", Role::Lead).await;
    let res = lead.get("/api/v1/no/such/thing").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    let task = uuid::Uuid::new_v4();
    let res = lead.post(&format!("/api/v1/tasks/{task}/judgement?next=abc"), &serde_json::json!({"idempotency_key": "k"})).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("query: "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_the_description_contradicts() {
    let Some(python) = python() else { return };
    let app = spawn_app().await;
    let admin = app.user("admin@fuzz.org", true).await;
    let token = app.token(admin).await;
    // Some data for the fuzzer to find: a project with items, a judgement and an export.
    let lead = app.lead_with_items("fuzz", TaskKind::Ranking, 1, 5, 3).await;
    let task = lead.next_task("fuzz").await.unwrap();
    assert_eq!(lead.submit_in_order(&task, "k1").await.status(), 201);
    assert_eq!(lead.post("/api/v1/projects/fuzz/exports", &serde_json::json!({"format": "comparisons"})).await.status(), 201);
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("schemathesis-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&report).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis");
    // More examples per operation for a longer hunt: REWARDLAB_FUZZ_EXAMPLES=500.
    let examples = std::env::var("REWARDLAB_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    let out = Command::new(&python)
        .args(["-m", "schemathesis.cli", "--config-file", dir.join("config.toml").to_str().unwrap()])
        .args(["run", &format!("{}/api/v1/openapi.json", app.addr), "--url", &app.addr])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", &examples, "--seed", "1", "--workers", "2", "--no-color"])
        .args(["--generation-database", "none", "--report-dir", report.to_str().unwrap()])
        .env("SCHEMATHESIS_HOOKS", dir.join("hooks.py"))
        // Its caches go there too, not into the checkout.
        .current_dir(&report)
        .output()
        .expect("schemathesis runs");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed") || text.contains("Passed"), "{text}");
}
