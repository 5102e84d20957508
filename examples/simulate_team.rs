//! A simulated labelling team against a real server, over the HTTP API only: a pairwise project
//! of HH-RLHF preference pairs (whose human choice is the truth), gold items and generated
//! honeypots; honest labellers who follow the truth but flip 20% of their choices, one who
//! answers at random and one who always prefers the response shown first. Prints who was paused
//! and flagged, the agreement figures, and how often the filtered, aggregated export agrees with
//! the truth against the raw one.
//!
//!     cargo run --release --example simulate_team [-- --pairs 300 --gold 60 --honest 4 --seed 7]
//!
//! It starts its own PostgreSQL cluster in a temporary directory (removed at the end).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rewardlab::domain::import::{hh_turns, split_pair};
use rewardlab::domain::Email;
use rewardlab::settings::{Secret, WebOptions};
use serde_json::{json, Value};

const DATA: &str = "hh-rlhf-harmless-base-test-part-a.jsonl.gz";

struct Args {
    pairs: usize,
    gold: usize,
    honeypots: usize,
    honest: usize,
    seed: u64,
}

fn args() -> Result<Args> {
    let mut a = Args { pairs: 300, gold: 60, honeypots: 40, honest: 4, seed: 7 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it.next().context("every flag takes a number")?.parse().context("a whole number")?;
        match flag.as_str() {
            "--pairs" => a.pairs = value as usize,
            "--gold" => a.gold = value as usize,
            "--honeypots" => a.honeypots = value as usize,
            "--honest" => a.honest = value as usize,
            "--seed" => a.seed = value,
            _ => bail!("unknown flag {flag}; flags: --pairs --gold --honeypots --honest --seed"),
        }
    }
    Ok(a)
}

/// One preference pair: its prompt (an HH transcript) and the two responses, the chosen first.
struct Pair {
    prompt: String,
    chosen: String,
    rejected: String,
}

fn load_pairs(n: usize) -> Result<Vec<Pair>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(DATA);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {} (see shared/data/README)", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        let (Some(c), Some(r)) = (v["chosen"].as_str(), v["rejected"].as_str()) else { continue };
        let Some((prompt, chosen, rejected)) = split_pair(c, r) else { continue };
        if chosen.trim().is_empty() || rejected.trim().is_empty() || chosen == rejected || chosen.split_whitespace().count() < 6 {
            continue;
        }
        out.push(Pair { prompt: prompt.to_string(), chosen: chosen.to_string(), rejected: rejected.to_string() });
        if out.len() == n {
            break;
        }
    }
    Ok(out)
}

/// The key a task's prompt is known by: its turns' contents joined.
fn prompt_key(turns: &Value) -> String {
    turns.as_array().map(|ts| ts.iter().filter_map(|t| t["content"].as_str()).collect::<Vec<_>>().join("\u{1}")).unwrap_or_default()
}

/// How a simulated labeller chooses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    /// Follows the truth, flipping 20% of choices.
    Honest,
    Random,
    /// Always prefers the response shown first.
    FirstShown,
}

/// What the simulation knows: each prompt's true preference.
struct Truth {
    by_prompt: HashMap<String, (String, String)>,
}

impl Truth {
    /// The index (in the task's shown order) of the truly better response: the chosen one; in a
    /// honeypot, the response that belongs to the prompt over the planted one.
    fn better(&self, task: &Value) -> usize {
        let texts: Vec<&str> = task["responses"].as_array().map(|r| r.iter().filter_map(|x| x["text"].as_str()).collect()).unwrap_or_default();
        let score = |t: &str| match self.by_prompt.get(&prompt_key(&task["prompt"])) {
            Some((c, _)) if c == t => 2,
            Some((_, r)) if r == t => 1,
            _ => 0,
        };
        if texts.len() == 2 && score(texts[1]) > score(texts[0]) {
            1
        } else {
            0
        }
    }
}

struct Labeller {
    email: String,
    style: Style,
    api: Api,
}

