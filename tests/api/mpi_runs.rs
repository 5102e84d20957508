//! Runs on several processes: a real `rewardlab worker` whose trainer was built with the `mpi`
//! feature runs a 2-process reward model under the real `mpirun` (Open MPI) from the platform to
//! a published model, and a cancelled 2-process run leaves no rank behind. A worker whose
//! trainer lacks `mpi` leaves such runs queued.
//!
//! The api binary's own trainer is built without `mpi`, so these tests are ignored unless run
//! on purpose with `REWARDLAB_MPI_TRAIN` naming an mpi-enabled `rewardlab-train` (`.ci/run`
//! builds one into target/mpi/ and runs `cargo test --test api mpi_runs:: -- --ignored`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rewardlab::domain::{Role, TaskKind};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, TestApp, PASSWORD};
use crate::runs::{log_of, run_json, scratch, tiny, trainer, wait_final};

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab");

/// The mpi-enabled trainer the tests were asked to use.
fn mpi_trainer() -> PathBuf {
    let p = PathBuf::from(std::env::var("REWARDLAB_MPI_TRAIN").expect("REWARDLAB_MPI_TRAIN: an rewardlab-train built with --features mpi"));
    let caps = Command::new(&p).arg("capabilities").output().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(String::from_utf8_lossy(&caps.stdout).lines().any(|l| l == "mpi"), "{} was built without `mpi`", p.display());
    p
}

/// A `rewardlab worker` with `trainer`; SIGKILLed when dropped.
struct Worker(Child);

impl Worker {
    fn command(app: &TestApp, store: &Path, trainer: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--model-store", store.to_str().unwrap(), "--trainer", trainer.to_str().unwrap(), "--name", "mpi-worker"])
            .args(["--lease-secs", "10", "--poll-secs", "0.2"])
            .env("DATABASE_URL", &app.db_url)
            .env("REWARDLAB_DATA", store.join("data"))
            .env("RUST_LOG", "info,sqlx=warn")
            // Containers forbid the cross-memory attach Open MPI's shared memory tries first.
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd
    }

