//! People management without a shell: admins create accounts with one-time invitation links
//! and deactivate them; leads add and remove members; in the browser and over the API, with
//! every refusal.

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{cookie_value, hidden_csrf, spawn_app, Session, TestApp, PASSWORD};
use crate::webdriver::Browser;

const NEW_PASSWORD: &str = "a brand new passphrase";

/// The invitation link on an admin page.
fn link_in(html: &str) -> String {
    let at = html.find("id=\"invite-link\">").expect("an invitation link") + "id=\"invite-link\">".len();
    html[at..].split('<').next().unwrap().to_string()
}

/// Opens an invitation link and posts the password form like a browser.
async fn accept(app: &TestApp, path: &str, password: &str, repeat: &str) -> reqwest::Response {
    let page = app.http.get(format!("{}{path}", app.addr)).send().await.unwrap();
    assert_eq!(page.status(), 200, "{path}");
    let name = app.cookies().login_name();
    let cookie = cookie_value(&page, name).expect("the form's cookie");
    let csrf = hidden_csrf(&page.text().await.unwrap());
    app.http
        .post(format!("{}{path}", app.addr))
        .header("Cookie", format!("{name}={cookie}"))
        .form(&[("csrf", csrf.as_str()), ("password", password), ("repeat", repeat)])
        .send()
        .await
        .unwrap()
}

fn path_of(link: &str) -> String {
    link.split_once("/invite/").map(|(_, t)| format!("/invite/{t}")).unwrap()
}

async fn admin(app: &TestApp) -> Session {
    app.user("admin@example.org", true).await;
    app.login("admin@example.org", PASSWORD).await
}

