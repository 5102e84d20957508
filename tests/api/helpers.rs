//! `spawn_app()` runs the real server against its own database in the harness's private
//! cluster, which a watchdog stops when the test process exits.

use std::path::PathBuf;
use std::sync::OnceLock;

use rewardlab::cluster::Cluster;
use rewardlab::db::{projects as dbp, users};
use rewardlab::domain::{Email, Guidelines, NewProject, Overlap, Role, TaskKind, UserId};
use rewardlab::settings::{Secret, WebOptions};
use rewardlab::startup::Application;
use rewardlab::web::auth::{hash_password, keyed_hash, random_secret, Cookies};
use rewardlab::web::AppState;
use serde_json::Value;
use sqlx::{Connection, PgPool};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{}", std::process::id()));
        let cluster = Cluster::new(&dir).expect("cluster directory");
        cluster.ensure_running().expect("the test cluster starts");
        cluster.stop_when_process_exits(std::process::id(), true).expect("watchdog");
        cluster
    })
}

/// A migrated template database; each test copies it.
async fn template() -> &'static Cluster {
    let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
    TEMPLATE
        .get_or_init(|| async {
            rewardlab::settings::ensure_database(cluster, "rl_template").await.unwrap();
            let pool = PgPool::connect_with(cluster.connect_options("rl_template")).await.unwrap();
            rewardlab::db::migrate(&pool).await.unwrap();
            pool.close().await;
        })
        .await;
    cluster
}

pub struct TestApp {
    pub addr: String,
    /// A `DATABASE_URL` for this test's database, for the command line.
    pub db_url: String,
    pub pool: PgPool,
    pub key: Vec<u8>,
    pub http: reqwest::Client,
    /// The server's state (its sign-in password check count, its cookies).
    pub state: actix_web::web::Data<AppState>,
    /// This server's upload directory.
    pub tmp: PathBuf,
    /// The server's request metrics (for a separate metrics server).
    pub metrics: actix_web::web::Data<rewardlab::web::metrics::Metrics>,
}

/// The server as the tests usually see it: HTTPS semantics (Secure `__Host-` cookies).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(WebOptions::default()).await
}

pub async fn spawn_app_with(web: WebOptions) -> TestApp {
    let cluster = template().await;
    let db = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres")).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db} TEMPLATE rl_template")).execute(&mut admin).await.unwrap();
    admin.close().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect_with(cluster.connect_options(&db)).await.unwrap();
    let key = random_secret("").into_bytes();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("uploads").join(&db);
    let app = Application::build(pool.clone(), Secret::new(key.clone()), "127.0.0.1:0", tmp.clone(), Some(2), web).unwrap();
    let addr = format!("http://127.0.0.1:{}", app.port);
    tokio::spawn(app.server);
    // Idle connections are dropped before the server's keep-alive (5 s) closes them: a request
    // sent on a connection the server is closing at that moment fails with IncompleteMessage.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_idle_timeout(std::time::Duration::from_secs(2)).build().unwrap();
    TestApp { addr, db_url: cluster.url(&db), pool, key, http, state: app.state, tmp, metrics: app.metrics }
}

impl TestApp {
    /// A second `serve` on this test's database: its own connection pool, upload folder, submit
    /// queue and port, sharing only the database and the secret key, as two processes behind a
    /// load balancer do.
    pub async fn second_server(&self) -> TestApp {
        let opts: sqlx::postgres::PgConnectOptions = self.db_url.parse().unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect_with(opts).await.unwrap();
        self.server_on(pool, "second")
    }

    /// Another server on `pool` (this test's database, maybe through a pooler), with its own
    /// upload folder named by `name`.
    pub fn server_on(&self, pool: PgPool, name: &str) -> TestApp {
        let tmp = self.tmp.with_extension(name);
        let app = Application::build(pool.clone(), Secret::new(self.key.clone()), "127.0.0.1:0", tmp.clone(), Some(2), self.state.web.clone()).unwrap();
        let addr = format!("http://127.0.0.1:{}", app.port);
        tokio::spawn(app.server);
        TestApp { addr, db_url: self.db_url.clone(), pool, key: self.key.clone(), http: self.http.clone(), state: app.state, tmp, metrics: app.metrics }
    }
}

pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    pub async fn user(&self, email: &str, admin: bool) -> UserId {
        let hash = hash_password(PASSWORD.into()).await.unwrap();
        let mut conn = self.pool.acquire().await.unwrap();
        users::insert(&mut conn, &Email::parse(email).unwrap(), &hash, admin).await.unwrap().unwrap()
    }

    pub async fn token(&self, user: UserId) -> String {
        let token = random_secret("rl_");
        let mut conn = self.pool.acquire().await.unwrap();
        users::insert_token(&mut conn, user, "test", &keyed_hash(&self.key, &token)).await.unwrap();
        token
    }

    /// A user with a token who is `role` in project `slug`.
    pub async fn member(&self, email: &str, slug: &str, role: Role) -> Api {
        let id = self.user(email, false).await;
        let mut conn = self.pool.acquire().await.unwrap();
        let p = dbp::by_slug_for_cli(&mut conn, slug).await.unwrap().unwrap();
        dbp::set_member(&mut conn, p.id, id, role).await.unwrap();
        Api { app_addr: self.addr.clone(), token: self.token(id).await, http: self.http.clone() }
    }

    pub async fn project(&self, slug: &str, kind: TaskKind, overlap: i32) {
        let mut conn = self.pool.acquire().await.unwrap();
        let mut new = NewProject::parse(slug, "Test project", kind.as_str()).unwrap();
        new.overlap = Overlap::parse(overlap).unwrap();
        new.rating_enabled = true;
        new.guidelines = Guidelines::new("Be **kind**.");
        dbp::insert(&mut conn, &new).await.unwrap().unwrap();
    }

    /// Project `slug` with a lead (returned) and `n` items of `k` responses.
    pub async fn lead_with_items(&self, slug: &str, kind: TaskKind, overlap: i32, n: usize, k: usize) -> Api {
        self.project(slug, kind, overlap).await;
        let lead = self.member(&format!("lead@{slug}.org"), slug, Role::Lead).await;
        assert_eq!(lead.post_bytes(&format!("/api/v1/projects/{slug}/items"), items_jsonl(n, k, slug)).await.status(), 200);
        lead
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    pub fn cookies(&self) -> Cookies {
        self.state.cookies
    }

    /// Fills in and posts the login form like a browser.
    pub async fn attempt_login(&self, email: &str, password: &str) -> reqwest::Response {
        self.attempt_login_with(email, password, &[]).await
    }

    /// Fills in and posts the login form with extra request headers (Host, Origin, X-Forwarded-For…).
    pub async fn attempt_login_with(&self, email: &str, password: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let login = self.cookies().login_name();
        let mut get = self.http.get(format!("{}/login", self.addr));
        let mut post = self.http.post(format!("{}/login", self.addr));
        for (k, v) in headers {
            get = get.header(*k, *v);
            post = post.header(*k, *v);
        }
        let page = get.send().await.unwrap();
        let pre = cookie_value(&page, login).expect("login cookie");
        let csrf = hidden_csrf(&page.text().await.unwrap());
        post.header("Cookie", format!("{login}={pre}")).form(&[("csrf", csrf.as_str()), ("email", email), ("password", password)]).send().await.unwrap()
    }

    /// Signs in through the login form like a browser; returns the session.
    pub async fn login(&self, email: &str, password: &str) -> Session {
        let res = self.attempt_login(email, password).await;
        assert_eq!(res.status(), 303, "login of {email} failed");
        let cookie_name = self.cookies().session_name();
        let cookie = cookie_value(&res, cookie_name).expect("session cookie");
        let mut s = Session { addr: self.addr.clone(), cookie_name, cookie, csrf: String::new(), http: self.http.clone() };
        s.csrf = hidden_csrf(&s.get("/account").await.text().await.unwrap());
        s
    }
}

pub fn cookie_value(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

pub fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// A browser-like session: the session cookie and its CSRF token.
pub struct Session {
    pub addr: String,
    pub cookie_name: &'static str,
    pub cookie: String,
    pub csrf: String,
    pub http: reqwest::Client,
}

impl Session {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.addr)).header("Cookie", format!("{}={}", self.cookie_name, self.cookie)).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.post_form_with(path, fields, &[]).await
    }

    pub async fn post_form_with(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.addr)).header("Cookie", format!("{}={}", self.cookie_name, self.cookie));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.form(fields).send().await.unwrap()
    }
}

/// A script's view: a bearer token.
#[derive(Clone)]
pub struct Api {
    pub app_addr: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.app_addr)).bearer_auth(&self.token).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.app_addr)).bearer_auth(&self.token).json(body).send().await.unwrap()
    }

    /// DELETE; answers the status.
    pub async fn delete_path(&self, path: &str) -> u16 {
        self.http.delete(format!("{}{path}", self.app_addr)).bearer_auth(&self.token).send().await.unwrap().status().as_u16()
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.app_addr)).bearer_auth(&self.token).body(body).send().await.unwrap()
    }

    pub async fn next_task(&self, slug: &str) -> Option<Value> {
        let res = self.post(&format!("/api/v1/projects/{slug}/tasks/next"), &Value::Null).await;
        match res.status().as_u16() {
            200 => Some(res.json().await.unwrap()),
            204 => None,
            s => panic!("tasks/next answered {s}: {}", res.text().await.unwrap()),
        }
    }

    /// Submits the task's responses ranked in the order shown.
    pub async fn submit_in_order(&self, task: &Value, key: &str) -> reqwest::Response {
        let ranking: Vec<Vec<Value>> = task["responses"].as_array().unwrap().iter().map(|r| vec![r["id"].clone()]).collect();
        self.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &serde_json::json!({"idempotency_key": key, "ranking": ranking}))
            .await
    }
}

/// Lines of `n` ranking items with `k` responses each, models m0..m(k-1).
pub fn items_jsonl(n: usize, k: usize, tag: &str) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let responses: Vec<Value> = (0..k).map(|j| serde_json::json!({"model": format!("m{j}"), "text": format!("{tag} answer {j} to {i}")})).collect();
        out.push_str(&serde_json::json!({"id": format!("{tag}-{i}"), "prompt": format!("{tag} question {i}"), "responses": responses}).to_string());
        out.push('\n');
    }
    out.into_bytes()
}

pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}