    fn start(app: &TestApp, store: &Path, trainer: &Path) -> Self {
        Self(Self::command(app, store, trainer).spawn().unwrap())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Preference pairs whose chosen response says "kindly".
fn pairs(n: usize) -> Vec<u8> {
    let words = ["river", "stone", "cloud", "paper", "garden", "window", "silver", "orange"];
    let w = |i: usize, k: usize| (0..k).map(|j| words[(i * 7 + j * 3) % words.len()]).collect::<Vec<_>>().join(" ");
    (0..n)
        .map(|i| format!("{}\n", json!({"prompt": format!("Q{i}: {}?", w(i, 3)), "chosen": format!("{} kindly", w(i + 1, 3)), "rejected": w(i + 2, 4)})))
        .collect::<String>()
        .into_bytes()
}

async fn project_with_pairs(app: &TestApp) -> Api {
    app.project("dp", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "dp", Role::Lead).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/dp/items", pairs(48)).await.status(), 200);
    lead
}

async fn start_run(lead: &Api, config: Value) -> String {
    let res = lead.post("/api/v1/projects/dp/runs", &json!({"kind": "rm", "config": config})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Processes whose command line names run `id`: (pid, argv[0]).
fn processes_of(id: &str) -> Vec<(String, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            args.iter().any(|a| a.contains(id)).then(|| (e.file_name().to_string_lossy().into_owned(), args[0].clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Open MPI and REWARDLAB_MPI_TRAIN (an rewardlab-train built with --features mpi); .ci/run runs it"]
async fn a_worker_trains_a_reward_model_on_two_processes_under_mpirun_from_the_platform() {
    let mpi = mpi_trainer();
    let app = spawn_app().await;
    let lead = project_with_pairs(&app).await;
    let store = scratch("mpi-store");
    let id = start_run(&lead, tiny(json!({"epochs": 2, "lr": 0.003, "batch_size": 8, "val_fraction": 0.25, "processes": 2}))).await;

    // A worker whose trainer was built without `mpi` leaves the run to another and exits.
    let plain = Worker::command(&app, &store, &trainer()).arg("--once").status().unwrap();
    assert!(plain.success());
    assert_eq!(run_json(&lead, &id).await["status"], "queued", "a worker without mpi does not take a 2-process run");

    let _w = Worker::start(&app, &store, &mpi);
    let run = wait_final(&app, &lead, &id, Duration::from_secs(300)).await;
    let log = log_of(&app, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}\n{log}");
    assert!(log.contains("$ mpirun -np 2 --oversubscribe --bind-to none --tag-output rewardlab-train rm"), "{log}");
    for rank in 0..2 {
        assert!(log.contains(&format!("[rank {rank}] reward model:")), "rank {rank}'s lines are in the log:\n{log}");
    }
    // Rank 0's metrics only: one line a step, each step once.
    let (lines, steps): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT step) FROM run_metrics WHERE run_id = $1::uuid AND event = 'step'")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(steps >= 4 && lines == steps, "{lines} step lines for {steps} steps");
    assert!(!log.lines().any(|l| l.starts_with("[rank") && l.contains("{\"event\"")), "no metric line went to the log:\n{log}");
    // The model is published and scored the project's responses.
    let model_dir = PathBuf::from(run["model_dir"].as_str().unwrap());
    assert!(model_dir.join("model.safetensors").exists() && model_dir.join("config.json").exists(), "{}", model_dir.display());
    assert!(app.count("SELECT count(*) FROM response_scores").await > 0 || run["summary"].is_object(), "{run}");

    // The run page shows the ranks and their throughput.
    let session = app.login("lead@example.org", PASSWORD).await;
    let page = session.get(&format!("/projects/dp/runs/{id}")).await.text().await.unwrap();
    let text = |id: &str| page.split(&format!("id=\"{id}\">")).nth(1).and_then(|rest| rest.split('<').next()).unwrap_or_default().to_string();
    assert_eq!(text("run-ranks"), "2 processes");
    let throughput = text("run-throughput");
    assert!(throughput.contains(" tokens/s") && throughput.contains(" examples/s"), "{throughput:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Open MPI and REWARDLAB_MPI_TRAIN (an rewardlab-train built with --features mpi); .ci/run runs it"]
async fn cancelling_a_two_process_run_stops_every_rank() {
    let mpi = mpi_trainer();
    let app = spawn_app().await;
    let lead = project_with_pairs(&app).await;
    let store = scratch("mpi-store");
    let id = start_run(&lead, tiny(json!({"epochs": 5000, "processes": 2}))).await;
    let _w = Worker::start(&app, &store, &mpi);

    // Training: both ranks are up and rank 0 streams metrics.
    let started = Instant::now();
    let ranks = loop {
        let ranks: Vec<(String, String)> = processes_of(&id).into_iter().filter(|(_, argv0)| argv0.ends_with("rewardlab-train")).collect();
        let metrics = app.count(&format!("SELECT count(*) FROM run_metrics WHERE run_id = '{id}'")).await;
        if ranks.len() == 2 && metrics > 0 {
            break ranks;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "ranks {ranks:?}, {metrics} metric lines\n{}", log_of(&app, &id).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(processes_of(&id).iter().any(|(_, argv0)| argv0.ends_with("mpirun")), "the ranks run under mpirun");

    assert_eq!(lead.post(&format!("/api/v1/runs/{id}/cancel"), &Value::Null).await.status(), 200);
    let started = Instant::now();
    while !processes_of(&id).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "still running after the cancel: {:?} (ranks were {ranks:?})", processes_of(&id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = run_json(&lead, &id).await;
    assert_eq!(run["status"], "cancelled");
    assert!(run["model_dir"].is_null(), "nothing published: {run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_and_hosts_are_refused_naming_the_field_by_the_api_and_the_form() {
    let app = spawn_app().await;
    let lead = project_with_pairs(&app).await;
    for (config, field) in [
        (json!({"processes": 0}), "config.processes"),
        (json!({"processes": "two"}), "config.processes"),
        (json!({"hosts": "node1 --mca plm_rsh_agent sh"}), "config.hosts"),
        (json!({"hosts": "a;reboot"}), "config.hosts"),
        (json!({"processes": 4, "hosts": "a:1,b:2"}), "config.hosts: 3 slots for 4 processes"),
    ] {
        let res = lead.post("/api/v1/projects/dp/runs", &json!({"kind": "rm", "config": config})).await;
        assert_eq!(res.status(), 400, "{config}");
        let body = res.text().await.unwrap();
        assert!(body.contains(field), "{config}: {body}");
    }
    let res = lead.post("/api/v1/projects/dp/runs", &json!({"kind": "generate", "config": {"processes": 2}})).await;
    assert!(res.text().await.unwrap().contains("config.processes: not a parameter of generate runs"));
    // Accepted: stored as given, the host list in mpirun's spelling.
    let id = start_run(&lead, json!({"processes": 4, "hosts": " node1:2, node2:2"})).await;
    let run = run_json(&lead, &id).await;
    assert_eq!((run["config"]["processes"].clone(), run["config"]["hosts"].clone()), (json!(4), json!("node1:2,node2:2")));

    // The form offers both fields and refuses the same values with the same messages.
    let session = app.login("lead@example.org", PASSWORD).await;
    let page = session.get("/projects/dp/runs").await.text().await.unwrap();
    assert!(page.contains("name=\"c.processes\"") && page.contains("name=\"c.hosts\""), "the run form has the fields");
    let bad = session.post_form("/projects/dp/runs", &[("csrf", session.csrf.as_str()), ("kind", "rm"), ("c.hosts", "a:0")]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("config.hosts"));
    let ok = session.post_form("/projects/dp/runs", &[("csrf", session.csrf.as_str()), ("kind", "rm"), ("c.processes", "2")]).await;
    assert_eq!(ok.status(), 303);
    let queued = ok.headers()["location"].to_str().unwrap().to_string();
    let page = session.get(&queued).await.text().await.unwrap();
    assert!(page.contains("id=\"run-ranks\">2 processes<") && page.contains("id=\"run-waits-for\""), "the queued run says what it waits for");
}
