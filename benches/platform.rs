//! The platform benchmark: `cargo bench --bench platform` (release build, loopback).
//!
//! Starts a private PostgreSQL cluster and the real `rewardlab serve` binary, then:
//! 1. imports 10,000 items x 4 responses over the API;
//! 2. runs 32 concurrent simulated labellers over HTTP that lease and submit for 30 s;
//! 3. takes a `comparisons` export snapshot and downloads it.
//!
//! It prints import items/s, judgements/s with p50/p99 latency, export rows/s and the
//! server's peak RSS, beside the targets. `BENCH_SECONDS`, `BENCH_ITEMS` and
//! `BENCH_LABELLERS` change the sizes; `BENCH_GOLD=N` adds N gold items mixed in at 10%. With
//! `BENCH_SCRAPE_SECS=5` a Prometheus-like scraper reads `/metrics` every 5 s throughout (the
//! server always has a metrics token, so runs with and without scraping differ only in the scrapes).
//! With `BENCH_QUALITY_JUDGEMENTS=100000` a quality section follows: a second project seeded
//! in SQL with that many judgements (3 labellers an item, gold checks, reviews and
//! adjudications), then the time of each quality page and API (the report, the review stream,
//! the item browser's agreement and review filters) and the rows/s of quality-aware exports.
//! `BENCH_STRATEGY=fifo,uncertainty` runs the labelling phase once per queue strategy, one
//! after the other on the same project (the open items get seeded random priorities first, as
//! an rm run's scoring would leave them), and prints each phase's judgements/s and latencies.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rewardlab::cluster::Cluster;
use serde_json::{json, Value};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds used by every postgres process so far (live ones only).
fn postgres_cpu() -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).ok()?;
            (comm.trim() == "postgres").then(|| cpu_seconds(&name))
        })
        .sum()
}

/// CPU seconds the hypervisor took from this machine so far (the `steal` column of /proc/stat).
fn steal_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    cpu.split_whitespace().nth(8).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Items with realistic texts: the Self-Instruct outputs when present, cycled; else synthetic.
fn items_file(dir: &std::path::Path, n: usize) -> anyhow::Result<PathBuf> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/self-instruct-user-oriented-252x8.jsonl");
    let source: Vec<Value> = std::fs::read_to_string(shared).map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()).unwrap_or_default();
    let mut out = String::new();
    for i in 0..n {
        let line = match source.get(i % source.len().max(1)) {
            Some(src) => {
                let rs: Vec<Value> = src["responses"].as_array().unwrap().iter().take(4).map(|r| json!({"model": r["model"], "text": r["text"]})).collect();
                json!({"id": format!("bench-{i}"), "prompt": format!("{} (#{i})", src["prompt"].as_str().unwrap_or("")), "responses": rs})
            }
            None => {
                json!({"id": format!("bench-{i}"), "prompt": format!("question {i}"), "responses": (0..4).map(|j| json!({"model": format!("m{j}"), "text": format!("answer {j} to question {i} ").repeat(20)})).collect::<Vec<_>>()})
            }
        };
        out.push_str(&line.to_string());
        out.push('\n');
    }
    let path = dir.join("bench-items.jsonl");
    std::fs::write(&path, out)?;
    Ok(path)
}

const METRICS_TOKEN: &str = "bench-metrics-token-0123456789";

/// Reads `/metrics` every `every` seconds while `running`; the count and each scrape's ms.
async fn scrape(http: reqwest::Client, url: String, every: u64, running: Arc<AtomicBool>) -> anyhow::Result<(usize, Vec<f64>)> {
    let mut ms = Vec::new();
    while running.load(Ordering::Relaxed) {
        let t = Instant::now();
        let res = http.get(&url).bearer_auth(METRICS_TOKEN).send().await?;
        anyhow::ensure!(res.status() == 200, "metrics answered {}", res.status());
        res.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let next = Instant::now() + Duration::from_secs(every);
        while running.load(Ordering::Relaxed) && Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms.len(), ms))
}

