use rewardlab::domain::{Role, TaskKind};

use crate::helpers::{spawn_app, PASSWORD};

#[tokio::test]
async fn a_visitor_is_sent_to_the_login_page_and_the_api_answers_401() {
    let app = spawn_app().await;
    let res = app.http.get(format!("{}/", app.addr)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login");
    let res = app.http.get(format!("{}/api/v1/projects", app.addr)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = spawn_app().await;
    for path in ["/login", "/", "/healthz", "/static/label.js", "/api/v1/projects"] {
        let res = app.http.get(format!("{}{path}", app.addr)).send().await.unwrap();
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
}

#[tokio::test]
async fn login_sets_a_new_host_session_and_logout_revokes_it() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    let first = app.login("ann@example.org", PASSWORD).await;
    let second = app.login("ann@example.org", PASSWORD).await;
    assert_ne!(first.cookie, second.cookie, "every login makes a new session id");
    assert_eq!(first.get("/account").await.status(), 200);

    // The cookie is a __Host- cookie: Secure, Path=/, no Domain, HttpOnly.
    let res = app.attempt_login("ann@example.org", PASSWORD).await;
    let set = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|c| c.starts_with("__Host-rl_session=")).unwrap();
    for attr in ["Secure", "HttpOnly", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");

    let res = first.post_form("/logout", &[("csrf", &first.csrf)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(first.get("/account").await.status(), 303, "the session is gone after logout");
    assert_eq!(second.get("/account").await.status(), 200, "other sessions stay");
}

#[tokio::test]
async fn a_form_post_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    app.user("ann@example.org", true).await;
    let s = app.login("ann@example.org", PASSWORD).await;
    for fields in [vec![], vec![("csrf", "forged")]] {
        let mut form = fields.clone();
        form.extend([("slug", "evil"), ("name", "Evil"), ("kind", "ranking")]);
        let res = s.post_form("/projects", &form).await;
        assert_eq!(res.status(), 403);
    }
    let res = s.http.post(format!("{}/api/v1/projects", s.addr)).header("Cookie", format!("__Host-rl_session={}", s.cookie))
        .json(&serde_json::json!({"slug": "evil", "name": "Evil", "kind": "ranking"})).send().await.unwrap();
    assert_eq!(res.status(), 403, "a cookie-authenticated API call needs X-CSRF-Token");
    let res = s.post_form("/logout", &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM projects").await, 0);
    assert_eq!(s.get("/account").await.status(), 200, "the refused logout did not log out");
    let ok = s.post_form("/projects", &[("csrf", &s.csrf), ("slug", "good"), ("name", "Good"), ("kind", "pairwise")]).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(app.count("SELECT count(*) FROM projects").await, 1);
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.attempt_login("ann@example.org", "wrong password!").await.status().as_u16());
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 401, 429]);
    // Even the right password is refused while throttled.
    assert_eq!(app.attempt_login("ann@example.org", PASSWORD).await.status(), 429);
    // Another account from the same address is not locked out.
    app.user("bob@example.org", false).await;
    assert_eq!(app.attempt_login("bob@example.org", PASSWORD).await.status(), 303);
}

#[tokio::test]
async fn changing_the_password_revokes_every_session() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    let a = app.login("ann@example.org", PASSWORD).await;
    let b = app.login("ann@example.org", PASSWORD).await;
    let res = a.post_form("/account/password", &[("csrf", &a.csrf), ("current", PASSWORD), ("new", "a brand new password")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(a.get("/account").await.status(), 303);
    assert_eq!(b.get("/account").await.status(), 303);
    app.login("ann@example.org", "a brand new password").await;
}

#[tokio::test]
async fn api_tokens_are_stored_hashed_and_stop_working_when_revoked() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let api = app.member("ann@example.org", "alpha", Role::Lead).await;
    assert_eq!(api.get("/api/v1/projects").await.status(), 200);
    let stored: i64 = app.count(&format!("SELECT count(*) FROM api_tokens WHERE token_hash = convert_to('{}', 'UTF8')", api.token)).await;
    assert_eq!(stored, 0, "the token itself is never stored");

    let s = app.login("ann@example.org", PASSWORD).await;
    let page = s.post_form("/account/tokens", &[("csrf", &s.csrf), ("name", "laptop")]).await.text().await.unwrap();
    let at = page.find("id=\"new-token\">").unwrap() + "id=\"new-token\">".len();
    let token = page[at..].split('<').next().unwrap().to_string();
    let res = s.http.get(format!("{}/api/v1/projects", s.addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_tokens WHERE name = 'laptop'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(s.post_form(&format!("/account/tokens/{id}/revoke"), &[("csrf", &s.csrf)]).await.status(), 200);
    let res = s.http.get(format!("{}/api/v1/projects", s.addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 401);
}
