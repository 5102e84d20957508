use rewardlab::domain::{Role, TaskKind};
use serde_json::json;

use crate::helpers::{items_jsonl, spawn_app, PASSWORD};

#[tokio::test]
async fn a_labeller_of_another_project_gets_404_for_every_page_and_api_call() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 2).await;
    app.project("beta", TaskKind::Ranking, 2).await;
    let lead_b = app.member("lead-b@example.org", "beta", Role::Lead).await;
    assert_eq!(lead_b.post_bytes("/api/v1/projects/beta/items", items_jsonl(3, 2, "b")).await.status(), 200);
    let task_b = lead_b.next_task("beta").await.unwrap();
    let export_b: serde_json::Value = lead_b.post("/api/v1/projects/beta/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let run_b: serde_json::Value = lead_b.post("/api/v1/projects/beta/runs", &json!({"kind": "rm"})).await.json().await.unwrap();
    let schedule_b: serde_json::Value =
        lead_b.post("/api/v1/projects/beta/schedules", &json!({"cron": "0 3 * * *", "chain": [{"kind": "rm"}]})).await.json().await.unwrap();
    let (run_id, schedule_id) = (run_b["id"].as_str().unwrap(), schedule_b["id"].as_str().unwrap());
    let outsider = app.member("a-labeller@example.org", "alpha", Role::Labeller).await;

    let task_id = task_b["task_id"].as_str().unwrap();
    let export_id = export_b["id"].as_str().unwrap();
    for path in [
        "/api/v1/projects/beta/progress",
        "/api/v1/projects/beta/dashboard",
        "/api/v1/projects/beta/exports",
        &format!("/api/v1/exports/{export_id}/download"),
        &format!("/api/v1/exports/{export_id}/manifest"),
        "/api/v1/projects/beta/runs",
        "/api/v1/projects/beta/schedules",
        "/api/v1/projects/beta/leaderboard",
        "/api/v1/projects/beta/rm-agreement",
        &format!("/api/v1/runs/{run_id}"),
        &format!("/api/v1/runs/{run_id}/metrics"),
    ] {
        assert_eq!(outsider.get(path).await.status(), 404, "GET {path}");
    }
    let delete =
        outsider.http.delete(format!("{}/api/v1/projects/beta/schedules/{schedule_id}", outsider.app_addr)).bearer_auth(&outsider.token).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    let posts = [
        ("/api/v1/projects/beta/tasks/next".to_string(), json!(null)),
        ("/api/v1/projects/beta/items".to_string(), json!({"prompt": "x", "responses": []})),
        ("/api/v1/projects/beta/exports".to_string(), json!({"format": "comparisons"})),
        ("/api/v1/projects/beta/members".to_string(), json!({"email": "a-labeller@example.org", "role": "lead"})),
        (format!("/api/v1/tasks/{task_id}/judgement"), json!({"idempotency_key": "k", "ranking": []})),
        (format!("/api/v1/tasks/{task_id}/skip"), json!({"reason": "no"})),
        ("/api/v1/projects/beta/runs".to_string(), json!({"kind": "rm"})),
        ("/api/v1/projects/beta/schedules".to_string(), json!({"cron": "* * * * *", "chain": [{"kind": "rm"}]})),
        (format!("/api/v1/runs/{run_id}/cancel"), json!(null)),
    ];
    for (path, body) in &posts {
        assert_eq!(outsider.post(path, body).await.status(), 404, "POST {path}");
    }
    let listed: serde_json::Value = outsider.get("/api/v1/projects").await.json().await.unwrap();
    assert_eq!(listed["projects"].as_array().unwrap().len(), 1);
    assert_eq!(listed["projects"][0]["slug"], "alpha");

    let session = app.login("a-labeller@example.org", PASSWORD).await;
    for path in [
        "/projects/beta",
        "/projects/beta/label",
        "/projects/beta/guidelines",
        "/projects/beta/runs",
        "/projects/beta/labellers",
        "/projects/beta/models",
        "/projects/beta/items",
        "/projects/beta/exports",
        "/projects/beta/settings",
        &format!("/projects/beta/runs/{run_id}"),
        &format!("/projects/beta/runs/{run_id}/live"),
        &format!("/projects/beta/runs/{run_id}/files/config.json"),
        &format!("/projects/beta/runs/compare?a={run_id}&b={run_id}"),
    ] {
        assert_eq!(session.get(path).await.status(), 404, "page {path}");
    }
    let csrf = session.csrf.clone();
    for path in [
        "/projects/beta/members",
        "/projects/beta/settings",
        "/projects/beta/exports",
        "/projects/beta/runs",
        "/projects/beta/schedules",
        &format!("/projects/beta/runs/{run_id}/cancel"),
        &format!("/projects/beta/schedules/{schedule_id}/delete"),
    ] {
        let fields = [
            ("csrf", csrf.as_str()),
            ("email", "x@example.org"),
            ("role", "lead"),
            ("name", "n"),
            ("overlap", "1"),
            ("format", "comparisons"),
            ("kind", "rm"),
            ("chain", "[{\"kind\": \"rm\"}]"),
            ("cron", "* * * * *"),
        ];
        let res = session.post_form(path, &fields).await;
        assert_eq!(res.status(), 404, "form {path}");
    }
    // The same run in the outsider's own project's URL is not found either.
    assert_eq!(session.get(&format!("/projects/alpha/runs/{run_id}")).await.status(), 404);
    assert_eq!(app.count("SELECT count(*) FROM runs WHERE status = 'queued'").await, 1, "the run was not cancelled");
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM schedules").await, 1);
    assert!(session.get("/").await.text().await.unwrap().contains("alpha"));
    assert_eq!(app.count("SELECT count(*) FROM memberships WHERE role = 'lead'").await, 1, "nothing changed in beta");
}

#[tokio::test]
async fn a_labeller_may_not_use_the_leads_actions_of_their_own_project() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 2).await;
    let labeller = app.member("l@example.org", "alpha", Role::Labeller).await;
    assert_eq!(labeller.post_bytes("/api/v1/projects/alpha/items", items_jsonl(1, 2, "a")).await.status(), 403);
    assert_eq!(labeller.post("/api/v1/projects/alpha/exports", &json!({"format": "comparisons"})).await.status(), 403);
    assert_eq!(labeller.get("/api/v1/projects/alpha/dashboard").await.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM items").await, 0);
}
