use rewardlab::domain::login::FREE_ATTEMPTS;
use rewardlab::domain::{Role, TaskKind};
use rewardlab::settings::WebOptions;

use crate::helpers::{items_jsonl, spawn_app, spawn_app_with, Session, PASSWORD};
use crate::webdriver::Browser;

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
    let res = s
        .http
        .post(format!("{}/api/v1/projects", s.addr))
        .header("Cookie", format!("__Host-rl_session={}", s.cookie))
        .json(&serde_json::json!({"slug": "evil", "name": "Evil", "kind": "ranking"}))
        .send()
        .await
        .unwrap();
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

/// Every `Set-Cookie` header of a response whose cookie is named `name`, whole.
fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with(&format!("{name}="))).map(str::to_string)
}

fn plain_http(public_url: Option<&str>, proxy_header: Option<&str>) -> WebOptions {
    WebOptions::parse(public_url, proxy_header).unwrap()
}

#[tokio::test]
async fn over_plain_http_a_team_signs_in_from_another_host_with_plain_cookies() {
    let app = spawn_app_with(plain_http(Some("http://rewardlab.test:8080"), None)).await;
    app.user("ann@example.org", false).await;
    let from_lan = [("Host", "rewardlab.test:8080"), ("Origin", "http://rewardlab.test:8080")];
    let page = app.http.get(format!("{}/login", app.addr)).header("Host", "rewardlab.test:8080").send().await.unwrap();
    let pre = set_cookie(&page, "rl_login").expect("a plain sign-in cookie");
    assert!(!pre.contains("Secure") && pre.contains("HttpOnly") && pre.contains("Path=/"), "{pre}");

    let res = app.attempt_login_with("ann@example.org", PASSWORD, &from_lan).await;
    assert_eq!(res.status(), 303, "a sign-in over http from a LAN host name works");
    let session = set_cookie(&res, "rl_session").expect("a plain session cookie");
    assert!(!session.contains("Secure") && session.contains("HttpOnly") && session.contains("Path=/"), "{session}");
    let gone = set_cookie(&res, "rl_login").expect("the sign-in cookie is deleted");
    assert!(gone.contains("Max-Age=0") && gone.contains("Path=/") && !gone.contains("Secure"), "{gone}");
    assert!(res.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().starts_with("__Host-")));

    let s = app.login("ann@example.org", PASSWORD).await;
    assert_eq!(s.get("/account").await.status(), 200);
    let out = s.post_form_with("/logout", &[("csrf", &s.csrf)], &from_lan).await;
    assert_eq!(out.status(), 303);
    let deleted = set_cookie(&out, "rl_session").unwrap();
    assert!(deleted.contains("Max-Age=0") && deleted.contains("Path=/") && !deleted.contains("Secure"), "{deleted}");
    assert_eq!(s.get("/account").await.status(), 303);
}

#[tokio::test]
async fn over_https_the_cookies_are_secure_host_cookies_and_are_deleted_as_they_were_set() {
    let app = spawn_app_with(plain_http(Some("https://labels.example.org"), None)).await;
    app.user("ann@example.org", false).await;
    let page = app.http.get(format!("{}/login", app.addr)).send().await.unwrap();
    let pre = set_cookie(&page, "__Host-rl_login").unwrap();
    assert!(pre.contains("Secure") && pre.contains("Path=/") && !pre.contains("Domain"), "{pre}");
    let origin = [("Origin", "https://labels.example.org")];
    let res = app.attempt_login_with("ann@example.org", PASSWORD, &origin).await;
    assert_eq!(res.status(), 303);
    assert!(set_cookie(&res, "__Host-rl_session").unwrap().contains("Secure"));
    let gone = set_cookie(&res, "__Host-rl_login").unwrap();
    assert!(
        gone.contains("Max-Age=0") && gone.contains("Secure") && gone.contains("Path=/"),
        "the sign-in cookie is deleted with the attributes it was set with: {gone}"
    );

    let s = app.login("ann@example.org", PASSWORD).await;
    let out = s.post_form_with("/logout", &[("csrf", &s.csrf)], &origin).await;
    assert_eq!(out.status(), 303);
    let deleted = set_cookie(&out, "__Host-rl_session").unwrap();
    assert!(deleted.contains("Max-Age=0") && deleted.contains("Secure") && deleted.contains("Path=/"), "{deleted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_over_plain_http_on_a_local_network_name_and_submits_forms() {
    // What `rewardlab serve --bind 0.0.0.0:PORT` gives: http, no fixed origin.
    let app = spawn_app_with(plain_http(None, None)).await;
    app.project("lan", TaskKind::Ranking, 1).await;
    app.member("lab@example.org", "lan", Role::Labeller).await;
    let b = Browser::start_with(&["--host-resolver-rules=MAP rewardlab.test 127.0.0.1", "--disable-features=HttpsUpgrades"]).await;
    let base = app.addr.replace("127.0.0.1", "rewardlab.test");
    b.sign_in(&base, "lab@example.org").await;
    // A form post from the page passes the CSRF and Origin checks.
    b.goto(&format!("{base}/account")).await;
    b.type_into("form[action='/account/tokens'] input[name=name]", "laptop").await;
    b.click("form[action='/account/tokens'] button").await;
    assert!(b.text("#new-token").await.starts_with("rl_"));
    b.click("header form button").await;
    b.find("#sign-in").await;
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 0, "signed out");
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_sign_ins_check_no_more_passwords_than_the_limit() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    let wrong = futures_util::future::join_all((0..32).map(|_| app.attempt_login("ann@example.org", "a wrong password")));
    let right = async {
        // Fired while the wrong ones are still in flight, once the limit is taken.
        while app.count("SELECT count(*) FROM login_attempts").await < FREE_ATTEMPTS {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        app.attempt_login("ann@example.org", PASSWORD).await.status()
    };
    let (wrong, right) = tokio::join!(wrong, right);
    let statuses: Vec<u16> = wrong.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 401).count() as i64, FREE_ATTEMPTS, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count() as i64, 32 - FREE_ATTEMPTS, "{statuses:?}");
    assert_eq!(right, 429, "the right password beyond the limit is not checked");
    assert_eq!(app.state.login_checks.count() as i64, FREE_ATTEMPTS, "passwords checked");
    assert_eq!(app.count("SELECT count(*) FROM login_attempts").await, FREE_ATTEMPTS, "attempts reserved");
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 0);
}

