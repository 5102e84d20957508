use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::helpers::spawn_app;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_rewardlab");

pub(crate) fn run(db_url: &str, data_dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("REWARDLAB_DATA", data_dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if db_url.is_empty() {
        cmd.env_remove("DATABASE_URL");
    } else {
        cmd.env("DATABASE_URL", db_url);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_command_line_creates_accounts_projects_imports_and_exports() {
    let app = spawn_app().await;
    let dir = scratch("cli");
    // The API and the CLI must agree on the session key for tokens.
    std::fs::write(dir.join("session.key"), &app.key).unwrap();
    let url = app.db_url.clone();
    let cli = |args: &[&str], stdin: Option<&str>| run(&url, &dir, args, stdin);

    let out = ok(&cli(&["user", "add", "--email", "Lead@Example.org", "--admin"], None));
    assert!(out.contains("password (shown once): "), "{out}");
    ok(&cli(&["user", "add", "--email", "ann@example.org", "--password-stdin"], Some("a long enough password\n")));
    let short = cli(&["user", "add", "--email", "bob@example.org", "--password-stdin"], Some("short"));
    assert!(!short.status.success() && String::from_utf8_lossy(&short.stderr).contains("at least 10"));
    let dup = cli(&["user", "add", "--email", "ann@example.org", "--password-stdin"], Some("another long password"));
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("exists"));

    ok(&cli(&["project", "create", "--slug", "demo", "--name", "Demo", "--kind", "ranking", "--overlap", "1"], None));
    let bad_kind = cli(&["project", "create", "--slug", "x2", "--name", "X", "--kind", "grading"], None);
    assert!(String::from_utf8_lossy(&bad_kind.stderr).contains("ranking, pairwise or demonstration"));
    ok(&cli(&["project", "add-member", "--project", "demo", "--email", "lead@example.org", "--role", "lead"], None));
    let nobody = cli(&["project", "add-member", "--project", "demo", "--email", "nobody@example.org", "--role", "labeller"], None);
    assert!(!nobody.status.success());

    let items = dir.join("items.jsonl");
    std::fs::write(&items, crate::helpers::items_jsonl(12, 3, "cli")).unwrap();
    let out = ok(&cli(&["import", "--project", "demo", items.to_str().unwrap()], None));
    assert!(out.contains("imported 12 items"), "{out}");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"p\", \"responses\": [{\"text\": \"a\"}, {\"text\": \"b\"}]}\n{\"prompt\": 5}\n").unwrap();
    let out = cli(&["import", "--project", "demo", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: field \"prompt\""), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.count("SELECT count(*) FROM items").await, 12);

    // The token printed on the last line works against the API.
    let out = ok(&cli(&["token", "create", "--email", "lead@example.org"], None));
    let token = out.lines().last().unwrap().to_string();
    let api = crate::helpers::Api { app_addr: app.addr.clone(), token, http: app.http.clone() };
    let task = api.next_task("demo").await.unwrap();
    assert_eq!(api.submit_in_order(&task, "k").await.status(), 201);

    let file = dir.join("comparisons.jsonl");
    let out = ok(&cli(&["export", "--project", "demo", "--format", "comparisons", "--out", file.to_str().unwrap()], None));
    assert!(out.contains("3 rows"), "{out}");
    let rows: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    let prefs = dir.join("prefs");
    ok(&cli(&["export", "--project", "demo", "--format", "preferences", "--out", prefs.to_str().unwrap(), "--test-percent", "0"], None));
    assert_eq!(std::fs::read_to_string(prefs.join("train.jsonl")).unwrap().lines().count(), 3);
    assert_eq!(std::fs::read_to_string(prefs.join("test.jsonl")).unwrap(), "");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(prefs.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["schema_version"], 1);
    assert_eq!(manifest["options"]["test_percent"], 0);
    assert_eq!(manifest["features"]["chosen"], serde_json::json!({"dtype": "string", "_type": "Value"}));
    let too_many = cli(&["export", "--project", "demo", "--format", "preferences", "--out", prefs.to_str().unwrap(), "--test-percent", "150"], None);
    assert!(!too_many.status.success());
    assert!(String::from_utf8_lossy(&too_many.stderr).contains("test_percent: expected 0 to 90"), "{}", String::from_utf8_lossy(&too_many.stderr));
}

#[tokio::test]
async fn serve_starts_its_own_cluster_and_stops_it_cleanly_on_sigterm() {
    let dir = scratch("embedded");
    let data = dir.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let serve = || {
        Command::new(BIN)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()])
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let wait_healthy = || async {
        for _ in 0..300 {
            if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
                return res.json::<Value>().await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("serve never answered");
    };
    let mut server = serve();
    assert_eq!(wait_healthy().await["database"], "ok");
    let key = std::fs::metadata(data.join("session.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777, 0o600);
    ok(&run("", &data, &["user", "add", "--email", "kept@example.org", "--password-stdin"], Some("a long enough password")));

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success(), "serve exits cleanly on SIGTERM");
    assert!(!data.join("pg/postmaster.pid").exists(), "the cluster was stopped");

    let mut server = serve();
    wait_healthy().await;
    let out = ok(&run("", &data, &["token", "create", "--email", "kept@example.org"], None));
    assert!(out.lines().last().unwrap().starts_with("rl_"), "the account survived the restart");
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_command_whose_reader_goes_away_still_finishes_without_a_panic() {
    let app = spawn_app().await;
    let dir = scratch("pipe");
    let mut child = Command::new(BIN)
        .args(["user", "add", "--email", "piped@example.org"])
        .env("DATABASE_URL", &app.db_url)
        .env("REWARDLAB_DATA", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -0`: the reader is gone before anything is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(app.count("SELECT count(*) FROM users WHERE email = 'piped@example.org'").await, 1);
}