#[derive(Clone)]
struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let res = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        let res = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).body(body).send().await?;
        Ok(res.error_for_status()?.json().await?)
    }

    async fn get(&self, path: &str) -> Result<String> {
        Ok(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?.error_for_status()?.text().await?)
    }
}

/// Labels until nothing is left for this labeller or they are paused; answers (tasks, paused).
async fn work(l: &Labeller, truth: &Truth, seed: u64) -> Result<(usize, bool)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (status, mut task) = l.api.post("/api/v1/projects/sim/tasks/next", &Value::Null).await?;
    if status == 403 {
        return Ok((0, true));
    }
    let mut done = 0;
    while task.is_object() {
        let ids: Vec<Value> = task["responses"].as_array().map(|r| r.iter().map(|x| x["id"].clone()).collect()).unwrap_or_default();
        let best = match l.style {
            Style::Honest => truth.better(&task) ^ usize::from(rng.gen_bool(0.2)),
            Style::Random => rng.gen_range(0..2),
            Style::FirstShown => 0,
        };
        let ranking = json!([[ids[best]], [ids[1 - best]]]);
        let key = format!("{}-{seed}-{done}", l.email);
        let (status, body) = l
            .api
            .post(
                &format!("/api/v1/tasks/{}/judgement?next=1", task["task_id"].as_str().unwrap_or_default()),
                &json!({"idempotency_key": key, "ranking": ranking}),
            )
            .await?;
        if status != 201 && status != 200 {
            bail!("{} submitting: {status} {body}", l.email);
        }
        done += 1;
        if body["paused"].is_string() {
            return Ok((done, true));
        }
        task = body["next"].clone();
    }
    Ok((done, false))
}

/// The share of (non-tie) rows whose chosen response is the truly chosen one, and the rows counted.
fn agreement_with_truth(rows: &[Value], truth: &Truth) -> (f64, usize, usize) {
    let (mut right, mut counted, mut ties) = (0, 0, 0);
    for r in rows {
        if r["tie"] == true {
            ties += 1;
            continue;
        }
        let Some((chosen, _)) = truth.by_prompt.get(&prompt_key(&r["messages"])) else { continue };
        counted += 1;
        right += usize::from(r["chosen"].as_str() == Some(chosen.as_str()));
    }
    (right as f64 / counted.max(1) as f64, counted, ties)
}