#[tokio::test]
async fn an_admin_invites_a_person_who_sets_a_password_once_and_signs_in() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let csrf = admin.csrf.clone();
    let page = admin.post_form("/admin/users", &[("csrf", csrf.as_str()), ("email", "Ann@Example.org")]).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let link = link_in(&html);
    assert!(link.starts_with(&format!("{}/invite/", app.addr)), "{link}");
    assert!(html.contains("data-email=\"ann@example.org\"") && html.contains("invited (link works until"));
    let token = link.rsplit('/').next().unwrap().to_string();
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM invites").fetch_one(&app.pool).await.unwrap();
    assert!(stored.len() == 32 && stored != token.as_bytes(), "only a keyed hash is stored");
    assert_eq!(app.attempt_login("ann@example.org", "").await.status(), 401, "no password works before the invitation is used");

    let path = path_of(&link);
    let shown = app.http.get(format!("{}{path}", app.addr)).send().await.unwrap().text().await.unwrap();
    assert!(shown.contains("id=\"invite-email\">ann@example.org<"));
    let res = accept(&app, &path, NEW_PASSWORD, "another passphrase").await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("repeat: the two passwords differ"));
    assert_eq!(accept(&app, &path, "short", "short").await.status(), 400);
    // The form's double-submit token is required.
    let res = app.http.post(format!("{}{path}", app.addr)).form(&[("csrf", "x"), ("password", NEW_PASSWORD), ("repeat", NEW_PASSWORD)]).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = accept(&app, &path, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Your password is set"));
    app.login("ann@example.org", NEW_PASSWORD).await;

    // Single use: the link works no more.
    let again = app.http.get(format!("{}{path}", app.addr)).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("used already, replaced by a newer one, or has expired"));
    let html = admin.get("/admin/users").await.text().await.unwrap();
    assert!(!html.contains("invited (link works until"), "ann is active now");

    // A new link replaces the unused one; an expired link does not work.
    let ann: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'ann@example.org'").fetch_one(&app.pool).await.unwrap();
    let first = link_in(&admin.post_form(&format!("/admin/users/{ann}/invite"), &[("csrf", csrf.as_str())]).await.text().await.unwrap());
    let second = link_in(&admin.post_form(&format!("/admin/users/{ann}/invite"), &[("csrf", csrf.as_str())]).await.text().await.unwrap());
    assert_eq!(app.http.get(format!("{}{}", app.addr, path_of(&first))).send().await.unwrap().status(), 400, "replaced");
    assert_eq!(app.http.get(format!("{}{}", app.addr, path_of(&second))).send().await.unwrap().status(), 200);
    sqlx::query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE used_at IS NULL AND revoked_at IS NULL").execute(&app.pool).await.unwrap();
    assert_eq!(app.http.get(format!("{}{}", app.addr, path_of(&second))).send().await.unwrap().status(), 400, "expired");
    assert_eq!(app.http.get(format!("{}/invite/nonsense", app.addr)).send().await.unwrap().status(), 400);

    // The same over the API.
    let admin_id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'admin@example.org'").fetch_one(&app.pool).await.unwrap();
    let api = crate::helpers::Api { app_addr: app.addr.clone(), token: app.token(admin_id.parse().unwrap()).await, http: app.http.clone() };
    let res = api.post("/api/v1/users", &json!({"email": "bo@example.org", "admin": true})).await;
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();
    assert!(made["invite_url"].as_str().unwrap().starts_with(&format!("{}/invite/", app.addr)), "{made}");
    assert_eq!(accept(&app, &path_of(made["invite_url"].as_str().unwrap()), NEW_PASSWORD, NEW_PASSWORD).await.status(), 200);
    let listed: Value = api.get("/api/v1/users").await.json().await.unwrap();
    let bo = listed["users"].as_array().unwrap().iter().find(|u| u["email"] == "bo@example.org").unwrap();
    assert_eq!((bo["is_admin"].as_bool(), bo["deactivated_at"].is_null()), (Some(true), true));
    let res = api.post(&format!("/api/v1/users/{}/invite", made["id"].as_str().unwrap()), &Value::Null).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_deactivated_account_s_sessions_and_tokens_stop_working_at_once() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lab = app.member("lab@example.org", "alpha", Role::Labeller).await;
    let lab_session = app.login("lab@example.org", PASSWORD).await;
    assert_eq!(lab.get("/api/v1/projects").await.status(), 200);
    assert_eq!(lab_session.get("/").await.status(), 200);
    let id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'lab@example.org'").fetch_one(&app.pool).await.unwrap();

    let res = admin.post_form(&format!("/admin/users/{id}/deactivate"), &[("csrf", admin.csrf.as_str())]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(lab.get("/api/v1/projects").await.status(), 401, "the token stopped");
    let page = lab_session.get("/").await;
    assert_eq!((page.status().as_u16(), page.headers()["location"].to_str().unwrap()), (303, "/login"), "the session ended");
    assert_eq!(app.attempt_login("lab@example.org", PASSWORD).await.status(), 401, "no sign-in");
    assert!(admin.get("/admin/users").await.text().await.unwrap().contains("deactivated "));
    let members = admin.get("/projects/alpha/labellers").await.text().await.unwrap();
    assert!(members.contains("lab@example.org <span class=\"muted\">(deactivated)</span>"), "{members}");

    let res = admin.post_form(&format!("/admin/users/{id}/reactivate"), &[("csrf", admin.csrf.as_str())]).await;
    assert_eq!(res.status(), 303);
    app.login("lab@example.org", PASSWORD).await;
    assert_eq!(lab.get("/api/v1/projects").await.status(), 401, "revoked tokens stay revoked");
}