async fn run() -> anyhow::Result<()> {
    let n_items = env_or("BENCH_ITEMS", 10_000);
    let seconds = env_or("BENCH_SECONDS", 30);
    let n_labellers = env_or("BENCH_LABELLERS", 32);
    let scrape_every = env_or("BENCH_SCRAPE_SECS", 0);
    let dir = std::env::temp_dir().join(format!("rewardlab-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cluster = Cluster::new(&dir.join("data"))?;
    let stats = std::env::var_os("BENCH_STATS").is_some();
    cluster.ensure_running_with(if stats { "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" } else { "" })?;
    cluster.stop_when_process_exits(std::process::id(), std::env::var_os("BENCH_KEEP").is_none())?;
    rewardlab::settings::ensure_database(&cluster, "rewardlab").await?;
    if stats {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("rewardlab")).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut c).await?;
    }
    if let Ok(ms) = std::env::var("BENCH_LOG_MS") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("rewardlab")).await?;
        sqlx::query(&format!("ALTER SYSTEM SET log_min_duration_statement = {}", ms.parse::<u32>()?)).execute(&mut c).await?;
        sqlx::query("SELECT pg_reload_conf()").execute(&mut c).await?;
        println!("logging statements over {ms} ms to {}", dir.join("data/postgres.log").display());
    }
    let socket = dir.join("data").canonicalize()?.join("run");
    let user = if rewardlab_is_root() { "postgres".to_string() } else { std::env::var("USER").unwrap_or_default() };
    let url = format!("postgres://{user}@localhost/rewardlab?host={}", socket.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let bin = env!("CARGO_BIN_EXE_rewardlab");
    let cli = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(bin).args(args).env("DATABASE_URL", &url).env("REWARDLAB_DATA", dir.join("data")).output()?;
        anyhow::ensure!(out.status.success(), "rewardlab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    // Migrate and create the accounts with the CLI, as an operator would.
    cli(&["project", "create", "--slug", "bench", "--name", "Benchmark", "--kind", "ranking", "--overlap", "3"])?;
    let mut tokens = Vec::new();
    for i in 0..=n_labellers {
        let email = format!("u{i}@bench.example");
        let out = Command::new(bin)
            .args(["user", "add", "--email", &email, "--password-stdin"])
            .env("DATABASE_URL", &url)
            .env("REWARDLAB_DATA", dir.join("data"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"bench password 123")?;
                c.wait_with_output()
            })?;
        anyhow::ensure!(out.status.success(), "user add");
        cli(&["project", "add-member", "--project", "bench", "--email", &email, "--role", if i == 0 { "lead" } else { "labeller" }])?;
        tokens.push(cli(&["token", "create", "--email", &email])?.lines().last().unwrap_or_default().to_string());
    }
    let server = Server {
        child: Command::new(bin)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--metrics-token", METRICS_TOKEN])
            .env("DATABASE_URL", &url)
            .env("REWARDLAB_DATA", dir.join("data"))
            .env("RUST_LOG", "warn")
            .spawn()?,
    };
    let pid = server.child.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let lead = &tokens[0];
    let scraper = (scrape_every > 0).then(|| tokio::spawn(scrape(http.clone(), format!("{base}/metrics"), scrape_every as u64, sampling.clone())));

    // 1. Import.
    let file = items_file(&dir, n_items)?;
    let body = std::fs::read(&file)?;
    let mb = body.len() as f64 / 1e6;
    let t = Instant::now();
    let res = http.post(format!("{base}/api/v1/projects/bench/items")).bearer_auth(lead).body(body).send().await?;
    anyhow::ensure!(res.status() == 200, "import: {}", res.text().await?);
    let import_s = t.elapsed().as_secs_f64();
    let report: Value = res.json().await?;
    let rss_after_import = peak.load(Ordering::Relaxed);
    let n_gold = env_or("BENCH_GOLD", 0);
    if n_gold > 0 {
        // Gold items mixed into every labeller's work at 10% (BENCH_GOLD=200).
        let gold: String = (0..n_gold)
            .map(|i| {
                let rs: Vec<Value> = (0..4).map(|j| json!({"model": format!("m{j}"), "text": format!("gold answer {j} to {i} ").repeat(20)})).collect();
                format!(
                    "{}\n",
                    json!({"id": format!("gold-{i}"), "prompt": format!("gold question {i}"), "responses": rs, "gold": {"ranking": [[0], [1], [2], [3]]}})
                )
            })
            .collect();
        let res = http.post(format!("{base}/api/v1/projects/bench/items")).bearer_auth(lead).body(gold).send().await?;
        anyhow::ensure!(res.status() == 200, "gold import: {}", res.text().await?);
        let res = http.post(format!("{base}/api/v1/projects/bench/quality/settings")).bearer_auth(lead).json(&json!({"gold_rate": 0.1})).send().await?;
        anyhow::ensure!(res.status() == 200, "quality settings: {}", res.text().await?);
        println!("{n_gold} gold items mixed in at 10%");
    }

    // 2. Labellers: one phase per queue strategy (BENCH_STRATEGY, e.g. `fifo,uncertainty`), on
    // the same project one after the other; the first phase's figures fill the main table.
    let strategies: Vec<String> = std::env::var("BENCH_STRATEGY").unwrap_or_else(|_| "fifo".into()).split(',').map(|s| s.trim().to_string()).collect();
    if strategies.iter().any(|s| s == "uncertainty" || s == "thompson") {
        seed_priorities(&cluster).await?;
    }
    let mut phases: Vec<(String, u64, f64, Vec<f64>)> = Vec::new();
    let (mut lease_ms, mut submit_ms, mut judged, mut label_s) = (Vec::new(), Vec::new(), 0, 0.0);
    let cpu_before = (cpu_seconds(&pid.to_string()), cpu_seconds("self"), postgres_cpu());
    let steal_before = steal_seconds();
    for (phase, strategy) in strategies.iter().enumerate() {
        let res = http.post(format!("{base}/api/v1/projects/bench/queue")).bearer_auth(lead).json(&json!({"strategy": strategy})).send().await?;
        anyhow::ensure!(res.status() == 200, "queue strategy {strategy}: {}", res.text().await?);
        let (l, mut s, n, secs) = label_phase(&http, &base, &tokens[1..], seconds, phase).await?;
        s.sort_by(f64::total_cmp);
        if phases.is_empty() {
            (lease_ms, submit_ms, judged, label_s) = (l, s.clone(), n, secs);
        }
        phases.push((strategy.clone(), n, secs, s));
    }
    let cpu = (cpu_seconds(&pid.to_string()) - cpu_before.0, cpu_seconds("self") - cpu_before.1, postgres_cpu() - cpu_before.2);
    let stolen = steal_seconds() - steal_before;
    lease_ms.sort_by(f64::total_cmp);

    // 3. Export.
    let t = Instant::now();
    let res = http.post(format!("{base}/api/v1/projects/bench/exports")).bearer_auth(lead).json(&json!({"format": "comparisons"})).send().await?;
    let export: Value = res.json().await?;
    let snapshot_s = t.elapsed().as_secs_f64();
    let rows = export["files"][0]["rows"].as_u64().unwrap_or(0);
    let t = Instant::now();
    let mut download = http.get(format!("{base}/api/v1/exports/{}/download", export["id"].as_str().unwrap_or(""))).bearer_auth(lead).send().await?;
    let mut bytes = 0usize;
    while let Some(chunk) = download.chunk().await? {
        bytes += chunk.len();
    }
    let download_s = t.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let scrapes = match scraper {
        Some(s) => Some(s.await??),
        None => None,
    };
    let peak_mb = peak.load(Ordering::Relaxed).max(rss_kib(pid, "VmHWM:")) as f64 / 1024.0;

    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let import_rate = n_items as f64 / import_s;
    let judge_rate = judged as f64 / label_s;
    let p99 = percentile(&submit_ms, 0.99);
    let export_rate = rows as f64 / download_s;
    println!("rewardlab platform benchmark ({} cores, release, loopback)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("{:<44} {:>14} {:>22} {:>7}", "figure", "measured", "target", "");
    println!(
        "{:<44} {:>14.0} {:>22} {:>7}",
        format!("import items/s ({n_items} x 4, {mb:.1} MB, {:.2} s)", import_s),
        import_rate,
        ">= 5000",
        verdict(import_rate >= 5000.0)
    );
    println!(
        "{:<44} {:>14.0} {:>22} {:>7}",
        format!("judgements/s ({n_labellers} labellers, {judged} in {label_s:.1} s)"),
        judge_rate,
        ">= 1000",
        verdict(judge_rate >= 1000.0)
    );
    if judged as usize >= n_items * 3 {
        println!("  (every item got its 3 judgements before the {seconds} s were up: the labellers ran out of work)");
    }
    println!("{:<44} {:>14.1} {:>22} {:>7}", "submit+next latency p50 (ms)", percentile(&submit_ms, 0.5), "", "");
    println!("{:<44} {:>14.1} {:>22} {:>7}", "submit+next latency p99 (ms)", p99, "< 100", verdict(p99 < 100.0));
    println!(
        "{:<44} {:>14.1} {:>22} {:>7}",
        "first lease latency p50 / p99 (ms)",
        percentile(&lease_ms, 0.5),
        format!("{:.1}", percentile(&lease_ms, 0.99)),
        ""
    );
    println!(
        "{:<44} {:>14.0} {:>22} {:>7}",
        format!("export rows/s, download ({rows} rows, {:.0} MB)", bytes as f64 / 1e6),
        export_rate,
        ">= 100000",
        verdict(export_rate >= 100_000.0)
    );
    println!("{:<44} {:>14.0} {:>22} {:>7}", format!("export rows/s, snapshot + sha256 ({snapshot_s:.2} s)"), rows as f64 / snapshot_s, "", "");
    println!("{:<44} {:>14.1} {:>22} {:>7}", "server peak RSS (MB), whole run", peak_mb, "< 200", verdict(peak_mb < 200.0));
    println!("{:<44} {:>14.1} {:>22} {:>7}", "server RSS after import (MB)", rss_after_import as f64 / 1024.0, "", "");
    println!(
        "labelling phase CPU seconds: server {:.1}, postgres {:.1}, load generator {:.1}, taken by the hypervisor (steal) {:.1}, of {:.1}",
        cpu.0,
        cpu.2,
        cpu.1,
        stolen,
        2.0 * label_s
    );
    if phases.len() > 1 || strategies[0] != "fifo" {
        println!("queue strategies, one {seconds} s phase each on the same project, in this order:");
        println!("{:<16} {:>14} {:>12} {:>12} {:>10}", "strategy", "judgements/s", "p50 (ms)", "p99 (ms)", "");
        for (name, n, secs, ms) in &phases {
            let (rate, p99) = (*n as f64 / secs, percentile(ms, 0.99));
            println!("{name:<16} {rate:>14.0} {:>12.1} {p99:>12.1} {:>10}", percentile(ms, 0.5), verdict(rate >= 1000.0 && p99 < 100.0));
        }
    }
    if let Some((n, ms)) = scrapes {
        println!("metrics scrapes: {n}, every {scrape_every} s, p50 {:.1} ms, max {:.1} ms", percentile(&ms, 0.5), percentile(&ms, 1.0));
    }
    println!("import report: {report}");
    let n_quality = env_or("BENCH_QUALITY_JUDGEMENTS", 0);
    if n_quality > 0 {
        quality::run(&cluster, &http, &base, lead, &dir, n_quality).await?;
    }
    drop(server);
    if stats {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("rewardlab")).await?;
        let top: Vec<(f64, i64, f64, String)> = sqlx::query_as(
            "SELECT total_exec_time, calls, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
        )
        .fetch_all(&mut c)
        .await?;
        println!("PostgreSQL statements by total time (ms, calls, mean ms):");
        for (total, calls, mean, q) in top {
            println!("{total:>10.0} {calls:>8} {mean:>8.3}  {q}");
        }
    }
    Ok(())
}

