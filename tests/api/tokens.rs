//! API tokens made through the API: a script holding a token (or a browser session) makes
//! another, lists its tokens and revokes one, which then stops working.

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api};

#[tokio::test]
async fn a_token_makes_another_which_works_until_revoked() {
    let app = spawn_app().await;
    app.project("tok", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@tok.org", "tok", Role::Lead).await;
    assert_eq!(lead.post("/api/v1/tokens", &json!({"name": ""})).await.status(), 400);
    let bad = lead.post("/api/v1/tokens", &json!({"label": "x"})).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("label"));
    let res = lead.post("/api/v1/tokens", &json!({"name": "notebook"})).await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rl_") && created["name"] == "notebook");
    let notebook = Api { token, ..lead.clone() };
    assert_eq!(notebook.get("/api/v1/projects").await.status(), 200);
    let list: Value = notebook.get("/api/v1/tokens").await.json().await.unwrap();
    let names: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["test", "notebook"]);
    assert!(!list.to_string().contains("rl_"), "tokens are never shown again");
    let id = list["tokens"][1]["id"].as_str().unwrap();
    let stranger = app.member("other@tok.org", "tok", Role::Labeller).await;
    assert_eq!(stranger.delete_path(&format!("/api/v1/tokens/{id}")).await, 404, "only its owner revokes it");
    assert_eq!(lead.delete_path(&format!("/api/v1/tokens/{id}")).await, 204);
    assert_eq!(notebook.get("/api/v1/projects").await.status(), 401);
    let anonymous = app.http.post(format!("{}/api/v1/tokens", app.addr)).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
