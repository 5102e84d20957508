//! Training runs end to end: real `rewardlab worker` processes run the real `rewardlab-train`
//! on tiny models, against the test's database; a schedule fires, RM → PPO → generate runs in
//! a chain, the generated responses come back as labelling tasks, and the leaderboard and the
//! reward model's agreement with people follow. Workers are killed with SIGKILL and raced.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rewardlab::domain::{Role, TaskKind};
use rewardlab::jobs::worker::{claim, Fence};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, TestApp, PASSWORD};
use crate::webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_rewardlab");

/// `rewardlab-train`, built beside `rewardlab` by `cargo test --workspace`.
pub(crate) fn trainer() -> PathBuf {
    let p = Path::new(BIN).with_file_name("rewardlab-train");
    assert!(p.exists(), "{} is missing: run the tests with `cargo test --workspace` (it builds the trainer)", p.display());
    p
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `rewardlab worker` process; killed (SIGKILL) when dropped.
pub(crate) struct Worker {
    child: Child,
    name: String,
}

impl Worker {
    pub(crate) fn start(app: &TestApp, store: &Path, name: &str, lease_secs: f64) -> Worker {
        let child = Command::new(BIN)
            .args(["worker", "--model-store", store.to_str().unwrap(), "--trainer", trainer().to_str().unwrap(), "--name", name])
            .args(["--lease-secs", &lease_secs.to_string(), "--poll-secs", "0.2"])
            .env("DATABASE_URL", &app.db_url)
            .env("REWARDLAB_DATA", store.join("data"))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Worker { child, name: name.to_string() }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

const WORDS: [&str; 16] = [
    "river", "stone", "cloud", "paper", "garden", "window", "silver", "orange", "market", "engine", "forest", "candle", "bridge", "winter", "letter", "planet",
];

/// A deterministic stream of words.
fn words(seed: &mut u64, n: usize) -> String {
    (0..n)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            WORDS[(*seed >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Items whose `alpha` response says "kindly" somewhere and whose `beta` response never does.
fn planted_items(n: usize) -> Vec<u8> {
    let mut seed = 7u64;
    let mut out = String::new();
    for i in 0..n {
        let prompt = format!("Question {i}: {}?", words(&mut seed, 4));
        let good = format!("{} kindly {}", words(&mut seed, 3), words(&mut seed, 3));
        let bad = words(&mut seed, 7);
        let line = json!({"id": format!("q{i}"), "prompt": prompt, "responses": [{"model": "alpha", "text": good}, {"model": "beta", "text": bad}]});
        out.push_str(&format!("{line}\n"));
    }
    out.into_bytes()
}

/// Judges every task left for `who`, preferring the response that says "kindly" (or, on a
/// generated item, the response `prefer` returns true for); returns how many.
async fn judge_all(app: &TestApp, who: &Api, slug: &str, prefer: impl Fn(&str, &str) -> bool) -> usize {
    let mut n = 0;
    while let Some(task) = who.next_task(slug).await {
        let rs = task["responses"].as_array().unwrap();
        let mut order: Vec<&Value> = rs.iter().collect();
        // Look up each shown response's model (hidden from the labeller's view) only to decide.
        let mut better = Vec::new();
        for r in &order {
            let id: uuid::Uuid = r["id"].as_str().unwrap().parse().unwrap();
            let (model, text): (String, String) =
                sqlx::query_as("SELECT model, text FROM responses WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
            better.push(prefer(&model, &text));
        }
        if !better[0] && better.get(1) == Some(&true) {
            order.swap(0, 1);
        }
        let ranking: Vec<Vec<Value>> = order.iter().map(|r| vec![r["id"].clone()]).collect();
        let res = who
            .post(
                &format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()),
                &json!({"idempotency_key": format!("k{n}-{}", task["task_id"]), "ranking": ranking}),
            )
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        n += 1;
    }
    n
}

pub(crate) async fn run_json(api: &Api, id: &str) -> Value {
    let res = api.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Waits for a run to reach a final status; panics with its log if it takes too long.
pub(crate) async fn wait_final(app: &TestApp, api: &Api, id: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let run = run_json(api, id).await;
        if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
            return run;
        }
        if started.elapsed() > limit {
            let log: Vec<String> =
                sqlx::query_scalar("SELECT line FROM run_logs WHERE run_id = $1::uuid ORDER BY id").bind(id).fetch_all(&app.pool).await.unwrap();
            panic!("run {id} still {} after {limit:?}; log:\n{}", run["status"], log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn log_of(app: &TestApp, id: &str) -> String {
    let log: Vec<String> = sqlx::query_scalar("SELECT line FROM run_logs WHERE run_id = $1::uuid ORDER BY id").bind(id).fetch_all(&app.pool).await.unwrap();
    log.join("\n")
}

const TINY: [(&str, i64); 5] = [("n_embd", 32), ("n_layer", 1), ("n_head", 2), ("vocab_size", 300), ("max_len", 48)];

pub(crate) fn tiny(extra: Value) -> Value {
    let mut c: serde_json::Map<String, Value> = TINY.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    c.extend(extra.as_object().unwrap().clone());
    Value::Object(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_a_chain_that_trains_and_sends_new_responses_back_to_the_labellers() {
    let app = spawn_app().await;
    app.project("loop", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "loop", Role::Lead).await;
    let labeller = app.member("lab@example.org", "loop", Role::Labeller).await;
    assert_eq!(lead.post_bytes("/api/v1/projects/loop/items", planted_items(60)).await.status(), 200);

    // A schedule: after 50 new comparisons, RM → PPO → generate. PPO needs a policy: refused
    // until the project has one coming (an SFT run, queued now, trained once labels exist).
    let chain = json!([
        {"kind": "rm", "config": tiny(json!({"epochs": 4, "lr": 0.003, "batch_size": 8}))},
        {"kind": "ppo", "config": {"iterations": 3, "batch_size": 8, "mini_batch_size": 4, "ppo_epochs": 1, "max_new_tokens": 8, "lr": 0.0005, "save_every": 1, "kl_grid": 0.01}},
        {"kind": "generate", "config": {"max_prompts": 10, "max_new_tokens": 12, "seed": 3}},
    ]);
    let res = lead.post("/api/v1/projects/loop/schedules", &json!({"min_new_comparisons": 50, "chain": chain})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("chain[1].kind: ppo needs a policy"));
    let res = lead.post("/api/v1/projects/loop/runs", &json!({"kind": "sft", "config": tiny(json!({"epochs": 2, "lr": 0.003}))})).await;
    assert_eq!(res.status(), 201);
    let sft_id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let res = lead.post("/api/v1/projects/loop/schedules", &json!({"min_new_comparisons": 50, "chain": chain})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let bad = lead.post("/api/v1/projects/loop/schedules", &json!({"cron": "every day", "chain": chain})).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("cron"));
    assert!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().is_empty(), "no comparisons yet: nothing fires");

    // Bad run requests are refused with the field named; a labeller may not start runs.
    let res = lead.post("/api/v1/projects/loop/runs", &json!({"kind": "rm", "config": {"epoch": 2}})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("config.epoch"));
    let res = lead.post("/api/v1/projects/loop/runs", &json!({"kind": "ppo", "input": {"policy_path": "../../etc"}})).await;
    assert_eq!(res.status(), 400);
    let res = lead.post("/api/v1/projects/loop/runs", &json!({"kind": "generate", "config": {"samples": 8, "compare_with": 2}})).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("samples + compare_with must be 2 to 9, not 10"));
    assert_eq!(labeller.post("/api/v1/projects/loop/runs", &json!({"kind": "rm"})).await.status(), 403);
    assert_eq!(labeller.get("/api/v1/projects/loop/leaderboard").await.status(), 403, "labellers are blind to model names");

    // The labeller prefers the response that says "kindly"; then a worker trains the SFT run.
    assert_eq!(judge_all(&app, &labeller, "loop", |_, text| text.contains("kindly")).await, 60);
    let store = scratch("store");
    let _worker = Worker::start(&app, &store, "w-loop", 20.0);
    let sft = wait_final(&app, &lead, &sft_id, Duration::from_secs(180)).await;
    assert_eq!(sft["status"], "succeeded", "{}", log_of(&app, &sft_id).await);

    // Four servers tick at once: one firing, three runs.
    let ticks = (0..4).map(|_| {
        let pool = app.pool.clone();
        tokio::spawn(async move { rewardlab::jobs::schedule::tick(&pool).await.unwrap() })
    });
    let fired: Vec<rewardlab::domain::RunId> = futures_util::future::join_all(ticks).await.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(fired.len(), 1, "one firing however many schedulers tick");
    assert_eq!(app.count("SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL").await, 3);
    assert!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().is_empty(), "the threshold counts from the last firing");

    let ids: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, kind::text FROM runs WHERE schedule_id IS NOT NULL ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    let id = |k: &str| ids.iter().find(|(_, kind)| kind == k).unwrap().0.to_string();
    for k in ["rm", "ppo", "generate"] {
        let run = wait_final(&app, &lead, &id(k), Duration::from_secs(300)).await;
        assert_eq!(run["status"], "succeeded", "{k}: {}", log_of(&app, &id(k)).await);
        assert_eq!(run["worker"], "w-loop");
    }

    // Metrics landed in PostgreSQL; models on disk.
    let rm = run_json(&lead, &id("rm")).await;
    assert!(rm["metrics"]["step.loss"].is_number() && rm["metrics"]["eval.accuracy"].is_number(), "{rm}");
    let rm_dir = PathBuf::from(rm["model_dir"].as_str().unwrap());
    assert!(rm_dir.join("model.safetensors").exists() && rm_dir.join("config.json").exists());
    let ppo = run_json(&lead, &id("ppo")).await;
    assert!(ppo["metrics"]["iteration.kl"].is_number() && ppo["metrics"]["iteration.score"].is_number(), "{ppo}");
    assert_eq!(ppo["input"]["resolved"]["reward_model"]["run"], id("rm"), "PPO used the chain's reward model");
    assert_eq!(ppo["input"]["resolved"]["policy"]["run"], sft_id.as_str(), "…and the project's SFT policy");
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM run_metrics WHERE run_id = $1::uuid AND event = 'iteration'")
        .bind(id("ppo"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(steps, 3);
    assert!(PathBuf::from(ppo["model_dir"].as_str().unwrap()).join("model.safetensors").exists());
    // The watchdog's figures: √KL to the starting policy each iteration, the policy kept on its grid.
    assert!(ppo["metrics"]["iteration.sqrt_kl"].as_f64().is_some_and(|d| d > 0.0), "{ppo}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(PathBuf::from(ppo["model_dir"].as_str().unwrap()).join("kl-grid/manifest.json")).unwrap()).unwrap();
    assert!(manifest["checkpoints"].as_array().is_some_and(|c| !c.is_empty()), "{manifest}");

    // The generated responses are new labelling tasks, with their provenance.
    let gen: Vec<(String, Value, i32)> =
        sqlx::query_as("SELECT external_id, metadata, n_responses FROM items WHERE external_id LIKE 'gen-%' ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    assert_eq!(gen.len(), 10);
    assert!(gen.iter().all(|(_, m, n)| m["generated_by_run"] == id("generate").as_str() && m["policy_run"] == id("ppo").as_str() && *n == 2));
    let label = format!("ppo-{}", &id("ppo").replace('-', "")[..8]);
    let (meta,): (Value,) =
        sqlx::query_as("SELECT r.metadata FROM responses r JOIN items i ON i.id = r.item_id WHERE i.external_id LIKE 'gen-%' AND r.model = $1 LIMIT 1")
            .bind(&label)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(meta["run_id"], id("ppo").as_str());
    assert_eq!(meta["generate_run"], id("generate").as_str());
    assert_eq!(meta["temperature"], 0.7);
    assert!(meta["checksum"].as_str().is_some_and(|c| c.starts_with("sha256:") && c.len() == 71), "{meta}");
    // The labeller, who has judged every original item, now gets the generated ones: the new
    // policy's response beside an earlier one. They prefer the earlier ("kindly") answers.
    assert_eq!(judge_all(&app, &labeller, "loop", |model, _| model != label).await, 10);

    // Leaderboard: the new checkpoint is on it, with its comparisons.
    let board: Value = lead.get("/api/v1/projects/loop/leaderboard").await.json().await.unwrap();
    let models = board["models"].as_array().unwrap();
    let new = models.iter().find(|m| m["model"] == label.as_str()).unwrap_or_else(|| panic!("{board}"));
    assert_eq!(new["comparisons"], 10.0);
    assert_eq!(new["run_id"], id("ppo").as_str());
    assert_eq!(models[0]["model"], "alpha", "alpha won every comparison: {board}");
    assert!(models[0]["ci_low"].as_f64().unwrap() <= models[0]["strength"].as_f64().unwrap());

    // The reward model scored every response; its agreement with the labeller is reported.
    let scored = app.count("SELECT count(*) FROM response_scores").await;
    assert_eq!(scored, 60 * 2, "every response that existed when the RM finished");
    let agreement: Value = lead.get("/api/v1/projects/loop/rm-agreement").await.json().await.unwrap();
    let a = &agreement["rm_agreement"];
    assert_eq!(a["run_id"], id("rm").as_str());
    assert_eq!(a["pairs"], 60);
    let overall = a["overall"].as_f64().unwrap();
    eprintln!("reward model agrees with the labeller on {:.1}% of 60 comparisons", overall * 100.0);
    assert!(overall > 0.6, "the RM learned the planted preference: {agreement}");
    assert_eq!(a["disagreements"].as_array().unwrap().len() as f64, (60.0 * (1.0 - overall)).round().min(20.0));

    // The pages render in a real browser: the runs list, a run's charts, the leaderboard.
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lead@example.org").await;
    b.goto(&format!("{}/projects/loop/models", app.addr)).await;
    let table = b.wait_for_text("#leaderboard-table", &label).await;
    assert!(table.contains("alpha") && table.contains("beta"), "{table}");
    assert!(b.text("#rm-agreement").await.contains("of 60 human comparisons"));
    b.click("#tab-runs").await;
    let runs = b.wait_for_text("#runs", "generate").await;
    assert_eq!(runs.matches("succeeded").count(), 4, "{runs}");
    b.goto(&format!("{}/projects/loop/runs/{}", app.addr, id("ppo"))).await;
    b.wait_for_text("#run-status", "succeeded").await;
    let charts = b.script("return Array.from(document.querySelectorAll('#charts figure')).map(f => [f.querySelector('figcaption').textContent, f.querySelectorAll('polyline').length])").await;
    let titles: Vec<&str> = charts.as_array().unwrap().iter().map(|c| c[0].as_str().unwrap()).collect();
    assert!(titles.contains(&"score") && titles.contains(&"kl"), "{charts}");
    assert!(b.text("#files").await.contains("model.safetensors"));
    assert!(b.text("#log").await.contains("[worker] succeeded"));
    b.quit().await;

    // The live fragment the run page polls, and two runs' curves side by side.
    let lead_session = app.login("lead@example.org", PASSWORD).await;
    let live = lead_session.get(&format!("/projects/loop/runs/{}/live", id("rm"))).await.text().await.unwrap();
    assert!(live.contains("id=\"run-live\"") && live.contains("<polyline") && live.contains("data-status=\"succeeded\""), "{live}");
    let compare = lead_session.get(&format!("/projects/loop/runs/compare?a={}&b={sft_id}", id("rm"))).await.text().await.unwrap();
    let (a8, b8) = (&id("rm").replace('-', "")[..8], &sft_id.replace('-', "")[..8]);
    assert!(compare.contains(&format!("{a8} step")) && compare.contains(&format!("{b8} step")), "both runs' series are drawn");

    // A model file downloads for the lead, and for nobody else.
    let res = lead_session.get(&format!("/projects/loop/runs/{}/files/config.json", id("rm"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(lead_session.get(&format!("/projects/loop/runs/{}/files/..%2F..%2Fetc%2Fpasswd", id("rm"))).await.status(), 404);
    let lab_session = app.login("lab@example.org", PASSWORD).await;
    assert_ne!(lab_session.get(&format!("/projects/loop/runs/{}/files/config.json", id("rm"))).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_s_run_is_resumed_by_another_and_racing_workers_never_share_a_run() {
    let app = spawn_app().await;
    app.project("kill", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "kill", Role::Lead).await;
    // Preference pairs import with their human choice: comparisons without labelling.
    let mut seed = 11u64;
    let pairs: String = (0..300)
        .map(|i| format!("{}\n", json!({"prompt": format!("Q{i} {}?", words(&mut seed, 3)), "chosen": format!("{} kindly", words(&mut seed, 4)), "rejected": words(&mut seed, 5)})))
        .collect();
    assert_eq!(lead.post_bytes("/api/v1/projects/kill/items", pairs.into_bytes()).await.status(), 200);
    let store = scratch("store");

    // Worker A takes a run that checkpoints every 5 steps, and is SIGKILLed after its first checkpoint.
    let config = tiny(json!({"epochs": 20, "batch_size": 8, "save_every": 5, "lr": 0.003}));
    let res = lead.post("/api/v1/projects/kill/runs", &json!({"kind": "rm", "config": config})).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut a = Worker::start(&app, &store, "worker-a", 3.0);
    let first = store.join("runs").join(&id).join("attempt-1/model/checkpoints");
    let started = Instant::now();
    while !std::fs::read_dir(&first).map(|mut d| d.any(|e| e.unwrap().path().join("COMPLETE").exists())).unwrap_or(false) {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint from worker A: {}", log_of(&app, &id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill();
    let steps_a: i64 = sqlx::query_scalar("SELECT count(*) FROM run_metrics WHERE run_id = $1::uuid AND fence = 1 AND event = 'step'")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(run_json(&lead, &id).await["status"], "running", "the run is still leased to the dead worker");
    // The trainer died with its worker (PR_SET_PDEATHSIG): nothing writes to attempt 1 anymore.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&format!("{id}/attempt-1")));
    assert!(!alive, "worker A's trainer outlived it");

    let b = Worker::start(&app, &store, "worker-b", 3.0);
    let run = wait_final(&app, &lead, &id, Duration::from_secs(240)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &id).await);
    assert_eq!(run["worker"], b.name.as_str());
    assert_eq!(run["attempts"], 2);
    assert!(run["resumed_from"].as_str().unwrap().contains("attempt-1/model"), "{run}");
    let log = log_of(&app, &id).await;
    assert!(log.contains("[worker] resuming from") && log.contains("on worker-a") && log.contains("on worker-b"), "{log}");
    // Attempt 2 continued after the checkpoint instead of starting again.
    let first_b: i64 = sqlx::query_scalar("SELECT min(step) FROM run_metrics WHERE run_id = $1::uuid AND fence = 2 AND event = 'step'")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(first_b > 5, "attempt 2 started at step {first_b} (A had reported {steps_a}): it resumed, it did not start over");
    assert!(PathBuf::from(run["model_dir"].as_str().unwrap()).ends_with("attempt-2/model"));
    drop(b);

    // Two workers race for one run: exactly one executes it.
    // It trains on a snapshot the lead took earlier, which the worker replays (sha256-checked).
    let export: Value = lead.post("/api/v1/projects/kill/exports", &json!({"format": "comparisons"})).await.json().await.unwrap();
    let res = lead.post("/api/v1/projects/kill/runs", &json!({"kind": "rm", "config": tiny(json!({"epochs": 1})), "input": {"export_id": export["id"]}})).await;
    let race = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let (w1, w2) = (Worker::start(&app, &store, "racer-1", 10.0), Worker::start(&app, &store, "racer-2", 10.0));
    let run = wait_final(&app, &lead, &race, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempts"], 1);
    assert_eq!(log_of(&app, &race).await.matches("[worker] attempt").count(), 1);
    assert_eq!(run["export_id"], export["id"]);
    let replayed = store.join("runs").join(&race).join("input").join(format!("comparisons-{}-all.jsonl", export["id"].as_str().unwrap()));
    assert_eq!(std::fs::read_to_string(replayed).unwrap().lines().count() as u64, export["files"][0]["rows"].as_u64().unwrap());
    assert_eq!(
        std::fs::read_dir(store.join("runs").join(&race))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("attempt-"))
            .count(),
        1
    );
    drop((w1, w2));

    // Claims and fencing at the database: eight concurrent claims of one run, one winner; a
    // claim whose lease passed is taken over, and the old owner's writes are refused.
    let res = lead.post("/api/v1/projects/kill/runs", &json!({"kind": "rm"})).await;
    let fenced: rewardlab::domain::RunId = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let claims = (0..8).map(|i| {
        let pool = app.pool.clone();
        tokio::spawn(async move { claim(&pool, &format!("c{i}"), Duration::from_secs(2)).await.unwrap() })
    });
    let won: Vec<_> = futures_util::future::join_all(claims).await.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(won.len(), 1);
    assert_eq!((won[0].id, won[0].fence), (fenced, 1));
    let old = Fence { pool: &app.pool, run: fenced, fence: 1, lease: Duration::from_secs(2) };
    assert!(old.heartbeat().await);
    assert!(claim(&app.pool, "late", Duration::from_secs(5)).await.unwrap().is_none(), "a live lease is not taken");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let taken = claim(&app.pool, "late", Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!((taken.id, taken.fence), (fenced, 2));
    assert!(!old.heartbeat().await && !old.log("stale").await && !old.metric(&json!({"event": "step", "step": 1})).await);
    let new = Fence { pool: &app.pool, run: fenced, fence: 2, lease: Duration::from_secs(5) };
    assert!(new.heartbeat().await && new.log("fresh").await);
    assert_eq!(log_of(&app, &fenced.to_string()).await, "fresh");

    // A cron schedule fires at its occurrence, once, and moves to the next one.
    let res = lead.post("/api/v1/projects/kill/schedules", &json!({"cron": "*/5 * * * *", "chain": [{"kind": "rm"}]})).await;
    assert_eq!(res.status(), 201);
    assert!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().is_empty(), "not before its time");
    sqlx::query("UPDATE schedules SET next_fire_at = now() - interval '1 second'").execute(&app.pool).await.unwrap();
    assert_eq!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().len(), 1);
    assert!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().is_empty());
    let next: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT next_fire_at FROM schedules").fetch_one(&app.pool).await.unwrap();
    assert!(next > chrono::Utc::now() && next.timestamp() % 300 == 0, "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_cancelled_runs_keep_their_logs_and_stop_their_chains() {
    let app = spawn_app().await;
    app.project("fail", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "fail", Role::Lead).await;
    app.project("other", TaskKind::Pairwise, 1).await;
    let stranger = app.member("stranger@example.org", "other", Role::Lead).await;
    let store = scratch("store");

    // A schedule whose reward model cannot be built (n_embd 32 is not a multiple of 3 heads).
    let res = lead
        .post(
            "/api/v1/projects/fail/schedules",
            &json!({"min_new_comparisons": 10,
        "chain": [{"kind": "rm", "config": tiny(json!({"n_head": 3}))}, {"kind": "sft"}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    // No judgements yet: the export is empty, and the run fails with a clear message.
    let mut seed = 5u64;
    let pairs: String = (0..40)
        .map(|i| format!("{}\n", json!({"prompt": format!("P{i} {}", words(&mut seed, 3)), "chosen": words(&mut seed, 4), "rejected": words(&mut seed, 4)})))
        .collect();
    let res = lead.post("/api/v1/projects/fail/runs", &json!({"kind": "sft"})).await;
    let early = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(stranger.get(&format!("/api/v1/runs/{early}")).await.status(), 404, "another project's lead sees nothing");
    assert_eq!(stranger.post(&format!("/api/v1/runs/{early}/cancel"), &Value::Null).await.status(), 404);
    let _w = Worker::start(&app, &store, "w-fail", 10.0);
    let run = wait_final(&app, &lead, &early, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("export is empty"), "{run}");

    // A trainer that exits with an error: the run fails with its message, the chain stops.
    assert_eq!(lead.post_bytes("/api/v1/projects/fail/items", pairs.into_bytes()).await.status(), 200);
    let fired = rewardlab::jobs::schedule::tick(&app.pool).await.unwrap();
    assert_eq!(fired.len(), 1, "40 new comparisons fire the schedule");
    for first in fired {
        let run = wait_final(&app, &lead, &first.to_string(), Duration::from_secs(60)).await;
        assert_eq!(run["status"], "failed", "{run}");
        let next: (String, Option<String>) =
            sqlx::query_as("SELECT status::text, error FROM runs WHERE after_run = $1").bind(first).fetch_one(&app.pool).await.unwrap();
        assert_eq!(next.0, "cancelled");
        assert!(next.1.unwrap().contains("chain failed"));
    }
    let n_head_err: String = sqlx::query_scalar("SELECT error FROM runs WHERE config->>'n_head' = '3'").fetch_one(&app.pool).await.unwrap();
    assert!(n_head_err.contains("rewardlab-train rm exited with status 1"), "{n_head_err}");

    // A trainer killed from outside (the OOM killer, say): the run fails, its log kept.
    let res = lead.post("/api/v1/projects/fail/runs", &json!({"kind": "rm", "config": tiny(json!({"epochs": 5000}))})).await;
    let doomed = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let pid = loop {
        let found = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).find_map(|e| {
            let cmd = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).to_string();
            (cmd.contains(&doomed) && cmd.contains("rewardlab-train")).then(|| e.file_name().to_string_lossy().to_string())
        });
        if let Some(pid) = found.filter(|_| started.elapsed() > Duration::from_millis(300)) {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{}", log_of(&app, &doomed).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let run = wait_final(&app, &lead, &doomed, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("exited with signal 9"), "{run}");
    assert!(log_of(&app, &doomed).await.contains("$ rewardlab-train rm"), "the log is kept");

    // Started from the browser form, then cancelled from it: the worker stops the trainer and
    // publishes nothing.
    let session = app.login("lead@example.org", PASSWORD).await;
    let config = tiny(json!({"epochs": 5000})).to_string();
    let bad = session.post_form("/projects/fail/runs", &[("csrf", session.csrf.as_str()), ("kind", "rm"), ("config", "{\"epochs\": -1}")]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("config.epochs"));
    let res = session.post_form("/projects/fail/runs", &[("csrf", session.csrf.as_str()), ("kind", "rm"), ("config", config.as_str()), ("input", "")]).await;
    assert_eq!(res.status(), 303);
    let long = res.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_string();
    let started = Instant::now();
    while app.count(&format!("SELECT count(*) FROM run_metrics WHERE run_id = '{long}'")).await == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", log_of(&app, &long).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The run page updates itself while the run trains (static/runs.js polls the live fragment).
    let b = Browser::start().await;
    b.sign_in(&app.addr, "lead@example.org").await;
    b.goto(&format!("{}/projects/fail/runs/{long}", app.addr)).await;
    b.wait_for_text("#run-status", "running").await;
    let points = "const p = document.querySelector('#charts polyline'); return p ? p.getAttribute('points').split(' ').length : 0";
    let first = b.script(points).await.as_u64().unwrap();
    let started = Instant::now();
    while b.script(points).await.as_u64().unwrap() <= first {
        assert!(started.elapsed() < Duration::from_secs(30), "the charts did not update");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.quit().await;
    let refused = session.post_form(&format!("/projects/fail/runs/{long}/cancel"), &[]).await;
    assert_eq!(refused.status(), 403, "no CSRF token, no cancel");
    let res = session.post_form(&format!("/projects/fail/runs/{long}/cancel"), &[("csrf", session.csrf.as_str())]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(run_json(&lead, &long).await["status"], "cancelled");
    let started = Instant::now();
    while std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&long))
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the cancelled run's trainer is still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = run_json(&lead, &long).await;
    assert_eq!(run["status"], "cancelled");
    assert!(run["model_dir"].is_null(), "nothing was published");
    assert!(log_of(&app, &long).await.contains("[worker] attempt 1"));
    let page = session.get(&format!("/projects/fail/runs/{long}")).await.text().await.unwrap();
    assert!(page.contains("cancelled by a lead") && page.contains("[worker] attempt 1"), "the log is kept");
}

#[test]
fn every_run_parameter_is_a_flag_of_its_trainer_command_with_the_same_default() {
    for kind in rewardlab::domain::runs::RUN_KINDS {
        let out = Command::new(trainer()).args([kind.trainer_command(), "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{help}");
        for p in kind.params().into_iter().filter(|p| p.flag) {
            let flag = format!("--{}", p.name.replace('_', "-"));
            // One block per flag: its line and the help lines under it (clap prints
            // "[default: X]" in the help, which may wrap).
            let mut blocks: Vec<String> = Vec::new();
            for l in help.lines() {
                if l.trim_start().starts_with('-') {
                    blocks.push(String::new());
                }
                if let Some(b) = blocks.last_mut() {
                    b.push_str(l);
                    b.push('\n');
                }
            }
            let block = blocks
                .iter()
                .find(|b| b.lines().next().unwrap().split([',', ' ', '<']).any(|w| w == flag))
                .unwrap_or_else(|| panic!("{} has no {flag}:\n{help}", kind.as_str()));
            match p.default.clone() {
                // Unset here: the trainer has no fixed default (at most a described one).
                Value::Null => {
                    let d = block.split("[default: ").nth(1).and_then(|s| s.split(']').next());
                    assert!(d.is_none_or(|d| d.contains(' ')), "{flag} of {} has a default in the trainer but none here:\n{block}", kind.as_str());
                }
                d => {
                    let shown = d.as_str().map(str::to_string).unwrap_or_else(|| d.to_string());
                    let trainer_default =
                        block.split("[default: ").nth(1).and_then(|s| s.split(']').next()).unwrap_or_else(|| panic!("{flag}: no default shown:\n{block}"));
                    let same = trainer_default == shown || trainer_default.parse::<f64>().ok() == shown.parse::<f64>().ok();
                    assert!(same, "{} {flag}: trainer default {trainer_default}, platform default {shown}", kind.as_str());
                }
            }
        }
    }
}

/// `n` preference pairs, imported with their human choice: one comparison each.
fn pairs(tag: &str, n: usize) -> Vec<u8> {
    let mut seed = n as u64;
    (0..n)
        .map(|i| {
            format!("{}\n", json!({"prompt": format!("{tag}{i} {}?", words(&mut seed, 3)), "chosen": words(&mut seed, 4), "rejected": words(&mut seed, 4)}))
        })
        .collect::<String>()
        .into_bytes()
}

async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["message"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_again_only_once_every_run_of_its_previous_chain_has_finished() {
    let app = spawn_app().await;
    app.project("again", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "again", Role::Lead).await;
    let res = lead.post("/api/v1/projects/again/schedules", &json!({"min_new_comparisons": 10, "chain": [{"kind": "rm"}, {"kind": "sft"}]})).await;
    assert_eq!(res.status(), 201);
    let tick = || rewardlab::jobs::schedule::tick(&app.pool);
    let chains = || app.count("SELECT count(*) FROM runs WHERE schedule_id IS NOT NULL AND after_run IS NULL");

    assert_eq!(lead.post_bytes("/api/v1/projects/again/items", pairs("a", 10)).await.status(), 200);
    let first = tick().await.unwrap();
    assert_eq!(first.len(), 1, "10 new comparisons fire it");
    // Labelling goes on while the chain is queued, then while its first run trains.
    assert_eq!(lead.post_bytes("/api/v1/projects/again/items", pairs("b", 10)).await.status(), 200);
    assert!(tick().await.unwrap().is_empty(), "its chain is still queued");
    let claimed = claim(&app.pool, "w", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(claimed.id, first[0]);
    assert_eq!(lead.post_bytes("/api/v1/projects/again/items", pairs("c", 10)).await.status(), 200);
    assert!(tick().await.unwrap().is_empty(), "its first run is running");
    // The first run succeeds; the second is still queued.
    sqlx::query("UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = $1").bind(first[0]).execute(&app.pool).await.unwrap();
    assert!(tick().await.unwrap().is_empty(), "the chain's second run is still queued");
    assert_eq!(chains().await, 1);

    // Once every run of the chain is final, the next firing is allowed, counting from the last.
    let second: uuid::Uuid = sqlx::query_scalar("SELECT id FROM runs WHERE after_run = $1").bind(first[0]).fetch_one(&app.pool).await.unwrap();
    assert_eq!(lead.post(&format!("/api/v1/runs/{second}/cancel"), &Value::Null).await.status(), 200);
    let again = tick().await.unwrap();
    assert_eq!(again.len(), 1, "20 comparisons since the last firing");
    assert_eq!(chains().await, 2);
    assert!(tick().await.unwrap().is_empty());

    // A cron occurrence that comes while the chain runs is skipped, not kept for later.
    let res = lead.post("/api/v1/projects/again/schedules", &json!({"cron": "*/5 * * * *", "chain": [{"kind": "rm"}]})).await;
    let cron: uuid::Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE id = $1").bind(cron).execute(&app.pool).await.unwrap();
    assert_eq!(tick().await.unwrap().len(), 1);
    sqlx::query("UPDATE schedules SET next_fire_at = now() - interval '1 second' WHERE id = $1").bind(cron).execute(&app.pool).await.unwrap();
    assert!(tick().await.unwrap().is_empty(), "its rm run is still queued");
    assert_eq!(app.count(&format!("SELECT count(*) FROM runs WHERE schedule_id = '{cron}'")).await, 1);
    let next: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_fire_at FROM schedules WHERE id = $1").bind(cron).fetch_one(&app.pool).await.unwrap();
    assert!(next > chrono::Utc::now(), "moved on to the next occurrence: {next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_refused_naming_the_policy_or_reward_model_it_needs_until_something_provides_it() {
    let app = spawn_app().await;
    app.project("fresh", TaskKind::Ranking, 1).await;
    let lead = app.member("lead@example.org", "fresh", Role::Lead).await;
    let run = |body: Value| {
        let lead = lead.clone();
        async move { error_of(lead.post("/api/v1/projects/fresh/runs", &body).await).await }
    };
    let schedule = |chain: Value| {
        let lead = lead.clone();
        async move { error_of(lead.post("/api/v1/projects/fresh/schedules", &json!({"min_new_comparisons": 100, "chain": chain})).await).await }
    };

    // A fresh project has no policy and no reward model.
    for kind in ["ppo", "dpo", "generate"] {
        let (status, message) = run(json!({"kind": kind})).await;
        assert_eq!(status, 400, "{kind}");
        assert_eq!(message, format!("kind: {kind} needs a policy: set input.policy_path or input.policy_run, or train an sft run first"));
    }
    // The README's chain: the RM is the chain's own, the policy nobody's.
    let (status, message) = schedule(json!([{"kind": "rm"}, {"kind": "ppo"}, {"kind": "generate"}])).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("chain[1].kind: ppo needs a policy: set chain[1].input.policy_path or chain[1].input.policy_run"), "{message}");
    let (status, message) = schedule(json!([{"kind": "sft"}, {"kind": "ppo"}])).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("chain[1].kind: ppo needs a reward model"), "{message}");
    assert_eq!(app.count("SELECT count(*) FROM schedules").await, 0);
    // Earlier steps of a chain provide what later ones need.
    let (status, _) = schedule(json!([{"kind": "rm"}, {"kind": "sft"}, {"kind": "ppo"}, {"kind": "generate"}])).await;
    assert_eq!(status, 201);
    // The page form says the same.
    let session = app.login("lead@example.org", PASSWORD).await;
    let res = session.post_form("/projects/fresh/runs", &[("csrf", session.csrf.as_str()), ("kind", "ppo"), ("config", "{}"), ("input", "")]).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("ppo needs a policy"));
    let form = [("csrf", session.csrf.as_str()), ("cron", "0 3 * * *"), ("chain", r#"[{"kind": "generate"}]"#)];
    assert_eq!(session.post_form("/projects/fresh/schedules", &form).await.status(), 400);

    // Once the project has a policy (an sft run, queued here), only the reward model is missing.
    let (status, _) = run(json!({"kind": "sft"})).await;
    assert_eq!(status, 201);
    assert_eq!(run(json!({"kind": "generate"})).await.0, 201);
    assert_eq!(run(json!({"kind": "dpo"})).await.0, 201);
    let (status, message) = run(json!({"kind": "ppo"})).await;
    assert_eq!(status, 400);
    assert_eq!(message, "kind: ppo needs a reward model: set input.reward_model_path or input.reward_model_run, or train an rm run first");
    assert_eq!(run(json!({"kind": "ppo", "input": {"reward_model_path": "shared/rm"}})).await.0, 201, "a model in the shared area");
    assert_eq!(run(json!({"kind": "rm"})).await.0, 201);
    assert_eq!(run(json!({"kind": "ppo"})).await.0, 201);
    assert_eq!(schedule(json!([{"kind": "ppo"}, {"kind": "generate"}])).await.0, 201);

    // A run that failed provides nothing.
    app.project("failed", TaskKind::Ranking, 1).await;
    let other = app.member("lead2@example.org", "failed", Role::Lead).await;
    let sft: Value = other.post("/api/v1/projects/failed/runs", &json!({"kind": "sft"})).await.json().await.unwrap();
    sqlx::query("UPDATE runs SET status = 'failed' WHERE id = $1::uuid").bind(sft["id"].as_str().unwrap()).execute(&app.pool).await.unwrap();
    assert_eq!(other.post("/api/v1/projects/failed/runs", &json!({"kind": "generate"})).await.status(), 400);
    let named = json!({"kind": "generate", "input": {"policy_run": sft["id"]}});
    assert_eq!(other.post("/api/v1/projects/failed/runs", &named).await.status(), 201, "named explicitly, it is the lead's call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_run_settings_and_a_cron_expression_that_never_fires_are_refused_naming_the_field() {
    let app = spawn_app().await;
    app.project("absurd", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "absurd", Role::Lead).await;
    let cases = [
        ("rm", json!({"epochs": 1_000_000_000_000i64}), "config.epochs: expected a whole number from 1 to 10000, got 1000000000000"),
        ("sft", json!({"lr": -1}), "config.lr: expected a number above 0, at most 1, got -1"),
        ("rm", json!({"batch_size": 0}), "config.batch_size: expected a whole number from 1 to 4096, got 0"),
        ("sft", json!({"n_head": 0}), "config.n_head: expected a whole number from 1 to 128, got 0"),
        ("rm", json!({"val_fraction": 5}), "config.val_fraction: expected a number from 0 to 0.9, got 5"),
        ("sft", json!({"warmup_ratio": -3}), "config.warmup_ratio: expected a number from 0 to 1, got -3"),
    ];
    for (kind, config, expected) in &cases {
        let (status, message) = error_of(lead.post("/api/v1/projects/absurd/runs", &json!({"kind": kind, "config": config})).await).await;
        assert_eq!((status, message.as_str()), (400, *expected));
        let chain = json!([{"kind": "rm"}, {"kind": kind, "config": config}]);
        let (status, message) = error_of(lead.post("/api/v1/projects/absurd/schedules", &json!({"min_new_comparisons": 5, "chain": chain})).await).await;
        assert_eq!((status, message), (400, format!("chain[1].{expected}")));
    }
    assert_eq!(app.count("SELECT count(*) FROM runs").await + app.count("SELECT count(*) FROM schedules").await, 0);

    // February has no 31st: the expression parses but never fires.
    let (status, message) = error_of(lead.post("/api/v1/projects/absurd/schedules", &json!({"cron": "0 0 31 2 *", "chain": [{"kind": "rm"}]})).await).await;
    assert_eq!(status, 400);
    assert_eq!(message, "cron: \"0 0 31 2 *\" never fires (no date matches it)");
    let session = app.login("lead@example.org", PASSWORD).await;
    let form = [("csrf", session.csrf.as_str()), ("cron", "0 0 31 2 *"), ("chain", r#"[{"kind": "rm"}]"#)];
    let res = session.post_form("/projects/absurd/schedules", &form).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("never fires"));
    assert_eq!(app.count("SELECT count(*) FROM schedules").await, 0);
    let res = lead.post("/api/v1/projects/absurd/schedules", &json!({"cron": "0 0 29 2 *", "chain": [{"kind": "rm"}]})).await;
    assert_eq!(res.status(), 201, "a leap day does come");

    // A schedule stored before the ranges existed is disabled at its firing, and the others still fire.
    let stored = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO schedules (id, project_id, min_new_comparisons, chain) SELECT $1, id, 1, $2 FROM projects WHERE slug = 'absurd'")
        .bind(stored)
        .bind(json!([{"kind": "rm", "config": {"epochs": 1_000_000_000_000i64}}]))
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(lead.post("/api/v1/projects/absurd/schedules", &json!({"min_new_comparisons": 1, "chain": [{"kind": "rm"}]})).await.status(), 201);
    assert_eq!(lead.post_bytes("/api/v1/projects/absurd/items", pairs("p", 3)).await.status(), 200);
    assert_eq!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().len(), 1);
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM schedules WHERE id = $1").bind(stored).fetch_one(&app.pool).await.unwrap();
    assert!(!enabled);
    assert_eq!(app.count(&format!("SELECT count(*) FROM runs WHERE schedule_id = '{stored}'")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_can_neither_train_on_nor_download_another_project_s_models() {
    let app = spawn_app().await;
    app.project("alpha", TaskKind::Ranking, 1).await;
    app.project("beta", TaskKind::Ranking, 1).await;
    let lead_a = app.member("a@example.org", "alpha", Role::Lead).await;
    let lead_b = app.member("b@example.org", "beta", Role::Lead).await;
    let store = scratch("store");

    // Project A's policy, as a worker leaves it in the store.
    let a_run: Value = lead_a.post("/api/v1/projects/alpha/runs", &json!({"kind": "sft"})).await.json().await.unwrap();
    let a_id = a_run["id"].as_str().unwrap().to_string();
    let a_rel = format!("runs/{a_id}/attempt-1/model");
    std::fs::create_dir_all(store.join(&a_rel)).unwrap();
    std::fs::write(store.join(&a_rel).join("config.json"), r#"{"secret": "alpha's"}"#).unwrap();
    sqlx::query("UPDATE runs SET status = 'succeeded', model_dir = $2 WHERE id = $1::uuid")
        .bind(&a_id)
        .bind(store.join(&a_rel).display().to_string())
        .execute(&app.pool)
        .await
        .unwrap();

    // B's lead names it every way a run can.
    let b_runs = "/api/v1/projects/beta/runs";
    let attempts = [
        (json!({"kind": "generate", "input": {"policy_path": a_rel}}), "input.policy_path"),
        (json!({"kind": "ppo", "input": {"policy_path": "shared/gpt2", "reward_model_path": a_rel}}), "input.reward_model_path"),
        (json!({"kind": "sft", "config": {"init": a_rel}}), "config.init"),
        (json!({"kind": "rm", "config": {"init": format!("shared/../{a_rel}")}}), "config.init"),
        (json!({"kind": "rm", "config": {"init": store.join(&a_rel).display().to_string()}}), "config.init"),
        (json!({"kind": "generate", "input": {"policy_run": a_id}}), "input.policy_run"),
        (json!({"kind": "generate", "input": {"policy_path": "models/gpt2"}}), "input.policy_path"),
    ];
    for (body, field) in &attempts {
        let (status, message) = error_of(lead_b.post(b_runs, body).await).await;
        assert_eq!(status, 400, "{body}");
        assert!(message.starts_with(&format!("{field}: expected ")), "{body}: {message}");
    }
    let chain = json!({"cron": "0 3 * * *", "chain": [{"kind": "sft", "config": {"init": a_rel}}]});
    let (status, message) = error_of(lead_b.post("/api/v1/projects/beta/schedules", &chain).await).await;
    assert_eq!((status, message.starts_with("chain[0].config.init: expected")), (400, true), "{message}");
    let chain = json!({"cron": "0 3 * * *", "chain": [{"kind": "rm"}, {"kind": "ppo", "input": {"policy_path": a_rel}}]});
    assert_eq!(lead_b.post("/api/v1/projects/beta/schedules", &chain).await.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM runs").await, 1, "nothing of B's was queued");
    // Its own runs' directories and the shared area are B's to use.
    let b_sft: Value = lead_b.post(b_runs, &json!({"kind": "sft", "config": {"init": "shared/gpt2"}})).await.json().await.unwrap();
    let b_rel = format!("runs/{}/attempt-1/model", b_sft["id"].as_str().unwrap());
    let res = lead_b.post(b_runs, &json!({"kind": "ppo", "input": {"policy_path": b_rel, "reward_model_path": "shared/rm"}})).await;
    assert_eq!(res.status(), 201);
    sqlx::query("UPDATE runs SET status = 'cancelled' WHERE project_id <> (SELECT id FROM projects WHERE slug = 'alpha')").execute(&app.pool).await.unwrap();

    // A run that names A's model without the API's check (queued before it existed) fails in
    // the worker before any trainer starts.
    assert_eq!(lead_b.post_bytes("/api/v1/projects/beta/items", crate::helpers::items_jsonl(3, 2, "b")).await.status(), 200);
    let sneaked = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO runs (id, project_id, kind, config, input) SELECT $1, id, 'generate', $2, $3 FROM projects WHERE slug = 'beta'")
        .bind(sneaked)
        .bind(rewardlab::domain::runs::resolve_config(rewardlab::domain::runs::RunKind::Generate, &json!({"samples": 1})).map(Value::Object).unwrap())
        .bind(json!({"policy_path": a_rel}))
        .execute(&app.pool)
        .await
        .unwrap();
    let status = Command::new(BIN)
        .args(["worker", "--model-store", store.to_str().unwrap(), "--trainer", "/bin/false", "--name", "w-once", "--once"])
        .env("DATABASE_URL", &app.db_url)
        .env("REWARDLAB_DATA", store.join("data"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let run = run_json(&lead_b, &sneaked.to_string()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], format!("input.policy_path: {a_rel} is not a run of this project"));
    assert!(!log_of(&app, &sneaked.to_string()).await.contains("$ rewardlab-train"), "no trainer started");

    // Downloads: A's lead gets A's files; B's lead gets neither them nor, through a run of B
    // whose recorded directory is A's, their bytes.
    let session_a = app.login("a@example.org", PASSWORD).await;
    assert_eq!(session_a.get(&format!("/projects/alpha/runs/{a_id}/files/config.json")).await.status(), 200);
    let session_b = app.login("b@example.org", PASSWORD).await;
    assert_eq!(session_b.get(&format!("/projects/alpha/runs/{a_id}/files/config.json")).await.status(), 404);
    sqlx::query("UPDATE runs SET status = 'succeeded', model_dir = $2 WHERE id = $1")
        .bind(sneaked)
        .bind(store.join(&a_rel).display().to_string())
        .execute(&app.pool)
        .await
        .unwrap();
    let res = session_b.get(&format!("/projects/beta/runs/{sneaked}/files/config.json")).await;
    assert_eq!(res.status(), 404);
    assert!(!session_b.get(&format!("/projects/beta/runs/{sneaked}")).await.text().await.unwrap().contains("config.json"), "not listed either");
}