/// A leased task, as much of it as a simulated labeller reads.
#[derive(serde::Deserialize)]
struct Task {
    task_id: String,
    responses: Vec<TaskResponse>,
}

#[derive(serde::Deserialize)]
struct TaskResponse {
    id: String,
}

/// A submission's answer with `?next=1`.
#[derive(serde::Deserialize)]
struct Submitted {
    next: Option<Task>,
}

#[path = "platform/quality.rs"]
mod quality;

fn rewardlab_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Seeded queue priorities for the strategy phases: every open item of the benchmark project
/// gets a priority from a seeded generator and two members' best responses, as an rm run's
/// scoring would leave them (an index on the priority; no reward model is trained here).
async fn seed_priorities(cluster: &Cluster) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("rewardlab")).await?;
    let t = Instant::now();
    sqlx::query("SELECT setseed(0.42)").execute(&mut c).await?;
    let n = sqlx::query(
        "UPDATE items SET queue_priority = random(), queue_best = ARRAY[floor(random() * 4)::int2, floor(random() * 4)::int2]
          WHERE project_id = (SELECT id FROM projects WHERE slug = 'bench') AND is_open",
    )
    .execute(&mut c)
    .await?
    .rows_affected();
    sqlx::query("UPDATE projects SET queue_members = 2 WHERE slug = 'bench'").execute(&mut c).await?;
    sqlx::query("VACUUM ANALYZE items").execute(&mut c).await?;
    println!("seeded queue priorities of {n} open items in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// One labelling phase (`phase` numbers its idempotency keys: a key is one submission across
/// all phases): every labeller leases and submits until `seconds` are up. Answers the
/// first-lease latencies, the submit+next latencies (ms), the judgements and the phase's seconds.
async fn label_phase(http: &reqwest::Client, base: &str, tokens: &[String], seconds: usize, phase: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>, u64, f64)> {
    let stop_at = Instant::now() + Duration::from_secs(seconds as u64);
    let mut handles = Vec::new();
    for token in tokens {
        let (http, base, token) = (http.clone(), base.to_string(), token.clone());
        handles.push(tokio::spawn(async move {
            let (mut lease_ms, mut submit_ms, mut n) = (Vec::new(), Vec::new(), 0u64);
            // The first task is leased on its own; each submission then brings the next one
            // back (`?next=1`), as the labelling page does. Any failure ends this labeller and
            // is reported.
            let run = async {
                let t = Instant::now();
                let res = http.post(format!("{base}/api/v1/projects/bench/tasks/next")).bearer_auth(&token).send().await?;
                lease_ms.push(t.elapsed().as_secs_f64() * 1e3);
                // Only what a labeller's next step needs is read from each answer (the texts
                // are skipped unparsed), so the load generator takes little of the CPU.
                let mut task: Option<Task> = if res.status() == 204 { None } else { Some(res.error_for_status()?.json().await?) };
                while Instant::now() < stop_at {
                    let Some(current) = task.take() else { break };
                    let mut ranking: Vec<[&str; 1]> = current.responses.iter().map(|r| [r.id.as_str()]).collect();
                    ranking.rotate_left((n % 4) as usize);
                    let url = format!("{base}/api/v1/tasks/{}/judgement?next=1", current.task_id);
                    let t = Instant::now();
                    let res = http.post(url).bearer_auth(&token).json(&json!({"idempotency_key": format!("p{phase}-k{n}"), "ranking": ranking})).send().await?;
                    submit_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    if res.status() != 201 {
                        anyhow::bail!("submit answered {}: {}", res.status(), res.text().await?);
                    }
                    task = res.json::<Submitted>().await?.next;
                    n += 1;
                }
                Ok(())
            };
            let outcome: anyhow::Result<()> = run.await;
            if let Err(e) = outcome {
                eprintln!("a labeller stopped: {e:#}");
            }
            (lease_ms, submit_ms, n)
        }));
    }
    let t = Instant::now();
    let (mut lease_ms, mut submit_ms, mut judged) = (Vec::new(), Vec::new(), 0);
    for h in handles {
        let (l, s, n) = h.await?;
        lease_ms.extend(l);
        submit_ms.extend(s);
        judged += n;
    }
    Ok((lease_ms, submit_ms, judged, t.elapsed().as_secs_f64()))
}
