//! The embedded cluster's life: shared by every process on a data directory, stopped only by its
//! last user, started again when its postmaster dies, and never left running by a command that
//! failed, was refused or was interrupted.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::cli::{ok, scratch, BIN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(data: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn postmaster_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("pg/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether the data directory's postmaster is alive (a killed one nobody reaped yet, a zombie,
/// is not).
fn cluster_running(data: &Path) -> bool {
    rewardlab::cluster::Cluster::new(data).unwrap().is_running()
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// Polls `/healthz` until the database answers (bounded; a hang fails the test).
async fn wait_healthy(port: u16) {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(res) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            if res.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server on port {port} never became healthy");
}

/// Waits for a child's exit, failing the test if it hangs.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the process never exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_the_cluster_and_the_last_one_out_stops_it() {
    let dir = scratch("shared");
    let data = dir.join("data");
    let (p1, p2) = (free_port(), free_port());
    let mut first = serve(&data, p1);
    wait_healthy(p1).await;
    let mut second = serve(&data, p2);
    wait_healthy(p2).await;
    // A command run beside them neither starts a second cluster nor stops theirs.
    ok(&crate::cli::run("", &data, &["user", "add", "--email", "ann@example.org", "--password-stdin"], Some("a long enough password")));
    assert!(cluster_running(&data));

    signal(&second, "-TERM");
    assert!(wait_exit(&mut second).success());
    assert!(cluster_running(&data), "the first server still uses the cluster");
    wait_healthy(p1).await;
    ok(&crate::cli::run("", &data, &["token", "create", "--email", "ann@example.org"], None));

    signal(&first, "-TERM");
    assert!(wait_exit(&mut first).success());
    assert!(!cluster_running(&data), "the last server out stopped the cluster");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serve_whose_port_is_taken_says_so_and_leaves_no_cluster_running() {
    let dir = scratch("taken");
    let data = dir.join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = serve(&data, taken.local_addr().unwrap().port());
    let status = wait_exit(&mut server);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(data.join("pg/PG_VERSION").exists(), "the cluster had been started");
    assert!(!cluster_running(&data), "and was stopped again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_command_that_fails_its_checks_creates_no_cluster() {
    let dir = scratch("refused");
    let data = dir.join("data");
    for args in [
        vec!["project", "create", "--slug", "demo", "--name", "D", "--kind", "grading"],
        vec!["project", "create", "--slug", "Not A Slug", "--name", "D", "--kind", "ranking"],
        vec!["user", "add", "--email", "not-an-email"],
        vec!["project", "add-member", "--project", "demo", "--email", "a@example.org", "--role", "boss"],
        vec!["import", "--project", "demo", "/nonexistent/items.jsonl"],
        vec!["export", "--project", "demo", "--format", "csv", "--out", "x"],
        vec!["worker", "--once", "--trainer", "/nonexistent/rewardlab-train"],
    ] {
        let out = crate::cli::run("", &data, &args, None);
        assert!(!out.status.success(), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    let worker = crate::cli::run("", &data, &["worker", "--once", "--trainer", "/nonexistent/rewardlab-train"], None);
    let err = String::from_utf8_lossy(&worker.stderr);
    assert!(err.contains("cargo build --release -p rewardlab-trainer") && err.contains("--trainer"), "the worker says how to get its trainer: {err}");
    let short = crate::cli::run("", &data, &["user", "add", "--email", "a@example.org", "--password-stdin"], Some("short"));
    assert!(!short.status.success() && !data.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_command_stores_nothing_and_stops_the_cluster_it_started() {
    let dir = scratch("interrupted");
    let data = dir.join("data");
    ok(&crate::cli::run("", &data, &["project", "create", "--slug", "demo", "--name", "D", "--kind", "ranking"], None));
    assert!(!cluster_running(&data));
    let fifo = dir.join("items.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut import = Command::new(BIN)
        .args(["import", "--project", "demo", fifo.to_str().unwrap()])
        .env("REWARDLAB_DATA", &data)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the pipe for writing returns once the import, connected, opens it to read.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut writer, &crate::helpers::items_jsonl(2000, 2, "fifo")).unwrap();
    assert!(cluster_running(&data));
    signal(&import, "-INT");
    let status = wait_exit(&mut import);
    drop(writer);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut import.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!cluster_running(&data), "the interrupted command stopped the cluster it started");
    let items = dir.join("one.jsonl");
    std::fs::write(&items, crate::helpers::items_jsonl(1, 2, "after")).unwrap();
    let out = ok(&crate::cli::run("", &data, &["import", "--project", "demo", items.to_str().unwrap()], None));
    assert!(out.contains("imported 1 items"), "nothing from the interrupted import was kept: {out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_starts_its_cluster_again_when_the_postmaster_dies_and_keeps_every_acknowledged_judgement() {
    let dir = scratch("supervised");
    let data = dir.join("data");
    let port = free_port();
    let mut server = serve(&data, port);
    wait_healthy(port).await;
    ok(&crate::cli::run("", &data, &["user", "add", "--email", "lead@example.org", "--admin", "--password-stdin"], Some("a long enough password")));
    ok(&crate::cli::run("", &data, &["project", "create", "--slug", "demo", "--name", "D", "--kind", "ranking", "--overlap", "1"], None));
    let items = dir.join("items.jsonl");
    std::fs::write(&items, crate::helpers::items_jsonl(40, 2, "sup")).unwrap();
    ok(&crate::cli::run("", &data, &["import", "--project", "demo", items.to_str().unwrap()], None));
    let token = ok(&crate::cli::run("", &data, &["token", "create", "--email", "lead@example.org"], None)).lines().last().unwrap().to_string();
    let api = crate::helpers::Api { app_addr: format!("http://127.0.0.1:{port}"), token, http: reqwest::Client::new() };

    let mut acknowledged = 0;
    for kill in 0..2 {
        for i in 0..5 {
            let task = api.next_task("demo").await.unwrap();
            let res = api.submit_in_order(&task, &format!("k{kill}-{i}")).await;
            assert_eq!(res.status(), 201);
            acknowledged += 1;
        }
        let pid = postmaster_pid(&data).unwrap();
        assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
        // Nobody but the server starts it again; wait (bounded) for a new postmaster.
        for _ in 0..600 {
            if postmaster_pid(&data).is_some_and(|p| p != pid) && cluster_running(&data) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_ne!(postmaster_pid(&data), Some(pid), "a new postmaster runs");
        wait_healthy(port).await;
    }
    // Every acknowledged judgement survived, and labelling goes on.
    let res = api.post("/api/v1/projects/demo/exports", &json!({"format": "comparisons"})).await;
    assert_eq!(res.status(), 201);
    let export: Value = res.json().await.unwrap();
    let body = api.get(&format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap())).await.text().await.unwrap();
    assert_eq!(body.lines().count(), acknowledged);
    let task = api.next_task("demo").await.unwrap();
    assert_eq!(api.submit_in_order(&task, "after").await.status(), 201);

    // A stop right after a crash neither hangs nor fails, and leaves nothing running.
    let pid = postmaster_pid(&data).unwrap();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    signal(&server, "-TERM");
    let status = wait_exit(&mut server);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!cluster_running(&data));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_an_upload_leaves_no_upload_file_behind() {
    let dir = scratch("upload-stop");
    let data = dir.join("data");
    let port = free_port();
    let mut server = serve(&data, port);
    wait_healthy(port).await;
    ok(&crate::cli::run("", &data, &["user", "add", "--email", "lead@example.org", "--admin", "--password-stdin"], Some("a long enough password")));
    ok(&crate::cli::run("", &data, &["project", "create", "--slug", "demo", "--name", "D", "--kind", "ranking"], None));
    let token = ok(&crate::cli::run("", &data, &["token", "create", "--email", "lead@example.org"], None)).lines().last().unwrap().to_string();
    // A body that sends one chunk and then waits for ever.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    tx.send(Ok(bytes::Bytes::from(crate::helpers::items_jsonl(100, 2, "up")))).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let upload = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/v1/projects/demo/items"))
            .bearer_auth(token)
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    let tmp = data.join("tmp");
    let uploads = || std::fs::read_dir(&tmp).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("upload-")).count()).unwrap_or(0);
    for _ in 0..600 {
        if uploads() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(uploads(), 1, "the upload is being written");
    signal(&server, "-TERM");
    assert!(wait_exit(&mut server).success());
    drop(tx);
    let _ = upload.await;
    assert_eq!(uploads(), 0, "the stopped server removed its upload");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--metrics-bind`, /metrics is served on that address only, not beside the pages.
#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_address_takes_metrics_off_the_page_server() {
    let dir = scratch("metrics-bind");
    let data = dir.join("data");
    let (port, metrics_port) = (free_port(), free_port());
    let mut server = Command::new(BIN)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--data-dir", data.to_str().unwrap()])
        .args(["--metrics-bind", &format!("127.0.0.1:{metrics_port}"), "--metrics-token", "a-metrics-token-of-some-length"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_healthy(port).await;
    let http = reqwest::Client::new();
    let scrape = |p: u16| http.get(format!("http://127.0.0.1:{p}/metrics")).bearer_auth("a-metrics-token-of-some-length").send();
    assert_eq!(scrape(metrics_port).await.unwrap().status(), 200, "the metrics address serves them");
    assert_eq!(scrape(port).await.unwrap().status(), 404, "the page server does not");
    signal(&server, "-TERM");
    assert!(wait_exit(&mut server).success());
    let _ = std::fs::remove_dir_all(&dir);
}
