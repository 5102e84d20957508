//! The over-optimisation watchdog (issue 15 item 4): `spotcheck` runs and their refusals, the
//! watchdog's figures (API and run page), a schedule held until its spot check passes, and the
//! issue's "Done when": on a planted task whose reward model has a loophole, real PPO pushes
//! the loophole, a spot check imports blind pairs, a scripted judge who knows the true rule
//! labels them over the HTTP API, and the watchdog shows the reward model's score rising while
//! people's win rate against the start falls, with the turnover marked.

use std::time::Duration;

use rewardlab::domain::{Role, TaskKind};
use rewardlab::jobs::worker::claim;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Api, TestApp, PASSWORD};
use crate::runs::{log_of, scratch, wait_final, Worker};

async fn error_of(res: reqwest::Response) -> (u16, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["message"].as_str().unwrap_or_default().to_string())
}

/// Inserts a run as a worker would have left it.
async fn fake_run(app: &TestApp, slug: &str, kind: &str, status: &str, config: Value, summary: Value) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO runs (id, project_id, kind, status, config, summary, model_dir)
         SELECT $1, id, $2::run_kind, $3::run_status, $4, $5, '/nowhere' FROM projects WHERE slug = $6",
    )
    .bind(id)
    .bind(kind)
    .bind(status)
    .bind(config)
    .bind(summary)
    .bind(slug)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_check_is_refused_naming_the_field_until_it_names_a_succeeded_ppo_run_that_kept_grid_checkpoints() {
    let app = spawn_app().await;
    app.project("spot", TaskKind::Pairwise, 1).await;
    app.project("other", TaskKind::Pairwise, 1).await;
    app.project("demo", TaskKind::Demonstration, 1).await;
    let lead = app.member("lead@example.org", "spot", Role::Lead).await;
    let labeller = app.member("lab@example.org", "spot", Role::Labeller).await;
    let ppo = fake_run(&app, "spot", "ppo", "succeeded", json!({"kl_grid": 0.5}), Value::Null).await;
    let no_grid = fake_run(&app, "spot", "ppo", "succeeded", json!({"kl_grid": null}), Value::Null).await;
    let queued = fake_run(&app, "spot", "ppo", "queued", json!({"kl_grid": 0.5}), Value::Null).await;
    let rm = fake_run(&app, "spot", "rm", "succeeded", json!({}), Value::Null).await;
    let theirs = fake_run(&app, "other", "ppo", "succeeded", json!({"kl_grid": 0.5}), Value::Null).await;

    let start = |body: Value| {
        let lead = &lead;
        async move { error_of(lead.post("/api/v1/projects/spot/runs", &body).await).await }
    };
    let cases = [
        (json!({"kind": "spotcheck"}), "input.ppo_run: expected the id of a succeeded PPO run of this project"),
        (json!({"kind": "spotcheck", "input": {"ppo_run": "x"}}), "input.ppo_run: expected the id of a PPO run, got \"x\""),
        (json!({"kind": "spotcheck", "input": {"ppo_run": rm}}), "input.ppo_run: expected one of this project's ppo runs"),
        (json!({"kind": "spotcheck", "input": {"ppo_run": theirs}}), "input.ppo_run: expected one of this project's ppo runs"),
        (json!({"kind": "spotcheck", "input": {"ppo_run": no_grid}}), "input.ppo_run: run"),
        (json!({"kind": "spotcheck", "input": {"ppo_run": queued}}), "input.ppo_run: run"),
        (json!({"kind": "spotcheck", "input": {"ppo_run": ppo, "policy_run": ppo}}), "input.policy_run: not an input of spotcheck runs"),
        (json!({"kind": "spotcheck", "config": {"prompts": 0}, "input": {"ppo_run": ppo}}), "config.prompts: expected a whole number from 1 to 10000"),
        (json!({"kind": "spotcheck", "config": {"gate_win_rate": 0.5}, "input": {"ppo_run": ppo}}), "config.gate_min_judgements: expected"),
        (
            json!({"kind": "spotcheck", "config": {"gate_win_rate": 2, "gate_min_judgements": 3}, "input": {"ppo_run": ppo}}),
            "config.gate_win_rate: expected a number from 0 to 1",
        ),
        (json!({"kind": "spotcheck", "config": {"epochs": 1}, "input": {"ppo_run": ppo}}), "config.epochs: not a parameter of spotcheck runs"),
    ];
    for (body, expected) in cases {
        let (status, message) = start(body.clone()).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    let (_, m) = start(json!({"kind": "spotcheck", "input": {"ppo_run": no_grid}})).await;
    assert!(m.contains("without config.kl_grid"), "{m}");
    let (_, m) = start(json!({"kind": "spotcheck", "input": {"ppo_run": queued}})).await;
    assert!(m.contains("is queued; expected a succeeded PPO run"), "{m}");
    let demo = app.member("lead2@example.org", "demo", Role::Lead).await;
    let (status, m) = error_of(demo.post("/api/v1/projects/demo/runs", &json!({"kind": "spotcheck"})).await).await;
    assert!(status == 400 && m.starts_with("kind: spotcheck runs import pairs"), "{m}");

    // A schedule's spot check follows a PPO step that keeps grid checkpoints.
    fake_run(&app, "spot", "sft", "succeeded", json!({}), Value::Null).await;
    let schedule = |chain: Value| {
        let lead = &lead;
        async move { error_of(lead.post("/api/v1/projects/spot/schedules", &json!({"min_new_comparisons": 5, "chain": chain})).await).await }
    };
    let (status, m) = schedule(json!([{"kind": "ppo"}, {"kind": "spotcheck"}])).await;
    assert!(status == 400 && m.starts_with("chain[1].input.ppo_run: the PPO step before this spot check keeps no checkpoints"), "{m}");
    let (status, m) = schedule(json!([{"kind": "rm"}, {"kind": "spotcheck"}])).await;
    assert!(status == 400 && m.starts_with("chain[1].input.ppo_run: expected the id of a succeeded PPO run"), "{m}");
    let (status, m) = schedule(json!([{"kind": "ppo", "config": {"kl_grid": 0.5}}, {"kind": "spotcheck", "config": {"gate_win_rate": 0.5}}])).await;
    assert!(status == 400 && m.starts_with("chain[1].config.gate_min_judgements"), "{m}");
    let ok = lead
        .post(
            "/api/v1/projects/spot/schedules",
            &json!({"min_new_comparisons": 5, "chain": [{"kind": "ppo", "config": {"kl_grid": 0.5}}, {"kind": "spotcheck", "config": {"gate_win_rate": 0.5, "gate_min_judgements": 4}}, {"kind": "generate"}]}),
        )
        .await;
    assert_eq!(ok.status(), 201, "{}", ok.text().await.unwrap());

    // A valid one is queued; its figures are empty until it has run; other runs have none.
    let res = lead.post("/api/v1/projects/spot/runs", &json!({"kind": "spotcheck", "config": {"prompts": 4}, "input": {"ppo_run": ppo}})).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let w: Value = lead.get(&format!("/api/v1/runs/{id}/watchdog")).await.json().await.unwrap();
    assert_eq!((w["status"].as_str(), w["points"].as_array().map(Vec::len), &w["fit"]), (Some("queued"), Some(0), &Value::Null), "{w}");
    assert_eq!(w["ppo_run"], ppo.to_string());
    assert_eq!(lead.get(&format!("/api/v1/runs/{rm}/watchdog")).await.status(), 404, "not a spot check");
    assert_eq!(lead.get("/api/v1/runs/nonsense/watchdog").await.status(), 404);
    assert_eq!(labeller.get(&format!("/api/v1/runs/{id}/watchdog")).await.status(), 404, "labellers are blind to runs");
    let page = app.login("lead@example.org", PASSWORD).await.get(&format!("/projects/spot/runs/{id}")).await.text().await.unwrap();
    assert!(page.contains("id=\"watchdog\"") && page.contains("No figures until the spot check has sampled its checkpoints"), "{page}");
}

/// A spot check's pairs as a worker imports them: per checkpoint, `n` blind pairs of the
/// policy at that √KL against the start.
fn spot_items(spot: uuid::Uuid, checkpoint: &str, sqrt_kl: f64, n: usize, tag: &str) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..n {
        let policy = json!({"model": format!("ppo@{checkpoint}"), "text": format!("policy {tag}{i}"), "metadata": {"spotcheck": "policy", "sqrt_kl": sqrt_kl}});
        let start = json!({"model": "sft", "text": format!("start {tag}{i}"), "metadata": {"spotcheck": "start"}});
        let responses = if i % 2 == 0 { json!([policy, start]) } else { json!([start, policy]) };
        let meta = json!({"spotcheck_run": spot, "grid_checkpoint": checkpoint, "sqrt_kl": sqrt_kl});
        out.push_str(&format!(
            "{}\n",
            json!({"id": format!("spot-{tag}-{checkpoint}-{i}"), "prompt": format!("q {tag}{i}"), "responses": responses, "metadata": meta})
        ));
    }
    out.into_bytes()
}