#[tokio::test]
async fn the_owner_still_signs_in_from_elsewhere_while_an_attacker_is_throttled() {
    let app = spawn_app_with(WebOptions { client_ip_header: Some("x-forwarded-for".parse().unwrap()), ..WebOptions::default() }).await;
    app.user("ann@example.org", false).await;
    let attacker = [("X-Forwarded-For", "203.0.113.7")];
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(app.attempt_login_with("ann@example.org", "a wrong password", &attacker).await.status(), 401);
    }
    assert_eq!(app.attempt_login_with("ann@example.org", PASSWORD, &attacker).await.status(), 429);
    // The proxy appends the address it saw: what the client wrote before it counts for nothing.
    let spoofing = [("X-Forwarded-For", "198.51.100.2, 203.0.113.7")];
    assert_eq!(app.attempt_login_with("ann@example.org", PASSWORD, &spoofing).await.status(), 429);
    let owner = [("X-Forwarded-For", "198.51.100.2")];
    assert_eq!(app.attempt_login_with("ann@example.org", PASSWORD, &owner).await.status(), 303, "the owner is not locked out");
    let addresses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT address FROM login_attempts ORDER BY 1").fetch_all(&app.pool).await.unwrap();
    assert_eq!(addresses, ["198.51.100.2", "203.0.113.7"]);
}

#[tokio::test]
async fn a_forwarded_for_header_is_ignored_unless_a_proxy_header_is_configured() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    for i in 0..FREE_ATTEMPTS {
        let spoof = format!("192.0.2.{i}");
        assert_eq!(app.attempt_login_with("ann@example.org", "a wrong password", &[("X-Forwarded-For", &spoof)]).await.status(), 401);
    }
    let res = app.attempt_login_with("ann@example.org", PASSWORD, &[("X-Forwarded-For", "192.0.2.99")]).await;
    assert_eq!(res.status(), 429, "a made-up address does not escape the throttle");
    assert!(res.text().await.unwrap().contains("Too many failed sign-ins; try again in"));
    let addresses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT address FROM login_attempts").fetch_all(&app.pool).await.unwrap();
    assert_eq!(addresses, ["127.0.0.1"]);
}

#[tokio::test]
async fn an_unknown_email_costs_the_same_password_check_as_a_wrong_password() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    assert_eq!(app.state.login_checks.count(), 0);
    assert_eq!(app.attempt_login("nobody@example.org", PASSWORD).await.status(), 401);
    assert_eq!(app.state.login_checks.count(), 1, "an unknown account is checked against the dummy hash");
    assert_eq!(app.attempt_login("not an email", PASSWORD).await.status(), 401);
    assert_eq!(app.state.login_checks.count(), 2);
    assert_eq!(app.attempt_login("ann@example.org", "a wrong password").await.status(), 401);
    assert_eq!(app.state.login_checks.count(), 3);
    assert_eq!(app.attempt_login("ann\u{0}@example.org", PASSWORD).await.status(), 401, "a NUL is no email, not a 500");
    assert_eq!(app.state.login_checks.count(), 4);
    assert_eq!(app.count("SELECT count(*) FROM login_attempts WHERE outcome = 'failed'").await, 4);
}