async fn export(lead: &Api, body: Value) -> Result<Vec<Value>> {
    let (status, e) = lead.post("/api/v1/projects/sim/exports", &body).await?;
    if status != 201 {
        bail!("export {body}: {status} {e}");
    }
    let text = lead.get(&format!("/api/v1/exports/{}/download", e["id"].as_str().unwrap_or_default())).await?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn fmt(v: &Value) -> String {
    v.as_f64().map_or_else(|| "–".into(), |x| format!("{x:.2}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let dir = std::env::temp_dir().join(format!("rewardlab-simulate-{}", std::process::id()));
    let cluster = rewardlab::cluster::Cluster::new(&dir)?;
    cluster.ensure_running()?;
    cluster.stop_when_process_exits(std::process::id(), true)?;
    let result = run(&a, &cluster, &dir).await;
    let _ = cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(a: &Args, cluster: &rewardlab::cluster::Cluster, dir: &std::path::Path) -> Result<()> {
    rewardlab::settings::ensure_database(cluster, "sim").await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(16).connect_with(cluster.connect_options("sim")).await?;
    rewardlab::db::migrate(&pool).await?;
    let key = rewardlab::web::auth::random_secret("").into_bytes();
    let app = rewardlab::startup::Application::build(pool.clone(), Secret::new(key.clone()), "127.0.0.1:0", dir.join("tmp"), Some(4), WebOptions::default())?;
    let base = format!("http://127.0.0.1:{}", app.port);
    tokio::spawn(app.server);
    let http = reqwest::Client::new();

    // Accounts and tokens, as `rewardlab user add` and `token create` make them.
    let account = |email: String, admin: bool| {
        let (pool, key, http, base) = (pool.clone(), key.clone(), http.clone(), base.clone());
        async move {
            let hash = rewardlab::web::auth::hash_password("simulated team member".into()).await?;
            let mut conn = pool.acquire().await?;
            let id = rewardlab::db::users::insert(&mut conn, &Email::parse(&email).map_err(anyhow::Error::msg)?, &hash, admin).await?.context("new account")?;
            let token = rewardlab::web::auth::random_secret("rl_");
            rewardlab::db::users::insert_token(&mut conn, id, "simulation", &rewardlab::web::auth::keyed_hash(&key, &token)).await?;
            anyhow::Ok(Api { base, token, http })
        }
    };
    let lead = account("lead@sim.org".into(), true).await?;
    let (status, body) = lead.post("/api/v1/projects", &json!({"slug": "sim", "name": "Simulated team", "kind": "pairwise", "overlap": 3})).await?;
    if status != 201 {
        bail!("creating the project: {status} {body}");
    }

    // Items: HH pairs with the human choice at a random position and no judgement; gold pairs
    // carry it as their reference.
    let pairs = load_pairs(a.pairs + a.gold)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut lines = String::new();
    let mut truth = Truth { by_prompt: HashMap::new() };
    for (i, p) in pairs.iter().enumerate() {
        let swap = rng.gen_bool(0.5);
        let (first, second) = if swap { (&p.rejected, &p.chosen) } else { (&p.chosen, &p.rejected) };
        let mut item = json!({"id": format!("hh-{i}"), "prompt": p.prompt, "responses": [{"model": "hh", "text": first}, {"model": "hh", "text": second}]});
        if i >= a.pairs {
            let reference = if swap { json!([[1], [0]]) } else { json!([[0], [1]]) };
            item["gold"] = json!({"ranking": reference, "explanation": "People chose this response in HH-RLHF."});
        }
        lines.push_str(&format!("{item}\n"));
        let turns = serde_json::to_value(hh_turns(&p.prompt))?;
        truth.by_prompt.insert(prompt_key(&turns), (p.chosen.clone(), p.rejected.clone()));
    }
    let report = lead.post_bytes("/api/v1/projects/sim/items", lines.into_bytes()).await?;
    println!("imported {} items ({} gold)", report["items_added"], a.gold);
    let (_, pots) = lead.post("/api/v1/projects/sim/quality/honeypots", &json!({"count": a.honeypots})).await?;
    println!("generated {} honeypots", pots["added"]);
    let settings = json!({"gold_onboarding": 10, "gold_rate": 0.25, "pause_below": 0.7, "pause_min_gold": 15, "extra_max": 2, "extra_below": 0.5});
    let (status, body) = lead.post("/api/v1/projects/sim/quality/settings", &settings).await?;
    if status != 200 {
        bail!("settings: {status} {body}");
    }
    println!("quality settings: {settings}");

    let mut team = Vec::new();
    for i in 0..a.honest {
        team.push((format!("honest{}@sim.org", i + 1), Style::Honest));
    }
    team.push(("random@sim.org".into(), Style::Random));
    team.push(("first-shown@sim.org".into(), Style::FirstShown));
    let mut labellers = Vec::new();
    for (email, style) in team {
        let api = account(email.clone(), false).await?;
        let (status, body) = lead.post("/api/v1/projects/sim/members", &json!({"email": email, "role": "labeller"})).await?;
        if status != 200 {
            bail!("adding {email}: {status} {body}");
        }
        labellers.push(Labeller { email, style, api });
    }

    // Rounds: everyone labels until the queue is empty; then items where labellers disagree get
    // one more labeller, until none does.
    let started = std::time::Instant::now();
    let truth = std::sync::Arc::new(truth);
    let labellers = std::sync::Arc::new(labellers);
    let mut tasks_done = 0;
    for round in 0..4 {
        let mut handles = Vec::new();
        for i in 0..labellers.len() {
            let (labellers, truth) = (labellers.clone(), truth.clone());
            let seed = a.seed * 1000 + round * 100 + i as u64;
            handles.push(tokio::spawn(async move { work(&labellers[i], &truth, seed).await }));
        }
        for h in handles {
            tasks_done += h.await??.0;
        }
        let (_, ext) = lead.post("/api/v1/projects/sim/quality/extend", &Value::Null).await?;
        println!("round {}: {tasks_done} tasks so far; {} items get one more labeller", round + 1, ext["reopened"]);
        if ext["reopened"] == 0 {
            break;
        }
    }
    println!("{tasks_done} tasks in {:.1} s", started.elapsed().as_secs_f64());

    let report: Value = serde_json::from_str(&lead.get("/api/v1/projects/sim/quality").await?)?;
    println!("\nlabeller                 kind         tasks  gold share [95%]     n  first-shown best  consensus τ  status / flags");
    for l in report["labellers"].as_array().into_iter().flatten() {
        let email = l["email"].as_str().unwrap_or("");
        let style = labellers.iter().find(|x| x.email == email).map_or("lead".into(), |x| format!("{:?}", x.style));
        let gold = &l["gold"];
        let status = if l["paused"].is_string() { "PAUSED".to_string() } else { "active".to_string() };
        let flags: Vec<&str> = l["flags"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
        println!(
            "{email:<24} {style:<12} {:>5}  {} [{}, {}] {:>4}  {:>5}/{:<5} p={:<8.1e} {:>8}  {status}{}",
            l["judgements"],
            fmt(&gold["value"]),
            fmt(&gold["ci_low"]),
            fmt(&gold["ci_high"]),
            l["gold_count"],
            l["first_shown_best"],
            l["judgements"],
            l["position_p"].as_f64().unwrap_or(1.0),
            fmt(&l["consensus_tau"]),
            if flags.is_empty() { String::new() } else { format!("; flagged: {}", flags.join("; ")) }
        );
    }
    let ag = &report["agreement"];
    println!(
        "\nagreement: Krippendorff's α ({}) {} [{}, {}] (chance 0) · Fleiss' κ {} (chance 0) · mean Kendall's W per item {} (chance {}) over {} items",
        ag["alpha_level"].as_str().unwrap_or(""),
        fmt(&ag["alpha"]["value"]),
        fmt(&ag["alpha"]["ci_low"]),
        fmt(&ag["alpha"]["ci_high"]),
        fmt(&ag["fleiss_kappa"]),
        fmt(&ag["mean_w"]),
        fmt(&ag["mean_w_chance"]),
        ag["items_compared"]
    );

    let raw = export(&lead, json!({"format": "comparisons"})).await?;
    let filtered = export(&lead, json!({"format": "comparisons", "exclude_paused": true, "aggregate": "majority"})).await?;
    let bt = export(&lead, json!({"format": "comparisons", "exclude_paused": true, "aggregate": "bradley_terry"})).await?;
    let (r, rn, _) = agreement_with_truth(&raw, &truth);
    let (f, fn_, ft) = agreement_with_truth(&filtered, &truth);
    let (b, bn, bt_ties) = agreement_with_truth(&bt, &truth);
    println!("\nagreement with the true preferences:");
    println!("  raw export (every judgement)                              {:.1}% of {rn} rows", r * 100.0);
    println!("  paused labellers left out, majority per item              {:.1}% of {fn_} items ({ft} ties left marked)", f * 100.0);
    println!("  paused labellers left out, Bradley–Terry per item         {:.1}% of {bn} items ({bt_ties} ties left marked)", b * 100.0);
    let paused: Vec<&str> =
        report["labellers"].as_array().into_iter().flatten().filter(|l| l["paused"].is_string()).filter_map(|l| l["email"].as_str()).collect();
    let flagged: Vec<&str> = report["labellers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["flags"].as_array().is_some_and(|f| !f.is_empty()))
        .filter_map(|l| l["email"].as_str())
        .collect();
    println!("\npaused: {}\nflagged: {}", paused.join(", "), flagged.join(", "));
    Ok(())
}