/// Judges every task left for `who`: the policy's response first when `policy_wins`; returns
/// how many.
async fn judge_spot(app: &TestApp, who: &Api, slug: &str, policy_wins: bool) -> usize {
    let mut n = 0;
    while let Some(task) = who.next_task(slug).await {
        let mut order: Vec<Value> = task["responses"].as_array().unwrap().clone();
        let mut roles = Vec::new();
        for r in &order {
            let id: uuid::Uuid = r["id"].as_str().unwrap().parse().unwrap();
            let (meta,): (Value,) = sqlx::query_as("SELECT metadata FROM responses WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap();
            roles.push(meta["spotcheck"].as_str().unwrap_or_default().to_string());
        }
        if (roles[0] == "policy") != policy_wins {
            order.swap(0, 1);
        }
        let ranking: Vec<Vec<Value>> = order.iter().map(|r| vec![r["id"].clone()]).collect();
        let key = format!("spot-{}", task["task_id"].as_str().unwrap());
        let res =
            who.post(&format!("/api/v1/tasks/{}/judgement", task["task_id"].as_str().unwrap()), &json!({"idempotency_key": key, "ranking": ranking})).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_spot_check_holds_its_chain_until_people_prefer_the_last_checkpoint_and_the_runs_page_says_why() {
    let app = spawn_app().await;
    app.project("gate", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "gate", Role::Lead).await;
    let labeller = app.member("lab@example.org", "gate", Role::Labeller).await;
    fake_run(&app, "gate", "sft", "succeeded", json!({}), Value::Null).await;
    fake_run(&app, "gate", "rm", "succeeded", json!({}), Value::Null).await;
    let chain = json!([{"kind": "ppo", "config": {"kl_grid": 0.5}}, {"kind": "spotcheck", "config": {"gate_win_rate": 0.5, "gate_min_judgements": 4}}, {"kind": "generate"}]);
    let res = lead.post("/api/v1/projects/gate/schedules", &json!({"cron": "0 3 * * *", "chain": chain})).await;
    assert_eq!(res.status(), 201);
    let schedule = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE schedules SET next_fire_at = now() - interval '1 second'").execute(&app.pool).await.unwrap();
    assert_eq!(rewardlab::jobs::schedule::tick(&app.pool).await.unwrap().len(), 1);
    let ids: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, kind::text FROM runs WHERE schedule_id IS NOT NULL ORDER BY seq").fetch_all(&app.pool).await.unwrap();
    let (ppo, spot, next) = (ids[0].0, ids[1].0, ids[2].0);

    // The PPO run and its spot check finish (as a worker would leave them): two checkpoints.
    let checkpoints = json!([{"name": "sqrt-kl-0.500", "point": 0.5, "iteration": 3, "sqrt_kl": 0.52, "score": 0.4, "ensemble_std": 0.05},
                             {"name": "sqrt-kl-1.000", "point": 1.0, "iteration": 7, "sqrt_kl": 1.04, "score": 0.9, "ensemble_std": 0.12}]);
    sqlx::query("UPDATE runs SET status = 'succeeded', finished_at = now() WHERE id = $1").bind(ppo).execute(&app.pool).await.unwrap();
    sqlx::query("UPDATE runs SET status = 'succeeded', finished_at = now(), summary = $2 WHERE id = $1")
        .bind(spot)
        .bind(json!({"spotcheck": {"ppo_run": ppo, "checkpoints": checkpoints}}))
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(claim(&app.pool, "w", Duration::from_secs(60)).await.unwrap().is_none(), "held: no judgements yet");
    let session = app.login("lead@example.org", PASSWORD).await;
    let runs_page = || async { session.get("/projects/gate/runs").await.text().await.unwrap() };
    let page = runs_page().await;
    let waiting = format!("id=\"schedule-waiting-{schedule}\"");
    assert!(page.contains(&waiting), "{page}");
    assert!(page.contains("waits for spot check") && page.contains("waiting for judgements: 0 of 4 on the last checkpoint (√KL 1.040)"), "{page}");

    // People prefer the start at the last checkpoint: the gate holds, and says why.
    assert_eq!(lead.post_bytes("/api/v1/projects/gate/items", spot_items(spot, "sqrt-kl-0.500", 0.52, 4, "a")).await.status(), 200);
    assert_eq!(lead.post_bytes("/api/v1/projects/gate/items", spot_items(spot, "sqrt-kl-1.000", 1.04, 4, "a")).await.status(), 200);
    assert_eq!(judge_spot(&app, &labeller, "gate", false).await, 8);
    assert!(rewardlab::services::watchdog::open_gates(&app.pool).await.unwrap().is_empty());
    assert!(claim(&app.pool, "w", Duration::from_secs(60)).await.unwrap().is_none(), "held: people prefer the start");
    assert!(runs_page().await.contains("held: people prefer the last checkpoint (√KL 1.040) to the start 0% of the time over 4 judgements, below 50%"));
    let w: Value = lead.get(&format!("/api/v1/runs/{spot}/watchdog")).await.json().await.unwrap();
    assert_eq!(w["gate"]["passed"], false, "{w}");
    assert_eq!((w["points"][1]["judgements"].as_u64(), w["points"][1]["win_rate"].as_f64()), (Some(4), Some(0.0)), "{w}");

    // Four more pairs, the policy preferred: 4 of 8, at the threshold. The gate opens and the
    // chain's next step is claimed.
    assert_eq!(lead.post_bytes("/api/v1/projects/gate/items", spot_items(spot, "sqrt-kl-1.000", 1.04, 4, "b")).await.status(), 200);
    assert_eq!(judge_spot(&app, &labeller, "gate", true).await, 4);
    assert_eq!(rewardlab::services::watchdog::open_gates(&app.pool).await.unwrap(), [rewardlab::domain::RunId(spot)]);
    let claimed = claim(&app.pool, "w", Duration::from_secs(60)).await.unwrap().expect("the gate opened");
    assert_eq!(claimed.id.0, next);
    assert!(!runs_page().await.contains(&waiting), "no longer waiting");

    // The figures, as JSON and on the spot check's page.
    let w: Value = lead.get(&format!("/api/v1/runs/{spot}/watchdog")).await.json().await.unwrap();
    assert_eq!(w["gate"]["passed"], true, "{w}");
    let p = &w["points"][1];
    assert_eq!((p["judgements"].as_u64(), p["wins"].as_u64(), p["win_rate"].as_f64(), p["rm_score"].as_f64()), (Some(8), Some(4), Some(0.5), Some(0.9)), "{w}");
    assert!(p["ci_low"].as_f64().unwrap() < 0.5 && p["ci_high"].as_f64().unwrap() > 0.5);
    assert_eq!(w["points"][0]["win_rate"], 0.0);
    assert!(w["fit"].is_object(), "two judged √KL: a fit {w}");
    let page = session.get(&format!("/projects/gate/runs/{spot}")).await.text().await.unwrap();
    let row = "<tr><td>sqrt-kl-1.000</td><td>1.040</td><td>7</td><td>0.9000</td><td>0.1200</td><td>8</td><td>0.500</td><td>0.22–0.78</td></tr>";
    assert!(page.contains(row), "the table's last checkpoint: {page}");
    for id in ["watch-win-rate", "watch-rm-score", "watch-ensemble-std"] {
        assert!(page.contains(&format!("<figure class=\"chart\" id=\"{id}\">")), "{id} drawn");
    }
    assert!(page.contains("Gate for the chain's next step: passed"), "{page}");
}

const WORDS: [&str; 16] = [
    "river", "stone", "cloud", "paper", "garden", "window", "silver", "orange", "market", "engine", "forest", "candle", "bridge", "winter", "letter", "planet",
];

/// The planted task: the true rule prefers an answer of about `TARGET` words (the closer the
/// better; equally close is a tie). Every pair people labelled before had a chosen answer of 3–5
/// words and a rejected one of 1–2, so "longer is better" explains them all: the reward model
/// learns that loophole, and PPO, pushing it, first brings answers closer to the target, then
/// past it.
const TARGET: i64 = 8;

fn true_score(text: &str) -> i64 {
    -(text.split_whitespace().count() as i64 - TARGET).abs()
}

/// A deterministic stream of words.
struct Words(u64);

impl Words {
    fn take(&mut self, n: u64) -> String {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                WORDS[(self.0 >> 33) as usize % WORDS.len()]
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The pairs labelled before (imported with their choice), and the held-out prompts (items
/// PPO never saw, imported after it ran).
fn planted(n: usize, held_out: usize) -> (Vec<u8>, Vec<u8>) {
    let mut w = Words(7);
    let mut seen = std::collections::HashSet::new();
    let mut prompt = |w: &mut Words| loop {
        let p = format!("Tell me about the {}.", w.take(2));
        if seen.insert(p.clone()) {
            return p;
        }
    };
    let mut train = String::new();
    for _ in 0..n {
        let prompt = prompt(&mut w);
        let (kc, kr) = (3 + w.next() % 3, 1 + w.next() % 2);
        train.push_str(&format!("{}\n", json!({"prompt": prompt, "chosen": w.take(kc), "rejected": w.take(kr)})));
    }
    let mut held = String::new();
    for i in 0..held_out {
        let prompt = prompt(&mut w);
        let line = json!({"id": format!("held-{i}"), "prompt": prompt, "responses": [{"model": "earlier", "text": w.take(4)}, {"model": "earlier-2", "text": w.take(2)}]});
        held.push_str(&format!("{line}\n"));
    }
    (train.into_bytes(), held.into_bytes())
}

// Sizes and seeds of the planted run, chosen so the turn shows robustly (see the README).
const PAIRS: usize = 80;
const HELD_OUT: usize = 32;
const SAMPLES: usize = 4;

/// A tiny model built from scratch, with `extra` settings.
fn planted_model(extra: Value) -> Value {
    let mut c = json!({"n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 400, "max_len": 64});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn ppo_config() -> Value {
    json!({"iterations": 40, "batch_size": 16, "mini_batch_size": 8, "ppo_epochs": 2, "max_new_tokens": 24, "lr": 0.002, "kl_grid": 1.0,
           "missing_eos_penalty": 0, "kl_coef": 0, "seed": 0, "save_every": 0})
}

fn spot_config() -> Value {
    json!({"prompts": HELD_OUT, "samples": SAMPLES, "seed": 1, "max_new_tokens": 24})
}

/// The scripted judge: labels every task left by the true rule (a tie when equally close),
/// through the HTTP API alone; returns how many.
async fn judge_by_true_rule(who: &Api, slug: &str) -> usize {
    let mut n = 0;
    while let Some(task) = who.next_task(slug).await {
        let rs = task["responses"].as_array().unwrap();
        assert!(rs.iter().all(|r| r.get("model").is_none() && r.get("metadata").is_none()) && task.get("metadata").is_none(), "blind: {task}");
        let (a, b) = (true_score(rs[0]["text"].as_str().unwrap()), true_score(rs[1]["text"].as_str().unwrap()));
        let ranking = match a.cmp(&b) {
            std::cmp::Ordering::Greater => json!([[rs[0]["id"]], [rs[1]["id"]]]),
            std::cmp::Ordering::Less => json!([[rs[1]["id"]], [rs[0]["id"]]]),
            std::cmp::Ordering::Equal => json!([[rs[0]["id"], rs[1]["id"]]]),
        };
        let id = task["task_id"].as_str().unwrap();
        let res = who.post(&format!("/api/v1/tasks/{id}/judgement"), &json!({"idempotency_key": format!("j-{id}"), "ranking": ranking})).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        n += 1;
    }
    n
}

async fn started(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reward_model_s_loophole_shows_on_the_watchdog_as_rising_score_while_the_judge_who_knows_the_rule_stops_preferring_the_policy() {
    let app = spawn_app().await;
    app.project("planted", TaskKind::Pairwise, 1).await;
    let lead = app.member("lead@example.org", "planted", Role::Lead).await;
    let judge = app.member("judge@example.org", "planted", Role::Labeller).await;
    let (train, held) = planted(PAIRS, HELD_OUT);
    assert_eq!(lead.post_bytes("/api/v1/projects/planted/items", train).await.status(), 200);
    let store = scratch("store");
    let _worker = Worker::start(&app, &store, "w-watch", 30.0);

    // A policy, a reward model with the loophole, and PPO keeping its policy on a √KL grid.
    let runs = "/api/v1/projects/planted/runs";
    let sft = started(lead.post(runs, &json!({"kind": "sft", "config": planted_model(json!({"epochs": 4, "lr": 0.003}))})).await).await;
    let run = wait_final(&app, &lead, &sft, Duration::from_secs(300)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &sft).await);
    // The reward model shares the policy's tokenizer (the worker gives it the project's).
    let rm = started(lead.post(runs, &json!({"kind": "rm", "config": planted_model(json!({"epochs": 4, "lr": 0.003, "batch_size": 8}))})).await).await;
    let run = wait_final(&app, &lead, &rm, Duration::from_secs(300)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &rm).await);
    let ppo = started(lead.post(runs, &json!({"kind": "ppo", "config": ppo_config(), "input": {"policy_run": sft, "reward_model_run": rm}})).await).await;
    let (status, m) = error_of(lead.post(runs, &json!({"kind": "spotcheck", "input": {"ppo_run": ppo}})).await).await;
    assert!(status == 400 && (m.contains("is queued") || m.contains("is running")), "not before it has succeeded: {m}");
    let run = wait_final(&app, &lead, &ppo, Duration::from_secs(600)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &ppo).await);

    // New prompts arrive (PPO never saw them); the spot check samples the grid and the start on them.
    // Before they come, every prompt is one PPO trained on: the spot check fails saying so.
    let early = started(lead.post(runs, &json!({"kind": "spotcheck", "input": {"ppo_run": ppo}})).await).await;
    let run = wait_final(&app, &lead, &early, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("no held-out prompts"), "{run}");
    assert_eq!(lead.post_bytes("/api/v1/projects/planted/items", held).await.status(), 200);
    let spot = started(lead.post(runs, &json!({"kind": "spotcheck", "config": spot_config(), "input": {"ppo_run": ppo}})).await).await;
    let run = wait_final(&app, &lead, &spot, Duration::from_secs(300)).await;
    assert_eq!(run["status"], "succeeded", "{}", log_of(&app, &spot).await);
    let summary = &run["summary"]["spotcheck"];
    let checkpoints = summary["checkpoints"].as_array().unwrap().len();
    assert!(checkpoints >= 3, "enough grid points to see a turn: {summary}");
    assert_eq!(summary["prompts"], HELD_OUT as u64, "the held-out prompts only: {summary}");
    assert_eq!(summary["items_added"], (checkpoints * HELD_OUT * SAMPLES) as u64, "{summary}");
    // Blind: the labeller's task shows texts, not models or provenance.
    let meta: Vec<(Value,)> =
        sqlx::query_as("SELECT metadata FROM items WHERE metadata->>'spotcheck_run' = $1").bind(&spot).fetch_all(&app.pool).await.unwrap();
    assert!(meta.iter().all(|(m,)| m["ppo_run"] == ppo.as_str() && m["sqrt_kl"].is_number() && m["grid_checkpoint"].is_string()));
    let firsts: i64 = app
        .count(&format!(
            "SELECT count(*) FROM responses r JOIN items i ON i.id = r.item_id WHERE i.metadata->>'spotcheck_run' = '{spot}' AND r.position = 0 AND r.metadata->>'spotcheck' = 'policy'"
        ))
        .await;
    let total = (checkpoints * HELD_OUT * SAMPLES) as i64;
    assert!(firsts > total / 4 && firsts < total * 3 / 4, "the policy is first in about half the pairs: {firsts} of {total}");

    // The judge labels everything over the API by the true rule.
    judge_by_true_rule(&judge, "planted").await;

    // The watchdog's figures: the reward model's score rises along the grid while people's
    // win rate against the start stops rising and falls; Gao's curve turns over.
    let w: Value = lead.get(&format!("/api/v1/runs/{spot}/watchdog")).await.json().await.unwrap();
    let points = w["points"].as_array().unwrap();
    let f = |p: &Value, k: &str| p[k].as_f64().unwrap();
    let summary_line: Vec<String> =
        points.iter().map(|p| format!("√KL {:.2}: RM {:.3}, win {:.2} (n {})", f(p, "sqrt_kl"), f(p, "rm_score"), f(p, "win_rate"), p["judgements"])).collect();
    eprintln!("watchdog: {}; fit {}", summary_line.join("; "), w["fit"]);
    assert!(points.iter().all(|p| p["judgements"] == (HELD_OUT * SAMPLES) as u64), "{w}");
    let (first, last) = (&points[0], &points[points.len() - 1]);
    assert!(f(last, "rm_score") > f(first, "rm_score"), "the reward model's score rose: {w}");
    let best = points.iter().map(|p| f(p, "win_rate")).fold(f64::MIN, f64::max);
    assert!(f(last, "win_rate") < best, "people's win rate stopped rising: {w}");
    assert!(f(last, "win_rate") < 0.5, "people prefer the start to the last checkpoint: {w}");
    let turnover = w["fit"]["turnover"].as_f64().unwrap_or_else(|| panic!("Gao's curve turns over: {w}"));
    assert!(turnover > 0.0 && turnover < f(last, "sqrt_kl"), "…before the last checkpoint: {w}");

    // The page shows the same: the charts, the turnover marked, the table.
    let page = app.login("lead@example.org", PASSWORD).await.get(&format!("/projects/planted/runs/{spot}")).await.text().await.unwrap();
    assert!(page.contains(&format!("d* = {turnover:.2}")) && page.contains("class=\"turnover\""), "the turnover is marked");
    assert!(page.contains("id=\"watch-rm-score\"") && page.contains("id=\"watch-win-rate\""));
    assert!(page.contains(&format!("<td>{}</td>", last["checkpoint"].as_str().unwrap())));
    assert!(page.contains(&format!("curve fitted to people turns over at d* = {turnover:.2}")), "{page}");
    // The PPO run's page shows its newest spot check's watchdog.
    let page = app.login("lead@example.org", PASSWORD).await.get(&format!("/projects/planted/runs/{ppo}")).await.text().await.unwrap();
    assert!(page.contains(&format!("From spot check <a href=\"/projects/planted/runs/{spot}\">")) && page.contains("id=\"watch-win-rate\""), "{page}");
}