#[tokio::test]
async fn a_password_change_revokes_the_api_tokens_when_asked() {
    let app = spawn_app().await;
    let ann = app.user("ann@example.org", false).await;
    let token = app.token(ann).await;
    let api_status = |t: String| app.http.get(format!("{}/api/v1/projects", app.addr)).bearer_auth(t).send();
    let s = app.login("ann@example.org", PASSWORD).await;
    let page = s.get("/account").await.text().await.unwrap();
    assert!(page.contains("name=\"revoke_tokens\""), "the form offers it");
    let res = s.post_form("/account/password", &[("csrf", &s.csrf), ("current", PASSWORD), ("new", "a second long password")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(api_status(token.clone()).await.unwrap().status(), 200, "unticked: tokens stay");
    let s = app.login("ann@example.org", "a second long password").await;
    let res = s
        .post_form("/account/password", &[("csrf", &s.csrf), ("current", "a second long password"), ("new", "a third long password"), ("revoke_tokens", "on")])
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(api_status(token).await.unwrap().status(), 401, "ticked: tokens are revoked");
    assert_eq!(s.get("/account").await.status(), 303, "sessions end either way");
}

#[tokio::test]
async fn an_admin_password_reset_revokes_every_session_and_token() {
    let app = spawn_app().await;
    let ann = app.user("ann@example.org", false).await;
    let token = app.token(ann).await;
    let s = app.login("ann@example.org", PASSWORD).await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("reset-{}", uuid::Uuid::new_v4().simple()));
    let reset = |stdin: &str, email: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rewardlab"))
            .args(["user", "reset-password", "--email", email, "--password-stdin"])
            .env("DATABASE_URL", &app.db_url)
            .env("REWARDLAB_DATA", &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let common = reset("1234567890\n", "ann@example.org");
    assert!(!common.status.success() && String::from_utf8_lossy(&common.stderr).contains("common"), "{common:?}");
    assert_eq!(s.get("/account").await.status(), 200, "a refused reset changes nothing");
    let nobody = reset("a fresh long password\n", "nobody@example.org");
    assert!(!nobody.status.success() && String::from_utf8_lossy(&nobody.stderr).contains("no account"));
    let out = reset("a fresh long password\n", "Ann@Example.org");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.get("/account").await.status(), 303, "the session ended");
    let res = app.http.get(format!("{}/api/v1/projects", app.addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 401, "the token is revoked");
    assert_eq!(app.attempt_login("ann@example.org", PASSWORD).await.status(), 401);
    app.login("ann@example.org", "a fresh long password").await;
}

#[tokio::test]
async fn a_common_password_is_refused_whatever_its_case() {
    let app = spawn_app().await;
    app.user("ann@example.org", false).await;
    let s = app.login("ann@example.org", PASSWORD).await;
    let res = s.post_form("/account/password", &[("csrf", &s.csrf), ("current", PASSWORD), ("new", "QwertyUiop")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("most common passwords"));
    assert_eq!(s.get("/account").await.status(), 200, "nothing changed");
}

#[tokio::test]
async fn a_removed_labeller_cannot_skip_a_task_they_held() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/alpha/items", items_jsonl(2, 2, "a")).await.status(), 200);
    let gone = app.member("gone@example.org", "alpha", Role::Labeller).await;
    let task = gone.next_task("alpha").await.unwrap();
    sqlx::query("DELETE FROM memberships m USING users u WHERE u.id = m.user_id AND u.email = 'gone@example.org'").execute(&app.pool).await.unwrap();
    let res = gone.post(&format!("/api/v1/tasks/{}/skip", task["task_id"].as_str().unwrap()), &serde_json::json!({"reason": "not mine"})).await;
    assert_eq!(res.status(), 404);
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE status = 'skipped'").await, 0);
    // A member still can.
    let lab = app.member("lab@example.org", "alpha", Role::Labeller).await;
    let task = lab.next_task("alpha").await.unwrap();
    assert_eq!(lab.post(&format!("/api/v1/tasks/{}/skip", task["task_id"].as_str().unwrap()), &serde_json::json!({"reason": "unsure"})).await.status(), 200);
}

async fn create_project(s: &Session, slug: &str, origin: &str) -> u16 {
    let fields = [("csrf", s.csrf.as_str()), ("slug", slug), ("name", "P"), ("kind", "ranking")];
    s.post_form_with("/projects", &fields, &[("Origin", origin)]).await.status().as_u16()
}

#[tokio::test]
async fn a_state_changing_request_from_another_origin_is_refused() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    sqlx::query("UPDATE users SET is_admin = true").execute(&app.pool).await.unwrap();
    let s = app.login("lead@example.org", PASSWORD).await;
    assert_eq!(create_project(&s, "evil", "https://evil.example").await, 403);
    assert_eq!(create_project(&s, "evil2", "null").await, 403);
    assert_eq!(create_project(&s, "good", &app.addr).await, 303, "the server's own origin passes");
    let res = s
        .http
        .post(format!("{}/api/v1/projects", s.addr))
        .header("Cookie", format!("__Host-rl_session={}", s.cookie))
        .header("X-CSRF-Token", &s.csrf)
        .header("Origin", "https://evil.example")
        .json(&serde_json::json!({"slug": "evil3", "name": "Evil", "kind": "ranking"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a cookie-authenticated API call too");
    assert_eq!(app.attempt_login_with("lead@example.org", PASSWORD, &[("Origin", "https://evil.example")]).await.status(), 403, "and the sign-in form");
    // A token is no ambient authority: a script's call is not judged by its Origin.
    let res = lead
        .http
        .post(format!("{}/api/v1/projects", lead.app_addr))
        .bearer_auth(&lead.token)
        .header("Origin", "https://evil.example")
        .json(&serde_json::json!({"slug": "scripted", "name": "S", "kind": "ranking"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let slugs: Vec<String> = sqlx::query_scalar("SELECT slug FROM projects ORDER BY slug").fetch_all(&app.pool).await.unwrap();
    assert_eq!(slugs, ["alpha", "good", "scripted"]);

    // With a public URL, its origin is the one that counts, not the Host a request names.
    let app = spawn_app_with(plain_http(Some("http://rewardlab.test"), None)).await;
    app.user("ann@example.org", false).await;
    assert_eq!(app.attempt_login_with("ann@example.org", PASSWORD, &[("Origin", &app.addr)]).await.status(), 403);
    assert_eq!(app.attempt_login_with("ann@example.org", PASSWORD, &[("Origin", "http://rewardlab.test")]).await.status(), 303);
}

#[tokio::test]
async fn uploads_are_private_while_they_stream_in() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "alpha", Role::Lead).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.tmp), 0o700);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }));
    let upload = tokio::spawn(lead.http.post(format!("{}/api/v1/projects/alpha/items", lead.app_addr)).bearer_auth(&lead.token).body(body).send());
    let lines = items_jsonl(4, 2, "u");
    let (first, rest) = lines.split_at(lines.len() / 2);
    tx.send(Ok(first.to_vec())).await.unwrap();
    let file = loop {
        if let Some(entry) = std::fs::read_dir(&app.tmp).unwrap().next() {
            break entry.unwrap().path();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    tx.send(Ok(rest.to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(upload.await.unwrap().unwrap().status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM items").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_its_model_store_and_what_its_trainer_writes_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.project("pairs", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "pairs", Role::Lead).await;
    let pairs: String = (0..3).map(|i| format!("{}\n", serde_json::json!({"prompt": format!("Q{i}"), "chosen": "yes", "rejected": "no"}))).collect();
    assert_eq!(lead.post_bytes("/api/v1/projects/pairs/items", pairs.into_bytes()).await.status(), 200);
    let run = lead.post("/api/v1/projects/pairs/runs", &serde_json::json!({"kind": "rm"})).await.json::<serde_json::Value>().await.unwrap();
    let run = run["id"].as_str().unwrap().to_string();

    // A stand-in trainer that writes a file the way the real one writes a model, then fails.
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch).unwrap();
    let trainer = scratch.join("trainer.sh");
    std::fs::write(&trainer, "#!/bin/sh\necho weights > \"$0.model\"\nexit 1\n").unwrap();
    std::fs::set_permissions(&trainer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = scratch.join("store");
    let opts = rewardlab::jobs::worker::WorkerOpts {
        name: "private".into(),
        store: store.clone(),
        trainer: trainer.clone(),
        mpirun: None,
        lease: std::time::Duration::from_secs(30),
        poll: std::time::Duration::from_secs(1),
        once: true,
    };
    rewardlab::jobs::worker::run_worker(app.pool.clone(), opts).await.unwrap();
    assert_eq!(app.count(&format!("SELECT count(*) FROM runs WHERE id = '{run}' AND status = 'failed'")).await, 1, "the stand-in ran and failed");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("runs")), 0o700);
    assert_eq!(mode(&store.join("runs").join(&run)), 0o700);
    assert_eq!(mode(&store.join("runs").join(&run).join("attempt-1")), 0o700);
    let input = store.join("runs").join(&run).join("input");
    assert_eq!(mode(&input), 0o700);
    for file in std::fs::read_dir(&input).unwrap() {
        assert_eq!(mode(&file.unwrap().path()), 0o600, "the exported input");
    }
    assert_eq!(mode(&scratch.join("trainer.sh.model")), 0o600, "what the trainer writes");
}