#[tokio::test]
async fn only_active_admins_manage_accounts_and_each_refusal_says_why() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    let lead_session = app.login("lead@example.org", PASSWORD).await;
    let admin_id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'admin@example.org'").fetch_one(&app.pool).await.unwrap();
    let lead_id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'lead@example.org'").fetch_one(&app.pool).await.unwrap();

    // A lead is no admin: every page, form and API call refuses.
    assert_eq!(lead_session.get("/admin/users").await.status(), 403);
    let csrf = lead_session.csrf.clone();
    assert_eq!(lead_session.post_form("/admin/users", &[("csrf", csrf.as_str()), ("email", "x@example.org")]).await.status(), 403);
    for action in ["invite", "deactivate", "reactivate"] {
        assert_eq!(lead_session.post_form(&format!("/admin/users/{admin_id}/{action}"), &[("csrf", csrf.as_str())]).await.status(), 403, "{action}");
        assert_eq!(lead.post(&format!("/api/v1/users/{admin_id}/{action}"), &Value::Null).await.status(), 403, "API {action}");
    }
    assert_eq!(lead.get("/api/v1/users").await.status(), 403);
    assert_eq!(lead.post("/api/v1/users", &json!({"email": "x@example.org"})).await.status(), 403);
    assert!(!lead_session.get("/").await.text().await.unwrap().contains("/admin/users"), "no Users link for a lead");
    assert!(admin.get("/").await.text().await.unwrap().contains("id=\"nav-users\""));
    assert_eq!(app.count("SELECT count(*) FROM users WHERE deactivated_at IS NOT NULL").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 2);

    // An admin's own mistakes.
    let c = admin.csrf.clone();
    let res = admin.post_form("/admin/users", &[("csrf", c.as_str()), ("email", "not an email")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("email:"));
    assert_eq!(admin.post_form("/admin/users", &[("csrf", c.as_str()), ("email", "lead@example.org")]).await.status(), 409);
    assert_eq!(admin.post_form("/admin/users", &[("csrf", "stale"), ("email", "y@example.org")]).await.status(), 403);
    assert_eq!(admin.post_form(&format!("/admin/users/{admin_id}/deactivate"), &[("csrf", c.as_str())]).await.status(), 409, "not oneself");
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(admin.post_form(&format!("/admin/users/{unknown}/deactivate"), &[("csrf", c.as_str())]).await.status(), 404);
    assert_eq!(admin.post_form(&format!("/admin/users/{unknown}/invite"), &[("csrf", c.as_str())]).await.status(), 404);
    assert_eq!(admin.post_form("/admin/users/nonsense/invite", &[("csrf", c.as_str())]).await.status(), 404);
    // A browser's API call needs its CSRF header.
    let res = app
        .http
        .post(format!("{}/api/v1/users/{lead_id}/deactivate", app.addr))
        .header("Cookie", format!("{}={}", admin.cookie_name, admin.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 2);

    // A deactivated admin is no admin.
    let other_admin = app.user("root2@example.org", true).await;
    let token = app.token(other_admin).await;
    let api = crate::helpers::Api { app_addr: app.addr.clone(), token, http: app.http.clone() };
    assert_eq!(api.get("/api/v1/users").await.status(), 200);
    sqlx::query("UPDATE users SET deactivated_at = now() WHERE id = $1").bind(other_admin).execute(&app.pool).await.unwrap();
    assert_eq!(api.get("/api/v1/users").await.status(), 401);
}

#[tokio::test]
async fn leads_add_and_remove_members_of_their_own_project_only() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    app.project("beta", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@alpha.org", "alpha", Role::Lead).await;
    let other = app.member("lead@beta.org", "beta", Role::Lead).await;
    let labeller = app.member("lab@alpha.org", "alpha", Role::Labeller).await;
    let ann = app.user("ann@example.org", false).await;

    let res = lead.post("/api/v1/projects/alpha/members", &json!({"email": "ann@example.org", "role": "labeller"})).await;
    assert_eq!(res.status(), 200);
    let res = lead.post("/api/v1/projects/alpha/members", &json!({"email": "nobody@example.org", "role": "labeller"})).await;
    assert_eq!(res.status(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("Users page"));
    let listed: Value = lead.get("/api/v1/projects/alpha/members").await.json().await.unwrap();
    let emails: Vec<&str> = listed["members"].as_array().unwrap().iter().map(|m| m["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["lead@alpha.org", "ann@example.org", "lab@alpha.org"]);
    assert_eq!(listed["members"][1]["active"], true);

    let delete = |api: &crate::helpers::Api, path: String| {
        let (http, url, token) = (api.http.clone(), format!("{}{path}", api.app_addr), api.token.clone());
        async move { http.delete(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(&other, format!("/api/v1/projects/alpha/members/{ann}")).await, 404, "another project's lead");
    assert_eq!(other.get("/api/v1/projects/alpha/members").await.status(), 404);
    assert_eq!(delete(&labeller, format!("/api/v1/projects/alpha/members/{ann}")).await, 403, "a labeller");
    assert_eq!(labeller.get("/api/v1/projects/alpha/members").await.status(), 403);
    assert_eq!(delete(&lead, format!("/api/v1/projects/alpha/members/{ann}")).await, 200);
    assert_eq!(delete(&lead, format!("/api/v1/projects/alpha/members/{ann}")).await, 404, "no longer a member");
    assert_eq!(delete(&lead, "/api/v1/projects/alpha/members/nonsense".into()).await, 404);
    let me: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'lead@alpha.org'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(delete(&lead, format!("/api/v1/projects/alpha/members/{me}")).await, 409, "the last lead stays");
    assert_eq!(app.count("SELECT count(*) FROM memberships m JOIN projects p ON p.id = m.project_id WHERE p.slug = 'alpha'").await, 2);

    // In the browser's form, with its CSRF token.
    let session = app.login("lead@alpha.org", PASSWORD).await;
    let lab: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'lab@alpha.org'").fetch_one(&app.pool).await.unwrap();
    assert_eq!(session.post_form(&format!("/projects/alpha/members/{lab}/remove"), &[("csrf", "stale")]).await.status(), 403);
    let res = session.post_form(&format!("/projects/alpha/members/{lab}/remove"), &[("csrf", session.csrf.as_str())]).await;
    assert_eq!(res.status(), 303);
    let res = session.post_form(&format!("/projects/alpha/members/{me}/remove"), &[("csrf", session.csrf.as_str())]).await;
    assert_eq!(res.status(), 409);
    let other_session = app.login("lead@beta.org", PASSWORD).await;
    let res = other_session.post_form(&format!("/projects/alpha/members/{me}/remove"), &[("csrf", other_session.csrf.as_str())]).await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.count("SELECT count(*) FROM memberships m JOIN projects p ON p.id = m.project_id WHERE p.slug = 'alpha'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_invites_in_the_browser_and_the_invitee_signs_in() {
    let app = spawn_app().await;
    app.user("admin@example.org", true).await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/login", app.addr)).await;
    b.type_into("#email", "admin@example.org").await;
    b.type_into("#password", PASSWORD).await;
    b.click("#sign-in").await;
    b.find("#nav-users").await;
    for width in [1400, 420] {
        b.resize(width, 1000).await;
        b.click("#nav-users").await;
        b.type_into("#new-email", &format!("w{width}@example.org")).await;
        b.click("#create-account").await;
        let link = b.text("#invite-link").await;
        let overflow = b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_f64().unwrap() <= 1.0, "the users page at {width} px overflows by {overflow}");
        b.screenshot(&format!("admin-users-{width}")).await;
        b.goto(&link).await;
        b.wait_for_text("#invite-email", &format!("w{width}@example.org")).await;
        b.type_into("#password", NEW_PASSWORD).await;
        b.type_into("#repeat", NEW_PASSWORD).await;
        b.screenshot(&format!("invite-{width}")).await;
        b.click("#set-password").await;
        b.wait_for_text("#message", "Your password is set").await;
        b.goto(&format!("{}/", app.addr)).await;
        b.find("#nav-users").await;
    }
    b.quit().await;
    app.login("w420@example.org", NEW_PASSWORD).await;
}
