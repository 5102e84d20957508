//! The benchmark's quality section (`BENCH_QUALITY_JUDGEMENTS=N`): a project `qbench` with N
//! judgements (3 labellers an item, 32 labellers, a fifth of them careless), gold checks for
//! every labeller, 1% of judgements rejected, 5% accepted and 0.5% of items adjudicated, seeded
//! in SQL; then each quality page and API timed (median of 5, loopback, so server time plus
//! a little) beside the 300 ms target, and quality-aware exports' rows/s beside 50,000.

use std::time::Instant;

use serde_json::{json, Value};
use sqlx::Connection;

/// The SQL that seeds the judgements of project `$1`'s items (ordinary ones: 3 each, by
/// labellers `$2[]`), gold checks (every labeller answers the first 20 gold items), and reviews.
const SEED: &[&str] = &[
    "INSERT INTO memberships (project_id, user_id, role) SELECT $1, u, 'labeller' FROM unnest($2::uuid[]) u ON CONFLICT DO NOTHING",
    "INSERT INTO tasks (id, project_id, item_id, user_id, display_order, status, leased_at, expires_at)
     SELECT gen_random_uuid(), $1, it.id, ($2::uuid[])[1 + (it.n + s) % cardinality($2::uuid[])],
            CASE (it.n + s) % 4 WHEN 0 THEN '{0,1,2,3}'::int[] WHEN 1 THEN '{3,2,1,0}'::int[] WHEN 2 THEN '{1,3,0,2}'::int[] ELSE '{2,0,3,1}'::int[] END,
            'submitted', now(), now()
     FROM (SELECT i.id, row_number() OVER (ORDER BY i.seq) AS n FROM items i WHERE i.project_id = $1 AND i.gold_ranks IS NULL) it
     CROSS JOIN generate_series(0, 2) s",
    "INSERT INTO tasks (id, project_id, item_id, user_id, display_order, status, leased_at, expires_at, check_kind)
     SELECT gen_random_uuid(), $1, g.id, u, '{0,1,2,3}', 'submitted', now(), now(), 'gold'
     FROM (SELECT i.id FROM items i WHERE i.project_id = $1 AND i.gold_ranks IS NOT NULL ORDER BY i.seq LIMIT 20) g CROSS JOIN unnest($2::uuid[]) u",
    // Careless labellers (every fifth) answer at random; the others mostly agree, flipping the
    // top pair now and then. Times: 2-40 s.
    "INSERT INTO judgements (id, project_id, item_id, task_id, user_id, source, idempotency_key, ranks, display_order, time_on_task_ms)
     SELECT gen_random_uuid(), t.project_id, t.item_id, t.id, t.user_id, 'labeller', 'q' || t.id,
            CASE WHEN array_position($2::uuid[], t.user_id) % 5 = 0
                 THEN (CASE floor(random() * 4)::int WHEN 0 THEN '{4,3,2,1}'::smallint[] WHEN 1 THEN '{2,4,1,3}'::smallint[]
                                                     WHEN 2 THEN '{1,2,3,4}'::smallint[] ELSE '{3,1,4,2}'::smallint[] END)
                 WHEN random() < 0.2 THEN '{2,1,3,4}'::smallint[] ELSE '{1,2,3,4}'::smallint[] END,
            t.display_order, 2000 + floor(random() * 38000)::bigint
     FROM tasks t WHERE t.project_id = $1",
    "UPDATE items SET is_open = false, done_count = 3 WHERE project_id = $1 AND gold_ranks IS NULL",
    "INSERT INTO judgement_reviews (id, project_id, judgement_id, item_id, reviewer, decision, reason)
     SELECT gen_random_uuid(), j.project_id, j.id, j.item_id, $3, CASE WHEN r < 0.01 THEN 'rejected' ELSE 'accepted' END, CASE WHEN r < 0.01 THEN 'careless' ELSE '' END
     FROM (SELECT j.*, random() AS r FROM judgements j WHERE j.project_id = $1 AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = j.task_id AND t.check_kind IS NOT NULL)) j
     WHERE r < 0.06",
    "UPDATE tasks t SET status = 'rejected' FROM judgement_reviews r JOIN judgements j ON j.id = r.judgement_id WHERE r.project_id = $1 AND r.decision = 'rejected' AND t.id = j.task_id",
    "INSERT INTO adjudications (id, project_id, item_id, reviewer, ranks)
     SELECT gen_random_uuid(), $1, i.id, $3, '{1,2,3,4}' FROM items i WHERE i.project_id = $1 AND i.gold_ranks IS NULL AND random() < 0.005",
];

async fn ok(res: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = res.status();
    let text = res.text().await?;
    anyhow::ensure!(status.is_success(), "{what} answered {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Median milliseconds of 5 GETs of `path` (after one to warm up), and the last body's size.
async fn time_get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> anyhow::Result<(f64, usize)> {
    let mut ms = Vec::new();
    let mut size = 0;
    for round in 0..6 {
        let t = Instant::now();
        let res = http.get(format!("{base}{path}")).bearer_auth(token).send().await?;
        anyhow::ensure!(res.status().is_success(), "GET {path} answered {}", res.status());
        size = res.bytes().await?.len();
        if round > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], size))
}

pub async fn run(cluster: &rewardlab::cluster::Cluster, http: &reqwest::Client, base: &str, lead: &str, dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let items = n.div_ceil(3);
    ok(
        http.post(format!("{base}/api/v1/projects"))
            .bearer_auth(lead)
            .json(&json!({"slug": "qbench", "name": "Quality benchmark", "kind": "ranking", "overlap": 3}))
            .send()
            .await?,
        "create qbench",
    )
    .await?;
    let file = super::items_file(dir, items)?;
    let t = Instant::now();
    ok(http.post(format!("{base}/api/v1/projects/qbench/items")).bearer_auth(lead).body(std::fs::read(&file)?).send().await?, "import").await?;
    let gold: String = (0..100)
        .map(|i| {
            let rs: Vec<Value> = (0..4).map(|j| json!({"model": format!("m{j}"), "text": format!("gold answer {j} to {i}")})).collect();
            format!(
                "{}\n",
                json!({"id": format!("qgold-{i}"), "prompt": format!("gold question {i}"), "responses": rs, "gold": {"ranking": [[0], [1], [2], [3]]}})
            )
        })
        .collect();
    ok(http.post(format!("{base}/api/v1/projects/qbench/items")).bearer_auth(lead).body(gold).send().await?, "gold import").await?;
    let mut c = sqlx::PgConnection::connect_with(&cluster.connect_options("rewardlab")).await?;
    let project: uuid::Uuid = sqlx::query_scalar("SELECT id FROM projects WHERE slug = 'qbench'").fetch_one(&mut c).await?;
    let labellers: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE email LIKE 'u%@bench.example' AND email <> 'u0@bench.example' ORDER BY email").fetch_all(&mut c).await?;
    let reviewer: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'u0@bench.example'").fetch_one(&mut c).await?;
    for sql in SEED {
        sqlx::query(sql).bind(project).bind(&labellers).bind(reviewer).execute(&mut c).await.map_err(|e| anyhow::anyhow!("{e}: {sql}"))?;
    }
    sqlx::query("ANALYZE").execute(&mut c).await?;
    let judged: i64 = sqlx::query_scalar("SELECT count(*) FROM judgements WHERE project_id = $1").bind(project).fetch_one(&mut c).await?;
    println!("quality section: {judged} judgements on {items} items (+100 gold) seeded in {:.1} s", t.elapsed().as_secs_f64());
    ok(
        http.post(format!("{base}/api/v1/projects/qbench/quality/settings"))
            .bearer_auth(lead)
            .json(&json!({"review_rate": 0.1, "extra_below": 0.5}))
            .send()
            .await?,
        "settings",
    )
    .await?;

    // The first view after the judgements changed computes the project's quality figures (in the
    // background on a large project, while views show the previous ones): timed on its own.
    let t = Instant::now();
    let report = ok(http.get(format!("{base}/api/v1/projects/qbench/quality")).bearer_auth(lead).send().await?, "quality").await?;
    println!(
        "quality figures computed from {} judgements in {:.0} ms (on the first view after a change; views then read them)",
        report["judgements_counted"],
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("{:<52} {:>10} {:>12} {:>7}", "quality page or API (median of 5)", "ms", "target", "");
    for path in [
        "/projects/qbench/quality",
        "/api/v1/projects/qbench/quality",
        "/projects/qbench/review",
        "/api/v1/projects/qbench/review?limit=20",
        "/projects/qbench/items?min_agreement=0&max_agreement=0.3",
        "/api/v1/projects/qbench/items?review=rejected",
        "/api/v1/projects/qbench/items?gold=yes",
        "/projects/qbench/labellers",
        "/api/v1/projects/qbench/dashboard",
    ] {
        let (ms, size) = time_get(http, base, lead, path).await?;
        println!("{:<52} {:>10.1} {:>12} {:>7}", format!("{path} ({} kB)", size / 1000), ms, "< 300", if ms < 300.0 { "met" } else { "MISSED" });
    }
    for (name, body) in [
        ("comparisons, quality columns", json!({"format": "comparisons"})),
        ("comparisons, no paused, W >= 0.3", json!({"format": "comparisons", "exclude_paused": true, "min_agreement": 0.3})),
        ("comparisons, majority aggregate", json!({"format": "comparisons", "aggregate": "majority"})),
        ("preferences, Bradley-Terry aggregate", json!({"format": "preferences", "aggregate": "bradley_terry"})),
    ] {
        let t = Instant::now();
        let e = ok(http.post(format!("{base}/api/v1/projects/qbench/exports")).bearer_auth(lead).json(&body).send().await?, "export").await?;
        let s = t.elapsed().as_secs_f64();
        let rows: u64 = e["files"].as_array().map(|f| f.iter().filter_map(|p| p["rows"].as_u64()).sum()).unwrap_or(0);
        let rate = rows as f64 / s;
        println!(
            "{:<52} {:>10.0} {:>12} {:>7}",
            format!("export rows/s: {name} ({rows} rows, {s:.2} s)"),
            rate,
            ">= 50000",
            if rate >= 50_000.0 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
